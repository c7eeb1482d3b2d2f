"""What a pretraining checkpoint holds, and how a run resumes from one (the cleanup of what a
killed run left half-written is in ``runfolder``).

Keras 3 layers are not TensorFlow-trackable through Python lists, so a custom layer that keeps
its sublayers in a list (``ProjectionHead``) saves nothing when handed to ``tf.train.Checkpoint``
as it is. Every network that is not a Keras ``Model`` is therefore checkpointed as a dict of its
variables by path (kernels, batch-norm statistics, EMA targets); models (the BiT backbones) and
plain ``tf.Module`` state (the MoCo queue) are tracked as they are.
"""
from __future__ import annotations

import logging

import keras
import tensorflow as tf

from medfound.pretrain.runfolder import remove_leftovers  # noqa: F401 - its old home

logger = logging.getLogger("medfound.pretrain")


def _trackable(item):
    if isinstance(item, keras.layers.Layer) and not isinstance(item, keras.Model):
        return {variable.path: variable for variable in item.variables}
    return item


def make_checkpoint(optimizer, items: dict) -> tf.train.Checkpoint:
    """A checkpoint of the optimizer (its step counter is the run's step) and ``items``."""
    return tf.train.Checkpoint(optimizer=optimizer,
                               **{key: _trackable(item) for key, item in items.items()})


def _root_keys(path: str) -> set[str]:
    """The names the checkpoint's root object holds (optimizer, backbone, head, ...)."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_checkpoint(path).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    return {child.local_name for child in graph.nodes[0].children}


def restore(checkpoint: tf.train.Checkpoint, path: str, items: dict) -> None:
    """Restores ``path`` into ``checkpoint``; every network must be found in it.

    Checkpoints written by medfound 0.1.0 before heads were saved hold the heads' trainable
    weights (through the optimizer) but not their batch-norm statistics or EMA targets: those
    resume with a warning that these restart from initialisation. Anything else missing is
    refused with an error naming the checkpoint.
    """
    try:
        status = checkpoint.restore(path)
    except ValueError as error:  # a variable of another shape
        raise ValueError(f"checkpoint {path} does not match this run's networks: {error}") from None
    try:
        status.assert_existing_objects_matched()
    except AssertionError as error:
        status.expect_partial()  # no second report of the same mismatch when it is collected
        saved = _root_keys(path)
        heads = [key for key, item in items.items() if _trackable(item) is not item]
        if not heads or any(key in saved for key in heads) or not {"optimizer", "backbone"} <= saved:
            raise ValueError(f"checkpoint {path} does not match this run's networks: "
                             f"{error}") from None
        logger.warning("checkpoint %s holds no state of %s beyond trained weights (written "
                       "before medfound saved it): their batch-norm statistics and EMA targets "
                       "restart from initialisation", path, ", ".join(heads))
