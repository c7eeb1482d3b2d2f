"""Export of a pretraining run (or a BiT checkpoint) as a named REMEDIS module.

The name must be one of the eight registry names and must agree with the checkpoint's
architecture, modality and BiT initialisation; export refuses otherwise and says why. Tiny
test-only architectures may be exported under a registry name only with ``allow_test_arch``, and
such modules are marked ``test_only`` in their metadata, which ``publish`` refuses by default.
"""
from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from pathlib import Path

from medfound.export.metadata import METADATA_ASSET, METADATA_FILE, ModuleMetadata
from medfound.models.configs import get_arch
from medfound.registry import (HUB_MODULES, INIT_DATA, HubModuleSpec, check_custom_name,
                               get_module_spec, module_name)
from medfound.runinfo import BACKBONE_WEIGHTS, RUN_FILE, RunInfo
from medfound.utils.files import atomic_path, sha256_file
from medfound.version import __version__

FORMATS = ("saved_model", "keras", "onnx")
_BIT_FILE = re.compile(r"BiT-([SM])-(R\d+x\d+)", re.IGNORECASE)


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


def load_checkpoint(checkpoint: str | os.PathLike, options: ExportOptions):
    """Reads a run folder, a BiT ``.npz`` or a ``.weights.h5`` into (backbone, RunInfo)."""
    from medfound.models.bit import build_backbone

    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found (a run folder with {RUN_FILE}, a "
                                "module or PhysioNet SavedModel folder, a BiT .npz, or a "
                                ".weights.h5 with --arch)")
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return _load_saved_model_checkpoint(path, options)
    if path.is_dir():
        if not (path / RUN_FILE).is_file():
            raise ExportError(f"{path}: folder has no {RUN_FILE}, so it is not a medfound run")
        run = RunInfo.load(path)
        _agree(path, "architecture", options.arch and get_arch(options.arch).name,
               get_arch(run.arch).name)
        _agree(path, "initialisation", options.init, run.init)
        if run.modality is None:
            run.modality = options.modality
        else:
            _agree(path, "modality", options.modality, run.modality)
        weights = path / BACKBONE_WEIGHTS
        if not weights.is_file():
            raise ExportError(f"{weights}: missing; the run folder has no backbone weights")
        backbone = build_backbone(run.arch, units=run.units, width=run.width)
        _load_weights_h5(backbone, weights)
        return backbone, run
    if path.suffix == ".npz":
        from medfound.models.bit_weights import load_bit_weights

        match = _BIT_FILE.search(path.name)
        file_arch = match.group(2).lower() if match else None
        file_init = f"bit-{match.group(1).lower()}" if match else None
        _agree(path, "architecture", options.arch and get_arch(options.arch).name, file_arch)
        _agree(path, "initialisation", options.init, file_init)
        arch, init = file_arch or options.arch, file_init or options.init
        if not arch or not init:
            raise ExportError(f"{path}: the file name does not say BiT-S/BiT-M and the "
                              "architecture (e.g. BiT-M-R50x1.npz); pass --arch and --init")
        run = RunInfo(arch=arch, modality=options.modality, init=init, init_path=path.name,
                      init_sha256=sha256_file(path), method="none", steps=0,
                      data=INIT_DATA.get(init, ""), medfound_version=__version__)
        backbone = build_backbone(arch)
        load_bit_weights(backbone, path)
        return backbone, run
    if path.name.endswith(".weights.h5"):
        if not options.arch:
            raise ExportError(f"{path}: a bare .weights.h5 does not say its architecture; "
                              "pass --arch")
        run = RunInfo(arch=get_arch(options.arch).name, modality=options.modality,
                      init=options.init or "random", medfound_version=__version__)
        backbone = build_backbone(run.arch)
        _load_weights_h5(backbone, path)
        return backbone, run
    raise ExportError(f"{path}: unknown checkpoint kind (expected a run folder, a BiT .npz or a "
                      ".weights.h5)")


def _load_saved_model_checkpoint(path: Path, options: ExportOptions):
    """A module, PhysioNet file or BiT TF-Hub folder as (backbone, RunInfo), to convert it."""
    from medfound.export.loader import load_saved_model

    backbone = load_saved_model(path)
    info = backbone.source
    meta = info.metadata
    _agree(path, "architecture", options.arch and get_arch(options.arch).name, info.arch)
    _agree(path, "initialisation", options.init, info.init)
    _agree(path, "modality", options.modality, info.modality)
    run = RunInfo(arch=info.arch, units=info.units_override, width=info.width_override,
                  modality=info.modality or options.modality, init=info.init or options.init
                  or "random", medfound_version=__version__,
                  method=meta.method if meta else "unknown",
                  steps=meta.steps if meta else 0,
                  data=meta.pretraining_data if meta else f"converted from {info.format} file "
                  f"{path.name}", image_size=meta.pretraining_image_size if meta else None,
                  init_path=meta.init_checkpoint if meta else None,
                  init_sha256=meta.init_sha256 if meta else None)
    return backbone, run


def _agree(path: Path, what: str, given: str | None, recorded: str | None) -> None:
    if given and recorded and given != recorded:
        raise ExportError(f"{path}: you gave {what} {given!r} but the checkpoint says {recorded!r}")


