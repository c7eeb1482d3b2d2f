"""Export of a pretraining run (or a BiT checkpoint) as a named REMEDIS module.

The name must be one of the eight registry names and must agree with the checkpoint's
architecture, modality and BiT initialisation; export refuses otherwise and says why. Tiny
test-only architectures may be exported under a registry name only with ``allow_test_arch``, and
such modules are marked ``test_only`` in their metadata, which ``publish`` refuses by default.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from medfound.formats.metadata import METADATA_ASSET, METADATA_FILE, ModuleMetadata
from medfound.models.configs import get_arch
from medfound.registry import (HUB_MODULES, INIT_DATA, HubModuleSpec, check_custom_name,
                               get_module_spec, module_name)
from medfound.runinfo import RunInfo
from medfound.utils.files import atomic_path
from medfound.version import __version__

FORMATS = ("saved_model", "keras", "onnx", "timm")
# The exported graph's pooled embedding of a probe batch must match the backbone's within this
# (max abs difference relative to the largest value), or nothing is written. A wrong graph is off
# by order one; float32 summation order alone reaches 2.7e-4 for r152x2, so 1e-4 refused correct
# exports. MODEL_CARD.md states this value (a test reads both).
EXPORT_PARITY_TOLERANCE = 1e-3


class ExportError(ValueError):
    """A checkpoint cannot be exported under the requested name; the message says why."""


@dataclasses.dataclass
class ExportOptions:
    """What the user said about the checkpoint, where the checkpoint itself does not say it."""

    name: str | None = None  # registry name; may be omitted when the run says everything
    arch: str | None = None  # for a bare .weights.h5 (or a .npz whose file name does not say)
    init: str | None = None  # 'bit-s' / 'bit-m' for a .npz or .weights.h5
    modality: str | None = None  # 'cxr' / 'path' when the run does not record it
    allow_test_arch: bool = False  # tests only: allow a test-only arch under a registry name


def load_checkpoint(checkpoint, options: ExportOptions):
    """Any backbone spec (see ``medfound.resolve``) or an in-memory ``BiTBackbone``, as
    (backbone, RunInfo): the weights to export and the record of how they were made."""
    from medfound.models.bit import BiTBackbone
    from medfound.resolve import BackboneError, load

    if isinstance(checkpoint, BiTBackbone):
        backbone = checkpoint
        if options.arch and get_arch(options.arch).name != backbone.arch:
            raise ExportError(f"you gave architecture {options.arch!r} but the model is "
                              f"{backbone.arch!r}")
    else:
        try:
            backbone = load(checkpoint, arch=options.arch, init=options.init)
        except BackboneError as err:
            raise ExportError(str(err)) from None
    return backbone, run_record(backbone, options)


def run_record(backbone, options: ExportOptions) -> RunInfo:
    """How ``backbone`` was made, from what its source records and, where it is silent, what
    the user said (``options``); a stated fact that disagrees with the record is refused."""
    source = backbone.source
    where = source.path if source is not None and source.path else backbone.name
    common = dict(arch=backbone.arch, units=backbone.spec.units
                  if backbone.spec.units != get_arch(backbone.arch).units else None,
                  width=backbone.spec.width
                  if backbone.spec.width != get_arch(backbone.arch).width else None,
                  medfound_version=__version__)
    if source is None or source.format == "random":
        return RunInfo(**common, modality=options.modality, init=options.init or "random",
                       method="none" if source is not None else "unknown")
    _agree(where, "initialisation", options.init, source.init)
    if source.run is not None:
        run = dataclasses.replace(source.run)
        if run.modality is None:
            run.modality = options.modality
        _agree(where, "modality", options.modality, run.modality)
        return run
    if source.format == "bit-npz":
        if not source.init:
            raise ExportError(f"{where}: the file name does not say BiT-S or BiT-M (e.g. "
                              "BiT-M-R50x1.npz); pass --init")
        return RunInfo(**common, modality=options.modality, init=source.init,
                       init_path=Path(source.path).name, init_sha256=source.sha256,
                       method="none", steps=0, data=INIT_DATA.get(source.init, ""))
    if source.format == "weights":
        return RunInfo(**common, modality=options.modality, init=options.init or "random")
    _agree(where, "modality", options.modality, source.modality)
    meta = source.metadata
    return RunInfo(**common, modality=source.modality or options.modality,
                   init=source.init or options.init or "random",
                   method=meta.method if meta else "unknown", steps=meta.steps if meta else 0,
                   data=meta.pretraining_data if meta else f"converted from {source.format} "
                   f"file {Path(source.path).name}",
                   image_size=meta.pretraining_image_size if meta else None,
                   init_path=meta.init_checkpoint if meta else None,
                   init_sha256=meta.init_sha256 if meta else None)


def _agree(path, what: str, given: str | None, recorded: str | None) -> None:
    if given and recorded and given != recorded:
        raise ExportError(f"{path}: you gave {what} {given!r} but the checkpoint says {recorded!r}")


def resolve_spec(run: RunInfo, backbone, options: ExportOptions) -> HubModuleSpec:
    """The registry entry to export under, after checking it against the checkpoint.

    Refuses (``ExportError``) a name whose architecture, width/units, modality or BiT
    initialisation disagrees with the checkpoint. A test-only architecture ('tiny', 'small') is
    accepted under a registry name only with ``allow_test_arch``; real architectures are always
    checked, whatever that flag says.
    """
    arch = backbone.spec
    base = get_arch(run.arch)
    name = options.name
    if name is None:
        if arch.test_only:
            raise ExportError(f"architecture {arch.name!r} is test-only and has no REMEDIS name; "
                              "pass --name (and, in tests only, --allow-test-arch)")
        if run.modality is None:
            raise ExportError("the run does not record its modality; pass --name (or --modality)")
        try:
            name = module_name(run.modality, arch.name, run.init)
        except ValueError as err:
            raise ExportError(str(err)) from None
    try:
        check_custom_name(name)
    except ValueError as err:
        raise ExportError(str(err)) from None
    if name not in HUB_MODULES:
        # A custom module claims nothing the checkpoint does not record itself.
        modality = run.modality or options.modality
        if modality is None:
            raise ExportError(f"custom module {name!r}: the run does not record its modality; "
                              "pass --modality cxr|path")
        return HubModuleSpec(name=name, modality=modality, arch=arch.name, init=run.init)
    spec = get_module_spec(name)
    if arch.test_only:
        if not options.allow_test_arch:
            raise ExportError(
                f"{name} is a {spec.arch} module but the checkpoint is the test-only architecture "
                f"{arch.name!r}; refusing to label it as a REMEDIS model (tests may pass "
                "allow_test_arch=True, which marks the module test_only)")
    elif (arch.name, arch.units, arch.width) != (spec.arch, spec.arch_spec.units,
                                                 spec.arch_spec.width) \
            or (arch.units, arch.width) != (base.units, base.width):
        raise ExportError(
            f"{name} needs architecture {spec.arch} (units {spec.arch_spec.units}, width "
            f"{spec.arch_spec.width}) but the checkpoint is {arch.name} (units {arch.units}, "
            f"width {arch.width})")
    if run.modality is not None and run.modality != spec.modality:
        raise ExportError(f"{name} is a {spec.modality} module but the run was pretrained on "
                          f"{run.modality} data")
    if run.init != spec.init:
        raise ExportError(f"{name} must start from {spec.init} ({INIT_DATA[spec.init]}) but the "
                          f"checkpoint was initialised from {run.init!r}")
    return spec


def build_metadata(spec: HubModuleSpec, run: RunInfo, backbone) -> ModuleMetadata:
    """The metadata of a module, from its registry entry, run record and built backbone."""
    return ModuleMetadata(
        name=spec.name, arch=backbone.spec.name, modality=spec.modality,
        input_size=spec.input_size, embedding_dim=backbone.embedding_dim, init=run.init,
        units=list(backbone.spec.units), width=float(backbone.spec.width),
        init_checkpoint=Path(run.init_path).name if run.init_path else None,
        init_sha256=run.init_sha256, init_data=INIT_DATA.get(run.init, ""), method=run.method,
        steps=int(run.steps), pretraining_data=run.data, pretraining_image_size=run.image_size,
        medfound_version=__version__, test_only=backbone.spec.test_only,
        input_scaling=backbone.input_scaling)


def write_saved_model(backbone, metadata: ModuleMetadata, out: str | os.PathLike, *,
                      fold: bool = False, jit_compile: bool = False,
                      group_norm_statistics: str = "two_pass") -> Path:
    """Writes the hub SavedModel folder (via a temporary sibling, renamed when complete).

    ``fold`` writes the faster inference form (kernels pre-standardised, not fine-tunable);
    ``jit_compile`` and ``group_norm_statistics`` how its graph computes (``RemedisModule``);
    the metadata records all three.
    """
    import numpy as np
    import tensorflow as tf

    from medfound.export.hub_module import RemedisModule
    from medfound.utils.memory import release_free_memory

    out = Path(out)
    with tempfile.TemporaryDirectory() as scratch:
        metadata = dataclasses.replace(metadata, kernel_form="folded" if fold
                                       else "standardize_in_graph", jit_compile=jit_compile,
                                       group_norm_statistics=group_norm_statistics)
        meta_file = Path(scratch) / METADATA_FILE
        meta_file.write_text(metadata.to_json())
        module = RemedisModule(backbone, metadata.to_json(), str(meta_file), fold=fold,
                               jit_compile=jit_compile,
                               group_norm_statistics=group_norm_statistics)
        module.trace()
        probe = np.linspace(0.0, 1.0, 2 * 64 * 64 * 3, dtype=np.float32).reshape(2, 64, 64, 3)
        got = module.features(tf.constant(probe))["embedding"].numpy()
        want = backbone(probe, training=False)["embedding"].numpy()
        check_parity(got, want, out)
        release_free_memory()
        with atomic_path(out) as tmp:
            tf.saved_model.save(module, str(tmp),
                                signatures={"serving_default": module.serving_default})
            if not (tmp / METADATA_ASSET).is_file():
                raise ExportError(f"{out}: SavedModel was written without {METADATA_ASSET}")
    return out


def check_parity(got, want, out) -> None:
    """Refuses an export whose graph's embedding ``got`` differs from the backbone's ``want`` by
    more than EXPORT_PARITY_TOLERANCE, relative (the raw block4 map has no norm to bound it)."""
    import numpy as np

    error = float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-12)
    if not error <= EXPORT_PARITY_TOLERANCE:  # NaN is refused too
        raise ExportError(f"exported graph disagrees with the backbone by {error:.3g} "
                          f"(relative, tolerance {EXPORT_PARITY_TOLERANCE:g}); not writing {out}")


def write_keras(backbone, metadata: ModuleMetadata, out: str | os.PathLike) -> Path:
    """Writes the native (trainable, weight-standardised) backbone as a ``.keras`` file, in the
    module form (no final GroupNorm, like the SavedModel).

    The metadata is added to the zip as ``medfound_module.json``; Keras ignores the extra member.
    """
    import zipfile

    from medfound.models.bit import module_form

    backbone = module_form(backbone)
    out = Path(out)
    with atomic_path(out) as tmp:
        keras_tmp = tmp.with_name(tmp.name + ".keras")  # Keras insists on the suffix
        try:
            backbone.save(str(keras_tmp))
            with zipfile.ZipFile(keras_tmp, "a") as zf:
                zf.writestr(METADATA_FILE, metadata.to_json())
            os.replace(keras_tmp, tmp)
        finally:
            if keras_tmp.exists():
                keras_tmp.unlink()
    return out


def default_output(out: str | os.PathLike, name: str, fmt: str) -> Path:
    """Where a format is written: ``out`` itself for a SavedModel; for keras/onnx, ``out`` if it
    has the suffix, else ``out/<name>.<ext>``."""
    out = Path(out)
    if fmt in ("saved_model", "timm"):
        return out
    ext = {"keras": ".keras", "onnx": ".onnx"}[fmt]
    return out if out.name.endswith(ext) else out / f"{name}{ext}"


COMMAND = "medfound export"  # who the outputs belong to (medfound.utils.ownership)


def check_target(target: Path, fmt: str = "saved_model", overwrite: bool = False) -> None:
    """Refuses a target that is not new (medfound.utils.ownership): only a module medfound
    exported (nothing else in its folder) or a .keras / .onnx file it wrote is replaced, and only
    with ``overwrite``; the user's files are never replaced."""
    from medfound.utils.ownership import OwnershipError, check_file, check_folder

    try:
        if fmt == "saved_model":
            check_folder(target, COMMAND, overwrite=overwrite, ours=_is_exported_module)
        elif fmt == "timm":
            check_folder(target, COMMAND, overwrite=overwrite, ours=_is_timm_export)
        else:
            check_file(target, COMMAND, overwrite=overwrite,
                       ours=_is_keras_export if fmt == "keras" else _is_onnx_export)
    except OwnershipError as err:
        raise ExportError(str(err)) from None


