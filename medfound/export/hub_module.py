"""The TF2 SavedModel a REMEDIS module is: built like the PhysioNet files, so a drop-in for them.

What the real files are (MODEL_CARD.md has the evidence): a reusable SavedModel whose
``__call__(images)`` takes float32 (B, H, W, 3) and returns the **raw block4 map**
(B, H/32, W/32, 2048 x width), with no final GroupNorm; variables named by their BiT paths
(``block1/unit01/a/group_norm/gamma:0``); weight standardisation in the graph; one signature,
``serving_default``, with one output. So ``reduce_mean(module(images), axis=[-3, -2])`` is the
embedding, ``hub.KerasLayer(path, trainable=True)`` fine-tunes the same parametrisation, and
positional clients (tf2onnx, ONNX runtimes) read the map as output 0. The richer outputs
(stem, block1..block4, pooled embedding) are the ``features`` function, not a signature.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from medfound.export.hub_graph import forward
from medfound.models.bit_names import named_tensors, variable_names
from medfound.models.configs import MIN_IMAGE_SIZE
from medfound.models.input_check import ABOVE_ADVICE, BELOW_ADVICE, HIGH_LIMIT, LOW_LIMIT
from medfound.models.layers import check_statistics

SIGNATURE_OUTPUT = "output_1"  # the key a Keras-2 model's serving_default gives its one output
FEATURE_OUTPUTS = ("stem", "block1", "block2", "block3", "block4", "embedding")
_IMAGES = tf.TensorSpec(shape=[None, None, None, 3], dtype=tf.float32, name="images")
_ANY_IMAGES = tf.TensorSpec(shape=None, dtype=tf.float32, name="images")


def check_images(images: tf.Tensor) -> tf.Tensor:
    """Asserts in-graph that ``images`` is a (B, H, W, 3) float batch on the [0, 1] scale, no NaN.

    Each failure raises ``InvalidArgumentError`` whose message says what to do. RGB batches pass
    through unchanged (an identity after the asserts), so their static shape is kept.
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
                low >= LOW_LIMIT,
                ["REMEDIS module input must be float32 in [0, 1] but has values far below 0; "
                 f"{BELOW_ADVICE}. Got min", low, "max", high]),
            tf.debugging.Assert(
                high <= HIGH_LIMIT,
                ["REMEDIS module input must be float32 in [0, 1] but has values far above 1; "
                 f"{ABOVE_ADVICE}. Got min", low, "max", high]),
        ]
    with tf.control_dependencies(in_range):
        if images.shape.rank == 4 and images.shape[-1] == 3:
            return tf.identity(images)  # the static shape flows on to the output
        # Only inputs of another rank or channel count get here, and they fail the asserts
        # first; the never-taken branch hides their static shape from the convolutions, whose
        # own shape errors (raised before any assert could run) would be unhelpful.
        valid = tf.logical_and(tf.equal(rank, 4), tf.equal(dims[3], 3))
        return tf.cond(valid, lambda: tf.identity(images),
                       lambda: tf.zeros([1, MIN_IMAGE_SIZE, MIN_IMAGE_SIZE, 3]))


def initial_values(backbone, *, fold: bool = False) -> dict:
    """{BiT path: initial value} of the module's variables.

    On the TensorFlow backend these are the backbone's own tensors (a ``tf.Variable`` built
    from one shares its buffer, copy-on-write), so the module costs no second copy of the
    weights, and ``fold`` adds only the standardised kernels; exporting r152x2 held the Keras
    weights, a NumPy copy and the module's copy at once. Other backends get NumPy copies.
    """
    def own(value):
        if isinstance(value, tf.Variable):
            return value.read_value()
        return value if tf.is_tensor(value) else keras.ops.convert_to_numpy(value)

    return {name: own(value) for name, value in named_tensors(backbone, fold)}


