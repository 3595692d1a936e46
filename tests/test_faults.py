"""Fault injection: bad inputs and faults a user can cause, tried on the command line.

Each case builds a bad input in its own folder, runs `vlml ...` and checks that vlml refuses it
as a user error: exit code 2, one line `vlml: error: ...` naming the file or key (and what was
expected), no traceback, no message suggesting `weights_only=False`, and nothing partial left
(no temporary file, no output or run folder where the command was refused before any work).

Families (issue 17): checkpoint and weights files; user errors (config values, devices, a
folder where a file is expected or the reverse, reader options, catalog files, `vlml eval` on
what is not a finished run); degenerate inputs (nothing to work on); file modes under the
umask; a full disk while writing (the previous file kept); a run killed with SIGKILL and run
again gives the numbers of an uninterrupted run.

Most cases run in process (`vlml.cli.main.main`): a subprocess adds only the interpreter's
start. A few run as a real `vlml` process, to check the exit code and stderr end to end.
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vlml import fileio
from vlml.cli.main import main
from vlml.engine.checkpoint import load_checkpoint, save_checkpoint, save_weights
from vlml.types import LABELS_GROUND_TRUTH, LABELS_KEY, Catalog

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

EPOCHS = 2


# ---- the shared, valid inputs ------------------------------------------------------------------
@dataclass(frozen=True)
class World:
    """Valid inputs the cases start from: sample photos, their catalogs, a finished run."""

    root: Path
    photos: Path
    classes: Path
    train: Path  # given labels, one tag per photo
    test: Path   # given labels, every class known
    truth: Path  # ground-truth labels (what the regimes draw from)
    cache: Path
    run: Path    # a finished spml/toy/vlpl run of EPOCHS epochs


def train_argv(w: World, out: Path, *extra: str, config: str = "spml/toy/vlpl") -> list[str]:
    """`vlml train` of the toy VLPL config on the sample photos (the cached features reused)."""
    return ["train", config, f"data.train_catalog={w.train}", f"data.test_catalog={w.test}",
            f"cache_dir={w.cache}", f"out_dir={out}", f"optim.epochs={EPOCHS}", "--quiet",
            *extra]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("faults")
    photos = root / "photos"
    quiet = ["--quiet"]
    assert main(["sample-photos", "--out", str(photos), "--n-train", "200", "--n-test", "100",
                 *quiet]) == 0
    classes = photos / "classes.txt"
    assert main(["data", "prepare", "manifest", "--root", str(photos / "train/tags.csv"),
                 "--classes-file", str(classes), "--out", str(root / "cat/train"), *quiet]) == 0
    assert main(["data", "prepare", "manifest", "--root", str(photos / "test/tags.csv"),
                 "--classes-file", str(classes), "--option", "unlisted=negative",
                 "--out", str(root / "cat/test"), *quiet]) == 0
    train, test = root / "cat/train/all.catalog.zip", root / "cat/test/all.catalog.zip"
    truth = Catalog.load(test).with_step({"step": "fixture", LABELS_KEY: LABELS_GROUND_TRUTH})
    truth.save(root / "cat/truth.catalog.zip")
    w = World(root, photos, classes, train, test, root / "cat/truth.catalog.zip",
              root / "cache", root / "run")
    assert main(train_argv(w, w.run)) == 0
    return w


# ---- running the command line ------------------------------------------------------------------
def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit code, stderr) of `vlml argv` run in this process; any exception that is not a
    `VlmlError` escapes (the test fails with its traceback)."""
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


def run_process(argv: list[str], cwd: Path, timeout: float = 240,
                **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`vlml argv` as a real process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "vlml", *argv], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout, **kwargs)


def check_refused(code: int, err: str, needle: str, tmp: Path, left: tuple[str, ...]) -> None:
    """The common promise: exit 2, one error line naming `needle`, no traceback, no advice to
    unpickle, no temporary file left under `tmp`, none of `left` (relative to `tmp`)."""
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("vlml: error: "), err
    assert "Traceback" not in err, err
    assert "weights_only" not in err, err
    assert needle in lines[-1], f"{needle!r} not in {lines[-1]!r}"
    stray = [p for p in tmp.rglob("*") if p.name.endswith(".tmp")]
    assert not stray, stray
    for rel in left:
        assert not (tmp / rel).exists(), f"{rel} was left behind"


