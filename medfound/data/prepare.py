"""The one image preparation of medfound: any decoded image to what a module is fed.

``to_rgb_float`` gives 3-channel float32 in [0, 1] (uint8 / 255, uint16 / 65535, floats clipped;
gray and gray+alpha repeated to three channels, alpha dropped); ``prepare_image`` adds an
optional centre crop and the bilinear, antialiased resize to the module's size. Both take one
image (H, W[, C]) or a batch (N, H, W, C), as tensors or NumPy arrays, inside or outside tf.data.
Every pipeline (labeled, unlabeled, TFDS, embedding, slides, supervised pretraining) uses these.
"""
from __future__ import annotations


def to_rgb_float(image):
    """A decoded image (H, W), (H, W, C) or batch (N, H, W, C) with C in 1..4 as float32 RGB in [0, 1].

    uint8 is divided by 255 and uint16 by 65535; other types are cast to float32. One or two
    channels (gray, gray + alpha) give gray repeated three times; four drop alpha. Values are
    clipped to [0, 1].
    """
    import tensorflow as tf

    image = tf.convert_to_tensor(image)
    if image.shape.rank == 2:
        image = image[..., None]
    if image.shape.rank not in (3, 4):
        raise ValueError(f"expected an image (H, W[, C]) or a batch (N, H, W, C), got shape {image.shape}")
    if image.dtype == tf.uint8:
        image = tf.cast(image, tf.float32) / 255.0
    elif image.dtype == tf.uint16:
        image = tf.cast(image, tf.float32) / 65535.0
    else:
        image = tf.cast(image, tf.float32)
    channels = image.shape[-1]
    if channels is None:
        gray = tf.shape(image)[-1] < 3
        image = tf.cond(gray, lambda: tf.repeat(image[..., :1], 3, axis=-1), lambda: image[..., :3])
        image.set_shape([*image.shape[:-1], 3])
    elif channels < 3:
        image = tf.repeat(image[..., :1], 3, axis=-1)
    elif channels > 3:
        image = image[..., :3]
    return tf.clip_by_value(image, 0.0, 1.0)


def center_crop_image(image, center_crop: bool | float):
    """The central square of each image (``True``), or the central fraction f in (0, 1] of it."""
    import tensorflow as tf

    fraction = 1.0 if center_crop is True else float(center_crop)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"center_crop fraction must be in (0, 1], got {center_crop}")
    shape = tf.shape(image)
    h, w = shape[-3], shape[-2]
    side = tf.maximum(tf.cast(tf.cast(tf.minimum(h, w), tf.float32) * fraction, tf.int32), 1)
    return tf.image.crop_to_bounding_box(image, (h - side) // 2, (w - side) // 2, side, side)


def prepare_image(image, size: int | tuple[int, int], center_crop: bool | float = False):
    """An image or batch (see ``to_rgb_float``) as float32 (size, 3) in [0, 1], as modules are fed.

    ``size`` is an int (square) or (height, width). ``center_crop`` True first takes the central
    square, a float f in (0, 1] the central fraction f of that square. The resize is bilinear
    with antialiasing (downscaled radiographs do not alias; an image already at ``size`` is
    returned unchanged), clipped back to [0, 1].
    """
    import tensorflow as tf

    size = (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))
    image = to_rgb_float(image)
    if center_crop:
        image = center_crop_image(image, center_crop)
    image = tf.image.resize(image, size, method="bilinear", antialias=True)
    image = tf.clip_by_value(image, 0.0, 1.0)
    return tf.ensure_shape(image, (*size, 3) if image.shape.rank == 3 else (None, *size, 3))
