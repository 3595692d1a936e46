"""Learning-rate schedules.

`one_cycle` is torch's one-cycle policy (Smith & Topin 2019, `OneCycleLR`): the rate rises from
`max_lr / 25` to `max_lr` over the first `pct_start * steps` steps (cosine), then anneals to
`max_lr / 25e4`, with one guard for very short phases (below).
"""

from __future__ import annotations

import torch


def one_cycle(optimizer: torch.optim.Optimizer, max_lr: float, steps: int, pct_start: float
              ) -> torch.optim.lr_scheduler.OneCycleLR:
    """torch's one-cycle schedule over `steps` steps; a rise of at most one step is skipped.

    torch divides by zero when `pct_start * steps == 1` (e.g. 5 steps at 0.2, a short warm-up
    on few labelled images), so such short rises start at the peak instead.
    """
    pct = pct_start if pct_start * steps > 1 else 0.0
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=steps,
                                               pct_start=pct)


__all__ = ["one_cycle"]
