"""The two layers that make a ResNet a BiT ResNetV2: weight-standardised convolution and GroupNorm."""
from __future__ import annotations

import keras
from keras import ops

from medfound.models.configs import GROUPS

WS_EPSILON = 1e-10  # BiT's epsilon inside the weight standardisation.
GN_EPSILON = 1e-5  # BiT's GroupNorm epsilon (Keras' default, 1e-3, would change the outputs).


def standardize_kernel(kernel, epsilon: float = WS_EPSILON):
    """Standardises a conv kernel to zero mean, unit variance over (H, W, in-channels), per filter."""
    mean = ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
    var = ops.var(kernel, axis=(0, 1, 2), keepdims=True)
    return (kernel - mean) / ops.sqrt(var + epsilon)


@keras.saving.register_keras_serializable(package="medfound")
class StandardizedConv2D(keras.layers.Conv2D):
    """Conv2D whose kernel is standardised on every call (Qiao et al. 2019), as BiT trains it.

    BiT's convolutions have no bias and VALID padding (padding is added explicitly), so those are
    the defaults. With ``standardize=False`` the kernel is used as stored: that is how an exported
    inference graph runs once the standardisation has been folded into the weights.
    """

    def __init__(self, filters: int, kernel_size, epsilon: float = WS_EPSILON,
                 standardize: bool = True, **kwargs):
        kwargs.setdefault("padding", "valid")
        kwargs.setdefault("use_bias", False)
        super().__init__(filters, kernel_size, **kwargs)
        self.epsilon = epsilon
        self.standardize = standardize

    def convolution_op(self, inputs, kernel):
        if self.standardize:
            # Standardise in float32 even under a mixed-precision policy: variances of small
            # kernels are too fine for bfloat16.
            kernel = ops.cast(standardize_kernel(ops.cast(kernel, "float32"), self.epsilon),
                              inputs.dtype)
        return super().convolution_op(inputs, kernel)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(epsilon=self.epsilon, standardize=self.standardize)
        return config


def group_norm(name: str) -> keras.layers.GroupNormalization:
    """BiT's GroupNorm: 32 groups, epsilon 1e-5, learned scale and offset."""
    return keras.layers.GroupNormalization(groups=GROUPS, epsilon=GN_EPSILON, name=name)
