"""File helpers shared by every writer: hashing and write-to-temporary-then-rename."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

TEMP_PREFIX = ".tmp-"  # temporaries of atomic_path; a resumed run removes those a kill left


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks so large checkpoints do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary sibling of ``path`` to write (a file or a folder); renames it on success.

    A killed or failing writer never leaves a half-written result under the final name: on an
    exception the temporary is removed and ``path`` keeps whatever it held before. An OSError
    that names no file (h5py's "No space left on device") is re-raised naming ``path``.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    # The temporary keeps the final suffix: some writers (Keras' '.weights.h5') insist on it.
    tmp = final.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex[:8]}-{final.name}")
    try:
        try:
            yield tmp
        except OSError as error:
            if error.filename is None and error.errno is not None:
                raise OSError(error.errno, os.strerror(error.errno), str(final)) from error
            raise
        if final.is_dir() and tmp.is_dir():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def sha256_path(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a folder (its relative file names and contents, in order)."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()
