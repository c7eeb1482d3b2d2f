"""The one input contract of every medfound model: float images (B, H, W, 3) on the [0, 1] scale.

The exported hub graph checks it in TensorFlow (``export/hub_module.check_images``); the native
Keras backbone checks concrete arrays with ``check_array`` below, with the same bounds and advice.
Values a little outside [0, 1] come from resampling filters (bicubic or Lanczos overshoot) and
are accepted; beyond the bounds the input is on another scale (0-255, [-1, 1], mean/std).
"""
from __future__ import annotations

import numpy as np

LOW_LIMIT, HIGH_LIMIT = -0.5, 1.5
ABOVE_ADVICE = "if your pixels are 0-255, divide by 255.0 first"
BELOW_ADVICE = ("do not mean/std-normalise or scale to [-1, 1] (the model does its own scaling): "
                "pass pixels / 255 for 8-bit images, or clip with tf.clip_by_value(x, 0, 1)")


class ImageInputError(ValueError):
    """Images that break the input contract; the message says what to pass instead."""


def check_array(images) -> None:
    """Raises ``ImageInputError`` for integer dtypes, NaN, or values off the [0, 1] scale."""
    array = np.asarray(images)
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
        raise ImageInputError(
            f"images have dtype {array.dtype}; medfound models take float32 in [0, 1]: pass "
            "images.astype('float32') / 255 for 8-bit (or / 65535 for 16-bit) pixels")
    if not np.issubdtype(array.dtype, np.floating):
        raise ImageInputError(f"images have dtype {array.dtype}; pass float32 in [0, 1]")
    if array.size == 0:
        return
    if np.isnan(array).any():
        raise ImageInputError("images contain NaN; fix or drop those images first")
    low, high = float(array.min()), float(array.max())
    if high > HIGH_LIMIT:
        raise ImageInputError(f"images must be float in [0, 1] but reach {high:g}; {ABOVE_ADVICE}")
    if low < LOW_LIMIT:
        raise ImageInputError(f"images must be float in [0, 1] but go down to {low:g}; "
                              f"{BELOW_ADVICE}")
