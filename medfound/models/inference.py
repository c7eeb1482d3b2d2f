"""Inference form of a backbone: weight standardisation folded into the stored kernels.

Training needs the standardisation inside the graph (gradients flow through it); inference does
not, and recomputing it on every call costs time. ``fold`` returns an equivalent model whose
kernels are standardised once.
"""
from __future__ import annotations

from medfound.models.bit import BiTBackbone
from medfound.models.layers import StandardizedConv2D, standardize_kernel


def fold(model: BiTBackbone, group_norm_statistics: str | None = None) -> BiTBackbone:
    """A copy of ``model`` with pre-standardised kernels and no standardisation in its graph
    (and, when given, another GroupNorm variance formulation: ``layers.GN_STATISTICS``)."""
    config = model.get_config()
    config.update(weight_standardization=False, name=f"{model.name}_folded")
    if group_norm_statistics is not None:
        config["group_norm_statistics"] = group_norm_statistics
    folded = BiTBackbone.from_config(config)
    for source, target in zip(model.layers, folded.layers):
        if isinstance(source, StandardizedConv2D) and source.standardize:
            target.kernel.assign(standardize_kernel(source.kernel, source.epsilon))
        else:
            target.set_weights(source.get_weights())
    return folded
