"""The run folder of `medfound pretrain`: who owns it, who is using it, what it was trained on.

Three small records make a run folder safe to reuse:

- ``.medfound-run.json``, the ownership marker written when pretraining creates (or adopts an
  empty) folder. A non-empty folder without it is not a run and is refused, so that nothing of a
  user's is ever deleted; the leftover cleaner only touches names pretraining itself writes.
- ``.medfound-run.lock``, held with ``flock`` while a process trains, so that a second process
  on the same folder is refused with the holder's pid and host (the kernel drops the lock when its
  holder dies, even by SIGKILL).
- ``history.jsonl``, one line appended per run segment (first start and every resume): the data's
  fingerprint and description, the steps and the settings that may change on resume. A resume on
  other data, or with another run-defining setting, is refused naming both values.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from medfound.errors import RunFolderError, RunLockedError
from medfound.utils.files import TEMP_PREFIX
from medfound.version import __version__

logger = logging.getLogger("medfound.pretrain")

MARKER_FILE = ".medfound-run.json"
LOCK_FILE = ".medfound-run.lock"
HISTORY_FILE = "history.jsonl"
CONFIG_FILE = "config.json"
# Settings that may change when a run resumes: the schedule's end, bookkeeping and how the same
# computation is placed. Every other PretrainConfig field defines the run and must stay.
RESUMABLE_FIELDS = ("data", "out_dir", "steps", "checkpoint_every", "keep_checkpoints",
                    "log_every", "preview_images", "strategy", "xla", "deterministic",
                    "skip_bad_images")
# The only names pretraining writes under a temporary name (atomic_path) or that TensorFlow's
# CheckpointManager leaves half-written: nothing else is ever deleted.
_TEMP_FILE = re.compile(re.escape(TEMP_PREFIX) + r"[0-9a-f]{8}-(?:backbone\.weights\.h5|run\.json|"
                        r"config\.json|" + re.escape(MARKER_FILE) + r")")
_TEMP_CHECKPOINT = re.compile(r"ckpt-\d+_temp")
_CHECKPOINT_FILE = re.compile(r"(ckpt-\d+)\.(?:index|data-\d{5}-of-\d{5})")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def check_claimable(run_dir: Path) -> None:
    """Refuses an --out that ``claim`` would refuse, writing nothing."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"--out {run_dir} is a file, not a folder; give a new or empty "
                             "folder (or an earlier run to resume)")
    if (run_dir / MARKER_FILE).is_file():
        return
    entries = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    if entries and not _is_unmarked_run(run_dir):
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5
                                          else "")
        raise RunFolderError(f"--out {run_dir} is not empty and is not a medfound pretraining run "
                             f"(it holds {shown}); give a new or empty folder, or an earlier "
                             "run's folder to resume it")


def claim(run_dir: Path) -> None:
    """Makes ``run_dir`` a pretraining run folder, or checks that it is one.

    A missing or empty folder is created and marked; a folder holding this marker is a run.
    A run written before the marker existed (its config.json a pretraining configuration, beside
    checkpoints/ or run.json) is adopted. Anything else is refused: pretraining never mixes its
    files with a user's, and never deletes what it cannot prove it wrote.
    """
    check_claimable(run_dir)
    if (run_dir / MARKER_FILE).is_file():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    from medfound.utils.files import atomic_path

    with atomic_path(run_dir / MARKER_FILE) as tmp:
        tmp.write_text(json.dumps({"command": "medfound pretrain", "created": _now(),
                                   "medfound_version": __version__}, indent=2))


def _is_unmarked_run(run_dir: Path) -> bool:
    """A run of medfound before the marker: a loadable pretraining config.json beside its
    checkpoints or run record."""
    from medfound.pretrain.config import PretrainConfig

    if not ((run_dir / "checkpoints").is_dir() or (run_dir / "run.json").is_file()):
        return False
    try:
        PretrainConfig.load(run_dir / CONFIG_FILE)
    except (OSError, ValueError, TypeError):
        return False
    return True


@contextlib.contextmanager
def locked(run_dir: Path, command: str = "pretrain") -> Iterator[None]:
    """Holds the run folder's lock; a second holder is refused, naming the first one (and the
    ``command`` that holds it: ``embed --slides`` takes the same lock on its --out folder)."""
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            try:
                who = json.loads(holder)
                said = (f"process {who.get('pid')} on {who.get('host')} since "
                        f"{who.get('since')}")
            except ValueError:
                said = "another process"
            raise RunLockedError(f"--out {run_dir} is in use by another medfound {command} "
                                 f"({said}); wait for it to finish or give another --out"
                                 ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": _now()}).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Deletes what a killed run left unfinished - TensorFlow's ``checkpoints/ckpt-N_temp``
    folders and pretraining's own ``.tmp-XXXXXXXX-<name>`` files - and returns their paths.
    Only those exact names are touched, and only in a folder holding the ownership marker."""
    if not (run_dir / MARKER_FILE).is_file():
        return []
    found = [p for p in (run_dir / "checkpoints").glob("*_temp")
             if _TEMP_CHECKPOINT.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
    found += [p for p in run_dir.glob(f"{TEMP_PREFIX}*")
              if _TEMP_FILE.fullmatch(p.name) and p.is_file() and not p.is_symlink()]
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if found:
        logger.info("removed %d unfinished file(s) of an interrupted run in %s", len(found),
                    run_dir)
    return found


def remove_unlisted_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Deletes ``ckpt-N.index`` / ``ckpt-N.data-*`` files no longer listed by the checkpoint
    state (a kill between TensorFlow's save and its sweep of old checkpoints leaves them);
    nothing without a state file."""
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(checkpoint_dir))
    if state is None:
        return []
    keep = {Path(path).name for path in state.all_model_checkpoint_paths}
    found = [p for p in checkpoint_dir.glob("ckpt-*")
             if (m := _CHECKPOINT_FILE.fullmatch(p.name)) and m.group(1) not in keep
             and p.is_file()]
    for path in found:
        path.unlink(missing_ok=True)
    if found:
        logger.info("removed %d file(s) of checkpoints no longer listed in %s", len(found),
                    checkpoint_dir)
    return found


