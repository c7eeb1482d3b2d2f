"""Projection heads and predictors: the small MLPs between the backbone and a self-supervised loss.

One layer, ``ProjectionHead``, covers every method's MLP: SimCLR v2's (BN after every Dense,
the last without centre), Barlow Twins' and BYOL's (no norm after the last Dense) and MoCo v2's
(no norm at all) differ only in ``hidden_norm`` / ``output_norm``.
"""
from __future__ import annotations

import keras

BN_MOMENTUM = 0.9  # SimCLR's batch_norm_decay.
BN_EPSILON = 1e-5  # SimCLR's BATCH_NORM_EPSILON.


def _check_positive_int(name: str, value, allow_none: bool = False) -> None:
    """Refuses a non-integer or non-positive layer size with a ValueError naming it."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ProjectionHead: {name} must be a positive integer, got {value!r}")


@keras.saving.register_keras_serializable(package="medfound")
class ProjectionHead(keras.layers.Layer):
    """MLP head: (Dense, BatchNorm, ReLU) x (num_layers - 1), then Dense and BatchNorm(center=False)
    with no ReLU; the SimCLR v2 projection head with the defaults.

    ``hidden_norm=False`` drops the hidden batch norms and ``output_norm=False`` the last one; a
    Dense has a bias exactly when no batch norm follows it.

    The batch norms are ``synchronized`` so that, under a MirroredStrategy, their statistics are
    computed over the global batch (as SimCLR's cross-replica BN), which stops each replica from
    "cheating" the contrastive task with local batch statistics. Sublayer names contain
    ``batch_normalization`` so LARS' default exclusions find their variables.
    """

    def __init__(self, num_layers: int = 3, hidden_dim: int | None = None, output_dim: int = 128,
                 bn_momentum: float = BN_MOMENTUM, bn_epsilon: float = BN_EPSILON,
                 hidden_norm: bool = True, output_norm: bool = True,
                 name: str = "projection_head", **kwargs):
        super().__init__(name=name, **kwargs)
        _check_positive_int("num_layers", num_layers)
        _check_positive_int("hidden_dim", hidden_dim, allow_none=True)
        _check_positive_int("output_dim", output_dim)
        if not 0.0 <= float(bn_momentum) < 1.0:
            raise ValueError(f"ProjectionHead: bn_momentum must be in [0, 1), got {bn_momentum!r}")
        if not float(bn_epsilon) > 0.0:
            raise ValueError(f"ProjectionHead: bn_epsilon must be > 0, got {bn_epsilon!r}")
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.output_dim = output_dim
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.hidden_norm = bool(hidden_norm)
        self.output_norm = bool(output_norm)
        self.dense_layers: list[keras.layers.Dense] = []
        self.norm_layers: list[keras.layers.BatchNormalization] = []  # only where a norm is used

    def _has_norm(self, i: int) -> bool:
        return self.output_norm if i == self.num_layers - 1 else self.hidden_norm

    def build(self, input_shape) -> None:
        in_dim = input_shape[-1]
        if in_dim is None:
            raise ValueError(f"ProjectionHead: the input's last dimension must be known, got "
                             f"shape {tuple(input_shape)}")
        hidden = self.hidden_dim or int(in_dim)
        batch_shape = tuple(input_shape[:-1])
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            units = self.output_dim if last else hidden
            dense = keras.layers.Dense(
                units, use_bias=not self._has_norm(i),
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), name=f"dense_{i}")
            dense.build(batch_shape + (hidden if i else int(in_dim),))
            self.dense_layers.append(dense)
            if self._has_norm(i):
                norm = keras.layers.BatchNormalization(
                    momentum=self.bn_momentum, epsilon=self.bn_epsilon, center=not last,
                    synchronized=True, name=f"batch_normalization_{i}")
                norm.build(batch_shape + (units,))
                self.norm_layers.append(norm)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        norms = iter(self.norm_layers)
        for i, dense in enumerate(self.dense_layers):
            x = dense(x)
            if self._has_norm(i):
                x = next(norms)(x, training=training)
            if i < self.num_layers - 1:
                x = keras.ops.relu(x)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(num_layers=self.num_layers, hidden_dim=self.hidden_dim,
                      output_dim=self.output_dim, bn_momentum=self.bn_momentum,
                      bn_epsilon=self.bn_epsilon, hidden_norm=self.hidden_norm,
                      output_norm=self.output_norm)
        return config
