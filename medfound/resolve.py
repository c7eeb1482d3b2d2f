"""One grammar for "which backbone", and the one resolver behind ``medfound.load`` and every command.

=============================  ==============================================================
spec                           what it names
=============================  ==============================================================
``random:ARCH``                a randomly initialised BiT ResNetV2 (``r50x1``, ``r152x2``, ...)
``bit-s:PATH``, ``bit-m:PATH`` BiT weights (``.npz`` or TF-Hub folder), saying which BiT data
``ARCH:PATH``                  any ``PATH`` below with its architecture stated (checked; needed
                               for a bare ``.weights.h5``)
``PATH`` or ``file://PATH``    a REMEDIS module folder or ``.tar.gz``, a PhysioNet file, a BiT
                               ``.npz`` or TF-Hub folder, a pretraining run folder, a ``.keras``
                               file (or its folder form), a ``.weights.h5``
``NAME``                       a REMEDIS name (``cxr-50x1-remedis-m``) on the module search path
=============================  ==============================================================

Every spec resolves to a ``BiTBackbone`` whose ``source`` (a ``ModuleInfo``) holds the facts
callers need: architecture, embedding size, input size, modality, initialisation and provenance
(what was read, its SHA-256, the run record). Nothing is ever downloaded.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from medfound.errors import BackboneError

BIT_INITS = ("bit-s", "bit-m")
__all__ = ["BackboneError", "BackboneSpec", "load", "parse_spec", "spec_problem"]


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A parsed spec: ``random`` with an architecture, or a ``path``/``name`` with optional facts."""

    text: str
    kind: str  # 'random' or 'path' (a name is a path not found on disk)
    arch: str | None = None  # stated by 'random:ARCH' or 'ARCH:PATH'
    init: str | None = None  # stated by 'bit-s:PATH' / 'bit-m:PATH'
    path: str | None = None


def parse_spec(text: str | os.PathLike) -> BackboneSpec:
    """Parses a backbone spec (see the module docstring); raises ``BackboneError`` for a bad one.

    A prefix counts only when it is a known word (``random``, ``bit-s``, ``bit-m``, an
    architecture name, or the older ``bit:ARCH:PATH``), so paths that contain ':' still work.
    """
    from medfound.models.configs import ARCHITECTURES

    raw = os.fspath(text)
    if raw.startswith(("http://", "https://")):
        raise BackboneError(f"{raw}: medfound downloads nothing; fetch the file yourself and give "
                            "its local path (a module folder, .tar.gz, .keras or .npz)")
    if raw.startswith("file://"):
        raw = raw[len("file://"):]
    head, sep, rest = raw.partition(":")
    word = head.lower()
    if sep and word == "random":
        if not rest:
            raise BackboneError(f"{raw!r}: 'random:ARCH' needs an architecture, e.g. random:r50x1")
        return BackboneSpec(raw, "random", arch=_arch_name(rest, raw))
    if sep and word in BIT_INITS:
        inner = parse_spec(rest) if rest else None
        if inner is None or inner.kind != "path":
            raise BackboneError(f"{raw!r}: expected '{word}:PATH' (a BiT .npz or TF-Hub folder)")
        return dataclasses.replace(inner, text=raw, init=word)
    if sep and word == "bit":  # medfound < 0.3: 'bit:ARCH:CHECKPOINT'
        arch, sep2, path = rest.partition(":")
        if not arch or not sep2 or not path:
            raise BackboneError(f"{raw!r}: expected 'bit:ARCH:CHECKPOINT' (or just the path)")
        return BackboneSpec(raw, "path", arch=_arch_name(arch, raw), path=path)
    if sep and word.replace("-", "") in ARCHITECTURES and rest:
        return BackboneSpec(raw, "path", arch=_arch_name(head, raw), path=rest)
    if not raw:
        raise BackboneError("empty backbone spec; give a module path or name, or random:ARCH")
    return BackboneSpec(raw, "path", path=raw)


def spec_problem(text: str | os.PathLike, what: str = "module") -> str | None:
    """What is wrong with a spec before anything is loaded (bad grammar, unknown architecture,
    a path that does not exist and is no module name), or None; for validating configurations."""
    from medfound.registry import HUB_MODULES, is_module_name

    try:
        parsed = parse_spec(text)
    except BackboneError as err:
        return f"{what}: {err}"
    if parsed.kind == "random" or Path(parsed.path).exists():
        return None
    if is_module_name(parsed.path):
        from medfound.formats.locate import find_module

        try:
            find_module(parsed.path)
            return None
        except FileNotFoundError as err:
            return f"{what}: {err}"
    return (f"{what} not found: {parsed.path} (no such file or folder, and not a module name "
            f"such as {next(iter(HUB_MODULES))}; or use random:ARCH)")


