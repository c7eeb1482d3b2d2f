"""Fine-tuning: config validation, masked losses, early stopping, and evidence runs on real data."""
from __future__ import annotations

import argparse
import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from medfound.finetune.config import FinetuneConfig
from medfound.finetune.losses import masked_sigmoid_cross_entropy, masked_softmax_cross_entropy

OUTPUT_FILES = ("model.keras", "config.json", "metrics.json", "history.json", "roc_test.png", "training_curves.png")


def _config(tmp_path, data, **kw) -> FinetuneConfig:
    base = dict(module="random:tiny", task="medmnist", data=str(data), out_dir=str(tmp_path / "run"),
                image_size=32, epochs=2, batch_size=16, n_boot=50, verbose=False)
    base.update(kw)
    return FinetuneConfig(**base)


def test_config_validation_lists_every_problem_before_any_work(tmp_path):
    cfg = FinetuneConfig(module="random:nosuch", task="xray", data=str(tmp_path / "absent"),
                         out_dir=str(tmp_path / "run"), mode="half", label_fraction=1.5, batch_size=0,
                         epochs=0, optimizer="rmsprop", image_size=16, patience=-1, threshold=1.0)
    with pytest.raises(ValueError) as err:
        cfg.validate()
    text = str(err.value)
    for needle in ("unknown task 'xray'", "mode must be", "label_fraction must be in (0, 1], got 1.5", "batch_size must be",
                   "epochs must be", "optimizer must be", "image_size must be", "patience must be",
                   "threshold must be", "data not found", "random:nosuch"):
        assert needle in text, needle
    assert not (tmp_path / "run").exists()
    for fraction in (0, -0.1, 1.01, "0%", "abc"):
        with pytest.raises(ValueError, match="label.fraction"):
            _config(tmp_path, tmp_path, label_fraction=fraction).validate()
    ok = _config(tmp_path, tmp_path, label_fraction="10%")
    ok.validate()
    assert ok.label_fraction == pytest.approx(0.1)
    with pytest.raises(ValueError, match="not found: .*missing.npz"):
        _config(tmp_path, tmp_path, module=f"bit-m:{tmp_path}/missing.npz").validate()


def test_masked_losses_ignore_masked_cells():
    rng = np.random.default_rng(0)
    labels = (rng.random((6, 4)) > 0.5).astype(np.float32)
    logits = tf.constant(rng.normal(size=(6, 4)).astype(np.float32))
    mask = (rng.random((6, 4)) > 0.3).astype(np.float32)
    loss = float(masked_sigmoid_cross_entropy(labels, logits, mask))
    used = mask > 0
    x, y = logits.numpy()[used], labels[used]
    direct = np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x))))
    assert loss == pytest.approx(direct, rel=1e-5)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        value = masked_sigmoid_cross_entropy(labels, logits, mask)
    grad = tape.gradient(value, logits).numpy()
    assert np.all(grad[~used] == 0) and np.all(grad[used] != 0)
    assert float(masked_sigmoid_cross_entropy(labels, logits, np.zeros_like(mask))) == 0.0
    onehot = np.eye(3, dtype=np.float32)[[0, 2, 1]]
    z = rng.normal(size=(3, 3)).astype(np.float32)
    row_mask = np.array([[1, 1, 1], [0, 0, 0], [1, 1, 1]], np.float32)
    expected = np.mean([-np.log(np.exp(z[i]) / np.exp(z[i]).sum())[onehot[i].argmax()] for i in (0, 2)])
    assert float(masked_softmax_cross_entropy(onehot, z, row_mask)) == pytest.approx(expected, rel=1e-5)


def test_nih_multilabel_linear_probe_beats_chance_on_patient_split(shared_data, tmp_path):
    from medfound.data.labeled import check_no_leakage, load_task_splits
    from medfound.finetune.trainer import finetune

    data = shared_data / "nih-cxr14-sample"
    classes = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration"]  # the sample's common findings
    cfg = FinetuneConfig(module="random:tiny", task="nih", data=str(data), out_dir=str(tmp_path / "nih"),
                         classes=classes, mode="linear", image_size=64, epochs=8, patience=3, batch_size=32,
                         learning_rate=0.01, n_boot=200, verbose=False)
    finetune(cfg)
    for name in OUTPUT_FILES:
        assert (tmp_path / "nih" / name).is_file(), name
    metrics = json.loads((tmp_path / "nih" / "metrics.json").read_text())
    test = metrics["test"]
    defined = [v["auc"] for v in test["per_class"].values() if v["positives"] and v["negatives"]]
    assert defined and test["mean_auc"] == pytest.approx(np.mean(defined))  # only classes with both labels
    print(f"NIH sample, random tiny backbone, linear, 64 px: test mean AUC {test['mean_auc']:.3f} "
          f"(95% CI {test['mean_auc_ci95']}), per class { {k: v['auc'] for k, v in test['per_class'].items()} }")
    # Beats chance beyond bootstrap noise: the interval's lower bound (measured 0.537) is above 0.5.
    assert test["mean_auc_ci95"][0] > 0.5, test["mean_auc_ci95"]
    for v in test["per_class"].values():
        assert v["auc_ci95"][0] <= v["auc"] <= v["auc_ci95"][1]
    assert test["bootstrap"]["by"] == "patient" and test["patients"] >= 20
    splits = load_task_splits("nih", data, seed=0)
    check_no_leakage(splits)
    assert test["examples"] == len(splits["test"]) and metrics["train_examples"] == len(splits["train"])
    saved = json.loads((tmp_path / "nih" / "config.json").read_text())
    assert saved["run"]["class_names"] == classes and saved["run"]["image_size"] == 64
    assert FinetuneConfig.load(tmp_path / "nih" / "config.json").classes == classes