# ---- building bad inputs -----------------------------------------------------------------------
def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def copy_to(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src, dst))


def unreadable_images(tmp: Path) -> Path:
    """A manifest of two files that are not images."""
    write(tmp / "a.png", "not an image")
    write(tmp / "b.png", "nor this")
    return write(tmp / "tags.csv", "image,positives\na.png,red circle\nb.png,red circle\n")


def truncated(src: Path, dst: Path, keep: float = 0.5) -> Path:
    return write(dst, src.read_bytes()[: int(src.stat().st_size * keep)])


def pickled_object(path: Path) -> Path:
    """A torch file holding a Python object `weights_only` refuses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "args": argparse.Namespace(lr=0.1), "w": torch.zeros(2)}, path)
    return path


def copy_run(w: World, tmp: Path) -> Path:
    return Path(shutil.copytree(w.run, tmp / "run"))


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def edited_catalog(w: World, tmp: Path, edit: Callable[[dict[str, bytes]], None],
                   name: str = "bad.catalog.zip") -> Path:
    """A copy of the train catalog with its zip members edited (`edit` gets name -> bytes)."""
    with zipfile.ZipFile(w.train) as z:
        members = {n: z.read(n) for n in z.namelist()}
    edit(members)
    path = tmp / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data in members.items():
            z.writestr(n, data)
    return path


def edit_header(**changes: Any) -> Callable[[dict[str, bytes]], None]:
    def edit(members: dict[str, bytes]) -> None:
        header = json.loads(members["catalog.json"])
        for key, value in changes.items():
            if value is _DROP:
                del header[key]
            else:
                header[key] = value
        members["catalog.json"] = json.dumps(header).encode()
    return edit


_DROP = object()


def corrupt_member(w: World, tmp: Path) -> Path:
    """The train catalog with bytes inside the compressed labels.npy overwritten (a damaged
    deflate stream, which zipfile reports as zlib.error, not BadZipFile)."""
    raw = bytearray(w.train.read_bytes())
    with zipfile.ZipFile(w.train) as z:
        info = z.getinfo("labels.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + 2:start + 40] = bytes(38)
    return write(tmp / "damaged.catalog.zip", bytes(raw))


def empty_catalog(w: World, tmp: Path) -> Path:
    return Catalog.load(w.test).subset([]).save(tmp / "empty.catalog.zip")


def state_dict_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"visual.proj": torch.zeros(3, 3)}, path)
    return path


def no_gpu(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(torch.cuda, "is_available", lambda: False)


def one_gpu(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(torch.cuda, "is_available", lambda: True)
    mp.setattr(torch.cuda, "device_count", lambda: 1)


def voc_with_empty_class_files(tmp: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from fixtures import make_voc

    base = make_voc(tmp / "voc")
    for p in (base / "VOCdevkit/VOC2007/ImageSets/Main").glob("*_trainval.txt"):
        p.write_text("")
    return base


def features_argv(w: World, tmp: Path, *extra: str, catalog: Path | None = None) -> list[str]:
    return ["features", "--catalog", str(catalog or w.test), "--encoder", "toy-clip",
            "--out", str(tmp / "feat"), "--quiet", *extra]


def prepare_argv(root: Path | str, out: Path, *extra: str, dataset: str = "manifest"
                 ) -> list[str]:
    return ["data", "prepare", dataset, "--root", str(root), "--out", str(out), "--quiet", *extra]


# ---- the cases ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    """One bad input: `build(world, tmp)` makes it and returns the argv; the error line must
    hold `needle`; `left` (relative to tmp) must not exist afterwards; `patch` fakes the
    machine (e.g. no GPU)."""

    name: str
    build: Callable[[World, Path], list[str]]
    needle: str
    left: tuple[str, ...] = ()
    patch: Callable[[pytest.MonkeyPatch], None] | None = None
    family: str = field(default="", compare=False)


def _family(name: str, cases: list[Fault]) -> list[Fault]:
    return [Fault(c.name, c.build, c.needle, c.left, c.patch, name) for c in cases]


def _resume_with_last(make: Callable[[Path], None]) -> Callable[[World, Path], list[str]]:
    """Re-run the finished run's command in a copy whose last.pt `make` damages."""
    def build(w: World, tmp: Path) -> list[str]:
        run = copy_run(w, tmp)
        make(run / "last.pt")
        return train_argv(w, run)
    return build


