"""Test helper: a real pretraining-run folder (backbone weights + run.json) without pretraining."""
from __future__ import annotations

from pathlib import Path

import keras

from medfound.models.bit import BiTBackbone, build_backbone
from medfound.runinfo import BACKBONE_WEIGHTS, RunInfo


def write_tiny_run(run_dir: Path, *, seed: int | None = None, arch: str = "tiny",
                   **info) -> BiTBackbone:
    """Writes a randomly initialised ``arch`` backbone and RunInfo(arch, **info) to ``run_dir``."""
    if seed is not None:
        keras.utils.set_random_seed(seed)
    backbone = build_backbone(arch)
    run_dir.mkdir(parents=True, exist_ok=True)
    backbone.save_weights(str(run_dir / BACKBONE_WEIGHTS))
    RunInfo(arch=arch, **info).save(run_dir)
    return backbone


def export_tiny_module(root: Path, name: str, **info) -> Path:
    """A tiny run (``write_tiny_run(root / 'run', **info)``) exported as the real SavedModel
    module ``root / name`` under the test-only escape hatch; what the module fixtures share."""
    from medfound.export.exporter import export_module

    write_tiny_run(root / "run", **info)
    return export_module(root / "run", root / name, name=name, allow_test_arch=True)
