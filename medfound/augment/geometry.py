"""Spatial augmentations (random resized crop, flips, rotation, elastic deformation) in core TF.

Every random op has the signature ``op(image, seed, ...) -> image``: ``image`` is an (H, W, C)
image with C in {1, 3} (H and W may be unknown when traced) and ``seed`` a shape-(2,) integer
tensor. Only stateless random ops are used, so one seed gives one output in eager mode, inside
``tf.function`` and inside ``tf.data.Dataset.map``. The input checks and the "apply with
probability p" helper that every augmentation module shares live here too.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import tensorflow as tf

ImageOp = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
FILL_MODES = ("REFLECT", "WRAP", "CONSTANT", "NEAREST")


# ---------------------------------------------------------------------------------------------
# Shared checks used by every augmentation op.
# ---------------------------------------------------------------------------------------------

def as_float_image(image) -> tf.Tensor:
    """Returns ``image`` as a float32 (H, W, C) tensor, or raises a ValueError saying what is wrong.

    Integer images are rescaled to [0, 1] (uint8 by 1/255); float images are only cast. The rank
    and the channel count (1 or 3) must be known when traced, the height and width need not be.
    """
    image = tf.convert_to_tensor(image)
    shape = image.shape
    if shape.rank != 3:
        raise ValueError(f"augmentation ops take one (H, W, C) image; got shape {shape}")
    if shape[-1] not in (1, 3):
        raise ValueError(
            f"augmentation ops need C = 1 or 3 channels known when traced; got shape {shape} "
            "(use tf.io.decode_png(..., channels=3) or tf.ensure_shape)")
    if image.dtype.is_integer:
        return tf.image.convert_image_dtype(image, tf.float32)
    if image.dtype.is_floating:
        return tf.cast(image, tf.float32)
    raise ValueError(f"augmentation ops take integer or float images, got dtype {image.dtype.name}")


def check_seed(seed) -> tf.Tensor:
    """Returns ``seed`` as a shape-(2,) int64 tensor, or raises a ValueError."""
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        raise ValueError(f"seed must be an int32 or int64 tensor, got dtype {seed.dtype.name}")
    if not seed.shape.is_compatible_with([2]):
        raise ValueError(f"seed must have shape (2,), got {seed.shape}")
    return tf.cast(tf.reshape(seed, [2]), tf.int64)


def split_seed(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """``num`` independent shape-(2,) seeds derived from ``seed`` (stateless, deterministic)."""
    return tf.unstack(tf.random.experimental.stateless_split(check_seed(seed), num=num))


def check_probability(name: str, prob: float) -> float:
    """Returns ``prob`` as a float if it lies in [0, 1], else raises a ValueError naming it."""
    prob = float(prob)
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {prob}")
    return prob


def random_apply(fn: ImageOp, image: tf.Tensor, seed, prob: float) -> tf.Tensor:
    """Applies ``fn(image, seed)`` with probability ``prob`` (drawn from ``seed``), else no-op.

    ``prob`` is a Python float so that 0 and 1 need no branch in the graph; in between, a
    ``tf.cond`` runs only the chosen branch, so an unused expensive op costs nothing.
    """
    prob = check_probability("prob", prob)
    if prob == 0.0:
        return image
    coin_seed, op_seed = split_seed(seed, 2)
    if prob == 1.0:
        return fn(image, op_seed)
    apply = tf.random.stateless_uniform([], coin_seed) < prob
    return tf.cond(apply, lambda: fn(image, op_seed), lambda: tf.identity(image))


def _check_range(name: str, value: Sequence[float], low: float,
                 high: float | None) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not (lo > low and lo <= hi and (high is None or hi <= high)) or not math.isfinite(hi):
        bound = f"{low} < lo <= hi" + (f" <= {high}" if high is not None else "")
        raise ValueError(f"{name} must be a (lo, hi) pair with {bound}, got {tuple(value)}")
    return lo, hi


# ---------------------------------------------------------------------------------------------
# Crop and flips.
# ---------------------------------------------------------------------------------------------

def random_resized_crop(image, seed, size: int, area_range: Sequence[float] = (0.08, 1.0),
                        aspect_range: Sequence[float] = (3 / 4, 4 / 3),
                        max_attempts: int = 100) -> tf.Tensor:
    """Crops a random box (area, width/height ratio in the ranges) and resizes it to size x size.

    The Inception/SimCLR crop: if no box fits after ``max_attempts`` tries, the whole image is used.
    """
    if int(size) < 1:
        raise ValueError(f"crop size must be a positive number of pixels, got {size}")
    area_range = _check_range("area_range", area_range, 0.0, 1.0)
    aspect_range = _check_range("aspect_range", aspect_range, 0.0, None)
    image, seed = as_float_image(image), check_seed(seed)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=aspect_range, area_range=area_range,
        max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
    crop = tf.ensure_shape(tf.slice(image, begin, crop_size), [None, None, image.shape[-1]])
    resized = tf.image.resize(crop, [int(size), int(size)], method="bilinear", antialias=True)
    return tf.clip_by_value(resized, 0.0, 1.0)


def random_flip(image, seed, horizontal_prob: float = 0.5, vertical_prob: float = 0.0) -> tf.Tensor:
    """Flips left-right with probability ``horizontal_prob``, top-bottom with ``vertical_prob``."""
    image = as_float_image(image)
    h_seed, v_seed = split_seed(seed, 2)
    image = random_apply(lambda x, _: tf.reverse(x, axis=[1]), image, h_seed, horizontal_prob)
    return random_apply(lambda x, _: tf.reverse(x, axis=[0]), image, v_seed, vertical_prob)


# ---------------------------------------------------------------------------------------------
# Rotation.
# ---------------------------------------------------------------------------------------------

def rotate(image, angle, fill_mode: str = "REFLECT", interpolation: str = "BILINEAR") -> tf.Tensor:
    """Rotates ``image`` by ``angle`` radians counter-clockwise (as displayed) about its centre.

    Uses the core op ImageProjectiveTransformV3; corners outside the source are filled by
    ``fill_mode`` (REFLECT, WRAP, CONSTANT (zeros) or NEAREST). 90 degrees equals tf.image.rot90.
    """
    fill_mode = fill_mode.upper()
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
    if interpolation.upper() not in ("BILINEAR", "NEAREST"):
        raise ValueError(f"interpolation must be BILINEAR or NEAREST, got {interpolation!r}")
    image = as_float_image(image)
    angle = tf.cast(angle, tf.float32)
    shape = tf.shape(image)
    cy = (tf.cast(shape[0], tf.float32) - 1.0) / 2.0
    cx = (tf.cast(shape[1], tf.float32) - 1.0) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel (x, y) reads the input at centre + R(angle) (p - centre): with y pointing
    # down, this turns the displayed picture counter-clockwise.
    transform = tf.stack([cos, -sin, cx - cos * cx + sin * cy,
                          sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis], transforms=transform[tf.newaxis], output_shape=shape[:2],
        fill_value=0.0, interpolation=interpolation.upper(), fill_mode=fill_mode)[0]
    return tf.ensure_shape(tf.clip_by_value(rotated, 0.0, 1.0), image.shape)


def random_rotation(image, seed, max_degrees: float, fill_mode: str = "REFLECT") -> tf.Tensor:
    """Rotates by an angle drawn uniformly from [-max_degrees, max_degrees]."""
    max_degrees = float(max_degrees)
    if not 0.0 <= max_degrees <= 180.0:
        raise ValueError(f"max_degrees must lie in [0, 180], got {max_degrees}")
    image, seed = as_float_image(image), check_seed(seed)
    max_rad = math.radians(max_degrees)
    angle = tf.random.stateless_uniform([], seed, minval=-max_rad, maxval=max_rad)
    return rotate(image, angle, fill_mode=fill_mode)


# ---------------------------------------------------------------------------------------------
# Elastic deformation.
# ---------------------------------------------------------------------------------------------

def bilinear_sample(image: tf.Tensor, y: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """Samples ``image`` (H, W, C) at float row/column coordinates ``y``, ``x`` (H', W') bilinearly.

    Coordinates outside the image are clamped to the border (edge replication), so the result is
    always a convex combination of input pixels; integer coordinates return pixels exactly.
    """
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    y = tf.clip_by_value(y, 0.0, tf.cast(h - 1, tf.float32))
    x = tf.clip_by_value(x, 0.0, tf.cast(w - 1, tf.float32))
    y0f, x0f = tf.floor(y), tf.floor(x)
    wy, wx = (y - y0f)[..., tf.newaxis], (x - x0f)[..., tf.newaxis]
    y0, x0 = tf.cast(y0f, tf.int32), tf.cast(x0f, tf.int32)
    y1, x1 = tf.minimum(y0 + 1, h - 1), tf.minimum(x0 + 1, w - 1)
    flat = tf.reshape(image, [-1, image.shape[-1] or shape[2]])

    def pixel(yy, xx):
        return tf.gather(flat, yy * w + xx)

    top = pixel(y0, x0) * (1.0 - wx) + pixel(y0, x1) * wx
    bottom = pixel(y1, x0) * (1.0 - wx) + pixel(y1, x1) * wx
    return top * (1.0 - wy) + bottom * wy


def elastic_deform(image, seed, magnitude: float, grid_size: int = 5) -> tf.Tensor:
    """Warps the image with a smooth random displacement field (elastic deformation).

    Displacements are drawn uniformly in [-1, 1] on a coarse ``grid_size`` x ``grid_size`` grid of
    control points, smoothed by bicubic interpolation up to the image size, scaled by
    ``magnitude`` times the shorter image side (so ``magnitude`` is a fraction of the image and
    means the same at every resolution), and applied by bilinear sampling. Zero is the identity.
    """
    magnitude = float(magnitude)
    if not 0.0 <= magnitude <= 0.5:
        raise ValueError(
            f"elastic magnitude must lie in [0, 0.5] (fraction of the image side), got {magnitude}")
    if int(grid_size) < 2:
        raise ValueError(f"elastic grid_size must be at least 2 control points, got {grid_size}")
    image, seed = as_float_image(image), check_seed(seed)
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    coarse = tf.random.stateless_uniform([1, int(grid_size), int(grid_size), 2], seed, -1.0, 1.0)
    field = tf.image.resize(coarse, tf.stack([h, w]), method="bicubic")[0]
    field = field * (magnitude * tf.cast(tf.minimum(h, w), tf.float32))
    rows = tf.cast(tf.range(h), tf.float32)[:, tf.newaxis]
    cols = tf.cast(tf.range(w), tf.float32)[tf.newaxis, :]
    warped = bilinear_sample(image, rows + field[..., 0], cols + field[..., 1])
    return tf.ensure_shape(tf.clip_by_value(warped, 0.0, 1.0), image.shape)
