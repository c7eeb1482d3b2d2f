"""SavedModel folders, module archives and names as the native Keras 3 backbone.

``medfound.load`` (``medfound.resolve``) sends every SavedModel it is given here: each format
medfound knows (``describe`` says which one a folder is) comes back as the native
``BiTBackbone`` (weight standardisation in the graph, every weight trainable), with its weights
matched by their BiT variable names. ``wrap_saved_model`` wraps any other image
SavedModel as a Keras model around its own variables.
"""
from __future__ import annotations

import os
from pathlib import Path

import keras
import tensorflow as tf

from medfound.export.module_info import ModuleInfo, describe, saved_model_arrays
from medfound.registry import HUB_MODULES, is_module_name

MODULES_ENV = "MEDFOUND_MODULES"  # os.pathsep-separated folders searched for modules by name
CACHE_ENV = "MEDFOUND_CACHE"  # where .tar.gz modules are unpacked (default ~/.cache/medfound)
MANIFEST = "manifest.json"


def default_search_path() -> list[Path]:
    """Folders searched for a module given by name: $MEDFOUND_MODULES, then ~/.medfound/modules."""
    folders = [Path(p) for p in os.environ.get(MODULES_ENV, "").split(os.pathsep) if p]
    return folders + [Path.home() / ".medfound" / "modules"]


def find_module(name: str, search_path: list[Path] | None = None) -> Path:
    """The local folder or ``.tar.gz`` of module ``name``; nothing is downloaded."""
    folders = default_search_path() if search_path is None else [Path(p) for p in search_path]
    for folder in folders:
        for candidate in (folder / name, folder / f"{name}.tar.gz"):
            if candidate.exists():
                return candidate
    where = ", ".join(str(f) for f in folders)
    raise FileNotFoundError(
        f"module {name!r} not found in {where}; nothing is downloaded: put the module folder or "
        f"{name}.tar.gz in one of them (or set ${MODULES_ENV}), or pass its path")


def expected_archive_sha256(archive: Path) -> str | None:
    """The SHA-256 that the ``manifest.json`` beside ``archive`` records for it (None: no manifest).

    A manifest that exists but does not list the archive is an error: the file does not belong
    to that release.
    """
    manifest = archive.parent / MANIFEST
    if not manifest.is_file():
        return None
    from medfound.utils.limits import read_json

    files = read_json(manifest, what="medfound release manifest")  # bounded, parsed once
    files = files.get("files") if isinstance(files, dict) else None
    if not isinstance(files, dict):
        raise ValueError(f"{manifest}: not a medfound release manifest (no 'files' mapping)")
    if archive.name not in files:
        raise ValueError(f"{archive}: not listed in {manifest}; refusing to load an archive that "
                         "does not belong to that release")
    return files[archive.name]


def unpack_cached(archive: str | os.PathLike, expected_sha256: str | None = None) -> Path:
    """Checks and safely unpacks a module ``.tar.gz`` into the cache; returns the folder.

    The hash is checked against ``expected_sha256`` or the release ``manifest.json`` beside the
    archive before anything is read; the cache folder is named by the archive's hash.
    """
    from medfound.export.archive import UnsafeArchiveError, safe_extract
    from medfound.utils.files import sha256_file

    archive = Path(archive)
    expected = expected_sha256 or expected_archive_sha256(archive)
    actual = sha256_file(archive)
    if expected is not None and actual != expected:
        raise UnsafeArchiveError(f"{archive}: SHA-256 {actual} does not match the release manifest "
                                 f"({expected}); the file is corrupt or was altered")
    cache = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "medfound")) / "modules"
    target = cache / actual[:32]
    if not (target / "saved_model.pb").is_file():
        safe_extract(archive, target, expected_sha256=actual)
    return target


def resolve_path(name_or_path: str | os.PathLike, search_path: list[Path] | None = None,
                 expected_sha256: str | None = None) -> Path:
    """The local folder or file a name, path or ``.tar.gz`` stands for (archives are unpacked).

    ``expected_sha256`` checks an archive (else the release ``manifest.json`` beside it does).
    """
    path = Path(name_or_path)
    if not path.exists():
        if is_module_name(str(name_or_path)):
            path = find_module(str(name_or_path), search_path)
        else:
            raise FileNotFoundError(f"{name_or_path}: no such file or folder, and not a module "
                                    f"name (REMEDIS names: {', '.join(HUB_MODULES)})")
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        path = unpack_cached(path, expected_sha256)
    if path.is_file() and path.suffix == ".keras":
        return path
    if is_keras_folder(path):
        return path  # a .keras file's folder form (the Hugging Face layout)
    if not (path.is_dir() and (path / "saved_model.pb").is_file()):
        raise ValueError(f"{path}: not a SavedModel folder, module .tar.gz or .keras file")
    return path


def is_keras_folder(path: Path) -> bool:
    """Whether ``path`` is a Keras model saved as a folder (config.json, no SavedModel)."""
    return path.is_dir() and (path / "config.json").is_file() \
        and not (path / "saved_model.pb").exists()


