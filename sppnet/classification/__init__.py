"""Classification: training (single/multi-size, distributed, exact resume), test-time views
(:mod:`.views`), full-image SPP features and the SVM protocol (:mod:`.features`,
:mod:`.svm_protocol`)."""

from .config import TrainConfig
from .train import PlateauSchedule, build_model, evaluate, load_model, train

__all__ = ["PlateauSchedule", "TrainConfig", "build_model", "evaluate", "load_model", "train"]
