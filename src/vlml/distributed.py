"""Many processes, one job: what vlml needs of `torch.distributed`, under `torchrun`.

`torchrun --nproc_per_node N -m vlml <command>` sets RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous variables; `init()` joins the process group from them (gloo on CPU, NCCL when the
process has a CUDA device). Outside torchrun (no WORLD_SIZE, or 1) nothing changes: rank 0 of
a world of 1, no process group.

Rules the library follows:
- only rank 0 prints progress and writes shared files (`is_main()`);
- a rank's slice of N items is a contiguous range starting on a batch boundary (`shard`), so
  cached arrays come out the same as in one process;
- a user error on any rank stops the job with that rank's message (`cli.main` prints it with
  the rank).
"""

from __future__ import annotations

import os
from typing import Any

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
TIMEOUT_ENV = "VLML_DIST_TIMEOUT_S"


def env_world_size() -> int:
    """WORLD_SIZE from the environment (1 outside torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_initialized() -> bool:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch always has it
        return False
    return dist.is_available() and dist.is_initialized()


def timeout_seconds() -> float | None:
    """How long a collective waits for the other processes before the job stops: the
    environment's VLML_DIST_TIMEOUT_S (seconds), None for the backend's default (torch:
    10 minutes for NCCL, 30 for gloo). Raise it when ranks may wait long for one another (a
    relaunch whose ranks have very different amounts of work left, a slow rank-0 step)."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        from vlml.errors import ConfigError

        raise ConfigError(f"{TIMEOUT_ENV}={text!r}: expected a positive number of seconds")
    return value


def init(backend: str | None = None) -> bool:
    """Join the process group when launched by torchrun with WORLD_SIZE > 1 (collectives time
    out after `timeout_seconds()`); returns whether this process is part of a multi-process
    job. Idempotent."""
    if env_world_size() <= 1:
        return False
    if is_initialized():
        return True
    import datetime

    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    seconds = timeout_seconds()
    timeout = None if seconds is None else datetime.timedelta(seconds=seconds)
    dist.init_process_group(backend=backend, timeout=timeout)
    return True


def rank() -> int:
    if is_initialized():
        import torch.distributed as dist

        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if env_world_size() > 1 else 0


def world_size() -> int:
    if is_initialized():
        import torch.distributed as dist

        return dist.get_world_size()
    return 1


def is_main() -> bool:
    """True on rank 0 (and in a single process)."""
    return rank() == 0


def barrier() -> None:
    if is_initialized():
        import torch.distributed as dist

        dist.barrier()


def shard(n: int, batch_size: int, rank_: int | None = None,
          world: int | None = None) -> range:
    """Rank's contiguous slice of `n` items: whole batches of `batch_size` dealt out in
    order, so every slice but the last starts and ends on a batch boundary.

    >>> [list(shard(10, 2, r, 3)) for r in range(3)]
    [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    """
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    n_batches = -(-n // batch_size)
    per = -(-n_batches // w)
    start = min(n, r * per * batch_size)
    return range(start, min(n, (r + 1) * per * batch_size))


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order ([obj] in one process)."""
    if not is_initialized():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def destroy() -> None:
    """Leave the process group (before exit: gloo may abort the process otherwise)."""
    if is_initialized():
        import torch.distributed as dist

        dist.destroy_process_group()


# ---- training under a process group (DDP) --------------------------------------------------
# Added for data-parallel training. The global batch of a config (`optim.batch_size`, ...) is
# what one process would take; under W processes each rank takes the r-th contiguous 1/W of
# every global batch of the seeded (seed, epoch) order (`batch_parts`), so the W parts of a step
# are together exactly the batch one process would have taken.


def per_rank_batch(batch_size: int, key: str, world: int | None = None) -> int:
    """`batch_size // world`: the per-rank part of a global batch; `ConfigError` naming `key`
    when the world size does not divide it (the ranks' parts must be equal so that averaging
    their gradients equals one process's mean)."""
    w = world_size() if world is None else world
    if batch_size % w:
        from vlml.errors import ConfigError

        lower, upper = batch_size - batch_size % w, batch_size + w - batch_size % w
        raise ConfigError(f"{key}: {batch_size} is the global batch, split evenly over {w} "
                          f"processes; {w} does not divide it (e.g. {lower or w} or {upper})")
    return batch_size // w


def part_of_batch(n: int, rank_: int | None = None, world: int | None = None) -> slice:
    """Rank's contiguous part of a global batch of `n` items: positions [r m, (r + 1) m) with
    m = n // world. The last n % world items are in no part (only a short last batch of an
    epoch can have n % world != 0, since the full batch size is a multiple of the world)."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    m = n // w
    return slice(r * m, (r + 1) * m)


def batch_parts(order: Any, batch_size: int, rank_: int | None = None,
                world: int | None = None) -> list[Any]:
    """This rank's part of every global batch of `order` (an (N,) index array): global batch
    b is order[b B:(b + 1) B], its rank part `part_of_batch`. In a world of 1 the global
    batches themselves. A short last batch drops its last (len % world) items, and is left
    out when it has fewer items than ranks, so every rank takes the same number of equal
    steps.

    >>> import numpy as np
    >>> [p.tolist() for p in batch_parts(np.arange(10), 4, 1, 2)]
    [[2, 3], [6, 7], [9]]
    """
    w = world_size() if world is None else world
    out = []
    for start in range(0, len(order), batch_size):
        part = order[start:start + batch_size][part_of_batch(
            min(batch_size, len(order) - start), rank_, w)]
        if len(part):
            out.append(part)
    return out


def _comm_device() -> Any:
    """Where collective tensors live: the current CUDA device under NCCL, else the CPU."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_floats(values: list[float], op: str = "mean") -> list[float]:
    """Elementwise "mean", "sum" or "max" of a list of floats over ranks (float64); the list
    as is in one process."""
    if not is_initialized():
        return [float(v) for v in values]
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    if op == "mean":
        t /= dist.get_world_size()
    return [float(v) for v in t.cpu()]


def all_reduce_tensor_(tensor: Any, op: str = "mean") -> Any:
    """In place: a tensor's elementwise "mean", "sum" or "max" over ranks (any device; moved
    to the collective's device and back when needed). Returns it."""
    if not is_initialized():
        return tensor
    import torch.distributed as dist

    dev = _comm_device()
    t = tensor if tensor.device == dev else tensor.to(dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    if op == "mean":
        t /= dist.get_world_size()
    if t is not tensor:
        tensor.copy_(t)
    return tensor


def gather_rows(*arrays: Any) -> list[Any]:
    """Each array (numpy, rows first, or None) concatenated over ranks in rank order: with
    contiguous row shards (`shard`) the result is in the original row order. Ranks holding no
    rows may pass arrays of 0 rows or None. In one process the arrays as given."""
    import numpy as np

    if not is_initialized():
        return list(arrays)
    parts = all_gather_object(list(arrays))
    out = []
    for i in range(len(arrays)):
        pieces = [p[i] for p in parts if p[i] is not None and len(p[i])]
        out.append(np.concatenate(pieces) if pieces else arrays[i])
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` of rank `src` on every rank (`obj` itself in one process)."""
    if not is_initialized():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
