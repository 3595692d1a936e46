"""The open_clip adapter: a frozen CLIP model with its own preprocessing and a stable identity.

`load("ViT-B-32", pretrained="openai")` downloads weights on a machine with internet access;
`load("ViT-B-32", pretrained="/path/to/file.bin")` loads a local checkpoint; `load("toy-clip")`
loads the embedded toy model. All three go through the same open_clip local-file path.
`load("ViT-B-32", pretrained="random")` builds the architecture with a seeded random init (no
weights at all, for testing a pipeline offline). `check_weights(name, pretrained)` says in
about a second, without downloading, whether `load` will find the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transform import PreprocessCfg, image_transform_v2

from vlml.device import resolve_device
from vlml.encoders import dense, prompts
from vlml.encoders.registry import get_spec, unknown_tag_message
from vlml.encoders.weights import (
    check_tag,
    clean_tag,
    fetch_tag,
    looks_like_path,
    random_seed,
    sha256_file,
    tag_config,
)
from vlml.engine.checkpoint import check_checkpoint_file, describe_load_error
from vlml.errors import ConfigError, DataError, UnknownNameError, VlmlError

RESIZE_MODES = ("shortest", "longest", "squash")
CHECKPOINT_EXPECTED = ("an open_clip checkpoint of the architecture (a state dict in a "
                       ".safetensors, .bin, .pt or .pth file)")
PRECISION = "fp32"


class Encoder:
    """A frozen open_clip model (eval mode, no gradients) with its preprocessing and identity.

    Attributes:
        name: the name it was loaded by ("ViT-B-32", "toy-clip").
        architecture: open_clip model-config name.
        weights: "tag:<tag>", "sha256:<hex of the checkpoint file>" or "random:<seed>".
        weights_file: local checkpoint path the weights came from ("" for a random init).
        preprocess: the model's own eval transform, PIL image -> (3, H, W) float tensor.
        preprocess_cfg: its settings (size, mean, std, interpolation, resize_mode, ...).
        device: where the model runs; outputs are returned on this device.
        model: the underlying open_clip model.
    """

    def __init__(self, model: torch.nn.Module, *, name: str, architecture: str, weights: str,
                 weights_file: str, preprocess_cfg: dict[str, Any],
                 tokenizer: Callable[..., torch.Tensor], device: torch.device) -> None:
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.architecture = architecture
        self.weights = weights
        self.weights_file = weights_file
        self.preprocess_cfg = dict(preprocess_cfg)
        self.preprocess = image_transform_v2(PreprocessCfg(**self.preprocess_cfg), is_train=False)
        self.tokenizer = tokenizer
        self.device = device
        self._token_counts: dict[tuple[int, int], int] = {}
        self._embed_dim: int | None = None

    def __repr__(self) -> str:
        return (f"Encoder({self.name!r}, architecture={self.architecture!r}, "
                f"weights={self.weights!r}, device={str(self.device)!r})")

    # ---- identity -------------------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) that `preprocess` produces and `encode_images` expects."""
        size = self.preprocess_cfg["size"]
        return int(size[0]), int(size[1])

    @property
    def embed_dim(self) -> int:
        """D, the size of the joint image-text space."""
        if self._embed_dim is None:
            out = getattr(self.model.visual, "output_dim", None)
            self._embed_dim = int(out) if out else int(
                self.encode_images(torch.zeros(1, 3, *self.image_size)).shape[-1])
        return self._embed_dim

    @property
    def identity(self) -> dict[str, Any]:
        """What decides the features: architecture, weights, preprocessing, precision.

        JSON-ready; the feature cache key is built from it (docs/design.md, Conventions).
        """
        pp = {k: list(v) if isinstance(v, (tuple, list)) else v
              for k, v in sorted(self.preprocess_cfg.items())}
        return {"architecture": self.architecture, "weights": self.weights,
                "preprocess": pp, "precision": PRECISION}

    # ---- images -----------------------------------------------------------------------------
    def _check_images(self, images: torch.Tensor, exact_size: bool) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(getattr(images, "shape", ()))
            raise DataError(f"expected a (B, 3, H, W) image tensor from encoder.preprocess, got "
                            f"{type(images).__name__} of shape {shape}", "images")
        if exact_size and tuple(images.shape[-2:]) != self.image_size:
            raise DataError(f"expected images of size {self.image_size} (the model's "
                            f"preprocessing), got {tuple(images.shape[-2:])}", "images")
        return images.to(self.device, torch.float32, non_blocking=True)

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, D) L2-normalised float32 global embeddings."""
        x = self._check_images(images, exact_size=True)
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.inference_mode()
    def dense_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, L + 1, D) float32 tokens in the joint space, not normalised.

        Index 0 is the global token, 1..L the spatial tokens in row-major order. ViT:
        L = (H // p) * (W // p) and token 0 is the pooled token `encode_image` projects.
        CLIP-ResNet: L = h * w of the last feature map (H // 32 * W // 32), token 0 is the
        attention-pool output `encode_image` returns, 1..L the value path. Any input size works
        (positional embeddings are interpolated). Details in `vlml.encoders.dense`.
        """
        x = self._check_images(images, exact_size=False)
        return dense.dense_tokens(self.model.visual, x).float()

    def n_tokens(self, size: tuple[int, int] | None = None) -> int:
        """L + 1, the number of dense tokens for images of `size` (default: `image_size`)."""
        size = tuple(size or self.image_size)
        if size not in self._token_counts:
            probe = torch.zeros(1, 3, *size)
            self._token_counts[size] = int(self.dense_tokens(probe).shape[1])
        return self._token_counts[size]

    @property
    def supports_dense(self) -> bool:
        return dense.supports_dense(self.model.visual)

    # ---- text ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """T strings -> (T, D) L2-normalised float32 text embeddings."""
        if isinstance(texts, str):
            raise DataError("expected a list of strings, got one string", "texts")
        texts = list(texts)
        if not texts:
            raise DataError("expected at least one text", "texts")
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[i:i + batch_size]).to(self.device)
            out.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1))
        return torch.cat(out)

    def encode_classes(self, class_names: Sequence[str],
                       templates: prompts.Templates = prompts.DEFAULT_TEMPLATES) -> torch.Tensor:
        """(C, D) unit class embeddings: the template ensemble of each class (docs/methods.md 3.1).

        `templates`: one template with a `{name}` field, a sequence of them, or the name of a
        set (`prompts.list_template_sets()`). Each prompt embedding is L2-normalised, the
        class's prompts are averaged and the mean is re-normalised.
        """
        per_class = prompts.format_prompts(class_names, templates)
        n_t = len(per_class[0]) if per_class else 0
        flat = [p for ps in per_class for p in ps]
        emb = self.encode_texts(flat)
        return prompts.ensemble(emb.reshape(len(per_class), n_t, -1))


