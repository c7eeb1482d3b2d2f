"""Where a module name or path lives on disk: the search path, release manifests, the unpack cache.

Nothing is downloaded; archives are hash-checked and unpacked safely (``formats.archive``).
No TensorFlow here: locating a file is the same on every Keras backend.
"""
from __future__ import annotations

import os
from pathlib import Path

from medfound.formats.keras_file import is_keras_folder
from medfound.formats.timm_folder import is_timm_folder
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
    from medfound.formats.archive import UnsafeArchiveError, safe_extract
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
    if is_keras_folder(path) or is_timm_folder(path):
        return path  # a .keras file's folder form (the Hugging Face layout), or a timm folder
    if not (path.is_dir() and (path / "saved_model.pb").is_file()):
        raise ValueError(f"{path}: not a SavedModel folder, module .tar.gz, .keras file or timm "
                         "folder")
    return path
