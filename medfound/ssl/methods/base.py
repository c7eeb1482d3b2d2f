"""What a self-supervised method is to the pretraining loop: its networks beside the backbone, its
loss on the backbone's features of two views, and what it updates after each optimizer step."""
from __future__ import annotations

from typing import Callable, ClassVar, NamedTuple

import tensorflow as tf

from medfound.ssl.heads import ProjectionHead
from medfound.ssl.settings import MethodSettings


class StepOutput(NamedTuple):
    """One replica's loss share (the mean over replicas is the global loss), its metrics, and
    tensors that ``after_update`` needs (for example MoCo's new keys)."""

    loss: tf.Tensor
    metrics: dict
    updates: dict


class Method:
    """Base of the objectives. Subclasses set ``name`` and ``defaults`` and implement ``build``
    and ``loss``; EMA and queue methods also ``targets`` and ``after_update``."""

    name: ClassVar[str] = ""
    defaults: ClassVar[dict] = {}

    def __init__(self, settings: MethodSettings | None = None):
        self.settings = (settings or MethodSettings()).with_defaults(self.defaults)
        self.trainable_layers: list = []

    def build(self, backbone, make_backbone: Callable[[], object]) -> None:
        """Creates the method's networks (inside the strategy scope); ``make_backbone`` builds
        another backbone like ``backbone`` for methods with a target network."""
        raise NotImplementedError

    @property
    def trainable_variables(self) -> list:
        """The method's own trainable variables (the backbone's are the trainer's)."""
        return [v for layer in self.trainable_layers for v in layer.trainable_variables]

    def checkpoint_items(self) -> dict:
        """Trackable objects to save beside the backbone and optimizer, by checkpoint key."""
        raise NotImplementedError

    def targets(self, views: tf.Tensor) -> dict:
        """Outputs of networks that are not trained by gradient, computed outside the tape."""
        return {}

    def loss(self, features: tf.Tensor, targets: dict) -> StepOutput:
        """The loss of the backbone features of [view_a; view_b] (2B, D), per replica."""
        raise NotImplementedError

    def after_update(self, updates: dict, step: tf.Tensor) -> None:
        """Cross-replica work after the optimizer step (EMA of targets, queue), by default none."""
        del updates, step  # a real statement: AutoGraph cannot convert a docstring-only body

    def head(self, name: str, in_dim: int, *, layers: int | None = None, hidden_norm: bool = True,
             output_norm: bool = True, output_dim: int | None = None) -> ProjectionHead:
        """A built MLP head sized by the settings."""
        s = self.settings
        head = ProjectionHead(num_layers=layers or s.projection_layers,
                              hidden_dim=s.projection_hidden_dim,
                              output_dim=output_dim or s.projection_dim,
                              hidden_norm=hidden_norm, output_norm=output_norm, name=name)
        head.build((None, in_dim))
        return head
