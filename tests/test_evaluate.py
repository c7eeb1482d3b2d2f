"""Evaluation of a fine-tuned model: class matching, config checks, and graded shifts on real data."""
from __future__ import annotations

import argparse
import json

import pytest

from medfound.data.labeled import load_task_splits
from medfound.evaluation.metrics import mean_auc
from medfound.evaluation.shifts import apply_shift
from medfound.finetune.evaluate import EvaluateConfig, match_classes, normalise_class
from medfound.finetune.trainer import predict_logits, probabilities


def test_classes_match_across_datasets_by_name():
    nih = ["Atelectasis", "Cardiomegaly", "Effusion", "Pleural_Thickening"]
    chexpert = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    assert normalise_class("Pleural Effusion") == normalise_class("effusion")
    assert match_classes(nih, chexpert) == [(0, 0), (1, 1), (2, 4)]
    assert match_classes(["malignant"], ["positive"]) == [(0, 0)]  # binary: one output, one column
    with pytest.raises(ValueError, match="share none"):
        match_classes(["Hernia", "Mass"], chexpert)


def test_bad_evaluation_config_is_refused_before_any_work(tmp_path):
    cfg = EvaluateConfig(model=str(tmp_path / "nothing"), task="xray", data=str(tmp_path / "absent"),
                         out_dir=str(tmp_path / "out"), split="dev", shifts=["blur"], severities=(0, 7),
                         batch_size=0)
    with pytest.raises(ValueError) as err:
        cfg.validate()
    for needle in ("unknown task", "split must be", "data not found", "no model.keras", "unknown shift(s) ['blur']",
                   "severities must be numbers", "batch_size"):
        assert needle in str(err.value), needle
    assert not (tmp_path / "out").exists()


def test_evaluate_under_shifts_writes_plot_and_severity_zero_equals_clean(shared_data, tmp_path):
    import medfound.cli.evaluate as cli
    from medfound.finetune.config import FinetuneConfig
    from medfound.finetune.trainer import finetune

    npz = shared_data / "pneumoniamnist.npz"
    run = tmp_path / "ft"
    trained = finetune(FinetuneConfig(module="random:tiny", task="medmnist", data=str(npz), out_dir=str(run),
                                      image_size=32, label_fraction=0.05, epochs=2, batch_size=32,
                                      learning_rate=0.01, n_boot=50, verbose=False))
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    out = tmp_path / "eval"
    args = parser.parse_args(["evaluate", "--model", str(run), "--task", "medmnist", "--data", str(npz),
                              "--shift", "contrast,gamma", "--severities", "0,5", "--n-boot", "50",
                              "--out", str(out), "--quiet"])
    assert args.func(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("shifts.png", "roc.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    clean = metrics["clean"]
    test = load_task_splits("medmnist", str(npz), seed=0)["test"]
    assert metrics["examples"] == 624 and metrics["split_seed"] == 0
    # The clean test metric is the fine-tune's own test metric (same model, split and bootstrap seed).
    assert clean["mean_auc"] == pytest.approx(trained.metrics["test"]["mean_auc"], abs=1e-6)
    for kind in ("contrast", "gamma"):
        rows = metrics["shifts"][kind]
        assert [r["severity"] for r in rows] == [0.0, 5.0]
        assert rows[0]["mean_auc"] == clean["mean_auc"] and rows[0]["accuracy"] == clean["accuracy"]
        assert rows[0]["mean_auc_ci95"] == clean["mean_auc_ci95"]
        assert rows[1]["mean_auc"] != clean["mean_auc"]  # the shift reached the model
        # The shifted score is the AUC of the model's own predictions on the shifted test images.
        logits = predict_logits(trained.model, test, 32, 32, transform=lambda im, k=kind: apply_shift(im, k, 5.0))
        assert rows[1]["mean_auc"] == pytest.approx(mean_auc(test.labels, probabilities(logits, test.task), test.mask),
                                                    abs=1e-6)
    print(f"PneumoniaMNIST test AUC clean {clean['mean_auc']:.3f}; contrast 5: "
          f"{metrics['shifts']['contrast'][1]['mean_auc']:.3f}; gamma 5: {metrics['shifts']['gamma'][1]['mean_auc']:.3f}")
