"""Colour augmentations (brightness, contrast, saturation, hue, grayscale) in core TF.

SimCLR-style colour distortion: one ``strength`` scales all four jitters (brightness, contrast and
saturation by 0.8 * strength, hue by 0.2 * strength), applied in a random order. On one-channel
images saturation, hue and grayscale are the identity. Every op is ``op(image, seed, ...)`` and
uses stateless random ops only.
"""
from __future__ import annotations

import math

import tensorflow as tf

from medfound.augment.geometry import as_float_image, check_probability, random_apply, split_seed

LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)  # ITU-R BT.601, as tf.image.rgb_to_grayscale


def _check_delta(name: str, delta: float, high: float | None = None) -> float:
    delta = float(delta)
    if not (delta >= 0.0 and math.isfinite(delta)) or (high is not None and delta > high):
        bound = f" and at most {high}" if high is not None else ""
        raise ValueError(f"{name} must be a finite number >= 0{bound}, got {delta}")
    return delta


def _random_factor(seed, delta: float) -> tf.Tensor:
    """A factor drawn uniformly from [max(0, 1 - delta), 1 + delta]."""
    return tf.random.stateless_uniform([], seed, minval=max(0.0, 1.0 - delta), maxval=1.0 + delta)


def to_grayscale(image) -> tf.Tensor:
    """Luminance of an RGB image repeated on three channels; one channel is returned as is."""
    image = as_float_image(image)
    if image.shape[-1] == 1:
        return image
    luma = tf.reduce_sum(image * tf.constant(LUMA_WEIGHTS, tf.float32), axis=-1, keepdims=True)
    return tf.tile(luma, [1, 1, 3])


def random_brightness(image, seed, max_delta: float) -> tf.Tensor:
    """Multiplies the image by a factor in [1 - max_delta, 1 + max_delta] (SimCLR v2 brightness)."""
    max_delta = _check_delta("brightness max_delta", max_delta)
    image = as_float_image(image)
    return tf.clip_by_value(image * _random_factor(seed, max_delta), 0.0, 1.0)


def random_contrast(image, seed, max_delta: float) -> tf.Tensor:
    """Scales each channel's spread from its mean by a factor in [1 - max_delta, 1 + max_delta]."""
    max_delta = _check_delta("contrast max_delta", max_delta)
    image = as_float_image(image)
    mean = tf.reduce_mean(image, axis=[0, 1], keepdims=True)
    return tf.clip_by_value((image - mean) * _random_factor(seed, max_delta) + mean, 0.0, 1.0)


def random_saturation(image, seed, max_delta: float) -> tf.Tensor:
    """Blends RGB with its grayscale by a factor in [1 - max_delta, 1 + max_delta] (0 = gray)."""
    max_delta = _check_delta("saturation max_delta", max_delta)
    image = as_float_image(image)
    if image.shape[-1] == 1:
        return image
    gray = to_grayscale(image)
    return tf.clip_by_value(gray + (image - gray) * _random_factor(seed, max_delta), 0.0, 1.0)


def random_hue(image, seed, max_delta: float) -> tf.Tensor:
    """Shifts the hue of an RGB image by a random [-max_delta, max_delta] turns (max 0.5)."""
    max_delta = _check_delta("hue max_delta", max_delta, high=0.5)
    image = as_float_image(image)
    if image.shape[-1] == 1:
        return image
    delta = tf.random.stateless_uniform([], seed, minval=-max_delta, maxval=max_delta)
    return tf.clip_by_value(tf.image.adjust_hue(image, delta), 0.0, 1.0)


def color_jitter(image, seed, strength: float = 1.0, random_order: bool = True) -> tf.Tensor:
    """Brightness, contrast, saturation (0.8 strength) and hue (0.2 strength) jitter, random order.

    Each jitter draws its amount from its own seed, so the order changes only how they compose.
    """
    strength = _check_delta("colour strength", strength)
    image = as_float_image(image)
    order_seed, *seeds = split_seed(seed, 5)
    ops = (
        lambda x: random_brightness(x, seeds[0], 0.8 * strength),
        lambda x: random_contrast(x, seeds[1], 0.8 * strength),
        lambda x: random_saturation(x, seeds[2], 0.8 * strength),
        lambda x: random_hue(x, seeds[3], min(0.5, 0.2 * strength)),
    )
    if not random_order:
        for op in ops:
            image = op(image)
        return image
    order = tf.argsort(tf.random.stateless_uniform([len(ops)], order_seed))
    for step in range(len(ops)):
        branches = [lambda op=op, x=image: op(x) for op in ops]
        image = tf.switch_case(order[step], branch_fns=branches)
    return image


def random_grayscale(image, seed, prob: float = 0.2) -> tf.Tensor:
    """Turns an RGB image into grayscale (kept as three channels) with probability ``prob``."""
    image = as_float_image(image)
    return random_apply(lambda x, _: to_grayscale(x), image, seed, prob)


def random_color_distortion(image, seed, strength: float = 1.0, jitter_prob: float = 0.8,
                            grayscale_prob: float = 0.2, random_order: bool = True) -> tf.Tensor:
    """SimCLR colour distortion: jitter with probability ``jitter_prob``, then random grayscale."""
    check_probability("jitter_prob", jitter_prob)
    check_probability("grayscale_prob", grayscale_prob)
    image = as_float_image(image)
    jitter_seed, gray_seed = split_seed(seed, 2)
    image = random_apply(lambda x, s: color_jitter(x, s, strength, random_order), image,
                         jitter_seed, jitter_prob)
    return random_grayscale(image, gray_seed, grayscale_prob)
