"""The networks and optimizer of a pretraining run: a BiT backbone (optionally BiT-initialised)
and the self-supervised method's own networks (heads, predictor, target network, queue)."""
from __future__ import annotations

import dataclasses

import keras

from medfound.models.bit import BiTBackbone, build_backbone
from medfound.models.bit_weights import load_bit_weights
from medfound.optim.lars import LARS
from medfound.optim.schedules import WarmupCosineDecay, scale_learning_rate
from medfound.pretrain.config import PretrainConfig
from medfound.ssl.methods import Method, get_method
from medfound.utils.files import sha256_path


@dataclasses.dataclass
class PretrainNetworks:
    """The backbone being pretrained and the method that trains it."""

    backbone: BiTBackbone
    method: Method

    @property
    def trainable_variables(self) -> list:
        return self.backbone.trainable_variables + self.method.trainable_variables

    def checkpoint_items(self) -> dict:
        """Everything a checkpoint holds besides the optimizer, by key."""
        return {"backbone": self.backbone, **self.method.checkpoint_items()}


def build_networks(config: PretrainConfig) -> tuple[PretrainNetworks, str | None]:
    """Builds the backbone and the method's networks (inside the strategy scope); returns them
    and the SHA-256 of the BiT initialisation (None for random)."""
    def make_backbone() -> BiTBackbone:
        return build_backbone(config.arch, units=config.units, width=config.width)

    backbone = make_backbone()
    init_sha256 = None
    if config.init_path:
        load_bit_weights(backbone, config.init_path)
        init_sha256 = sha256_path(config.init_path)
    method = get_method(config.method, config.method_settings())
    method.build(backbone, make_backbone)
    return PretrainNetworks(backbone, method), init_sha256


def build_optimizer(config: PretrainConfig) -> keras.optimizers.Optimizer:
    """LARS (default), SGD-momentum or AdamW on a warm-up + cosine schedule of the scaled rate."""
    base = scale_learning_rate(config.learning_rate, config.batch_size, config.lr_scaling)
    schedule = WarmupCosineDecay(base, total_steps=config.steps, warmup_steps=config.warmup_steps)
    if config.optimizer == "lars":
        optimizer = LARS(learning_rate=schedule, momentum=config.momentum,
                         weight_decay=config.weight_decay)
    elif config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum)
    else:
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
