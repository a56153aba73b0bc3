"""The learning-rate schedule of classifier training: the paper's plateau rule (divide by 10
when validation stops improving), or fixed milestones."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["PlateauSchedule"]


class PlateauSchedule:
    """Divide the learning rate by ``factor`` when the validation error has not improved for
    ``patience`` epochs, at most ``max_drops`` times (paper: 0.01, /10 twice).

    With ``milestones`` (1-based epoch numbers) the lr is divided after exactly those epochs
    instead, whatever validation does — a fixed step schedule, e.g. to give two nets the same
    schedule; ``max_drops`` is then their count and ``exhausted`` still watches validation."""

    def __init__(self, lr: float, patience: int = 3, max_drops: int = 2, factor: float = 0.1,
                 min_delta: float = 1e-4, milestones: tuple[int, ...] = ()) -> None:
        self.lr, self.patience, self.max_drops = lr, patience, max_drops
        self.factor, self.min_delta = factor, min_delta
        self.milestones = tuple(milestones)
        if self.milestones:
            self.max_drops = len(self.milestones)
        self.best = math.inf
        self.bad_epochs = 0
        self.drops = 0

    def step(self, val_error: float, epoch: int | None = None) -> bool:
        """Record the validation error of ``epoch`` (1-based; needed with milestones); returns
        True when the lr was just dropped."""
        improved = val_error < self.best - self.min_delta
        if improved:
            self.best, self.bad_epochs = val_error, 0
        else:
            self.bad_epochs += 1
        if self.milestones:
            if epoch is None:
                raise ValueError("a milestone schedule steps with the epoch number")
            drop = epoch in self.milestones
        else:
            drop = not improved and self.bad_epochs > self.patience
        if drop and self.drops < self.max_drops:
            self.lr *= self.factor
            self.drops += 1
            self.bad_epochs = 0
            return True
        return False

    @property
    def exhausted(self) -> bool:
        """Every drop used and validation again without progress for more than ``patience``
        epochs: training has converged under this schedule."""
        return self.drops >= self.max_drops and self.bad_epochs > self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "best": self.best if math.isfinite(self.best) else None,
                "bad_epochs": self.bad_epochs, "drops": self.drops}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.lr, self.bad_epochs, self.drops = sd["lr"], sd["bad_epochs"], sd["drops"]
        self.best = math.inf if sd["best"] is None else sd["best"]
