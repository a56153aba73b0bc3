"""One rule for a training loss gone wrong, the same in every trainer (``train-cls``, the
detector's fine-tuning): stop at once, naming where and the likely cause, before anything of the
bad step is saved.

- A non-finite loss (NaN or inf) stops the run at that step.
- A loss that rises far above where it started: over a window of steps (an epoch of
  ``train-cls``, a logged window of fine-tuning iterations) the mean loss is more than
  :data:`DIVERGENCE_FACTOR` times ``max(start, ln K)`` — ``start`` being the mean loss of the
  first :data:`START_STEPS` steps (fewer if the first window is shorter) and ``ln K`` the loss
  of a uniform guess over ``K`` classes.
  A run that learns stays below both; a diverging one (lr 0.01 on a pretrained trunk: train
  loss 33 after one epoch with K = 25, ln K = 3.2) goes far above.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["TrainingDiverged", "LossGuard", "DIVERGENCE_FACTOR", "START_STEPS"]

DIVERGENCE_FACTOR = 2.0  # a window's mean loss above this x max(start, ln K) is divergence
START_STEPS = 5  # the run's start loss is the mean of its first steps


class TrainingDiverged(ValueError):
    """The loss became non-finite or rose far above its start; the message names the step and
    the likely cause (the learning rate)."""


class LossGuard:
    """Watches a run's loss.

    Args:
        trainer: how the messages name the run (``train-cls``, ``fine-tuning``).
        num_classes: the classes the loss is over (``ln K`` is the chance-level loss).
        lr_hint: the learning-rate setting to name, e.g. ``"--lr 0.01 (trunk x1)"``.
    """

    def __init__(self, trainer: str, num_classes: int, lr_hint: str,
                 factor: float = DIVERGENCE_FACTOR) -> None:
        self.trainer, self.lr_hint, self.factor = trainer, lr_hint, factor
        self.chance = math.log(max(num_classes, 2))
        self.first: list[float] = []
        self.frozen = False  # the start is fixed (after START_STEPS steps or one window)

    @property
    def start(self) -> float | None:
        """The mean loss of the first steps (``None`` before any)."""
        return sum(self.first) / len(self.first) if self.first else None

    def step(self, loss: float, where: str) -> None:
        """One step's loss: raises :class:`TrainingDiverged` if it is not finite."""
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"{self.trainer}: the loss is {loss} at {where}; stopped before saving "
                f"anything of it. Likely cause: the learning rate is too high "
                f"({self.lr_hint}); lower it")
        if not self.frozen:
            self.first.append(float(loss))
            self.frozen = len(self.first) >= START_STEPS

    def window(self, mean_loss: float, where: str) -> None:
        """The mean loss over a window of steps (an epoch): raises :class:`TrainingDiverged`
        when it is not finite or far above ``max(start, ln K)``."""
        if not math.isfinite(mean_loss):
            self.step(mean_loss, where)
        self.frozen = True
        start = self.start if self.start is not None else self.chance
        ref = max(start, self.chance)
        if mean_loss > self.factor * ref:
            raise TrainingDiverged(
                f"{self.trainer}: the mean loss rose to {mean_loss:.3g} in {where}, from "
                f"{start:.3g} at the start (a uniform guess over the classes scores "
                f"ln K = {self.chance:.3g}): the run diverged; stopped before saving it. "
                f"Likely cause: the learning rate is too high ({self.lr_hint}); lower it")

    def state_dict(self) -> dict[str, Any]:
        return {"first": list(self.first), "frozen": self.frozen}

    def load_state_dict(self, sd: dict[str, Any] | None) -> None:
        self.first = [float(v) for v in (sd or {}).get("first", [])]
        self.frozen = bool((sd or {}).get("frozen", len(self.first) >= START_STEPS))
