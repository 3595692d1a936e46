"""Predictions streamed to a file, resumable: what `vlml predict` writes.

One row per readable image, in input order:

- `.jsonl`: `{"path": ..., "tags": [names by decreasing score], "scores": {class: p}}`;
- `.csv`: a header `path,tags,<class 1>,...,<class C>`, then the path, the tags joined by `|`
  and one score column per class.

Scores are written with 6 significant digits; the tags were decided on the exact float32
scores (`vlml.predict.tags.decide`).

Rows are appended to `<out>.partial` as batches finish. `<out>.partial.json` records the
inputs' and settings' fingerprint (image list, model identity, thresholds, top-k, format), the
next input to read, the rows written and the byte length of those rows, and the unreadable
images met so far. It is rewritten every `checkpoint_interval` seconds and whenever the run
stops (an error, Ctrl-C). A run with the same fingerprint resumes at the recorded input after
cutting the partial file back to the recorded length (a torn last line, or rows written after
the last record, are dropped and recomputed); a different fingerprint starts over. At the end
the partial file is renamed to `<out>` (atomic) and the state file removed; the unreadable
images (`skip_bad=True`) are listed in `<out>.bad.json` ([{"path", "reason"}]).

A run that stops before any row is written leaves no partial file behind; `<out>` is only ever
the complete output.

Under `torchrun` (several processes): rank r tags its contiguous, batch-aligned slice of the
inputs (`vlml.distributed.shard`) into `<stem>.rank<r><suffix>` the same way (resumable on its own);
then rank 0 joins the parts in rank order, i.e. input order, into `<out>` (one CSV header) and
the bad-image lists into `<out>.bad.json`, and removes the parts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlml.errors import ConfigError
from vlml.fileio import write_json_atomic

FORMATS = (".jsonl", ".csv")
STATE_FORMAT = "vlml-predictions-partial"
STATE_VERSION = 1


def output_format(out: str | os.PathLike) -> str:
    """".jsonl" or ".csv" from the file name; `ConfigError` for any other extension."""
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"output file {os.fspath(out)!r} has the extension {suffix or '(none)'!r}"
                          f"; expected one of {', '.join(FORMATS)}")
    return suffix


def side_files(out: Path) -> tuple[Path, Path, Path]:
    """(partial rows, partial state, bad-image list) beside `out`."""
    return (out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.json"),
            out.with_name(out.name + ".bad.json"))


@dataclass
class WriteResult:
    """What `write_predictions` did.

    Attributes:
        out: the output file.
        n_rows: rows in it (one per readable image).
        n_images: images in the inputs.
        bad: (path, reason) of the unreadable images left out.
        bad_file: `<out>.bad.json` when any image was bad, else None.
        resumed_from: inputs already done by an earlier, interrupted run (0 for a fresh run).
        thresholds: what the thresholds were, in words.
    """

    out: Path
    n_rows: int
    n_images: int
    bad: list[tuple[str, str]] = field(default_factory=list)
    bad_file: Path | None = None
    resumed_from: int = 0
    thresholds: str = ""


class _RowWriter:
    """Encodes a batch's rows as bytes in one format."""

    def __init__(self, fmt: str, class_names: tuple[str, ...]) -> None:
        self.fmt, self.class_names = fmt, class_names
        self._keys = [json.dumps(c, ensure_ascii=False) for c in class_names]

    def header(self) -> bytes:
        if self.fmt == ".csv":
            return self._csv([["path", "tags", *self.class_names]])
        return b""

    def rows(self, part: Any) -> bytes:
        if self.fmt == ".csv":
            return self._csv([[p, "|".join(t), *(f"{v:.6g}" for v in s.tolist())]
                              for p, t, s in zip(part.paths, part.tags, part.scores,
                                                 strict=True)])
        lines = []
        for p, t, s in zip(part.paths, part.tags, part.scores, strict=True):
            scores = ", ".join(f"{k}: {v:.6g}" for k, v in zip(self._keys, s.tolist(),
                                                                 strict=True))
            lines.append(f'{{"path": {json.dumps(p, ensure_ascii=False)}, "tags": '
                         f'{json.dumps(list(t), ensure_ascii=False)}, "scores": {{{scores}}}}}\n')
        return "".join(lines).encode("utf-8", "surrogateescape")

    @staticmethod
    def _csv(rows: list[list[str]]) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        return buf.getvalue().encode("utf-8", "surrogateescape")


def _fingerprint(parts: dict[str, Any]) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT \
            or state.get("version") != STATE_VERSION:
        return None
    return state


