"""Classification metrics in pure NumPy: ROC AUC (Mann-Whitney, ties counted half), bootstrap intervals,
accuracy, sensitivity/specificity and ROC curve points.

Everything takes labels in {0, 1} and real-valued scores; multi-label and multi-class inputs are
(N, K) arrays scored one class against the rest, with an optional (N, K) mask (0 = leave out).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_BOOT_CELLS = 4_000_000  # resample weights held at once (bootstrap draws x examples)


def _as_2d(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be (N,) or (N, K), got shape {a.shape}")
    return a


def _check(labels, scores, mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, s = _as_2d(labels, "labels"), _as_2d(scores, "scores")
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    m = np.ones_like(y) if mask is None else _as_2d(mask, "mask")
    if m.shape != y.shape:
        raise ValueError(f"mask {m.shape} and labels {y.shape} differ in shape")
    used = m > 0
    if not np.all(np.isfinite(s[used])):
        raise ValueError("scores contain NaN or infinity")
    if not np.all(np.isin(y[used], (0.0, 1.0))):
        raise ValueError("labels must be 0 or 1 where the mask is set")
    return y, s, used.astype(np.float64)


def _weighted_auc(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of one class for each row of ``weights`` (B, N): the weighted Mann-Whitney statistic.

    With integer weights this equals the AUC of the resample that repeats each example that many
    times; tied scores count one half, as in the Mann-Whitney U statistic.
    """
    order = np.argsort(s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # tie groups
    pos = np.add.reduceat(w * y_sorted, starts, axis=1)
    neg = np.add.reduceat(w * (1.0 - y_sorted), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    u = np.sum(pos * (neg_below + 0.5 * neg), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = u / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def roc_auc(labels, scores, mask=None) -> float:
    """ROC AUC of one binary task (NaN when only one class is present): P(score+ > score-) + P(tie)/2."""
    y, s, m = _check(labels, scores, mask)
    if y.shape[1] != 1:
        raise ValueError(f"roc_auc takes one class; got {y.shape[1]} columns (use per_class_auc)")
    return float(_weighted_auc(y[:, 0], s[:, 0], m[:, 0][None, :])[0])


def per_class_auc(labels, scores, mask=None) -> np.ndarray:
    """ROC AUC per column (K,), NaN for a class with no positives or no negatives under the mask."""
    y, s, m = _check(labels, scores, mask)
    return np.array([_weighted_auc(y[:, k], s[:, k], m[:, k][None, :])[0] for k in range(y.shape[1])])


def mean_auc(labels, scores, mask=None) -> float:
    """Mean of the per-class AUCs that are defined (NaN if none is)."""
    aucs = per_class_auc(labels, scores, mask)
    return float(np.nanmean(aucs)) if np.any(np.isfinite(aucs)) else float("nan")


def _resample_weights(rng: np.random.Generator, n: int, count: int, groups: np.ndarray | None) -> np.ndarray:
    """(count, n) bootstrap multiplicities: rows drawn with replacement, or whole groups (patients)."""
    if groups is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=count).astype(np.float64)
    uniq, inverse = np.unique(groups, return_inverse=True)
    g = uniq.size
    picks = rng.multinomial(g, np.full(g, 1.0 / g), size=count).astype(np.float64)
    return picks[:, inverse.reshape(-1)]


def bootstrap_auc(labels, scores, mask=None, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                  groups: Sequence[str] | np.ndarray | None = None) -> dict[str, Any]:
    """Percentile bootstrap (1 - alpha) intervals of the per-class and mean AUC, deterministic under ``seed``.

    Examples (or, with ``groups``, whole patients) are resampled with replacement, the same draw
    for every class; draws where a class lacks positives or negatives are left out for that class.
    Returns {"auc": (K,), "low": (K,), "high": (K,), "mean": float, "mean_low", "mean_high", "n_boot"}.
    """
    y, s, m = _check(labels, scores, mask)
    n, k = y.shape
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    groups_arr = None if groups is None else np.asarray(groups).astype(str)
    if groups_arr is not None and groups_arr.shape != (n,):
        raise ValueError(f"groups must have {n} entries, got {groups_arr.shape}")
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, k))
    step = max(1, MAX_BOOT_CELLS // max(n, 1))
    for start in range(0, n_boot, step):
        count = min(step, n_boot - start)
        w = _resample_weights(rng, n, count, groups_arr)
        for j in range(k):
            boot[start:start + count, j] = _weighted_auc(y[:, j], s[:, j], w * m[:, j][None, :])
    point = np.array([_weighted_auc(y[:, j], s[:, j], m[:, j][None, :])[0] for j in range(k)])
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]

    def interval(values: np.ndarray) -> tuple[float, float]:
        values = values[np.isfinite(values)]
        if values.size == 0:
            return float("nan"), float("nan")
        lo, hi = np.percentile(values, q)
        return float(lo), float(hi)

    lows, highs = zip(*(interval(boot[:, j]) for j in range(k)))
    defined = np.isfinite(point)
    with np.errstate(invalid="ignore"):
        boot_mean = np.where(np.all(np.isfinite(boot[:, defined]), axis=1),
                             boot[:, defined].mean(axis=1), np.nan) if defined.any() else np.full(n_boot, np.nan)
    mean_low, mean_high = interval(boot_mean)
    return {"auc": point, "low": np.array(lows), "high": np.array(highs),
            "mean": float(np.mean(point[defined])) if defined.any() else float("nan"),
            "mean_low": mean_low, "mean_high": mean_high, "n_boot": int(n_boot), "alpha": float(alpha)}


