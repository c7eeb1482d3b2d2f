"""MoCo v2 (Chen et al. 2020): InfoNCE of a query against its momentum-encoder key (the
positive) and a queue of keys from earlier batches (the negatives)."""
from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from medfound.ssl.losses.ntxent import check_temperature
from medfound.ssl.losses.replicas import as_float32, check_pair


class MoCoOutput(NamedTuple):
    """The loss, the logits (B, 1 + K: positive first, then the queue) and the labels (zeros)."""

    loss: tf.Tensor
    logits: tf.Tensor
    labels: tf.Tensor


def moco_loss(query, key, queue, temperature: float = 0.2) -> MoCoOutput:
    """InfoNCE: row i's positive is ``key[i]``, its negatives are every row of ``queue``.

    ``query`` and ``key`` are L2-normalised here; ``queue`` (K, dim) is expected normalised (the
    keys put in it are). Keys and queue are not differentiated. The loss is a mean over local
    queries; the queue is the same on every replica, so replicas agree with one device.
    """
    temperature = check_temperature(temperature)
    query, key, queue = as_float32(query, key, queue)
    check_pair("MoCo", query, key)
    if queue.shape.rank != 2 or not queue.shape[1:].is_compatible_with(query.shape[1:]):
        raise ValueError(f"MoCo queue must be (size, {query.shape[1]}), got {queue.shape}")
    query = tf.math.l2_normalize(query, axis=1)
    key = tf.stop_gradient(tf.math.l2_normalize(key, axis=1))
    positive = tf.reduce_sum(query * key, axis=1, keepdims=True)
    negative = tf.matmul(query, tf.stop_gradient(queue), transpose_b=True)
    logits = tf.concat([positive, negative], axis=1) / temperature
    labels = tf.zeros([tf.shape(query)[0]], tf.int32)
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    return MoCoOutput(loss=loss, logits=logits, labels=labels)
