"""Synthetic distribution shifts of graded severity, as pure TensorFlow image functions.

Each kind models a real acquisition change: lower ``contrast`` (exposure), lost ``sharpness``
(defocus blur), a colour ``tint`` (stain or white balance), ``zoom`` (field of view) and a sensor
non-linearity (``gamma``). Severity 0 returns the images unchanged; every kind moves the images
further from the originals as severity grows, up to ``MAX_SEVERITY``.
"""
from __future__ import annotations

import math

import tensorflow as tf

from medfound.augment.filters import blur_images
from medfound.evaluation.shift_names import DEFAULT_SEVERITIES, MAX_SEVERITY, SHIFT_KINDS

__all__ = ["DEFAULT_SEVERITIES", "MAX_SEVERITY", "SHIFT_KINDS", "apply_shift", "check_shift"]
TINT_COLOR = (0.95, 0.55, 0.75)  # the colour images are blended toward (a pink, eosin-like cast)


def check_shift(kind: str, severity: float) -> float:
    """Validates a shift kind and severity; returns the severity as a float."""
    if kind not in SHIFT_KINDS:
        raise ValueError(f"unknown shift {kind!r}; choose from {list(SHIFT_KINDS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, float)) or not math.isfinite(severity):
        raise ValueError(f"shift severity must be a number, got {severity!r}")
    if not 0.0 <= severity <= MAX_SEVERITY:
        raise ValueError(f"shift severity must be in [0, {MAX_SEVERITY:g}], got {severity}")
    return float(severity)


def apply_shift(images, kind: str, severity: float) -> tf.Tensor:
    """``images`` (B, H, W, 3) or (H, W, 3), float in [0, 1], under shift ``kind`` at ``severity`` in [0, 5].

    Severity 0 is the identity; the result stays float32 in [0, 1] with the input's shape.
    """
    severity = check_shift(kind, severity)
    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating:
        raise ValueError(f"apply_shift takes float images in [0, 1], got dtype {images.dtype.name}")
    images = tf.cast(images, tf.float32)
    single = images.shape.rank == 3
    if images.shape.rank not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(f"apply_shift takes (B, H, W, 3) or (H, W, 3) images, got shape {images.shape}")
    if severity == 0.0:
        return images
    batch = images[None] if single else images
    out = _SHIFTS[kind](batch, severity / MAX_SEVERITY)
    out = tf.clip_by_value(out, 0.0, 1.0)
    return out[0] if single else out


def contrast(images: tf.Tensor, level: float) -> tf.Tensor:
    """Blends each image toward its own mean intensity, keeping 1 - 0.9 * level of the contrast."""
    keep = 1.0 - 0.9 * level
    mean = tf.reduce_mean(images, axis=(1, 2, 3), keepdims=True)
    return mean + keep * (images - mean)


def sharpness(images: tf.Tensor, level: float) -> tf.Tensor:
    """Gaussian defocus blur with sigma up to 3% of the shorter side (at least 0.5 px per unit level)."""
    side = tf.cast(tf.minimum(tf.shape(images)[1], tf.shape(images)[2]), tf.float32)
    sigma = tf.maximum(0.03 * side, 2.5) * level
    radius = tf.maximum(tf.cast(tf.math.ceil(3.0 * sigma), tf.int32), 1)
    return blur_images(images, sigma, radius)


def tint(images: tf.Tensor, level: float) -> tf.Tensor:
    """Blends images toward ``TINT_COLOR`` with weight 0.5 * level (a convex mix, so it stays in [0, 1])."""
    alpha = 0.5 * level
    color = tf.constant(TINT_COLOR, tf.float32)
    return (1.0 - alpha) * images + alpha * color


def zoom(images: tf.Tensor, level: float) -> tf.Tensor:
    """Crops the central 1 - 0.5 * level of each side and resizes back: up to 2x magnification."""
    fraction = 1.0 - 0.5 * level
    size = tf.shape(images)[1:3]
    lo, hi = 0.5 - fraction / 2.0, 0.5 + fraction / 2.0
    n = tf.shape(images)[0]
    boxes = tf.tile(tf.constant([[lo, lo, hi, hi]], tf.float32), [n, 1])
    return tf.image.crop_and_resize(images, boxes, tf.range(n), size, method="bilinear")


def gamma(images: tf.Tensor, level: float) -> tf.Tensor:
    """A detector non-linearity: intensities raised to the power 1 + 1.5 * level (darker mid-tones)."""
    return tf.pow(tf.maximum(images, 0.0), 1.0 + 1.5 * level)


_SHIFTS = {"contrast": contrast, "sharpness": sharpness, "tint": tint, "zoom": zoom, "gamma": gamma}
