"""BiT backbone: exact agreement with an independent NumPy BiT, shapes, sizes and round trips."""
from __future__ import annotations

import numpy as np
import pytest

import medfound
from medfound.models.configs import ARCHITECTURES
from medfound.models.inference import fold
from tests.bit_reference import bit_forward, bit_random_checkpoint

UNITS = (2, 1, 1, 1)  # two units in block 1: exercises the identity shortcut too
WIDTH = 0.5


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    weights = bit_random_checkpoint(UNITS, WIDTH, num_classes=5, seed=1)
    path = tmp_path_factory.mktemp("bit") / "BiT-M-tiny.npz"
    np.savez(path, **weights)
    return path, weights


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(2).uniform(0, 1, (2, 64, 72, 3)).astype(np.float32)


def test_matches_numpy_reference_on_every_output(checkpoint, images):
    path, weights = checkpoint
    model = medfound.build_backbone("tiny", units=UNITS, num_classes=5)
    loaded = medfound.load_bit_weights(model, path, include_head=True)
    assert len(loaded) == len(weights)  # every key consumed
    assert len(loaded) == len(model.weights)  # every weight assigned
    expected = bit_forward(weights, images, UNITS)
    got = model(images)
    assert set(got) == set(expected)
    for key, ref in expected.items():
        np.testing.assert_allclose(np.asarray(got[key]), ref, atol=1e-4, rtol=1e-5, err_msg=key)
    assert got["pre_logits"].shape == (2, model.embedding_dim) == (2, 2048 * WIDTH)


def test_without_head_ignores_head_keys(checkpoint, images):
    path, weights = checkpoint
    model = medfound.build_backbone("tiny", units=UNITS)
    loaded = medfound.load_bit_weights(model, path)
    assert not any("head" in key for key in loaded)
    ref = bit_forward(weights, images, UNITS)["pre_logits"]
    np.testing.assert_allclose(model(images)["pre_logits"], ref, atol=1e-4, rtol=1e-4)


def test_folded_inference_model_is_equivalent_and_skips_standardisation(checkpoint, images):
    path, _ = checkpoint
    model = medfound.build_backbone("tiny", units=UNITS)
    medfound.load_bit_weights(model, path)
    folded = fold(model)
    np.testing.assert_allclose(folded(images)["pre_logits"], model(images)["pre_logits"],
                               atol=1e-5)
    # The folded graph really uses kernels as stored: unfolded weights in it give other outputs.
    raw = medfound.BiTBackbone("tiny", units=UNITS, weight_standardization=False)
    raw.set_weights(model.get_weights())
    assert np.abs(raw(images)["pre_logits"] - model(images)["pre_logits"]).max() > 1e-2


def test_dynamic_batch_and_sizes():
    model = medfound.build_backbone("tiny")
    for batch, height, width in ((1, 32, 32), (3, 45, 64), (2, 97, 33)):
        out = model(np.zeros((batch, height, width, 3), np.float32))
        assert out["pre_logits"].shape == (batch, 1024)
        stride32 = -(-height // 32), -(-width // 32)
        assert out["feature_map"].shape[1:3] == stride32
        assert out["stem"].shape[1:3] == (-(-height // 4), -(-width // 4))


def test_fixed_size_below_minimum_is_refused():
    with pytest.raises(ValueError, match=">= 32"):
        medfound.build_backbone("tiny", image_size=16)


def test_unknown_arch_and_bad_width_are_refused():
    with pytest.raises(ValueError, match="unknown architecture 'r51x1'"):
        medfound.build_backbone("r51x1")
    with pytest.raises(ValueError, match="GroupNorm"):
        medfound.build_backbone("tiny", width=0.3)


def test_bit_constants_in_layers():
    model = medfound.build_backbone("tiny")
    norms = [layer for layer in model.layers if "group_norm" in layer.name]
    assert norms and all(n.groups == 32 and n.epsilon == 1e-5 for n in norms)
    convs = [layer for layer in model.layers if "standardized_conv2d" in layer.name]
    assert all(not c.use_bias and c.epsilon == 1e-10 for c in convs)
    # Explicit (1, 1) padding, or SAME where that is the same thing (3x3, stride 1).
    assert all(c.padding == "valid" or (c.kernel_size == (3, 3) and c.strides == (1, 1))
               for c in convs)
    assert any(c.padding == "same" for c in convs)


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_analytic_parameter_count_matches_model(name):
    spec = ARCHITECTURES[name]
    assert medfound.build_backbone(name).count_params() == spec.num_params()
    assert medfound.build_backbone(name, num_classes=7).count_params() == spec.num_params(7)


def test_full_size_r50x1_smoke():
    """One full-size check: r50x1 at 224 px, BiT's parameter count and a 2048-d embedding."""
    model = medfound.build_backbone("r50x1", image_size=224)
    assert model.count_params() == ARCHITECTURES["r50x1"].num_params() == 23_500_352
    out = model(np.random.default_rng(0).uniform(size=(1, 224, 224, 3)).astype(np.float32))
    assert out["feature_map"].shape == (1, 7, 7, 2048)
    assert out["pre_logits"].shape == (1, 2048)
    assert np.isfinite(out["pre_logits"]).all()


def test_weights_h5_and_keras_round_trips(tmp_path, checkpoint, images):
    path, _ = checkpoint
    model = medfound.build_backbone("tiny", units=UNITS, num_classes=5)
    medfound.load_bit_weights(model, path, include_head=True)
    expected = model(images)

    model.save_weights(tmp_path / "backbone.weights.h5")
    twin = medfound.build_backbone("tiny", units=UNITS, num_classes=5)
    twin.load_weights(tmp_path / "backbone.weights.h5")
    for key in expected:
        np.testing.assert_array_equal(twin(images)[key], expected[key])

    import keras

    model.save(tmp_path / "backbone.keras")
    restored = keras.saving.load_model(tmp_path / "backbone.keras")
    assert isinstance(restored, medfound.BiTBackbone) and restored.spec == model.spec
    for key in expected:
        np.testing.assert_array_equal(restored(images)[key], expected[key])


def test_files_saved_with_keras_own_group_norm_still_load(tmp_path, monkeypatch, checkpoint, images):
    """Modules saved before medfound had its own GroupNorm (Keras' layer, ZeroPadding before
    every 3x3 conv) must load into today's backbone with the same outputs."""
    import keras

    from medfound.models import bit

    def keras_group_norm(name, statistics="two_pass"):  # what group_norm() returned before the rewrite
        return keras.layers.GroupNormalization(groups=32, epsilon=1e-5, name=name)

    path, _ = checkpoint
    with monkeypatch.context() as patch:
        patch.setattr(bit, "group_norm", keras_group_norm)
        old = medfound.build_backbone("tiny", units=UNITS, num_classes=5)
    assert not any(type(l).__module__.startswith("medfound") for l in old.layers
                   if "group_norm" in l.name)
    medfound.load_bit_weights(old, path, include_head=True)
    old.save_weights(tmp_path / "old.weights.h5")
    old.save(tmp_path / "old.keras")

    new = medfound.build_backbone("tiny", units=UNITS, num_classes=5)
    new.load_weights(tmp_path / "old.weights.h5")
    restored = keras.saving.load_model(tmp_path / "old.keras")
    expected = old(images)
    for key in expected:
        np.testing.assert_allclose(new(images)[key], expected[key], atol=1e-4)
        np.testing.assert_allclose(restored(images)[key], expected[key], atol=1e-4)
