"""Barlow Twins: a wide projector and the cross-correlation loss over the global batch."""
from __future__ import annotations

import tensorflow as tf

from medfound.ssl.losses import barlow_twins_loss
from medfound.ssl.methods.base import Method, StepOutput


class BarlowTwins(Method):
    """Barlow Twins (Zbontar et al. 2021): projector (Dense, BN, ReLU) x 2 then Dense, with
    synchronized batch norms; loss weight ``barlow_lambda`` on the off-diagonal."""

    name = "barlow"
    defaults = {"projection_layers": 3, "projection_dim": 2048}

    def build(self, backbone, make_backbone) -> None:
        self.projector = self.head("projector", backbone.embedding_dim, output_norm=False)
        self.trainable_layers = [self.projector]

    def checkpoint_items(self) -> dict:
        return {"projector": self.projector}

    def loss(self, features, targets) -> StepOutput:
        z = tf.cast(self.projector(features, training=True), tf.float32)
        out = barlow_twins_loss(*tf.split(z, 2, axis=0), self.settings.barlow_lambda)
        return StepOutput(out.loss, {"on_diagonal": out.on_diagonal,
                                     "off_diagonal": out.off_diagonal}, {})
