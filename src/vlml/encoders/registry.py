"""What encoders can be loaded by name: open_clip architectures (with their pretrained tags),
architectures added from a config file, and the embedded toy model `toy-clip`.

Names follow open_clip: an architecture ("ViT-B-32", "RN50") plus a pretrained tag ("openai",
"laion2b_s34b_b79k") or a local checkpoint file. `list_encoders()` spells the tagged pairs as
"ARCH:TAG"; `load` accepts that spelling too.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlml.errors import ConfigError, UnknownNameError

TOY_NAME = "toy-clip"
ASSETS = Path(__file__).resolve().parent.parent / "assets"
TOY_CONFIG = ASSETS / "tiny_clip.json"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class EncoderSpec:
    """One loadable encoder.

    Attributes:
        name: what the user types.
        architecture: the open_clip model-config name the model is built from.
        tags: open_clip pretrained tags known for the architecture.
        default_weights: checkpoint file used when no `pretrained` is given (embedded models).
    """

    name: str
    architecture: str
    tags: tuple[str, ...] = ()
    default_weights: str | None = None


def add_model_config(path: str | Path) -> str:
    """Make an open_clip model-config JSON file loadable; returns its architecture name.

    The file holds what open_clip's own `model_configs/*.json` hold (top-level `embed_dim`,
    `vision_cfg`, `text_cfg`); the file's stem becomes the architecture name, which can then be
    loaded with `vlml.encoders.load(NAME, pretrained="/path/to/checkpoint")`.
    """
    import open_clip

    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable JSON model config ({e})") from e
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
    if missing:
        raise ConfigError(f"{path}: an open_clip model config needs top-level keys "
                          f"embed_dim, vision_cfg, text_cfg; missing {missing}")
    name = path.stem
    existing = open_clip.get_model_config(name)
    if existing is None:
        open_clip.add_model_config(path)
    elif existing != cfg:
        raise ConfigError(f"{path}: architecture name {name!r} is already taken by a different "
                          "config; rename the file")
    return name


def ensure_model_config(name: str, cfg: dict[str, Any]) -> str:
    """Register architecture `name` from its config dict (as a run records it) unless open_clip
    already knows it; a different config under the same name is refused."""
    import tempfile

    import open_clip

    existing = open_clip.get_model_config(name)
    if existing is not None:
        if existing != cfg:
            raise ConfigError(f"architecture {name!r} is already registered with a different "
                              "config than the recorded one")
        return name
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.json"
        path.write_text(json.dumps(cfg))
        return add_model_config(path)


def _toy_spec() -> EncoderSpec | str:
    """The embedded toy CLIP, or why it is not available."""
    if not TOY_CONFIG.is_file():
        return f"its config {TOY_CONFIG} is not installed"
    weights = sorted(p for p in ASSETS.glob(f"{TOY_CONFIG.stem}*")
                     if p.suffix in WEIGHT_SUFFIXES)
    if not weights:
        return f"no weights file {TOY_CONFIG.stem}{{{','.join(WEIGHT_SUFFIXES)}}} in {ASSETS}"
    weights.sort(key=lambda p: WEIGHT_SUFFIXES.index(p.suffix))
    try:
        arch = add_model_config(TOY_CONFIG)
    except ConfigError as e:
        return str(e)
    return EncoderSpec(TOY_NAME, arch, (), str(weights[0]))


def _embedded() -> dict[str, EncoderSpec]:
    toy = _toy_spec()
    return {toy.name: toy} if isinstance(toy, EncoderSpec) else {}


def _toy_installed() -> bool:
    """Whether the embedded toy CLIP's config and a weights file are installed (no import)."""
    return TOY_CONFIG.is_file() and any(p.suffix in WEIGHT_SUFFIXES
                                        for p in ASSETS.glob(f"{TOY_CONFIG.stem}*"))


def list_architectures() -> list[str]:
    """Embedded models, then the architectures open_clip ships (each loads with a local
    checkpoint), read from open_clip's `model_configs/` folder without importing open_clip or
    torch, so a command line can list them instantly. The pretrained tags (`list_encoders`)
    and architectures added with `add_model_config` need open_clip itself."""
    import importlib.util

    embedded = [TOY_NAME] if _toy_installed() else []
    spec = importlib.util.find_spec("open_clip")
    folders = [Path(p) / "model_configs" for p in (spec.submodule_search_locations or [])] \
        if spec is not None else []
    names = {p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.json")}
    return embedded + sorted(names)


def list_encoders() -> list[str]:
    """Embedded models, then every open_clip "ARCH:TAG" pair with downloadable weights.

    Any open_clip architecture (`open_clip.list_models()`) also loads with a local checkpoint.
    """
    import open_clip

    return sorted(_embedded()) + open_clip.list_pretrained(as_str=True)


def get_spec(name: str) -> EncoderSpec:
    """The spec of an embedded model or open_clip architecture; close matches on a miss."""
    import open_clip

    embedded = _embedded()
    if name in embedded:
        return embedded[name]
    if name == TOY_NAME:
        raise ConfigError(f"the embedded model {TOY_NAME!r} is not available: {_toy_spec()}")
    if name in open_clip.list_models():
        return EncoderSpec(name, name, tuple(open_clip.list_pretrained_tags_by_model(name)))
    names = [*embedded, *open_clip.list_models()]
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownNameError(f"unknown encoder {name!r}.{hint} See "
                           "vlml.encoders.list_encoders() for architectures with pretrained "
                           "weights, or add a config file with add_model_config().")


def unknown_tag_message(spec: EncoderSpec, tag: str) -> str:
    close = difflib.get_close_matches(tag, spec.tags, n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    known = ", ".join(spec.tags) if spec.tags else "none"
    return (f"pretrained={tag!r} is neither an existing checkpoint file nor a pretrained tag of "
            f"{spec.architecture}.{hint} Known tags: {known}.")
