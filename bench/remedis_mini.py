"""REMEDIS in miniature against its real baseline: natural-image supervision, then self-supervision.

The paper's claim: a BiT backbone trained with labels on natural images and then continued with
SimCLR on unlabeled medical images beats the same BiT start fine-tuned directly (the strong
supervised baseline), in distribution and above all out of distribution. Four initialisations of
one architecture (the tiny BiT at 32 px, as ``bench/label_efficiency_pneumonia.py``):

1. ``random``: ``random:tiny``;
2. ``supervised``: ``medfound.pretrain.supervised.pretrain_supervised`` on the CIFAR-10 subset
   (``../shared/data/cifar10-small.npz``; its test accuracy is reported), exported as a module;
3. ``remedis``: (2)'s BiT-format checkpoint continued with SimCLR
   (``PretrainConfig(init="bit-s:...")``) on unlabeled chest X-rays (PneumoniaMNIST train images
   and the NIH sample images, labels unused), exported through ``export_module``;
4. ``simclr``: the same SimCLR run from random init (what the natural-image start adds).

Every init is fine-tuned by ``medfound.finetune.label_efficiency`` (``finetune``; the modules
load through ``medfound.load``) in two modes (linear probe, full fine-tuning) at label fractions
1-100 % and >= 3 seeds, **in distribution** (PneumoniaMNIST, official splits) and **out of
distribution** (the NIH ChestX-ray14 sample, any finding vs No Finding, patient-level 80/10/10
splits cut by the seed), plus **zero-shot** transfer of the ID-trained heads (pneumonia score as
the abnormality score) to the NIH test split of each seed (``medfound.finetune.evaluate``).
The (learning rate, epoch budget) pair of each (data, mode, init) is chosen among a small grid
on the **validation** AUC at 100 % labels, seed 0, by ``medfound.finetune.selection.
select_hyperparameters`` (that run is reused in the sweep); inside every run early stopping on
validation AUC still applies, with the best epoch restored. Reported: test AUC mean ± sd over seeds with the
mean of the per-run 95 % bootstrap intervals, and the smallest fraction at which REMEDIS matches
the supervised baseline trained on 100 % of the labels.

    python bench/remedis_mini.py            # the defaults (see BENCHMARKS.md for the time)
    python bench/remedis_mini.py --tiny     # smoke test (the slow test runs this)
    python bench/remedis_mini.py --parts supervised,remedis,simclr   # then, in parallel:
    python bench/remedis_mini.py --parts id  &  python bench/remedis_mini.py --parts ood
    python bench/remedis_mini.py            # reuses every finished run: writes the report
    bash bench/remedis_mini_parallel.sh     # what BENCHMARKS.md measured: two processes, by init
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import label_efficiency_pneumonia as lep  # noqa: E402
from bench.common import (format_table, fraction_axes, machine_info,  # noqa: E402
                          parse_with_defaults, save_png, write_json)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
INITS = ("random", "supervised", "remedis", "simclr")
INIT_TITLES = {"random": "random init", "supervised": "supervised (CIFAR-10, 'BiT-S')",
               "remedis": "REMEDIS (supervised -> SimCLR)", "simclr": "SimCLR from random"}
MODULE_NAMES = {"supervised": "bench-cifar10-tiny-supervised",
                "remedis": "bench-cxr-tiny-bits-simclr", "simclr": "bench-cxr-tiny-simclr"}
DATASETS = ("id", "ood")
PRETRAINED = ("supervised", "remedis", "simclr")
PARTS = (*PRETRAINED, "id", "ood", "zeroshot")
NIH_POSITIVE, NIH_NEGATIVE = "finding", "no_finding"
# Sized for a shared 2-core CPU (about an hour in two processes): short pretraining stages,
# short fine-tuning, 2 rates x 2 epoch budgets per (data, mode, init).
DEFAULTS = {"arch": "tiny", "image_size": 32, "supervised_steps": 400, "supervised_batch": 128,
            "pretrain_steps": 300, "pretrain_batch": 64, "fractions": "0.01,0.05,0.1,0.25,0.5,1",
            "seeds": "0,1,2", "budgets_linear": "6,20", "budgets_full": "2,6",
            "full_steps_per_epoch": 10, "lrs_linear": "0.05,0.2", "lrs_full": "0.01,0.05",
            "n_boot": 50, "limit": 0, "nih_limit": 0}
TINY = {"arch": "tiny", "image_size": 32, "supervised_steps": 2, "supervised_batch": 16,
        "pretrain_steps": 2, "pretrain_batch": 8, "fractions": "1", "seeds": "0",
        "budgets_linear": "1", "budgets_full": "1", "full_steps_per_epoch": 1,
        "lrs_linear": "0.1", "lrs_full": "0.01", "n_boot": 5, "limit": 48, "nih_limit": 120}


def floats(text: str) -> list[float]:
    return [float(x) for x in str(text).split(",") if x.strip()]


# --- data -----------------------------------------------------------------------------------

def nih_csv(nih_dir: Path, out: Path, limit: int = 0) -> Path:
    """A CSV of the NIH sample for the binary task 'any finding vs No Finding': image path
    (relative to ``nih_dir/images``), label and patient id; ``limit`` keeps whole patients until
    that many images (0: all)."""
    from medfound.utils.files import atomic_path

    table = nih_dir / "Data_Entry_2017_v2020.csv"
    if not table.is_file():
        raise SystemExit(f"{table}: NIH sample table not found; pass --nih")
    with open(table, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if limit:
        keep, patients = [], []
        for row in rows:
            if row["Patient ID"] not in patients:
                if len(keep) >= limit:
                    continue
                patients.append(row["Patient ID"])
            keep.append(row)
        rows = keep
    path = out / f"nih_any_finding{limit or ''}.csv"
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "patient"])
            for row in rows:
                label = NIH_NEGATIVE if row["Finding Labels"].strip() == "No Finding" else NIH_POSITIVE
                writer.writerow([row["Image Index"], label, row["Patient ID"]])
    return path


def nih_options(nih_dir: Path) -> dict:
    """``data_options`` of the csv task that reads ``nih_csv``'s file."""
    return {"path_column": "path", "label_columns": "label", "patient_column": "patient",
            "root": str(nih_dir / "images"), "classes": [NIH_NEGATIVE, NIH_POSITIVE],
            "positive_class": NIH_POSITIVE}


