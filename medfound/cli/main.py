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

from medfound.errors import STORAGE_ERRNOS
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


_STORAGE_WORDS = tuple(os.strerror(code) for code in STORAGE_ERRNOS)
_DEVICE = re.compile(r"\s*/job:\S*")  # TensorFlow's device names
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
            path = _file_path(text)
            detail = "" if path else _DEVICE.sub("", text.splitlines()[0]).strip(" {}")[:300]
            return _message(reason, path, detail)
        error = error.__cause__ or error.__context__
    return None


def _file_path(text: str) -> str | None:
    """The first file path in an error text; TensorFlow's device names
    (``/job:localhost/replica:0/task:0/device:CPU:0``) are not files."""
    for match in _PATH.finditer(text):
        if not match.group(0).startswith("/job:") and "/device:" not in match.group(0):
            return match.group(0)
    return None


def _message(reason: str, path: str | None, detail: str = "") -> str:
    verb = "cannot access" if reason == os.strerror(errno.EACCES) else "cannot write"
    where = f" {path}" if path else ""
    return f"{verb}{where}: {reason}" + (f" ({detail})" if detail and detail != reason else "")


def _is_storage_error_type(error: BaseException) -> bool:
    """OSError without an errno (h5py) or a TensorFlow op error from a file system call."""
    if isinstance(error, OSError):
        return True
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(error, tf.errors.OpError)


# What `medfound COMMAND` says when Ctrl-C stops it; commands absent here redo their work.
INTERRUPTED = {
    "pretrain": "interrupted; run the same command again to resume from the last checkpoint",
    "embed": "interrupted; run the same command again to continue where it stopped",
    "quickstart": "interrupted; run the same command again to resume the pretraining",
    "make-tfrecords": "interrupted; nothing half-written was kept, run the same command again",
}
# Errors a user fixes: the package's own (all ValueError subclasses, medfound.errors.UserError
# among them) and the file-system ones that name a path. Anything else is a bug: a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError,
               NotADirectoryError)
TRACEBACK_ENV = "MEDFOUND_TRACEBACK"  # set to 1 to see the traceback of a user error


def one_line(error: BaseException) -> str:
    """The error's message on one line (a multi-line problem list joined with '; ')."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    head, rest = lines[0], lines[1:]
    return head + (" " if head.endswith(":") else "; ") + "; ".join(rest) if rest else head


def user_error_message(error: BaseException) -> str | None:
    """The one line to print for an expected failure, or None for a bug."""
    message = storage_error(error)
    if message is not None:
        return message
    if isinstance(error, OSError) and error.errno == errno.ENAMETOOLONG:
        name = str(error.filename or "a path")
        shown = name if len(name) <= 80 else f"{name[:60]}... ({len(name)} characters)"
        return f"{shown}: file name too long; give an existing file, folder or module name"
    if isinstance(error, USER_ERRORS):
        return one_line(error)
    return None


# What TensorFlow says, with no file name most of the time, when a SavedModel or checkpoint it
# reads is cut short or corrupt (IndexError, OSError and DataLossError among others).
DAMAGED_WORDS = ("Read less bytes than requested", "not an sstable", "Wire format was corrupt",
                 "corrupted record", "Checksum does not match", "truncated record",
                 "Data loss")
# The arguments naming what a command reads as a SavedModel or checkpoint, in that order.
READ_ARGUMENTS = ("module", "model", "modules", "path", "checkpoint", "init", "out")


def damaged_file_message(error: BaseException, args: argparse.Namespace) -> str | None:
    """'FILE: damaged or cut short (...)' when TensorFlow failed reading a SavedModel or a
    checkpoint; the file is the one TensorFlow names, else the command's module argument."""
    text = str(getattr(error, "message", None) or error)
    word = next((w for w in DAMAGED_WORDS if w.lower() in text.lower()), None)
    tf = sys.modules.get("tensorflow")
    kinds = (OSError, IndexError) + ((tf.errors.OpError,) if tf is not None else ())
    if word is None or not isinstance(error, kinds):
        return None
    named = re.search(r"file b?'([^']+)'", text)
    where = named.group(1) if named else None
    for name in READ_ARGUMENTS if where is None else ():
        value = getattr(args, name, None)
        if value:
            where = (f"--{name} {' '.join(map(str, value))}" if isinstance(value, list)
                     else f"{value}")
            break
    return (f"{where or 'a SavedModel or checkpoint'}: damaged or cut short ({word}); copy, "
            "unpack or download it again")


# Options naming a file or folder. Given as '' (an unset shell variable) they would silently
# mean '.', and an empty --out would make the current folder the output.
PATH_OPTIONS = ("out", "data", "input", "module", "model", "modules", "checkpoint", "path",
                "source")
_POSITIONAL = ("checkpoint", "path", "source")


def check_no_empty_paths(args: argparse.Namespace) -> None:
    """Raises UserError for an option of PATH_OPTIONS given as an empty string."""
    from medfound.errors import UserError

    for name in PATH_OPTIONS:
        value = getattr(args, name, None)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            flag = name.upper() if name in _POSITIONAL else f"--{name}"
            raise UserError(f"{flag} is empty; give a file or folder ('.' for the current "
                            "folder)")


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand; expected failures print `medfound COMMAND: error: ...` and return 2,
    Ctrl-C prints one line and returns 130."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "engine", None) == "beam":
        args.engine_args = extra  # the engine's own options (Beam's), passed through untouched
    elif extra:
        args = parser.parse_args(argv)  # argparse's own 'unrecognized arguments' error
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "needs_tensorflow", True):
        from medfound.cli.quiet import quiet_tensorflow_startup

        quiet_tensorflow_startup()  # before any command imports TensorFlow
    prog = f"medfound {args.command}"
    try:
        check_no_empty_paths(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"\n{prog}: {INTERRUPTED.get(args.command, 'interrupted')}", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - only user errors are caught, see USER_ERRORS
        message = user_error_message(error) or damaged_file_message(error, args)
        if message is None or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