def prune_missing_checkpoints(checkpoint_dir: Path) -> None:
    """Drops from the checkpoint state the checkpoints whose files are gone (a kill between
    TensorFlow's sweep of old checkpoints and its update of the state)."""
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(checkpoint_dir))
    if state is None:
        return
    # TensorFlow has joined relative entries to the folder already.
    present = [p for p in state.all_model_checkpoint_paths if Path(p + ".index").is_file()]
    if present == list(state.all_model_checkpoint_paths):
        return
    logger.info("checkpoint state of %s listed deleted checkpoints; listing only %s",
                checkpoint_dir, [Path(p).name for p in present] or "none")
    if not present:
        (checkpoint_dir / "checkpoint").unlink(missing_ok=True)
        return
    write_checkpoint_state(checkpoint_dir, [Path(p).name for p in present])


def write_checkpoint_state(checkpoint_dir: Path, paths: list[str]) -> None:
    """Writes TensorFlow's ``checkpoint`` state file (a text CheckpointState) listing ``paths``,
    the last one the latest, atomically."""
    from medfound.utils.files import atomic_path

    lines = [f"model_checkpoint_path: {json.dumps(paths[-1])}"]
    lines += [f"all_model_checkpoint_paths: {json.dumps(path)}" for path in paths]
    with atomic_path(checkpoint_dir / "checkpoint") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


# --- what the run was trained on -----------------------------------------------------------


def data_fingerprint(source) -> str:
    """A short content fingerprint of an unlabeled source, cheap to compute on every start:
    file names (relative to their common folder) and sizes; for an .npz, the array's header and
    the file's size, first and last MiB; TFDS: name, split and size."""
    digest = hashlib.sha256(source.kind.encode())
    paths = getattr(source, "paths", None) or getattr(source, "files", None)
    if paths:
        root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
        for path in paths:
            try:
                size = os.path.getsize(path)
            except OSError:
                size = -1
            digest.update(f"{os.path.relpath(path, root)}\0{size}\n".encode())
    elif getattr(source, "npz_path", ""):
        digest.update(f"{source.key}{source.shape}{source.dtype}".encode())
        with open(source.npz_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            digest.update(str(size).encode() + f.read(1 << 20))
            f.seek(max(size - (1 << 20), 0))
            digest.update(f.read(1 << 20))
    else:
        digest.update(f"{getattr(source, 'name', '')}:{getattr(source, 'split', '')}:"
                      f"{source.num_examples}".encode())
    return digest.hexdigest()[:16]


def read_history(run_dir: Path) -> list[dict]:
    path = run_dir / HISTORY_FILE
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    try:
        return [json.loads(line) for line in lines]
    except ValueError as error:
        raise RunFolderError(f"{path}: not valid JSON lines ({error})") from None


def check_resume(run_dir: Path, config) -> None:
    """Refuses to resume ``run_dir`` with settings that define another run (all PretrainConfig
    fields but RESUMABLE_FIELDS), naming each saved and given value."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
    except ValueError as error:
        raise RunFolderError(f"{path}: not valid JSON ({error})") from None
    # Compared field by field, the method's knobs too, in today's layout (older runs saved them flat).
    given = _flat_settings(_jsonable(config.to_dict()))
    saved = _flat_settings(type(config).upgrade_dict(saved))
    changed = [f"{key}: {saved.get(key)!r} in the run, {given[key]!r} now" for key in given
               if key not in RESUMABLE_FIELDS and key in saved and saved[key] != given[key]]
    if changed:
        raise RunFolderError(f"--out {run_dir} holds a run with other settings ("
                             f"{'; '.join(changed)}); resume it with the same settings or give "
                             "a new --out")


def check_data(run_dir: Path, source, fingerprint: str) -> None:
    """Refuses to resume ``run_dir`` on data other than the data it was trained on."""
    for segment in read_history(run_dir):
        if segment.get("data_fingerprint"):
            if segment["data_fingerprint"] != fingerprint:
                raise RunFolderError(
                    f"--out {run_dir} was trained on {segment.get('data')!r} (fingerprint "
                    f"{segment['data_fingerprint']}), but --data now gives "
                    f"{source.description!r} (fingerprint {fingerprint}); give the same data "
                    "to resume, or a new --out to train on other data")
            return


def append_history(run_dir: Path, config, source, fingerprint: str, start: int) -> None:
    """Appends one line for this segment of the run (flushed and synced: a record, not a log)."""
    settings = {key: value for key, value in _jsonable(config.to_dict()).items()
                if key in RESUMABLE_FIELDS}
    entry = {"started": _now(), "from_step": start, "to_step": config.steps,
             "data": source.description, "data_fingerprint": fingerprint,
             "settings": settings, "medfound_version": __version__}
    with open(run_dir / HISTORY_FILE, "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _jsonable(value):
    return json.loads(json.dumps(value))


def _flat_settings(config: dict) -> dict:
    """A config dict with the nested ``method_options`` spread to the top level (each is one setting)."""
    return {**{k: v for k, v in config.items() if k != "method_options"}, **(config.get("method_options") or {})}