def unlabeled_cxr(pneumonia: Path, nih_table: Path, nih_dir: Path, size: int, out: Path) -> Path:
    """One unlabeled .npz (``train_images`` (N, size, size) uint8) of the PneumoniaMNIST train
    images and the NIH images listed in ``nih_table``: SimCLR's chest X-rays, labels dropped."""
    import numpy as np
    from PIL import Image

    from medfound.utils.files import atomic_path

    def resized(array) -> np.ndarray:
        return np.asarray(Image.fromarray(array).resize((size, size), Image.BILINEAR))

    with np.load(pneumonia) as data:
        images = [resized(a) for a in data["train_images"]]
    with open(nih_table, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            with Image.open(nih_dir / "images" / row["path"]) as image:
                images.append(np.asarray(image.convert("L").resize((size, size), Image.BILINEAR)))
    path = out / "unlabeled_cxr.npz"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, train_images=np.stack(images).astype(np.uint8))
    return path


# --- pretraining ----------------------------------------------------------------------------

def stage_file(out: Path, init: str) -> Path:
    return out / f"stage_{init}.json"


def pretrain_stage(args, out: Path, unlabeled: Path, init: str) -> dict:
    """One pretrained module (supervised, REMEDIS or SimCLR from random) and what its stage took;
    a finished stage in ``out`` is reused (its first measurement is kept)."""
    from medfound.export.exporter import export_module
    from medfound.pretrain.supervised import SupervisedConfig, pretrain_supervised

    path = stage_file(out, init)
    stage = json.loads(path.read_text()) if path.is_file() else None
    t0 = time.perf_counter()
    sup = pretrain_supervised(SupervisedConfig(
        data=str(args.cifar), out_dir=str(out / "supervised"), arch=args.arch,
        image_size=args.image_size, batch_size=args.supervised_batch,
        steps=args.supervised_steps, learning_rate=args.supervised_lr,
        log_every=max(1, min(100, args.supervised_steps // 10)),
        eval_split="test", seed=0), verbose=False) if init in ("supervised", "remedis") else None
    if init == "supervised":
        module = export_module(sup.run_dir, out / "supervised.keras", fmt="keras",
                               name=MODULE_NAMES["supervised"], modality="cxr")
        if stage is None or sup.seconds:  # a reused run reports 0 s
            stage = {"seconds": time.perf_counter() - t0, "steps": sup.steps,
                     "cifar_test_accuracy": sup.eval_accuracy,
                     "losses": [h["loss"] for h in sup.history],
                     "train_accuracy": [h["accuracy"] for h in sup.history]}
        print(f"supervised: CIFAR-10 test accuracy {stage['cifar_test_accuracy']:.3f} "
              f"({stage['seconds']:.0f} s)", flush=True)
    else:
        start = f"bit-s:{sup.checkpoint}" if init == "remedis" else "random"
        pre = lep.pretrain_backbone(args, unlabeled, out / init, init=start,
                                    name=MODULE_NAMES[init])
        module = pre.module
        if stage is None or pre.losses:
            stage = {"seconds": pre.seconds, "steps": args.pretrain_steps, "init": start,
                     "losses": pre.losses}
        losses = (f"loss {stage['losses'][0]:.3f} -> {stage['losses'][-1]:.3f}"
                  if stage["losses"] else "reused a finished run")
        print(f"{init}: SimCLR from {start}, {losses} ({stage['seconds']:.0f} s)", flush=True)
    stage["module"] = str(module)
    write_json(path, stage)
    return stage


def modules_of(args, stages: dict) -> dict[str, str]:
    return {"random": f"random:{args.arch}",
            **{init: stage["module"] for init, stage in stages.items()}}


# --- fine-tuning ----------------------------------------------------------------------------

def base_config(args, dataset: str, mode: str, module: str, data: dict, out: Path):
    """The fine-tuning settings of one (dataset, mode, init): section 6's, extended; the rate and
    epoch budget are the selection's."""
    base = lep.finetune_base(args, data["id"], out, mode)
    extra = {} if dataset == "id" else {"task": "csv", "data": str(data["ood"]),
                                        "data_options": data["ood_options"]}
    return dataclasses.replace(base, module=module, out_dir=str(out), **extra)


def candidates(args, mode: str) -> list[dict]:
    """The (epoch budget, rate) grid of a mode, shorter budgets and smaller rates first (ties go
    to the earlier candidate)."""
    from medfound.finetune.selection import grid

    budgets = args.budgets_linear if mode == "linear" else args.budgets_full
    rates = args.lrs_linear if mode == "linear" else args.lrs_full
    return grid(epochs=sorted(int(b) for b in floats(budgets)), learning_rate=sorted(floats(rates)))


def run_metrics(run_dir: str) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def choose(args, dataset: str, mode: str, module: str, data: dict, out: Path, seed: int):
    """The candidate with the best validation AUC at 100 % labels (seed ``seed``), chosen by the
    library's ``select_hyperparameters``; its run is the sweep's (100 %, ``seed``) run."""
    from medfound.finetune.selection import select_hyperparameters

    base = base_config(args, dataset, mode, module, data, out)
    return select_hyperparameters(base, candidates(args, mode), seed=seed)


def sweep(args, dataset: str, modules: dict, data: dict, out: Path, fractions, seeds,
          inits=INITS) -> dict:
    """Every init and mode on one dataset: the chosen (budget, rate), then the fraction x seed
    sweep with it."""
    from medfound.finetune.label_efficiency import label_efficiency

    results = {}
    for mode in args.modes:
        for init in inits:
            t0 = time.perf_counter()
            module = modules[init]
            selection = choose(args, dataset, mode, module, data, out / dataset / mode / init,
                               seeds[0])
            result = label_efficiency(selection.config, [module], fractions, seeds,
                                      baseline=module)
            runs = [dict(r, **_ci(r["run_dir"])) for r in result.runs]
            choice = {"chosen_lr": selection.chosen["learning_rate"],
                      "chosen_epochs": selection.chosen["epochs"],
                      # A candidate whose run failed (a diverging rate) has an "error" and no
                      # epochs: it is listed with what it has, and it lost the selection.
                      "tried": [{k: t[k] for k in ("learning_rate", "epochs", "val_auc",
                                                   "best_epoch", "epochs_run", "error") if k in t}
                                for t in selection.tried]}
            results[f"{mode}/{init}"] = {"dataset": dataset, "mode": mode, "init": init,
                                         "module": module, "choice": choice, "runs": runs,
                                         "seconds": time.perf_counter() - t0}
            tried = ", ".join(f"{t['epochs']} ep @ {t['learning_rate']:g}: {_nan(t['val_auc']):.3f}"
                              for t in choice["tried"])
            print(f"{dataset} {mode} {init}: chose {choice['chosen_epochs']} epochs @ lr "
                  f"{choice['chosen_lr']:g} (val {tried}); 100 % test "
                  f"{result.summary[module][1.0]['mean']:.3f} "
                  f"({results[f'{mode}/{init}']['seconds']:.0f} s)", flush=True)
            write_json(out / f"sweep_{dataset}_{'-'.join(inits)}.json", results)  # partial
    return results


def _ci(run_dir: str) -> dict:
    test = run_metrics(run_dir)["test"]
    low, high = test.get("mean_auc_ci95") or (None, None)
    return {"ci_low": float("nan") if low is None else low,
            "ci_high": float("nan") if high is None else high}


def zero_shot(args, id_results: dict, data: dict, out: Path, seeds) -> list[dict]:
    """The ID heads trained on 100 % of PneumoniaMNIST, scored on each seed's NIH test split."""
    from medfound.finetune.evaluate import EvaluateConfig, evaluate

    rows = []
    for key, res in id_results.items():
        for run in res["runs"]:
            if run["fraction"] != 1.0:
                continue
            target = out / "zeroshot" / res["mode"] / res["init"] / f"seed{run['seed']}"
            if (target / "metrics.json").is_file():
                metrics = json.loads((target / "metrics.json").read_text())
            else:
                metrics = evaluate(EvaluateConfig(
                    model=run["run_dir"], task="csv", data=str(data["ood"]), out_dir=str(target),
                    split="test", n_boot=args.n_boot, data_options=data["ood_options"],
                    seed=run["seed"], verbose=False))
            low, high = metrics["clean"]["mean_auc_ci95"]
            rows.append({"mode": res["mode"], "init": res["init"], "seed": run["seed"],
                         "test_auc": _nan(metrics["clean"]["mean_auc"]), "ci_low": _nan(low),
                         "ci_high": _nan(high)})
    return rows


def _nan(value) -> float:
    return float("nan") if value is None else float(value)


# --- the report -----------------------------------------------------------------------------

def summarise(results: dict) -> list[dict]:
    """One row per (dataset, mode, init, fraction): test AUC mean, sd, n and mean 95 % interval."""
    import numpy as np

    rows = []
    for res in results.values():
        for fraction in sorted({r["fraction"] for r in res["runs"]}):
            mine = [r for r in res["runs"] if r["fraction"] == fraction]
            aucs = np.array([r["test_mean_auc"] for r in mine], float)
            finite = np.isfinite(aucs)
            rows.append({"dataset": res["dataset"], "mode": res["mode"], "init": res["init"],
                         "fraction": fraction, "percent": f"{100 * fraction:g}%",
                         "lr": res["choice"]["chosen_lr"], "epochs": res["choice"]["chosen_epochs"],
                         "test_auc_mean": float(aucs[finite].mean()) if finite.any() else math.nan,
                         "test_auc_std": (float(aucs[finite].std(ddof=1)) if finite.sum() > 1
                                          else math.nan),  # over seeds, ddof=1
                         "ci_low_mean": float(np.nanmean([r["ci_low"] for r in mine])),
                         "ci_high_mean": float(np.nanmean([r["ci_high"] for r in mine])),
                         "n": int(finite.sum()), "test_aucs": aucs.tolist()})
    return rows


MATCH_RULE = ("an init matches the supervised baseline at 100 % at the smallest fraction whose "
              "mean test AUC is at least the baseline's minus 1.96 standard errors of the "
              "difference (seeds' sd, ddof=1); with fewer than two seeds on either side there is "
              "no spread to judge by and no verdict (None)")


def within_noise(row: dict, target: dict) -> bool | None:
    """``row``'s mean test AUC is not below ``target``'s beyond seed noise (MATCH_RULE); None
    when either has fewer than two seeds or no AUC."""
    if min(row["n"], target["n"]) < 2 or math.isnan(row["test_auc_mean"]):
        return None
    error = math.sqrt(row["test_auc_std"] ** 2 / row["n"] + target["test_auc_std"] ** 2 / target["n"])
    return row["test_auc_mean"] >= target["test_auc_mean"] - 1.96 * error


def first_match(curve: list[dict], target: dict) -> float | None:
    """The smallest fraction of ``curve`` (rows of one init) that matches ``target``."""
    for row in sorted(curve, key=lambda r: r["fraction"]):
        if within_noise(row, target):
            return row["fraction"]
    return None


def matches(rows: list[dict]) -> dict:
    """Per dataset: the supervised baseline at 100 % (per mode, and the better mode), and the
    smallest fraction at which each init matches it (MATCH_RULE)."""
    found = {}
    for dataset in sorted({r["dataset"] for r in rows}):
        sub = [r for r in rows if r["dataset"] == dataset]
        if not any(r["init"] == "supervised" and r["fraction"] == 1.0 for r in sub):
            continue  # a partial call (--inits without the baseline)
        modes = sorted({r["mode"] for r in sub}, key=["linear", "full"].index)
        base_rows = {m: next(r for r in sub if r["mode"] == m and r["init"] == "supervised"
                             and r["fraction"] == 1.0) for m in modes}
        baseline = {m: r["test_auc_mean"] for m, r in base_rows.items()}
        strongest_mode = max(modes, key=lambda m: baseline[m])
        entry = {"supervised_at_100": baseline, "strongest_baseline_mode": strongest_mode,
                 "rule": MATCH_RULE, "same_mode": {}, "against_strongest": {}}
        for mode in modes:
            for init in INITS:
                curve = [r for r in sub if r["mode"] == mode and r["init"] == init]
                key = f"{mode}/{init}"
                entry["same_mode"][key] = first_match(curve, base_rows[mode])
                entry["against_strongest"][key] = first_match(curve, base_rows[strongest_mode])
        found[dataset] = entry
    return found


def rescore(report: dict) -> dict:
    """``report`` with its spreads (sd over seeds, ddof=1) and matches (MATCH_RULE) computed
    again from the per-seed AUCs it holds: no run is repeated. For reports written before
    either rule."""
    import numpy as np

    for row in report["rows"]:
        aucs = np.array(row["test_aucs"], float)
        aucs = aucs[np.isfinite(aucs)]
        row["test_auc_std"] = float(aucs.std(ddof=1)) if aucs.size > 1 else math.nan
    for row in report["zero_shot"]:
        aucs = np.array([z["test_auc"] for z in report["zero_shot_runs"]
                         if (z["mode"], z["init"]) == (row["mode"], row["init"])], float)
        aucs = aucs[np.isfinite(aucs)]
        row["test_auc_std"] = float(aucs.std(ddof=1)) if aucs.size > 1 else math.nan
    report["fraction_to_match"] = matches(report["rows"])
    report["rescored"] = ("sd over seeds with ddof=1 and fraction_to_match by MATCH_RULE, "
                          "recomputed from the per-seed AUCs by bench/remedis_mini_tables.py "
                          "--rescore; no run repeated")
    return report


def plot(rows: list[dict], path: Path) -> Path:
    """Test AUC against label fraction per init: rows ID and OOD, columns linear and full."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in rows)]
    modes = [m for m in ("linear", "full") if any(r["mode"] == m for r in rows)]
    fig = Figure(figsize=(5.2 * len(modes), 3.9 * len(datasets)))
    FigureCanvasAgg(fig)
    styles = {"random": "s:", "supervised": "o--", "remedis": "D-", "simclr": "^-."}
    titles = {"id": "ID: PneumoniaMNIST test", "ood": "OOD: NIH sample, any finding (test)"}
    for i, dataset in enumerate(datasets):
        for j, mode in enumerate(modes):
            ax = fig.add_subplot(len(datasets), len(modes), i * len(modes) + j + 1)
            for init in INITS:
                sub = sorted((r for r in rows if r["dataset"] == dataset and r["mode"] == mode
                              and r["init"] == init), key=lambda r: r["fraction"])
                if not sub:
                    continue
                ax.errorbar([100 * r["fraction"] for r in sub], [r["test_auc_mean"] for r in sub],
                            yerr=[0 if math.isnan(r["test_auc_std"]) else r["test_auc_std"]
                                  for r in sub], fmt=styles[init], capsize=3, label=init)
                if init == "supervised":
                    ax.axhline(sub[-1]["test_auc_mean"], color="grey", lw=0.8, ls=":")
            ax.grid(alpha=0.3)
            fraction_axes(ax, f"{titles[dataset]}, {mode}", title_size=10, legend_size=7)
    return save_png(fig, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DATA / "pneumoniamnist.npz"),
                        help="PneumoniaMNIST .npz, the ID task (default: %(default)s)")
    parser.add_argument("--nih", default=str(DATA / "nih-cxr14-sample"),
                        help="NIH sample folder, the OOD task (default: %(default)s)")
    parser.add_argument("--cifar", default=str(DATA / "cifar10-small.npz"),
                        help="labeled natural images of the supervised stage (default: %(default)s)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="comma-separated stages to run (supervised, remedis, simclr, id, "
                             "ood, zeroshot); finished work of any stage is reused, so parallel "
                             "processes can share the work, and a last call with all parts "
                             "writes the report (default: all)")
    parser.add_argument("--inits", default=",".join(INITS),
                        help="inits the id/ood sweeps fine-tune (default: all four)")
    parser.add_argument("--modes", nargs="+", default=["linear", "full"],
                        choices=["linear", "full"])
    parser.add_argument("--fractions", help="label fractions in (0, 1] (or N%%), comma-separated (1 is always added)")
    parser.add_argument("--seeds", help="comma-separated seeds (>= 3 for the report)")
    parser.add_argument("--arch")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--supervised-steps", type=int)
    parser.add_argument("--supervised-batch", type=int)
    parser.add_argument("--supervised-lr", type=float, default=0.02)
    parser.add_argument("--pretrain-steps", type=int, help="SimCLR steps of each SSL stage")
    parser.add_argument("--pretrain-batch", type=int)
    parser.add_argument("--pretrain-lr", type=float, default=1.0, help="LARS base rate")
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--budgets-linear",
                        help="candidate epoch budgets of the linear head (early stopping inside)")
    parser.add_argument("--budgets-full", help="candidate epoch budgets of full fine-tuning "
                                               "(epochs of --full-steps-per-epoch steps)")
    parser.add_argument("--full-steps-per-epoch", type=int)
    parser.add_argument("--lrs-linear", help="candidate SGD rates of the linear head")
    parser.add_argument("--lrs-full", help="candidate SGD rates of full fine-tuning")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--n-boot", type=int, help="bootstrap draws per run's 95 %% interval")
    parser.add_argument("--limit", type=int, help="PneumoniaMNIST images per split (0: all)")
    parser.add_argument("--nih-limit", type=int, help="NIH images, whole patients (0: all)")
    parser.add_argument("--out", default="bench/results/remedis_mini")
    parser.add_argument("--verbose", action="store_true")
    args = parse_with_defaults(parser, argv, DEFAULTS, TINY)
    args.method, args.moco_queue_size = "simclr", None  # what lep.pretrain_backbone reads
    # What lep.finetune_base reads; every run gets its candidate's rate and budget instead.
    args.lr_linear, args.lr_full = floats(args.lrs_linear)[0], floats(args.lrs_full)[0]
    args.epochs_linear = int(floats(args.budgets_linear)[0])
    args.epochs_full = int(floats(args.budgets_full)[0])
    unknown = (set(args.parts.split(",")) - set(PARTS)) | (set(args.inits.split(",")) - set(INITS))
    if unknown:
        parser.error(f"unknown --parts/--inits {sorted(unknown)}; choose from {list(PARTS)} / "
                     f"{list(INITS)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    parts = set(args.parts.split(","))
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pneumonia = lep.check_data(Path(args.data))
    if args.limit:
        pneumonia = lep.subset_npz(pneumonia, args.limit, out / f"subset{args.limit}.npz")
    nih_dir = Path(args.nih)
    table = nih_csv(nih_dir, out, args.nih_limit)
    data = {"id": pneumonia, "ood": table, "ood_options": nih_options(nih_dir)}
    from medfound.data.labeled import parse_fractions

    fractions = parse_fractions(args.fractions)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    timings_file = out / "timings.json"

    def timed(name: str, fn):
        """``fn()``, its seconds kept in timings.json (the longest: reused work takes less)."""
        t0 = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - t0
        timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
        timings[name] = max(timings.get(name, 0.0), seconds)
        write_json(timings_file, timings)
        return value

    unlabeled = out / "unlabeled_cxr.npz"
    if not unlabeled.is_file():
        unlabeled = unlabeled_cxr(pneumonia, table, nih_dir, args.image_size, out)
    stages = {}
    for init in PRETRAINED:
        if init in parts:
            stages[init] = timed(init, lambda i=init: pretrain_stage(args, out, unlabeled, i))
        elif stage_file(out, init).is_file():
            stages[init] = json.loads(stage_file(out, init).read_text())
    inits = [i for i in INITS if i in args.inits.split(",")]
    missing = [i for i in inits if i != "random" and i not in stages]
    if parts & {"id", "ood"} and missing:
        raise SystemExit(f"{out}: pretraining stages {missing} not finished; run --parts with "
                         "them first")
    modules = modules_of(args, stages)
    results = {}
    for dataset in DATASETS:
        if dataset in parts:
            results[dataset] = timed(f"finetune_{dataset}_{'-'.join(inits)}", lambda d=dataset: sweep(
                args, d, modules, data, out, fractions, seeds, inits))
    zero = []
    if "zeroshot" in parts and "id" in results and len(inits) == len(INITS):
        zero = timed("zeroshot", lambda: zero_shot(args, results["id"], data, out, seeds))
    rows = summarise({f"{d}/{k}": v for d, res in results.items() for k, v in res.items()})
    import numpy as np

    zero_rows = []
    for mode in args.modes:
        for init in INITS:
            mine = [z for z in zero if z["mode"] == mode and z["init"] == init]
            if mine:
                aucs = np.array([z["test_auc"] for z in mine])
                zero_rows.append({"mode": mode, "init": init, "test_auc_mean": float(np.nanmean(aucs)),
                                  "test_auc_std": (float(np.nanstd(aucs, ddof=1))
                                                   if np.isfinite(aucs).sum() > 1 else math.nan),
                                  "ci_low_mean": float(np.nanmean([z["ci_low"] for z in mine])),
                                  "ci_high_mean": float(np.nanmean([z["ci_high"] for z in mine])),
                                  "n": len(mine)})
    choices = [{"dataset": res["dataset"], "mode": res["mode"], "init": res["init"],
                **res["choice"], "seconds": res["seconds"]}
               for d in results.values() for res in d.values()]
    report = {"benchmark": "remedis_mini", "machine": machine_info(),
              "command": " ".join(["python bench/remedis_mini.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "settings": {k: v for k, v in vars(args).items()},
              "inits": {k: INIT_TITLES[k] for k in INITS}, "modules": modules,
              "stages": stages,
              "timings": json.loads(timings_file.read_text()) if timings_file.is_file() else {},
              "choices": choices, "rows": rows,
              "zero_shot": zero_rows, "zero_shot_runs": zero,
              "fraction_to_match": matches(rows) if rows else {},
              "ood_task": "NIH sample, any finding vs No Finding (binary), patient-level 80/10/10 "
                          "split cut by each seed",
              "total_seconds": time.perf_counter() - started}
    complete = parts == set(PARTS) and len(inits) == len(INITS)
    if rows and complete:
        report["plot"] = str(plot(rows, out / "remedis_mini.png"))
        columns = ["dataset", "mode", "init", "percent", "lr", "epochs", "test_auc_mean",
                   "test_auc_std",
                   "ci_low_mean", "ci_high_mean", "n"]
        print(format_table(rows, columns))
    if zero_rows:
        print(format_table(zero_rows, ["mode", "init", "test_auc_mean", "test_auc_std", "n"]))
    if not complete:  # the report is the last, complete call's
        print(f"parts {sorted(parts)} of inits {inits} done in "
              f"{(time.perf_counter() - started) / 60:.1f} min")
        return report
    write_json(out / "remedis_mini.json", report)
    for dataset, entry in report["fraction_to_match"].items():
        for mode in args.modes:
            need = entry["same_mode"].get(f"{mode}/remedis")
            print(f"{dataset} {mode}: REMEDIS matches supervised @ 100 % "
                  f"(AUC {entry['supervised_at_100'][mode]:.3f}) with "
                  f"{'no fraction tried' if need is None else f'{need:.0%} of the labels'}")
    print(f"total {report['total_seconds'] / 60:.1f} min; wrote {out / 'remedis_mini.json'}")
    return report


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
