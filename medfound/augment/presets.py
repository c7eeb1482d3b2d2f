"""Augmentation config, the REMEDIS-style ``cxr`` and ``path`` presets, and the view pipeline.

``make_view_fn(config)`` turns one image into one augmented view; ``augment_pair`` makes the two
views that SimCLR (one image twice) or MICLe (two images of one patient) contrast.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from medfound.augment.color import random_color_distortion
from medfound.augment.filters import MAX_BLUR_SIGMA, random_equalize, random_gaussian_blur
from medfound.augment.geometry import (
    FILL_MODES, as_float_image, check_seed, elastic_deform, random_apply, random_flip,
    random_resized_crop, random_rotation, split_seed)
from medfound.registry import MODALITIES

ViewFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """What one augmented view is made of: crop, flips, colour, rotation, elastic, equalise, blur.

    Probabilities are in [0, 1]; ``crop_area`` is a fraction of the image area, ``crop_aspect``
    a width/height ratio range, ``blur_sigma`` in output pixels, ``elastic_magnitude`` the largest
    displacement as a fraction of the image side. Invalid values raise a ValueError on creation.
    """

    image_size: int
    crop_area: tuple[float, float] = (0.08, 1.0)
    crop_aspect: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = 0.5
    vflip_prob: float = 0.0
    color_strength: float = 1.0
    color_prob: float = 0.8
    color_random_order: bool = True
    grayscale_prob: float = 0.2
    rotation_prob: float = 0.0
    rotation_degrees: float = 0.0
    rotation_fill: str = "REFLECT"
    elastic_prob: float = 0.0
    elastic_magnitude: float = 0.0
    elastic_grid: int = 5
    equalize_prob: float = 0.0
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self) -> None:
        def fail(field: str, need: str) -> None:
            raise ValueError(f"AugmentConfig.{field} must be {need}, got {getattr(self, field)!r}")

        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) \
                or self.image_size < 1:
            fail("image_size", "a positive int (pixels)")
        for field, low, high in (("crop_area", 0.0, 1.0), ("crop_aspect", 0.0, math.inf),
                                 ("blur_sigma", 0.0, MAX_BLUR_SIGMA)):
            try:
                lo, hi = (float(v) for v in getattr(self, field))
            except (TypeError, ValueError):
                fail(field, "a (lo, hi) pair of numbers")
            if not (low < lo <= hi <= high and math.isfinite(hi)):
                fail(field, f"a (lo, hi) pair with {low} < lo <= hi <= {high}")
            object.__setattr__(self, field, (lo, hi))
        for field in ("hflip_prob", "vflip_prob", "color_prob", "grayscale_prob", "rotation_prob",
                      "elastic_prob", "equalize_prob", "blur_prob"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0.0 <= value <= 1.0:
                fail(field, "a probability in [0, 1]")
        if not (isinstance(self.color_strength, (int, float)) and 0.0 <= self.color_strength
                and math.isfinite(self.color_strength)):
            fail("color_strength", "a finite number >= 0")
        if not isinstance(self.rotation_degrees, (int, float)) \
                or not 0.0 <= self.rotation_degrees <= 180.0:
            fail("rotation_degrees", "in [0, 180]")
        if not isinstance(self.rotation_fill, str) or self.rotation_fill.upper() not in FILL_MODES:
            fail("rotation_fill", f"one of {FILL_MODES}")
        if not isinstance(self.elastic_magnitude, (int, float)) \
                or not 0.0 <= self.elastic_magnitude <= 0.5:
            fail("elastic_magnitude", "in [0, 0.5] (fraction of the image side)")
        if isinstance(self.elastic_grid, bool) or not isinstance(self.elastic_grid, int) \
                or self.elastic_grid < 2:
            fail("elastic_grid", "an int >= 2 (control points per side)")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields, e.g. for a run record."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


# REMEDIS-style presets (fields that differ from the AugmentConfig defaults).
# Chest X-ray: grayscale images, so mild colour jitter (in effect brightness and contrast), small
# rotations, and the stronger set with histogram equalisation and elastic deformation.
# Pathology: colour distortion for stain variation (strength 0.5: at 1.0 the brightness factor of
# up to 1.8 turns the bright H&E background into blank white views), both flips and any rotation
# (a slide has no canonical orientation).
_PRESET_FIELDS: dict[str, dict[str, Any]] = {
    "cxr": dict(crop_area=(0.2, 1.0), hflip_prob=0.5, vflip_prob=0.0, color_strength=0.5,
                color_prob=0.8, grayscale_prob=0.0, rotation_prob=0.5, rotation_degrees=20.0,
                elastic_prob=0.3, elastic_magnitude=0.03, elastic_grid=5, equalize_prob=0.3,
                blur_prob=0.5, blur_sigma=(0.1, 2.0)),
    "path": dict(crop_area=(0.08, 1.0), hflip_prob=0.5, vflip_prob=0.5, color_strength=0.5,
                 color_prob=0.8, grayscale_prob=0.2, rotation_prob=0.5, rotation_degrees=180.0,
                 blur_prob=0.5, blur_sigma=(0.1, 2.0)),
}
PRESETS: tuple[str, ...] = tuple(_PRESET_FIELDS)
assert set(PRESETS) <= set(MODALITIES), "every preset is named after a registry modality"


def get_preset(name: str, image_size: int | None = None, **overrides: Any) -> AugmentConfig:
    """The ``cxr`` or ``path`` config, at the modality's input size unless ``image_size`` is given.

    Any AugmentConfig field can be overridden by keyword; unknown names or invalid values raise
    a ValueError before anything is computed.
    """
    if name not in _PRESET_FIELDS:
        raise ValueError(
            f"unknown augmentation preset {name!r}; valid presets: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(AugmentConfig)} - {"image_size"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown AugmentConfig field(s) {', '.join(unknown)}; "
                         f"valid fields: image_size, {', '.join(sorted(fields))}")
    size = MODALITIES[name] if image_size is None else image_size
    return AugmentConfig(image_size=size, **{**_PRESET_FIELDS[name], **overrides})


def make_view_fn(config: AugmentConfig) -> ViewFn:
    """Returns ``view(image, seed)``: an augmented (S, S, 3) float32 view in [0, 1], S = image_size.

    ``image`` is (H, W, 1 or 3), float in [0, 1] or integer; a grayscale image gives a view with
    three equal channels. Steps: random resized crop, flips, rotation, elastic deformation,
    histogram equalisation, colour distortion, Gaussian blur, each drawn from its own seed split
    off ``seed``. Works eagerly, in ``tf.function`` and in ``tf.data.Dataset.map``.
    """
    if not isinstance(config, AugmentConfig):
        raise ValueError(f"make_view_fn needs an AugmentConfig, got {type(config).__name__}")
    c = config
    size = c.image_size

    def view(image, seed) -> tf.Tensor:
        image = as_float_image(image)
        seeds = split_seed(check_seed(seed), 7)
        x = random_resized_crop(image, seeds[0], size, c.crop_area, c.crop_aspect)
        x = random_flip(x, seeds[1], c.hflip_prob, c.vflip_prob)
        if c.rotation_degrees > 0:
            x = random_apply(
                lambda im, s: random_rotation(im, s, c.rotation_degrees, c.rotation_fill),
                x, seeds[2], c.rotation_prob)
        if c.elastic_magnitude > 0:
            x = random_apply(
                lambda im, s: elastic_deform(im, s, c.elastic_magnitude, c.elastic_grid),
                x, seeds[3], c.elastic_prob)
        x = random_equalize(x, seeds[4], c.equalize_prob)
        x = random_color_distortion(x, seeds[5], c.color_strength, c.color_prob, c.grayscale_prob,
                                    c.color_random_order)
        x = random_apply(lambda im, s: random_gaussian_blur(im, s, c.blur_sigma), x, seeds[6],
                         c.blur_prob)
        if x.shape[-1] == 1:
            x = tf.tile(x, [1, 1, 3])
        return tf.ensure_shape(tf.clip_by_value(x, 0.0, 1.0), [size, size, 3])

    return view


def augment_pair(image_a, image_b, seed, config: AugmentConfig) -> tuple[tf.Tensor, tf.Tensor]:
    """Two independently augmented views (seeds split from ``seed``) of ``image_a`` and ``image_b``.

    Pass one image twice for SimCLR, or two images of one patient for MICLe.
    """
    view = make_view_fn(config)
    seed_a, seed_b = split_seed(check_seed(seed), 2)
    return view(image_a, seed_a), view(image_b, seed_b)
