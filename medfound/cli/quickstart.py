"""`medfound quickstart`: pretrain, export, hub.load and probe on small data, end to end."""
from __future__ import annotations

import argparse
import dataclasses

from medfound.registry import MODALITIES


def register(subparsers) -> None:
    from medfound.quickstart import QuickstartConfig

    d = {f.name: f.default for f in dataclasses.fields(QuickstartConfig)}
    p = subparsers.add_parser(
        "quickstart", help="the whole chain on a built-in synthetic demo set (a few minutes)",
        description="Generates a synthetic chest-X-ray-like demo set (no data is downloaded), "
                    "pretrains a small BiT backbone with SimCLR/MICLe, exports it as a hub "
                    "module, loads it with hub.load, fits linear probes (module vs random init) "
                    "and prints the test AUC and the paths of everything written. With --data, "
                    "runs on a MedMNIST .npz or a CSV with path,label,patient columns.")
    p.add_argument("--out", default=d["out_dir"], help="folder for everything written")
    p.add_argument("--data", help="MedMNIST .npz or labels CSV (default: synthetic demo)")
    p.add_argument("--modality", choices=list(MODALITIES), default=d["modality"],
                   help="chest X-ray or pathology augmentations and demo images (default: %(default)s)")
    p.add_argument("--arch", default=d["arch"], help="backbone (tiny keeps it to minutes)")
    p.add_argument("--image-size", type=int, default=d["image_size"],
                   help="square image size in pixels for pretraining and probing (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help="pretraining batch size (images per step) (default: %(default)s)")
    p.add_argument("--steps", type=int, default=d["steps"],
                   help="pretraining steps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d["seed"],
                   help="seed for the demo data, the weights and the splits (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="print only the final summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medfound.quickstart import QuickstartConfig, run_quickstart

    run_quickstart(QuickstartConfig(out_dir=args.out, data=args.data, modality=args.modality,
                                    arch=args.arch, image_size=args.image_size,
                                    batch_size=args.batch_size, steps=args.steps,
                                    seed=args.seed), verbose=not args.quiet)
    return 0
