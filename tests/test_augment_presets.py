"""Presets, the view pipeline (eager, tf.function, Dataset.map), augment_pair, preview and CLI."""
from __future__ import annotations

import argparse
import hashlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from medfound import augment as A
from medfound.augment.preview import CELL_GAP, HEADER, PAIR_GAP, write_preview
from medfound.cli import augment_preview
from medfound.registry import MODALITIES

SIZE = 32


def random_image(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, c)).astype(np.float32)


def test_presets_use_the_registry_sizes_and_differ_as_remedis():
    assert set(A.PRESETS) == {"cxr", "path"}
    cxr, path = A.get_preset("cxr"), A.get_preset("path")
    assert cxr.image_size == MODALITIES["cxr"] and path.image_size == MODALITIES["path"]
    for config in (cxr, path):  # both: crop + colour distortion + rotation + blur
        assert config.crop_area[0] < 1 and config.color_prob > 0 and config.color_strength > 0
        assert config.rotation_prob > 0 and config.rotation_degrees > 0 and config.blur_prob > 0
    assert cxr.equalize_prob > 0 and cxr.elastic_prob > 0 and cxr.elastic_magnitude > 0
    assert path.equalize_prob == 0 and path.elastic_prob == 0
    assert path.vflip_prob > 0 and path.rotation_degrees > cxr.rotation_degrees


def test_preset_overrides_and_size():
    config = A.get_preset("cxr", image_size=64, blur_prob=0.0, crop_area=[0.5, 1.0])
    assert config.image_size == 64 and config.blur_prob == 0.0 and config.crop_area == (0.5, 1.0)
    assert config.elastic_prob == A.get_preset("cxr").elastic_prob
    assert config.to_dict()["crop_area"] == [0.5, 1.0]


def test_unknown_preset_and_unknown_field_are_refused():
    with pytest.raises(ValueError, match=r"unknown augmentation preset 'mri'.*cxr, path"):
        A.get_preset("mri")
    with pytest.raises(ValueError, match="unknown AugmentConfig field.*blur_strength"):
        A.get_preset("path", blur_strength=2.0)


@pytest.mark.parametrize("field, value", [
    ("image_size", 0), ("image_size", "224"), ("image_size", 3.5), ("crop_area", (0.0, 1.0)),
    ("crop_area", (0.6, 0.3)), ("crop_area", (0.1, 1.5)), ("crop_area", (0.1,)),
    ("crop_aspect", (0.0, 2.0)), ("crop_aspect", (1.0, float("inf"))), ("hflip_prob", 1.5),
    ("color_prob", -0.1), ("blur_prob", float("nan")), ("color_strength", -1.0),
    ("rotation_degrees", 200.0), ("rotation_fill", "MIRROR"), ("elastic_magnitude", 0.9),
    ("elastic_grid", 1), ("blur_sigma", (0.0, 2.0)), ("blur_sigma", (3.0, 2.0)),
])
def test_impossible_config_values_are_refused(field, value):
    with pytest.raises(ValueError, match=f"AugmentConfig.{field}"):
        A.get_preset("cxr", **({"image_size": value} if field == "image_size" else {field: value}))


@pytest.mark.parametrize("preset", A.PRESETS)
@pytest.mark.parametrize("channels, dtype", [(1, np.float32), (3, np.float32), (3, np.uint8)])
def test_view_is_rgb_at_the_config_size_in_range_and_deterministic(preset, channels, dtype):
    config = A.get_preset(preset, image_size=SIZE, equalize_prob=0.5, elastic_prob=0.5,
                          elastic_magnitude=0.05)
    view = A.make_view_fn(config)
    image = random_image(40, 27, channels)
    if dtype == np.uint8:
        image = (image * 255).astype(np.uint8)
    outs = [view(tf.constant(image), tf.constant([s, 0])).numpy() for s in range(4)]
    for out in outs:
        assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.float32
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        if channels == 1:
            np.testing.assert_array_equal(out[..., 0], out[..., 2])
    np.testing.assert_array_equal(outs[0], view(tf.constant(image), tf.constant([0, 0])).numpy())
    assert not all(np.array_equal(outs[0], o) for o in outs[1:])


def test_view_fn_in_dataset_map_and_tf_function_matches_eager():
    config = A.get_preset("cxr", image_size=SIZE, elastic_prob=1.0, equalize_prob=1.0)
    view = A.make_view_fn(config)
    images = [random_image(40, 32, 1, 0), random_image(17, 23, 1, 1), random_image(50, 44, 1, 2)]
    spec = tf.TensorSpec([None, None, 1], tf.float32)
    ds = tf.data.Dataset.from_generator(lambda: iter(images), output_signature=spec).enumerate()
    ds = ds.map(lambda i, x: view(x, tf.stack([i, tf.constant(5, tf.int64)])),
                num_parallel_calls=2, deterministic=True).batch(3)
    batch = next(iter(ds))
    assert batch.shape == (3, SIZE, SIZE, 3)
    graph_view = tf.function(view, input_signature=[spec, tf.TensorSpec([2], tf.int64)])
    for i, image in enumerate(images):
        eager = view(tf.constant(image), tf.constant([i, 5], tf.int64)).numpy()
        np.testing.assert_allclose(batch[i].numpy(), eager, atol=1e-5)
        np.testing.assert_allclose(graph_view(tf.constant(image), tf.constant([i, 5], tf.int64)),
                                   eager, atol=1e-5)


