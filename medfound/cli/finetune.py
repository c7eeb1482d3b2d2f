"""`medfound finetune`: a linear probe or end-to-end fine-tune of a module on a labeled medical task."""
from __future__ import annotations

import argparse
import dataclasses

from medfound.cli.options import parse_key_values
from medfound.data.labeled import TASKS
from medfound.finetune.config import MODES
from medfound.optim.names import OPTIMIZERS

TASK_CHOICES = TASKS  # medfound.data.labeled names the tasks
# Whole-slide tasks on the per-slide files of `medfound embed --slides` (medfound.slides.mil).
SLIDE_TASK_CHOICES = ("camelyon16-slides", "camelyon16-tiles")


def _defaults() -> dict:
    from medfound.finetune.config import STRATEGIES, FinetuneConfig

    defaults = {f.name: f.default for f in dataclasses.fields(FinetuneConfig)
                if f.default is not dataclasses.MISSING}
    return {**defaults, "strategies": list(STRATEGIES)}


def register(subparsers) -> None:
    d = _defaults()
    p = subparsers.add_parser(
        "finetune", help="fine-tune or linear-probe a module on a labeled task (CheXpert, Camelyon, ...)",
        description="Trains a linear head on a module's embeddings (--mode linear, backbone frozen) or the "
                    "whole network (--mode full) on a labeled task with patient-level splits, stops early "
                    "on validation mean AUC, and writes model.keras, config.json, metrics.json (per-class "
                    "AUC with bootstrap 95%% CIs), history.json, roc_test.png and training_curves.png.")
    p.add_argument("--module", help=MODULE_HELP + " (not used by the slide tasks)")
    p.add_argument("--label-fraction", default=str(d["label_fraction"]),
                   help="patient-level fraction of the training labels, in (0, 1]: 0.1 or 10%% (1 = all, "
                        "the default)")
    p.add_argument("--seed", type=int, default=d["seed"],
                   help="seed for the split, the label subset and the head (default: %(default)s)")
    p.add_argument("--strategy", choices=d["strategies"], default=d["strategy"],
                   help="devices --mode full splits each batch over: default (one), mirrored "
                        "(all local GPUs), tpu (a TPU VM); --mode linear embeds once and trains "
                        "its small head on one device; no multiworker, since each host would "
                        "decide early stopping on its own (default: %(default)s)")
    add_training_arguments(p, d, extra_tasks=SLIDE_TASK_CHOICES)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier finished fine-tuning run in --out (never a folder "
                        "medfound did not write)")
    p.add_argument("--labels", help="slide tasks: CSV slide,label[,patient][,split] (default: "
                                    "<data>/labels.csv, else tumor_*/normal_* names)")
    p.add_argument("--slide-models", default="mean,attention",
                   help="slide task: classifiers to train, of mean (mean pooling + logistic "
                        "regression) and attention (gated attention MIL)")
    p.add_argument("--tile-threshold", type=float, default=0.5,
                   help="tile task: a tile is tumour when its annotated tumour fraction reaches this")
    p.set_defaults(func=run)


DATA_HELP = ("dataset folder or file for the task, or tfds:chexpert / tfds:patch_camelyon (task camelyon) "
             "for a locally prepared TFDS dataset: --data-option data_dir=DIR, and manual_dir=DIR to prepare it "
             "from your local copy first (never downloaded)")
MODULE_HELP = ("backbone spec (README: backbone specs): a module name or path, a PhysioNet file, "
               "a BiT .npz (bit-m:PATH), a run folder, a .keras file, or random:ARCH")


