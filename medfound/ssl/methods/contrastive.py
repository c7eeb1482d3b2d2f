"""SimCLR and RELIC: a projection head and a contrastive loss over the global batch."""
from __future__ import annotations

import tensorflow as tf

from medfound.ssl.losses import contrastive_accuracy, logits_entropy, nt_xent_loss, relic_loss
from medfound.ssl.methods.base import Method, StepOutput


class SimCLR(Method):
    """SimCLR v2 (Chen et al. 2020): NT-Xent of a 3-layer projection head's outputs."""

    name = "simclr"
    defaults = {"projection_layers": 3, "projection_dim": 128, "temperature": 0.1}

    def build(self, backbone, make_backbone) -> None:
        self.projection = self.head("projection_head", backbone.embedding_dim)
        self.trainable_layers = [self.projection]

    def checkpoint_items(self) -> dict:
        return {"head": self.projection}

    def _projections(self, features):
        z = tf.cast(self.projection(features, training=True), tf.float32)
        return tf.split(z, 2, axis=0)

    def loss(self, features, targets) -> StepOutput:
        out = nt_xent_loss(*self._projections(features), self.settings.temperature)
        return StepOutput(out.loss, _contrastive_metrics(out.logits, out.labels), {})


class RELIC(SimCLR):
    """RELIC (Mitrovic et al. 2021): SimCLR's loss plus ``relic_alpha`` times the KL between an
    image's similarity distributions seen from its two views."""

    name = "relic"

    def loss(self, features, targets) -> StepOutput:
        out = relic_loss(*self._projections(features), self.settings.temperature,
                         self.settings.relic_alpha)
        metrics = _contrastive_metrics(out.logits, out.labels)
        metrics.update(contrastive_loss=out.contrastive, invariance_kl=out.invariance)
        return StepOutput(out.loss, metrics, {})


def _contrastive_metrics(logits, labels) -> dict:
    return {"contrastive_accuracy": contrastive_accuracy(logits, labels),
            "logits_entropy": logits_entropy(logits)}
