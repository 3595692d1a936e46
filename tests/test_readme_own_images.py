"""The README section "Your own images", run as written: every `vlml` command of its bash blocks,
in order, in a fresh folder. The labels are the sample photos' own tags (one per photo, or 5% of
the photos fully tagged), with no ground truth in any training catalog; VLPL must beat AN and
CBSA its labelled-only warm-up on a separately tagged test catalog (margins below the measured
gaps of 3.3-5.5 and 1.4-3.4 points over seeds 0-2)."""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from vlml import config, recipes
from vlml.cli.main import main
from vlml.types import Catalog

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

README = Path(__file__).resolve().parents[1] / "README.md"


def section_commands(title: str = "Your own images") -> list[str]:
    """The `vlml ...` lines of the section's ```bash blocks, continuation lines joined."""
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.index("\n## ", start + 1)
    blocks = re.findall(r"```bash\n(.*?)```", text[start:end], flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [ln.strip() for ln in lines if ln.strip().startswith("vlml ")]


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    """Runs every command of the section; returns (folder, {command: stdout})."""
    folder = tmp_path_factory.mktemp("own-images")
    mp = pytest.MonkeyPatch()
    mp.chdir(folder)
    out = {}
    try:
        import contextlib
        import io

        for command in section_commands():
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                assert main(shlex.split(command)[1:]) == 0, command
            out[command] = buf.getvalue()
    finally:
        mp.undo()
    return folder, out


def test_section_has_the_whole_walk():
    commands = section_commands()
    firsts = [" ".join(c.split()[1:3]) for c in commands]
    for step in ("sample-photos --out", "data prepare", "features --catalog",
                 "zero-shot --catalog", "train spml/toy/vlpl", "train spml/toy/an",
                 "train ssmll/toy/cbsa", "train ssmll/toy/cap", "eval runs/vlpl",
                 "calibrate runs/vlpl", "predict runs/vlpl", "predict --zero-shot"):
        assert step in firsts, step


def test_training_catalogs_hold_no_ground_truth(walked):
    folder, _ = walked
    one_tag = Catalog.load(folder / "catalogs/train/all.catalog.zip")
    assert one_tag.true_labels is None
    assert ((one_tag.labels == 1).sum(1) == 1).all()
    assert (one_tag.labels[one_tag.labels != 1] == -1).all()
    few = Catalog.load(folder / "catalogs/few/all.catalog.zip")
    assert few.true_labels is None
    full_rows = (few.labels != -1).all(1)
    assert 0 < full_rows.mean() < 0.1
    assert (few.labels[~full_rows] == -1).all()
    test = Catalog.load(folder / "catalogs/test/all.catalog.zip")
    assert (test.labels != -1).all()


def results(folder: Path, name: str) -> dict:
    return json.loads((folder / "runs" / name / "results.json").read_text())


def test_vlpl_beats_an_on_given_single_tags(walked):
    folder, _ = walked
    vlpl, an = results(folder, "vlpl")["test_map"], results(folder, "an")["test_map"]
    assert vlpl > an + 1.5, (vlpl, an)
    report = (folder / "runs/vlpl/report.md").read_text()
    assert "recall@3" in report


def test_cbsa_beats_its_labelled_only_warmup(walked):
    folder, _ = walked
    cbsa = results(folder, "cbsa")["test_map"]
    alone = results(folder, "labelled-only")["test_map"]
    assert cbsa > alone + 0.7, (cbsa, alone)
    assert np.isfinite(results(folder, "cap")["test_map"])


def test_eval_rescores_the_run(walked):
    folder, out = walked
    for name in ("vlpl", "cbsa"):
        printed = json.loads(out[f"vlml eval runs/{name}"])
        assert printed["test_map"] == pytest.approx(results(folder, name)["test_map"], abs=1e-9)


def test_zero_shot_reports_a_map_on_the_tagged_test_photos(walked):
    _, out = walked
    (printed,) = [v for k, v in out.items() if k.startswith("vlml zero-shot")]
    value = json.loads(printed.strip().splitlines()[-1])
    assert 50 < value["map"] < 100


@pytest.mark.parametrize("name", ["spml/own/vlpl", "ssmll/own/cbsa"])
def test_real_photo_configs_take_the_same_catalogs(name):
    """The configs the section names for real photos (their weights are a download away, so
    they are only validated here)."""
    recipe = recipes.get("cbsa" if name.startswith("ssmll") else "spml")
    cfg = config.load(recipe.Config, name, ["data.train_catalog=catalogs/train/all.catalog.zip"])
    assert cfg.encoder.pretrained == "openai"


def _f1(rows: list[dict], truth: np.ndarray, names: list[str]) -> float:
    """Mean per-photo F1 of the rows' tags against (N, C) 0/1 truth."""
    out = []
    for row, t in zip(rows, truth, strict=True):
        pred = np.isin(names, row["tags"])
        tp = (pred & (t == 1)).sum()
        out.append(2 * tp / max(pred.sum() + t.sum(), 1))
    return float(np.mean(out))


def test_calibrated_tags_of_new_photos_beat_a_half_threshold(walked):
    """The new photos' hidden truth (the toy scenes they were drawn from): the tags `vlml
    predict` wrote with the calibrated thresholds are better than tags at 0.5."""
    from vlml.data import toy
    from vlml.demo.photos import new_scene_seed
    from vlml.predict import Tagger

    folder, _ = walked
    rows = [json.loads(ln) for ln in (folder / "preds/vlpl.jsonl").read_text().splitlines()]
    assert [Path(r["path"]).name for r in rows] == [f"{i:06d}.png" for i in range(16)]
    names = list(toy.TOY_CLASSES)
    truth = toy.labels_of([toy.render_scene(new_scene_seed(0), i).classes for i in range(16)])
    at_half = Tagger.from_run(folder / "runs/vlpl").tag(
        sorted((folder / "photos/new").glob("*.png")), threshold=0.5).to_rows()
    calibrated, half = _f1(rows, truth, names), _f1(at_half, truth, names)
    assert calibrated > half + 0.1, (calibrated, half)
    zero_shot = (folder / "preds/zero-shot.jsonl").read_text().splitlines()
    assert len(zero_shot) == 16
