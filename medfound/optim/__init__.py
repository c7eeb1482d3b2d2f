"""Optimisation for pretraining and fine-tuning: the optimizer factory (factory.py), LARS (lars.py),
the warm-up + cosine schedule and batch-size LR scaling (schedules.py).

Names are imported on first use, so the accepted names (``names.py``) load without Keras.
"""
from __future__ import annotations

from medfound.optim.names import LR_SCALINGS, OPTIMIZERS
from medfound.utils.lazy import lazy_attributes

_API = {
    "make_optimizer": "medfound.optim.factory",
    "apply_reached_gradients": "medfound.optim.factory",
    "DEFAULT_EXCLUDE": "medfound.optim.lars",
    "LARS": "medfound.optim.lars",
    "WarmupCosineDecay": "medfound.optim.schedules",
    "scale_learning_rate": "medfound.optim.schedules",
}

__all__ = ["LR_SCALINGS", "OPTIMIZERS", *_API]


__getattr__ = lazy_attributes(__name__, _API, globals())