def _eval_with(make: Callable[[Path], None]) -> Callable[[World, Path], list[str]]:
    """`vlml eval` of a copy of the finished run that `make` damages."""
    def build(w: World, tmp: Path) -> list[str]:
        run = copy_run(w, tmp)
        make(run)
        return ["eval", str(run)]
    return build


CHECKPOINTS = _family("checkpoints", [
    Fault("last.pt truncated", _resume_with_last(
        lambda p: truncated(p, p, 0.5)), "last.pt"),
    Fault("last.pt not a checkpoint", _resume_with_last(
        lambda p: write(p, "not a checkpoint\n")), "last.pt"),
    Fault("last.pt refused by weights_only", _resume_with_last(pickled_object), "last.pt"),
    Fault("last.pt holds a list", _resume_with_last(
        lambda p: torch.save([1, 2, 3], p)), "last.pt"),
    Fault("last.pt empty", _resume_with_last(lambda p: write(p, b"")), "last.pt"),
    Fault("eval: weights truncated", _eval_with(
        lambda r: truncated(r / "best.safetensors", r / "best.safetensors", 0.3)),
        "best.safetensors"),
    Fault("eval: weights not safetensors", _eval_with(
        lambda r: write(r / "best.safetensors", "hello")), "best.safetensors"),
    Fault("eval: weights of another model", _eval_with(
        lambda r: save_weights(r / "best.safetensors", {"fc.weight": torch.zeros(2, 2)})),
        "best.safetensors"),
    Fault("--pretrained a text file", lambda w, t: features_argv(
        w, t, "--pretrained", str(write(t / "notes.pt", "some notes\n"))), "notes.pt", ("feat",)),
    Fault("--pretrained refused by weights_only", lambda w, t: features_argv(
        w, t, "--pretrained", str(pickled_object(t / "obj.pt"))), "obj.pt", ("feat",)),
    Fault("--pretrained truncated zip", lambda w, t: features_argv(
        w, t, "--pretrained", str(truncated(state_dict_file(t / "sd.pt"), t / "cut.pt"))),
        "cut.pt", ("feat",)),
    Fault("--pretrained empty file", lambda w, t: features_argv(
        w, t, "--pretrained", str(write(t / "zero.bin", b""))), "zero.bin", ("feat",)),
    Fault("--pretrained truncated safetensors", lambda w, t: features_argv(
        w, t, "--pretrained", str(write(t / "cut.safetensors", b"\x40" + bytes(7) + b'{"a":'))),
        "cut.safetensors", ("feat",)),
    Fault("--pretrained of another architecture", lambda w, t: features_argv(
        w, t, "--pretrained", str(state_dict_file(t / "other.pt"))), "other.pt", ("feat",)),
    Fault("encoder.pretrained refused by weights_only", lambda w, t: train_argv(
        w, t / "run", f"encoder.pretrained={pickled_object(t / 'clip.pt')}"), "clip.pt",
        ("run",)),
    Fault("model.pretrained a text file", lambda w, t: train_argv(
        w, t / "run", "model.mode=end_to_end", "model.hidden=0", "model.backbone=resnet18",
        f"model.pretrained={write(t / 'backbone.pth', 'text')}"), "backbone.pth", ("run",)),
    Fault("model.pretrained refused by weights_only", lambda w, t: train_argv(
        w, t / "run", "model.mode=end_to_end", "model.hidden=0", "model.backbone=resnet18",
        f"model.pretrained={pickled_object(t / 'resnet.pth')}"), "resnet.pth", ("run",)),
])

