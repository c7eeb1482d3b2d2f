"""`medfound publish`: a release folder of modules laid out for a web server, Kaggle or Hugging Face."""
from __future__ import annotations

import argparse

from medfound.export.layouts import LAYOUTS, LICENSES  # no TensorFlow import


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "publish", help="package a release folder of modules for download (web, Kaggle, Hugging Face)",
        description="--layout folder (default): for each module folder in RELEASE_DIR writes "
                    "<name>.tar.gz (TF-Hub compressed layout) and <name>.md (model card); then "
                    "MODEL_CARD.md, manifest.json (hashes, metadata, probe fingerprints) and "
                    "SHA256SUMS. --layout kaggle writes RELEASE_DIR/kaggle/ (model-metadata.json "
                    "and tensorFlow2/<name>/ variation folders with model-instance-metadata.json, "
                    "for `kaggle models create` and `kaggle models instances create -r tar`). "
                    "--layout huggingface writes RELEASE_DIR/huggingface/<name>/ (the native "
                    "Keras backbone as Keras stores it on the Hub, medfound_module.json and a "
                    "README.md model card with the Hub's YAML block). Every layout gets "
                    "manifest.json and SHA256SUMS, and `medfound verify` checks it.")
    parser.add_argument("release_dir", help="folder holding one SavedModel folder per module name")
    parser.add_argument("--model-card", help="release MODEL_CARD.md (default: the release's own, "
                                             "else the repository's)")
    parser.add_argument("--layout", choices=LAYOUTS, default="folder",
                        help="where the release goes (default: %(default)s)")
    parser.add_argument("--license", dest="license_id", choices=list(LICENSES), default="apache-2.0",
                        help="licence of the weights, for the Kaggle and Hugging Face metadata "
                             "(default: %(default)s)")
    parser.add_argument("--kaggle-owner", help="Kaggle user or organisation slug (default: the "
                                               "Kaggle CLI's placeholder, to edit before upload)")
    parser.add_argument("--kaggle-model", default="medfound-remedis",
                        help="Kaggle model slug (default: %(default)s)")
    parser.add_argument("--sign", metavar="PRIVATE_KEY",
                        help="OpenSSH private key: also write SHA256SUMS.sig (ssh-keygen -Y "
                             "sign), checked by `medfound verify --key KEY.pub`")
    parser.add_argument("--allow-test-modules", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medfound.export.publish import publish

    # PublishError, ValueError, FileNotFoundError: one line from medfound.cli.main.
    manifest = publish(args.release_dir, model_card=args.model_card,
                       allow_test_modules=args.allow_test_modules, layout=args.layout,
                       license_id=args.license_id, kaggle_owner=args.kaggle_owner,
                       kaggle_model=args.kaggle_model, sign_key=args.sign)
    if args.layout == "folder":
        for name, entry in manifest["modules"].items():
            print(f"{entry['sha256']}  {entry['archive']}")
        print(f"published {len(manifest['modules'])} module(s) in {args.release_dir}")
        return 0
    out = Path(args.release_dir) / args.layout
    for name, entry in manifest["modules"].items():
        print(f"{name}: {out / entry['folder']}")
    print(f"published {len(manifest['modules'])} module(s) in {out} (check: medfound verify {out})")
    if args.layout == "kaggle":
        print(f"upload: kaggle models create -p {out}; then per module: kaggle models instances "
              f"create -p {out}/tensorFlow2/NAME -r tar (edit ownerSlug first if you did not "
              "pass --kaggle-owner)")
    else:
        print(f"upload: huggingface-cli upload OWNER/NAME {out}/NAME")
    return 0
