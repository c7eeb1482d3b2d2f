"""`medfound verify`: re-hash a published release, load every module and check its fingerprint."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify", help="check a published release (hashes, loading, probe fingerprints, signature)",
        description="Re-hashes every file listed in SHA256SUMS and manifest.json, safely unpacks "
                    "and loads every module, runs the fixed probe image and compares the "
                    "embedding with the one recorded at publish time, and cross-checks the "
                    "module cards and the modules' own metadata against the manifest. Works on "
                    "a folder release and on the Kaggle and Hugging Face layouts. Hashes prove "
                    "the files are the ones the lists name, not who made the lists: pass --key "
                    "to also check the publisher's signature (SHA256SUMS.sig).")
    parser.add_argument("release_dir", help="published release folder (or its kaggle/ or "
                                            "huggingface/ layout folder)")
    parser.add_argument("--key", metavar="PUBLIC_KEY",
                        help="the publisher's OpenSSH public key (.pub); SHA256SUMS.sig must be "
                             "its good signature (ssh-keygen -Y verify)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medfound.export.verify import VerifyError, verify

    try:
        results = verify(args.release_dir, key=args.key)
    except VerifyError as err:
        print(f"medfound verify: FAILED\n{err}", file=sys.stderr)
        return 1
    for name, status in results.items():
        print(f"{name}: {status}")
    if args.key:
        print(f"signature: SHA256SUMS.sig is a good signature by {args.key}")
    elif (Path(args.release_dir) / "SHA256SUMS.sig").is_file():
        print("signature: SHA256SUMS.sig present but not checked (pass --key PUBLIC_KEY)")
    else:
        print("signature: none; the hashes show the files are intact, not who published them")
    print(f"verified {len(results)} module(s) in {args.release_dir}")
    return 0
