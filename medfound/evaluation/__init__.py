"""Evaluation of fine-tuned models: metrics in pure NumPy and ROC-curve plots."""
from medfound.evaluation.metrics import (accuracy, bootstrap_auc, classification_report, mean_auc, per_class_auc,
                                         roc_auc, roc_curve, sensitivity_specificity)
from medfound.evaluation.plots import plot_roc_curves

__all__ = ["accuracy", "bootstrap_auc", "classification_report", "mean_auc", "per_class_auc", "plot_roc_curves",
           "roc_auc", "roc_curve", "sensitivity_specificity"]
