"""BiT checkpoints (``BiT-M-R50x1.npz``): arrays named by BiT variable paths."""
from __future__ import annotations

import os
import re
from pathlib import Path

from medfound.errors import BackboneError

_BIT_FILE = re.compile(r"BiT-([SM])-(R\d+x\d+)", re.IGNORECASE)


def load_npz(path: Path, init: str | None):
    """A BiT ``.npz``: the architecture and BiT-S/M from the file name or else its arrays."""
    from medfound.formats.module_info import ModuleInfo
    from medfound.models.bit import build_backbone
    from medfound.models.bit_weights import assign_bit_arrays, read_checkpoint
    from medfound.models.configs import table_name
    from medfound.utils.files import sha256_file

    match = _BIT_FILE.search(path.name)
    file_init = f"bit-{match.group(1).lower()}" if match else None
    if init and file_init and init != file_init:
        raise BackboneError(f"{path}: you gave initialisation {init!r} but the file name says "
                            f"{file_init!r}")
    arrays = read_checkpoint(path)
    units, width = arch_of_arrays(arrays, path)
    arch = table_name(units, width)
    model = build_backbone(arch, units=None if arch else units, width=None if arch else width)
    if match and arch and match.group(2).lower() != arch:
        raise BackboneError(f"{path}: named {match.group(2)} but its arrays are a ResNetV2 with "
                            f"units {list(units)} and width {width:g}; the file is mislabeled")
    assign_bit_arrays(model, arrays, str(path))
    model.source = ModuleInfo.of_backbone(model, path=str(path), format="bit-npz",
                                          init=init or file_init, sha256=sha256_file(path))
    return model


def arch_of_arrays(arrays: dict, source: os.PathLike | str) -> tuple[tuple[int, ...], float]:
    """(units per block, width) of a BiT checkpoint's arrays ({'resnet/block1/...': array})."""
    from medfound.models.bit_names import units_per_block
    from medfound.models.configs import ROOT_KERNEL

    names = [k.split("/", 1)[1] if k.startswith("resnet/") else k for k in arrays]
    root = arrays.get(f"resnet/{ROOT_KERNEL}", arrays.get(ROOT_KERNEL))
    units = units_per_block(names)
    if root is None or len(units) != 4:
        raise BackboneError(f"{source}: not a BiT ResNetV2 checkpoint (no {ROOT_KERNEL} and four "
                            "blocks of units)")
    return units, root.shape[-1] / 64
