"""What a module folder is, read from its files alone: format, architecture, sizes, provenance.

``describe`` tells the formats apart without running any graph: a medfound module (metadata
asset, format 2), a module from medfound < 0.2 (format 1), a PhysioNet REMEDIS file (a Keras-2
SavedModel whose variables are BiT paths, no final norm and no metadata) or a BiT TF-Hub folder
(the same with BiT's pre-head GroupNorm). Variable names and shapes come from the object graph in
``saved_model.pb``; the architecture follows from them, the input size from the metadata or, for
PhysioNet files, from the REMEDIS name of the folder.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from medfound.formats.metadata import METADATA_ASSET, ModuleMetadata, read_metadata
from medfound.models.configs import ROOT_KERNEL, table_name
from medfound.registry import HUB_MODULES

_TOP = re.compile(r"^(root_block|block\d+|group_norm|head)/")
FORMATS = {
    "medfound": "medfound module (PhysioNet structure, with medfound metadata)",
    "medfound-v1": "medfound module from before 0.2 (folded kernels, final GroupNorm output)",
    "physionet": "PhysioNet REMEDIS file (Keras-2 SavedModel of a BiT ResNetV2, no metadata)",
    "bit-hub": "BiT TF-Hub SavedModel (with BiT's pre-head GroupNorm)",
    # What medfound.load resolves besides SavedModel folders (see medfound.resolve):
    "bit-npz": "BiT checkpoint (.npz)",
    "run": "medfound pretraining run folder (run.json + backbone.weights.h5)",
    "keras": "native Keras 3 backbone (.keras)",
    "weights": "Keras weights of a BiT backbone (.weights.h5)",
    "timm": "timm folder (config.json + model.safetensors of a resnetv2_*_bit)",
    "random": "randomly initialised backbone",
}


class UnknownModuleFormat(ValueError):
    """A folder that is none of the known formats; the message says what was found."""


@dataclasses.dataclass
class ModuleInfo:
    """The facts callers need about a module, whatever its format."""

    path: str
    format: str  # a key of FORMATS
    arch: str  # architecture table name ('r50x1', ...), or the closest base for custom sizes
    units: tuple[int, ...]
    width: float
    final_norm: bool  # whether BiT's pre-head GroupNorm is among the variables
    num_params: int
    num_variables: int
    embedding_dim: int
    name: str | None = None  # registry or custom module name
    modality: str | None = None
    init: str | None = None
    input_size: int | None = None
    input_scaling: str | None = None  # 'bit' / 'none'; None: not recorded (checked when loading)
    kernel_form: str | None = None
    metadata: ModuleMetadata | None = None
    spec: str = ""  # the backbone spec it was loaded from (see medfound.resolve)
    sha256: str | None = None  # identity of what was read (a SavedModel's fingerprint.pb)
    run: "object | None" = None  # the RunInfo of a pretraining run folder

    @classmethod
    def of_backbone(cls, model, *, path: str, format: str, spec: str = "",
                    init: str | None = None, modality: str | None = None,
                    sha256: str | None = None, run=None,
                    metadata: ModuleMetadata | None = None) -> "ModuleInfo":
        """The facts of a backbone built in memory from a file that is not a SavedModel."""
        info = cls(path=path, format=format, arch=model.spec.name, units=tuple(model.spec.units),
                   width=float(model.spec.width), final_norm=bool(model.final_norm),
                   num_params=int(model.count_params()), num_variables=len(model.weights),
                   embedding_dim=int(model.embedding_dim), init=init, modality=modality,
                   input_scaling=model.input_scaling, spec=spec, sha256=sha256, run=run,
                   metadata=metadata)
        if metadata is not None:
            info.name, info.input_size = metadata.name, metadata.input_size
            info.modality, info.init = metadata.modality or modality, metadata.init or init
            info.kernel_form = metadata.kernel_form
        return info

    @property
    def units_override(self) -> tuple[int, ...] | None:
        from medfound.models.configs import get_arch

        return None if tuple(self.units) == get_arch(self.arch).units else tuple(self.units)

    @property
    def width_override(self) -> float | None:
        from medfound.models.configs import get_arch

        return None if float(self.width) == float(get_arch(self.arch).width) else self.width

    def summary_lines(self) -> list[str]:
        """'key: value' lines for ``medfound info`` (empty facts left out)."""
        lines = [f"format: {self.format} ({FORMATS[self.format]})"]
        for key in ("name", "arch", "units", "width", "modality", "init", "input_size",
                    "embedding_dim", "num_params", "num_variables", "kernel_form",
                    "input_scaling"):
            value = getattr(self, key)
            if value not in (None, ""):
                lines.append(f"{key}: {list(value) if isinstance(value, tuple) else value}")
        return lines


def saved_model_variables(path: str | Path) -> dict[str, tuple[tuple[int, ...], bool]]:
    """{variable name without ':0' and without a model's own top scope: (shape, trainable)}."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((Path(path) / "saved_model.pb").read_bytes())
    except Exception as err:  # the protobuf DecodeError has no stable import path
        raise UnknownModuleFormat(f"{path}/saved_model.pb: damaged or cut short, not a readable "
                                  f"SavedModel ({err})") from None
    found = {}
    for graph in proto.meta_graphs:
        for node in graph.object_graph_def.nodes:
            if node.WhichOneof("kind") != "variable":
                continue
            name = re.sub(r":\d+$", "", node.variable.name)
            if not _TOP.match(name) and _TOP.match(name.split("/", 1)[-1]):
                name = name.split("/", 1)[1]  # a model's own scope ('resnet50/...')
            shape = tuple(int(d.size) for d in node.variable.shape.dim)
            found[name] = (shape, bool(node.variable.trainable))
    return found


def saved_model_arrays(path: str | Path) -> dict:
    """{BiT checkpoint key ('resnet/...'): array} of a SavedModel's variables."""
    from medfound.models.bit_weights import read_checkpoint

    return read_checkpoint(Path(path))


def describe(path: str | Path) -> ModuleInfo:
    """What the SavedModel folder ``path`` is (raises ``UnknownModuleFormat`` if none known)."""
    from medfound.models.bit_names import units_per_block

    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        raise UnknownModuleFormat(f"{path}: no saved_model.pb, so not a SavedModel folder")
    variables = saved_model_variables(path)
    meta = read_metadata(path) if (path / METADATA_ASSET).is_file() else None
    if meta is not None:
        fmt = "medfound" if meta.format_version >= 2 else "medfound-v1"
        info = ModuleInfo(
            path=str(path), format=fmt, arch=meta.arch, units=tuple(meta.units),
            width=float(meta.width), final_norm=fmt == "medfound-v1",
            num_params=_count(variables), num_variables=len(variables),
            embedding_dim=meta.embedding_dim, name=meta.name, modality=meta.modality,
            init=meta.init, input_size=meta.input_size,
            input_scaling=meta.input_scaling, kernel_form=meta.kernel_form, metadata=meta)
        if not info.units:  # very old metadata without units
            from medfound.models.configs import get_arch

            info.units, info.width = get_arch(meta.arch).units, get_arch(meta.arch).width
        return info
    if ROOT_KERNEL not in variables:
        shown = ", ".join(sorted(variables)[:3]) or "none"
        raise UnknownModuleFormat(
            f"{path}: a SavedModel with {len(variables)} variables (e.g. {shown}) and no "
            f"{METADATA_ASSET}; it is not a medfound module, a PhysioNet REMEDIS file or a BiT "
            f"model (their variables are BiT paths such as {ROOT_KERNEL})")
    units = units_per_block(variables)
    width = variables[ROOT_KERNEL][0][-1] / 64
    final_norm = "group_norm/gamma" in variables
    arch = table_name(units, width) or "r50x1"  # a custom size keeps r50x1 as its base
    info = ModuleInfo(
        path=str(path), format="bit-hub" if final_norm else "physionet", arch=arch,
        units=units, width=float(width), final_norm=final_norm,
        num_params=_count({k: v for k, v in variables.items() if not k.startswith("head/")}),
        num_variables=len(variables), embedding_dim=int(variables[
            f"block4/unit{units[-1]:02d}/c/standardized_conv2d/kernel"][0][-1]))
    spec = HUB_MODULES.get(path.name)
    if spec is not None:
        if (spec.arch_spec.units, float(spec.arch_spec.width)) != (units, float(width)):
            raise UnknownModuleFormat(
                f"{path}: named {path.name} (a {spec.arch} module) but its variables are a "
                f"ResNetV2 with units {list(units)} and width {width:g}; the folder is mislabeled")
        info.name, info.modality, info.init = spec.name, spec.modality, spec.init
        info.input_size = spec.input_size
    return info


def _count(variables: dict) -> int:
    total = 0
    for shape, _ in variables.values():
        size = 1
        for dim in shape:
            size *= dim
        total += size
    return total
