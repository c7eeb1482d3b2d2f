"""Test fixture: a SavedModel built the way the PhysioNet REMEDIS files are, from a BiT .npz.

Written from the public facts (MODEL_CARD.md, issue 13), not from the real files: a tf-keras
(Keras 2) ``Model`` subclass in the style of big_transfer's ``bit_tf2`` ResnetV2 with ``_root``
and ``_blocks`` (no ``_pre_head``), weight standardisation computed in the graph, no final
GroupNorm, variables named by their BiT paths, the raw block4 map as output, saved with
``tf.saved_model.save``. It shares no code with medfound's exporter, so equal outputs mean the
two agree, not that one copies the other.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

BLOCK_UNITS = {"r50x1": (3, 4, 6, 3), "r152x2": (3, 8, 36, 3)}


class StandardizedConv2D(tf_keras.layers.Conv2D):
    """Conv2D whose kernel is standardised per filter on every call (bit_tf2's layer)."""

    def call(self, inputs):
        mean, var = tf.nn.moments(self.kernel, axes=[0, 1, 2], keepdims=True)
        kernel = (self.kernel - mean) / tf.sqrt(var + 1e-10)
        return tf.nn.conv2d(inputs, kernel, self.strides, self.padding.upper())


def _conv(filters, size, stride=1):
    return StandardizedConv2D(filters, size, strides=stride, use_bias=False,
                              padding="valid", name="standardized_conv2d")


def _gn():
    return tf_keras.layers.GroupNormalization(groups=32, epsilon=1e-5, name="group_norm")


class _Part(tf_keras.layers.Layer):
    """One of a unit's a/b/c parts: GroupNorm, ReLU, (padding), standardised conv; part ``a``
    also computes the projection shortcut from the pre-activation (``a/proj/...``)."""

    def __init__(self, filters, size, stride, proj=None, **kwargs):
        super().__init__(**kwargs)
        self.group_norm = _gn()
        self.size, self.stride = size, stride
        self.conv = _conv(filters, size, 1 if proj else stride)
        self.proj = _ProjConv(*proj, name="proj") if proj else None

    def call(self, x):
        pre = tf.nn.relu(self.group_norm(x))
        shortcut = self.proj(pre) if self.proj is not None else x
        if self.size > 1:
            pad = self.size // 2
            pre = tf.pad(pre, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        return self.conv(pre), shortcut


class _ProjConv(tf_keras.layers.Layer):
    def __init__(self, filters, stride, **kwargs):
        super().__init__(**kwargs)
        self.conv = _conv(filters, 1, stride)

    def call(self, x):
        return self.conv(x)


class _Unit(tf_keras.layers.Layer):
    """A pre-activation bottleneck unit, stride on the 3x3 conv, projection on the preact."""

    def __init__(self, filters, stride, project, **kwargs):
        super().__init__(**kwargs)
        self.a = _Part(filters, 1, 1, proj=(4 * filters, stride) if project else None, name="a")
        self.b = _Part(filters, 3, stride, name="b")
        self.c = _Part(4 * filters, 1, 1, name="c")

    def call(self, x):
        y, shortcut = self.a(x)
        y, _ = self.b(y)
        y, _ = self.c(y)
        return y + shortcut


class _Root(tf_keras.layers.Layer):
    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv = _conv(filters, 7, 2)

    def call(self, x):
        x = tf.pad(x, [[0, 0], [3, 3], [3, 3], [0, 0]])
        x = self.conv(x)
        x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        return tf.nn.max_pool2d(x, 3, 2, "VALID")


class _Block(tf_keras.layers.Layer):
    def __init__(self, n_units, filters, stride, **kwargs):
        super().__init__(**kwargs)
        self.units = [_Unit(filters, stride if i == 0 else 1, i == 0, name=f"unit{i + 1:02d}")
                      for i in range(n_units)]

    def call(self, x):
        for unit in self.units:
            x = unit(x)
        return x


class PhysioNetStyleResnet(tf_keras.Model):
    """bit_tf2-style ResnetV2 without a head or final norm: [0, 1] images -> raw block4."""

    def __init__(self, units, width, scale_inputs=True):
        super().__init__(name="resnet")
        self.scale_inputs = scale_inputs
        self._root = _Root(int(64 * width), name="root_block")
        self._blocks = [_Block(n, int(f * width), s, name=f"block{i + 1}")
                        for i, (n, f, s) in enumerate(zip(units, (64, 128, 256, 512),
                                                          (1, 2, 2, 2)))]

    def call(self, images):
        x = images * 2.0 - 1.0 if self.scale_inputs else images
        x = self._root(x)
        for block in self._blocks:
            x = block(x)
        return x


def variable_key(variable) -> str:
    """'block1/unit01/a/group_norm/gamma:0' -> the BiT checkpoint key 'resnet/block1/...'."""
    return "resnet/" + variable.name.split(":")[0]


def build_physionet_model(npz_path, units, width, scale_inputs=True) -> PhysioNetStyleResnet:
    """The fixture model with the weights of a BiT-format ``.npz`` (matched by name)."""
    model = PhysioNetStyleResnet(units, width, scale_inputs)
    model.call(tf.zeros([1, 64, 64, 3]))  # not model(): no "resnet/" scope on the names
    with np.load(npz_path) as data:
        arrays = {key: data[key] for key in data.files}
    for variable in model.variables:
        variable.assign(arrays[variable_key(variable)])
    return model


def write_physionet_module(npz_path, out, units, width, scale_inputs=True):
    """Writes the fixture SavedModel to ``out`` (a folder named like the REMEDIS file)."""
    model = build_physionet_model(npz_path, units, width, scale_inputs)
    model._set_inputs(tf.TensorSpec([None, None, None, 3], tf.float32))  # noqa: SLF001
    tf.saved_model.save(model, str(out))
    return out
