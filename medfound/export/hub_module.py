"""The TF2 SavedModel a REMEDIS module is: a drop-in replacement for the PhysioNet files.

``hub.load(path)(images)`` takes float32 images (B, H, W, 3) in [0, 1] and returns the final
feature map (B, H/32, W/32, 2048 x width), so ``reduce_mean(out, axis=[-3, -2])`` is exactly the
pooled ``pre_logits``. The object follows the reusable SavedModel API (``variables``,
``trainable_variables``, ``regularization_losses``, ``__call__(images, training=False)``), so
``hub.KerasLayer(path, trainable=True)`` and ``keras.layers.TFSMLayer(path)`` can fine-tune it.
"""
from __future__ import annotations

import tensorflow as tf

from medfound.models.bit import BiTBackbone
from medfound.models.configs import MIN_IMAGE_SIZE
from medfound.models.inference import fold

SERVING_OUTPUTS = ("feature_map", "pre_logits", "block1", "block2", "block3", "block4")
_ANY_IMAGES = tf.TensorSpec(shape=None, dtype=tf.float32, name="images")
_BATCH_IMAGES = tf.TensorSpec(shape=[None, None, None, None], dtype=tf.float32, name="images")


def check_images(images: tf.Tensor) -> tf.Tensor:
    """Asserts in-graph that ``images`` is a (B, H, W, 3) float batch in [0, 1] without NaN.

    Each failure raises ``InvalidArgumentError`` whose message says what to do. The shape checks
    read a padded copy of the shape, and the checked tensor passes through a ``tf.cond``, so that
    static shape inference on a wrong input cannot fail with a cryptic error before the asserts run.
    Returns the images with static shape (None, None, None, 3).
    """
    rank = tf.rank(images)
    dims = tf.concat([tf.shape(images), tf.zeros([4], tf.int32)], axis=0)  # safe for any rank
    checks = [
        tf.debugging.Assert(
            tf.equal(rank, 4),
            ["REMEDIS module input must be a 4-D batch (batch, height, width, 3); for a single "
             "image add a batch axis, e.g. images[tf.newaxis]. Got rank", rank]),
        tf.debugging.Assert(
            tf.logical_or(tf.not_equal(rank, 4), tf.equal(dims[3], 3)),
            ["REMEDIS module input must have 3 (RGB) channels; for grayscale X-rays use "
             "tf.image.grayscale_to_rgb (or tile the channel 3 times), drop an alpha channel "
             "with images[..., :3]. Got channels", dims[3]]),
        tf.debugging.Assert(
            tf.logical_or(tf.not_equal(rank, 4), tf.minimum(dims[1], dims[2]) >= MIN_IMAGE_SIZE),
            [f"REMEDIS module input height and width must be >= {MIN_IMAGE_SIZE} pixels; resize "
             "with tf.image.resize (448x448 for cxr, 224x224 for path modules). Got", dims[1:3]]),
    ]
    with tf.control_dependencies(checks):
        finite = tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(tf.math.is_nan(images))),
            ["REMEDIS module input contains NaN; fix or drop those images first"])
    with tf.control_dependencies([finite]):
        low, high = tf.reduce_min(images), tf.reduce_max(images)
        in_range = [
            tf.debugging.Assert(
                low >= 0.0,
                ["REMEDIS module input must be float32 in [0, 1] but has negative values; do not "
                 "mean/std-normalise (the module scales to BiT's [-1, 1] itself): pass pixels / "
                 "255 for 8-bit images, or clip with tf.clip_by_value(x, 0, 1). Got min", low,
                 "max", high]),
            tf.debugging.Assert(
                high <= 1.0,
                ["REMEDIS module input must be float32 in [0, 1] but has values above 1; if your "
                 "pixels are 0-255, divide by 255.0 first. Got min", low, "max", high]),
        ]
    with tf.control_dependencies(in_range):
        valid = tf.logical_and(tf.equal(rank, 4), tf.equal(dims[3], 3))
        # Never taken with a bad input (the asserts fail first); it only hides the input's static
        # shape from the layers below, whose own shape errors would be unhelpful.
        images = tf.cond(valid, lambda: tf.identity(images),
                         lambda: tf.zeros([1, MIN_IMAGE_SIZE, MIN_IMAGE_SIZE, 3]))
    return tf.ensure_shape(images, [None, None, None, 3])


class RemedisModule(tf.Module):
    """A reusable SavedModel around the folded (inference-form) BiT backbone.

    Holds the folded backbone's variables as lists (the reusable SavedModel API), the metadata as
    an asset and a ``metadata_json()`` function, ``__call__`` / ``serve`` (feature map) and the
    ``serving_default`` signature (feature map, pooled ``pre_logits``, block outputs by name).
    """

    # The reusable SavedModel API stores these as plain list attributes; shadow tf.Module's
    # properties of the same names so they can be assigned (and saved) as such.
    variables = None
    trainable_variables = None
    regularization_losses = None

    def __init__(self, backbone: BiTBackbone, metadata_json: str, metadata_file: str):
        super().__init__(name="remedis_module")
        folded = fold(backbone)
        # A plain closure is not tracked, so the Keras model is not saved as a Keras object:
        # the SavedModel holds only the variables below and the traced functions.
        self._forward = lambda images: folded(images, training=False)
        self.variables = [v.value for v in folded.weights]
        self.trainable_variables = [v.value for v in folded.trainable_weights]
        self.regularization_losses = []
        self.metadata_file = tf.saved_model.Asset(metadata_file)
        self._metadata_json = metadata_json

    def _features(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._forward(check_images(images))

    @tf.function(autograph=False)
    def __call__(self, images, training=False):
        """Images (B, H, W, 3) in [0, 1] -> final feature map (B, H/32, W/32, channels).

        ``training`` is part of the reusable SavedModel API; BiT has no batch statistics or
        dropout, so both modes compute the same function.
        """
        del training
        return self._features(images)["feature_map"]

    @tf.function(input_signature=[_ANY_IMAGES], autograph=False)
    def serve(self, images):
        """Keras 3 ``TFSMLayer`` endpoint: the same as ``__call__`` at inference."""
        return self._features(images)["feature_map"]

    @tf.function(input_signature=[_BATCH_IMAGES], autograph=False)
    def serving_default(self, images):
        """Named outputs: the feature map, the pooled embedding and the four block outputs."""
        features = self._features(images)
        return {key: features[key] for key in SERVING_OUTPUTS}

    @tf.function(input_signature=[], autograph=False)
    def metadata_json(self):
        """The module metadata as a JSON string (also in ``assets/medfound_module.json``)."""
        return tf.constant(self._metadata_json)

    def trace(self) -> None:
        """Traces ``__call__`` for training=True and False with dynamic batch, size and rank."""
        for training in (False, True):
            self.__call__.get_concrete_function(_ANY_IMAGES, training=training)
