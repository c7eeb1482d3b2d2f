"""Inference over several devices: each batch split over a strategy's replicas, rows kept in order."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf


def split_over_replicas(fn: Callable[[tf.Tensor], tf.Tensor],
                        strategy: tf.distribute.Strategy | None) -> Callable[[tf.Tensor], tf.Tensor]:
    """``images -> fn(images)`` with each batch cut into one contiguous slice per replica of
    ``strategy`` and the outputs gathered back in input order; ``fn``'s variables must have been
    made in ``strategy.scope()``. With one replica (or no strategy) this is ``fn`` itself.

    A batch smaller than the replica count runs on one device, since a replica given no rows
    cannot run every layer (group normalisation of an empty batch fails).
    """
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return fn
    replicas = strategy.num_replicas_in_sync

    def on_replica(images):
        # A plain function: given a tf.function, strategy.run re-traces it with its input
        # signature and the per-replica value no longer fits.
        return fn(images)

    spread = tf.function(lambda per_replica: strategy.gather(
        strategy.run(on_replica, args=(per_replica,)), axis=0), autograph=False)

    def forward(images):
        images = np.asarray(images, np.float32)
        if len(images) < replicas:
            return fn(tf.constant(images))
        pieces = np.array_split(images, replicas)
        per_replica = strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(pieces[context.replica_id_in_sync_group]))
        return spread(per_replica)

    forward.spread = spread  # the distributed function (its tracing count shows it ran)
    return forward
