"""Supervised natural-image pretraining (the BiT-S stage): it learns, and its run continues through
SimCLR's ``--init bit-s:`` and exports through the real export path."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medfound.pretrain.supervised import (CHECKPOINT_FILE, SupervisedConfig, bit_checkpoint_arrays,
                                          pretrain_supervised)


def separable_npz(path, n=64, size=32, n_test=16):
    """Two classes a small network tells apart in a few steps: bright top half vs bright bottom.
    The test images are drawn apart from the training ones (no image is in both)."""
    rng = np.random.default_rng(0)
    labels = np.arange(n + n_test) % 2
    images = rng.integers(0, 60, (n + n_test, size, size, 3)).astype(np.uint8)
    for i, label in enumerate(labels):
        half = slice(0, size // 2) if label == 0 else slice(size // 2, size)
        images[i, half] += 150
    labels = labels[:, None].astype(np.uint8)
    np.savez(path, train_images=images[:n], train_labels=labels[:n],
             test_images=images[n:], test_labels=labels[n:], classes=np.array(["top", "bottom"]))
    return path


@pytest.fixture(scope="module")
def supervised_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("supervised")
    data = separable_npz(root / "toy.npz")
    config = SupervisedConfig(data=str(data), out_dir=str(root / "run"), arch="tiny", steps=30,
                              batch_size=16, learning_rate=0.05, crop_padding=2, log_every=10)
    return config, pretrain_supervised(config, verbose=False)


def test_supervised_run_learns_and_records_itself(supervised_run):
    config, result = supervised_run
    assert [h["step"] for h in result.history] == [10, 20, 30]
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.eval_accuracy is not None and result.eval_accuracy >= 0.9
    assert result.class_names == ["top", "bottom"]
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["method"] == "supervised" and run["arch"] == "tiny" and run["steps"] == 30
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["eval_accuracy"] == result.eval_accuracy
    # The checkpoint holds the backbone and its head under BiT's keys.
    with np.load(result.checkpoint) as arrays:
        keys = set(arrays.files)
    assert keys == set(bit_checkpoint_arrays(result.model))
    assert "resnet/head/conv2d/kernel" in keys
    # A finished run of the same configuration is reused, not trained again.
    again = pretrain_supervised(config, verbose=False)
    assert again.seconds == 0.0 and again.eval_accuracy == result.eval_accuracy


def test_simclr_continues_from_the_supervised_checkpoint(supervised_run, tmp_path):
    import keras

    from medfound.export.exporter import export_module
    from medfound.resolve import load
    from medfound.models.bit import build_backbone
    from medfound.models.bit_weights import load_bit_weights
    from medfound.pretrain import PretrainConfig, pretrain

    config, result = supervised_run
    images = np.random.default_rng(1).integers(0, 255, (16, 32, 32), dtype=np.uint8)
    np.savez(tmp_path / "cxr.npz", train_images=images)
    ssl = pretrain(PretrainConfig(data=str(tmp_path / "cxr.npz"), out_dir=str(tmp_path / "ssl"),
                                  arch="tiny", image_size=32, batch_size=8, steps=1,
                                  init=f"bit-s:{result.checkpoint}", checkpoint_every=1,
                                  preview_images=0), verbose=False)
    run = json.loads((ssl.run_dir / "run.json").read_text())
    assert run["init"] == "bit-s" and run["init_path"].endswith(CHECKPOINT_FILE)
    # The supervised backbone itself exports and loads as a module, equal to the trained one
    # (compared on the embedding: the module form drops the head's final GroupNorm).
    module = export_module(result.run_dir, tmp_path / "sup.keras", fmt="keras",
                           name="test-supervised-tiny", modality="cxr")
    loaded = load(str(module))
    probe = np.linspace(0, 1, 2 * 32 * 32 * 3, dtype=np.float32).reshape(2, 32, 32, 3)
    reference = build_backbone("tiny")
    load_bit_weights(reference, result.checkpoint)
    got = keras.ops.convert_to_numpy(loaded(probe, training=False)["embedding"])
    want = keras.ops.convert_to_numpy(reference(probe, training=False)["embedding"])
    np.testing.assert_allclose(got, want, atol=1e-4)
    want_trained = keras.ops.convert_to_numpy(result.model(probe, training=False)["embedding"])
    np.testing.assert_allclose(got, want_trained, atol=1e-4)


def test_bad_data_is_refused_naming_the_file(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, train_images=np.zeros((4, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"bad\.npz: missing arrays \['train_labels', "
                                         r"'test_images', 'test_labels'\]"):
        pretrain_supervised(SupervisedConfig(data=str(bad), out_dir=str(tmp_path / "run"),
                                             arch="tiny"), verbose=False)
    one_class = tmp_path / "one_class.npz"
    np.savez(one_class, train_images=np.zeros((4, 32, 32), np.uint8),
             train_labels=np.zeros(4, np.uint8), test_images=np.zeros((2, 32, 32), np.uint8),
             test_labels=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match=r"one_class\.npz: 'train_labels' hold a single class"):
        pretrain_supervised(SupervisedConfig(data=str(one_class), out_dir=str(tmp_path / "run"),
                                             arch="tiny"), verbose=False)
    with pytest.raises(ValueError, match="labeled image .npz not found"):
        SupervisedConfig(data=str(tmp_path / "absent.npz"), out_dir="x", arch="tiny").validate()
    assert not (tmp_path / "run").exists()
