"""The one input contract of every medfound model: float images (B, H, W, 3) on the [0, 1] scale.

The exported hub graph checks it in TensorFlow (``export/hub_module.check_images``); the native
Keras backbone checks every batch with ``enforce_contract`` below (concrete arrays on every
backend, TensorFlow graphs in-graph), with the same bounds and advice.
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


def check_dtype(name: str) -> None:
    """Raises ``ImageInputError`` unless ``name`` (a NumPy or Keras dtype name) is a float type."""
    if name == "bool" or name.startswith(("int", "uint")):
        raise ImageInputError(
            f"images have dtype {name}; medfound models take float32 in [0, 1]: pass "
            "images.astype('float32') / 255 for 8-bit (or / 65535 for 16-bit) pixels")
    if not name.startswith(("float", "bfloat")):
        raise ImageInputError(f"images have dtype {name}; pass float32 in [0, 1]")


def check_array(images) -> None:
    """Raises ``ImageInputError`` for integer dtypes, NaN, or values off the [0, 1] scale."""
    array = np.asarray(images)
    check_dtype(str(array.dtype))
    if array.size == 0:
        return
    has_nan = bool(np.isnan(array).any())
    check_stats(has_nan, *((0.0, 0.0) if has_nan else (float(array.min()), float(array.max()))))


def enforce_contract(inputs):
    """Checks a batch on whatever call path it arrives, and returns what the model should use.

    Concrete batches (NumPy, eager TensorFlow, JAX outside ``jit``, PyTorch) are checked now,
    with device-side reductions for backend tensors (three scalars cross to the host, not the
    batch). Symbolic TensorFlow tensors (``tf.function``, ``model.predict`` on the TensorFlow
    backend) get in-graph assertions, as the exported module has. Keras' own symbolic inputs
    and JAX tracers carry no values and pass unchanged: JAX cannot stop a ``jit`` program.
    """
    import keras

    if isinstance(inputs, np.ndarray):
        check_array(inputs)
        return inputs
    if isinstance(inputs, keras.KerasTensor) or not hasattr(inputs, "dtype"):
        return inputs
    check_dtype(keras.backend.standardize_dtype(inputs.dtype))
    if keras.backend.backend() == "tensorflow":
        from medfound.models.graph_guard import guard_tensorflow

        return guard_tensorflow(inputs)
    try:
        ops = keras.ops
        stats = ops.convert_to_numpy(ops.stack([ops.cast(ops.any(ops.isnan(inputs)), "float32"),
                                                ops.cast(ops.min(inputs), "float32"),
                                                ops.cast(ops.max(inputs), "float32")]))
    except (TypeError, ValueError, NotImplementedError, RuntimeError, AttributeError):
        return inputs  # a tracer: no values to read
    check_stats(bool(stats[0]), float(stats[1]), float(stats[2]))
    return inputs


def check_stats(has_nan: bool, low: float, high: float) -> None:
    """The NaN and range checks of ``check_array`` from a batch's summary."""
    if has_nan:
        raise ImageInputError("images contain NaN; fix or drop those images first")
    if high > HIGH_LIMIT:
        raise ImageInputError(f"images must be float in [0, 1] but reach {high:g}; {ABOVE_ADVICE}")
    if low < LOW_LIMIT:
        raise ImageInputError(f"images must be float in [0, 1] but go down to {low:g}; "
                              f"{BELOW_ADVICE}")
