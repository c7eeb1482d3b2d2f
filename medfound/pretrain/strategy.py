"""Distribution strategies by name: one device, several GPUs, several hosts, or a TPU."""
from __future__ import annotations

import tensorflow as tf


def make_strategy(name: str = "default") -> tf.distribute.Strategy:
    """'default' (one device), 'mirrored' (all local GPUs), 'multiworker' (TF_CONFIG), 'tpu'.

    ``multiworker`` reads the cluster from the TF_CONFIG environment variable and must be
    created before any other TensorFlow op runs in the process.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}; use default, mirrored, multiworker or tpu")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's outputs (worker 0 of a multi-worker cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())
