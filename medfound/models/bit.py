"""BiT ResNetV2 (Kolesnikov et al. 2020) in Keras 3, matching the public BiT checkpoints exactly.

Pre-activation bottleneck units with GroupNorm and weight-standardised convolutions; the stride
sits on the 3x3 convolution and the projection shortcut reads the pre-activated input. Layer names
follow the BiT checkpoint keys, so weight import is a name lookup (see ``bit_weights.py``).
"""
from __future__ import annotations

import keras
import numpy as np

from medfound.models.configs import BLOCK_STRIDES, MIN_IMAGE_SIZE, ArchSpec, get_arch
from medfound.models.input_check import check_array, enforce_contract
from medfound.models.layers import StandardizedConv2D, group_norm

INPUT_SCALINGS = ("bit", "none")  # 'bit': [0, 1] -> [-1, 1] inside the model; 'none': as given


def _layer(bit_path: str) -> str:
    """Keras layer name for a BiT variable scope ('block1/unit01/a/group_norm')."""
    return bit_path.replace("/", "_")


def _bottleneck_unit(x, filters: int, stride: int, scope: str, conv, norm):
    """One pre-activation bottleneck unit; returns its output (no activation, as in ResNetV2)."""
    preact = norm(_layer(f"{scope}/a/group_norm"))(x)
    preact = keras.layers.ReLU(name=_layer(f"{scope}/a/relu"))(preact)
    shortcut = x
    if stride != 1 or x.shape[-1] != 4 * filters:
        shortcut = conv(4 * filters, 1, f"{scope}/a/proj/standardized_conv2d", stride)(preact)
    y = conv(filters, 1, f"{scope}/a/standardized_conv2d")(preact)
    y = norm(_layer(f"{scope}/b/group_norm"))(y)
    y = keras.layers.ReLU(name=_layer(f"{scope}/b/relu"))(y)
    if stride == 1:  # SAME pads 1 on every side here: BiT's padding, without a padded copy
        y = conv(filters, 3, f"{scope}/b/standardized_conv2d", padding="same")(y)
    else:  # SAME would pad (0, 1) for a stride of 2 where BiT pads (1, 1)
        y = keras.layers.ZeroPadding2D(1, name=_layer(f"{scope}/b/pad"))(y)
        y = conv(filters, 3, f"{scope}/b/standardized_conv2d", stride)(y)
    y = norm(_layer(f"{scope}/c/group_norm"))(y)
    y = keras.layers.ReLU(name=_layer(f"{scope}/c/relu"))(y)
    y = conv(4 * filters, 1, f"{scope}/c/standardized_conv2d")(y)
    return keras.layers.Add(name=_layer(f"{scope}/add"))([y, shortcut])