def test_pneumoniamnist_linear_probe_and_early_stopping(shared_data, tmp_path):
    from medfound.finetune.trainer import finetune

    npz = shared_data / "pneumoniamnist.npz"
    result = finetune(_config(tmp_path, npz, out_dir=str(tmp_path / "pn"), label_fraction=0.25, epochs=4,
                              patience=0, batch_size=64, learning_rate=0.01, n_boot=200))
    test = result.metrics["test"]
    print(f"PneumoniaMNIST, random tiny backbone, linear, 32 px, 25% labels: test AUC {test['mean_auc']:.3f}")
    assert test["mean_auc"] > 0.7 and test["examples"] == 624
    assert {"sensitivity", "specificity", "accuracy"} <= set(test)
    assert len(result.history) == 4 and not result.stopped_early  # patience 0: never stops early
    assert result.metrics["train_examples"] == pytest.approx(0.25 * 4708, abs=1)
    best = result.history[result.best_epoch - 1]
    assert result.metrics["val"]["mean_auc"] == pytest.approx(best["val_mean_auc"], abs=1e-6)  # best restored

    # No epoch can beat the first by a whole AUC point: training must stop after 1 + patience epochs.
    stopped = finetune(_config(tmp_path, npz, out_dir=str(tmp_path / "stop"), label_fraction=0.05, epochs=20,
                               patience=2, min_delta=1.0, n_boot=20))
    assert stopped.stopped_early and len(stopped.history) == 3 and stopped.best_epoch == 1
    history = json.loads((tmp_path / "stop" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert stopped.metrics["val"]["mean_auc"] == pytest.approx(history[0]["val_mean_auc"], abs=1e-6)


def test_full_finetune_at_a_large_rate_does_not_diverge(shared_data, tmp_path):
    """The full-mode head reads the raw block4 embedding (squared norm ~2e5 here): without
    the standardisation measured on the training images, SGD at 0.05 reached a loss of 1e9 in
    the first epoch and every score saturated (validation AUC exactly 0.5)."""
    from medfound.finetune.trainer import finetune

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = finetune(_config(tmp_path, shared_data / "pneumoniamnist.npz", mode="full",
                                  label_fraction=0.2, epochs=2, steps_per_epoch=10, batch_size=64,
                                  optimizer="sgd", learning_rate=0.05, patience=0, n_boot=20))
    assert not [w for w in caught if "Gradients do not exist" in str(w.message)]
    losses = [h["train_loss"] for h in result.history]
    assert losses[0] < 3.0 and losses[1] < losses[0], losses
    assert result.metrics["val"]["mean_auc"] > 0.85, result.metrics["val"]
    norm = result.model.get_layer("head").get_layer("feature_standardization")
    assert norm.mean.shape[-1] == 1024 and float(np.max(np.abs(norm.mean))) > 1.0


def test_breakhis_tiles_full_finetune_from_cli(shared_data, tmp_path):
    import medfound.cli.finetune as cli
    from medfound.resolve import load

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    out = tmp_path / "bh"
    args = parser.parse_args(["finetune", "--module", "random:tiny", "--task", "breakhis",
                              "--data", str(shared_data / "breakhis"), "--mode", "full", "--image-size", "64",
                              "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "8",
                              "--optimizer", "adamw", "--learning-rate", "0.001", "--n-boot", "50",
                              "--data-option", "tile=224", "--out", str(out), "--quiet"])
    assert args.func(args) == 0
    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert [h["steps"] for h in history] == [3, 3] and all(np.isfinite(h["train_loss"]) for h in history)
    assert metrics["task_type"] == "binary" and "sensitivity" in metrics["test"] and "specificity" in metrics["test"]
    splits = json.loads((out / "config.json").read_text())["run"]["splits"]
    assert splits["train"]["examples"] % 6 == 0  # 700x460 images give 2 x 3 tiles of 224 px
    model = keras.saving.load_model(str(out / "model.keras"))
    initial = load("random:tiny", seed=0)
    trained = model.get_layer(initial.name)
    changed = [not np.allclose(a, b) for a, b in zip(initial.get_weights(), trained.get_weights())]
    assert sum(changed) > len(changed) // 2  # end to end: the backbone trained, not only the head
    images = tf.random.uniform((2, 64, 64, 3), seed=1)
    probs = model(images)["probabilities"].numpy()
    assert probs.shape == (2, 1) and np.all((probs > 0) & (probs < 1))


def _small_pneumonia(shared_data, folder, per_split=(96, 48, 48)):
    """A few real PneumoniaMNIST images per split (both classes in each), written as the
    MedMNIST npz the task reads, so multi-replica runs stay cheap."""
    with np.load(shared_data / "pneumoniamnist.npz") as data:
        arrays = {}
        for split, count in zip(("train", "val", "test"), per_split):
            labels = data[f"{split}_labels"]
            pick = np.concatenate([np.flatnonzero(labels[:, 0] == c)[:count // 2] for c in (0, 1)])
            arrays[f"{split}_images"] = data[f"{split}_images"][pick]
            arrays[f"{split}_labels"] = labels[pick]
    path = folder / "pneumoniamnist_small.npz"
    np.savez(path, **arrays)
    return path


def test_full_finetune_on_two_replicas_matches_one_device(shared_data, tmp_path, two_replica_strategy):
    """--strategy for finetune: each batch is split over two real replicas (logical CPU devices)
    and the gradients averaged, so two replicas take the steps one device takes."""
    from medfound.resolve import load
    from medfound.finetune.trainer import finetune

    npz = _small_pneumonia(shared_data, tmp_path)
    common = dict(mode="full", epochs=1, steps_per_epoch=2, batch_size=8, optimizer="sgd",
                  learning_rate=0.05, n_boot=20, patience=0)
    one = finetune(_config(tmp_path, npz, out_dir=str(tmp_path / "one"), **common))
    two = finetune(_config(tmp_path, npz, out_dir=str(tmp_path / "two"), strategy="mirrored", **common),
                   strategy=two_replica_strategy)
    assert two_replica_strategy.num_replicas_in_sync == 2
    assert json.loads((tmp_path / "two" / "config.json").read_text())["strategy"] == "mirrored"
    assert one.history[0]["steps"] == two.history[0]["steps"] == 2
    assert two.history[0]["train_loss"] == pytest.approx(one.history[0]["train_loss"], rel=1e-4)
    initial = load("random:tiny", seed=0).get_weights()
    trained_one, trained_two = one.model.get_weights(), two.model.get_weights()
    assert len(trained_two) == len(trained_one) > len(initial)  # backbone first, then the head
    for a, b in zip(trained_one, trained_two):  # the same steps, up to float32 reduction order
        assert np.linalg.norm(b - a) <= 1e-4 * max(np.linalg.norm(a), 1e-6), \
            np.linalg.norm(b - a) / np.linalg.norm(a)
    assert any(not np.allclose(w, i) for w, i in zip(trained_two, initial))  # and they trained
    reloaded = keras.saving.load_model(str(tmp_path / "two" / "model.keras"))
    images = tf.random.uniform((2, 32, 32, 3), seed=1)
    np.testing.assert_allclose(reloaded(images)["logits"], two.model(images)["logits"], atol=1e-5)
    with pytest.raises(ValueError, match="strategy must be one of"):
        _config(tmp_path, npz, strategy="multiworker").validate()


def test_linear_probe_embeds_on_two_replicas_like_one_device(shared_data, tmp_path,
                                                             two_replica_strategy):
    """--mode linear with a strategy: the backbone's variables sit on both devices, every
    embedding batch is split over the replicas (rows back in order), the head trains as before."""
    from medfound.resolve import load
    from medfound.finetune.trainer import embedding_function, finetune
    from medfound.utils.replicas import split_over_replicas

    with two_replica_strategy.scope():
        backbone = load("random:tiny", seed=0)
    mirrored = backbone.weights[0].value  # the tf.Variable behind the Keras variable
    devices = {v.device for v in two_replica_strategy.experimental_local_results(mirrored)}
    assert len(devices) == 2
    spread = split_over_replicas(embedding_function(backbone), two_replica_strategy)
    images = tf.random.uniform((5, 32, 32, 3), seed=2)
    rows = spread(images).numpy()
    assert spread.spread.experimental_get_tracing_count() == 1
    np.testing.assert_allclose(rows, embedding_function(backbone)(images).numpy(), atol=1e-5)

    npz = _small_pneumonia(shared_data, tmp_path)
    common = dict(mode="linear", epochs=2, batch_size=16, n_boot=20)
    one = finetune(_config(tmp_path, npz, out_dir=str(tmp_path / "one"), **common))
    two = finetune(_config(tmp_path, npz, out_dir=str(tmp_path / "two"), strategy="mirrored", **common),
                   strategy=two_replica_strategy)
    for a, b in zip(one.history, two.history):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_mean_auc"] == pytest.approx(a["val_mean_auc"], abs=1e-4)
    assert two.metrics["test"]["mean_auc"] == pytest.approx(one.metrics["test"]["mean_auc"], abs=1e-4)
    assert (tmp_path / "two" / "model.keras").is_file()
