"""timm folders (``config.json`` + ``model.safetensors``), as ``medfound export --format timm``
writes them and ``timm.create_model("local-dir:DIR")`` reads them.

The one map between BiT variable paths and timm's ``ResNetV2`` state-dict keys lives here; the
writer (``medfound.export.timm_export``) uses it too. Kernels are HWIO in medfound and OIHW in
timm. REMEDIS has no final GroupNorm while timm's BiT always has one (``norm``): the writer stores
it with scale 1 and shift 0, and the reader treats such a norm as absent.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from medfound.errors import BackboneError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
METADATA_KEY = "medfound"  # the module metadata, at the top level of config.json
CONTRACT_KEY = "input_contract"
TIMM_ARCHITECTURES = {"r50x1": "resnetv2_50x1_bit", "r50x3": "resnetv2_50x3_bit",
                      "r101x1": "resnetv2_101x1_bit", "r101x3": "resnetv2_101x3_bit",
                      "r152x2": "resnetv2_152x2_bit", "r152x4": "resnetv2_152x4_bit"}
FINAL_NORM = ("norm.weight", "norm.bias")
_PARTS = {"a": "1", "b": "2", "c": "3"}
_UNIT = re.compile(r"^block(\d)/unit(\d\d)/([abc])/(proj/)?(group_norm|standardized_conv2d)/"
                   r"(gamma|beta|kernel)$")


def timm_key(bit_path: str) -> str:
    """'block2/unit01/a/proj/standardized_conv2d/kernel' -> 'stages.1.blocks.0.downsample.conv.weight'."""
    if bit_path == "root_block/standardized_conv2d/kernel":
        return "stem.conv.weight"
    if bit_path in ("group_norm/gamma", "group_norm/beta"):
        return FINAL_NORM[bit_path.endswith("beta")]
    match = _UNIT.match(bit_path)
    if match is None:
        raise ValueError(f"{bit_path}: not a BiT ResNetV2 variable path")
    block, unit, part, proj, kind, leaf = match.groups()
    prefix = f"stages.{int(block) - 1}.blocks.{int(unit) - 1}."
    if proj:
        return prefix + "downsample.conv.weight"
    layer = ("norm" if kind == "group_norm" else "conv") + _PARTS[part]
    return prefix + layer + (".bias" if leaf == "beta" else ".weight")


def to_timm(value: np.ndarray) -> np.ndarray:
    """A medfound (HWIO) kernel as timm stores it (OIHW); vectors unchanged."""
    return np.ascontiguousarray(value.transpose(3, 2, 0, 1)) if value.ndim == 4 else value


def from_timm(value: np.ndarray) -> np.ndarray:
    """A timm (OIHW) kernel as medfound stores it (HWIO); vectors unchanged."""
    return np.ascontiguousarray(value.transpose(2, 3, 1, 0)) if value.ndim == 4 else value


def is_timm_folder(path: Path) -> bool:
    """Whether ``path`` is a folder with timm's ``config.json`` and ``model.safetensors``."""
    return path.is_dir() and (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


def read_config(path: Path) -> dict:
    """The folder's config.json, checked to name a timm BiT architecture medfound can build."""
    try:
        config = json.loads((path / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise BackboneError(f"{path / CONFIG}: not valid JSON ({type(err).__name__})") from None
    arch = config.get("architecture") if isinstance(config, dict) else None
    if arch not in TIMM_ARCHITECTURES.values():
        raise BackboneError(f"{path / CONFIG}: architecture {arch!r} is not a timm BiT ResNetV2 "
                            f"medfound reads ({', '.join(TIMM_ARCHITECTURES.values())})")
    return config


def load_timm_folder(path: Path):
    """The native backbone of a timm BiT folder, with its medfound metadata when it has some."""
    from medfound.formats.metadata import ModuleMetadata
    from medfound.formats.module_info import ModuleInfo
    from medfound.models.bit import build_backbone
    from medfound.models.bit_weights import assign_bit_arrays
    from medfound.utils.files import sha256_file

    config = read_config(path)
    arch = {v: k for k, v in TIMM_ARCHITECTURES.items()}[config["architecture"]]
    arrays = _read_weights(path / WEIGHTS)
    final_norm = not (np.all(arrays.get(FINAL_NORM[0], 1.0) == 1.0)
                      and np.all(arrays.get(FINAL_NORM[1], 0.0) == 0.0))
    scaling = _input_scaling(config.get("pretrained_cfg", {}), path)
    model = build_backbone(arch, final_norm=final_norm, input_scaling=scaling)
    wanted = {key: timm_key(key[len("resnet/"):]) for key in _bit_keys(model)}
    missing = sorted(set(wanted.values()) - set(arrays))
    extra = sorted(set(arrays) - set(wanted.values()) - set(FINAL_NORM))
    if missing or extra:
        raise BackboneError(f"{path / WEIGHTS}: does not fit a timm {config['architecture']} "
                            f"(missing {missing[:3]}, unexpected {extra[:3]})")
    wanted = {key: from_timm(arrays[name]) for key, name in wanted.items()}
    assign_bit_arrays(model, wanted, str(path))
    meta = config.get(METADATA_KEY)
    metadata = ModuleMetadata.from_json(json.dumps(meta), str(path / CONFIG)) if meta else None
    model.source = ModuleInfo.of_backbone(model, path=str(path), format="timm", metadata=metadata,
                                          sha256=sha256_file(path / WEIGHTS))
    return model


def _bit_keys(model) -> list[str]:
    from medfound.models.bit_weights import expected_keys

    return list(expected_keys(model))


def _read_weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise BackboneError(f"{path}: not a readable safetensors file ({err})") from None


def _input_scaling(pretrained_cfg: dict, path: Path) -> str:
    """'bit' for mean = std = 0.5 (timm's BiT), 'none' for mean 0 / std 1; else refused."""
    from medfound.contract import NORMALISATION

    found = (tuple(pretrained_cfg.get("mean", (0.5,) * 3)), tuple(pretrained_cfg.get("std", (0.5,) * 3)))
    for scaling, (mean, std) in NORMALISATION.items():
        if np.allclose(found[0], mean) and np.allclose(found[1], std):
            return scaling
    raise BackboneError(f"{path / CONFIG}: mean {list(found[0])} / std {list(found[1])} is not an "
                        "input convention a medfound backbone computes (0.5/0.5 or 0/1)")
