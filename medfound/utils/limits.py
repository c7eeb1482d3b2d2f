"""Bounds on what medfound expands from a file: one place for every decompression limit.

Every compressed or nested format medfound opens is bounded before it is expanded:

- module ``.tar.gz`` archives: ``medfound.formats.archive`` (member list, sizes and ratio from
  the headers, with ``MAX_EXPANSION`` / ``EXPANSION_ALLOWANCE`` below);
- ``.npz`` / ``.keras`` zips: ``check_zip`` (each member's declared size and the total against
  the file's size, before ``np.load`` or Keras inflates anything; ``load_keras_file``);
- HDF5 datasets (PCam): ``check_expansion`` of the declared shape against the file's size;
- JSON records (manifests, metadata, run records): ``read_json`` (bytes read at most, nesting
  depth caught);
- PNG / JPEG / ... pixels: ``medfound.data.images`` (a pixel limit per image and a decode budget
  for the images in flight at once).

Each limit raises ``LimitError`` (a UserError: one line naming the file, exit 2 from the CLI).
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from medfound.errors import UserError

MiB = 1 << 20
# Data barely compresses past this (float32 noise, images); only zeros do: an archive bomb.
MAX_EXPANSION = 20
EXPANSION_ALLOWANCE = 16 * MiB
MAX_ZIP_MEMBERS = 10_000
MAX_JSON_BYTES = 64 * MiB  # a release manifest of every REMEDIS module lists far less


class LimitError(UserError):
    """A file would expand past a bound (a decompression bomb, or not what it claims)."""


def check_expansion(path: str | os.PathLike, unpacked: int, *, packed: int | None = None,
                    what: str = "file") -> None:
    """Refuses ``unpacked`` bytes from a ``packed``-byte file (default: its size) beyond
    ``MAX_EXPANSION`` times plus ``EXPANSION_ALLOWANCE``."""
    packed = Path(path).stat().st_size if packed is None else packed
    if unpacked > MAX_EXPANSION * packed + EXPANSION_ALLOWANCE:
        raise LimitError(f"{path}: this {what} would expand to {unpacked / MiB:.0f} MiB from "
                         f"{packed / MiB:.1f} MiB ({unpacked / max(packed, 1):.0f}x); refusing "
                         "to read it (a decompression bomb?)")


def check_zip(path: str | os.PathLike, what: str = "zip file") -> list[str]:
    """Checks a zip (``.npz``, ``.keras``) from its central directory before anything is
    inflated: member count, and declared sizes against the file's; returns the member names."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise LimitError(f"{path}: not a readable {what} ({err})") from None
    if len(infos) > MAX_ZIP_MEMBERS:
        raise LimitError(f"{path}: {len(infos)} members; refusing to read this {what}")
    check_expansion(path, sum(info.file_size for info in infos), what=what)
    return [info.filename for info in infos]


def read_json(path: str | os.PathLike, data: bytes | None = None, *,
              max_bytes: int = MAX_JSON_BYTES, what: str = "JSON file"):
    """The JSON value of ``path`` (or of its bytes ``data``, already read), read only up to
    ``max_bytes``; LimitError for a larger file, ValueError naming the file for one that is
    not JSON or is nested too deeply for the parser."""
    if data is None:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise LimitError(f"{path}: over {max_bytes / MiB:.0f} MiB; not a {what}")
    try:
        return json.loads(data)
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply; not a {what}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON; not a {what} ({err})") from None


def load_keras_file(path: str | os.PathLike, error: type[Exception] = UserError, **kwargs):
    """``keras.saving.load_model(path)``, bounded first (``check_zip``); a file Keras cannot
    load (not a zip, a config naming an unknown or unsafe class such as ``os.system``, damaged
    weights) is ``error`` naming the file and Keras' reason, not Keras' traceback or its
    misleading 'File not found'."""
    import zipfile

    import keras

    path = Path(path)
    if path.is_file():
        check_zip(path, ".keras file")
    try:
        return keras.saving.load_model(str(path), **kwargs)
    except (TypeError, ValueError, KeyError, AttributeError, OSError, EOFError,
            zipfile.BadZipFile) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise  # a storage problem, reported as one by the CLI
        reason = str(err).split(". ")[0].splitlines()[0][:200] if str(err) else type(err).__name__
        raise error(f"{path}: not a loadable .keras model ({reason})") from None
