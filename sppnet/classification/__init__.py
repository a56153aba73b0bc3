"""Classification: training (single/multi-size, distributed), and (later) multi-view testing and
features + SVM protocols."""

from .config import TrainConfig
from .train import PlateauSchedule, build_model, evaluate, load_model, train

__all__ = ["PlateauSchedule", "TrainConfig", "build_model", "evaluate", "load_model", "train"]
