"""Training under torchrun (issue 20, parts 4-6): DDP with gloo on CPU, 2 processes.

The equivalence runs train the README's sample photos (200 train / 100 test, `vlml
sample-photos`) with one process (in this one) and with `torchrun --standalone --nproc_per_node
2 -m vlml train ...` (a subprocess, OMP_NUM_THREADS=1), the same global batch, and compare
`metrics.jsonl` epoch by epoch and the test mAP of `results.json`:

- `linear` mode, per-sample losses (VLPL, AN): train losses to 1e-5, test mAP to 0.05 (measured:
  at most 1.2e-8 and 0.0).
- CBSA (masked ASL, `reduction: sum`, scaled by the world size): every logged loss term to 1e-4
  relative, test mAP to 0.05 (measured: at most 1.5e-5 absolute, about 1e-6 relative, and 0.0).
- end to end (timm `test_resnet`, random init, 64 px): BatchNorm normalises with each rank's
  half of the batch, so the runs differ: train losses to 5e-3, test mAP to 6 points (measured
  over seeds 0, 1, 2: at most 1.9e-3 and 4.1 points, against 11 points between those seeds).
- kill and relaunch: SIGKILL of torchrun and its workers once the first epoch's `last.pt` is
  written, then the same command: the resumed run's records equal the uninterrupted run's.

`cuda` tests (run by `scripts/gpu_check.sh`, skipped here) check AMP steps on a GPU and a
2-process NCCL run with `optim.sync_bn`; `gpu_check.sh --cpu-smoke` runs the script's
CPU-runnable parts at tiny shapes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vlml import distributed
from vlml.cli.main import main
from vlml.engine.seeding import epoch_batches
from vlml.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
try:  # registered in pyproject.toml (`markers`); skipped until it is
    CUDA = pytest.mark.cuda
except pytest.fail.Exception:  # pragma: no cover - the marker is not registered yet
    CUDA = pytest.mark.skip(reason="the `cuda` marker is not registered in pyproject.toml")
E2E = ["model.mode=end_to_end", "model.hidden=0", "model.backbone=test_resnet",
       "model.pretrained=false", "model.image_size=64", "optim.epochs=6"]
CBSA = ["optim.warmup_epochs=6", "optim.epochs=3"]
NOT_COMPARED = ("seconds", "per_s")


# ---- helpers ---------------------------------------------------------------------------------
def _torchrun_cmd() -> list[str]:
    exe = BIN / "torchrun"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def torchrun(args: list[str], cwd: Path, nproc: int = 2, **kw) -> subprocess.Popen:
    """`torchrun --standalone --nproc_per_node N -m vlml ARGS`, started (not waited for)."""
    cmd = [*_torchrun_cmd(), "--standalone", "--nproc_per_node", str(nproc), "-m", "vlml",
           *args]
    return subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def run_ddp(args: list[str], cwd: Path) -> str:
    proc = torchrun(args, cwd)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out[-4000:]
    return out


def run_one(args: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(args) == 0, args


def records(run: Path) -> dict[str, list[dict]]:
    """{phase metrics file (relative): its records} of a run folder."""
    return {str(p.relative_to(run)): [json.loads(x) for x in p.read_text().splitlines()]
            for p in sorted(run.rglob("metrics.jsonl"))}


def mean_ap(run: Path) -> float:
    """The run's test mAP."""
    return json.loads((run / "results.json").read_text())["test_map"]


def compare(one: Path, two: Path, atol: float, rtol: float = 0.0) -> dict[str, float]:
    """Largest |difference| of every logged number (times excluded), per key; asserts the
    same phases, epochs and keys, and |a - b| <= atol + rtol |a|."""
    a, b = records(one), records(two)
    assert a.keys() == b.keys() and a
    worst: dict[str, float] = {}
    for phase in a:
        assert [r["epoch"] for r in a[phase]] == [r["epoch"] for r in b[phase]], phase
        for ra, rb in zip(a[phase], b[phase], strict=True):
            assert ra.keys() == rb.keys()
            for key, va in ra.items():
                if not isinstance(va, float) or any(s in key for s in NOT_COMPARED):
                    continue
                if "loss" in key:
                    assert abs(va - rb[key]) <= atol + rtol * abs(va), (phase, ra["epoch"], key,
                                                                         va, rb[key])
                worst[key] = max(worst.get(key, 0.0), abs(va - rb[key]))
    return worst


