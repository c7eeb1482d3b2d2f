"""Learning-rate schedule and batch-size scaling used for SimCLR/REMEDIS pretraining."""
from __future__ import annotations

import math

import keras
from keras import ops

from medfound.optim.names import LR_SCALINGS


def scale_learning_rate(base_lr: float, batch_size: int, scaling: str = "linear") -> float:
    """SimCLR's batch-size scaling of the learning rate.

    'linear' = base_lr * batch_size / 256, 'sqrt' = base_lr * sqrt(batch_size).
    """
    if not (isinstance(base_lr, (int, float)) and math.isfinite(base_lr) and base_lr >= 0):
        raise ValueError(f"base learning rate must be a finite number >= 0, got {base_lr!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if scaling == "linear":
        return float(base_lr) * batch_size / 256.0
    if scaling == "sqrt":
        return float(base_lr) * math.sqrt(batch_size)
    raise ValueError(f"unknown learning-rate scaling {scaling!r}; expected one of {LR_SCALINGS}")


@keras.saving.register_keras_serializable(package="medfound")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``base_learning_rate`` over ``warmup_steps``, then cosine decay
    to 0 at ``total_steps`` (and 0 after), as SimCLR trains."""

    def __init__(self, base_learning_rate: float, total_steps: int, warmup_steps: int = 0):
        if not (isinstance(base_learning_rate, (int, float)) and math.isfinite(base_learning_rate)
                and base_learning_rate >= 0):
            raise ValueError(f"WarmupCosineDecay: base_learning_rate must be a finite number >= 0, "
                             f"got {base_learning_rate!r}")
        for name, value in (("total_steps", total_steps), ("warmup_steps", warmup_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"WarmupCosineDecay: {name} must be an integer >= 0, got {value!r}")
        if total_steps < 1:
            raise ValueError(f"WarmupCosineDecay: total_steps must be >= 1, got {total_steps!r}")
        if warmup_steps > total_steps:
            raise ValueError(f"WarmupCosineDecay: warmup_steps ({warmup_steps}) must not exceed "
                             f"total_steps ({total_steps})")
        self.base_learning_rate = float(base_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        base = ops.cast(self.base_learning_rate, "float32")
        warmup = float(self.warmup_steps)
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - warmup) / decay_steps, 0.0, 1.0)
        cosine = 0.5 * base * (1.0 + ops.cos(math.pi * progress))
        if self.warmup_steps == 0:
            return cosine
        warm = base * step / warmup
        return ops.where(step < warmup, warm, cosine)

    def get_config(self) -> dict:
        return {"base_learning_rate": self.base_learning_rate, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}