def _load_weights_h5(backbone, weights: Path) -> None:
    """Loads Keras weights, treating Keras' 'skipping ... keep fresh weights' warnings as errors."""
    import warnings

    problem = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            backbone.load_weights(str(weights))
        except (ValueError, OSError, KeyError) as err:
            problem = err
    skipped = [str(w.message) for w in caught if "freshly-initialized" in str(w.message)
               or "Skipping" in str(w.message)]
    if problem is not None or skipped:
        detail = problem if problem is not None else \
            f"{len(skipped)} layer group(s) skipped: {skipped[0]}"
        raise ExportError(f"{weights}: does not fit a {backbone.spec.name} backbone (units "
                          f"{backbone.spec.units}, width {backbone.spec.width}): {detail}")


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
        medfound_version=__version__, test_only=backbone.spec.test_only)


def write_saved_model(backbone, metadata: ModuleMetadata, out: str | os.PathLike, *,
                      fold: bool = False) -> Path:
    """Writes the hub SavedModel folder (via a temporary sibling, renamed when complete).

    ``fold`` writes the faster inference form (kernels pre-standardised, not fine-tunable);
    the metadata records which form it is.
    """
    import numpy as np
    import tensorflow as tf

    from medfound.export.hub_module import RemedisModule

    out = Path(out)
    with tempfile.TemporaryDirectory() as scratch:
        metadata = dataclasses.replace(metadata, kernel_form="folded" if fold
                                       else "standardize_in_graph",
                                       input_scaling=getattr(backbone, "input_scaling", "bit"))
        meta_file = Path(scratch) / METADATA_FILE
        meta_file.write_text(metadata.to_json())
        module = RemedisModule(backbone, metadata.to_json(), str(meta_file), fold=fold)
        module.trace()
        probe = np.linspace(0.0, 1.0, 2 * 64 * 64 * 3, dtype=np.float32).reshape(2, 64, 64, 3)
        got = module.features(tf.constant(probe))["embedding"].numpy()
        want = backbone(probe, training=False)["embedding"].numpy()
        error = float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-12)
        if error > 1e-4:  # relative: the raw block4 map has no norm to bound its scale
            raise ExportError(f"exported graph disagrees with the backbone by {error:.3g} "
                              f"(relative); not writing {out}")
        with atomic_path(out) as tmp:
            tf.saved_model.save(module, str(tmp),
                                signatures={"serving_default": module.serving_default})
            if not (tmp / METADATA_ASSET).is_file():
                raise ExportError(f"{out}: SavedModel was written without {METADATA_ASSET}")
    return out


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
    if fmt == "saved_model":
        return out
    ext = {"keras": ".keras", "onnx": ".onnx"}[fmt]
    return out if out.name.endswith(ext) else out / f"{name}{ext}"


def check_target(target: Path) -> None:
    """Refuses to replace anything but an earlier module: a SavedModel folder is replaced whole,
    so an existing folder that is not one (``--out ~/``) must never be taken for it."""
    if target.is_dir() and any(target.iterdir()) and not (target / "saved_model.pb").is_file():
        raise ExportError(f"{target}: exists and is not a SavedModel folder; refusing to replace "
                          f"it (give a new path, e.g. {target}/<module name>)")
    if target.exists() and not target.is_dir() and target.suffix not in (".keras", ".onnx"):
        raise ExportError(f"{target}: exists and is a file; refusing to replace it")


def export_module(checkpoint: str | os.PathLike, out: str | os.PathLike, *,
                  name: str | None = None, fmt: str = "saved_model", arch: str | None = None,
                  init: str | None = None, modality: str | None = None,
                  allow_test_arch: bool = False, fold: bool = False) -> Path:
    """Exports ``checkpoint`` as the REMEDIS module ``name`` to ``out``; returns the written path.

    ``checkpoint`` is a run folder, a BiT ``.npz``, a ``.weights.h5``, or a SavedModel folder (a
    medfound module, a PhysioNet REMEDIS file, a BiT TF-Hub folder) to convert.
    ``fmt`` is 'saved_model' (the TF-Hub folder; ``fold`` writes the faster, not fine-tunable
    inference form), 'keras' (a ``.keras`` file of the native backbone) or 'onnx' (through
    tf2onnx; output 0 is the block4 map). Raises ``ExportError`` when the name and the checkpoint
    disagree.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    options = ExportOptions(name=name, arch=arch, init=init, modality=modality,
                            allow_test_arch=allow_test_arch)
    if fold and fmt != "saved_model":
        raise ExportError("--fold applies to the SavedModel format only (keras is the trainable "
                          "form; onnx is always folded)")
    backbone, run = load_checkpoint(checkpoint, options)
    spec = resolve_spec(run, backbone, options)
    metadata = build_metadata(spec, run, backbone)
    target = default_output(out, spec.name, fmt)
    check_target(target)
    if fmt == "saved_model":
        return write_saved_model(backbone, metadata, target, fold=fold)
    if fmt == "keras":
        return write_keras(backbone, metadata, target)
    from medfound.export.onnx_export import write_onnx

    return write_onnx(backbone, metadata, target)
