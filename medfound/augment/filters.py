"""Image filters in core TF: Gaussian blur (separable convolution) and histogram equalisation.

The random versions follow the ``op(image, seed, ...)`` contract of every augmentation op;
the deterministic ``gaussian_blur`` and ``equalize_histogram`` are what they apply.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

from medfound.augment.geometry import as_float_image, check_seed, random_apply

MAX_BLUR_SIGMA = 50.0  # pixels; the kernel has 6 sigma + 1 taps, so this bounds its cost.


def check_sigma_range(sigma_range: Sequence[float]) -> tuple[float, float]:
    """Returns a valid (lo, hi) blur sigma range in pixels, or raises a ValueError."""
    lo, hi = (float(s) for s in sigma_range)
    if not 0.0 < lo <= hi <= MAX_BLUR_SIGMA:
        raise ValueError(f"blur sigma range must satisfy 0 < lo <= hi <= {MAX_BLUR_SIGMA} pixels, "
                         f"got {tuple(sigma_range)}")
    return lo, hi


def _gaussian_kernel(sigma: tf.Tensor, radius) -> tf.Tensor:
    """A normalised 1-D Gaussian of 2 * radius + 1 taps."""
    offsets = tf.cast(tf.range(-radius, radius + 1), tf.float32)
    kernel = tf.exp(-0.5 * tf.square(offsets / sigma))
    return kernel / tf.reduce_sum(kernel)


def gaussian_blur(image, sigma, radius: int | None = None) -> tf.Tensor:
    """Blurs with a separable Gaussian of ``sigma`` pixels standard deviation and radius ``radius``.

    The convolution is normalised at the borders (zero padding, divided by the blurred image of
    ones), so edges are not darkened, any image size works and the output stays in [0, 1].
    ``radius`` must be a Python int when ``sigma`` is a tensor; by default it is ceil(3 sigma).
    """
    image = as_float_image(image)
    if radius is None:
        if isinstance(sigma, tf.Tensor):
            raise ValueError("gaussian_blur needs a Python int radius when sigma is a tensor")
        radius = max(1, math.ceil(3.0 * float(sigma)))
    radius = int(radius)
    if radius < 0:
        raise ValueError(f"blur radius must be >= 0, got {radius}")
    blurred = blur_images(image[tf.newaxis], sigma, radius)[0]
    return tf.ensure_shape(tf.clip_by_value(blurred, 0.0, 1.0), image.shape)


def blur_images(images: tf.Tensor, sigma, radius) -> tf.Tensor:
    """The one Gaussian blur (augmentation and the evaluation's sharpness shift): (B, H, W, C)
    float images, channels known when traced; ``radius`` an int or an int32 tensor. Separable,
    zero-padded and divided by the blurred image of ones, so borders keep their brightness."""
    sigma = tf.maximum(tf.cast(sigma, tf.float32), 1e-3)
    kernel = _gaussian_kernel(sigma, radius)
    depth = images.shape[-1]

    def separable(x: tf.Tensor, channels: int) -> tf.Tensor:
        column = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
        row = tf.reshape(column, [1, -1, channels, 1])
        x = tf.nn.depthwise_conv2d(x, column, strides=[1, 1, 1, 1], padding="SAME")
        return tf.nn.depthwise_conv2d(x, row, strides=[1, 1, 1, 1], padding="SAME")

    weight = separable(tf.ones(tf.concat([[1], tf.shape(images)[1:3], [1]], 0)), 1)
    return separable(images, depth) / weight


def random_gaussian_blur(image, seed, sigma_range: Sequence[float] = (0.1, 2.0)) -> tf.Tensor:
    """Gaussian blur with sigma drawn uniformly from ``sigma_range`` (pixels), as in SimCLR."""
    lo, hi = check_sigma_range(sigma_range)
    image, seed = as_float_image(image), check_seed(seed)
    sigma = tf.random.stateless_uniform([], seed, minval=lo, maxval=hi)
    return gaussian_blur(image, sigma, radius=max(1, math.ceil(3.0 * hi)))


def equalize_histogram(image, bins: int = 256) -> tf.Tensor:
    """Histogram-equalises each channel: values quantised to ``bins`` levels map through the CDF.

    The darkest level present maps to 0 and the brightest to 1, so a low-contrast image is spread
    over the whole range with a nearly flat histogram. A constant channel is left unchanged.
    """
    bins = int(bins)
    if bins < 2:
        raise ValueError(f"equalisation needs at least 2 bins, got {bins}")
    image = as_float_image(image)
    channels = image.shape[-1]
    levels = tf.clip_by_value(tf.cast(tf.round(image * (bins - 1)), tf.int32), 0, bins - 1)
    index = levels + tf.range(channels, dtype=tf.int32) * bins  # one histogram per channel
    hist = tf.math.bincount(tf.reshape(index, [-1]), minlength=channels * bins,
                            maxlength=channels * bins, dtype=tf.int32)
    cdf = tf.cast(tf.cumsum(tf.reshape(hist, [channels, bins]), axis=1), tf.float32)
    total = cdf[:, -1:]
    cdf_min = tf.reduce_min(tf.where(cdf > 0, cdf, total), axis=1, keepdims=True)
    span = total - cdf_min
    lut = tf.clip_by_value((cdf - cdf_min) / tf.maximum(span, 1.0), 0.0, 1.0)
    equalized = tf.gather(tf.reshape(lut, [-1]), index)
    constant = tf.reshape(span <= 0, [channels])  # a single level: nothing to spread
    return tf.ensure_shape(tf.where(constant, image, equalized), image.shape)


def random_equalize(image, seed, prob: float = 0.5) -> tf.Tensor:
    """Histogram-equalises the image with probability ``prob``."""
    image = as_float_image(image)
    return random_apply(lambda x, _: equalize_histogram(x), image, seed, prob)