# ---- the sampler, the batch split, the scaling (no process group) --------------------------
def test_rank_parts_make_up_the_global_batches():
    one = epoch_batches(3, 2, 23, 8, rank=0, world=1)
    parts = [epoch_batches(3, 2, 23, 8, rank=r, world=2) for r in range(2)]
    assert [len(p) for p in parts] == [len(one), len(one)]
    for b, batch in enumerate(one):
        joined = np.concatenate([parts[0][b], parts[1][b]])
        keep = len(batch) - len(batch) % 2  # a short last batch drops len % world rows
        np.testing.assert_array_equal(joined, batch[:keep])
    assert [len(p) for p in parts[0]] == [4, 4, 3]
    assert sorted(np.concatenate(one).tolist()) == list(range(23))
    # the order depends on (seed, epoch) only
    np.testing.assert_array_equal(np.concatenate(epoch_batches(3, 2, 23, 5, 0, 1)),
                                  np.concatenate(one))
    assert not np.array_equal(np.concatenate(epoch_batches(3, 3, 23, 8, 0, 1)),
                              np.concatenate(one))
    # a last batch smaller than the world is left out on every rank
    assert [len(p) for p in epoch_batches(0, 1, 9, 4, rank=1, world=4)] == [1, 1]


def test_a_batch_size_the_world_does_not_divide_is_refused(monkeypatch):
    assert distributed.per_rank_batch(32, "optim.batch_size", world=4) == 8
    with pytest.raises(ConfigError, match=r"optim\.batch_size: 30 .* 4 does not divide it"):
        distributed.per_rank_batch(30, "optim.batch_size", world=4)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    from vlml import config
    from vlml.recipes import spml
    from vlml.recipes.ssmll import cbsa, parts

    cfg = config.load(spml.Config, "spml/toy/vlpl", ["optim.batch_size=33"])
    with pytest.raises(ConfigError, match="optim.batch_size"):
        spml.recipe.preflight(cfg)
    ssmll = config.load(cbsa.Config, "ssmll/toy/cbsa", ["optim.unlabeled_batch_size=61"])
    with pytest.raises(ConfigError, match="optim.unlabeled_batch_size"):
        parts.check_batch_sizes(ssmll)
    parts.check_batch_sizes(config.load(cbsa.Config, "ssmll/toy/cbsa",
                                        ["optim.unlabeled_batch_size=61", "optim.epochs=0"]))


def test_summed_losses_are_scaled_by_the_world(monkeypatch):
    from vlml import config
    from vlml.recipes.ssmll import cbsa, parts

    cfg = config.load(cbsa.Config, "ssmll/toy/cbsa", [])
    logits = torch.randn(4, 3)
    target = torch.tensor([[1, 0, -1]] * 4)
    alone = [parts.class_loss(cfg.loss)(logits, target),
             parts.context_loss(cfg.loss, "bce")(logits, target)]
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert cfg.loss.reduction == "sum"
    torch.testing.assert_close(parts.class_loss(cfg.loss)(logits, target), 2 * alone[0])
    torch.testing.assert_close(parts.context_loss(cfg.loss, "bce")(logits, target),
                               2 * alone[1])
    mean = config.load(cbsa.Config, "ssmll/toy/cbsa", ["loss.reduction=mean"]).loss
    assert parts.world_scale(mean.reduction) == 1 and parts.world_scale("sum") == 2


def test_strong_array_views_split_one_process_batches(monkeypatch):
    """Each rank's strong batch is its part of one process's batch, augmentation included."""
    from vlml.data.transforms import strong_tokens
    from vlml.recipes.ssmll.data import ArrayViews

    rng = np.random.default_rng(0)
    plain, flip = (rng.standard_normal((23, 5, 8)).astype(np.float32) for _ in range(2))
    views = ArrayViews(plain, flip, seed=4, augment=strong_tokens(0.5, 0.1))
    rows = np.arange(3, 23)
    one = list(views.strong(rows, 2, 6, stream=1))
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    ranks = []
    for r in range(2):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        ranks.append(list(views.strong(rows, 2, 6, stream=1)))
    assert len(ranks[0]) == len(ranks[1]) == len(one)
    for b1, b0, bb in zip(ranks[0], ranks[1], one, strict=True):
        torch.testing.assert_close(torch.cat([b1["x"], b0["x"]]), bb["x"])
        torch.testing.assert_close(torch.cat([b1["rows"], b0["rows"]]), bb["rows"])


