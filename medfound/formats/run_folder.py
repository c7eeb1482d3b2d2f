"""Pretraining run folders: ``run.json`` says the architecture, ``backbone.weights.h5`` holds it."""
from __future__ import annotations

from pathlib import Path

from medfound.errors import BackboneError


def load_run(path: Path):
    """The backbone of a run folder, with its run record in ``source.run``."""
    from medfound.formats.keras_file import load_weights_h5
    from medfound.formats.module_info import ModuleInfo
    from medfound.models.bit import build_backbone
    from medfound.runinfo import BACKBONE_WEIGHTS, RunInfo
    from medfound.utils.files import sha256_file

    run = RunInfo.load(path)
    weights = path / BACKBONE_WEIGHTS
    if not weights.is_file():
        raise BackboneError(f"{weights}: missing; the run folder has no backbone weights")
    model = build_backbone(run.arch, units=run.units, width=run.width)
    load_weights_h5(model, weights)
    model.source = ModuleInfo.of_backbone(model, path=str(path), format="run", init=run.init,
                                          modality=run.modality, sha256=sha256_file(weights),
                                          run=run)
    return model
