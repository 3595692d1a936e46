"""Files shipped as package data under `vlml/<folder>/` (configs, grids, published numbers):
where they are, their names, and looking one up by name. Torch-free."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def package_folder(folder: str) -> Path:
    """The package-data folder `vlml/<folder>` (e.g. "configs"), from any install."""
    return Path(str(resources.files("vlml").joinpath(folder)))


def yaml_names(root: Path) -> list[str]:
    """Names of the YAML files below `root`, relative, with "/" and without ".yaml", sorted."""
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def find_yaml(root: Path, name: str) -> Path | None:
    """`root/<name>.yaml` where that file exists, else None."""
    path = root / f"{name}.yaml"
    return path if path.is_file() else None
