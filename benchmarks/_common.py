"""Helpers shared by the benchmark scripts (imported as `_common`: a script run as
`python benchmarks/bench_x.py` has `benchmarks/` on its import path)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@contextmanager
def work_folder(work_dir: str | None, prefix: str) -> Iterator[Path]:
    """The folder `work_dir` (created if missing, kept), or a fresh temporary folder named
    `<prefix>...` that is removed on exit."""
    folder = Path(work_dir or tempfile.mkdtemp(prefix=prefix))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        if work_dir is None:
            shutil.rmtree(folder, ignore_errors=True)


def spawn(script: str, role: str, folder: Path, argv: list[str]) -> dict:
    """Run `script` in a fresh interpreter as `script *argv --child role --work-dir folder` and
    return the JSON object on the last line of its stdout; `SystemExit` if it fails."""
    cmd = [sys.executable, os.path.abspath(script), *argv, "--child", role,
           "--work-dir", str(folder)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {role} process failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])