def _split_name(name: str, pretrained: str | None) -> tuple[str, str | None]:
    """"ARCH:TAG" -> (ARCH, TAG) when no separate `pretrained` was given."""
    if pretrained is None and ":" in name and not name.startswith(("hf-hub:", "local-dir:")):
        arch, _, tag = name.partition(":")
        return arch, tag or None
    return name, pretrained


def _resolve(name: str, pretrained: str | None) -> tuple[Any, str, str]:
    """(spec, kind, value) of what `load` will read: kind "file" (value: the resolved path),
    "tag" (value: the tag) or "random" (value: the seed); errors for a missing file, an
    unknown tag, or no weights named for an encoder without default weights."""
    arch_name, pretrained = _split_name(name, pretrained)
    spec = get_spec(arch_name)
    pretrained = pretrained if pretrained is not None else spec.default_weights
    if not pretrained:
        raise ConfigError(
            f"encoder {spec.name!r} needs weights: pass pretrained=<tag> (one of "
            f"{', '.join(spec.tags) or 'none known'}), pretrained='/path/to/checkpoint', or "
            "pretrained='random' (a seeded random init, no weights)")
    path = Path(pretrained).expanduser()
    if path.is_file():
        return spec, "file", str(path.resolve())
    seed = random_seed(pretrained)
    if seed is not None:
        return spec, "random", str(seed)
    if tag_config(spec.architecture, pretrained):
        return spec, "tag", pretrained
    if path.is_dir():
        raise DataError(f"is a folder; expected {CHECKPOINT_EXPECTED}", str(path))
    if looks_like_path(pretrained):
        raise DataError("checkpoint file not found; expected the path of a local open_clip "
                        "checkpoint (.bin, .pt, .safetensors), an open_clip pretrained tag, or "
                        "'random'", str(path))
    raise UnknownNameError(unknown_tag_message(spec, pretrained))


def check_weights(name: str, pretrained: str | None = None, *,
                  cache_dir: str | None = None) -> str:
    """Whether `load(name, pretrained)` will find its weights, checked without downloading
    (a run's preflight): a one-line description of where they come from.

    A tag is looked up in the local caches (Hugging Face hub, `~/.cache/clip`); when it is not
    there, the download host is probed with a short timeout (none with `HF_HUB_OFFLINE=1`).

    Raises:
        UnknownNameError, DataError, ConfigError: as `load` does (unknown name or tag, missing
            checkpoint file, no weights named).
        WeightsUnavailableError: a tag's weights are not cached and cannot be downloaded; the
            message names where they were looked for and the ways out (a local checkpoint
            file, or `random`).
    """
    spec, kind, value = _resolve(name, pretrained)
    if kind == "file":
        check_checkpoint_file(value, CHECKPOINT_EXPECTED)
        return f"{spec.name}: checkpoint file {value}"
    if kind == "random":
        return f"{spec.name}: random init (seed {value})"
    cached = check_tag(spec.architecture, value, cache_dir=cache_dir)
    return (f"{spec.name}/{value}: cached at {cached}" if cached
            else f"{spec.name}/{value}: not cached, will be downloaded")