USER_ERRORS = _family("user errors", [
    # values out of range, before any work
    Fault("early_stop_patience=0", lambda w, t: train_argv(
        w, t / "run", "optim.early_stop_patience=0"), "optim.early_stop_patience", ("run",)),
    Fault("seed=-1", lambda w, t: train_argv(w, t / "run", "seed=-1"), "seed", ("run",)),
    Fault("lr=nan", lambda w, t: train_argv(w, t / "run", "optim.lr=nan"), "optim.lr",
          ("run",)),
    Fault("lr=.inf", lambda w, t: train_argv(w, t / "run", "optim.lr=.inf"), "optim.lr",
          ("run",)),
    Fault("ssmll seed=-1", lambda w, t: train_argv(
        w, t / "run", "seed=-1", config="ssmll/toy/cbsa"), "seed", ("run",)),
    Fault("ssmll pct_start=1", lambda w, t: train_argv(
        w, t / "run", "optim.pct_start=1", config="ssmll/toy/cap"), "optim.pct_start",
        ("run",)),
    Fault("pseudo.params out of range", lambda w, t: train_argv(
        w, t / "run", "pseudo.params={tau: -1, theta: 0.1}"), "pseudo.params", ("run",)),
    Fault("loss.params unknown key", lambda w, t: train_argv(
        w, t / "run", "loss.params={alpha: 0.2, nope: 1}"), "loss.params", ("run",)),
    Fault("loss.state_params for a loss without state", lambda w, t: train_argv(
        w, t / "run", "loss.state_params={x: 1}"), "loss.state_params", ("run",)),
    Fault("encoder.templates without {name}", lambda w, t: train_argv(
        w, t / "run", "encoder.templates=['a photo']"), "encoder.templates", ("run",)),
    Fault("batch_size of the wrong type", lambda w, t: train_argv(
        w, t / "run", "optim.batch_size=1.5"), "optim.batch_size", ("run",)),
    Fault("data.options unknown key", lambda w, t: train_argv(
        w, t / "run", "data.options={foo: 1}"), "data.options", ("run",)),
    # devices that are not there
    Fault("device=cuda, no GPU", lambda w, t: train_argv(w, t / "run", "device=cuda"),
          "device='cuda'", ("run",), no_gpu),
    Fault("device=gpu", lambda w, t: train_argv(w, t / "run", "device=gpu"), "device='gpu'",
          ("run",)),
    Fault("device=cuda:9, one GPU", lambda w, t: train_argv(w, t / "run", "device=cuda:9"),
          "cuda:9", ("run",), one_gpu),
    Fault("features --device cuda, no GPU", lambda w, t: features_argv(
        w, t, "--device", "cuda"), "cuda", ("feat",), no_gpu),
    # a folder where a file is expected, or the reverse
    Fault("train_catalog a folder", lambda w, t: train_argv(
        w, t / "run", f"data.train_catalog={w.photos}"), "photos", ("run",)),
    Fault("stats of a folder", lambda w, t: ["data", "stats", str(w.photos)], "photos"),
    Fault("--classes-file a folder", lambda w, t: prepare_argv(
        w.photos / "train/tags.csv", t / "out", "--classes-file", str(w.photos)), "photos",
        ("out",)),
    Fault("manifest --root a folder", lambda w, t: prepare_argv(w.photos, t / "out"),
          "photos", ("out",)),
    Fault("config a folder", lambda w, t: ["train", str(w.photos)], "photos"),
    Fault("cache_dir a file", lambda w, t: train_argv(
        w, t / "run", f"cache_dir={write(t / 'cache.txt', 'x')}"), "cache_dir", ("run",)),
    Fault("out_dir a file", lambda w, t: train_argv(w, write(t / "runfile", "x")), "runfile"),
    Fault("prepare --out a file", lambda w, t: prepare_argv(
        w.photos / "train/tags.csv", write(t / "out", "x"), "--classes-file", str(w.classes),
        "--no-verify-images"), "out"),
    Fault("regime --out and --val-out the same", lambda w, t: [
        "regime", "single-positive", str(w.truth), "--out", str(t / "a.zip"), "--val-out",
        str(t / "a.zip")], "--val-out", ("a.zip",)),
    Fault("regime --out a folder", lambda w, t: [
        "regime", "partial", str(w.truth), "--q", "0.5",
        "--out", str(folder(t / "q.zip"))], "q.zip"),
    # reader options
    Fault("unknown --option", lambda w, t: prepare_argv(
        w.photos / "train/tags.csv", t / "out", "--option", "foo=1"), "foo", ("out",)),
    Fault("--option of the wrong type", lambda w, t: prepare_argv(
        w.photos / "train/tags.csv", t / "out", "--option", "check_images=maybe"),
        "check_images", ("out",)),
    Fault("--option classes=5", lambda w, t: prepare_argv(
        w.photos / "train/tags.csv", t / "out", "--option", "classes=5"), "classes", ("out",)),
    # catalog files
    Fault("catalog not a zip", lambda w, t: [
        "data", "stats", str(write(t / "text.catalog.zip", "hello"))], "text.catalog.zip"),
    Fault("catalog truncated", lambda w, t: [
        "data", "stats", str(truncated(w.train, t / "cut.catalog.zip"))], "cut.catalog.zip"),
    Fault("catalog without catalog.json", lambda w, t: ["data", "stats", str(edited_catalog(
        w, t, lambda m: m.pop("catalog.json")))], "catalog.json"),
    Fault("catalog header not JSON", lambda w, t: ["data", "stats", str(edited_catalog(
        w, t, lambda m: m.update({"catalog.json": b"{not json"})))], "catalog.json"),
    Fault("catalog header a list", lambda w, t: ["data", "stats", str(edited_catalog(
        w, t, lambda m: m.update({"catalog.json": b"[1, 2]"})))], "catalog.json"),
    Fault("catalog header lacks class_names", lambda w, t: ["data", "stats", str(
        edited_catalog(w, t, edit_header(class_names=_DROP)))], "class_names"),
    Fault("catalog class_names of the wrong type", lambda w, t: ["data", "stats", str(
        edited_catalog(w, t, edit_header(class_names=5)))], "class_names"),
    Fault("catalog provenance of the wrong type", lambda w, t: ["data", "stats", str(
        edited_catalog(w, t, edit_header(provenance="abc")))], "provenance"),
    Fault("catalog root of the wrong type", lambda w, t: ["data", "stats", str(
        edited_catalog(w, t, edit_header(root=[1])))], "root"),
    Fault("catalog n_images disagrees", lambda w, t: ["data", "stats", str(
        edited_catalog(w, t, edit_header(n_images=7)))], "n_images"),
    Fault("catalog image paths not strings", lambda w, t: ["data", "stats", str(edited_catalog(
        w, t, lambda m: m.update({"image_paths.npy": npy_bytes(np.arange(200))})))],
        "image_paths.npy"),
    Fault("catalog labels pickled", lambda w, t: ["data", "stats", str(edited_catalog(
        w, t, lambda m: m.update({"labels.npy": npy_bytes(
            np.array([None] * 200, dtype=object), allow_pickle=True)})))], "labels.npy"),
    Fault("catalog member damaged", lambda w, t: [
        "data", "stats", str(corrupt_member(w, t))], "labels.npy"),
    Fault("train on a damaged catalog", lambda w, t: train_argv(
        w, t / "run", f"data.train_catalog={corrupt_member(w, t)}"), "damaged.catalog.zip",
        ("run",)),
    # vlml eval on what is not a finished run
    Fault("eval: a folder with no run", lambda w, t: [
        "eval", str(folder(t / "empty"))], "run.json"),
    Fault("eval: no such folder", lambda w, t: ["eval", str(t / "nowhere")], "nowhere"),
    Fault("eval: a file", lambda w, t: ["eval", str(w.classes)], "classes.txt"),
    Fault("eval: no weights", _eval_with(lambda r: (r / "best.safetensors").unlink()),
          "best.safetensors"),
    Fault("eval: run.json a list", _eval_with(lambda r: write(r / "run.json", "[1]")),
          "run.json"),
    Fault("eval: run.json not JSON", _eval_with(lambda r: write(r / "run.json", "{")),
          "run.json"),
    Fault("eval: run.json lacks a field", _eval_with(lambda r: write(r / "run.json", json.dumps(
        {k: v for k, v in json.loads((r / "run.json").read_text()).items()
         if k != "weights"}))), "weights"),
])

