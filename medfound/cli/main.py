"""Entry point of the `medfound` console script.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds a parser
whose ``func`` default takes the parsed arguments and returns an exit code. Modules are imported
only when the command line is parsed, and TensorFlow only when a command needs it, so
``medfound --help`` stays fast.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import re
import sys

from medfound.version import __version__

# Subcommand modules under medfound.cli, in the order `medfound --help` lists them.
COMMAND_MODULES = ("quickstart", "models", "augment_preview", "make_tfrecords", "pretrain",
                   "export", "info", "publish", "verify", "finetune", "evaluate", "label_efficiency", "embed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medfound",
        description="REMEDIS-style medical imaging foundation models: pretrain, export, use.")
    parser.add_argument("--version", action="version", version=f"medfound {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(f"medfound.cli.{module}").register(subparsers)
    return parser


# Storage failures a user fixes outside medfound (free space, permissions, mounts): reported as
# one line naming the file instead of a traceback through TensorFlow or h5py.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EFBIG)
_STORAGE_WORDS = tuple(os.strerror(code) for code in STORAGE_ERRNOS)
_PATH = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*:/)?/[^\s;,'\"]*[^\s;,'\":.]")


def storage_error(error: BaseException) -> str | None:
    """'cannot write FILE: REASON' (or 'cannot access' for a missing permission) when ``error``
    or what caused it is a full disk, a quota, a file size limit, a missing permission or a
    read-only file system; None for every other error."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            where = error.filename2 if error.filename2 is not None else error.filename
            return _message(os.strerror(error.errno), None if where is None else str(where))
        text = str(getattr(error, "message", None) or error)
        reason = next((word for word in _STORAGE_WORDS if word.lower() in text.lower()), None)
        if reason is not None and _is_storage_error_type(error):
            path = _PATH.search(text)
            return _message(reason, path.group(0) if path else None,
                            "" if path else text.splitlines()[0][:300])
        error = error.__cause__ or error.__context__
    return None


def _message(reason: str, path: str | None, detail: str = "") -> str:
    verb = "cannot access" if reason == os.strerror(errno.EACCES) else "cannot write"
    where = f" {path}" if path else ""
    return f"{verb}{where}: {reason}" + (f" ({detail})" if detail else "")


def _is_storage_error_type(error: BaseException) -> bool:
    """OSError without an errno (h5py) or a TensorFlow op error from a file system call."""
    if isinstance(error, OSError):
        return True
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(error, tf.errors.OpError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "needs_tensorflow", True):
        from medfound.cli.quiet import quiet_tensorflow_startup

        quiet_tensorflow_startup()  # before any command imports TensorFlow
    try:
        return int(args.func(args) or 0)
    except Exception as error:  # noqa: BLE001 - only storage failures are caught, see below
        message = storage_error(error)
        if message is None:
            raise
        print(f"medfound: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