def _is_exported_module(folder: Path) -> bool:
    """A SavedModel folder export wrote: its metadata asset, and no file a SavedModel lacks."""
    from medfound.formats.archive import MODULE_MEMBERS

    if not ((folder / "saved_model.pb").is_file() and (folder / METADATA_ASSET).is_file()):
        return False
    return all(MODULE_MEMBERS.fullmatch(p.relative_to(folder).as_posix()) and not p.is_symlink()
               for p in folder.rglob("*"))


def _is_timm_export(folder: Path) -> bool:
    """A timm folder export wrote: its config carries medfound's metadata, nothing else beside."""
    import json

    from medfound.export.timm_export import CARD
    from medfound.formats.timm_folder import CONFIG, METADATA_KEY, WEIGHTS

    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and METADATA_KEY in config and \
        {p.name for p in folder.iterdir()} <= {CONFIG, WEIGHTS, CARD}


def _is_keras_export(path: Path) -> bool:
    import zipfile

    with zipfile.ZipFile(path) as zf:
        return METADATA_FILE in zf.namelist()


def _is_onnx_export(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(prop.key == "medfound_module" for prop in model.metadata_props)


def export_module(checkpoint, out: str | os.PathLike, *,
                  name: str | None = None, fmt: str = "saved_model", arch: str | None = None,
                  init: str | None = None, modality: str | None = None,
                  allow_test_arch: bool = False, fold: bool = False, jit_compile: bool = False,
                  group_norm_statistics: str = "two_pass", overwrite: bool = False) -> Path:
    """Exports ``checkpoint`` as the REMEDIS module ``name`` to ``out``; returns the written path.

    ``checkpoint`` is any backbone spec ``medfound.load`` takes (a run folder, a BiT ``.npz``,
    ``ARCH:x.weights.h5``, a SavedModel folder to convert, ...) or an in-memory ``BiTBackbone``
    (what it records in ``source``, or else the options, says how it was made).
    ``fmt`` is 'saved_model' (the TF-Hub folder; ``fold`` writes the faster, not fine-tunable
    inference form; ``jit_compile`` and ``group_norm_statistics`` how its graph computes, see
    ``write_saved_model``), 'keras' (a ``.keras`` file of the native backbone) or 'onnx' (through
    tf2onnx; output 0 is the block4 map) or 'timm' (a folder ``timm.create_model("local-dir:...")``
    loads). Raises ``ExportError`` when the name and the checkpoint disagree, or when ``out``
    exists and is not an earlier export (``overwrite`` replaces one).
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    options = ExportOptions(name=name, arch=arch, init=init, modality=modality,
                            allow_test_arch=allow_test_arch)
    if fold and fmt != "saved_model":
        raise ExportError("--fold applies to the SavedModel format only (keras is the trainable "
                          "form; onnx is always folded)")
    if (jit_compile or group_norm_statistics != "two_pass") and fmt != "saved_model":
        raise ExportError("--xla and --group-norm-statistics apply to the SavedModel format only")
    backbone, run = load_checkpoint(checkpoint, options)
    spec = resolve_spec(run, backbone, options)
    metadata = build_metadata(spec, run, backbone)
    target = default_output(out, spec.name, fmt)
    check_target(target, fmt, overwrite)
    if fmt == "saved_model":
        return write_saved_model(backbone, metadata, target, fold=fold, jit_compile=jit_compile,
                                 group_norm_statistics=group_norm_statistics)
    if fmt == "keras":
        return write_keras(backbone, metadata, target)
    if fmt == "timm":
        from medfound.export.timm_export import TimmExportError, write_timm

        try:
            return write_timm(backbone, metadata, target)
        except TimmExportError as err:
            raise ExportError(str(err)) from None
    from medfound.export.onnx_export import write_onnx

    return write_onnx(backbone, metadata, target)