DEGENERATE = _family("degenerate inputs", [
    Fault("stats of an empty catalog", lambda w, t: [
        "data", "stats", str(empty_catalog(w, t))], "empty.catalog.zip"),
    Fault("features of an empty catalog", lambda w, t: features_argv(
        w, t, catalog=empty_catalog(w, t)), "no images", ("feat",)),
    Fault("train on an empty catalog", lambda w, t: train_argv(
        w, t / "run", f"data.train_catalog={empty_catalog(w, t)}"), "empty.catalog.zip",
        ("run",)),
    Fault("regime of an empty catalog", lambda w, t: [
        "regime", "partial", str(empty_catalog(w, t)), "--q", "0.5", "--out",
        str(t / "q.zip")], "empty.catalog.zip", ("q.zip",)),
    Fault("regime: a validation part of no image", lambda w, t: [
        "regime", "single-positive", str(w.truth), "--out", str(t / "a.zip"), "--val-out",
        str(t / "v.zip"), "--val-frac", "0"], "--val-out", ("a.zip", "v.zip")),
    Fault("regime: a draw that observes nothing", lambda w, t: [
        "regime", "partial", str(w.truth), "--q", "1e-9", "--out", str(t / "q.zip")], "q.zip",
        ("q.zip",)),
    Fault("test_catalog empty", lambda w, t: train_argv(
        w, t / "run", f"data.test_catalog={empty_catalog(w, t)}"), "data.test_catalog",
        ("run",)),
    Fault("header-only manifest", lambda w, t: prepare_argv(
        write(t / "tags.csv", "image,positives\n"), t / "out", "--classes-file",
        str(w.classes)), "tags.csv", ("out",)),
    Fault("blank JSON-lines manifest", lambda w, t: prepare_argv(
        write(t / "tags.jsonl", "\n\n"), t / "out", "--classes-file", str(w.classes)),
        "tags.jsonl", ("out",)),
    Fault("every image unreadable, --skip-bad-images", lambda w, t: prepare_argv(
        unreadable_images(t), t / "out", "--classes-file", str(w.classes),
        "--skip-bad-images"), "a.png", ("out",)),
    Fault("VOC: every class file empty", lambda w, t: prepare_argv(
        voc_with_empty_class_files(t), t / "out", "--split", "trainval", dataset="voc2007"),
        "trainval", ("out",)),
    Fault("folder: no image in any class folder", lambda w, t: prepare_argv(
        folder(t / "tree/cat").parent, t / "out", dataset="folder"),
        "tree", ("out",)),
])

