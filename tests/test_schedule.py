"""Learning-rate schedules of the engine."""

import pytest
import torch

from vlml.engine import one_cycle


@pytest.mark.parametrize("steps", [1, 2, 5, 10, 40])
def test_one_cycle_survives_short_phases(steps):
    """torch's OneCycleLR divides by zero when pct_start * steps == 1 (5 steps at 0.2)."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = one_cycle(opt, 0.1, steps, 0.2)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(steps - 1):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert max(lrs) <= 0.1 + 1e-12 and lrs[-1] < 0.1
    if steps * 0.2 > 1:  # a real rise: starts low, peaks at max_lr
        assert lrs[0] < 0.01 and max(lrs) == pytest.approx(0.1)
