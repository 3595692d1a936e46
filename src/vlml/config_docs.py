"""Every config key of a recipe, described from its declaration (`config.setting`): what
`vlml config show` prints and `vlml config init` writes as a commented starting file.

Nothing here is written by hand per key: the default, the type, the allowed values or range and
the one-line meaning all come from the recipe's config dataclasses, so the docs cannot drift
from what `vlml train` accepts.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

import yaml

from vlml import config


@dataclass(frozen=True)
class KeyDoc:
    """One dotted config key: its default, type, allowed values and meaning."""

    key: str
    default: Any
    type: str
    allowed: str
    help: str
    affects_results: bool
    section: bool = False


def _allowed(spec: config.Setting) -> str:
    try:
        names = spec.choice_names()
    except Exception:  # a registry that cannot be asked here (an optional dependency)
        names = None
    parts = [", ".join(map(str, names))] if names else []
    if spec.range_text():
        parts.append(spec.range_text())
    return "; ".join(parts)


def describe(cls: type, prefix: str = "") -> list[KeyDoc]:
    """The keys of config dataclass `cls` in declaration order, sections as their own rows
    followed by their keys."""
    hints = typing.get_type_hints(cls)
    defaults = cls()
    out: list[KeyDoc] = []
    for f in dataclasses.fields(cls):
        key, hint, spec = f"{prefix}{f.name}", hints[f.name], config.setting_of(f)
        if dataclasses.is_dataclass(hint):
            doc = (spec.help or (hint.__doc__ or "").strip().splitlines()[0]).strip()
            out.append(KeyDoc(key, None, "section", "", doc, True, section=True))
            out.extend(describe(hint, key + "."))
            continue
        out.append(KeyDoc(key, getattr(defaults, f.name), config._type_name(hint),
                          _allowed(spec), spec.help, spec.affects_results))
    return out


def _value(v: Any) -> str:
    return yaml.safe_dump(config._plain(v), default_flow_style=True).strip().removesuffix(
        "\n...").removesuffix("...").strip()


def show_text(cls: type, recipe: str) -> str:
    """A readable listing: `key = default  (type; allowed)  meaning` per key."""
    lines = [f"config keys of recipe {recipe!r} (override any with KEY=VALUE after "
             "`vlml train CONFIG`; * = does not change a run's numbers):", ""]
    for d in describe(cls):
        depth = d.key.count(".")
        if d.section:
            lines += ["", f"{'  ' * depth}{d.key}:  {d.help}"]
            continue
        kind = d.type + (f"; {d.allowed}" if d.allowed else "")
        star = "*" if not d.affects_results else " "
        lines.append(f"{'  ' * depth}{star}{d.key} = {_value(d.default)}  ({kind})  {d.help}")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def init_yaml(cls: type, recipe: str, data: dict[str, Any] | None = None,
              source: str = "") -> str:
    """A complete YAML config: every key with its value (from `data` over the defaults) and a
    comment with its type, allowed values and meaning. Loads back with `config.build`."""
    cfg = config.build(cls, dict(data or {}))
    values = config._plain(config.to_dict(cfg))
    head = [f"# vlml config for recipe {recipe!r}" + (f", from {source}" if source else ""),
            "# Every key with its value; comments give the type, the allowed values and the",
            "# meaning (`vlml config show " + recipe + "` lists them). Train with",
            "#   vlml train THIS_FILE [KEY=VALUE ...]", ""]
    body: list[str] = []
    for d in describe(cls):
        depth = d.key.count(".")
        pad, name = "  " * depth, d.key.rsplit(".", 1)[-1]
        if d.section:
            body += [f"{pad}# {d.help}" if d.help else "", f"{pad}{name}:"]
            continue
        value = values
        for part in d.key.split("."):
            value = value[part]
        kind = d.type + (f"; {d.allowed}" if d.allowed else "")
        body.append(f"{pad}{name}: {_value(value)}  # {d.help} ({kind})".rstrip())
    return "\n".join(head + [b for b in body if b != ""]) + "\n"
