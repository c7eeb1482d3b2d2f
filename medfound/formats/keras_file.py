"""Keras 3 files of the native backbone: ``.keras`` (file or folder form) and ``.weights.h5``.

These formats need no TensorFlow to read: under ``KERAS_BACKEND=jax`` or ``torch`` they load
as they are (the classes are registered by ``import medfound``).
"""
from __future__ import annotations

import warnings
from pathlib import Path

from medfound.errors import BackboneError


def is_keras_folder(path: Path) -> bool:
    """Whether ``path`` is a Keras model saved as a folder (config.json, no SavedModel)."""
    return path.is_dir() and (path / "config.json").is_file() \
        and not (path / "saved_model.pb").exists() and not (path / "model.safetensors").exists()


def load_keras(path: Path):
    """A ``.keras`` backbone (file or folder form), with the module metadata it carries."""
    from medfound.formats.metadata import read_metadata
    from medfound.formats.module_info import ModuleInfo
    from medfound.models.bit import BiTBackbone
    from medfound.utils.files import sha256_file
    from medfound.utils.limits import load_keras_file

    model = load_keras_file(path, BackboneError)  # bounded; a foreign file is one line, not Keras'
    if not isinstance(model, BiTBackbone):
        raise BackboneError(f"{path}: a Keras {type(model).__name__}, not a medfound BiT "
                            "backbone (export one with medfound export --format keras)")
    try:
        meta = read_metadata(path)
    except (FileNotFoundError, ValueError, OSError, KeyError):
        meta = None
    model.source = ModuleInfo.of_backbone(
        model, path=str(path), format="keras", metadata=meta,
        sha256=sha256_file(path if path.is_file() else path / "model.weights.h5"))
    return model


def load_weights_file(path: Path, arch: str | None, init: str | None, spec: str):
    """A bare Keras ``.weights.h5``: it does not say its architecture, so the spec must."""
    from medfound.formats.module_info import ModuleInfo
    from medfound.models.bit import build_backbone
    from medfound.utils.files import sha256_file

    if not arch:
        raise BackboneError(f"{path}: a bare .weights.h5 does not say its architecture; give it "
                            f"as ARCH:{spec} (e.g. r50x1:{spec}) or pass --arch")
    model = build_backbone(arch)
    load_weights_h5(model, path)
    model.source = ModuleInfo.of_backbone(model, path=str(path), format="weights",
                                          init=init or "random", sha256=sha256_file(path))
    return model


def load_weights_h5(model, weights: Path) -> None:
    """Loads Keras weights, treating Keras' 'skipping ... keep fresh weights' warnings as errors."""
    problem = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(str(weights))
        except (ValueError, OSError, KeyError) as err:
            problem = err
    skipped = [str(w.message) for w in caught if "freshly-initialized" in str(w.message)
               or "Skipping" in str(w.message)]
    if problem is not None or skipped:
        detail = problem if problem is not None else \
            f"{len(skipped)} layer group(s) skipped: {skipped[0]}"
        raise BackboneError(f"{weights}: does not fit a {model.spec.name} backbone (units "
                            f"{model.spec.units}, width {model.spec.width}): {detail}")
