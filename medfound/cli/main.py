"""Entry point of the `medfound` console script.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds a parser
whose ``func`` default takes the parsed arguments and returns an exit code. Modules are imported
only when the command line is parsed, and TensorFlow only when a command needs it, so
``medfound --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