@keras.saving.register_keras_serializable(package="medfound")
class BiTBackbone(keras.Model):
    """A BiT ResNetV2 backbone whose call returns a dict of features.

    Input: float images in [0, 1], shape (batch, H, W, 3) with H, W >= 32 (dynamic unless
    ``image_size`` is given); the model applies BiT's ``2x - 1`` scaling itself (``input_scaling=
    'none'`` feeds the images as they are, for files trained that way).
    Output keys: ``stem``, ``block1`` ... ``block4`` (raw residual outputs); ``feature_map``, the
    raw block4 map that a REMEDIS hub module returns (PhysioNet files have no final norm), and
    ``embedding``, its global average: the vector pretraining shapes and probes read.
    With ``final_norm`` (BiT's classification form, as in the BiT checkpoints) also
    ``pre_logits``, BiT's pre-head GroupNorm + ReLU + average, and ``logits`` when
    ``num_classes`` > 0 (BiT's zero-initialised head). Exported modules drop the final norm.

    ``weight_standardization=False`` builds the inference form: the convolutions use their
    kernels as stored, which must then already be standardised (see ``inference.fold``).
    ``group_norm_statistics`` picks GroupNorm's variance formulation (``layers.GN_STATISTICS``).
    """

    def __init__(self, arch: str = "r50x1", image_size: int | None = None, num_classes: int = 0,
                 units: tuple[int, ...] | None = None, width: float | None = None,
                 weight_standardization: bool = True, final_norm: bool = True,
                 input_scaling: str = "bit", group_norm_statistics: str = "two_pass", **kwargs):
        base = get_arch(arch)
        if input_scaling not in INPUT_SCALINGS:
            raise ValueError(f"input_scaling must be one of {INPUT_SCALINGS}, got {input_scaling!r}")
        if num_classes and not final_norm:
            raise ValueError("a classification head (num_classes) needs final_norm=True")
        spec = base
        if units is not None or width is not None:
            spec = ArchSpec(name=base.name, units=tuple(units or base.units),
                            width=width if width is not None else base.width,
                            test_only=base.test_only)
        if image_size is not None and image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE} pixels, got {image_size}")

        def conv(filters: int, kernel: int, bit_path: str, stride: int = 1,
                 padding: str = "valid") -> StandardizedConv2D:
            return StandardizedConv2D(filters, kernel, strides=stride, padding=padding,
                                      name=_layer(bit_path), standardize=weight_standardization)

        def norm(name: str):
            return group_norm(name, group_norm_statistics)

        inputs = keras.Input((image_size, image_size, 3), name="images")
        x = inputs
        if input_scaling == "bit":
            x = keras.layers.Rescaling(2.0, offset=-1.0, name="scale_to_bit_range")(x)
        x = keras.layers.ZeroPadding2D(3, name="root_block_pad")(x)
        x = conv(spec.root_filters, 7, "root_block/standardized_conv2d", stride=2)(x)
        x = keras.layers.ZeroPadding2D(1, name="root_block_pool_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="root_block_pool")(x)
        features = {"stem": x}
        for block, (n_units, block_stride) in enumerate(zip(spec.units, BLOCK_STRIDES)):
            for unit in range(n_units):
                x = _bottleneck_unit(x, spec.block_filters(block),
                                     block_stride if unit == 0 else 1,
                                     f"block{block + 1}/unit{unit + 1:02d}", conv, norm)
            features[f"block{block + 1}"] = x
        features["feature_map"] = x
        features["embedding"] = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
        if final_norm:
            x = norm("group_norm")(x)
            x = keras.layers.ReLU(name="pre_head_relu")(x)
            features["pre_logits"] = keras.layers.GlobalAveragePooling2D(name="pre_logits")(x)
        if num_classes:
            features["logits"] = keras.layers.Dense(
                num_classes, kernel_initializer="zeros", name="head_conv2d")(features["pre_logits"])
        kwargs.setdefault("name", f"bit_{spec.name}")
        super().__init__(inputs=inputs, outputs=features, **kwargs)
        self.arch = base.name
        self.spec = spec
        self.image_size = image_size
        self.num_classes = num_classes
        self.weight_standardization = weight_standardization
        self.final_norm = final_norm
        self.input_scaling = input_scaling
        self.group_norm_statistics = group_norm_statistics
        self._units_override = units
        self._width_override = width
        self.source = None  # set by medfound.load: a ModuleInfo saying what was loaded

    def __call__(self, inputs, *args, **kwargs):
        """Calls the model; every batch is held to the input contract first (dtype, NaN, the
        [0, 1] scale), concrete arrays at once and TensorFlow graphs in-graph, as the hub module
        checks them, so a 0-255 or uint8 batch fails instead of embedding wrong."""
        return super().__call__(enforce_contract(inputs), *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        """``keras.Model.predict`` with the whole array checked first (its batches reach the
        model inside a compiled step)."""
        if isinstance(x, np.ndarray):
            check_array(x)
        return super().predict(x, *args, **kwargs)

    @property
    def embedding_dim(self) -> int:
        """Length of ``embedding`` (and channels of ``feature_map``): 2048 x width."""
        return self.spec.embedding_dim

    def get_config(self) -> dict:
        return {
            "arch": self.arch,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "units": list(self._units_override) if self._units_override else None,
            "width": self._width_override,
            "weight_standardization": self.weight_standardization,
            "final_norm": self.final_norm,
            "input_scaling": self.input_scaling,
            "name": self.name,
            "trainable": self.trainable,
            # only when not the default: files of the default form stay loadable by older code
            **({"group_norm_statistics": self.group_norm_statistics}
               if self.group_norm_statistics != "two_pass" else {}),
        }

    @classmethod
    def from_config(cls, config: dict) -> "BiTBackbone":
        return cls(**config)


def build_backbone(arch: str = "r50x1", *, image_size: int | None = None, num_classes: int = 0,
                   units: tuple[int, ...] | None = None, width: float | None = None,
                   final_norm: bool = True, input_scaling: str = "bit",
                   group_norm_statistics: str = "two_pass",
                   name: str | None = None) -> BiTBackbone:
    """Builds a BiT ResNetV2 backbone ('r50x1', 'r152x2', ..., or 'tiny'/'small' for tests).

    ``units`` and ``width`` override the named architecture (for small test configurations).
    Weights are randomly initialised; load BiT weights with ``medfound.load_bit_weights``.
    ``final_norm=False`` builds the REMEDIS-module form (no pre-head GroupNorm).
    """
    kwargs = {"name": name} if name else {}
    return BiTBackbone(arch, image_size=image_size, num_classes=num_classes, units=units,
                       width=width, final_norm=final_norm, input_scaling=input_scaling,
                       group_norm_statistics=group_norm_statistics, **kwargs)


def module_form(backbone: BiTBackbone) -> BiTBackbone:
    """The same backbone without BiT's pre-head GroupNorm (or head): what REMEDIS modules hold.

    Weights are copied layer by layer by name; a backbone already in that form is returned as is.
    """
    if not backbone.final_norm:
        return backbone
    config = backbone.get_config()
    config.update(final_norm=False, num_classes=0)
    target = BiTBackbone.from_config(config)
    source_layers = {layer.name: layer for layer in backbone.layers}
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source_layers[layer.name].get_weights())
    return target
