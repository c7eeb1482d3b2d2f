"""Invariants of the synthetic distribution shifts: identity at 0, range, shape, monotone severity."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from medfound.evaluation.shifts import SHIFT_KINDS, TINT_COLOR, apply_shift

SEVERITIES = (0, 1, 2, 3, 4, 5)


def _images(batch: int = 3, size: int = 48, seed: int = 0) -> np.ndarray:
    """Structured images in [0, 1]: a radial pattern, a gradient and blobs, plus mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    out = []
    for b in range(batch):
        r = np.sqrt(xx ** 2 + yy ** 2)
        base = 0.5 + 0.35 * np.cos(6 * r + b) * np.exp(-r) + 0.1 * xx
        img = np.stack([base, 0.9 * base + 0.05, 0.8 * base + 0.1], -1)
        img += rng.normal(0, 0.03, img.shape)
        out.append(np.clip(img, 0, 1))
    return np.asarray(out, np.float32)


@pytest.mark.parametrize("kind", SHIFT_KINDS)
def test_severity_zero_is_identity_and_output_is_valid(kind):
    images = _images()
    assert np.array_equal(apply_shift(images, kind, 0).numpy(), images)
    for s in SEVERITIES[1:]:
        out = apply_shift(images, kind, s).numpy()
        assert out.shape == images.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert not np.allclose(out, images), f"{kind} at severity {s} changed nothing"
    single = apply_shift(images[0], kind, 3).numpy()  # an unbatched image works too
    assert single.shape == images.shape[1:]
    np.testing.assert_allclose(single, apply_shift(images[:1], kind, 3).numpy()[0], atol=1e-6)


@pytest.mark.parametrize("kind", SHIFT_KINDS)
def test_distance_from_clean_grows_with_severity(kind):
    images = _images()
    dist = [float(np.mean(np.abs(apply_shift(images, kind, s).numpy() - images))) for s in SEVERITIES]
    assert dist[0] == 0.0
    assert all(b > a for a, b in zip(dist, dist[1:])), f"{kind}: {dist}"


def test_each_kind_changes_what_it_names():
    images = _images()
    std = [apply_shift(images, "contrast", s).numpy().std(axis=(1, 2, 3)) for s in SEVERITIES]
    assert all(np.all(b < a) for a, b in zip(std, std[1:]))  # contrast falls per image
    np.testing.assert_allclose(apply_shift(images, "contrast", 5).numpy().mean(axis=(1, 2, 3)),
                               images.mean(axis=(1, 2, 3)), atol=1e-5)  # around the same mean

    def total_variation(x):
        return float(np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean())

    tv = [total_variation(apply_shift(images, "sharpness", s).numpy()) for s in SEVERITIES]
    assert all(b < a for a, b in zip(tv, tv[1:]))  # blur removes detail
    flat = np.full((1, 40, 40, 3), 0.3, np.float32)
    for kind in ("contrast", "sharpness", "zoom"):
        np.testing.assert_allclose(apply_shift(flat, kind, 4).numpy(), flat, atol=1e-5)

    means = [apply_shift(images, "gamma", s).numpy().mean() for s in SEVERITIES]
    assert all(b < a for a, b in zip(means, means[1:]))  # the non-linearity darkens mid-tones
    ends = np.array([[[[0.0, 1.0, 0.0]]]], np.float32)
    np.testing.assert_allclose(apply_shift(ends, "gamma", 5).numpy(), ends)  # 0 and 1 are fixed points

    color = np.array(TINT_COLOR)
    gaps = [np.abs(apply_shift(images, "tint", s).numpy().mean(axis=(0, 1, 2)) - color).sum() for s in SEVERITIES]
    assert all(b < a for a, b in zip(gaps, gaps[1:]))  # the cast approaches the tint colour

    yy, xx = np.meshgrid(np.arange(41), np.arange(41), indexing="ij")
    ramp = np.repeat((xx / 40.0)[None, ..., None], 3, -1).astype(np.float32)
    zoomed = apply_shift(ramp, "zoom", 5).numpy()  # 2x: the central half of the ramp fills the frame
    assert zoomed[0, 20, 20, 0] == pytest.approx(0.5, abs=1e-5)
    assert zoomed[0, 20, 0, 0] == pytest.approx(0.25, abs=0.02) and zoomed[0, 20, -1, 0] == pytest.approx(0.75, abs=0.02)


def test_bad_arguments_are_refused():
    images = _images(1)
    with pytest.raises(ValueError, match="unknown shift 'blur'"):
        apply_shift(images, "blur", 1)
    for bad in (-1, 5.5, float("nan"), True):
        with pytest.raises(ValueError, match="severity"):
            apply_shift(images, "contrast", bad)
    with pytest.raises(ValueError, match="float images"):
        apply_shift((images * 255).astype(np.uint8), "gamma", 1)
    with pytest.raises(ValueError, match="shape"):
        apply_shift(images[..., :1], "tint", 1)


def test_shifts_run_in_a_graph_with_dynamic_batch_and_size():
    fn = tf.function(lambda x: {k: apply_shift(x, k, 2.5) for k in SHIFT_KINDS},
                     input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    for images in (_images(2, 48), _images(1, 33, seed=3)):
        out = fn(tf.constant(images))
        for kind in SHIFT_KINDS:
            np.testing.assert_allclose(out[kind].numpy(), apply_shift(images, kind, 2.5).numpy(), atol=1e-5)
