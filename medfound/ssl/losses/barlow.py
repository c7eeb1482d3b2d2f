"""Barlow Twins (Zbontar et al. 2021): make the cross-correlation of the two views' embeddings
the identity. Batch statistics and the correlation are taken over the global batch (gathered from
every replica), so the loss does not depend on how the batch is split."""
from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from medfound.ssl.losses.replicas import as_float32, check_pair, gather_global

DEFAULT_LAMBDA = 0.0051  # The paper's weight of the off-diagonal (redundancy reduction) term.


class BarlowOutput(NamedTuple):
    """The loss and its two parts: sum of (1 - c_ii)^2 and sum over i != j of c_ij^2."""

    loss: tf.Tensor
    on_diagonal: tf.Tensor
    off_diagonal: tf.Tensor


def _standardise(z: tf.Tensor, epsilon: float) -> tf.Tensor:
    """Zero mean, unit (biased) variance per dimension over the batch."""
    mean, variance = tf.nn.moments(z, axes=[0])
    return (z - mean) * tf.math.rsqrt(variance + epsilon)


def barlow_twins_loss(z_a, z_b, lambda_offdiag: float = DEFAULT_LAMBDA,
                      epsilon: float = 1e-5) -> BarlowOutput:
    """Barlow Twins loss of two views' projections (row i of each is one image), in float32.

    c = standardise(Z_a)^T standardise(Z_b) / N over the N examples of the global batch;
    loss = sum_i (1 - c_ii)^2 + lambda * sum_{i != j} c_ij^2. Every replica returns the same
    global loss (see ``replicas`` for why the trainer's 1 / replicas scaling then gives the
    single-device gradient).
    """
    if not float(lambda_offdiag) >= 0.0:
        raise ValueError(f"Barlow Twins lambda must be >= 0, got {lambda_offdiag!r}")
    z_a, z_b = as_float32(z_a, z_b)
    check_pair("Barlow Twins", z_a, z_b)
    (all_a, all_b), _ = gather_global(z_a, z_b)
    n = tf.cast(tf.shape(all_a)[0], tf.float32)
    c = tf.matmul(_standardise(all_a, epsilon), _standardise(all_b, epsilon), transpose_a=True) / n
    diagonal = tf.linalg.diag_part(c)
    on = tf.reduce_sum(tf.square(1.0 - diagonal))
    off = tf.reduce_sum(tf.square(c)) - tf.reduce_sum(tf.square(diagonal))
    return BarlowOutput(loss=on + float(lambda_offdiag) * off, on_diagonal=on, off_diagonal=off)
