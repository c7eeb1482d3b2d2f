"""Optimisation for pretraining: LARS, warm-up + cosine schedule, batch-size LR scaling."""
from medfound.optim.lars import DEFAULT_EXCLUDE, LARS
from medfound.optim.schedules import LR_SCALINGS, WarmupCosineDecay, scale_learning_rate

__all__ = ["DEFAULT_EXCLUDE", "LARS", "LR_SCALINGS", "WarmupCosineDecay", "scale_learning_rate"]
