"""Fine-tuning: config validation, masked losses, early stopping, and evidence runs on real data."""
from __future__ import annotations

import argparse
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from medfound.finetune.config import FinetuneConfig, parse_module
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
    with pytest.raises(ValueError, match="BiT checkpoint not found"):
        _config(tmp_path, tmp_path, module=f"bit:r50x1:{tmp_path}/missing.npz").validate()


def test_module_specs_parse():
    assert parse_module("random:tiny").kind == "random" and parse_module("random:tiny").arch == "tiny"
    spec = parse_module("bit:r50x1:/x/BiT-M-R50x1.npz")
    assert (spec.kind, spec.arch, spec.path) == ("bit", "r50x1", "/x/BiT-M-R50x1.npz")
    assert parse_module("cxr-50x1-remedis-m").kind == "load"
    with pytest.raises(ValueError, match="bit:ARCH:CHECKPOINT"):
        parse_module("bit:r50x1")


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
    assert test["mean_auc"] > 0.5
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


def test_breakhis_tiles_full_finetune_from_cli(shared_data, tmp_path):
    import medfound.cli.finetune as cli
    from medfound.finetune.model import load_backbone

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
    initial = load_backbone("random:tiny", seed=0).model
    trained = model.get_layer(initial.name)
    changed = [not np.allclose(a, b) for a, b in zip(initial.get_weights(), trained.get_weights())]
    assert sum(changed) > len(changed) // 2  # end to end: the backbone trained, not only the head
    images = tf.random.uniform((2, 64, 64, 3), seed=1)
    probs = model(images)["probabilities"].numpy()
    assert probs.shape == (2, 1) and np.all((probs > 0) & (probs < 1))