def test_augment_pair_gives_two_different_reproducible_views():
    config = A.get_preset("path", image_size=SIZE)
    image = tf.constant(random_image(60, 45, 3))
    seed = tf.constant([11, 3])
    a, b = A.augment_pair(image, image, seed, config)
    assert a.shape == b.shape == (SIZE, SIZE, 3)
    assert not np.array_equal(a.numpy(), b.numpy())
    a2, b2 = A.augment_pair(image, image, seed, config)
    np.testing.assert_array_equal(a.numpy(), a2.numpy())
    np.testing.assert_array_equal(b.numpy(), b2.numpy())
    # MICLe: two different images of one patient, each through its own seed.
    other = tf.constant(random_image(30, 30, 3, seed=1))
    c, d = A.augment_pair(image, other, seed, config)
    np.testing.assert_array_equal(c.numpy(), a.numpy())
    assert not np.array_equal(d.numpy(), b.numpy())


def test_make_view_fn_refuses_a_non_config():
    with pytest.raises(ValueError, match="AugmentConfig"):
        A.make_view_fn({"image_size": 32})


def _grid_size(size: int, pairs: int, rows: int) -> tuple[int, int]:
    width = CELL_GAP + size + pairs * (PAIR_GAP + 2 * size + CELL_GAP) + CELL_GAP
    return width, HEADER + rows * (size + CELL_GAP) + CELL_GAP


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("preset, pattern", [("path", "breakhis/*.png"),
                                             ("cxr", "nih-cxr14-sample/images/*.png")])
def test_preview_writes_a_png_grid_of_real_images(shared_data, tmp_path, preset, pattern):
    paths = sorted(shared_data.glob(pattern))[:2]
    assert len(paths) == 2, f"expected real images under {shared_data / pattern}"
    out = write_preview([str(p) for p in paths], str(tmp_path / "grid.png"), preset=preset,
                        image_size=48, pairs=2, seed=1)
    assert out == tmp_path / "grid.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]  # no temporary left
    with Image.open(out) as grid:
        assert grid.format == "PNG" and grid.size == _grid_size(48, 2, 2)
        pixels = np.asarray(grid.convert("RGB"), np.float32)
    # Every view cell holds a picture, not a blank tile.
    for row in range(2):
        top = HEADER + row * (48 + CELL_GAP)
        for pair in range(2):
            left = CELL_GAP + 48 + PAIR_GAP + pair * (PAIR_GAP + 2 * 48 + CELL_GAP)
            for cell_left in (left, left + 48 + CELL_GAP):
                assert pixels[top:top + 48, cell_left:cell_left + 48].std() > 1.0
    again = write_preview([str(p) for p in paths], str(tmp_path / "again.png"), preset=preset,
                          image_size=48, pairs=2, seed=1)
    other = write_preview([str(p) for p in paths], str(tmp_path / "other.png"), preset=preset,
                          image_size=48, pairs=2, seed=2)
    assert _sha(again) == _sha(out) and _sha(other) != _sha(out)


def test_preview_refuses_bad_requests_before_writing(tmp_path):
    good = tmp_path / "img.png"
    Image.fromarray((random_image(20, 20, 3) * 255).astype(np.uint8)).save(good)
    out = tmp_path / "grid.png"
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        write_preview([str(good)], str(out), preset="ct")
    with pytest.raises(ValueError, match="pairs"):
        write_preview([str(good)], str(out), pairs=0)
    with pytest.raises(ValueError, match=r"\.png"):
        write_preview([str(good)], str(tmp_path / "grid.jpg"))
    with pytest.raises(ValueError, match="non-empty"):
        write_preview([], str(out))
    missing = tmp_path / "missing.png"
    with pytest.raises(ValueError, match="missing.png"):
        write_preview([str(good), str(missing)], str(out), image_size=32, pairs=1)
    assert not out.exists()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medfound")
    augment_preview.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_writes_the_preview_and_reports_errors(tmp_path, capsys):
    assert set(augment_preview.PRESET_NAMES) == set(A.PRESETS)
    image = tmp_path / "img.png"
    Image.fromarray((random_image(30, 40, 1)[..., 0] * 255).astype(np.uint8)).save(image)
    out = tmp_path / "grid.png"
    args = _parser().parse_args(["augment-preview", str(image), "--preset", "cxr", "--size", "32",
                                 "--pairs", "1", "--seed", "3", "--out", str(out)])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with Image.open(out) as grid:
        assert grid.size == _grid_size(32, 1, 1)
    from medfound.cli.main import main

    assert main(["augment-preview", str(tmp_path / "nope.png"), "--out", str(out),
                 "--pairs", "0"]) == 2
    assert "pairs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["augment-preview", str(image), "--preset", "mri", "--out", str(out)])
