"""The record a pretraining run leaves beside its backbone weights, read by export and load.

A run directory holds ``run.json`` (this record) and ``backbone.weights.h5`` (the Keras weights
of the BiT backbone, no projection head). Export reads both to build a hub module and to check
that a requested REMEDIS name agrees with the architecture and the BiT initialisation.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from medfound.utils.files import atomic_path

RUN_FILE = "run.json"
BACKBONE_WEIGHTS = "backbone.weights.h5"
INITS = ("random", "bit-s", "bit-m")


@dataclasses.dataclass
class RunInfo:
    """What a backbone is and how it was made."""

    arch: str  # registry architecture name: 'r50x1', 'r152x2', 'tiny', ...
    units: tuple[int, ...] | None = None  # overrides of the named architecture, if any
    width: float | None = None
    modality: str | None = None  # 'cxr' or 'path' (None: not said)
    init: str = "random"  # 'random', 'bit-s' or 'bit-m'
    init_path: str | None = None  # the BiT checkpoint used, as the user gave it
    init_sha256: str | None = None
    method: str = "simclr"
    steps: int = 0
    image_size: int | None = None  # pretraining crop size
    data: str = ""  # a description of the pretraining data (never patient identifiers)
    medfound_version: str = ""

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.units is not None:
            self.units = tuple(self.units)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def save(self, run_dir: str | os.PathLike) -> Path:
        path = Path(run_dir) / RUN_FILE
        with atomic_path(path) as tmp:
            tmp.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "RunInfo":
        path = Path(run_dir) / RUN_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} not found: not a medfound run directory") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown fields {unknown}")
        return cls(**data)
