"""Deterministic packing of a SavedModel folder as a TF-Hub ``.tar.gz`` module (the writer; the
reader, with its bomb and tar-slip checks, is ``medfound.formats.archive``)."""
from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

from medfound.utils.files import atomic_path


def pack_module(module_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Packs a SavedModel folder as ``out`` (.tar.gz, files at the root), written atomically.

    The archive is deterministic (sorted members, zero timestamps and owners), so the same
    module always gives the same bytes and the same SHA-256.
    """
    module_dir, out = Path(module_dir), Path(out)
    if not (module_dir / "saved_model.pb").is_file():
        raise ValueError(f"{module_dir}: not a SavedModel folder (no saved_model.pb)")
    files = sorted(p for p in module_dir.rglob("*"))
    with atomic_path(out) as tmp:
        # filename="": gzip would otherwise record the temporary file's random name in its header
        with open(tmp, "wb") as raw, \
                gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in files:
                if path.is_symlink():
                    raise ValueError(f"{path}: refusing to pack a symbolic link")
                info = tarfile.TarInfo(path.relative_to(module_dir).as_posix())
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if path.is_dir():
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                else:
                    info.size, info.mode = path.stat().st_size, 0o644
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
    return out
