"""`medfound make-tfrecords`: converts an unlabeled image source into sharded TFRecords."""
from __future__ import annotations

import argparse
import json
import re


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "make-tfrecords", help="convert an unlabeled image source into sharded TFRecords",
        description="Reads a folder of images, a CSV of paths, a MedMNIST .npz, TFRecords or a "
                    "locally prepared TFDS dataset (tfds:NAME[:SPLIT]) and writes "
                    "unlabeled-XXXXX-of-NNNNN.tfrecord shards plus tfrecords.json. Nothing is "
                    "downloaded.")
    parser.add_argument("source", metavar="SOURCE",
                        help="folder, .csv(.gz), .npz, TFRecord file/glob/folder or tfds:NAME[:SPLIT]")
    parser.add_argument("--out", required=True, help="output folder for the shards")
    parser.add_argument("--shards", type=int, default=8, help="number of shards (default 8)")
    parser.add_argument("--encode", choices=("png", "jpeg"), default="png",
                        help="image encoding in the records (default png: lossless)")
    parser.add_argument("--path-column", default=None, help="CSV column holding image paths")
    parser.add_argument("--patient-column", default=None, help="CSV column holding patient ids")
    parser.add_argument("--root", default=None, help="folder the CSV paths are relative to")
    parser.add_argument("--split", default="train", help="split of an .npz or TFDS source")
    parser.add_argument("--image-key", default="image", help="image feature of a TFDS source")
    parser.add_argument("--data-dir", default=None, help="local TFDS data_dir")
    parser.add_argument("--skip-errors", action="store_true",
                        help="skip unreadable images (and list them) instead of failing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medfound.data.tfrecords import write_tfrecords
    from medfound.data.unlabeled import open_unlabeled

    from medfound.errors import UserError

    if args.shards < 1:
        raise UserError(f"--shards must be >= 1, got {args.shards}")
    # SourceError / ImageError: one line from medfound.cli.main.
    source = open_unlabeled(
        args.source, path_column=args.path_column, patient_column=args.patient_column,
        root=args.root, split=args.split, image_key=args.image_key,
        skip_errors=args.skip_errors, data_dir=args.data_dir)
    import tensorflow as tf

    try:
        shards = write_tfrecords(source, args.out, num_shards=args.shards, encode=args.encode)
    except tf.errors.OpError as exc:
        from medfound.cli.main import storage_error

        if storage_error(exc) is not None:
            raise  # a full disk or a missing permission: the entry point says so in one line
        found = re.search(r"ImageError: (.+)", exc.message or "")
        raise UserError(f"{found.group(1) if found else exc.message} (pass --skip-errors to "
                        "skip unreadable images)") from None
    manifest = json.loads((shards[0].parent / "tfrecords.json").read_text())
    print(f"wrote {manifest['count']} images to {len(shards)} shard(s) in {args.out}")
    print(f"source: {source.description}")
    if len(source.skipped):
        print(source.skipped.summary())
    return 0
