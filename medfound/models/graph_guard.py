"""The input contract inside TensorFlow graphs, for the native backbone on the TensorFlow backend.

A batch that reaches the model as a symbolic ``tf.Tensor`` (``tf.function(model)``, Keras'
``predict`` / ``fit`` steps) has no values to check in Python, so the check becomes part of the
graph, like the exported module's. TensorFlow-only by nature; ``input_check.enforce_contract``
calls it only on that backend. Under XLA the asserts compile to nothing.
"""
from __future__ import annotations

import tensorflow as tf

from medfound.models.input_check import ABOVE_ADVICE, BELOW_ADVICE, HIGH_LIMIT, LOW_LIMIT


def guard_tensorflow(images):
    """``images`` unchanged when eager (checked now) or with NaN / range asserts in its graph."""
    if not tf.is_symbolic_tensor(images):
        from medfound.models.input_check import check_stats

        check_stats(bool(tf.reduce_any(tf.math.is_nan(images))),
                    float(tf.reduce_min(images)), float(tf.reduce_max(images)))
        return images
    low, high = tf.reduce_min(images), tf.reduce_max(images)
    checks = [
        tf.debugging.Assert(tf.logical_not(tf.reduce_any(tf.math.is_nan(images))),
                            ["images contain NaN; fix or drop those images first"]),
        tf.debugging.Assert(low >= LOW_LIMIT, ["images must be float in [0, 1] but go down to",
                                               low, f"; {BELOW_ADVICE}"]),
        tf.debugging.Assert(high <= HIGH_LIMIT, ["images must be float in [0, 1] but reach",
                                                 high, f"; {ABOVE_ADVICE}"]),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(images)
