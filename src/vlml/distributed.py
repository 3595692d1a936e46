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


def init(backend: str | None = None) -> bool:
    """Join the process group when launched by torchrun with WORLD_SIZE > 1; returns whether
    this process is part of a multi-process job. Idempotent."""
    if env_world_size() <= 1:
        return False
    if is_initialized():
        return True
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
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
