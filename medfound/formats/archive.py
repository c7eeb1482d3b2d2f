"""Reading hub-module ``.tar.gz`` archives safely: tar-slip-proof, bomb-bounded unpacking.

Modules are packed (``medfound.export.pack``) in the TF-Hub compressed layout (the SavedModel's
files at the archive root). Unpacking refuses absolute paths, ``..`` components, links, anything
that is not a plain file or folder, and members a SavedModel never has; it bounds the unpacked size (an archive bomb: a few
MB of gzip that unpack to GBs of zeros) relative to the module's own variables and to the
archive's size, and checks the archive's SHA-256 before reading a single member when an
expected hash is given. All of this is decided from the archive's headers before anything is
written; a failed unpack leaves nothing behind.
"""
from __future__ import annotations

import os
import posixpath
import re
import tarfile
from pathlib import Path

from medfound.utils.files import atomic_path, sha256_file


# Python's own extraction filter (3.10.12+ / 3.11.4+), as a second line of defence.
_DATA_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


class UnsafeArchiveError(ValueError):
    """An archive member could escape the target folder, or the archive's hash is wrong."""


# What a TF2 SavedModel folder holds; anything else in a module archive is refused.
MODULE_MEMBERS = re.compile(
    r"\.|saved_model\.pb(?:txt)?|fingerprint\.pb|keras_metadata\.pb"
    r"|variables|variables/variables\.index|variables/variables\.data-\d{5}-of-\d{5}"
    r"|assets|assets/.+|assets\.extra|assets\.extra/.+")
MiB = 1 << 20
# Unpacked bytes outside variables/ may exceed the variables' own size by at most this much
# (a real module's graph, index and metadata are a few MB beside them).
EXTRA_ALLOWANCE = 64 * MiB
# Weights barely compress (float32 noise); a module that unpacks to more than this many times
# its archive, plus a little, is zeros: refused.
MAX_EXPANSION = 20
EXPANSION_ALLOWANCE = 16 * MiB
MAX_MEMBERS = 10_000
MAX_READ_MEMBER = 16 * MiB  # read_member (metadata) reads small files only


def check_module_members(members: list[tarfile.TarInfo], archive: Path) -> None:
    """Refuses members a SavedModel never has and sizes that only an archive bomb has."""
    if len(members) > MAX_MEMBERS:
        raise UnsafeArchiveError(f"{archive}: {len(members)} members; a module has far fewer; "
                                 "refusing to unpack")
    names = []
    for member in members:
        name = posixpath.normpath(member.name.replace("\\", "/"))
        if member.issym() or member.islnk():
            raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a link; a module never "
                                     "has one; refusing to unpack")
        if not MODULE_MEMBERS.fullmatch(name):
            raise UnsafeArchiveError(f"{archive}: member {member.name!r} is not part of a "
                                     "SavedModel (saved_model.pb, variables/, assets/); "
                                     "refusing to unpack")
        names.append(name)
    if not {"saved_model.pb", "saved_model.pbtxt"} & set(names):
        raise UnsafeArchiveError(f"{archive}: no saved_model.pb at the archive root, so not a "
                                 "TF-Hub module; refusing to unpack")
    variables = sum(m.size for m, n in zip(members, names) if n.startswith("variables/"))
    total = sum(m.size for m in members if m.isfile())
    if total - variables > variables + EXTRA_ALLOWANCE:
        raise UnsafeArchiveError(
            f"{archive}: would unpack {(total - variables) / MiB:.0f} MiB beside "
            f"{variables / MiB:.1f} MiB of variables; a module's other files are far smaller "
            "(an archive bomb?); refusing to unpack")
    packed = archive.stat().st_size
    if total > MAX_EXPANSION * packed + EXPANSION_ALLOWANCE:
        raise UnsafeArchiveError(
            f"{archive}: would unpack {total / MiB:.0f} MiB from {packed / MiB:.1f} MiB "
            f"({total / max(packed, 1):.0f}x); module weights do not compress like that (an "
            "archive bomb?); refusing to unpack")


def _check_member(member: tarfile.TarInfo, archive: Path) -> str:
    """The member's normalised relative name, or ``UnsafeArchiveError`` naming the problem."""
    name = member.name
    where = f"{archive}: member {name!r}"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{where} has an absolute path; refusing to unpack")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise UnsafeArchiveError(f"{where} contains '..'; refusing to unpack (tar-slip)")
    normal = posixpath.normpath(name.replace("\\", "/"))
    if member.issym() or member.islnk():
        target = member.linkname.replace("\\", "/")
        base = posixpath.dirname(normal) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise UnsafeArchiveError(f"{where} links to {member.linkname!r} outside the target "
                                     "folder; refusing to unpack")
    elif not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"{where} is a device, fifo or other special file; refusing")
    return normal


def check_archive(archive: str | os.PathLike, expected_sha256: str | None = None) -> list[str]:
    """Checks the hash (if given) and every member's name; returns the member names."""
    archive = Path(archive)
    if expected_sha256 is not None:
        actual = sha256_file(archive)
        if actual != expected_sha256:
            raise UnsafeArchiveError(f"{archive}: SHA-256 {actual} does not match the expected "
                                     f"{expected_sha256}; the file is corrupt or was altered")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UnsafeArchiveError(f"{archive}: not a readable .tar.gz ({err})") from err
    names = [_check_member(m, archive) for m in members]
    check_module_members(members, archive)
    return names


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike,
                 expected_sha256: str | None = None) -> Path:
    """Unpacks ``archive`` into the folder ``target`` (atomically), after ``check_archive``.

    ``target`` must be new, empty, or an earlier unpacked module (it is replaced whole).

    Symbolic links are resolved once more on disk before each write, and Python's own 'data'
    extraction filter is applied as a second line of defence.
    """
    archive, target = Path(archive), Path(target)
    if target.is_dir() and any(target.iterdir()) and not (target / "saved_model.pb").is_file():
        raise ValueError(f"{target}: exists and is not an unpacked module; refusing to replace it")
    check_archive(archive, expected_sha256)
    with atomic_path(target) as tmp:
        tmp.mkdir()
        root = tmp.resolve()
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                name = _check_member(member, archive)
                dest = (root / name).resolve()
                if dest != root and root not in dest.parents:
                    raise UnsafeArchiveError(f"{archive}: member {member.name!r} would be written "
                                             f"outside {target}; refusing to unpack")
                tar.extract(member, root, **_DATA_FILTER)
    return target


def read_member(archive: str | os.PathLike, name: str) -> bytes:
    """Reads one plain-file member (checked like any other) without unpacking the archive."""
    archive = Path(archive)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            if _check_member(member, archive) == name and member.isfile():
                if member.size > MAX_READ_MEMBER:
                    raise UnsafeArchiveError(f"{archive}: member {name!r} is {member.size:,} "
                                             "bytes; far too large; refusing to read it")
                return tar.extractfile(member).read()
    raise KeyError(f"{archive}: no member {name!r}")
