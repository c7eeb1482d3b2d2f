"""Methods with a momentum (EMA) target network: BYOL and MoCo v2.

The target backbone and head start as copies of the online ones and follow them by an EMA whose
momentum rises from ``ema_momentum`` to 1 along a cosine over the run. They are checkpointed, as
is MoCo's queue, so a resumed run continues with the same targets and negatives.
"""
from __future__ import annotations

import tensorflow as tf

from medfound.ssl.ema import ema_momentum, ema_update, paired_weights
from medfound.ssl.losses import byol_loss, contrastive_accuracy, logits_entropy, moco_loss
from medfound.ssl.losses.replicas import multi_replica_context
from medfound.ssl.methods.base import Method, StepOutput


class _MomentumMethod(Method):
    """Shared target-network plumbing: build a target twin, EMA it after every update."""

    def _build_target(self, backbone, make_backbone, online_head, head_kwargs: dict) -> None:
        self.target_backbone = make_backbone()
        self.target_head = self.head("target_" + online_head.name, backbone.embedding_dim,
                                     **head_kwargs)
        self.target_backbone.set_weights(backbone.get_weights())
        self.target_head.set_weights(online_head.get_weights())
        self._pairs = (paired_weights(backbone, self.target_backbone)
                       + paired_weights(online_head, self.target_head))

    def _target_outputs(self, views: tf.Tensor, training: bool) -> tf.Tensor:
        features = self.target_backbone(views, training=training)["embedding"]
        return tf.stop_gradient(tf.cast(self.target_head(features, training=training), tf.float32))

    def after_update(self, updates: dict, step) -> None:
        momentum = ema_momentum(step, self.settings.total_steps, self.settings.ema_momentum)
        ema_update(self._pairs, momentum)


class BYOL(_MomentumMethod):
    """BYOL (Grill et al. 2020): online projector + predictor regress the target projection of
    the other view. Projector and predictor are Dense, BN, ReLU, Dense (synchronized BN); the
    target runs its batch norms on batch statistics, as in the paper."""

    name = "byol"
    defaults = {"projection_layers": 2, "projection_dim": 256, "ema_momentum": 0.996}

    def build(self, backbone, make_backbone) -> None:
        self.projector = self.head("projector", backbone.embedding_dim, output_norm=False)
        self.predictor = self.head("predictor", self.settings.projection_dim, output_norm=False)
        self.trainable_layers = [self.projector, self.predictor]
        self._build_target(backbone, make_backbone, self.projector, {"output_norm": False})

    def checkpoint_items(self) -> dict:
        return {"projector": self.projector, "predictor": self.predictor,
                "target_backbone": self.target_backbone, "target_projector": self.target_head}

    def targets(self, views) -> dict:
        return {"z": self._target_outputs(views, training=True)}

    def loss(self, features, targets) -> StepOutput:
        p = self.predictor(self.projector(features, training=True), training=True)
        p_a, p_b = tf.split(tf.cast(p, tf.float32), 2, axis=0)
        t_a, t_b = tf.split(targets["z"], 2, axis=0)
        out = byol_loss(p_a, p_b, t_a, t_b)
        return StepOutput(out.loss, {"cosine_similarity": out.cosine_similarity}, {})


class KeyQueue(tf.Module):
    """MoCo's ring buffer of L2-normalised keys (size, dim), with its write position."""

    def __init__(self, size: int, dim: int, seed: int = 0, name: str = "queue"):
        super().__init__(name=name)
        initial = tf.random.stateless_normal([size, dim], seed=[seed, 1871])
        self.keys = tf.Variable(tf.math.l2_normalize(initial, axis=1), trainable=False,
                                name="keys")
        self.pointer = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="pointer")
        self.size = size

    def enqueue(self, keys: tf.Tensor) -> None:
        """Overwrites the oldest entries with ``keys`` (cross-replica context: one write)."""
        count = tf.shape(keys, out_type=tf.int64)[0]
        slots = (self.pointer + tf.range(count, dtype=tf.int64)) % self.size
        self.keys.assign(tf.tensor_scatter_nd_update(
            tf.convert_to_tensor(self.keys), slots[:, None], tf.cast(keys, self.keys.dtype)))
        self.pointer.assign((self.pointer + count) % self.size)


class MoCo(_MomentumMethod):
    """MoCo v2 (Chen et al. 2020), symmetrised: each view's query against the other view's key
    from the momentum encoder and a queue of ``moco_queue_size`` earlier keys.

    The shuffling-free variant: BiT backbones use GroupNorm and the MLP head (Dense, ReLU, Dense)
    has no batch norm, so no statistic can leak which key is the positive and MoCo's shuffled BN
    is not needed. Both views' keys of the global batch are enqueued after each step.
    """

    name = "moco"
    defaults = {"projection_layers": 2, "projection_dim": 128, "temperature": 0.2,
                "ema_momentum": 0.99}

    def build(self, backbone, make_backbone) -> None:
        head_kwargs = {"hidden_norm": False, "output_norm": False}
        self.query_head = self.head("query_head", backbone.embedding_dim, **head_kwargs)
        self.trainable_layers = [self.query_head]
        self._build_target(backbone, make_backbone, self.query_head, head_kwargs)
        self.queue = KeyQueue(self.settings.moco_queue_size, self.settings.projection_dim,
                              seed=self.settings.seed)

    def checkpoint_items(self) -> dict:
        return {"query_head": self.query_head, "key_backbone": self.target_backbone,
                "key_head": self.target_head, "queue": self.queue}

    def targets(self, views) -> dict:
        return {"keys": tf.math.l2_normalize(self._target_outputs(views, training=False), axis=1)}

    def loss(self, features, targets) -> StepOutput:
        q_a, q_b = tf.split(tf.cast(self.query_head(features, training=True), tf.float32), 2)
        k_a, k_b = tf.split(targets["keys"], 2)
        queue = tf.convert_to_tensor(self.queue.keys)
        out_a = moco_loss(q_a, k_b, queue, self.settings.temperature)
        out_b = moco_loss(q_b, k_a, queue, self.settings.temperature)
        metrics = {"contrastive_accuracy": contrastive_accuracy(out_a.logits, out_a.labels),
                   "logits_entropy": logits_entropy(out_a.logits)}
        ctx = multi_replica_context()
        if ctx is not None:  # every replica enqueues the whole global batch, in one order
            k_a, k_b = ctx.all_gather(k_a, axis=0), ctx.all_gather(k_b, axis=0)
        return StepOutput(0.5 * (out_a.loss + out_b.loss), metrics,
                          {"keys": tf.concat([k_a, k_b], axis=0)})

    def after_update(self, updates: dict, step) -> None:
        super().after_update(updates, step)
        self.queue.enqueue(updates["keys"])
