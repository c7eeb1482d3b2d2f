"""Measurement, a leaf layer: metrics in pure NumPy (metrics.py), ROC and shift plots (plots.py) and
synthetic distribution shifts (shifts.py). It imports neither fine-tuning nor the CLI; ``evaluate`` and
label efficiency, which run fine-tuned models, live above fine-tuning in ``medfound.finetune``."""
from medfound.evaluation.metrics import (accuracy, bootstrap_auc, classification_report, mean_auc, per_class_auc,
                                         roc_auc, roc_curve, sensitivity_specificity)
from medfound.evaluation.plots import plot_roc_curves, plot_shift_curves

__all__ = ["accuracy", "bootstrap_auc", "classification_report", "mean_auc", "per_class_auc", "plot_roc_curves",
           "plot_shift_curves", "roc_auc", "roc_curve", "sensitivity_specificity"]
