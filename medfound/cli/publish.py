"""`medfound publish`: tarballs, model cards, manifest.json and SHA256SUMS for a release folder."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "publish", help="package a release folder of modules for download",
        description="For each module folder in RELEASE_DIR writes <name>.tar.gz (TF-Hub "
                    "compressed layout) and <name>.md (model card); then MODEL_CARD.md, "
                    "manifest.json (hashes, metadata, probe fingerprints) and SHA256SUMS.")
    parser.add_argument("release_dir", help="folder holding one SavedModel folder per module name")
    parser.add_argument("--model-card", help="release MODEL_CARD.md (default: the release's own, "
                                             "else the repository's)")
    parser.add_argument("--allow-test-modules", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medfound.export.publish import publish

    # PublishError, FileNotFoundError: one line from medfound.cli.main.
    manifest = publish(args.release_dir, model_card=args.model_card,
                       allow_test_modules=args.allow_test_modules)
    for name, entry in manifest["modules"].items():
        print(f"{entry['sha256']}  {entry['archive']}")
    print(f"published {len(manifest['modules'])} module(s) in {args.release_dir}")
    return 0
