"""NT-Xent (SimCLR's normalised temperature-scaled cross-entropy), negatives from the global batch.

Under a ``tf.distribute`` strategy with several replicas, each replica gathers the projections of
all replicas (``ReplicaContext.all_gather``, which is differentiable), so every example is
contrasted against the whole global batch, and returns the mean loss over its *local* examples.
With equal local batches, the mean of the replicas' losses equals the single-device loss on the
global batch; to get the global gradient, scale each replica's loss by
``1 / num_replicas_in_sync`` before differentiating (Keras' optimizers sum replica gradients).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import tensorflow as tf

from medfound.ssl.losses.replicas import as_float32, check_pair, gather_global

LARGE_NUM = 1e9  # Subtracted from an example's similarity with itself, so it is never a candidate.


class NTXentOutput(NamedTuple):
    """What ``nt_xent_loss`` returns: the scalar loss and, for the a->b direction, the logits
    (B_local, 2 * B_global: [a·b_all, a·a_all]) and the index of each row's positive; also the
    cross-view logits a·b_all and b·a_all (B_local, B_global) that RELIC's regulariser compares."""

    loss: tf.Tensor
    logits: tf.Tensor
    labels: tf.Tensor
    logits_ab: tf.Tensor
    logits_ba: tf.Tensor


def check_temperature(temperature: float) -> float:
    """Returns ``temperature`` as a float, refusing values that are not finite and > 0."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(
            f"NT-Xent temperature must be a positive number, got {temperature!r}") from None
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"NT-Xent temperature must be a finite number > 0, got {temperature!r}")
    return value


def nt_xent_loss(z_a, z_b, temperature: float = 0.1) -> NTXentOutput:
    """NT-Xent between two views' projections (row i of ``z_a`` and ``z_b`` are one image).

    Features are L2-normalised; each anchor's candidates are the other view of every example
    in the global batch plus its own view of every other example (2 * B_global - 1 candidates,
    self-similarity masked). The loss is averaged over both directions (a->b and b->a) and the
    local examples: the NT-Xent of the SimCLR paper, i.e. half of the SimCLR code's ``a + b`` sum.
    Computed in float32 whatever the input dtype.
    """
    temperature = check_temperature(temperature)
    z_a, z_b = as_float32(z_a, z_b)
    check_pair("NT-Xent", z_a, z_b)
    z_a = tf.math.l2_normalize(z_a, axis=1)
    z_b = tf.math.l2_normalize(z_b, axis=1)
    local_batch = tf.shape(z_a)[0]
    (all_a, all_b), offset = gather_global(z_a, z_b)
    global_batch = tf.shape(all_a)[0]

    labels = tf.range(local_batch, dtype=tf.int32) + offset
    self_mask = tf.one_hot(labels, global_batch, dtype=tf.float32) * LARGE_NUM
    logits_ab = tf.matmul(z_a, all_b, transpose_b=True) / temperature
    logits_ba = tf.matmul(z_b, all_a, transpose_b=True) / temperature
    logits_aa = tf.matmul(z_a, all_a, transpose_b=True) / temperature - self_mask
    logits_bb = tf.matmul(z_b, all_b, transpose_b=True) / temperature - self_mask

    logits_a = tf.concat([logits_ab, logits_aa], axis=1)
    logits_b = tf.concat([logits_ba, logits_bb], axis=1)
    loss_a = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits_a)
    loss_b = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits_b)
    loss = 0.5 * (tf.reduce_mean(loss_a) + tf.reduce_mean(loss_b))
    return NTXentOutput(loss=loss, logits=logits_a, labels=labels, logits_ab=logits_ab,
                        logits_ba=logits_ba)


def contrastive_accuracy(logits, labels) -> tf.Tensor:
    """Fraction of rows whose highest logit is the positive (top-1 among all 2B-1 candidates)."""
    logits = tf.convert_to_tensor(logits)
    labels = tf.cast(labels, tf.int64)
    hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int64), labels)
    return tf.reduce_mean(tf.cast(hits, tf.float32))


def logits_entropy(logits) -> tf.Tensor:
    """Mean entropy (nats) of the softmax over each row's candidates: low when the model is sure.

    Masked self-similarities have probability exactly 0 and contribute nothing.
    """
    logits = tf.cast(tf.convert_to_tensor(logits), tf.float32)
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    entropy = -tf.reduce_sum(tf.math.multiply_no_nan(log_probs, tf.exp(log_probs)), axis=-1)
    return tf.reduce_mean(entropy)
