"""`medfound info`: print the metadata a module carries (without loading TensorFlow)."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info", help="print a module's metadata",
        description="Prints the metadata of a medfound module: a SavedModel folder, a .tar.gz "
                    "hub archive or a .keras file.")
    parser.add_argument("path", help="module folder, .tar.gz or .keras file")
    parser.add_argument("--json", action="store_true", help="print the metadata as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medfound.export.metadata import read_metadata

    meta = read_metadata(args.path)  # ValueError, FileNotFoundError: one line from cli.main
    print(meta.to_json() if args.json else "\n".join(meta.summary_lines()))
    return 0
