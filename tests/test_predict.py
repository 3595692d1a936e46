"""`vlml.predict` and `vlml predict`: every input form, threshold and top-k semantics, the
zero-shot tagger, JSONL/CSV output, resume after an interruption, bad images, and errors that
leave nothing written."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlml.cli.main import main
from vlml.errors import ConfigError, DataError
from vlml.predict import Tagger, Tags, decide, parse_threshold, resolve_images
from vlml.predict.tagger import check_class_names
from vlml.types import Catalog

# ---------------------------------------------------------------- unit: no model needed


def _png(path, seed=0, size=(20, 24)):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_parse_threshold_and_top_k():
    from vlml.predict import check_top_k

    assert parse_threshold(None) is None and parse_threshold("calibrated") == "calibrated"
    assert parse_threshold("0.25") == 0.25 and parse_threshold(0) == 0.0
    for bad in ("calib", "1.5", -0.1, float("nan"), True, "inf"):
        with pytest.raises(ConfigError, match="threshold"):
            parse_threshold(bad)
    assert check_top_k(None) is None and check_top_k(3) == 3
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="top_k"):
            check_top_k(bad)


def test_decide_threshold_and_top_k():
    s = np.array([[0.9, 0.2, 0.6, 0.6], [0.1, 0.0, 0.3, 0.05]], np.float32)
    thr = np.array([0.5, 0.5, 0.6, 0.7])
    assert decide(s, thr).tolist() == [[True, False, True, False], [False] * 4]
    # at most k, the best above threshold: never a class below it
    assert decide(s, thr, top_k=1).tolist() == [[True, False, False, False], [False] * 4]
    # threshold 0 + top_k k: exactly the k best (ties towards the lower class index), even a
    # score of exactly 0
    best2 = decide(s, np.zeros(4), top_k=2)
    assert best2.sum(1).tolist() == [2, 2]
    assert best2.tolist() == [[True, False, True, False], [True, False, True, False]]
    assert decide(s, np.zeros(4), top_k=4).all()
    assert decide(s[:, :1] * 0, np.zeros(1), top_k=1).all()


def test_tags_record_orders_tags_by_score_and_gives_rows():
    scores = np.array([[0.2, 0.9, 0.7]], np.float32)
    t = Tags(["a.png"], scores, decide(scores, np.full(3, 0.5)), ("x", "y", "z"),
             np.full(3, 0.5), np.array([0]))
    assert t.tags == [("y", "z")] and len(t) == 1
    row = t.to_rows()[0]
    assert row["path"] == "a.png" and row["tags"] == ["y", "z"]
    assert row["scores"] == pytest.approx({"x": 0.2, "y": 0.9, "z": 0.7})
    both = Tags.concat([t, t], ("x", "y", "z"), np.full(3, 0.5), None)
    assert len(both) == 2 and both.scores.shape == (2, 3)
    empty = Tags.concat([], ("x", "y", "z"), np.full(3, 0.5), None)
    assert empty.scores.shape == (0, 3) and empty.to_rows() == []


def test_class_names_are_checked_and_named():
    assert check_class_names(["cat", "dog"]) == ("cat", "dog")
    with pytest.raises(ConfigError, match="empty"):
        check_class_names([])
    with pytest.raises(ConfigError, match=r"class 2 is an empty name"):
        check_class_names(["cat", " "])
    with pytest.raises(ConfigError, match=r"'cat' appears twice \(classes 1 and 3\)"):
        check_class_names(["cat", "dog", "cat"])
    with pytest.raises(ConfigError, match="at least two"):
        check_class_names(["cat"])
    with pytest.raises(ConfigError, match="list of class names"):
        check_class_names("cat,dog")


def test_resolve_every_input_form(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    for rel in ("b.png", "a.JPG", "sub/c.webp", "sub/deeper/d.TIFF"):
        _png(root / rel)
    (root / "notes.txt").write_text("not an image")
    _png(root / ".hidden.png")
    folder = resolve_images(root)
    assert [Path(p).relative_to(root).as_posix() for p in folder.items] == [
        "a.JPG", "b.png", "sub/c.webp", "sub/deeper/d.TIFF"]
    assert resolve_images(str(root / "sub" / "**" / "*")).items == [
        str(root / "sub/c.webp"), str(root / "sub/deeper/d.TIFF")]
    assert resolve_images(str(root / "*.png")).items == [str(root / "b.png")]
    # a file named on purpose is read whatever its suffix (a non-image is then a bad image)
    assert resolve_images(root / "notes.txt").items == [str(root / "notes.txt")]
    cat = Catalog(["b.png", "a.JPG"], ["x"], np.zeros((2, 1), np.int8), root=str(root))
    assert resolve_images(cat).items == [str(root / "b.png"), str(root / "a.JPG")]
    cat_file = cat.save(tmp_path / "c.catalog.zip")
    assert resolve_images(cat_file).items == resolve_images(cat).items
    pil = Image.open(root / "b.png")
    u8 = torch.zeros(3, 8, 8, dtype=torch.uint8)
    mixed = resolve_images([str(root / "b.png"), cat, pil, u8, torch.rand(2, 3, 5, 5)])
    assert len(mixed) == 1 + 2 + 1 + 1 + 2
    assert mixed.name(0) == str(root / "b.png") and mixed.name(3) == "<image 3>"
    # relative paths stay relative in the row names; the fingerprint uses absolute paths
    monkeypatch.chdir(tmp_path)
    relative = resolve_images("imgs")
    assert relative.items[0] == "imgs/a.JPG"
    assert relative.fingerprint() == folder.fingerprint()
    assert folder.fingerprint() != resolve_images(str(root / "*.png")).fingerprint()


def test_resolve_errors_name_the_input(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        resolve_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        resolve_images([tmp_path / "empty", str(tmp_path / "*.png")])
    with pytest.raises(DataError, match="no images found"):
        resolve_images([])
    with pytest.raises(DataError, match=r"images\[1\].*shape \(3, H, W\)"):
        resolve_images([torch.zeros(3, 4, 4), torch.zeros(4, 4)])
    with pytest.raises(DataError, match=r"\[0, 1\].*not a preprocessed"):
        resolve_images(torch.randn(3, 4, 4) * 3)
    with pytest.raises(DataError, match="unsupported input int"):
        resolve_images([3])


def test_output_format():
    from vlml.predict import output_format

    assert output_format("p.JSONL") == ".jsonl" and output_format("a/b.csv") == ".csv"
    for bad in ("p.json", "p", "p.txt"):
        with pytest.raises(ConfigError, match="expected one of .jsonl, .csv"):
            output_format(bad)


# ---------------------------------------------------------------- a trained run and a zero-shot


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from spml_world import make_world

    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def run_dir(world, tmp_path_factory):
    from spml_world import make_cfg
    from vlml import runs

    tmp = tmp_path_factory.mktemp("run")
    return runs.run(make_cfg(world, tmp, f"out_dir={tmp / 'vlpl'}")).run_dir


@pytest.fixture(scope="module")
def tagger(run_dir):
    return Tagger.from_run(run_dir)


@pytest.fixture(scope="module")
def test_catalog(world):
    return Catalog.load(world[1]["test"])


@pytest.fixture(scope="module")
def zero_shot(world):
    from vlml import encoders

    _, _, arch, ckpt = world
    return Tagger.zero_shot(encoders.load(arch, str(ckpt)), ["c0", "c1", "c2", "c3"])


@pytest.fixture
def bad_folder(tmp_path, test_catalog):
    """Two good images, then a corrupt JPEG, a zero-byte file and a text file named .jpg."""
    folder = tmp_path / "bad"
    folder.mkdir()
    for i, p in enumerate(test_catalog.full_paths()[:2]):
        shutil.copy(p, folder / f"g{i}.png")
    import io

    buf = io.BytesIO()
    Image.open(test_catalog.full_paths()[0]).convert("RGB").save(buf, "JPEG")
    (folder / "x_corrupt.jpg").write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    (folder / "y_zero.jpg").write_bytes(b"")
    (folder / "z_text.jpg").write_text("this is not a picture")
    return folder


integration = pytest.mark.integration  # whole pipelines: a trained run, a CLIP


@integration
def test_run_tagger_equals_saved_test_scores(tagger, run_dir, test_catalog):
    tags = tagger.tag(test_catalog)
    saved = np.load(run_dir / "test_scores.npy")
    assert tags.scores.dtype == np.float32 and np.abs(tags.scores - saved).max() < 1e-6
    assert tags.paths == [str(p) for p in test_catalog.full_paths()]
    assert tags.index.tolist() == list(range(16)) and tags.bad == []
    assert tagger.class_names == ("c0", "c1", "c2", "c3")


@integration
def test_every_input_form_gives_the_same_scores(tagger, test_catalog, world):
    paths = test_catalog.full_paths()[:4]
    by_path = tagger.tag([str(p) for p in paths]).scores
    pils = [Image.open(p) for p in paths]
    u8 = [torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1) for im in pils]
    assert np.array_equal(tagger.tag(pils).scores, by_path)
    assert np.array_equal(tagger.tag(u8).scores, by_path)
    assert np.array_equal(tagger.tag(torch.stack(u8)).scores, by_path)
    assert np.array_equal(tagger.tag([x.float() / 255 for x in u8]).scores, by_path)
    glob = tagger.tag(str(Path(test_catalog.root) / "1*.png"))
    assert [Path(p).name for p in glob.paths] == ["1.png", "10.png", "11.png", "12.png",
                                                  "13.png", "14.png", "15.png"]
    folder = tagger.tag(test_catalog.root)
    file = tagger.tag(world[1]["test"])
    order = [folder.paths.index(p) for p in file.paths]
    assert np.array_equal(folder.scores[order], file.scores)
    mixed = tagger.tag([pils[0], str(paths[1]), u8[2]], batch_size=2)
    assert np.abs(mixed.scores - by_path[:3]).max() < 1e-6
    assert mixed.paths == ["<image 0>", str(paths[1]), "<image 2>"]


@integration
def test_thresholds_and_top_k(tagger, test_catalog):
    values, text = tagger.resolve_thresholds()
    assert tagger.thresholds.calibrated.all() and text.startswith("calibrated per class")
    assert np.array_equal(values, tagger.thresholds.values)
    default = tagger.tag(test_catalog)
    assert np.array_equal(default.selected, default.scores >= values)
    assert np.array_equal(tagger.tag(test_catalog, threshold="calibrated").selected,
                          default.selected)
    half = tagger.tag(test_catalog, threshold=0.5)
    assert np.array_equal(half.thresholds, np.full(4, 0.5))
    assert np.array_equal(half.selected, half.scores >= 0.5)
    best2 = tagger.tag(test_catalog, threshold=0, top_k=2)
    assert all(len(t) == 2 for t in best2.tags)
    top = np.argsort(-best2.scores, axis=1, kind="stable")[:, :2]
    assert [set(r) for r in best2.tags] == [{f"c{c}" for c in r} for r in top]
    capped = tagger.tag(test_catalog, top_k=1)
    assert all(len(t) <= 1 for t in capped.tags)
    assert [t[:1] for t in default.tags] == capped.tags
    with pytest.raises(ConfigError, match="threshold"):
        tagger.tag(test_catalog, threshold="high")


@integration
def test_run_without_thresholds_uses_half_and_refuses_calibrated(run_dir, tmp_path,
                                                                 test_catalog):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "thresholds.json").unlink()
    tagger = Tagger.from_run(copy)
    values, text = tagger.resolve_thresholds()
    assert np.array_equal(values, np.full(4, 0.5)) and text.startswith("0.5 for every class")
    with pytest.raises(ConfigError, match="no calibrated thresholds"):
        tagger.tag(test_catalog, threshold="calibrated")


@integration
def test_iter_tag_streams_batches(tagger, test_catalog):
    parts = list(tagger.iter_tag(test_catalog, batch_size=5))
    assert [len(p) for p in parts] == [5, 5, 5, 1]
    whole = tagger.tag(test_catalog, batch_size=5)  # (another batch size: differences ~1e-8)
    assert np.array_equal(np.concatenate([p.scores for p in parts]), whole.scores)
    assert [r for p in parts for r in p.to_rows()] == whole.to_rows()
    with pytest.raises(ConfigError, match="batch_size"):  # checked on the call, not lazily
        tagger.iter_tag(test_catalog, batch_size=0)


@integration
def test_bad_images_raise_naming_each_or_are_skipped_and_listed(tagger, bad_folder):
    with pytest.raises(DataError) as e:
        tagger.tag(bad_folder)
    msg = str(e.value)
    for name in ("x_corrupt.jpg", "y_zero.jpg", "z_text.jpg"):
        assert name in msg
    assert "3 unreadable" in msg and "empty file (0 bytes)" in msg and "skip_bad" in msg
    tags = tagger.tag(bad_folder, skip_bad=True, batch_size=2)
    assert [Path(p).name for p in tags.paths] == ["g0.png", "g1.png"]
    assert tags.index.tolist() == [0, 1]
    assert [Path(p).name for p, _ in tags.bad] == ["x_corrupt.jpg", "y_zero.jpg", "z_text.jpg"]
    assert all(reason for _, reason in tags.bad)


@integration
def test_zero_shot_tagger(zero_shot, test_catalog, world):
    from vlml import encoders
    from vlml.models import image_model

    tags = zero_shot.tag(test_catalog)
    assert np.allclose(tags.scores.sum(1), 1, atol=1e-5)
    values, text = zero_shot.resolve_thresholds()
    assert np.array_equal(values, np.full(4, 0.3)) and "zero-shot" in text
    assert np.array_equal(tags.selected, tags.scores >= 0.3)
    # the same numbers as the ImageModel zero-shot module on preprocessed pixels
    _, _, arch, ckpt = world
    enc = encoders.load(arch, str(ckpt))
    im = image_model.zero_shot(enc, ["c0", "c1", "c2", "c3"], tau=0.03)
    x = torch.stack([im.preprocess(Image.open(p).convert("RGB"))
                     for p in test_catalog.full_paths()])
    with torch.no_grad():
        assert np.abs(im.module(x).numpy() - tags.scores).max() < 1e-6
    # an encoder by name (with its weights), templates and tau
    by_name = Tagger.zero_shot(arch, ["c0", "c1", "c2", "c3"], pretrained=str(ckpt),
                               templates=["a {name}", "the {name}"], tau=0.05)
    assert by_name.identity["templates"] == ["a {name}", "the {name}"]
    assert by_name.identity["tau"] == 0.05
    assert by_name.tag(test_catalog).scores.shape == (16, 4)
    with pytest.raises(ConfigError, match="no calibrated thresholds"):
        zero_shot.tag(test_catalog, threshold="calibrated")
    with pytest.raises(ConfigError, match="appears twice"):
        Tagger.zero_shot(enc, ["a", "b", "a"])
    with pytest.raises(ConfigError, match="tau"):
        Tagger.zero_shot(enc, ["a", "b"], tau=0)


# ---------------------------------------------------------------- the CLI


def _read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@integration
def test_cli_jsonl_and_csv(tagger, run_dir, test_catalog, tmp_path, capsys):
    folder = test_catalog.root
    out = tmp_path / "preds.jsonl"
    assert main(["predict", str(run_dir), folder, "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "thresholds: calibrated per class" in printed
    assert f"wrote 16 rows to {out}" in printed
    rows = _read_jsonl(out)
    expected = tagger.tag(folder)
    assert [r["path"] for r in rows] == expected.paths
    assert [r["tags"] for r in rows] == [list(t) for t in expected.tags]
    got = np.array([[r["scores"][c] for c in tagger.class_names] for r in rows])
    assert np.allclose(got, expected.scores, rtol=1e-5, atol=1e-7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.jsonl"]

    out_csv = tmp_path / "preds.csv"
    assert main(["predict", str(run_dir), folder, "--out", str(out_csv), "--threshold", "0",
                 "--top-k", "2", "--batch-size", "3", "--num-workers", "1", "--quiet"]) == 0
    assert "thresholds: 0 for every class (given)" in capsys.readouterr().out
    with open(out_csv, newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["path", "tags", "c0", "c1", "c2", "c3"]
    assert [r[0] for r in table[1:]] == expected.paths
    assert all(len(r[1].split("|")) == 2 for r in table[1:])
    got = np.array([[float(v) for v in r[2:]] for r in table[1:]])
    assert np.allclose(got, expected.scores, rtol=1e-5, atol=1e-7)


@integration
def test_cli_zero_shot(tmp_path, capsys, test_catalog):
    classes = tmp_path / "classes.txt"
    classes.write_text("red circle\nblue square\ngreen triangle\n")
    out = tmp_path / "zs.jsonl"
    assert main(["predict", "--zero-shot", "--encoder", "toy-clip", "--classes-file",
                 str(classes), test_catalog.root, "--out", str(out), "--quiet"]) == 0
    assert "0.3 for every class (zero-shot default" in capsys.readouterr().out
    rows = _read_jsonl(out)
    assert len(rows) == 16
    assert list(rows[0]["scores"]) == ["red circle", "blue square", "green triangle"]
    assert all(abs(sum(r["scores"].values()) - 1) < 1e-4 for r in rows)
    assert all(set(r["tags"]) == {c for c, s in r["scores"].items() if s >= 0.3} for r in rows)
    out2 = tmp_path / "zs.csv"
    assert main(["predict", "--zero-shot", "--encoder", "toy-clip", "--classes",
                 "red circle, blue square", "--template", "a {name}", "--tau", "0.1",
                 test_catalog.root, "--out", str(out2), "--quiet"]) == 0
    assert out2.read_text().splitlines()[0] == "path,tags,red circle,blue square"


class _Stop(Exception):
    pass


def _stop_after(monkeypatch, k, exc=_Stop):
    """Make the tagger's forward raise on its (k + 1)-th batch."""
    calls = {"n": 0}
    original = Tagger._scores

    def scores(self, x):
        calls["n"] += 1
        if calls["n"] > k:
            raise exc("interrupted")
        return original(self, x)

    monkeypatch.setattr(Tagger, "_scores", scores)


