"""Tagging: a trained run or a zero-shot CLIP as a tagger (`Tagger`), and predictions written
to a file with resume (`write_predictions`, what `vlml predict` runs).

>>> from vlml.predict import Tagger
>>> tags = Tagger.from_run("runs/vlpl").tag("photos/new")          # doctest: +SKIP
>>> tags.to_rows()[0]                                               # doctest: +SKIP
{'path': 'photos/new/0000.png', 'tags': ['dog'], 'scores': {'dog': 0.91, ...}}

Only `tagger` and `output` import torch; `sources`, `tags` and the output format checks load
without it, so the CLI checks its arguments before the slow imports.
"""

from __future__ import annotations

from vlml._lazy import lazy_attributes

_LAZY = {
    "Tagger": "tagger", "check_class_names": "tagger", "ZERO_SHOT_THRESHOLD": "tagger",
    "Tags": "tags", "decide": "tags", "parse_threshold": "tags", "check_top_k": "tags",
    "ImageSources": "sources", "resolve_images": "sources",
    "write_predictions": "output", "output_format": "output", "WriteResult": "output",
    "FORMATS": "output",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

__all__ = sorted(_LAZY)
