"""Label efficiency on real chest X-rays: a pretrained vs a random-init backbone on PneumoniaMNIST.

The claim REMEDIS is about: self-supervised pretraining lets a model reach, with a fraction of
the labels, the score a model from random initialisation reaches with all of them. Measured here
at a scale a 2-core CPU runs in under an hour:

1. pretrain a small BiT backbone (default ``tiny`` at 32 px: the 28 px images upsampled) with
   ``medfound.pretrain.pretrain`` on the PneumoniaMNIST train split, labels unused, and export it
   (``.keras`` module);
2. for each mode (linear probe on the frozen backbone, full fine-tuning), run
   ``medfound.finetune.label_efficiency`` over label fractions and seeds for the pretrained
   module and the same architecture from random initialisation (``random:ARCH``);
3. report test AUC mean and spread per (init, mode, fraction), the curves as a PNG, and the
   smallest fraction at which the pretrained model matches the random-init model trained on 100 %
   of the labels in the same mode (and in full fine-tuning, the stronger baseline).

The augmentation is milder than the cxr preset (as in tests/test_pretrain_evidence.py): at 32 px
a small network learns the preset's task too slowly to show within minutes.

    python bench/label_efficiency_pneumonia.py                 # defaults (< 60 min, 2 cores)
    python bench/label_efficiency_pneumonia.py --tiny          # smoke test: seconds
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (fraction_axes, machine_info, parse_with_defaults,  # noqa: E402
                          report, save_png, write_json)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pneumoniamnist.npz"
# Milder than the cxr preset (tests/test_pretrain_evidence.py): learnable at 32 px in minutes.
MILD_AUGMENT = {"crop_area": (0.5, 1.0), "elastic_prob": 0.0, "equalize_prob": 0.0,
                "rotation_degrees": 10.0}
DEFAULTS = {"arch": "tiny", "image_size": 32, "pretrain_steps": 600, "pretrain_batch": 64,
            "fractions": "0.01,0.05,0.1,0.25,0.5,1", "seeds": "0,1,2", "epochs_linear": 10,
            "epochs_full": 4, "full_steps_per_epoch": 15, "n_boot": 100, "limit": 0}
TINY = {"arch": "tiny", "image_size": 32, "pretrain_steps": 2, "pretrain_batch": 8,
        "fractions": "0.5", "seeds": "0", "epochs_linear": 1, "epochs_full": 1,
        "full_steps_per_epoch": 2, "n_boot": 10,
        "limit": 48}


@dataclasses.dataclass
class Pretrained:
    """The pretraining run: its exported module, loss history and duration."""

    module: Path
    losses: list[float]
    seconds: float


def check_data(path: Path) -> Path:
    """The PneumoniaMNIST file, or a clear error naming it and what is wrong."""
    import numpy as np

    if not path.is_file():
        raise SystemExit(f"{path}: PneumoniaMNIST .npz not found; pass --data")
    with np.load(path) as data:
        missing = [f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels")
                   if f"{s}_{k}" not in data.files]
    if missing:
        raise SystemExit(f"{path}: not a MedMNIST file, missing {missing}")
    return path


def subset_npz(path: Path, limit: int, out: Path) -> Path:
    """The first ``limit`` images of each split, half from each class where possible (smoke test)."""
    import numpy as np

    from medfound.utils.files import atomic_path

    arrays = {}
    with np.load(path) as data:
        for split in ("train", "val", "test"):
            labels = data[f"{split}_labels"][:, 0]
            pick = np.concatenate([np.flatnonzero(labels == c)[:limit // 2] for c in (0, 1)])
            arrays[f"{split}_images"] = data[f"{split}_images"][np.sort(pick)]
            arrays[f"{split}_labels"] = data[f"{split}_labels"][np.sort(pick)]
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return out


def pretrain_backbone(args, data: Path, out: Path, *, init: str = "random",
                      name: str | None = None, seed: int = 0) -> Pretrained:
    """SimCLR (or ``--method``) on the train split without labels, exported as a .keras module.

    ``init`` is ``PretrainConfig.init`` ('random', or 'bit-s:PATH' to continue a supervised
    backbone, as ``bench/remedis_mini.py`` does); ``name`` the exported module's name; ``seed``
    the run's (sampling, augmentation and initialisation)."""
    from medfound.export.exporter import export_module
    from medfound.pretrain import PretrainConfig, pretrain

    from medfound.ssl.settings import MethodOptions

    options = {}
    if args.moco_queue_size is not None:
        options["moco_queue_size"] = args.moco_queue_size
    temperature = args.temperature or (0.2 if args.method == "simclr" else None)
    if temperature is not None:
        options["temperature"] = temperature
    steps = args.pretrain_steps
    config = PretrainConfig(
        data=str(data), out_dir=str(out / "pretrain"), split="train", arch=args.arch,
        image_size=args.image_size, batch_size=args.pretrain_batch, steps=steps,
        learning_rate=args.pretrain_lr, augment=dict(MILD_AUGMENT),
        log_every=max(1, min(50, steps // 10)), checkpoint_every=steps, preview_images=0,
        seed=seed, init=init, method=args.method, method_options=MethodOptions(**options))
    start = time.perf_counter()
    result = pretrain(config, verbose=False)
    module = export_module(result.run_dir, out / "pretrained.keras", fmt="keras",
                           name=name or f"bench-pneumonia-{args.arch}-{args.method}")
    return Pretrained(module, [h["loss"] for h in result.history], time.perf_counter() - start)


def finetune_base(args, data: Path, out: Path, mode: str):
    """The fine-tuning settings of one mode (module, fraction and seed are filled in per run)."""
    from medfound.finetune.config import FinetuneConfig

    return FinetuneConfig(
        module="unused", task="medmnist", data=str(data), out_dir=str(out / mode), mode=mode,
        epochs=args.epochs_linear if mode == "linear" else args.epochs_full,
        batch_size=args.batch_size, optimizer="sgd",
        learning_rate=args.lr_linear if mode == "linear" else args.lr_full,
        patience=args.patience, image_size=args.image_size, n_boot=args.n_boot,
        steps_per_epoch=args.full_steps_per_epoch if mode == "full" else None,
        verbose=args.verbose)


def rows_of(mode: str, result, names: dict[str, str]) -> list[dict]:
    """One row per (init, fraction): test AUC mean, standard deviation, min, max over seeds."""
    rows = []
    for module, curve in result.summary.items():
        for fraction, stats in sorted(curve.items()):
            scores = [r["test_mean_auc"] for r in result.runs
                      if r["module"] == module and r["fraction"] == fraction]
            finite = [s for s in scores if math.isfinite(s)]
            rows.append({"init": names[module], "mode": mode, "fraction": fraction,
                         "percent": f"{fraction:.0%}", "test_auc_mean": stats["mean"],
                         "test_auc_std": stats["std"], "n": stats["n"],
                         "test_auc_min": min(finite) if finite else float("nan"),
                         "test_auc_max": max(finite) if finite else float("nan"),
                         "test_aucs": scores})
    return rows


def plot(rows: list[dict], targets: dict[str, float], path: Path) -> Path:
    """Test AUC against label fraction, one panel per mode, pretrained and random init."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    modes = sorted({r["mode"] for r in rows}, key=["linear", "full"].index)
    fig = Figure(figsize=(5 * len(modes), 4))
    FigureCanvasAgg(fig)
    for i, mode in enumerate(modes):
        ax = fig.add_subplot(1, len(modes), i + 1)
        for init, style in (("pretrained", "o-"), ("random", "s--")):
            sub = sorted((r for r in rows if r["mode"] == mode and r["init"] == init),
                         key=lambda r: r["fraction"])
            ax.errorbar([100 * r["fraction"] for r in sub], [r["test_auc_mean"] for r in sub],
                        yerr=[np.nan_to_num(r["test_auc_std"]) for r in sub], fmt=style,
                        capsize=3, label=f"{init} init")
        ax.axhline(targets[mode], color="grey", ls=":", label="random init @ 100 %")
        fraction_axes(ax, f"PneumoniaMNIST, {mode}")
    return save_png(fig, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="PneumoniaMNIST .npz (default: %(default)s)")
    parser.add_argument("--method", default="simclr",
                        help="pretraining method (PretrainConfig.method: simclr, barlow, moco, "
                             "byol, relic)")
    parser.add_argument("--modes", nargs="+", default=["linear", "full"],
                        choices=["linear", "full"])
    parser.add_argument("--fractions", help="label fractions in (0, 1] (or N%%), comma-separated "
                                            f"(1 is always added; default {DEFAULTS['fractions']})")
    parser.add_argument("--seeds", help=f"comma-separated seeds (default {DEFAULTS['seeds']})")
    parser.add_argument("--arch", help=f"backbone (default {DEFAULTS['arch']})")
    parser.add_argument("--image-size", type=int,
                        help=f"pixels the 28 px images are upsampled to (default "
                             f"{DEFAULTS['image_size']})")
    parser.add_argument("--pretrain-steps", type=int,
                        help=f"default {DEFAULTS['pretrain_steps']}")
    parser.add_argument("--pretrain-batch", type=int, help=f"default {DEFAULTS['pretrain_batch']}")
    parser.add_argument("--pretrain-lr", type=float, default=1.0, help="LARS base rate")
    parser.add_argument("--moco-queue-size", type=int,
                        help="MoCo's queue of negatives (default: the library's, 16384; keep it "
                             "well below the 4,708 training images to avoid the query's own "
                             "image among its negatives)")
    parser.add_argument("--temperature", type=float,
                        help="contrastive temperature (default 0.2 for simclr, else the "
                             "method's own)")
    parser.add_argument("--epochs-linear", type=int, help="epochs of the linear head (default "
                                                          f"{DEFAULTS['epochs_linear']})")
    parser.add_argument("--epochs-full", type=int, help="epochs of full fine-tuning (default "
                                                        f"{DEFAULTS['epochs_full']})")
    parser.add_argument("--full-steps-per-epoch", type=int,
                        help="steps per epoch of full fine-tuning, every fraction alike "
                             f"(default {DEFAULTS['full_steps_per_epoch']})")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr-linear", type=float, default=0.1)
    parser.add_argument("--lr-full", type=float, default=0.01,
                        help="SGD rate of full fine-tuning, both inits (%(default)s: the better "
                             "validation AUC at 100 %% labels of 0.01 and 0.05 for both inits)")
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--n-boot", type=int, help="bootstrap draws per run's CI (default "
                                                   f"{DEFAULTS['n_boot']})")
    parser.add_argument("--limit", type=int, help="use only this many images per split "
                                                  "(0: all; --tiny: 48)")
    parser.add_argument("--pretrained",
                        help="an existing module (e.g. OUT/pretrained.keras of an earlier run) to "
                             "compare instead of pretraining one: other fine-tuning settings "
                             "without pretraining again")
    parser.add_argument("--out", default="bench/results/label_efficiency_pneumonia",
                        help="run folder (finished fine-tuning runs are reused: it resumes)")
    parser.add_argument("--json", help="results JSON (default: OUT/label_efficiency.json)")
    parser.add_argument("--verbose", action="store_true", help="log every fine-tuning epoch")
    args = parse_with_defaults(parser, argv, DEFAULTS, TINY)
    return args


def main(argv: list[str] | None = None) -> dict:
    from medfound.data.labeled import parse_fractions
    from medfound.finetune.label_efficiency import fraction_to_match, label_efficiency

    args = parse_args(argv)
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = check_data(Path(args.data))
    if args.limit:
        data = subset_npz(data, args.limit, out / f"subset{args.limit}.npz")
    fractions = parse_fractions(args.fractions)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    if args.pretrained:
        if not Path(args.pretrained).exists():
            raise SystemExit(f"{args.pretrained}: --pretrained module not found")
        pre = Pretrained(Path(args.pretrained), [], 0.0)
    else:
        pre = pretrain_backbone(args, data, out)
    if not args.pretrained:
        losses = (f"loss {pre.losses[0]:.3f} -> {pre.losses[-1]:.3f}" if pre.losses
                  else "already finished in this --out")
        print(f"pretrained {args.arch} at {args.image_size} px for {args.pretrain_steps} steps "
              f"in {pre.seconds:.0f} s; {losses}", flush=True)
    random_module = f"random:{args.arch}"
    names = {str(pre.module): "pretrained", random_module: "random"}
    rows: list[dict] = []
    targets, matches, mode_seconds, results = {}, {}, {}, {}
    result = {"benchmark": "label_efficiency_pneumonia", "machine": machine_info(),
              "command": " ".join(["python bench/label_efficiency_pneumonia.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "baseline": f"the same architecture from random initialisation ({random_module}), "
                          "fine-tuned the same way; target: its mean test AUC with 100 % labels",
              "data": str(Path(args.data)), "settings": {k: v for k, v in vars(args).items()},
              "pretrain": {"seconds": pre.seconds, "losses": pre.losses,
                           "module": str(pre.module), "augment": MILD_AUGMENT},
              "rows": rows}
    for mode in args.modes:
        t0 = time.perf_counter()
        base = finetune_base(args, data, out, mode)
        results[mode] = label_efficiency(base, [str(pre.module), random_module], fractions,
                                         seeds, baseline=random_module)
        mode_seconds[mode] = time.perf_counter() - t0
        rows.extend(rows_of(mode, results[mode], names))
        targets[mode] = results[mode].target_auc
        matches[mode] = results[mode].fraction_to_match[str(pre.module)]
        print(f"{mode}: {mode_seconds[mode]:.0f} s; pretrained matches random-init @ 100 % "
              f"(AUC {targets[mode]:.3f}) at {matches[mode]}", flush=True)
        write_json(args.json or out / "label_efficiency.json", result)  # partial results
    cross = {}
    if "full" in results:  # the stronger baseline: random init fully fine-tuned on all labels
        for mode, res in results.items():
            curve = {f: v["mean"] for f, v in res.summary[str(pre.module)].items()}
            cross[mode] = fraction_to_match(curve, targets["full"])
    result.update(targets=targets, fraction_to_match=matches,
                  fraction_to_match_full_baseline=cross, mode_seconds=mode_seconds,
                  total_seconds=time.perf_counter() - started,
                  plot=str(plot(rows, targets, out / "label_efficiency_pneumonia.png")))
    report(rows, ["init", "mode", "percent", "test_auc_mean", "test_auc_std", "test_auc_min",
                  "test_auc_max", "n"], args.json or out / "label_efficiency.json", result)
    for mode in args.modes:
        need = matches[mode]
        print(f"{mode}: pretrained matches random init @ 100 % (AUC {targets[mode]:.3f}) with "
              f"{'no fraction tried' if need is None else f'{need:.0%} of the labels'}")
    print(f"total {result['total_seconds'] / 60:.1f} min; plot {result['plot']}")
    return result


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