@integration
@pytest.mark.parametrize("fmt", [".jsonl", ".csv"])
def test_cli_resume_after_interruption_equals_an_uninterrupted_run(run_dir, test_catalog,
                                                                    tmp_path, monkeypatch,
                                                                    capsys, fmt):
    argv = ["predict", str(run_dir), test_catalog.root, "--batch-size", "3", "--quiet"]
    whole = tmp_path / f"whole{fmt}"
    assert main([*argv, "--out", str(whole)]) == 0
    out = tmp_path / f"resumed{fmt}"
    with monkeypatch.context() as mp:
        _stop_after(mp, 2, KeyboardInterrupt)
        assert main([*argv, "--out", str(out)]) == 130
    assert not out.exists()
    partial, state = Path(f"{out}.partial"), Path(f"{out}.partial.json")
    assert json.loads(state.read_text())["rows"] == 6
    assert "kept in" in capsys.readouterr().err
    # a second interruption, then a torn line at the end of the partial file
    with monkeypatch.context() as mp:
        _stop_after(mp, 1)
        with pytest.raises(_Stop):
            main([*argv, "--out", str(out)])
    assert json.loads(state.read_text())["rows"] == 9
    with open(partial, "ab") as f:
        f.write(b'{"path": "torn')
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 0
    assert "resuming" in capsys.readouterr().out
    assert out.read_bytes() == whole.read_bytes()
    assert not partial.exists() and not state.exists()
    # other settings never reuse a partial output: they start over
    with monkeypatch.context() as mp:
        _stop_after(mp, 1)
        with pytest.raises(_Stop):
            main([*argv, "--out", str(out), "--threshold", "0.4"])
    assert main([*argv, "--out", str(out)]) == 0
    assert "starting over" in capsys.readouterr().out
    assert out.read_bytes() == whole.read_bytes()