CASES = CHECKPOINTS + USER_ERRORS + DEGENERATE


def test_enough_cases_in_every_family():
    families = {c.family for c in CASES}
    assert families == {"checkpoints", "user errors", "degenerate inputs"}
    assert len(CASES) + len(FULL_DISK) + len(UMASK_WRITERS) * len(UMASKS) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_clearly(case: Fault, world: World, tmp_path: Path, capsys, monkeypatch):
    argv = case.build(world, tmp_path)
    if case.patch is not None:
        case.patch(monkeypatch)
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(argv, capsys)
    check_refused(code, err, case.needle, tmp_path, case.left)


def test_refused_checkpoint_keeps_the_file(world: World, tmp_path: Path, capsys):
    """A damaged last.pt is the user's to look at: refused, not deleted or rewritten."""
    run = copy_run(world, tmp_path)
    truncated(run / "last.pt", run / "last.pt")
    before = (run / "last.pt").read_bytes()
    code, err = run_cli(train_argv(world, run), capsys)
    check_refused(code, err, "last.pt", tmp_path, ())
    assert (run / "last.pt").read_bytes() == before


# ---- a full disk while writing -------------------------------------------------------------------
class _FullDisk:
    """A file object whose writes fail with `err` once `limit` bytes were written."""

    def __init__(self, f: Any, limit: int, err: int) -> None:
        self._f, self._left, self._err = f, limit, err

    def write(self, data: Any) -> int:
        self._left -= len(data)
        if self._left < 0:
            raise OSError(self._err, os.strerror(self._err))
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()