def _random_model(arch: str, seed: int, device: torch.device,
                  overrides: dict[str, Any]) -> torch.nn.Module:
    """`arch` with open_clip's own initialisation drawn from `seed` on the CPU (the same model
    on every device and in every process), the global RNG left as it was."""
    import logging

    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))  # open_clip warns about the random init
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.create_model(arch, pretrained=None, device="cpu",
                                           precision=PRECISION, force_preprocess_cfg=overrides)
    finally:
        logging.disable(previous)
    return model.to(device)


def load(name: str, pretrained: str | None = None, *, device: str | torch.device | None = None,
         cache_dir: str | None = None, resize_mode: str | None = None) -> Encoder:
    """Load a frozen open_clip encoder.

    Args:
        name: open_clip architecture ("ViT-B-32", "RN50", a name added by `add_model_config`),
            "ARCH:TAG", or an embedded model ("toy-clip"); see `list_encoders()`.
        pretrained: an open_clip pretrained tag ("openai", "laion2b_s34b_b79k"), a local
            checkpoint file, or "random" / "random:<seed>" (open_clip's random init drawn from
            seed 0 / <seed>: no weights needed; identity weights "random:<seed>"). Embedded
            models default to their shipped weights.
        device: "cpu", "cuda", ...; default cuda if available else cpu.
        cache_dir: where downloaded weights are looked up and stored (open_clip's default
            locations when None).
        resize_mode: override the preprocessing's resize mode ("shortest" = resize the short
            side then centre-crop, CLIP's default; "squash" = resize to the square, no crop;
            "longest" = fit and pad). Part of the encoder identity.

    Raises:
        UnknownNameError: unknown architecture or tag (with close matches).
        DataError: the checkpoint file is missing or does not fit the architecture.
        WeightsUnavailableError: a tag's weights are not cached and cannot be downloaded.
    """
    spec, kind, value = _resolve(name, pretrained)
    if resize_mode is not None and resize_mode not in RESIZE_MODES:
        raise ConfigError(f"resize_mode {resize_mode!r}; expected one of {RESIZE_MODES}")
    arch = spec.architecture
    overrides: dict[str, Any] = {}
    quick_gelu = False
    if kind == "file":
        weights_file = str(check_checkpoint_file(value, CHECKPOINT_EXPECTED))
        weights = f"sha256:{sha256_file(weights_file)}"
    elif kind == "random":
        weights_file, weights = "", f"random:{value}"
    else:
        tag_cfg = tag_config(arch, value)
        weights = f"tag:{clean_tag(value)}"
        weights_file = fetch_tag(arch, value, cache_dir=cache_dir)
        overrides = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode")
                     if k in tag_cfg}
        quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    if resize_mode is not None:
        overrides["resize_mode"] = resize_mode
    dev = resolve_device(device)
    if kind == "random":
        model = _random_model(arch, int(value), dev, overrides)
    else:
        try:
            model = open_clip.create_model(arch, pretrained=weights_file, device=dev,
                                           precision=PRECISION, force_quick_gelu=quick_gelu,
                                           force_preprocess_cfg=overrides)
        except VlmlError:
            raise
        except Exception as e:  # open_clip and torch raise many types for a foreign file
            raise DataError(f"could not load this checkpoint into architecture {arch!r}: "
                            f"{describe_load_error(e)}; expected {CHECKPOINT_EXPECTED}",
                            weights_file) from None
    pp = dict(model.visual.preprocess_cfg)
    pp["mean"] = [float(v) for v in pp["mean"]]
    pp["std"] = [float(v) for v in pp["std"]]
    size = pp["size"]
    pp["size"] = [int(size), int(size)] if isinstance(size, int) else [int(v) for v in size]
    return Encoder(model, name=spec.name, architecture=arch, weights=weights,
                   weights_file=weights_file, preprocess_cfg=pp,
                   tokenizer=open_clip.get_tokenizer(arch), device=dev)


def describe_preprocess(cfg: dict[str, Any]) -> str:
    """One line for logs: size, resize mode, interpolation, mean/std."""
    fmt = ", ".join
    return (f"size {cfg['size']}, resize {cfg.get('resize_mode')}, "
            f"{cfg.get('interpolation')}, mean ({fmt(f'{m:.4g}' for m in cfg['mean'])}), "
            f"std ({fmt(f'{s:.4g}' for s in cfg['std'])})")


__all__ = ["Encoder", "load", "check_weights", "describe_preprocess"]