def _as_rank(monkeypatch, rank: int, answer=None) -> list:
    """This process as rank `rank` of a world of 2: `broadcast_object` returns `answer` on
    rank > 0 (what rank 0 sent); on rank 0 it records what was sent."""
    sent: list = []

    def broadcast(obj):
        sent.append(obj)
        return obj if rank == 0 else answer

    monkeypatch.setattr(distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed, "rank", lambda: rank)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "broadcast_object", broadcast)
    return sent


def test_rank_0_alone_claims_the_run_folder(monkeypatch, tmp_path):
    from vlml import config
    from vlml.recipes import spml
    from vlml.runs.folder import CONFIG_FILE, RunFolderError, claim_once

    cfg = config.load(spml.Config, "spml/toy/vlpl", [f"out_dir={tmp_path}/run"])
    # rank 1 takes rank 0's folder and writes nothing
    _as_rank(monkeypatch, 1, answer=(str(tmp_path / "run-2"), None))
    path, got = claim_once(cfg.out_dir, cfg, new=True)
    assert path == tmp_path / "run-2" and got.out_dir == str(path)
    assert not any(tmp_path.iterdir())
    # rank 1 refuses when rank 0 did, pointing to rank 0's message
    _as_rank(monkeypatch, 1, answer=(None, "run holds a run of another config\n  seed: 0 -> 1"))
    with pytest.raises(RunFolderError, match="rank 0 did not claim .*another config$"):
        claim_once(cfg.out_dir, cfg)
    # rank 0 claims, sends the folder, and raises its own error after sending it
    sent = _as_rank(monkeypatch, 0)
    path, got = claim_once(cfg.out_dir, cfg)
    assert sent == [(str(tmp_path / "run"), None)] and (path / CONFIG_FILE).is_file()
    other = config.load(spml.Config, "spml/toy/vlpl", [f"out_dir={tmp_path}/run", "seed=1"])
    with pytest.raises(RunFolderError, match="keys that differ"):
        claim_once(other.out_dir, other)
    assert sent[-1][0] is None and "seed" in sent[-1][1]


def test_process_group_timeout_from_the_environment(monkeypatch, capsys):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.timeout_seconds() is None
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "5400")
    assert distributed.timeout_seconds() == 5400.0
    for bad in ("0", "-3", "ten", "nan", "inf"):
        monkeypatch.setenv(distributed.TIMEOUT_ENV, bad)
        with pytest.raises(ConfigError, match="VLML_DIST_TIMEOUT_S=.*positive number"):
            distributed.timeout_seconds()
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun: the CLI says what is wrong
    assert main(["train", "spml/toy/an", "--dry-run"]) == 2
    assert "vlml: error: VLML_DIST_TIMEOUT_S='inf'" in capsys.readouterr().err


def test_sync_bn_is_refused_on_cpu_under_ddp(monkeypatch):
    from vlml.models import MultiLabelNet
    from vlml.models.backbone import sync_batchnorm

    net = MultiLabelNet.create("test_resnet", 3, pretrained=False)
    assert sync_batchnorm(net, True, torch.device("cpu")) is net  # one process: unchanged
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert sync_batchnorm(net, False, torch.device("cpu")) is net
    with pytest.raises(ConfigError, match="optim.sync_bn: .*CUDA"):
        sync_batchnorm(net, True, torch.device("cpu"))


