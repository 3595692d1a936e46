"""The training loop: epochs of steps, clean-val model selection, checkpoints that resume exactly.

Reproducibility contract: at the start of epoch e the global torch seed is set from
(seed, e), and `batches(e)` must derive its order from (seed, e) too. A run resumed from the
checkpoint of epoch e - 1 therefore replays epoch e exactly as an uninterrupted run would.

Under torchrun (`vlml.distributed`, a world of W > 1 processes) the same loop trains with
DistributedDataParallel: `batches(e)` yields this rank's part of every global batch (equal
parts, `vlml.engine.seeding.epoch_batches`), the model is wrapped in DDP (gradients averaged
over ranks at every optimizer step; micro-batches of a gradient accumulation skip the
all-reduce), parameters the optimizer holds outside the model (e.g. ROLE's label estimates)
have their gradients averaged too, and the logged `train_loss` is the mean over ranks (for a
per-sample mean loss, exactly one process's loss of the same global batches). `evaluate` must
return the same record on every rank (scores gathered over ranks, `predict(gather=True)`), so
the best epoch and early stopping agree; EMA copies are updated from identical weights. Only
rank 0 writes `metrics.jsonl`, `best.safetensors` and `last.pt`, and `fit` ends at a barrier,
so the other ranks read them only once written; a relaunch after a kill resumes from rank 0's
`last.pt` on every rank.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from timm.utils.model_ema import ModelEmaV3

from vlml import distributed, progress
from vlml.engine.checkpoint import load_checkpoint, save_checkpoint, save_weights
from vlml.engine.metrics_log import MetricsLog

LAST, BEST = "last.pt", "best.safetensors"


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass
class LoopConfig:
    """Settings of the loop itself (the recipe owns model, data and loss settings)."""

    epochs: int = 10
    grad_accum: int = 1
    amp: bool = False
    ema_decay: float | None = None
    eval_ema: bool = True
    early_stop_patience: int | None = None
    select_metric: str = "val_map"
    seed: int = 0
    tensorboard: bool = False
    progress: bool = True


@dataclass
class FitResult:
    best_epoch: int
    best: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, dict):
        return _batch_size(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        return _batch_size(batch[0])
    return 1


def _where() -> str:
    return f" (rank {distributed.rank()})" if distributed.is_initialized() else ""


def _wrap_ddp(model: torch.nn.Module, device: torch.device) -> Any:
    """`model` in DistributedDataParallel when this process is one of a world of several
    (rank 0's weights and buffers are broadcast to every rank at once); None otherwise."""
    if distributed.world_size() <= 1:
        return None
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


class Trainer:
    """Runs `fit()`: for each epoch, train on `batches(epoch)`, evaluate, log, checkpoint.

    Args:
        model: the trainable module (already on its device).
        optimizer, scheduler: torch optimiser and optional per-step LR scheduler.
        batches: epoch -> iterable of batches (its order must depend only on seed and epoch).
        step_loss: (model, batch, epoch) -> scalar loss tensor.
        evaluate: (model, epoch) -> metrics dict; must contain `config.select_metric`.
        run_dir: where `last.pt`, `best.safetensors` and `metrics.jsonl` go.
        states: extra objects with state_dict/load_state_dict checkpointed with the model
            (stateful losses, pseudo-label state, ...).
        on_epoch_start: (model, epoch) hook, e.g. to refresh pseudo-labels.
        on_epoch_end: (model, epoch) hook after the epoch's steps, before evaluation and the
            checkpoint (e.g. to merge the ranks' updates of a loss state under DDP).

    `model` is the plain module: under DDP the Trainer wraps it (`train_model`) and passes the
    wrapper to `step_loss`; hooks, `evaluate` and checkpoints see the plain module.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 batches: Callable[[int], Iterable[Any]],
                 step_loss: Callable[[torch.nn.Module, Any, int], torch.Tensor],
                 evaluate: Callable[[torch.nn.Module, int], dict[str, float]],
                 run_dir: str | Path, config: LoopConfig | None = None,
                 scheduler: Any | None = None, states: dict[str, Stateful] | None = None,
                 on_epoch_start: Callable[[torch.nn.Module, int], None] | None = None,
                 on_epoch_end: Callable[[torch.nn.Module, int], None] | None = None) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.batches, self.step_loss, self.evaluate = batches, step_loss, evaluate
        self.config = config or LoopConfig()
        self.run_dir = Path(run_dir)
        self.states = states or {}
        self.on_epoch_start = on_epoch_start
        self.on_epoch_end = on_epoch_end
        self.device = next(model.parameters()).device
        self.ema = ModelEmaV3(model, decay=self.config.ema_decay) if self.config.ema_decay else None
        self.main = distributed.is_main()
        self.log = MetricsLog(self.run_dir / "metrics.jsonl",
                              self.run_dir / "tb" if self.config.tensorboard and self.main
                              else None)
        self.ddp = _wrap_ddp(model, self.device)
        self.train_model = self.ddp if self.ddp is not None else model
        own = {id(p) for p in model.parameters()}
        self.extra_params = [p for g in optimizer.param_groups for p in g["params"]
                             if id(p) not in own]

    # ---- one epoch --------------------------------------------------------------------
    def _autocast(self):
        if not self.config.amp:
            return nullcontext()
        dtype = torch.bfloat16 if self.device.type == "cpu" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.config
        self.train_model.train()
        scaler = torch.amp.GradScaler(enabled=cfg.amp and self.device.type == "cuda")
        total, n_items, n_steps, t0 = 0.0, 0, 0, time.perf_counter()
        bar = progress.bar(self.batches(epoch), enabled=cfg.progress and self.main,
                           desc=f"epoch {epoch}", unit="batch", leave=False)
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(bar, start=1):
            boundary = i % cfg.grad_accum == 0
            skip_sync = self.ddp is not None and not boundary
            with self.ddp.no_sync() if skip_sync else nullcontext():
                with self._autocast():
                    loss = self.step_loss(self.train_model, batch, epoch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch}, "
                                             f"step {i}" + _where())
                scaler.scale(loss / cfg.grad_accum).backward()
            if boundary:
                self._optimizer_step(scaler)
            total += loss.item()
            n_items += _batch_size(batch)
            n_steps = i
            bar.set_postfix(loss=f"{total / i:.4f}",
                            img_s=f"{n_items / (time.perf_counter() - t0):.0f}")
        if n_steps % cfg.grad_accum:
            if self.ddp is not None:  # the last micro-batches skipped DDP's all-reduce
                for p in self.model.parameters():
                    if p.grad is not None:
                        distributed.all_reduce_tensor_(p.grad)
            self._optimizer_step(scaler)
        seconds = time.perf_counter() - t0
        if distributed.is_initialized():  # the same steps on every rank: mean of rank losses
            total, n_items = distributed.all_reduce_floats([total, n_items], "sum")
            total /= distributed.world_size()
        return {"train_loss": total / max(n_steps, 1), "train_seconds": seconds,
                "train_items_per_s": n_items / max(seconds, 1e-9)}

    def _optimizer_step(self, scaler: torch.amp.GradScaler) -> None:
        if self.extra_params and distributed.is_initialized():
            for p in self.extra_params:  # outside the DDP model: average their gradients here
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                distributed.all_reduce_tensor_(p.grad)
        scaler.step(self.optimizer)
        scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)

    def eval_model(self) -> torch.nn.Module:
        """The model evaluated and selected: the EMA copy when EMA is on and `eval_ema`."""
        return self.ema.module if self.ema is not None and self.config.eval_ema else self.model

    # ---- checkpoints ------------------------------------------------------------------
    def _state(self, epoch: int, history: list, best: dict, best_epoch: int, bad: int) -> dict:
        return {
            "epoch": epoch, "history": history, "best": best, "best_epoch": best_epoch,
            "bad_epochs": bad, "config": asdict(self.config),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "states": {k: s.state_dict() for k, s in self.states.items()},
        }

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt["scheduler"] is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.ema is not None and ckpt["ema"] is not None:
            self.ema.load_state_dict(ckpt["ema"])
        for key, state in self.states.items():
            state.load_state_dict(ckpt["states"][key])

    # ---- the loop ---------------------------------------------------------------------
    def fit(self, resume: bool = True) -> FitResult:
        """Train `config.epochs` epochs (from the last checkpoint when `resume`)."""
        cfg = self.config
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        history: list[dict[str, Any]] = []
        best: dict[str, float] = {}
        best_epoch, bad, start = 0, 0, 1
        last = self.run_dir / LAST
        # rank 0's view decides, so every rank resumes alike (each then reads the same file:
        # the run folder must be on a filesystem every rank sees)
        if resume and distributed.broadcast_object(last.exists()):
            ckpt = load_checkpoint(last, map_location=self.device)
            self._restore(ckpt)
            history, best, best_epoch, bad = (ckpt["history"], ckpt["best"],
                                              ckpt["best_epoch"], ckpt["bad_epochs"])
            start = ckpt["epoch"] + 1
        if self.main:
            self.log.reset(history)
        stopped = False
        for epoch in range(start, cfg.epochs + 1):
            if cfg.early_stop_patience is not None and bad >= cfg.early_stop_patience:
                stopped = True
                break
            torch.manual_seed(cfg.seed * 1_000_003 + epoch)
            if self.on_epoch_start is not None:
                self.on_epoch_start(self.model, epoch)
            record: dict[str, Any] = {"epoch": epoch, **self.train_epoch(epoch)}
            if self.on_epoch_end is not None:
                self.on_epoch_end(self.model, epoch)
            model = self.eval_model()
            with torch.no_grad():
                model.eval()
                record.update(self.evaluate(model, epoch))
            score = record.get(cfg.select_metric)
            if score is None or (isinstance(score, float) and math.isnan(score)):
                raise KeyError(f"evaluate() returned no {cfg.select_metric!r}; "
                               f"got {sorted(record)}")
            if not best or score > best[cfg.select_metric]:
                best, best_epoch, bad = dict(record), epoch, 0
                if self.main:
                    save_weights(self.run_dir / BEST, model.state_dict())
            else:
                bad += 1
            history.append(record)
            if self.main:
                self.log.write(record)
                save_checkpoint(last, self._state(epoch, history, best, best_epoch, bad))
                progress.summary(f"epoch {epoch}: " + ", ".join(
                    f"{k} {v:.4g}" for k, v in record.items()
                    if isinstance(v, float) and k != "epoch"))
        distributed.barrier()  # rank 0's files are written before any rank reads them
        # the DDP wrapper's gradient hooks go with it: the model may be trained again (a next
        # phase) under a new wrapper
        self.ddp, self.train_model = None, self.model
        return FitResult(best_epoch=best_epoch, best=best, history=history, stopped_early=stopped)
