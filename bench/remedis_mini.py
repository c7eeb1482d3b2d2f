"""REMEDIS in miniature against its real baseline: natural-image supervision, then self-supervision.

Four inits of the tiny BiT (``random``; ``supervised`` on the CIFAR-10 subset until its test
accuracy plateaus; ``remedis``, that checkpoint continued with SimCLR; ``simclr`` from random),
each pretraining stage run with every seed of ``--seeds`` (``bench/remedis_mini_pretrain.py``;
the SimCLR stages see PneumoniaMNIST train only, no NIH image). Each init and seed is fine-tuned
at several label fractions:

- **ID**: PneumoniaMNIST, official splits, at ``--image-size`` (32 px), linear probe and full
  fine-tuning (``--modes``);
- **OOD**: the NIH sample (any finding vs No Finding) by patient-level ``--folds``-fold
  cross-validation at ``--ood-image-size`` (64 px, as stored), linear probe only by default
  (``--ood-modes linear full`` adds full fine-tuning, about 4x the compute): every image is
  predicted once by a model that never saw its patient, the (rate, budget) pair chosen per fold
  on that fold's own validation patients (``bench/remedis_mini_cv.py``).

One AUC per (dataset, mode, init, fraction) over the pooled predictions, with a bootstrap over
patients and pretraining seeds, and a paired test against supervised @ 100 %
(``bench/remedis_mini_stats.py``). Every piece is kept on disk and reused:

    python bench/remedis_mini.py --tiny                 # smoke test (its own --out); estimate
    python bench/remedis_mini.py --only pretrain        # 3 seeds x 3 stages (+ the CIFAR curve)
    python bench/remedis_mini.py --only id
    python bench/remedis_mini.py --only ood --inits random,supervised   # any subset, any order
    python bench/remedis_mini.py --only report          # pools what is finished: the report
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import label_efficiency_pneumonia as lep  # noqa: E402
from bench import remedis_mini_cv as cv  # noqa: E402
from bench import remedis_mini_pretrain as pretrain  # noqa: E402
from bench import remedis_mini_stats as stats  # noqa: E402
from bench.common import machine_info, parse_with_defaults, write_json  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
INITS = ("random", "supervised", "remedis", "simclr")
PIECES = ("pretrain", "id", "ood", "report")
# The full study (what the report and BENCHMARKS.md describe). --tiny swaps in TINY below.
DEFAULTS = {"arch": "tiny", "image_size": 32, "ood_image_size": 64, "supervised_steps": 400,
            "supervised_max_steps": 12800, "supervised_batch": 128, "pretrain_steps": 300,
            "pretrain_batch": 64, "fractions": "0.01,0.1,1", "ood_fractions": "0.1,0.33,1",
            "seeds": "0,1,2", "folds": 5, "budgets_linear": "20", "budgets_full": "6",
            "full_steps_per_epoch": 10, "lrs_linear": "0.05,0.2", "lrs_full": "0.01,0.03",
            "n_boot": 1000, "limit": 0, "nih_limit": 0, "inits": ",".join(INITS),
            "modes": ["linear", "full"], "ood_modes": ["linear"],
            "out": "bench/results/remedis_mini"}
# OOD is linear-only by default: full fine-tuning at 64 px, 5 folds, 3 seeds, 4 inits would add
# roughly 8 h to the study's 4 h of compute on the 2-core machine (60 pieces at about 4x the
# 2 min an ID full piece took at 32 px);
# ID (32 px, one split) keeps both modes. --ood-modes linear full adds it.

# Smoke-test settings only (tests/test_remedis_mini.py; CI runs it, so it must stay cheap):
# the same code path (CIFAR curve, supervised and REMEDIS stages, 2 patient folds, per-fold
# selection, a fraction below 100 %, pooled bootstrap, paired test against supervised @ 100 %,
# report, tables) on 2 inits, 1 seed, a few steps, 32 px (OOD 40 px: its own size)
# and 30 NIH patients (113 images).
TINY = {"arch": "tiny", "image_size": 32, "ood_image_size": 40, "supervised_steps": 2,
        "supervised_max_steps": 2, "supervised_batch": 16, "pretrain_steps": 2,
        "pretrain_batch": 8, "fractions": "1", "ood_fractions": "0.5", "seeds": "0",
        "folds": 2, "budgets_linear": "1", "budgets_full": "1", "full_steps_per_epoch": 1,
        "lrs_linear": "0.1", "lrs_full": "0.01", "n_boot": 50, "limit": 32, "nih_limit": 30,
        "inits": "supervised,remedis", "modes": ["linear"], "ood_modes": ["linear"],
        "out": "bench/results/remedis_mini_tiny"}  # never the study's folder: pieces are reused


def floats(text: str) -> list[float]:
    return [float(x) for x in str(text).split(",") if x.strip()]


def candidates(args, mode: str) -> list[dict]:
    """The (epoch budget, rate) grid of a mode, cheaper first (ties go to the earlier)."""
    from medfound.finetune.selection import grid

    budgets = args.budgets_linear if mode == "linear" else args.budgets_full
    rates = args.lrs_linear if mode == "linear" else args.lrs_full
    return grid(epochs=sorted(int(b) for b in floats(budgets)), learning_rate=sorted(floats(rates)))


def modules(args, out: Path, seeds) -> dict:
    """{(init, seed): module} of the finished stages (random init needs none)."""
    found = {("random", s): f"random:{args.arch}" for s in seeds}
    for init in pretrain.STAGES:
        for seed in seeds:
            path = pretrain.stage_file(out, init, seed)
            if path.is_file():
                found[(init, seed)] = json.loads(path.read_text())["module"]
    return found


def finetune(args, out: Path, dataset: str, inits, seeds, nih: dict | None) -> list[dict]:
    """Every (mode, init, seed[, fold]) piece of one dataset whose module is ready."""
    mods, records = modules(args, out, seeds), []
    fractions = sorted(set(floats(args.ood_fractions if dataset == "ood" else args.fractions))
                       | {1.0})
    for mode in modes_of(args, dataset):
        base = lep.finetune_base(args, Path(args.data), out, mode)
        for init in inits:
            for seed in seeds:
                if (init, seed) not in mods:
                    print(f"{dataset} {mode} {init} seed {seed}: stage not finished, skipped")
                    continue
                for fold in (range(args.folds) if dataset == "ood" else [None]):
                    data_of = ((lambda f: (Path(args.data), f)) if fold is None else
                               (lambda f, k=fold, s=seed: (ood_file(args, out, nih, k, f, s), 1.0)))
                    t0 = time.perf_counter()
                    records += cv.run_piece(args, base, dataset, init, mods[(init, seed)], seed,
                                            fold, data_of, fractions, candidates(args, mode))
                    print(f"{dataset} {mode} {init} seed {seed} fold {fold}: "
                          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return records


def modes_of(args, dataset: str) -> list[str]:
    """The fine-tuning modes of a dataset: --ood-modes for OOD, --modes for ID."""
    return list(args.ood_modes if dataset == "ood" else args.modes)


def ood_file(args, out: Path, nih: dict, fold: int, fraction: float, seed: int) -> Path:
    rows = cv.fold_rows(nih["patients"], args.folds, fold, args.val_fraction)
    name = f"fold{fold}_f1.npz" if fraction >= 1 else f"fold{fold}_f{fraction:g}_s{seed}.npz"
    return cv.fold_npz(nih, rows, fraction, seed, out / "folds" / name)


def collect(out: Path) -> list[dict]:
    """Every predictions file the pieces have written under ``out``."""
    return [json.loads(p.read_text()) for d in ("id", "ood")
            for p in sorted((out / d).glob("**/predictions_f*.json"))]


def build_report(args, out: Path, nih: dict, argv, seeds) -> dict:
    """The report from every finished piece of ``--seeds`` (pieces of other seeds are left for a
    report that names them; groups missing a fold are left out)."""
    import numpy as np

    with np.load(args.data) as data:
        id_labels = data["test_labels"][:, 0]
    truth = {"id": {"labels": id_labels, "groups": np.arange(id_labels.size).astype(str)},
             "ood": {"labels": nih["labels"], "groups": nih["patients"]}}
    records = [r for r in collect(out) if r["seed"] in seeds]  # the report covers --seeds
    rows = []
    for dataset in ("id", "ood"):
        mine = [r for r in records if r["dataset"] == dataset]
        rows += stats.summarise(stats.assemble(mine, truth[dataset]["labels"].size), truth,
                                args.n_boot)
    choices = [{k: r[k] for k in ("dataset", "mode", "init", "seed", "fold", "chosen", "tried")}
               for r in records if r["fraction"] == 1.0]
    stages = [stage for p in sorted((out / "stages").glob("stage_*.json"))
              if (stage := json.loads(p.read_text()))["seed"] in seeds]
    plateau = out / "stages" / "plateau.json"
    timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").is_file() else {}
    return {"benchmark": "remedis_mini", "machine": machine_info(),
            "command": " ".join(["python bench/remedis_mini.py", *(argv or [])]),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "stages": stages,
            "cifar_curve": json.loads(plateau.read_text()) if plateau.is_file() else None,
            "choices": choices, "choice_counts": stats.choice_counts(choices),
            "rows": rows, "fraction_to_match": stats.fraction_to_match(rows),
            "rule": stats.MATCH_RULE, "interval": stats.INTERVAL,
            "ood_task": f"NIH sample, any finding vs No Finding, {args.folds}-fold patient-level "
                        f"cross-validation at {args.ood_image_size} px; no NIH image in pretraining",
            "modes": {"id": modes_of(args, "id"), "ood": modes_of(args, "ood")},
            "timings": timings, "estimate": estimate(args, timings) if args.tiny else None}


# Seconds per step of the study run on 2026-12-05 (bench/reports/remedis_mini.json, tiny BiT at
# 32 px, 2 cores, two processes side by side): the CIFAR curve's 12,800-step run (supervised,
# batch 128) and SimCLR seed 0 (batch 64).
STEP_SECONDS = {"supervised": 1345 / 12800, "simclr": 52 / 300}


def estimate(args, timings: dict) -> dict:
    """The full study's compute at DEFAULTS (their modes: ID linear and full, OOD linear), and
    with OOD full fine-tuning added: every fine-tuning run at what a --tiny run of its dataset
    cost (a floor: tiny runs are overhead), full-mode steps at STEP_SECONDS["simclr"] scaled by
    pixels x images (x2 at 64 px, x0.5 at 32 px), pretraining steps at STEP_SECONDS, the CIFAR
    curve at its longest. Rough."""
    d = DEFAULTS
    seeds, inits = len(floats(d["seeds"])), len(INITS)
    per_piece = {"id": 2 + len(floats(d["fractions"])) - 1,
                 "ood": (2 + len(floats(d["ood_fractions"])) - 1) * d["folds"]}
    tiny = timings.get("runs", {})
    per_run = {k: timings.get(k, 0.0) / max(1, tiny.get(k, 1)) for k in per_piece}
    scale = {"id": 0.5 * (d["image_size"] / 32) ** 2, "ood": 0.5 * (d["ood_image_size"] / 32) ** 2}
    longest, curve = d["supervised_max_steps"], 0
    while longest >= d["supervised_steps"]:
        curve, longest = curve + longest, longest // 2
    sup_steps = curve + (seeds - 1) * d["supervised_max_steps"]
    pretrain_s = (STEP_SECONDS["supervised"] * sup_steps
                  + STEP_SECONDS["simclr"] * 2 * seeds * d["pretrain_steps"])

    def finetune_s(dataset: str, modes) -> float:
        runs = inits * seeds * per_piece[dataset]
        full = runs * 6 * d["full_steps_per_epoch"] * STEP_SECONDS["simclr"] * scale[dataset]
        return len(modes) * runs * per_run[dataset] + (full if "full" in modes else 0.0)

    seconds = {"pretrain": pretrain_s, "id": finetune_s("id", d["modes"]),
               "ood": finetune_s("ood", d["ood_modes"])}
    with_full = sum(seconds.values()) - seconds["ood"] + finetune_s("ood", ["linear", "full"])
    return {"runs": {k: inits * seeds * v for k, v in per_piece.items()}, "seconds": seconds,
            "hours": sum(seconds.values()) / 3600, "hours_with_ood_full": with_full / 3600,
            "method": " ".join(estimate.__doc__.split())}


def add_timing(out: Path, name: str, seconds: float, count: int | None) -> None:
    """Adds a piece's seconds (and run count) to ``out/timings.json``, under a lock: the two
    processes of ``bench/remedis_mini_parallel.sh`` update it side by side."""
    import fcntl

    path = out / "timings.json"
    with open(out / "timings.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        timings = json.loads(path.read_text()) if path.is_file() else {}
        timings[name] = timings.get(name, 0.0) + seconds
        if count is not None:
            timings.setdefault("runs", {})[name] = timings.get("runs", {}).get(name, 0) + count
        write_json(path, timings)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DATA / "pneumoniamnist.npz"),
                        help="PneumoniaMNIST .npz: the ID task and the SimCLR images")
    parser.add_argument("--nih", default=str(DATA / "nih-cxr14-sample"), help="the OOD task")
    parser.add_argument("--cifar", default=str(DATA / "cifar10-small.npz"),
                        help="labeled natural images of the supervised stage")
    parser.add_argument("--only", default=",".join(PIECES),
                        help=f"comma-separated pieces among {PIECES} (default: all); finished "
                             "work is reused, so the study can run in several sittings")
    parser.add_argument("--inits", help=f"comma-separated inits among {INITS}; pretraining "
                                         "runs only the stages these need")
    parser.add_argument("--modes", nargs="+", choices=["linear", "full"],
                        help="ID fine-tuning modes (default: linear full)")
    parser.add_argument("--ood-modes", nargs="+", choices=["linear", "full"],
                        help="OOD fine-tuning modes (default: linear; full multiplies the "
                             "study's compute by about 4, see DEFAULTS)")
    parser.add_argument("--fractions", help="ID label fractions (1 is always added)")
    parser.add_argument("--ood-fractions", help="OOD fractions of each fold's training patients")
    parser.add_argument("--seeds", help="pretraining seeds (each also the fine-tuning seed)")
    parser.add_argument("--folds", type=int, help="OOD cross-validation folds (by patient)")
    parser.add_argument("--val-fraction", type=float, default=0.15,
                        help="share of each fold's training patients kept for validation")
    parser.add_argument("--arch")
    parser.add_argument("--image-size", type=int, help="pretraining and ID size")
    parser.add_argument("--ood-image-size", type=int, help="OOD fine-tuning size")
    parser.add_argument("--supervised-steps", type=int, help="first schedule of the CIFAR curve")
    parser.add_argument("--supervised-max-steps", type=int, help="longest schedule tried")
    parser.add_argument("--plateau-delta", type=float, default=0.005,
                        help="least test-accuracy gain of a doubling that counts as improving")
    parser.add_argument("--supervised-batch", type=int)
    parser.add_argument("--supervised-lr", type=float, default=0.02)
    parser.add_argument("--pretrain-steps", type=int, help="SimCLR steps of each SSL stage")
    parser.add_argument("--pretrain-batch", type=int)
    parser.add_argument("--pretrain-lr", type=float, default=1.0, help="LARS base rate")
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--budgets-linear", help="candidate epoch budgets, linear head")
    parser.add_argument("--budgets-full", help="candidate epoch budgets, full fine-tuning")
    parser.add_argument("--full-steps-per-epoch", type=int)
    parser.add_argument("--lrs-linear", help="candidate SGD rates, linear head")
    parser.add_argument("--lrs-full", help="candidate SGD rates, full fine-tuning")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--n-boot", type=int, help="bootstrap draws of each pooled interval")
    parser.add_argument("--limit", type=int, help="PneumoniaMNIST images per split (0: all)")
    parser.add_argument("--nih-limit", type=int,
                        help="NIH patients: the table's first N, all their images (0: all)")
    parser.add_argument("--out", help="results folder (pieces there are reused)")
    parser.add_argument("--verbose", action="store_true")
    args = parse_with_defaults(parser, argv, DEFAULTS, TINY)
    args.method, args.moco_queue_size = "simclr", None  # what lep.pretrain_backbone reads
    args.lr_linear, args.lr_full = floats(args.lrs_linear)[0], floats(args.lrs_full)[0]
    args.epochs_linear = int(floats(args.budgets_linear)[0])
    args.epochs_full = int(floats(args.budgets_full)[0])
    unknown = (set(args.only.split(",")) - set(PIECES)) | (set(args.inits.split(",")) - set(INITS))
    if unknown:
        parser.error(f"unknown --only/--inits {sorted(unknown)}; choose from {PIECES} / {INITS}")
    return args


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    pieces, out = set(args.only.split(",")), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.data = lep.check_data(Path(args.data))
    if args.limit:
        args.data = lep.subset_npz(args.data, args.limit, out / f"subset{args.limit}.npz")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    inits = [i for i in INITS if i in args.inits.split(",")]
    nih = cv.nih_arrays(Path(args.nih), args.ood_image_size, args.nih_limit)

    def timed(name: str, fn, count=None):
        t0 = time.perf_counter()
        value = fn()
        add_timing(out, name, time.perf_counter() - t0, count)
        return value

    if "pretrain" in pieces:
        if {"supervised", "remedis"} & set(inits):
            timed("pretrain", lambda: pretrain.plateau(args, out))
        for init in (i for i in pretrain.STAGES if i in inits):
            for seed in seeds:
                timed("pretrain", lambda i=init, s=seed: pretrain.pretrain_stage(args, out, i, s))
    for dataset in ("id", "ood"):
        if dataset in pieces:
            runs_per_piece = len(candidates(args, "linear")) + len(floats(
                args.ood_fractions if dataset == "ood" else args.fractions)) - 1
            n = len(inits) * len(seeds) * len(modes_of(args, dataset)) * runs_per_piece * (
                args.folds if dataset == "ood" else 1)
            timed(dataset, lambda d=dataset: finetune(args, out, d, inits, seeds, nih), n)
    if "report" not in pieces:
        return None
    report = build_report(args, out, nih, argv if argv is not None else sys.argv[1:], seeds)
    write_json(out / "remedis_mini.json", report)
    for row in report["rows"]:
        print(f"{row['dataset']} {row['mode']} {row['init']} {row['fraction']:g}: AUC "
              f"{row['auc']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"
              + (f", vs supervised@100% {row['difference']:+.3f} [{row['difference_low']:+.3f}, "
                 f"{row['difference_high']:+.3f}] matches={row['matches']}" if "matches" in row else ""))
    if report["estimate"]:
        print(f"estimated full study: {report['estimate']['hours']:.1f} h of compute "
              f"({report['estimate']['seconds']}); with OOD full fine-tuning "
              f"{report['estimate']['hours_with_ood_full']:.1f} h")
    print(f"wrote {out / 'remedis_mini.json'}")
    return report


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
