"""The networks and optimizer of a pretraining run: a BiT backbone (optionally BiT-initialised)
and the self-supervised method's own networks (heads, predictor, target network, queue)."""
from __future__ import annotations

import dataclasses

import keras

from medfound.models.bit import BiTBackbone, build_backbone
from medfound.optim.factory import make_optimizer
from medfound.optim.schedules import scale_learning_rate
from medfound.pretrain.config import PretrainConfig
from medfound.ssl.methods import Method, get_method


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

    def set_dtype_policy(self, policy: str) -> None:
        """Computes every layer of these networks in ``policy`` ('float32', 'mixed_bfloat16',
        'mixed_float16'); Keras' global policy is left alone, so models built elsewhere in the
        same process (an evaluation, another run) are unaffected. Variables stay float32 under
        every policy, so checkpoints do not depend on it."""
        for item in self.checkpoint_items().values():
            if isinstance(item, keras.layers.Layer):
                for layer in item._flatten_layers(include_self=True, recursive=True):
                    layer.dtype_policy = policy


@dataclasses.dataclass(frozen=True)
class InitRecord:
    """Where a run's starting weights came from, as its run.json records it."""

    kind: str = "random"  # 'random', 'bit-s' or 'bit-m': the BiT start of the lineage
    path: str | None = None
    sha256: str | None = None


def build_networks(config: PretrainConfig) -> tuple[PretrainNetworks, InitRecord]:
    """Builds the backbone and the method's networks (inside the strategy scope); returns them
    and where the starting weights came from (``config.init``: any backbone spec)."""
    def make_backbone() -> BiTBackbone:
        return build_backbone(config.arch, units=config.units, width=config.width)

    backbone = make_backbone()
    record = InitRecord()
    if config.init != "random":
        record = init_from(backbone, config.init)
    method = get_method(config.method, config.method_settings())
    method.build(backbone, make_backbone)
    return PretrainNetworks(backbone, method), record


# Read only by ``pre_logits`` (never by the embedding pretraining trains): REMEDIS modules lack it.
OPTIONAL_INIT_LAYERS = frozenset({"group_norm"})


def unmatched_layers(backbone: BiTBackbone, source_names: set[str]) -> list[str]:
    """The backbone's layers with weights that a source holding ``source_names`` cannot fill
    (the optional final GroupNorm aside): a start from them would silently stay random."""
    return [layer.name for layer in backbone.layers if layer.weights
            and layer.name not in source_names and layer.name not in OPTIONAL_INIT_LAYERS]


def init_from(backbone: BiTBackbone, spec: str) -> InitRecord:
    """Copies the weights ``spec`` names (``medfound.load``) into ``backbone``, layer by layer
    by name; the architecture must be the same. Only the final GroupNorm may be missing from the
    source (a REMEDIS module's form); any other layer left unfilled is refused, naming it."""
    from medfound.resolve import BackboneError, load

    source = load(spec)
    if (source.spec.units, source.spec.width) != (backbone.spec.units, backbone.spec.width):
        raise BackboneError(
            f"init {spec}: a {source.arch} backbone (units {list(source.spec.units)}, width "
            f"{source.spec.width:g}) but the run's architecture is {backbone.arch} (units "
            f"{list(backbone.spec.units)}, width {backbone.spec.width:g}); pass the matching --arch")
    layers = {layer.name: layer for layer in source.layers if layer.weights}
    missing = unmatched_layers(backbone, set(layers))
    if missing:
        raise BackboneError(f"init {spec}: no weights for {len(missing)} layer(s) of the "
                            f"{backbone.arch} backbone ({', '.join(missing[:3])}"
                            f"{', ...' if len(missing) > 3 else ''}); it would start partly random")
    for layer in backbone.layers:
        if layer.weights and layer.name in layers:
            layer.set_weights(layers[layer.name].get_weights())
    info = source.source
    if info.init not in ("random", "bit-s", "bit-m"):
        raise BackboneError(f"init {spec}: does not record whether it starts from BiT-S or "
                            "BiT-M; say it as bit-s:PATH or bit-m:PATH")
    return InitRecord(info.init, info.path or spec, info.sha256)


def build_optimizer(config: PretrainConfig) -> keras.optimizers.Optimizer:
    """LARS (default), SGD-momentum or AdamW on a warm-up + cosine schedule of the scaled rate,
    with the configured weight decay (``medfound.optim.make_optimizer``)."""
    return make_optimizer(config.optimizer, scale_learning_rate(config.learning_rate, config.batch_size,
                                                                config.lr_scaling),
                          config.steps, warmup_fraction=config.warmup_fraction, momentum=config.momentum,
                          weight_decay=config.weight_decay, loss_scale=config.precision == "mixed_float16")