@integration
def test_cli_bad_images(run_dir, bad_folder, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    argv = ["predict", str(run_dir), str(bad_folder), "--out", str(out), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    for name in ("x_corrupt.jpg", "y_zero.jpg", "z_text.jpg"):
        assert name in err
    assert list(tmp_path.iterdir()) == [bad_folder]
    assert main([*argv, "--skip-bad-images"]) == 0
    captured = capsys.readouterr()
    assert "3 unreadable image(s) skipped" in captured.out
    assert "skipped unreadable image" in captured.err and "z_text.jpg" in captured.err
    assert [Path(r["path"]).name for r in _read_jsonl(out)] == ["g0.png", "g1.png"]
    bad = json.loads(Path(f"{out}.bad.json").read_text())
    assert [Path(b["path"]).name for b in bad] == ["x_corrupt.jpg", "y_zero.jpg", "z_text.jpg"]
    assert all(b["reason"] for b in bad)


@integration
def test_cli_errors_write_nothing(run_dir, test_catalog, tmp_path, capsys):
    no_weights = tmp_path / "no-weights"
    shutil.copytree(run_dir, no_weights)
    (no_weights / "best.safetensors").unlink()
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out" / "p.jsonl"
    images = test_catalog.root
    cases = {
        "weights file best.safetensors is missing": [str(no_weights), images],
        "appears twice": ["--zero-shot", "--encoder", "toy-clip", "--classes", "a,b,a", images],
        "empty name": ["--zero-shot", "--encoder", "toy-clip", "--classes", "a,,b", images],
        "neither a number in [0, 1] nor 'calibrated'": [str(run_dir), images, "--threshold",
                                                        "best"],
        "outside [0, 1]": [str(run_dir), images, "--threshold", "2"],
        "expected one of .jsonl, .csv": [str(run_dir), images, "--out", str(tmp_path / "p.txt")],
        "no images found": [str(run_dir), str(tmp_path / "empty")],
        "no such file or folder": [str(run_dir), str(tmp_path / "nope")],
        "not a finished vlml run folder": [str(tmp_path / "empty"), images],
        "only apply with --zero-shot": [str(run_dir), images, "--classes", "a,b"],
    }
    for message, args in cases.items():
        argv = ["predict", *args, "--quiet"]
        if "--out" not in args:
            argv += ["--out", str(out)]
        assert main(argv) == 2, message
        assert message in capsys.readouterr().err, message
        assert not out.parent.exists() and not (tmp_path / "p.txt").exists(), message


@integration
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_torchrun_shards_the_inputs_and_merges_one_output(tmp_path, test_catalog, suffix):
    """`torchrun --nproc_per_node 2 -m vlml predict`: each rank tags its batch-aligned slice;
    rank 0 joins the parts in input order: the same bytes as one process."""
    import os
    import subprocess
    import sys

    classes = tmp_path / "classes.txt"
    classes.write_text("red circle\nblue square\ngreen triangle\n")
    args = ["predict", "--zero-shot", "--encoder", "toy-clip", "--classes-file", str(classes),
            test_catalog.root, "--batch-size", "3", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / f"one{suffix}", tmp_path / f"two{suffix}"
    subprocess.run([sys.executable, "-m", "vlml", *args, "--out", str(one)], check=True,
                   env=env, capture_output=True)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "-m", "vlml", *args, "--out", str(two)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert two.read_bytes() == one.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["classes.txt", one.name, two.name])
    assert done.stdout.count("wrote 16 rows") == 1  # rank 0 speaks
