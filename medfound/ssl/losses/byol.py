"""BYOL (Grill et al. 2020): the online network's prediction of one view regresses the target
network's projection of the other view, both L2-normalised. No negatives, so the loss is a mean
over local examples and needs nothing from other replicas."""
from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from medfound.ssl.losses.replicas import as_float32, check_pair


class BYOLOutput(NamedTuple):
    """The loss (in [0, 4]) and the mean cosine similarity of predictions and targets."""

    loss: tf.Tensor
    cosine_similarity: tf.Tensor


def _cosine(p: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.math.l2_normalize(p, axis=1) * tf.math.l2_normalize(z, axis=1), axis=1)


def byol_loss(p_a, p_b, target_a, target_b) -> BYOLOutput:
    """Symmetrised BYOL loss: mean over examples and both directions of 2 - 2 cos(p_a, t_b) and
    2 - 2 cos(p_b, t_a). Targets are not differentiated (they come from the EMA network)."""
    p_a, p_b, target_a, target_b = as_float32(p_a, p_b, target_a, target_b)
    check_pair("BYOL", p_a, target_b)
    check_pair("BYOL", p_b, target_a)
    cos_ab = _cosine(p_a, tf.stop_gradient(target_b))
    cos_ba = _cosine(p_b, tf.stop_gradient(target_a))
    cosine = 0.5 * (tf.reduce_mean(cos_ab) + tf.reduce_mean(cos_ba))
    return BYOLOutput(loss=2.0 - 2.0 * cosine, cosine_similarity=cosine)
