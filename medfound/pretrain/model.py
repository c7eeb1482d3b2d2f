"""The networks and optimizer of a SimCLR run: BiT backbone (optionally BiT-initialised) + head."""
from __future__ import annotations

import dataclasses

import keras

from medfound.models.bit import BiTBackbone, build_backbone
from medfound.models.bit_weights import load_bit_weights
from medfound.optim.lars import LARS
from medfound.optim.schedules import WarmupCosineDecay, scale_learning_rate
from medfound.pretrain.config import PretrainConfig
from medfound.ssl.heads import ProjectionHead
from medfound.utils.files import sha256_path


@dataclasses.dataclass
class SimCLRNetworks:
    backbone: BiTBackbone
    head: ProjectionHead

    @property
    def trainable_variables(self) -> list:
        return self.backbone.trainable_variables + self.head.trainable_variables


def build_networks(config: PretrainConfig) -> tuple[SimCLRNetworks, str | None]:
    """Builds backbone and head (inside the strategy scope); returns them and the init SHA-256."""
    backbone = build_backbone(config.arch, units=config.units, width=config.width)
    init_sha256 = None
    if config.init_path:
        load_bit_weights(backbone, config.init_path)
        init_sha256 = sha256_path(config.init_path)
    head = ProjectionHead(num_layers=config.projection_layers, output_dim=config.projection_dim)
    head.build((None, backbone.embedding_dim))
    return SimCLRNetworks(backbone, head), init_sha256


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