def _arch_name(arch: str, spec: str) -> str:
    from medfound.models.configs import get_arch

    try:
        return get_arch(arch).name
    except ValueError as err:
        raise BackboneError(f"{spec!r}: {err}") from None


def load(spec: str | os.PathLike, *, trainable: bool = True, arch: str | None = None,
         init: str | None = None, units: tuple[int, ...] | None = None,
         width: float | None = None, seed: int | None = None,
         search_path: list[Path] | None = None, expected_sha256: str | None = None):
    """The native Keras 3 ``BiTBackbone`` a spec names, with ``model.source`` saying what it is.

    ``arch`` and ``init`` state what the spec's prefixes state (``--arch`` / ``--init``); a
    stated fact that disagrees with what the file records is refused. ``units`` and ``width``
    shrink a ``random:`` architecture (small test configurations); ``seed`` makes a random
    initialisation repeatable. Weights of every format are matched by their BiT variable names,
    never by position.
    """
    parsed = parse_spec(spec)
    if seed is not None:
        import keras

        keras.utils.set_random_seed(seed)
    arch = _agree(parsed.text, "architecture", arch and _arch_name(arch, parsed.text), parsed.arch)
    init = _agree(parsed.text, "initialisation", init, parsed.init)
    if parsed.kind == "random":
        model = _random(arch, units, width, parsed.text)
    else:
        model = _load_path(parsed, arch, init, search_path, expected_sha256)
    model.trainable = trainable
    return model


def _agree(spec: str, what: str, given: str | None, stated: str | None) -> str | None:
    if given and stated and given != stated:
        raise BackboneError(f"{spec}: you gave {what} {given!r} but the spec says {stated!r}")
    return given or stated


def _random(arch: str, units, width, spec: str):
    from medfound.formats.module_info import ModuleInfo
    from medfound.models.bit import build_backbone

    model = build_backbone(arch, units=units, width=width)
    model.source = ModuleInfo.of_backbone(model, path="", format="random", spec=spec,
                                          init="random")
    return model


def _load_path(parsed: BackboneSpec, arch: str | None, init: str | None, search_path,
               expected_sha256):
    model = _read(parsed, arch, init, search_path, expected_sha256)
    source = model.source
    source.spec = parsed.text
    if arch and source.arch and arch != source.arch:
        raise BackboneError(f"{parsed.text}: you gave architecture {arch!r} but the file "
                            f"records {source.arch!r}")
    if init and source.init and init != source.init:
        raise BackboneError(f"{parsed.text}: you gave initialisation {init!r} but the file "
                            f"records {source.init!r}")
    source.init = source.init or init
    return model


def _read(parsed: BackboneSpec, arch: str | None, init: str | None, search_path,
          expected_sha256):
    """The reader (``medfound.formats``) for the file or folder a path spec names."""
    from medfound.formats import bit_npz, keras_file, run_folder, timm_folder
    from medfound.formats.locate import resolve_path
    from medfound.runinfo import RUN_FILE

    given = Path(parsed.path)
    if given.is_dir() and (given / RUN_FILE).is_file():
        return run_folder.load_run(given)
    if given.is_file() and given.suffix == ".npz":
        return bit_npz.load_npz(given, init)
    if given.is_file() and given.name.endswith(".weights.h5"):
        return keras_file.load_weights_file(given, arch, init, parsed.text)
    try:
        path = resolve_path(parsed.path, search_path, expected_sha256)
    except ValueError as err:
        if type(err) is not ValueError:  # an unsafe or altered archive keeps its own type
            raise
        raise BackboneError(f"{err} (nor a run folder, BiT .npz or .weights.h5)") from None
    if (path.is_file() and path.suffix == ".keras") or keras_file.is_keras_folder(path):
        return keras_file.load_keras(path)
    if timm_folder.is_timm_folder(path):
        return timm_folder.load_timm_folder(path)
    return _load_saved_model(path)


def _load_saved_model(path: Path):
    """A SavedModel folder, read through TensorFlow (on any Keras backend, when installed)."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise BackboneError(f"{path}: a SavedModel needs TensorFlow to read; convert it once where "
                            "TensorFlow is installed (medfound export PATH --format keras or "
                            "--format timm) and load the converted file here") from None
    from medfound.formats.savedmodel import load_saved_model

    model = load_saved_model(path)
    model.source.sha256 = _folder_fingerprint(path)
    return model


def _folder_fingerprint(path: Path) -> str:
    """A SavedModel's identity: the SHA-256 of its fingerprint.pb (or of saved_model.pb)."""
    from medfound.utils.files import sha256_file

    marker = path / "fingerprint.pb"
    return sha256_file(marker if marker.is_file() else path / "saved_model.pb")
