"""Learning-rate schedules applied per training step: constant, cosine and one-cycle.

A schedule multiplies the base learning rate by a factor of the step number (from 0) out of
the run's ``total`` steps, after an optional linear warm-up of ``warmup`` steps from zero:

- constant: 1 (the tutorial's way: with no warm-up the schedule is left out entirely);
- cosine: from 1 down to 0 along half a cosine, after the warm-up;
- onecycle: up from 1/25 to 1 along half a cosine over the first 30% of the steps, then down
  to 1/25e4 (the defaults of torch's ``OneCycleLR``); it has its own warm-up, so ``warmup``
  is ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("constant", "cosine", "onecycle")
ONECYCLE_RISE = 0.3  # share of the steps spent rising (torch's pct_start)
ONECYCLE_START, ONECYCLE_END = 1 / 25, 1 / 25e4  # factors (torch's div_factor, final)


def _cosine(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * min(max(fraction, 0.0), 1.0))) / 2


@dataclass
class StepSchedule:
    """Sets each step's learning rate on an optimizer: call ``apply`` before ``step``."""

    kind: str
    base_lr: float
    total: int  # steps in the whole run
    warmup: int = 0  # steps of linear warm-up (constant and cosine)
    step: int = 0  # the next step's number

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; choose from {', '.join(SCHEDULES)}")

    def factor(self, step: int) -> float:
        """The learning-rate factor of step ``step`` (from 0)."""
        if self.kind == "onecycle":
            rise = max(1, round(ONECYCLE_RISE * self.total))
            if step < rise:
                return _cosine(ONECYCLE_START, 1.0, step / rise)
            return _cosine(1.0, ONECYCLE_END, (step - rise) / max(1, self.total - rise - 1))
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.kind == "cosine":
            return _cosine(1.0, 0.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 1.0

    def apply(self, optimizer: torch.optim.Optimizer) -> None:
        """Set this step's learning rate on every parameter group, and count the step."""
        lr = self.base_lr * self.factor(self.step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        self.step += 1


def make_schedule(kind: str, base_lr: float, epochs: int, steps_per_epoch: int,
                  warmup_epochs: float = 0.0) -> StepSchedule | None:
    """The schedule of a run, or None where the learning rate stays constant throughout."""
    if kind == "constant" and warmup_epochs <= 0:
        return None
    return StepSchedule(kind, base_lr, epochs * steps_per_epoch,
                        round(warmup_epochs * steps_per_epoch))
