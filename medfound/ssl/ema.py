"""Exponential moving averages of networks (BYOL's target, MoCo's key encoder)."""
from __future__ import annotations

import math

import tensorflow as tf


def ema_momentum(step, total_steps: int, base: float):
    """BYOL's schedule: ``base`` at step 0 rising along a cosine to 1 at ``total_steps``.

    tau(k) = 1 - (1 - base) * (cos(pi k / K) + 1) / 2; works on Python numbers and tensors.
    """
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {base!r}")
    total = max(int(total_steps), 1)
    if isinstance(step, (int, float)):
        fraction = min(max(step / total, 0.0), 1.0)
        return 1.0 - (1.0 - base) * (math.cos(math.pi * fraction) + 1.0) / 2.0
    fraction = tf.clip_by_value(tf.cast(step, tf.float32) / float(total), 0.0, 1.0)
    return 1.0 - (1.0 - base) * (tf.cos(math.pi * fraction) + 1.0) / 2.0


def paired_weights(online, target) -> list[tuple]:
    """(target, online) variable pairs of two networks built alike, refusing any mismatch."""
    online_weights, target_weights = list(online.weights), list(target.weights)
    if len(online_weights) != len(target_weights):
        raise ValueError(f"EMA: {target.name} has {len(target_weights)} weights but "
                         f"{online.name} has {len(online_weights)}")
    for t, o in zip(target_weights, online_weights):
        if tuple(t.shape) != tuple(o.shape):
            raise ValueError(f"EMA: {t.path} {tuple(t.shape)} does not match {o.path} "
                             f"{tuple(o.shape)}")
    return list(zip(target_weights, online_weights))


def ema_update(pairs: list[tuple], momentum) -> None:
    """target <- momentum * target + (1 - momentum) * online, for every (target, online) pair;
    non-float weights are copied."""
    for target, online in pairs:
        if "float" in str(target.dtype):
            m = tf.cast(momentum, target.dtype)
            target.assign(m * target + (1.0 - m) * online)
        else:
            target.assign(online)
