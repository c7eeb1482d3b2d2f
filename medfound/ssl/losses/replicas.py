"""Global-batch helpers for losses that look across replicas.

``ReplicaContext.all_gather`` is differentiable and its gradient sums over replicas, so a loss
computed from gathered tensors on every replica, divided by ``num_replicas_in_sync`` (as the
trainer does), gives each replica's variables exactly the single-device gradient.
"""
from __future__ import annotations

import tensorflow as tf


def multi_replica_context() -> tf.distribute.ReplicaContext | None:
    """The current replica context if it has more than one replica in sync, else None."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return None
    return ctx


def gather_global(*tensors: tf.Tensor) -> tuple[list[tf.Tensor], tf.Tensor]:
    """Each tensor concatenated over the replicas (replica 0 first) along axis 0, and where this
    replica's rows start in that global batch (local batches may differ in size)."""
    ctx = multi_replica_context()
    if ctx is None:
        return list(tensors), tf.constant(0, tf.int32)
    gathered = [ctx.all_gather(t, axis=0) for t in tensors]
    sizes = ctx.all_gather(tf.reshape(tf.shape(tensors[0])[0], [1]), axis=0)
    replica_id = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    offset = tf.gather(tf.cumsum(sizes, exclusive=True), replica_id)
    return gathered, offset


def check_pair(name: str, a: tf.Tensor, b: tf.Tensor) -> None:
    """Refuses two views that are not (batch, dim) tensors of the same static shape."""
    if a.shape.rank != 2 or b.shape.rank != 2:
        raise ValueError(f"{name} expects two (batch, dim) tensors, got shapes {a.shape} and "
                         f"{b.shape}")
    if not a.shape.is_compatible_with(b.shape):
        raise ValueError(f"{name}: the two views must have the same shape, got {a.shape} and "
                         f"{b.shape}")


def as_float32(*tensors) -> list[tf.Tensor]:
    """Tensors converted and cast to float32 (losses are computed in float32 under mixed precision)."""
    return [tf.cast(tf.convert_to_tensor(t), tf.float32) for t in tensors]
