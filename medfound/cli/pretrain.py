"""`medfound pretrain`: self-supervised pretraining of a BiT backbone on unlabeled medical images."""
from __future__ import annotations

import argparse
import dataclasses

from medfound.cli.options import parse_key_values
from medfound.optim.names import LR_SCALINGS, OPTIMIZERS
from medfound.pretrain.config import PRECISIONS, STRATEGIES
from medfound.registry import MODALITIES, SSL_METHODS

_DEFAULTS = {}  # filled lazily from PretrainConfig so the CLI never restates a default


def _defaults() -> dict:
    if not _DEFAULTS:
        from medfound.pretrain.config import PretrainConfig
        from medfound.ssl.settings import MethodOptions

        for cls in (PretrainConfig, MethodOptions):  # the method's flags stay flat on the command line
            _DEFAULTS.update({f.name: f.default for f in dataclasses.fields(cls)
                              if f.default is not dataclasses.MISSING})
    return _DEFAULTS


def register(subparsers) -> None:
    d = _defaults()
    p = subparsers.add_parser(
        "pretrain", help="continue a BiT backbone with SimCLR, Barlow Twins, MoCo, BYOL or RELIC",
        description="Self-supervised pretraining (SimCLR by default; Barlow Twins, MoCo v2, BYOL "
                    "or RELIC with --method; MICLe pairs with --micle) of a BiT "
                    "ResNetV2 on unlabeled medical images. The run directory holds the config, "
                    "checkpoints, TensorBoard logs and the backbone for `medfound export`; "
                    "running again on the same --out resumes from the last checkpoint.")
    p.add_argument("--data", required=True,
                   help="image folder, CSV (with --path-column), MedMNIST .npz, TFRecord folder "
                        "or tfds:NAME")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--modality", choices=list(MODALITIES), default=d["modality"],
                   help="cxr (448 px, chest X-ray preset) or path (224 px, pathology preset)")
    p.add_argument("--arch", default=d["arch"], help="r50x1, r152x2, ... (see `medfound models`)")
    p.add_argument("--init", default=d["init"], help="random, or a backbone spec to start from: bit-s:PATH / bit-m:PATH (a BiT "
                        ".npz or TF-Hub folder), a module, a run folder (README: backbone specs)")
    p.add_argument("--image-size", type=int, help="crop size (default: the modality's)")
    p.add_argument("--preset", help="augmentation preset (default: the modality's)")
    p.add_argument("--augment", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a preset field, e.g. --augment elastic_prob=0 "
                        "--augment crop_area=0.4,1 (repeatable; fields: `medfound "
                        "augment-preview --help` and medfound.augment.AugmentConfig)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="global batch")
    p.add_argument("--steps", type=int, default=d["steps"], help="training steps (default: %(default)s)")
    p.add_argument("--learning-rate", type=float, default=d["learning_rate"],
                   help="base rate before batch scaling")
    p.add_argument("--lr-scaling", choices=LR_SCALINGS, default=d["lr_scaling"],
                   help="how the learning rate grows with the batch size (SimCLR: linear, base 256) (default: %(default)s)")
    p.add_argument("--warmup-fraction", type=float, default=d["warmup_fraction"],
                   help="fraction of the steps spent in linear warm-up before cosine decay (default: %(default)s)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d["optimizer"],
                   help="optimizer (LARS as in SimCLR/REMEDIS) (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"],
                   help="weight decay (not applied to norms and biases) (default: %(default)s)")
    p.add_argument("--method", choices=list(SSL_METHODS), default=d["method"],
                   help="self-supervised objective")
    p.add_argument("--temperature", type=float, default=d["temperature"],
                   help="simclr/relic/moco (default: the method's, 0.1 or 0.2 for moco)")
    p.add_argument("--projection-dim", type=int, default=d["projection_dim"],
                   help="head output size (default: the method's)")
    p.add_argument("--projection-hidden-dim", type=int, default=d["projection_hidden_dim"],
                   help="head hidden size (default: the backbone's embedding size)")
    p.add_argument("--projection-layers", type=int, default=d["projection_layers"],
                   help="head depth (default: the method's)")
    p.add_argument("--barlow-lambda", type=float, default=d["barlow_lambda"],
                   help="barlow: weight of the off-diagonal term")
    p.add_argument("--relic-alpha", type=float, default=d["relic_alpha"],
                   help="relic: weight of the invariance (KL) term")
    p.add_argument("--moco-queue-size", type=int, default=d["moco_queue_size"],
                   help="moco: negatives kept from earlier batches")
    p.add_argument("--ema-momentum", type=float, default=d["ema_momentum"],
                   help="byol/moco: target momentum at step 0, rising to 1 (default: the "
                        "method's, 0.996 byol, 0.99 moco)")
    p.add_argument("--micle", action="store_true",
                   help="positive pairs from two images of the same patient where possible")
    p.add_argument("--micle-probability", type=float, default=d["micle_probability"],
                   help="with --micle: chance a pair is two images of one patient (default: %(default)s)")
    p.add_argument("--path-column", help="CSV column with image paths")
    p.add_argument("--patient-column", help="CSV column with patient / case ids")
    p.add_argument("--split", default=d["split"], help="split of an .npz or TFDS source")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip and report unreadable images instead of failing")
    p.add_argument("--strategy", choices=STRATEGIES,
                   default=d["strategy"],
                   help="default: one device; mirrored: all local GPUs; multiworker: several "
                        "hosts (reads TF_CONFIG); tpu: a TPU VM (default: %(default)s)")
    p.add_argument("--precision", choices=PRECISIONS,
                   default=d["precision"],
                   help="compute precision; mixed_bfloat16 for TPUs and recent GPUs "
                        "(default: %(default)s)")
    p.add_argument("--xla", action="store_true", help="compile the step with XLA")
    p.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"],
                   help="steps between checkpoints (a rerun resumes from the last) (default: %(default)s)")
    p.add_argument("--keep-checkpoints", type=int, default=d["keep_checkpoints"],
                   help="how many recent checkpoints to keep (default: %(default)s)")
    p.add_argument("--log-every", type=int, default=d["log_every"],
                   help="steps between progress lines and TensorBoard scalars (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d["seed"],
                   help="seed for weights, augmentation and data order (default: %(default)s)")
    p.add_argument("--deterministic", action="store_true", help="enable op determinism")
    p.add_argument("--units", help="override units per block, e.g. 1,1,1,1 (small tests)")
    p.add_argument("--width", type=float, help="override the width factor (small tests)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """The PretrainConfig that the parsed command line describes."""
    from medfound.pretrain.config import PretrainConfig
    from medfound.ssl.settings import MethodOptions

    return PretrainConfig(
        data=args.data, out_dir=args.out, modality=args.modality, arch=args.arch,
        units=tuple(int(u) for u in args.units.split(",")) if args.units else None,
        width=args.width, init=args.init, image_size=args.image_size, preset=args.preset,
        augment=parse_key_values(args.augment, "--augment"),
        batch_size=args.batch_size, steps=args.steps, learning_rate=args.learning_rate,
        lr_scaling=args.lr_scaling, warmup_fraction=args.warmup_fraction,
        optimizer=args.optimizer, weight_decay=args.weight_decay, method=args.method,
        method_options=MethodOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(MethodOptions)}),
        micle=args.micle, micle_probability=args.micle_probability,
        path_column=args.path_column, patient_column=args.patient_column, split=args.split,
        skip_bad_images=args.skip_bad_images, strategy=args.strategy, precision=args.precision,
        xla=args.xla, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, log_every=args.log_every, seed=args.seed,
        deterministic=args.deterministic)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if config.strategy == "multiworker":
        # The collective runtime must start before any other TensorFlow op in this process.
        from medfound.pretrain.strategy import make_strategy

        strategy = make_strategy("multiworker")
    else:
        strategy = None
    from medfound.pretrain.trainer import pretrain

    result = pretrain(config, strategy=strategy, verbose=not args.quiet)
    last = result.history[-1] if result.history else {}
    print(f"run directory: {result.run_dir}")
    print(f"steps: {result.steps} (resumed from {result.resumed_from})"
          + (f", final loss {last['loss']:.4f}" if last else ""))
    print(f"backbone weights: {result.backbone_weights}")
    return 0
