"""Fit and evaluate one candidate, and sweep its inference knobs."""

from condsearch.train._device import seed_everything, select_device
from condsearch.train._evaluate import Evaluation, evaluate, sweep_knobs
from condsearch.train._fit import TrainingDiverged, fit, training_loss

__all__ = [
    "Evaluation",
    "TrainingDiverged",
    "evaluate",
    "fit",
    "seed_everything",
    "select_device",
    "sweep_knobs",
    "training_loss",
]