def roc_curve(labels, scores, mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr, thresholds) of one binary task, from (0, 0) at +inf to (1, 1).

    A point per distinct score: predicting positive when ``score >= threshold``.
    """
    y, s, m = _check(labels, scores, mask)
    if y.shape[1] != 1:
        raise ValueError("roc_curve takes one class")
    used = m[:, 0] > 0
    y, s = y[used, 0], s[used, 0]
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]  # last index of each tie group
    tp = np.cumsum(y)[last]
    fp = np.cumsum(1.0 - y)[last]
    n_pos, n_neg = y.sum(), (1.0 - y).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.r_[0.0, tp / n_pos] if n_pos else np.full(last.size + 1, np.nan)
        fpr = np.r_[0.0, fp / n_neg] if n_neg else np.full(last.size + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, s[last]]


def sensitivity_specificity(labels, scores, threshold: float = 0.5) -> tuple[float, float]:
    """Sensitivity (true-positive rate) and specificity (true-negative rate) when ``score >= threshold``."""
    y, s, _ = _check(labels, scores)
    if y.shape[1] != 1:
        raise ValueError("sensitivity_specificity takes one binary task")
    y, pred = y[:, 0] > 0.5, s[:, 0] >= threshold
    pos, neg = y.sum(), (~y).sum()
    sens = float((pred & y).sum() / pos) if pos else float("nan")
    spec = float((~pred & ~y).sum() / neg) if neg else float("nan")
    return sens, spec


def accuracy(labels, scores, task: str = "binary", threshold: float = 0.5, mask=None) -> float:
    """Fraction correct: argmax for 'multiclass', ``score >= threshold`` per cell otherwise (masked cells left out)."""
    y, s, m = _check(labels, scores, mask)
    if task == "multiclass":
        return float(np.mean(np.argmax(s, axis=1) == np.argmax(y, axis=1)))
    if task not in ("binary", "multilabel"):
        raise ValueError(f"task must be 'binary', 'multilabel' or 'multiclass', got {task!r}")
    correct = ((s >= threshold) == (y > 0.5)) & (m > 0)
    total = m.sum()
    return float(correct.sum() / total) if total else float("nan")


def _json_float(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def classification_report(labels, scores, class_names: Sequence[str], task: str, mask=None,
                          threshold: float = 0.5, n_boot: int = 1000, seed: int = 0,
                          groups: Sequence[str] | np.ndarray | None = None) -> dict[str, Any]:
    """Everything a ``metrics.json`` holds: per-class AUC with 95% CIs, mean AUC, accuracy, and for
    binary tasks sensitivity and specificity at ``threshold``. NaN is written as null."""
    y, s, m = _check(labels, scores, mask)
    if len(class_names) != y.shape[1]:
        raise ValueError(f"{len(class_names)} class names for {y.shape[1]} columns")
    boot = bootstrap_auc(y, s, m, n_boot=n_boot, seed=seed, groups=groups)
    per_class = {}
    for j, name in enumerate(class_names):
        used = m[:, j] > 0
        per_class[name] = {"auc": _json_float(boot["auc"][j]), "auc_ci95": [_json_float(boot["low"][j]),
                                                                           _json_float(boot["high"][j])],
                           "positives": int((y[used, j] > 0.5).sum()), "negatives": int((y[used, j] < 0.5).sum())}
    report: dict[str, Any] = {
        "task": task, "examples": int(y.shape[0]), "per_class": per_class,
        "mean_auc": _json_float(boot["mean"]), "mean_auc_ci95": [_json_float(boot["mean_low"]),
                                                                 _json_float(boot["mean_high"])],
        "accuracy": _json_float(accuracy(y, s, task, threshold, m)), "threshold": float(threshold),
        "bootstrap": {"n_boot": int(n_boot), "seed": int(seed), "by": "patient" if groups is not None else "example"},
    }
    if task == "binary":
        sens, spec = sensitivity_specificity(y[m[:, 0] > 0], s[m[:, 0] > 0], threshold)
        report["sensitivity"], report["specificity"] = _json_float(sens), _json_float(spec)
    return report


def _run_picks(rng: np.random.Generator, runs: int, n_boot: int) -> np.ndarray:
    """(B, S) multiplicities of S runs drawn with replacement, per bootstrap draw."""
    return rng.multinomial(runs, np.full(runs, 1.0 / runs), size=n_boot).astype(np.float64)


def runs_bootstrap_auc(labels, scores, groups: Sequence[str] | np.ndarray, baseline=None,
                       n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """The AUC of one binary task averaged over repeated runs, with an interval holding both the
    patients' and the runs' variance: each draw resamples patients (the same for every run) and,
    per side, the runs. ``scores`` is (S, N), a row per run (pretraining seed) over the same N
    examples. With ``baseline`` (S', N) the paired difference mean AUC(scores) - mean
    AUC(baseline) is bootstrapped on the same patient draws; runs are paired by row (the same
    run draw for both) when S == S' (run i of each side shares seed i), else drawn per side.
    Returns {"auc", "low", "high", "runs", "n_boot"} and, with a baseline, {"difference",
    "difference_low", "difference_high", "baseline_auc"}; NaN-AUC draws are left out."""
    y = np.asarray(labels, np.float64).reshape(-1)
    sides = [np.atleast_2d(np.asarray(scores, np.float64))]
    if baseline is not None:
        sides.append(np.atleast_2d(np.asarray(baseline, np.float64)))
    for side in sides:
        _check(np.broadcast_to(y, side.shape).T, side.T)  # shapes, finite scores, 0/1 labels
    groups_arr = np.asarray(groups).astype(str)
    if groups_arr.shape != y.shape:
        raise ValueError(f"groups must have {y.size} entries, got {groups_arr.shape}")
    rng = np.random.default_rng(seed)
    step = max(1, MAX_BOOT_CELLS // y.size)  # drawn in chunks; all (n_boot, N) weights are kept
    w = np.concatenate([_resample_weights(rng, y.size, min(step, n_boot - i), groups_arr)
                        for i in range(0, n_boot, step)])
    full = np.ones((1, y.size))
    points = [float(np.mean([_weighted_auc(y, row, full)[0] for row in side])) for side in sides]
    picks = _run_picks(rng, sides[0].shape[0], n_boot)
    draws = []
    for side in sides:
        if side.shape[0] != picks.shape[1]:
            picks = _run_picks(rng, side.shape[0], n_boot)
        aucs = np.stack([_weighted_auc(y, row, w) for row in side])  # (S, B)
        draws.append(np.einsum("bs,sb->b", picks, aucs) / side.shape[0])
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]

    def interval(values: np.ndarray) -> tuple[float, float]:
        values = values[np.isfinite(values)]
        return (float("nan"),) * 2 if values.size == 0 else tuple(float(v) for v in np.percentile(values, q))

    out: dict[str, Any] = {"auc": points[0], "runs": int(sides[0].shape[0]), "n_boot": int(n_boot)}
    out["low"], out["high"] = interval(draws[0])
    if baseline is not None:
        out["baseline_auc"] = points[1]
        out["difference"] = points[0] - points[1]
        out["difference_low"], out["difference_high"] = interval(draws[0] - draws[1])
    return out