def write_predictions(tagger: Any, images: Any, out: str | os.PathLike, *,
                      threshold: float | str | None = None, top_k: int | None = None,
                      batch_size: int = 64, num_workers: int = 0, skip_bad: bool = False,
                      progress: bool = True, checkpoint_interval: float = 5.0,
                      log: Callable[[str], None] | None = None,
                      _sharded: bool = False) -> WriteResult:
    """Tag `images` with `tagger` into `out` (`.jsonl` or `.csv`), streaming and resumable
    (module docstring). Memory stays flat: rows go to disk batch by batch.

    Args:
        tagger: a `vlml.predict.Tagger`.
        images: anything `vlml.predict.sources.resolve_images` accepts, or its result.
        out: the output file; its extension picks the format.
        threshold, top_k, batch_size, num_workers, skip_bad, progress: as `Tagger.tag`.
        checkpoint_interval: seconds between state records (0: after every batch).
        log: called with a line when a partial output is resumed or discarded.

    Raises:
        ConfigError: an unknown extension, threshold or top-k (nothing written).
        DataError: no images (nothing written); unreadable images unless `skip_bad` (`out`
            untouched; the rows before them stay in `<out>.partial` for a resumed run).
    """
    from vlml import distributed
    from vlml.predict.sources import ImageSources, resolve_images
    from vlml.predict.tags import check_top_k

    out = Path(out)
    fmt = output_format(out)
    values, described = tagger.resolve_thresholds(threshold)
    k = check_top_k(top_k)
    sources = resolve_images(images)
    if distributed.world_size() > 1 and not _sharded:
        part = distributed.shard(len(sources), batch_size)
        mine_out = rank_part(out, distributed.rank())
        if len(part):
            mine = write_predictions(
                tagger, ImageSources(sources.items[part.start:part.stop]), mine_out,
                threshold=threshold, top_k=top_k, batch_size=batch_size,
                num_workers=num_workers, skip_bad=skip_bad, progress=progress,
                checkpoint_interval=checkpoint_interval, log=log, _sharded=True)
        else:  # more processes than batches: an empty part
            mine_out.parent.mkdir(parents=True, exist_ok=True)
            mine_out.write_bytes(_RowWriter(fmt, tagger.class_names).header())
            mine = WriteResult(mine_out, 0, 0)
        distributed.barrier()
        if not distributed.is_main():  # rank 0 joins the parts and reports the whole
            return mine
        n_rows, bad_all = _join_parts(out, fmt, distributed.world_size())
        return WriteResult(out, n_rows, len(sources), bad_all,
                           side_files(out)[2] if bad_all else None, mine.resumed_from,
                           described)
    partial, state_path, bad_path = side_files(out)
    writer = _RowWriter(fmt, tagger.class_names)
    fingerprint = _fingerprint({
        "inputs": sources.fingerprint(), "n_images": len(sources), "model": tagger.identity,
        "class_names": list(tagger.class_names), "thresholds": values.tolist(), "top_k": k,
        "format": fmt})
    say = log or (lambda _line: None)

    state = _read_state(state_path)
    if state is not None and not (state.get("fingerprint") == fingerprint and partial.is_file()
                                  and partial.stat().st_size >= int(state["bytes"])):
        state = None
    if state is not None:
        f = open(partial, "r+b")  # noqa: SIM115 - closed in the finally below
        f.truncate(int(state["bytes"]))
        f.seek(0, os.SEEK_END)
        say(f"resuming {partial}: {state['next']} of {len(sources)} images already done "
            f"({state['rows']} rows)")
    else:
        if partial.exists() or state_path.exists():
            say(f"starting over: {partial} was written for other inputs, model or settings")
        out.parent.mkdir(parents=True, exist_ok=True)
        f = open(partial, "wb")  # noqa: SIM115 - closed in the finally below
        f.write(writer.header())
        state = {"format": STATE_FORMAT, "version": STATE_VERSION, "fingerprint": fingerprint,
                 "out": str(out), "n_images": len(sources), "next": 0, "rows": 0,
                 "bytes": f.tell(), "bad": []}
    resumed_from = int(state["next"])

    def save() -> None:
        f.flush()
        os.fsync(f.fileno())
        write_json_atomic(state_path, state)

    finished = False
    try:
        save()
        last = time.monotonic()
        if resumed_from < len(sources):
            for end, part in tagger.iter_batches(sources, threshold, k, batch_size, num_workers,
                                                 skip_bad, progress, start=resumed_from):
                f.write(writer.rows(part))
                state.update(next=end, rows=state["rows"] + len(part), bytes=f.tell())
                state["bad"].extend([list(b) for b in part.bad])
                if time.monotonic() - last >= checkpoint_interval:
                    save()
                    last = time.monotonic()
        save()
        finished = True
    finally:
        f.close()
        if not finished:
            if state["rows"] == 0 and not state["bad"]:  # nothing worth resuming
                partial.unlink(missing_ok=True)
                state_path.unlink(missing_ok=True)
            else:
                write_json_atomic(state_path, state)
    bad = [(str(p), str(r)) for p, r in state["bad"]]
    if bad:
        write_json_atomic(bad_path, [{"path": p, "reason": r} for p, r in bad])
    else:
        bad_path.unlink(missing_ok=True)  # a stale list from an earlier run of this output
    os.replace(partial, out)
    state_path.unlink(missing_ok=True)
    return WriteResult(out, int(state["rows"]), len(sources), bad, bad_path if bad else None,
                       resumed_from, described)


def rank_part(out: Path, rank: int) -> Path:
    """`<stem>.rank<r><suffix>` beside `out`: rank r's part of a sharded run."""
    return out.with_name(f"{out.stem}.rank{rank}{out.suffix}")


def _join_parts(out: Path, fmt: str, world: int) -> tuple[int, list[tuple[str, str]]]:
    """Rank 0: the ranks' parts (each complete) -> `<out>` in rank order, one CSV header;
    their bad-image lists -> `<out>.bad.json`; the parts removed. Returns (rows, bad)."""
    from vlml.fileio import atomic_open

    parts = [rank_part(out, r) for r in range(world)]
    bad: list[Any] = []
    n_rows = 0
    with atomic_open(out, "wb") as dst:
        for r, part in enumerate(parts):
            with open(part, "rb") as src:
                if fmt == ".csv":
                    header = src.readline()  # each part has it; keep the first only
                    if r == 0:
                        dst.write(header)
                for line in src:
                    dst.write(line)
                    n_rows += 1
            part_bad = side_files(part)[2]
            if part_bad.is_file():
                bad += json.loads(part_bad.read_text())
    bad_path = side_files(out)[2]
    if bad:
        write_json_atomic(bad_path, bad)
    else:
        bad_path.unlink(missing_ok=True)
    for part in parts:
        part.unlink()
        side_files(part)[2].unlink(missing_ok=True)
    return n_rows, [(str(b["path"]), str(b["reason"])) for b in bad]
