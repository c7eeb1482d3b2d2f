"""One optimizer factory for pretraining and fine-tuning: LARS, SGD-momentum or AdamW on a
linear warm-up + cosine schedule, with weight decay applied by every one of them and biases and
normalisation parameters left undecayed (SimCLR's and BiT's convention).

LARS folds the decay into its trust ratio (coupled, as SimCLR's LARS); SGD and AdamW use Keras'
decoupled decay (``w -= lr * weight_decay * w`` each step), with the same exclusions.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import keras

from medfound.optim.lars import DEFAULT_EXCLUDE, LARS
from medfound.optim.names import OPTIMIZERS
from medfound.optim.schedules import WarmupCosineDecay


def warmup_steps(warmup_fraction: float, total_steps: int) -> int:
    """The number of warm-up steps ``warmup_fraction`` of ``total_steps`` makes (never more than all)."""
    return min(int(round(warmup_fraction * total_steps)), total_steps)


def make_optimizer(name: str, learning_rate: float, total_steps: int, *, warmup_fraction: float = 0.0,
                   momentum: float = 0.9, weight_decay: float = 0.0,
                   exclude_from_weight_decay: Sequence[str] = DEFAULT_EXCLUDE,
                   loss_scale: bool = False) -> keras.optimizers.Optimizer:
    """``name`` ('lars', 'sgd' or 'adamw') peaking at ``learning_rate`` after the warm-up and
    decaying to 0 at ``total_steps``; ``exclude_from_weight_decay`` are substrings of variable
    names spared the decay; ``loss_scale`` wraps it for float16 mixed precision."""
    schedule = WarmupCosineDecay(learning_rate, total_steps, warmup_steps(warmup_fraction, total_steps))
    decay = float(weight_decay or 0.0)
    if name == "lars":
        optimizer = LARS(schedule, momentum=momentum, weight_decay=decay,
                         exclude_from_weight_decay=list(exclude_from_weight_decay))
    elif name == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=momentum, weight_decay=decay or None)
    elif name == "adamw":
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=decay)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose from {list(OPTIMIZERS)}")
    if name != "lars" and decay and exclude_from_weight_decay:
        optimizer.exclude_from_weight_decay(var_names=[re.escape(p) for p in exclude_from_weight_decay])
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def apply_reached_gradients(optimizer, grads, variables) -> None:
    """``optimizer.apply_gradients`` for the variables the loss reaches. BiT's final GroupNorm
    feeds only ``pre_logits``, which no objective or head reads: its variables get None
    gradients, which are left out rather than handed to Keras (which warns at every run)."""
    optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
