"""`medfound info`: print the metadata a module carries (without loading TensorFlow)."""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info", help="print a module's metadata",
        description="Prints the metadata of a medfound module (a SavedModel folder, a .tar.gz "
                    "hub archive or a .keras file), or describes a PhysioNet REMEDIS file or BiT "
                    "SavedModel from its variables (format, architecture, parameters, sizes).")
    parser.add_argument("path", help="module folder, .tar.gz or .keras file")
    parser.add_argument("--json", action="store_true", help="print the metadata as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medfound.export.metadata import METADATA_ASSET, read_metadata

    path = Path(args.path)
    try:
        if path.is_dir() and (path / "saved_model.pb").is_file() \
                and not (path / METADATA_ASSET).is_file():
            # A PhysioNet REMEDIS file or BiT folder: described from its variables.
            from medfound.export.module_info import describe

            info = describe(path)
            if args.json:
                import dataclasses
                import json

                facts = {k: v for k, v in dataclasses.asdict(info).items() if k != "metadata"}
                print(json.dumps(facts, indent=2, default=list))
            else:
                print("\n".join(info.summary_lines()))
            return 0
        meta = read_metadata(args.path)
    except (ValueError, FileNotFoundError) as err:
        print(f"medfound info: error: {err}", file=sys.stderr)
        return 1
    print(meta.to_json() if args.json else "\n".join(meta.summary_lines()))
    return 0
