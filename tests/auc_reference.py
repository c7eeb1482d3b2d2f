"""An AUC computed apart from medfound's own (every positive-negative pair, ties count half), and
the predictions files it reads: tests recompute reported AUCs from the saved scores with it."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def pairwise_auc(labels, scores) -> float:
    """P(score of a positive > score of a negative) + P(tie) / 2, over all pairs."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, np.float64)
    pos, neg = scores[labels][:, None], scores[~labels][None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def auc_from_predictions(path: str | Path, model: str) -> float:
    """The AUC of one model's rows of a predictions.csv (model, slide, patient, label, probability)."""
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["model"] == model]
    assert rows, f"{path}: no rows of model {model!r}"
    return pairwise_auc([int(r["label"]) for r in rows], [float(r["probability"]) for r in rows])
