"""Metrics against independent brute-force computations; bootstrap determinism; ROC plot file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medfound.evaluation import (accuracy, bootstrap_auc, classification_report, mean_auc, per_class_auc,
                                 plot_roc_curves, roc_auc, roc_curve, sensitivity_specificity)


def brute_auc(y, s):
    """Pairwise definition: P(positive scores higher) + P(tie) / 2, over all positive-negative pairs."""
    pos, neg = s[y == 1], s[y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _data(n=300, k=3, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, k))
    s = y * 0.8 + rng.normal(0, 1, (n, k))
    return y, (np.round(s, 1) if ties else s)  # rounding makes many ties


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_pairwise_brute_force_with_ties(seed):
    y, s = _data(seed=seed)
    got = per_class_auc(y, s)
    for k in range(3):
        assert got[k] == pytest.approx(brute_auc(y[:, k], s[:, k]), abs=1e-12)
        assert roc_auc(y[:, k], s[:, k]) == pytest.approx(got[k], abs=1e-12)
    assert mean_auc(y, s) == pytest.approx(np.mean(got))
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0


def test_mask_leaves_cells_out_and_single_class_is_nan():
    y, s = _data(seed=3)
    mask = np.random.default_rng(4).integers(0, 2, y.shape)
    got = per_class_auc(y, s, mask)
    for k in range(3):
        keep = mask[:, k] == 1
        assert got[k] == pytest.approx(brute_auc(y[keep, k], s[keep, k]), abs=1e-12)
    assert np.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_bootstrap_is_seeded_contains_the_estimate_and_matches_explicit_resampling():
    y, s = _data(n=400, seed=5)
    a = bootstrap_auc(y, s, n_boot=300, seed=11)
    b = bootstrap_auc(y, s, n_boot=300, seed=11)
    c = bootstrap_auc(y, s, n_boot=300, seed=12)
    np.testing.assert_array_equal(a["low"], b["low"])
    np.testing.assert_array_equal(a["high"], b["high"])
    assert not np.array_equal(a["low"], c["low"])
    assert np.all(a["low"] <= a["auc"]) and np.all(a["auc"] <= a["high"])
    assert a["mean_low"] <= a["mean"] <= a["mean_high"]
    assert np.all(a["high"] - a["low"] < 0.2)
    # A one-draw bootstrap equals the AUC of the explicitly repeated resample (same multinomial draw).
    rng = np.random.default_rng(7)
    counts = rng.multinomial(len(y), np.full(len(y), 1.0 / len(y)))
    idx = np.repeat(np.arange(len(y)), counts)
    one = bootstrap_auc(y, s, n_boot=1, seed=7)
    lo = one["low"][0]
    assert lo == pytest.approx(brute_auc(y[idx, 0], s[idx, 0]), abs=1e-12)


def test_patient_bootstrap_is_wider_when_patients_are_duplicated():
    y, s = _data(n=200, k=1, seed=8)
    y2, s2 = np.repeat(y, 5, axis=0), np.repeat(s, 5, axis=0)
    groups = np.repeat(np.arange(200), 5)
    naive = bootstrap_auc(y2, s2, n_boot=300, seed=0)
    by_patient = bootstrap_auc(y2, s2, n_boot=300, seed=0, groups=groups)
    assert (by_patient["high"] - by_patient["low"])[0] > 1.5 * (naive["high"] - naive["low"])[0]


def test_roc_curve_area_equals_auc_and_is_monotone():
    y, s = _data(seed=9)
    fpr, tpr, thr = roc_curve(y[:, 0], s[:, 0])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0) and np.all(np.diff(thr) < 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y[:, 0], s[:, 0]), abs=1e-12)


def test_sensitivity_specificity_and_accuracy_by_direct_count():
    y, s = _data(seed=10)
    yt, st = y[:, 0], s[:, 0]
    sens, spec = sensitivity_specificity(yt, st, threshold=0.3)
    assert sens == sum(1 for a, b in zip(yt, st) if a == 1 and b >= 0.3) / sum(yt == 1)
    assert spec == sum(1 for a, b in zip(yt, st) if a == 0 and b < 0.3) / sum(yt == 0)
    assert accuracy(yt, st, "binary", 0.3) == pytest.approx(np.mean((st >= 0.3) == (yt == 1)))
    onehot = np.eye(3)[[0, 1, 2, 2]]
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.5, 0.2, 0.3], [0.1, 0.1, 0.8]])
    assert accuracy(onehot, probs, "multiclass") == 0.75


def test_report_is_json_ready_and_plot_is_written_atomically(tmp_path):
    y, s = _data(n=200, k=1, seed=11)
    report = classification_report(y, s, ["tumor"], "binary", n_boot=100, seed=0)
    text = json.dumps(report)
    assert report["per_class"]["tumor"]["auc"] == pytest.approx(brute_auc(y[:, 0], s[:, 0]))
    # Sensitivity and specificity at the default threshold 0.5, counted by hand.
    assert report["sensitivity"] == pytest.approx(np.mean(s[y[:, 0] == 1, 0] >= 0.5))
    assert report["specificity"] == pytest.approx(np.mean(s[y[:, 0] == 0, 0] < 0.5))
    assert "NaN" not in text
    y3, s3 = _data(n=200, k=3, seed=12)
    y3[:, 2] = 1  # one class without negatives: listed, not drawn
    out = plot_roc_curves(y3, s3, ["a", "b", "c"], tmp_path / "plots" / "roc.png", title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["roc.png"]
    with pytest.raises(ValueError, match="class names"):
        plot_roc_curves(y3, s3, ["a"], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
