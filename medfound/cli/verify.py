"""`medfound verify`: re-hash a published release, load every module and check its fingerprint."""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify", help="check a published release (hashes, loading, probe fingerprints)",
        description="Re-hashes every file listed in SHA256SUMS and manifest.json, safely unpacks "
                    "and loads every module, runs the fixed probe image and compares the "
                    "embedding with the one recorded at publish time.")
    parser.add_argument("release_dir", help="published release folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medfound.export.verify import VerifyError, verify

    try:
        results = verify(args.release_dir)
    except VerifyError as err:
        print(f"medfound verify: FAILED\n{err}", file=sys.stderr)
        return 1
    for name, status in results.items():
        print(f"{name}: {status}")
    print(f"verified {len(results)} module(s) in {args.release_dir}")
    return 0
