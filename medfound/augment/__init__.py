"""Medical image augmentations in core TensorFlow, usable eagerly, in tf.function and in tf.data.

Every op is ``op(image, seed, ...) -> image`` on a float32 (H, W, C) image in [0, 1] (C = 1 or
3) with a shape-(2,) integer seed, built from stateless random ops only, so one seed always
gives one output. ``get_preset('cxr' | 'path')`` gives the REMEDIS-style configs and
``make_view_fn`` / ``augment_pair`` the views that contrastive pretraining compares.
"""
from medfound.augment.color import (
    color_jitter, random_brightness, random_color_distortion, random_contrast, random_grayscale,
    random_hue, random_saturation, to_grayscale)
from medfound.augment.filters import (
    equalize_histogram, gaussian_blur, random_equalize, random_gaussian_blur)
from medfound.augment.geometry import (
    as_float_image, bilinear_sample, check_seed, elastic_deform, random_apply, random_flip,
    random_resized_crop, random_rotation, rotate, split_seed)
from medfound.augment.presets import PRESETS, AugmentConfig, augment_pair, get_preset, make_view_fn

__all__ = [
    "PRESETS", "AugmentConfig", "as_float_image", "augment_pair", "bilinear_sample", "check_seed",
    "color_jitter", "elastic_deform", "equalize_histogram", "gaussian_blur", "get_preset",
    "make_view_fn", "random_apply", "random_brightness", "random_color_distortion",
    "random_contrast", "random_equalize", "random_flip", "random_gaussian_blur",
    "random_grayscale", "random_hue", "random_resized_crop", "random_rotation",
    "random_saturation", "rotate", "split_seed", "to_grayscale",
]