def add_training_arguments(p: argparse.ArgumentParser, d: dict, extra_tasks: tuple = ()) -> None:
    """The task, data and training options shared by finetune and label-efficiency."""
    p.add_argument("--task", required=True, choices=TASK_CHOICES + tuple(extra_tasks),
                   help="labeled task: how --data is read and which labels are predicted")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--mode", choices=MODES, default=d["mode"],
                   help="linear: frozen backbone, train a linear head; full: train everything (default: %(default)s)")
    p.add_argument("--classes", help="comma-separated label columns to keep (multi-label tasks)")
    p.add_argument("--epochs", type=int, default=d["epochs"], help="maximum epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help="global batch size (default: %(default)s)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d["optimizer"],
                   help="optimizer (default: %(default)s)")
    p.add_argument("--learning-rate", type=float, default=d["learning_rate"],
                   help="peak learning rate (default: %(default)s)")
    p.add_argument("--momentum", type=float, default=d["momentum"],
                   help="momentum of sgd/lars (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"],
                   help="weight decay (default: %(default)s)")
    p.add_argument("--warmup-fraction", type=float, default=d["warmup_fraction"],
                   help="fraction of the steps spent in linear warm-up (default: %(default)s)")
    p.add_argument("--patience", type=int, default=d["patience"],
                   help="epochs without a better validation score before stopping (0: never)")
    p.add_argument("--min-delta", type=float, default=d["min_delta"],
                   help="smallest validation-AUC gain that resets --patience (default: %(default)s)")
    p.add_argument("--steps-per-epoch", type=int, help="cap on training steps per epoch")
    p.add_argument("--image-size", type=int, help="input size (default: the module's, else cxr 448 / path 224)")
    p.add_argument("--center-crop", type=float, help="central fraction of the square to keep, in (0, 1]")
    p.add_argument("--threshold", type=float, default=d["threshold"],
                   help="decision threshold for accuracy, sensitivity and specificity")
    p.add_argument("--n-boot", type=int, default=d["n_boot"], help="bootstrap draws for the 95%% intervals")
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument for the task loader, e.g. tile=96 or uncertainty=ignore (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def config_from_args(args: argparse.Namespace):
    """The FinetuneConfig the parsed command line describes (module, fraction and seed default
    to placeholders where the command sweeps them, as label-efficiency does)."""
    from medfound.finetune.config import FinetuneConfig

    return FinetuneConfig(
        module=getattr(args, "module", ""), task=args.task, data=args.data, out_dir=args.out, mode=args.mode,
        classes=[c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None,
        label_fraction=getattr(args, "label_fraction", 1.0), epochs=args.epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, learning_rate=args.learning_rate, momentum=args.momentum,
        weight_decay=args.weight_decay, warmup_fraction=args.warmup_fraction, patience=args.patience,
        min_delta=args.min_delta, steps_per_epoch=args.steps_per_epoch, image_size=args.image_size,
        center_crop=args.center_crop if args.center_crop is not None else False, threshold=args.threshold,
        n_boot=args.n_boot, data_options=parse_key_values(args.data_option, "--data-option"),
        seed=getattr(args, "seed", 0), verbose=not args.quiet,
        strategy=getattr(args, "strategy", "default"))


def run_slides(args: argparse.Namespace) -> int:
    """camelyon16-slides / camelyon16-tiles: slide classifiers or a tile head on slide files.

    Training options keep the slide defaults (AdamW, 1e-3, 20 epochs) unless given."""
    from medfound.slides.mil import SlideTaskConfig, run_slide_task

    ours, theirs = SlideTaskConfig(data="", out_dir=""), _defaults()

    def given(name):  # the option as typed, else the slide task's own default
        value = getattr(args, name)
        return value if value != theirs[name] else getattr(ours, name)

    config = SlideTaskConfig(
        data=args.data, out_dir=args.out, task=args.task, labels=args.labels,
        models=tuple(m.strip() for m in args.slide_models.split(",") if m.strip()),
        epochs=given("epochs"), learning_rate=given("learning_rate"),
        weight_decay=given("weight_decay"), batch_size=given("batch_size"),
        tile_threshold=args.tile_threshold, n_boot=args.n_boot, seed=args.seed,
        verbose=not args.quiet)
    metrics = run_slide_task(config)  # SlideError, ValueError: one line from medfound.cli.main
    results = metrics.get("models") or {"tiles": metrics["test"]}
    for kind, m in results.items():
        auc, (low, high) = m["auc"], m["auc_ci95"]
        shown = "n/a" if auc is None else f"{auc:.4f}" + (
            "" if low is None else f" (95% CI {low:.4f}-{high:.4f})")
        print(f"test AUC ({kind}, {m['n']} {'tiles' if kind == 'tiles' else 'slides'}): {shown}")
    print(f"metrics: {args.out}/metrics.json")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.task in SLIDE_TASK_CHOICES:
        return run_slides(args)
    if not args.module:
        print(f"medfound finetune: --module is required for task {args.task}")
        return 2
    config = config_from_args(args)
    config.validate()  # a ValueError naming every problem: one line from medfound.cli.main
    from medfound.finetune.trainer import finetune

    result = finetune(config, overwrite=args.overwrite)
    test = result.metrics["test"]
    auc = test["mean_auc"]
    low, high = test["mean_auc_ci95"]
    shown = "n/a" if auc is None else f"{auc:.4f}" + ("" if low is None else f" (95% CI {low:.4f}-{high:.4f})")
    print(f"test mean AUC: {shown}")
    print(f"model:   {result.model_path}")
    print(f"metrics: {result.out_dir / 'metrics.json'}")
    return 0
