"""Who owns an output: the one rule every medfound command that writes follows.

A command writes only where it may:

- a path that does not exist, or an empty folder, is taken (a folder is marked on creation);
- a folder is medfound's when it holds the marker ``.medfound-output.json`` naming the command
  that made it (or an ``ours`` test recognises it, for outputs whose layout is fixed, such as a
  SavedModel); a file is medfound's when ``ours`` recognises its content as what the command
  writes;
- anything else that exists is the user's and is refused with one line naming it and what to do;
  medfound's own output is replaced only when the caller passes ``overwrite`` (``--overwrite``),
  except an unfinished folder of the same command, which it continues;
- nothing is deleted but the files a command can name as its own (``remove_owned``).

Every check runs before anything is written (callers check all their targets first, then
write each file by temporary path and rename: ``medfound.utils.files.atomic_path``). Pretraining
keeps its own older marker (``medfound.pretrain.runfolder``); the rule is the same.

API: ``check_folder``, ``claim_folder``, ``check_file``, ``marked_by``, ``remove_owned``.
"""
from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from pathlib import Path

from medfound.errors import UserError

MARKER = ".medfound-output.json"
_MAX_MARKER = 64 * 1024


class OwnershipError(UserError):
    """A target exists and is not medfound's own output (or replacing it needs --overwrite)."""


def marked_by(folder: Path) -> str | None:
    """The command named by ``folder``'s ownership marker, or None (no or unreadable marker)."""
    marker = Path(folder) / MARKER
    try:
        if not marker.is_file() or marker.is_symlink() or marker.stat().st_size > _MAX_MARKER:
            return None
        command = json.loads(marker.read_text()).get("command")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return command if isinstance(command, str) else None


def _shown(folder: Path) -> str:
    entries = sorted(p.name for p in folder.iterdir())
    return ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")


def check_folder(folder: str | Path, command: str, *, overwrite: bool = False,
                 finished: Callable[[Path], bool] | None = None,
                 ours: Callable[[Path], bool] | None = None, flag: str = "--out") -> None:
    """Refuses ``folder`` as the output of ``command`` (e.g. 'medfound finetune') unless it is
    new, empty, or ``command``'s own; writes nothing.

    A folder of ``command`` that is ``finished`` (default: any) is replaced only with
    ``overwrite``; an unfinished one is continued. ``ours`` recognises an unmarked folder as
    medfound's (a fixed layout); it too needs ``overwrite``.
    """
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise OwnershipError(f"{flag} {folder} exists and is not a folder; give a new or empty "
                             "folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    owner = marked_by(folder)
    if owner is None and ours is not None and ours(folder):
        owner = command
    if owner is None:
        raise OwnershipError(f"{flag} {folder} is not empty and was not written by {command} "
                             f"(it holds {_shown(folder)}); refusing to write into it: give a new "
                             "or empty folder")
    if owner != command:
        raise OwnershipError(f"{flag} {folder} holds the output of {owner}, not {command}; give "
                             "another folder")
    if not overwrite and (finished is None or finished(folder)):
        raise OwnershipError(f"{flag} {folder} holds an earlier output of {command}; pass "
                             "--overwrite to replace it, or give another folder")


def claim_folder(folder: str | Path, command: str) -> Path:
    """Creates ``folder`` (if needed) and marks it as ``command``'s; call after ``check_folder``."""
    from medfound.utils.files import atomic_path
    from medfound.version import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if marked_by(folder) != command:
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with atomic_path(folder / MARKER) as tmp:
            tmp.write_text(json.dumps({"command": command, "created": created,
                                       "medfound_version": __version__}, indent=2))
    return folder


def check_file(path: str | Path, command: str, *, ours: Callable[[Path], bool],
               overwrite: bool = False, flag: str = "--out") -> None:
    """Refuses to write the file ``path`` for ``command`` unless it is new, or (with
    ``overwrite``) a file ``ours`` recognises as what ``command`` writes; writes nothing."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_file():
        raise OwnershipError(f"{flag} {path} exists and is not a plain file; refusing to "
                             "replace it (give another path)")
    try:
        recognised = ours(path)
    except Exception:  # noqa: BLE001 - whatever fails to parse is not ours
        recognised = False
    if not recognised:
        raise OwnershipError(f"{flag} {path} exists and was not written by {command}; refusing "
                             "to replace it (give another path, or move the file away)")
    if not overwrite:
        raise OwnershipError(f"{flag} {path} exists (an earlier output of {command}); pass "
                             "--overwrite to replace it")


def remove_owned(folder: str | Path, names: re.Pattern, *, extra: tuple[str, ...] = ()) -> None:
    """Deletes the plain files of ``folder`` whose names ``names`` matches (or are in
    ``extra``) and the marker, then the folder if that left it empty; never anything else."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return
    for item in folder.iterdir():
        if (names.fullmatch(item.name) or item.name in extra or item.name == MARKER) \
                and item.is_file() and not item.is_symlink():
            item.unlink()
    try:
        folder.rmdir()
    except OSError:
        pass  # something else is in there: it is not ours to delete
