"""A command line that respects a person's time: `vlml --help` starts without torch, and a
run's output read from a file or CI has no carriage-return frames and one line per epoch."""

import subprocess
import sys

import pytest

from vlml import progress

HEAVY = ("torch", "open_clip", "timm")


def test_the_cli_entry_point_and_its_parser_import_no_torch():
    code = ("import sys; from vlml.cli.main import build_parser; build_parser(); "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_plain_progress_prints_lines_not_frames(capsys, monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_SECONDS", 0.0)
    progress.configure(mode="plain")
    try:
        for _ in progress.bar(range(5), desc="work", unit="img"):
            pass
        quiet = progress.bar(range(3), enabled=False, desc="off")
        list(quiet)
    finally:
        progress.configure(mode="auto")
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0].startswith("work: 1/5 img (20%)") and lines[-1].endswith("done")
    assert not any(ln.startswith("off") for ln in lines)


def test_quiet_hides_summaries(capsys):
    progress.configure(quiet=True)
    try:
        progress.summary("epoch 1: loss 0.5")
    finally:
        progress.configure(quiet=False)
    progress.summary("epoch 2: loss 0.4")
    assert capsys.readouterr().err == "epoch 2: loss 0.4\n"


def test_an_unknown_progress_mode_is_refused():
    from vlml.errors import ConfigError

    with pytest.raises(ConfigError, match="expected one of auto, bar, plain, none"):
        progress.configure(mode="fancy")


@pytest.mark.integration
def test_a_run_logged_to_a_file_has_no_frames_and_one_line_per_epoch(tmp_path):
    """Non-TTY output (a pipe): plain progress, a summary line per epoch, no carriage return;
    `progress=false` in the config hides bars, not the epoch lines."""
    v = [sys.executable, "-m", "vlml"]
    run = lambda *a: subprocess.run([*v, *a], cwd=tmp_path, capture_output=True,  # noqa: E731
                                    text=True, check=True)
    run("sample-photos", "--out", "photos", "--n-train", "120", "--n-test", "40")
    run("data", "prepare", "manifest", "--root", "photos/train/tags.csv", "--classes-file",
        "photos/classes.txt", "--out", "cat")
    out = run("train", "spml/toy/vlpl", "data.train_catalog=cat/all.catalog.zip",
              "optim.epochs=3", "--out", "runs/a")
    log = out.stdout + out.stderr
    assert "\r" not in log
    assert [ln.split(":")[0] for ln in log.splitlines() if ln.startswith("epoch ")] == [
        "epoch 1", "epoch 2", "epoch 3"]
    quiet = run("train", "spml/toy/vlpl", "data.train_catalog=cat/all.catalog.zip",
                "optim.epochs=2", "--out", "runs/b", "progress=false", "--quiet")
    assert not [ln for ln in quiet.stderr.splitlines() if ln.startswith("epoch ")]


def test_warnings_read_as_vlml_messages(capsys):
    import warnings

    from vlml.cli.main import _format_warning

    text = _format_warning(UserWarning("mAP: skipped 1 of 3 classes"), UserWarning,
                           "/x/site-packages/vlml/metrics.py", 12)
    assert text == "vlml: warning: mAP: skipped 1 of 3 classes\n"
    assert warnings.formatwarning is not None
