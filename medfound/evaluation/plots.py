"""ROC curves as PNG files, drawn off-screen (Agg) and written atomically."""
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
