"""Class prompts: templates, named template sets, and the template-ensemble average.

A template is a format string with one `{name}` field, e.g. `"a photo of a {name}."`
(docs/methods.md 3.1). A template ensemble embeds every template for a class, L2-normalises each
embedding, averages them and re-normalises the mean.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vlml.errors import ConfigError, UnknownNameError

DEFAULT_TEMPLATE = "a photo of a {name}."
DEFAULT_TEMPLATES: tuple[str, ...] = (DEFAULT_TEMPLATE,)

Templates = str | Sequence[str]


def _from_open_clip(kind: str) -> tuple[str, ...]:
    """open_clip's ImageNet template lambdas turned into `{name}` format strings."""
    from open_clip import zero_shot_metadata as meta

    fns = meta.OPENAI_IMAGENET_TEMPLATES if kind == "openai" else meta.SIMPLE_IMAGENET_TEMPLATES
    return tuple(fn("{name}") for fn in fns)


# Named template sets; values are callables so open_clip is only imported when one is used.
_TEMPLATE_SETS = {
    "default": lambda: DEFAULT_TEMPLATES,
    "openai-imagenet-80": lambda: _from_open_clip("openai"),
    "openai-imagenet-7": lambda: _from_open_clip("simple"),
}


def list_template_sets() -> list[str]:
    """Names accepted by `resolve_templates` (and `Encoder.encode_classes(templates=NAME)`)."""
    return sorted(_TEMPLATE_SETS)


def resolve_templates(templates: Templates) -> tuple[str, ...]:
    """A tuple of templates from a set name, one template string, or a sequence of either
    (set names in a sequence expand in place, so `--template openai-imagenet-7` works).

    Raises `ConfigError` when a template lacks the `{name}` field or has other fields, and
    `UnknownNameError` for a string that is neither a template nor a known set name.
    """
    if isinstance(templates, str):
        if "{name}" in templates:
            out: tuple[str, ...] = (templates,)
        elif templates in _TEMPLATE_SETS:
            out = tuple(_TEMPLATE_SETS[templates]())
        else:
            close = difflib.get_close_matches(templates, _TEMPLATE_SETS, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownNameError(
                f"unknown template set {templates!r}.{hint} Valid sets: "
                f"{', '.join(list_template_sets())}; or pass a template with a {{name}} field, "
                f"e.g. {DEFAULT_TEMPLATE!r}.")
    else:
        out = tuple(x for t in templates
                    for x in (resolve_templates(t) if isinstance(t, str) and "{name}" not in t
                              and t in _TEMPLATE_SETS else (t,)))
    if not out:
        raise ConfigError("no prompt templates given; expected at least one, e.g. "
                          f"{DEFAULT_TEMPLATE!r}")
    for t in out:
        if not isinstance(t, str):
            raise ConfigError(f"prompt template {t!r} is a {type(t).__name__}; expected a string")
        try:
            t.format(name="x")
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(f"prompt template {t!r} has a field other than {{name}} ({e}); "
                              "expected exactly one {name} field") from e
        if "{name}" not in t:
            raise ConfigError(f"prompt template {t!r} has no {{name}} field; expected e.g. "
                              f"{DEFAULT_TEMPLATE!r}")
    return out


def format_prompts(class_names: Sequence[str], templates: Templates) -> list[list[str]]:
    """`prompts[c][t]` = template t filled with class name c."""
    ts = resolve_templates(templates)
    return [[t.format(name=name) for t in ts] for name in class_names]


def ensemble(embeddings: torch.Tensor) -> torch.Tensor:
    """Template ensemble: (C, T, D) raw text embeddings -> (C, D) unit vectors.

    Each of the T embeddings is L2-normalised, the T unit vectors are averaged, and the mean is
    L2-normalised again. With T = 1 this is just the normalised embedding.
    """
    if embeddings.ndim != 3:
        raise ValueError(f"expected (C, T, D) embeddings, got shape {tuple(embeddings.shape)}")
    return F.normalize(F.normalize(embeddings, dim=-1).mean(dim=1), dim=-1)
