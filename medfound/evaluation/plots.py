"""ROC curves and performance-under-shift curves as PNG files, drawn off-screen (Agg) and written atomically."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfound.evaluation.metrics import _check, per_class_auc, roc_curve
from medfound.utils.files import atomic_path


def plot_roc_curves(labels, scores, class_names: Sequence[str], path: str | os.PathLike, mask=None,
                    title: str | None = None, dpi: int = 120) -> Path:
    """Writes one ROC curve per class (AUC in the legend) to ``path`` as a PNG and returns the path.

    Uses matplotlib's Agg canvas directly, so it never touches a display or the global backend;
    classes without both positives and negatives are listed as 'n/a' and not drawn.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    y, s, m = _check(labels, scores, mask)
    if len(class_names) != y.shape[1]:
        raise ValueError(f"{len(class_names)} class names for {y.shape[1]} score columns")
    aucs = per_class_auc(y, s, m)
    fig = Figure(figsize=(5.5, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
    for j, name in enumerate(class_names):
        if not np.isfinite(aucs[j]):
            ax.plot([], [], linestyle="none", label=f"{name} (AUC n/a)")
            continue
        fpr, tpr, _ = roc_curve(y[:, j], s[:, j], m[:, j])
        ax.plot(fpr, tpr, linewidth=1.5, label=f"{name} (AUC {aucs[j]:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title(title or "ROC curves")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return out


def plot_shift_curves(shifts: dict[str, list[dict]], path: str | os.PathLike, clean: dict | None = None,
                      dpi: int = 110) -> Path:
    """Mean AUC (with its 95% interval) and accuracy against shift severity, one line per shift kind."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def value(x):
        return np.nan if x is None else float(x)

    fig = Figure(figsize=(10.0, 4.0))
    FigureCanvasAgg(fig)
    ax_auc, ax_acc = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for kind, rows in shifts.items():
        sev = [r["severity"] for r in rows]
        auc = np.array([value(r["mean_auc"]) for r in rows])
        low = np.array([value(r["mean_auc_ci95"][0]) for r in rows])
        high = np.array([value(r["mean_auc_ci95"][1]) for r in rows])
        (line,) = ax_auc.plot(sev, auc, marker="o", label=kind)
        ax_auc.fill_between(sev, low, high, color=line.get_color(), alpha=0.15)
        ax_acc.plot(sev, [value(r["accuracy"]) for r in rows], marker="o", label=kind)
    if clean is not None:
        ax_auc.axhline(value(clean["mean_auc"]), color="0.4", linestyle="--", linewidth=1, label="clean")
        ax_acc.axhline(value(clean["accuracy"]), color="0.4", linestyle="--", linewidth=1, label="clean")
    ax_auc.axhline(0.5, color="0.7", linestyle=":", linewidth=1)
    ax_auc.set_ylabel("mean AUC (95% CI)")
    ax_acc.set_ylabel("accuracy")
    for ax in (ax_auc, ax_acc):
        ax.set_xlabel("shift severity")
        ax.legend(fontsize="small")
    fig.suptitle("performance under synthetic distribution shift")
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return out