# ---- one process against torchrun -----------------------------------------------------------
@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The sample photos as catalogs: one tag per photo, a few fully tagged, a tagged test
    set. (Each one-process run comes first and fills the feature cache the torchrun run reads,
    so no two ranks extract at once.)"""
    d = tmp_path_factory.mktemp("ddp")
    for args in (
        ["sample-photos", "--out", f"{d}/photos", "--n-train", "200", "--n-test", "100",
         "--quiet"],
        ["data", "prepare", "manifest", "--root", f"{d}/photos/train/tags.csv",
         "--classes-file", f"{d}/photos/classes.txt", "--out", f"{d}/cat"],
        ["data", "prepare", "manifest", "--root", f"{d}/photos/train/tags_few.csv",
         "--classes-file", f"{d}/photos/classes.txt", "--out", f"{d}/few"],
        ["data", "prepare", "manifest", "--root", f"{d}/photos/test/tags.csv",
         "--classes-file", f"{d}/photos/classes.txt", "--option", "unlisted=negative",
         "--out", f"{d}/test"],
    ):
        run_one(args)
    return d


def _train_args(d: Path, config: str, out: str, *extra: str) -> list[str]:
    catalog = "few" if config.startswith("ssmll") else "cat"
    return ["train", config, f"data.train_catalog={d}/{catalog}/all.catalog.zip",
            f"data.test_catalog={d}/test/all.catalog.zip", f"cache_dir={d}/cache",
            f"out_dir={d}/runs/{out}", *extra, "--quiet"]


@pytest.fixture(scope="module")
def e2e_pair(photos):
    """End-to-end runs in one process and with torchrun (the kill test's reference)."""
    run_one(_train_args(photos, "spml/toy/vlpl", "e2e-1", *E2E))
    run_ddp(_train_args(photos, "spml/toy/vlpl", "e2e-2", *E2E), photos)
    return photos / "runs/e2e-1", photos / "runs/e2e-2"


@pytest.mark.integration
@pytest.mark.parametrize("config", ["spml/toy/vlpl", "spml/toy/an"])
def test_linear_mode_per_sample_losses_match_one_process(photos, config):
    name = config.rsplit("/", 1)[1]
    run_one(_train_args(photos, config, f"{name}-1"))
    run_ddp(_train_args(photos, config, f"{name}-2"), photos)
    one, two = photos / f"runs/{name}-1", photos / f"runs/{name}-2"
    worst = compare(one, two, atol=1e-5)
    assert worst["train_loss"] <= 1e-5
    assert abs(mean_ap(one) - mean_ap(two)) <= 0.05
    # rank 0 alone writes: one record per epoch, not one per rank
    assert len(records(two)["metrics.jsonl"]) == 20


@pytest.mark.integration
def test_a_cold_cache_is_extracted_by_the_ranks_together(photos):
    """`vlml train` under torchrun with an empty cache folder: the ranks extract it sharded
    (the same arrays, bit for bit, as one process's) and train as one process does."""
    one = photos / "runs/vlpl-1"
    if not (one / "results.json").exists():
        run_one(_train_args(photos, "spml/toy/vlpl", "vlpl-1"))
    args = _train_args(photos, "spml/toy/vlpl", "vlpl-cold")
    args[args.index(f"cache_dir={photos}/cache")] = f"cache_dir={photos}/cold"
    run_ddp(args, photos)
    compare(one, photos / "runs/vlpl-cold", atol=1e-5)
    cold = sorted(p.relative_to(photos / "cold") for p in (photos / "cold").rglob("*.npy"))
    assert cold and not list((photos / "cold").rglob("state.rank*.json"))
    for rel in cold:
        assert (photos / "cold" / rel).read_bytes() == (photos / "cache" / rel).read_bytes(), rel


@pytest.mark.integration
def test_refusals_under_torchrun_come_from_rank_0_before_any_work(photos):
    """A folder of another config is refused by rank 0 (the keys named) and by rank 1 (pointing
    to rank 0), and left as it was; a batch size the world does not divide leaves no folder."""
    run = photos / "runs/claimed"
    run_one(_train_args(photos, "spml/toy/an", "claimed", "optim.epochs=1"))
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    proc = torchrun(_train_args(photos, "spml/toy/an", "claimed", "optim.epochs=2"), photos)
    out = proc.communicate(timeout=180)[0]
    assert proc.returncode != 0
    assert "vlml: error (rank 0):" in out and "optim.epochs: 1 (saved) -> 2 (now)" in out, out
    assert "vlml: error (rank 1): rank 0 did not claim the run folder" in out, out
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    proc = torchrun(_train_args(photos, "ssmll/toy/cbsa", "odd",
                                "optim.unlabeled_batch_size=61"), photos)
    out = proc.communicate(timeout=180)[0]
    assert proc.returncode != 0 and "optim.unlabeled_batch_size: 61" in out, out
    assert not (photos / "runs/odd").exists()


@pytest.mark.integration
def test_cbsa_matches_one_process(photos):
    run_one(_train_args(photos, "ssmll/toy/cbsa", "cbsa-1", *CBSA))
    run_ddp(_train_args(photos, "ssmll/toy/cbsa", "cbsa-2", *CBSA), photos)
    one, two = photos / "runs/cbsa-1", photos / "runs/cbsa-2"
    compare(one, two, atol=0.0, rtol=1e-4)
    assert abs(mean_ap(one) - mean_ap(two)) <= 0.05
    assert sorted(records(two)) == ["semi/metrics.jsonl", "warmup/metrics.jsonl"]
    # the pseudo-labels rank 0 saved are those of one process
    a, b = (np.load(p / "semi/pseudo_last.npz") for p in (one, two))
    np.testing.assert_array_equal(a["labels"], b["labels"])
    np.testing.assert_array_equal(a["mask"], b["mask"])


@pytest.mark.integration
def test_end_to_end_within_the_measured_tolerance(e2e_pair):
    one, two = e2e_pair
    compare(one, two, atol=5e-3)
    assert abs(mean_ap(one) - mean_ap(two)) <= 6.0


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find workers")
def test_kill_and_relaunch_resumes_exactly(e2e_pair):
    d = e2e_pair[1].parents[1]
    args = _train_args(d, "spml/toy/vlpl", "e2e-killed", *E2E)
    run = d / "runs/e2e-killed"
    proc = torchrun(args, d)
    try:
        deadline = time.monotonic() + 120
        while not (run / "last.pt").exists():
            assert proc.poll() is None, proc.stdout.read()[-4000:]
            assert time.monotonic() < deadline, "no checkpoint in 120 s"
            time.sleep(0.02)
        for pid in [*_children(proc.pid), proc.pid]:  # the workers run in their own sessions
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    done = len(records(run)["metrics.jsonl"])
    assert done < 6 and not (run / "results.json").exists(), "killed too late"
    run_ddp(args, d)
    resumed, whole = records(run), records(e2e_pair[1])
    for a, b in zip(resumed["metrics.jsonl"], whole["metrics.jsonl"], strict=True):
        assert {k: v for k, v in a.items() if not any(s in k for s in NOT_COMPARED)} == \
            {k: v for k, v in b.items() if not any(s in k for s in NOT_COMPARED)}
    assert mean_ap(run) == mean_ap(e2e_pair[1])


# ---- the GPU check script -------------------------------------------------------------------
@pytest.mark.integration
def test_gpu_check_cpu_smoke(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh"), "--cpu-smoke",
                          "--workdir", str(tmp_path)], cwd=ROOT,
                         env={**_env(), "PYTHON": sys.executable},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    table = out.stdout[out.stdout.index("| check"):]
    for step in ("cuda tests", "AMP epoch", "extraction", "2-process"):
        assert step in table, table
    assert "FAIL" not in table, table


# ---- on GPUs (scripts/gpu_check.sh) ---------------------------------------------------------
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_two = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")


@CUDA
@needs_cuda
def test_amp_steps_on_cuda(tmp_path):
    from vlml.engine import LoopConfig, Trainer
    from vlml.models import MultiLabelNet

    device = torch.device("cuda")
    torch.manual_seed(0)
    model = MultiLabelNet.create("test_resnet", 4, pretrained=False).to(device)
    x, y = torch.randn(16, 3, 64, 64), (torch.rand(16, 4) < 0.3).float()

    def batches(epoch):
        return [{"x": x[i:i + 8], "y": y[i:i + 8]} for i in (0, 8)]

    def step(m, b, epoch):
        return torch.nn.functional.binary_cross_entropy_with_logits(
            m(b["x"].to(device)).float(), b["y"].to(device))

    def evaluate(m, epoch):
        return {"val_map": float(-epoch)}

    trainer = Trainer(model, torch.optim.Adam(model.parameters(), 1e-3), batches, step,
                      evaluate, tmp_path, LoopConfig(epochs=2, amp=True, ema_decay=0.9,
                                                     progress=False))
    result = trainer.fit()
    assert all(np.isfinite(r["train_loss"]) for r in result.history)


@CUDA
@needs_two
@pytest.mark.integration
def test_two_gpus_nccl_linear_and_sync_bn(photos):
    """NCCL, 2 GPUs: linear VLPL as one process (losses 1e-4: GPU kernels), and end to end
    with SyncBatchNorm within the CPU run's BatchNorm tolerance (not measured on GPUs)."""
    cuda = ["device=cuda"]
    run_one(_train_args(photos, "spml/toy/vlpl", "gpu-vlpl-1", *cuda))
    run_ddp(_train_args(photos, "spml/toy/vlpl", "gpu-vlpl-2", *cuda), photos)
    compare(photos / "runs/gpu-vlpl-1", photos / "runs/gpu-vlpl-2", atol=1e-4)
    sync = [*E2E, *cuda, "optim.sync_bn=true"]
    run_one(_train_args(photos, "spml/toy/vlpl", "gpu-e2e-1", *sync))
    run_ddp(_train_args(photos, "spml/toy/vlpl", "gpu-e2e-2", *sync), photos)
    compare(photos / "runs/gpu-e2e-1", photos / "runs/gpu-e2e-2", atol=5e-3)
