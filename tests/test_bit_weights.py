"""BiT checkpoint import: strict key and shape checks, SavedModel folders, nothing half-loaded."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import medfound
from medfound import BiTWeightsError
from tests.bit_reference import bit_forward, bit_random_checkpoint

UNITS = (1, 1, 1, 1)


def _write(tmp_path, weights, name="BiT-S-tiny.npz"):
    path = tmp_path / name
    np.savez(path, **weights)
    return path


def _assert_unchanged(model, before):
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_missing_key_is_named_and_nothing_is_assigned(tmp_path):
    weights = bit_random_checkpoint(UNITS, 0.5)
    del weights["resnet/block3/unit01/b/group_norm/beta"]
    model = medfound.build_backbone("tiny")
    before = model.get_weights()
    with pytest.raises(BiTWeightsError, match=r"missing keys \(1\): resnet/block3/unit01/b/group_norm/beta"):
        medfound.load_bit_weights(model, _write(tmp_path, weights))
    _assert_unchanged(model, before)


def test_extra_key_is_named(tmp_path):
    weights = bit_random_checkpoint(UNITS, 0.5)
    weights["resnet/block5/unit01/a/group_norm/gamma"] = np.ones(8, np.float32)
    with pytest.raises(BiTWeightsError, match=r"unexpected keys \(1\): resnet/block5/unit01"):
        medfound.load_bit_weights(medfound.build_backbone("tiny"), _write(tmp_path, weights))


def test_shape_mismatch_names_key_and_shapes(tmp_path):
    weights = bit_random_checkpoint(UNITS, 0.5)
    weights["resnet/root_block/standardized_conv2d/kernel"] = np.ones((7, 7, 3, 64), np.float32)
    with pytest.raises(BiTWeightsError) as err:
        medfound.load_bit_weights(medfound.build_backbone("tiny"), _write(tmp_path, weights))
    message = str(err.value)
    assert "BiT-S-tiny.npz does not match" in message
    assert ("shape mismatches (1): resnet/root_block/standardized_conv2d/kernel: "
            "checkpoint (7, 7, 3, 64) vs model (7, 7, 3, 32)") in message


def test_wrong_size_checkpoint_lists_every_mismatch_briefly(tmp_path):
    weights = bit_random_checkpoint(UNITS, 1.0)  # an r-x1 checkpoint into the width-0.5 model
    with pytest.raises(BiTWeightsError) as err:
        medfound.load_bit_weights(medfound.build_backbone("tiny"), _write(tmp_path, weights))
    n_weights = len(medfound.build_backbone("tiny").weights)
    assert f"shape mismatches ({n_weights}):" in str(err.value)
    assert f"... and {n_weights - 10} more" in str(err.value)


def test_head_requested_without_model_head(tmp_path):
    weights = bit_random_checkpoint(UNITS, 0.5, num_classes=3)
    with pytest.raises(BiTWeightsError, match="include_head=True but the model has no head"):
        medfound.load_bit_weights(medfound.build_backbone("tiny"), _write(tmp_path, weights),
                                  include_head=True)


def test_head_class_count_mismatch(tmp_path):
    weights = bit_random_checkpoint(UNITS, 0.5, num_classes=3)
    model = medfound.build_backbone("tiny", num_classes=4)
    with pytest.raises(BiTWeightsError, match="resnet/head/conv2d/bias: checkpoint \\(3,\\) vs model \\(4,\\)"):
        medfound.load_bit_weights(model, _write(tmp_path, weights), include_head=True)


def test_missing_and_unreadable_files(tmp_path):
    model = medfound.build_backbone("tiny")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        medfound.load_bit_weights(model, tmp_path / "BiT-M-R50x1.npz")
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(BiTWeightsError, match="broken.npz: not a readable BiT .npz"):
        medfound.load_bit_weights(model, bad)
    with pytest.raises(BiTWeightsError, match="no saved_model.pb"):
        medfound.load_bit_weights(model, tmp_path)


def _write_saved_model(weights, path, top_scope="resnet50"):
    """A BiT-style TF-Hub SavedModel written with plain tf.Module, not medfound."""
    module = tf.Module()
    module.vars = [tf.Variable(v, name=f"{top_scope}/" + k[len("resnet/"):])
                   for k, v in sorted(weights.items())]
    tf.saved_model.save(module, str(path))


def test_saved_model_folder_with_bit_names(tmp_path):
    weights = bit_random_checkpoint(UNITS, 0.5, seed=5)
    _write_saved_model(weights, tmp_path / "bit_hub")
    model = medfound.build_backbone("tiny")
    loaded = medfound.load_bit_weights(model, tmp_path / "bit_hub")
    assert len(loaded) == len(model.weights)
    images = np.random.default_rng(0).uniform(size=(1, 48, 48, 3)).astype(np.float32)
    np.testing.assert_allclose(model(images)["pre_logits"],
                               bit_forward(weights, images, UNITS)["pre_logits"], atol=1e-4)


def test_saved_model_folder_with_other_names_is_refused(tmp_path):
    module = tf.Module()
    module.vars = [tf.Variable(np.ones((3, 3), np.float32), name="dense/kernel")]
    tf.saved_model.save(module, str(tmp_path / "other"))
    with pytest.raises(BiTWeightsError, match="unexpected keys"):
        medfound.load_bit_weights(medfound.build_backbone("tiny"), tmp_path / "other")
