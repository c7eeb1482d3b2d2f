"""`medfound augment-preview`: a PNG grid of augmented view pairs: what the model will see."""
from __future__ import annotations

import argparse

PRESET_NAMES = ("cxr", "path")  # checked against medfound.augment.PRESETS when the command runs


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "augment-preview", help="write a PNG grid of augmented view pairs of some images",
        description="Augments each IMAGE with a pretraining preset and writes a grid: one row per "
                    "image, the original first, then PAIRS pairs of views as contrastive "
                    "pretraining would see them.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--preset", default="cxr", choices=PRESET_NAMES,
                        help="augmentation preset (default: cxr)")
    parser.add_argument("--size", type=int, default=None,
                        help="view size in pixels (default: the preset's modality input size)")
    parser.add_argument("--pairs", type=int, default=4, help="view pairs per image (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--out", required=True, help="output PNG path")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medfound.augment.preview import write_preview

    # A ValueError (bad image, preset or size) is one line from medfound.cli.main.
    path = write_preview(args.images, args.out, preset=args.preset, image_size=args.size,
                         pairs=args.pairs, seed=args.seed)
    print(path)
    return 0