class RemedisModule(tf.Module):
    """A reusable SavedModel of a BiT backbone's variables under their BiT paths.

    ``fold=True`` stores standardised kernels and drops the standardisation from the graph (the
    faster inference form, recorded in the metadata): such a module lists no trainable
    variables and refuses ``training=True``, so nothing can fine-tune a different
    parametrisation by mistake.

    ``jit_compile=True`` runs the forward pass (after the input checks, which XLA would drop)
    as one XLA-compiled function, so GroupNorm's and the standardisation's elementwise passes
    fuse; the SavedModel marks that function must-compile, so a TensorFlow runtime without the
    XLA JIT cannot run it (pip TensorFlow has it, CPU and GPU). ``group_norm_statistics``
    picks GroupNorm's variance formulation (``layers.GN_STATISTICS``). Both go in the metadata.
    """

    # The reusable SavedModel API stores these as plain list attributes; shadow tf.Module's
    # properties of the same names so they can be assigned (and saved) as such.
    variables = None
    trainable_variables = None
    regularization_losses = None

    def __init__(self, backbone, metadata_json: str, metadata_file: str, *, fold: bool = False,
                 jit_compile: bool = False, group_norm_statistics: str = "two_pass"):
        super().__init__(name="remedis_module")
        values = initial_values(backbone, fold=fold)
        names = variable_names(backbone.spec)
        self._params = {name: tf.Variable(values.pop(name), name=name, trainable=not fold)
                        for name in names}
        self._units = tuple(backbone.spec.units)
        self._standardize = not fold
        self._input_scaling = backbone.input_scaling
        self._statistics = check_statistics(group_norm_statistics)
        self._forward = tf.function(self._raw_blocks, autograph=False, jit_compile=True) \
            if jit_compile else self._raw_blocks
        self.variables = [self._params[name] for name in names]
        self.trainable_variables = [] if fold else list(self.variables)
        self.regularization_losses = []
        self.metadata_file = tf.saved_model.Asset(metadata_file)
        self._metadata_json = metadata_json

    def _raw_blocks(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return forward(images, self._params, self._units, standardize=self._standardize,
                       input_scaling=self._input_scaling, statistics=self._statistics)

    def _blocks(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._forward(check_images(images))

    @tf.function(autograph=False)
    def __call__(self, images, training=False):
        """Images (B, H, W, 3) in [0, 1] -> raw block4 map (B, H/32, W/32, channels).

        ``training`` is part of the reusable SavedModel API; BiT has no batch statistics or
        dropout, so both modes compute the same function (a folded module refuses training).
        """
        if training and not self._standardize:
            tf.debugging.Assert(False, [
                "this REMEDIS module was exported in the folded inference form (--fold), which "
                "cannot be fine-tuned; export it without --fold, or use medfound.load(path)"])
        return self._blocks(images)["block4"]

    @tf.function(input_signature=[_IMAGES], autograph=False)
    def serving_default(self, images):
        """The one signature: {'output_1': the block4 map}."""
        return {SIGNATURE_OUTPUT: self._blocks(images)["block4"]}

    @tf.function(input_signature=[_ANY_IMAGES], autograph=False)
    def serve(self, images):
        """Keras 3 ``TFSMLayer`` endpoint (``call_endpoint='serve'``): the block4 map."""
        return self._blocks(images)["block4"]

    @tf.function(input_signature=[_IMAGES], autograph=False)
    def features(self, images):
        """Every intermediate output by name, and ``embedding``: block4 averaged over space."""
        blocks = self._blocks(images)
        blocks["embedding"] = tf.reduce_mean(blocks["block4"], axis=[1, 2])
        return {key: blocks[key] for key in FEATURE_OUTPUTS}

    @tf.function(input_signature=[], autograph=False)
    def metadata_json(self):
        """The module metadata as a JSON string (also in ``assets/medfound_module.json``)."""
        return tf.constant(self._metadata_json)

    def trace(self) -> None:
        """Traces ``__call__`` for both ``training`` values: first for RGB batches of any size
        (static shapes flow through), then for any rank (so wrong inputs reach the checks)."""
        for spec in (_IMAGES, _ANY_IMAGES):
            for training in (False, True):
                self.__call__.get_concrete_function(spec, training=training)