def load_saved_model(path: str | os.PathLike):
    """The native backbone of a SavedModel folder of any known format (see ``describe``)."""
    from medfound.models.bit import build_backbone
    from medfound.models.bit_weights import assign_bit_arrays

    path = Path(path)
    info = describe(path)
    if info.format == "medfound-v1":
        return _load_legacy_v1(path, info)
    arrays = saved_model_arrays(path)
    scalings = [info.input_scaling] if info.input_scaling else ["bit", "none"]
    loaded = tf.saved_model.load(str(path)) if info.format == "physionet" else None
    for scaling in scalings:
        backbone = build_backbone(info.arch, units=info.units_override, width=info.width_override,
                                  final_norm=info.final_norm, input_scaling=scaling)
        assign_bit_arrays(backbone, arrays, str(path))
        if loaded is None or _same_function(loaded, backbone):
            backbone.source = info
            info.input_scaling = scaling
            return backbone
    raise ValueError(f"{path}: the weights load by name, but the rebuilt {info.arch} backbone does "
                     "not reproduce the file's output with either input convention ([0, 1] scaled "
                     "to [-1, 1], or as given); the file is not a plain BiT ResNetV2")


def _same_function(loaded, backbone) -> bool:
    """Whether the file's own ``__call__`` and the rebuilt backbone agree on a probe batch."""
    import numpy as np

    probe = np.random.RandomState(0).rand(1, 64, 64, 3).astype("float32")
    theirs = np.asarray(loaded(tf.constant(probe)))
    ours = backbone(probe, training=False)["feature_map"].numpy()
    scale = float(np.abs(theirs).max()) or 1.0
    return theirs.shape == ours.shape and float(np.abs(theirs - ours).max()) <= 1e-4 * scale


def _load_legacy_v1(module_dir: Path, info: "ModuleInfo"):
    """A module written before the PhysioNet-structured format (medfound < 0.2): its variables
    are the Keras backbone's (named by their Keras paths), with folded kernels and the final
    GroupNorm. Standardising a folded kernel again leaves it unchanged, so the rebuilt model
    computes the same features; the old module's output is the rebuilt model's GroupNorm'd
    ``pre_logits``. Variables are matched by name, so swapped or renamed ones are refused."""
    from medfound.models.bit import build_backbone

    backbone = build_backbone(info.arch, units=info.units_override, width=info.width_override,
                              final_norm=True)
    module = tf.saved_model.load(str(module_dir))
    values = {v.name.split(":")[0]: v for v in module.variables}
    wanted = {w.path: w for w in backbone.weights}
    missing, extra = sorted(set(wanted) - set(values)), sorted(set(values) - set(wanted))
    if missing or extra:
        raise ValueError(f"{module_dir}: its variables do not match a {info.arch} backbone "
                         f"(missing {missing[:3]}, unexpected {extra[:3]}); the module is "
                         "damaged or mislabeled")
    for path, weight in wanted.items():
        value = values[path]
        if tuple(weight.shape) != tuple(value.shape):
            raise ValueError(f"{module_dir}: variable {path} has shape {tuple(value.shape)} "
                             f"but the backbone needs {tuple(weight.shape)}")
        weight.assign(value.numpy())
    backbone.source = info
    return backbone


def wrap_saved_model(saved_model_dir: str | os.PathLike, input_shape=(None, None, 3)):
    """A Keras 3 model around any image SavedModel (``images -> outputs``), variables trainable."""
    layer = SavedModelLayer(str(saved_model_dir))
    inputs = keras.Input(input_shape, name="images")
    return keras.Model(inputs, layer(inputs), name=Path(saved_model_dir).name.replace("-", "_"))


class SavedModelLayer(keras.layers.Layer):
    """A Keras 3 layer calling a SavedModel's ``__call__`` (or its ``serving_default`` signature).

    The SavedModel's own ``tf.Variable`` objects become the layer's weights (the same variables,
    not copies), so an optimizer step on the layer changes what the SavedModel computes. Its
    trainable variables are those the SavedModel lists in ``trainable_variables`` (the reusable
    SavedModel API) or, failing that, those created with ``trainable=True``.
    """

    def __init__(self, saved_model_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.saved_model_dir = saved_model_dir
        self._loaded = tf.saved_model.load(saved_model_dir)
        obj = self._loaded
        self._signature = None
        if _has_restored_call(obj):
            self._fn = obj.__call__
            self._takes_training = hasattr(obj, "trainable_variables")
        elif "serving_default" in obj.signatures:
            self._fn = self._signature = obj.signatures["serving_default"]
            self._takes_training = False
        else:
            raise ValueError(f"{saved_model_dir}: SavedModel has neither __call__ nor a "
                             "serving_default signature to call")
        variables = list(getattr(obj, "variables", None) or self._function_variables())
        trainable_ids = {id(v) for v in (getattr(obj, "trainable_variables", None)
                                         or [v for v in variables if v.trainable])}
        for index, variable in enumerate(variables):
            clean = variable.name.split(":")[0].replace("/", "_")  # Keras names have no '/'
            weight = keras.Variable(variable, trainable=id(variable) in trainable_ids,
                                    name=f"v{index}_{clean}")
            self._track_variable(weight)
        self.built = True

    def _function_variables(self) -> list:
        functions = getattr(self._fn, "concrete_functions", None) or [self._fn]
        seen, found = set(), []
        for fn in functions:
            for v in fn.variables:
                if id(v) not in seen:
                    seen.add(id(v))
                    found.append(v)
        return found

    def call(self, inputs, training=False):
        if self._signature is not None:
            (arg_name,) = self._signature.structured_input_signature[1].keys()
            out = self._signature(**{arg_name: inputs})
            return next(iter(out.values())) if len(out) == 1 else out
        if self._takes_training:
            return self._fn(inputs, training=bool(training))
        return self._fn(inputs)


def _has_restored_call(obj) -> bool:
    """Whether a loaded SavedModel object has a saved ``__call__`` function."""
    return "__call__" in getattr(type(obj), "__dict__", {}) or "__call__" in vars(obj)
