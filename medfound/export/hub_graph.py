"""BiT ResNetV2 as a plain TensorFlow function of variables named by their BiT paths.

This is the graph inside an exported hub module, built like big_transfer's ``bit_tf2`` ResnetV2
(and so like the PhysioNet REMEDIS files): variables ``root_block/standardized_conv2d/kernel``,
``block1/unit01/a/group_norm/gamma`` ..., no final GroupNorm, weight standardisation computed in
the graph (unless the kernels were folded), and the raw block4 map as output. The maths is the
native Keras ``BiTBackbone``'s, through the same helper functions. TensorFlow-only, so it
lives with the writer; the names it uses come from ``medfound.models.bit_names``.
"""
from __future__ import annotations

import tensorflow as tf

from medfound.models.bit_names import ROOT_KERNEL
from medfound.models.configs import BLOCK_STRIDES, GROUPS
from medfound.models.layers import GN_EPSILON, group_norm_nhwc, standardize_kernel

def _conv(x, kernel, stride: int, standardize: bool):
    if standardize:
        kernel = standardize_kernel(kernel)
    size = kernel.shape[0]
    if size == 1:
        return tf.nn.conv2d(x, kernel, stride, "VALID")
    if stride == 1:  # SAME pads (size // 2) on every side here, as BiT does
        return tf.nn.conv2d(x, kernel, 1, "SAME")
    pad = size // 2
    x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    return tf.nn.conv2d(x, kernel, stride, "VALID")


def forward(images: tf.Tensor, params: dict, units: tuple[int, ...], *, standardize: bool = True,
            input_scaling: str = "bit", statistics: str = "two_pass") -> dict[str, tf.Tensor]:
    """Images (B, H, W, 3) -> {'stem', 'block1'..'block4'} from ``params`` {BiT path: variable};
    ``statistics``: GroupNorm's variance formulation (``layers.GN_STATISTICS``)."""
    x = images * 2.0 - 1.0 if input_scaling == "bit" else images
    x = tf.pad(x, [[0, 0], [3, 3], [3, 3], [0, 0]])
    x = tf.nn.conv2d(x, standardize_kernel(params[ROOT_KERNEL]) if standardize
                     else params[ROOT_KERNEL], 2, "VALID")
    x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    x = tf.nn.max_pool2d(x, 3, 2, "VALID")
    features = {"stem": x}
    for block, (n_units, block_stride) in enumerate(zip(units, BLOCK_STRIDES)):
        for unit in range(n_units):
            scope = f"block{block + 1}/unit{unit + 1:02d}"
            stride = block_stride if unit == 0 else 1

            def norm_relu(y, part):
                return tf.nn.relu(group_norm_nhwc(y, params[f"{scope}/{part}/group_norm/gamma"],
                                                  params[f"{scope}/{part}/group_norm/beta"],
                                                  GROUPS, GN_EPSILON, statistics=statistics))

            def conv(y, part, s=1):
                return _conv(y, params[f"{scope}/{part}/standardized_conv2d/kernel"], s,
                             standardize)

            preact = norm_relu(x, "a")
            proj = f"{scope}/a/proj/standardized_conv2d/kernel"
            shortcut = _conv(preact, params[proj], stride, standardize) if proj in params else x
            y = conv(preact, "a")
            y = conv(norm_relu(y, "b"), "b", stride)
            y = conv(norm_relu(y, "c"), "c")
            x = y + shortcut
        features[f"block{block + 1}"] = x
    return features