def fill_disk(mp: pytest.MonkeyPatch, name: str, *, skip: int = 0, limit: int = 100,
              err: int = errno.ENOSPC) -> None:
    """Writes of files named `name` fail (after `skip` successful ones) with `err` once
    `limit` bytes are written."""
    real = fileio._open_temp
    seen = {"n": 0}

    def opener(fd: int, mode: str, target: Path) -> Any:
        f = real(fd, mode, target)
        if target.name != name:
            return f
        seen["n"] += 1
        return f if seen["n"] <= skip else _FullDisk(f, limit, err)

    mp.setattr(fileio, "_open_temp", opener)


def _disk_catalog(w: World, t: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    old = copy_to(w.test, t / "out/all.catalog.zip")
    fill_disk(mp, "all.catalog.zip")
    return prepare_argv(w.photos / "train/tags.csv", t / "out", "--classes-file",
                        str(w.classes)), old


def _disk_regime(w: World, t: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    old = copy_to(w.test, t / "q.zip")
    fill_disk(mp, "q.zip", limit=10)
    return ["regime", "partial", str(w.truth), "--q", "0.5", "--out", str(old)], old


def _disk_checkpoint(w: World, t: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    fill_disk(mp, "last.pt", skip=1, limit=4096)  # epoch 1's checkpoint, then a full disk
    return train_argv(w, t / "run"), t / "run/last.pt"


def _disk_weights(w: World, t: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    fill_disk(mp, "best.safetensors", limit=1000, err=errno.EDQUOT)
    return train_argv(w, t / "run"), t / "run/best.safetensors"


def _disk_scores(w: World, t: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    old = write(t / "scores.npy", b"old scores")
    fill_disk(mp, "scores.npy", limit=64)
    return ["zero-shot", "--catalog", str(w.test), "--encoder", "toy-clip", "--cache",
            str(w.cache), "--scores-out", str(old), "--quiet"], old


FULL_DISK = {"catalog": (_disk_catalog, "disk is full"), "regime": (_disk_regime, "disk is full"),
             "checkpoint": (_disk_checkpoint, "disk is full"),
             "weights": (_disk_weights, "quota"), "scores": (_disk_scores, "disk is full")}


@pytest.mark.parametrize("what", list(FULL_DISK))
def test_full_disk_keeps_the_previous_file(what: str, world: World, tmp_path: Path, capsys,
                                           monkeypatch):
    make, says = FULL_DISK[what]
    argv, target = make(world, tmp_path, monkeypatch)
    before = target.read_bytes() if target.exists() else None
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(argv, capsys)
    check_refused(code, err, target.name, tmp_path, ())
    assert says in err
    if target.name == "last.pt":  # written by the run itself: epoch 1's, still readable
        assert load_checkpoint(target)["epoch"] == 1
    elif before is None:
        assert not target.exists()
    else:
        assert target.read_bytes() == before


# ---- file modes under the umask ------------------------------------------------------------------
UMASKS = (0o022, 0o027, 0o002)
UMASK_WRITERS: dict[str, Callable[[Path], None]] = {
    "text": lambda p: fileio.write_text_atomic(p, "x"),
    "npy": lambda p: fileio.save_npy_atomic(p, np.zeros(3)),
    "checkpoint": lambda p: save_checkpoint(p, {"w": torch.zeros(2)}),
    "weights": lambda p: save_weights(p, {"w": torch.zeros(2)}),
    "catalog": lambda p: Catalog(("a.png",), ("c",), np.ones((1, 1), np.int8)).save(p),
}


@pytest.mark.parametrize("umask", UMASKS, ids=oct)
@pytest.mark.parametrize("writer", list(UMASK_WRITERS))
def test_files_take_the_umask(writer: str, umask: int, tmp_path: Path):
    previous = os.umask(umask)
    try:
        UMASK_WRITERS[writer](tmp_path / "out" / "file")
    finally:
        os.umask(previous)
    assert (tmp_path / "out/file").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_run_folder_takes_the_umask(world: World):
    modes = {p.name: p.stat().st_mode & 0o777 for p in world.run.iterdir() if p.is_file()}
    mask = fileio.current_umask()
    assert modes and all(m == 0o666 & ~mask for m in modes.values()), modes


# ---- as real processes ---------------------------------------------------------------------------
def _limit_file_size(limit: int) -> Callable[[], None]:
    def preexec() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_processes_exit_2_with_one_line(world: World, tmp_path: Path):
    """End to end as `vlml` processes: a damaged checkpoint on resume, a malformed catalog
    header, an empty catalog, and a real write failure (the file size limit, EFBIG), each
    exit 2 with one error line, no traceback."""
    run = copy_run(world, tmp_path)
    truncated(run / "last.pt", run / "last.pt")
    header = edited_catalog(world, tmp_path, edit_header(class_names=5))
    empty = empty_catalog(world, tmp_path)
    old = copy_to(world.test, tmp_path / "out/all.catalog.zip")
    before = old.read_bytes()
    cases = [
        (train_argv(world, run), "last.pt", {}),
        (["data", "stats", str(header)], "class_names", {}),
        (["regime", "partial", str(empty), "--q", "0.5", "--out", str(tmp_path / "q.zip")],
         "empty.catalog.zip", {}),
        (prepare_argv(world.photos / "train/tags.csv", tmp_path / "out", "--classes-file",
                      str(world.classes), "--no-verify-images"), "file size limit",
         {"preexec_fn": _limit_file_size(len(before) // 2)}),
    ]
    for argv, needle, kwargs in cases:
        proc = run_process(argv, tmp_path, **kwargs)
        check_refused(proc.returncode, proc.stderr, needle, tmp_path, ("q.zip",))
    assert old.read_bytes() == before


# ---- kill -9 during training, then run again -----------------------------------------------------
PAUSED = """
import sys, time
import vlml.engine.trainer as trainer
from vlml.cli.main import main

save = trainer.save_checkpoint

def save_then_pause(path, state):
    save(path, state)
    time.sleep(60.0)  # a window for the test to kill the run after epoch 1 (it is killed)

trainer.save_checkpoint = save_then_pause
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_then_rerun_gives_the_uninterrupted_results(world: World, tmp_path: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    killed_dir, whole_dir = tmp_path / "killed", tmp_path / "whole"
    argv = train_argv(world, killed_dir, "optim.epochs=3")
    whole = subprocess.Popen([sys.executable, "-m", "vlml", *train_argv(
        world, whole_dir, "optim.epochs=3")], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    paused = subprocess.Popen([sys.executable, "-c", PAUSED, *argv], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not (killed_dir / "last.pt").exists():
            assert paused.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.02)
        paused.send_signal(signal.SIGKILL)
        assert paused.wait(timeout=30) == -signal.SIGKILL
    finally:
        if paused.poll() is None:
            paused.kill()
    assert load_checkpoint(killed_dir / "last.pt")["epoch"] == 1
    assert not (killed_dir / "test_scores.npy").exists()  # killed mid-run
    rerun = run_process(argv, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert whole.wait(timeout=240) == 0, whole.stderr.read()
    whole.stderr.close()
    resumed = np.load(killed_dir / "test_scores.npy")
    uninterrupted = np.load(whole_dir / "test_scores.npy")
    np.testing.assert_array_equal(resumed, uninterrupted)
    epochs = [json.loads(line)["epoch"] for line in
              (killed_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
