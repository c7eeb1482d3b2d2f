"""Each augmentation op: shape, dtype, range, determinism, graph mode, and that it does its job."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import tensorflow as tf

from medfound import augment as A

SHAPES = [(17, 23), (40, 32)]
CHANNELS = [1, 3]
CROP = 16

# name -> (op(image, seed), changes shape to CROP x CROP, is the identity on one channel)
OPS = {
    "random_resized_crop": (lambda x, s: A.random_resized_crop(x, s, CROP), True, False),
    "random_flip": (lambda x, s: A.random_flip(x, s, 0.5, 0.5), False, False),
    "random_rotation": (lambda x, s: A.random_rotation(x, s, 45.0), False, False),
    "elastic_deform": (lambda x, s: A.elastic_deform(x, s, 0.08), False, False),
    "random_gaussian_blur": (lambda x, s: A.random_gaussian_blur(x, s, (0.5, 2.0)), False, False),
    "random_equalize": (lambda x, s: A.random_equalize(x, s, 0.5), False, False),
    "random_brightness": (lambda x, s: A.random_brightness(x, s, 0.8), False, False),
    "random_contrast": (lambda x, s: A.random_contrast(x, s, 0.8), False, False),
    "random_saturation": (lambda x, s: A.random_saturation(x, s, 0.8), False, True),
    "random_hue": (lambda x, s: A.random_hue(x, s, 0.2), False, True),
    "color_jitter": (lambda x, s: A.color_jitter(x, s, 1.0), False, False),
    "random_color_distortion": (lambda x, s: A.random_color_distortion(x, s, 1.0), False, False),
    "random_grayscale": (lambda x, s: A.random_grayscale(x, s, 0.5), False, True),
}


def random_image(shape: tuple[int, int], channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((*shape, channels)).astype(np.float32)


def seed_of(a: int, b: int = 0, dtype=tf.int32) -> tf.Tensor:
    return tf.constant([a, b], dtype)


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels", CHANNELS)
def test_op_invariants_and_determinism(name, shape, channels):
    op, crops, _ = OPS[name]
    image = random_image(shape, channels)
    out = op(tf.constant(image), seed_of(3, 4))
    expected = (CROP, CROP, channels) if crops else (*shape, channels)
    assert tuple(out.shape) == expected
    assert out.dtype == tf.float32
    values = out.numpy()
    assert np.isfinite(values).all()
    assert values.min() >= 0.0 and values.max() <= 1.0
    # The same seed, as int32 or int64, always gives the same output.
    np.testing.assert_array_equal(values, op(tf.constant(image), seed_of(3, 4, tf.int64)).numpy())


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("channels", CHANNELS)
def test_different_seeds_give_different_outputs(name, channels):
    op, _, identity_on_gray = OPS[name]
    image = tf.constant(random_image((17, 23), channels))
    outputs = [op(image, seed_of(s, 1)).numpy() for s in range(6)]
    all_equal = all(np.array_equal(outputs[0], o) for o in outputs[1:])
    if channels == 1 and identity_on_gray:
        assert all_equal and np.array_equal(outputs[0], image.numpy())
    else:
        assert not all_equal, f"{name}: six different seeds gave six identical outputs"


def test_ops_in_dataset_map_with_unknown_size_match_eager():
    """Graph mode: in Dataset.map, with height and width unknown, each op gives the eager result."""
    images = [random_image(shape, 3, i) for i, shape in enumerate(SHAPES)]
    spec = tf.TensorSpec([None, None, 3], tf.float32)
    names = ["random_resized_crop", "random_rotation", "elastic_deform", "random_gaussian_blur",
             "random_equalize", "random_color_distortion"]

    def apply_all(index, image):
        seed = tf.stack([index, tf.constant(9, tf.int64)])
        return tuple(OPS[n][0](image, seed) for n in names)

    ds = tf.data.Dataset.from_generator(lambda: iter(images), output_signature=spec).enumerate()
    for index, graph_outputs in enumerate(ds.map(apply_all)):
        eager = apply_all(tf.constant(index, tf.int64), tf.constant(images[index]))
        for name, got, want in zip(names, graph_outputs, eager):
            np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, err_msg=name)


def test_rotation_by_180_degrees_flips_both_axes():
    image = random_image((17, 23), 3)
    rotated = A.rotate(tf.constant(image), math.pi).numpy()
    np.testing.assert_allclose(rotated, image[::-1, ::-1], atol=1e-5)


def test_rotation_by_90_degrees_matches_rot90():
    image = random_image((20, 20), 1)
    rotated = A.rotate(tf.constant(image), math.pi / 2).numpy()
    np.testing.assert_allclose(rotated, np.rot90(image), atol=1e-5)


def test_zero_rotation_and_zero_elastic_are_identity():
    image = random_image((40, 32), 3)
    np.testing.assert_allclose(A.rotate(tf.constant(image), 0.0).numpy(), image, atol=1e-6)
    out = A.elastic_deform(tf.constant(image), seed_of(5), magnitude=0.0).numpy()
    np.testing.assert_array_equal(out, image)


def test_elastic_deformation_moves_pixels_smoothly():
    """A vertical ramp image stays a monotone-ish ramp: the field is smooth, not pixel noise."""
    ramp = np.tile(np.linspace(0, 1, 48, dtype=np.float32)[:, None, None], (1, 48, 1))
    out = A.elastic_deform(tf.constant(ramp), seed_of(2), magnitude=0.05).numpy()
    assert np.abs(out - ramp).max() > 0.01  # it moved
    assert np.abs(out - ramp).max() < 0.06 * 1.5  # by at most about magnitude x side pixels
    # Neighbouring pixels stay close (no tearing): the largest step between rows stays small.
    assert np.abs(np.diff(out, axis=0)).max() < 4 / 47


def test_blur_lowers_high_frequency_energy_and_keeps_constants():
    image = tf.constant(random_image((40, 32), 3))

    def hf_energy(x) -> float:
        x = np.asarray(x)
        return float(np.mean(np.diff(x, axis=0) ** 2) + np.mean(np.diff(x, axis=1) ** 2))

    weak, strong = A.gaussian_blur(image, 0.8), A.gaussian_blur(image, 2.0)
    assert hf_energy(strong) < hf_energy(weak) < 0.5 * hf_energy(image)
    np.testing.assert_allclose(A.gaussian_blur(image, 1.5).numpy().mean(), image.numpy().mean(),
                               atol=0.02)
    constant = tf.fill([17, 23, 1], 0.7)
    np.testing.assert_allclose(A.gaussian_blur(constant, 2.0).numpy(), 0.7, atol=1e-5)


def test_equalisation_flattens_the_histogram_of_a_low_contrast_image():
    rng = np.random.default_rng(0)
    low = np.clip(0.44 + 0.02 * rng.standard_normal((40, 32, 1)), 0.39, 0.49).astype(np.float32)
    out = A.equalize_histogram(tf.constant(low)).numpy()
    assert out.min() == 0.0 and out.max() == 1.0
    before = np.histogram(low, bins=8, range=(0, 1))[0] / low.size
    after = np.histogram(out, bins=8, range=(0, 1))[0] / out.size
    assert before.max() == 1.0  # everything in one bin
    assert after.max() < 0.25 and np.abs(after - 1 / 8).max() < 0.1  # close to uniform
    # Order is kept: equalisation is a monotone map of the values.
    order = np.argsort(low.ravel(), kind="stable")
    assert (np.diff(out.ravel()[order]) >= 0).all()


def test_equalisation_works_per_channel_and_leaves_constant_channels():
    image = random_image((17, 23), 3) * 0.2 + 0.3
    image[..., 1] = 0.25
    out = A.equalize_histogram(tf.constant(image)).numpy()
    np.testing.assert_array_equal(out[..., 1], image[..., 1])
    for c in (0, 2):
        assert out[..., c].min() == 0.0 and out[..., c].max() == 1.0


def test_grayscale_and_zero_strength_colour():
    image = tf.constant(random_image((17, 23), 3))
    gray = A.random_grayscale(image, seed_of(0), prob=1.0).numpy()
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    np.testing.assert_allclose(A.color_jitter(image, seed_of(1), strength=0.0).numpy(),
                               image.numpy(), atol=1e-5)


def test_colour_jitter_random_order_changes_composition():
    """With random_order, some seed composes the jitters in another order than the fixed one."""
    image = tf.constant(random_image((17, 23), 3))
    for s in range(8):
        ordered = A.color_jitter(image, seed_of(s), 1.0, random_order=False).numpy()
        shuffled = A.color_jitter(image, seed_of(s), 1.0, random_order=True).numpy()
        if not np.allclose(ordered, shuffled, atol=1e-4):
            return
    pytest.fail("random_order never changed the output over 8 seeds")


def test_flip_probabilities_one_and_zero():
    image = random_image((17, 23), 1)
    out = A.random_flip(tf.constant(image), seed_of(0), 1.0, 1.0).numpy()
    np.testing.assert_array_equal(out, image[::-1, ::-1])
    np.testing.assert_array_equal(A.random_flip(tf.constant(image), seed_of(0), 0.0, 0.0), image)


def test_crop_of_a_constant_image_is_constant_and_uint8_is_rescaled():
    image = np.full((40, 32, 3), 51, np.uint8)
    out = A.random_resized_crop(tf.constant(image), seed_of(0), 24).numpy()
    assert out.shape == (24, 24, 3)
    np.testing.assert_allclose(out, 51 / 255, atol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda: A.random_flip(tf.zeros([8, 8]), seed_of(0)), "(H, W, C)"),
    (lambda: A.random_flip(tf.zeros([8, 8, 4]), seed_of(0)), "C = 1 or 3"),
    (lambda: A.random_flip(tf.zeros([8, 8, 3]), tf.constant([1, 2, 3])), "shape (2,)"),
    (lambda: A.random_flip(tf.zeros([8, 8, 3]), tf.constant([1.0, 2.0])), "int32 or int64"),
    (lambda: A.random_flip(tf.zeros([8, 8, 3]), seed_of(0), horizontal_prob=1.5), "probability"),
    (lambda: A.random_rotation(tf.zeros([8, 8, 3]), seed_of(0), 200), "[0, 180]"),
    (lambda: A.rotate(tf.zeros([8, 8, 3]), 1.0, fill_mode="mirror"), "fill_mode"),
    (lambda: A.elastic_deform(tf.zeros([8, 8, 3]), seed_of(0), 0.9), "[0, 0.5]"),
    (lambda: A.elastic_deform(tf.zeros([8, 8, 3]), seed_of(0), 0.1, grid_size=1), "grid_size"),
    (lambda: A.random_gaussian_blur(tf.zeros([8, 8, 3]), seed_of(0), (2.0, 1.0)), "sigma"),
    (lambda: A.random_resized_crop(tf.zeros([8, 8, 3]), seed_of(0), 4, (0.5, 1.5)), "area_range"),
    (lambda: A.random_resized_crop(tf.zeros([8, 8, 3]), seed_of(0), 0), "crop size"),
    (lambda: A.color_jitter(tf.zeros([8, 8, 3]), seed_of(0), -1.0), "strength"),
    (lambda: A.random_hue(tf.zeros([8, 8, 3]), seed_of(0), 0.7), "hue"),
    (lambda: A.equalize_histogram(tf.zeros([8, 8, 3]), bins=1), "bins"),
])
def test_bad_arguments_are_refused_with_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
