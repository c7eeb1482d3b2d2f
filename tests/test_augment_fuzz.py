"""Property-based tests (hypothesis) of the ops and configs: any size, channels, dtype, seed."""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medfound import augment as A

FUZZ = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])

OPS = {
    "random_resized_crop": lambda x, s: A.random_resized_crop(x, s, 12, (0.05, 1.0), (0.5, 2.0)),
    "random_flip": lambda x, s: A.random_flip(x, s, 0.5, 0.5),
    "random_rotation": lambda x, s: A.random_rotation(x, s, 180.0),
    "elastic_deform": lambda x, s: A.elastic_deform(x, s, 0.5, grid_size=3),
    "random_gaussian_blur": lambda x, s: A.random_gaussian_blur(x, s, (0.1, 3.0)),
    "random_equalize": lambda x, s: A.random_equalize(x, s, 1.0),
    "random_color_distortion": lambda x, s: A.random_color_distortion(x, s, 2.0, 1.0, 0.5),
    "color_jitter": lambda x, s: A.color_jitter(x, s, 3.0),
}
DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "uint8": np.uint8,
          "uint16": np.uint16}


@st.composite
def images(draw, max_side: int = 40) -> np.ndarray:
    """An (H, W, C) image of any size from 1 pixel, 1 or 3 channels, any supported dtype."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    c = draw(st.sampled_from([1, 3]))
    dtype = DTYPES[draw(st.sampled_from(sorted(DTYPES)))]
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, np.iinfo(dtype).max, (h, w, c), endpoint=True).astype(dtype)
    style = draw(st.sampled_from(["uniform", "constant", "binary"]))
    values = {"uniform": rng.random((h, w, c)), "constant": np.full((h, w, c), rng.random()),
              "binary": rng.integers(0, 2, (h, w, c))}[style]
    return values.astype(dtype)


seeds = st.tuples(st.integers(-2 ** 31, 2 ** 31 - 1), st.integers(-2 ** 31, 2 ** 31 - 1))


@pytest.mark.parametrize("name", sorted(OPS))
@FUZZ
@given(image=images(), seed=seeds, seed_dtype=st.sampled_from([tf.int32, tf.int64]))
def test_ops_keep_shape_range_finiteness_and_determinism(name, image, seed, seed_dtype):
    op = OPS[name]
    out = op(tf.constant(image), tf.constant(seed, seed_dtype))
    h, w, c = image.shape
    assert tuple(out.shape) == ((12, 12, c) if name == "random_resized_crop" else (h, w, c))
    assert out.dtype == tf.float32
    values = out.numpy()
    assert np.isfinite(values).all()
    assert values.min() >= 0.0 and values.max() <= 1.0
    np.testing.assert_array_equal(values, op(tf.constant(image), tf.constant(seed, seed_dtype)))


@FUZZ
@given(image=images(max_side=48), seed=seeds, preset=st.sampled_from(A.PRESETS),
       size=st.integers(4, 40))
def test_views_of_any_image_are_rgb_in_range(image, seed, preset, size):
    config = A.get_preset(preset, image_size=size, elastic_prob=0.5, equalize_prob=0.5)
    view = A.make_view_fn(config)(tf.constant(image), tf.constant(seed, tf.int64)).numpy()
    assert view.shape == (size, size, 3) and view.dtype == np.float32
    assert np.isfinite(view).all() and view.min() >= 0.0 and view.max() <= 1.0


def _valid_range(low: float, high: float):
    return st.tuples(st.floats(low, high), st.floats(low, high)).filter(
        lambda t: min(t) > 0).map(lambda t: (min(t), max(t)))


@FUZZ
@given(area=_valid_range(0.0, 1.0), aspect=_valid_range(0.0, 5.0),
       probs=st.lists(st.floats(0.0, 1.0), min_size=8, max_size=8),
       strength=st.floats(0.0, 3.0), degrees=st.floats(0.0, 180.0),
       magnitude=st.floats(0.0, 0.5), sigma=_valid_range(0.0, 5.0))
def test_any_valid_config_is_accepted(area, aspect, probs, strength, degrees, magnitude, sigma):
    names = ["hflip_prob", "vflip_prob", "color_prob", "grayscale_prob", "rotation_prob",
             "elastic_prob", "equalize_prob", "blur_prob"]
    config = A.get_preset("path", image_size=8, crop_area=area, crop_aspect=aspect,
                          color_strength=strength, rotation_degrees=degrees,
                          elastic_magnitude=magnitude, blur_sigma=sigma, **dict(zip(names, probs)))
    assert config.crop_area == area and config.blur_sigma == sigma


@FUZZ
@given(field=st.sampled_from(["hflip_prob", "color_prob", "blur_prob", "elastic_prob"]),
       value=st.one_of(st.floats(1.0, 1e9, exclude_min=True),
                       st.floats(-1e9, 0.0, exclude_max=True), st.just(math.nan)))
def test_impossible_probabilities_are_refused(field, value):
    with pytest.raises(ValueError, match=f"AugmentConfig.{field} must be a probability"):
        A.get_preset("cxr", **{field: value})


@FUZZ
@given(lo=st.floats(-2.0, 3.0), hi=st.floats(-2.0, 3.0))
def test_crop_area_outside_zero_one_or_reversed_is_refused(lo, hi):
    if 0 < lo <= hi <= 1:
        assert A.get_preset("cxr", crop_area=(lo, hi)).crop_area == (lo, hi)
    else:
        with pytest.raises(ValueError, match="AugmentConfig.crop_area"):
            A.get_preset("cxr", crop_area=(lo, hi))
