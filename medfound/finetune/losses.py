"""Classification losses with a loss mask (0 = ignore), for multi-label, binary and multi-class heads.

A masked entry (for example an uncertain CheXpert label under the 'ignore' policy) adds nothing to
the loss or its gradient; the mean is over the entries that count.
"""
from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from medfound.finetune.model import TASK_TYPES as LOSS_TASKS


def masked_sigmoid_cross_entropy(labels, logits, mask=None) -> tf.Tensor:
    """Mean binary cross-entropy over the (example, class) cells whose mask is set (one sigmoid per class)."""
    labels = tf.cast(labels, tf.float32)
    logits = tf.cast(logits, tf.float32)
    mask = tf.ones_like(labels) if mask is None else tf.cast(mask, tf.float32)
    per_cell = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_sum(per_cell * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def masked_softmax_cross_entropy(labels, logits, mask=None) -> tf.Tensor:
    """Mean softmax cross-entropy over one-hot rows; an example counts when any cell of its mask is set."""
    labels = tf.cast(labels, tf.float32)
    logits = tf.cast(logits, tf.float32)
    weight = tf.ones_like(labels[:, 0]) if mask is None else tf.reduce_max(tf.cast(mask, tf.float32), axis=1)
    per_example = tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_sum(per_example * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)


def loss_for_task(task: str) -> Callable[..., tf.Tensor]:
    """The masked loss of a task type: sigmoid for 'multilabel' and 'binary', softmax for 'multiclass'."""
    if task in ("multilabel", "binary"):
        return masked_sigmoid_cross_entropy
    if task == "multiclass":
        return masked_softmax_cross_entropy
    raise ValueError(f"task must be one of {LOSS_TASKS}, got {task!r}")
