"""Markdown tables of a ``bench/remedis_mini.py`` report, as BENCHMARKS.md section 9 shows them.

    python bench/remedis_mini_tables.py bench/reports/remedis_mini.json \
        --plot bench/plots/remedis_mini.png

Every number in that section's tables comes from the report through this script, so the text and
the JSON cannot drift apart.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

INITS = ("random", "supervised", "remedis", "simclr")
MODES = ("linear", "full")
DATASETS = {"id": "ID", "ood": "OOD"}


def _num(value, fmt: str = ".3f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else \
        format(value, fmt)


def design_text(report: dict) -> str:
    """The fine-tuning modes each dataset was run with (OOD is linear-only unless asked)."""
    modes = report.get("modes", {})
    text = "; ".join(f"{DATASETS[d]} {', '.join(modes.get(d, [])) or 'none'}" for d in DATASETS)
    note = "" if "full" in modes.get("ood", []) else (
        " (OOD full fine-tuning left out to fit the compute budget: --ood-modes linear full)")
    return f"Fine-tuning modes: {text}{note}."


def curve_table(report: dict) -> str:
    """The supervised stage's CIFAR-10 curve (seed 0) and where it stopped improving."""
    curve = report.get("cifar_curve") or {"curve": [], "steps": None, "rule": ""}
    lines = ["| steps | CIFAR-10 test accuracy | seconds |", "|---|---|---|"]
    lines += [f"| {c['steps']} | {_num(c['test_accuracy'])} | {c['seconds']:.0f} |"
              for c in curve["curve"]]
    return "\n".join(lines) + f"\n\nKept: {curve['steps']} steps ({curve['rule']})."


def stages_table(report: dict) -> str:
    """Every (stage, seed): what it started from, its result, its time."""
    lines = ["| stage | seed | from | steps | result | seconds |", "|---|---|---|---|---|---|"]
    for s in sorted(report["stages"], key=lambda s: (s["init"], s["seed"])):
        result = (f"CIFAR-10 test accuracy {_num(s['cifar_test_accuracy'])}"
                  if "cifar_test_accuracy" in s else
                  f"NT-Xent {_num(s['losses'][0])} -> {_num(s['losses'][-1])}" if s["losses"]
                  else "reused")
        start = s.get("start", "")  # 'random' or bit-s:OUT/supervised/seedS/stepsN/supervised.npz
        if start.startswith("bit-s:"):
            checkpoint = Path(start.split(":", 1)[1]).parent
            start = f"supervised {checkpoint.parent.name}, {checkpoint.name}"
        lines.append(f"| {s['init']} | {s['seed']} | {start} | {s['steps']} | {result} | "
                     f"{s['seconds']:.0f} |")
    return "\n".join(lines)


def _cell(row: dict | None) -> str:
    if row is None:
        return ""
    text = f"{_num(row['auc'])} [{_num(row['low'])}, {_num(row['high'])}]"
    if "difference" in row and not (row["init"] == "supervised" and row["fraction"] == 1.0):
        text += (f" Δ {row['difference']:+.3f} [{row['difference_low']:+.3f}, "
                 f"{row['difference_high']:+.3f}] {'**matches**' if row['matches'] else 'below'}")
    return text


def sweep_table(report: dict, dataset: str) -> str:
    """Pooled AUC [95 % interval over patients and seeds] per (init, mode, fraction), with the
    paired difference to supervised @ 100 % and the verdict."""
    rows = [r for r in report["rows"] if r["dataset"] == dataset]
    fractions = sorted({r["fraction"] for r in rows})
    by = {(r["mode"], r["init"], r["fraction"]): r for r in rows}
    lines = ["| init | mode | seeds | " + " | ".join(f"{100 * f:g} %" for f in fractions) + " |",
             "|---|---|---|" + "---|" * len(fractions)]
    for mode in MODES:
        for init in INITS:
            mine = [by.get((mode, init, f)) for f in fractions]
            if any(mine):
                seeds = next(r for r in mine if r)["seeds"]
                lines.append(f"| {init} | {mode} | {len(seeds)} | "
                             + " | ".join(_cell(r) for r in mine) + " |")
    return "\n".join(lines)


def match_table(report: dict) -> str:
    """The smallest fraction at which each init matches supervised @ 100 % (the paired rule)."""
    lines = ["| data | " + " | ".join(f"{i}, {m}" for i in INITS for m in MODES) + " |",
             "|---|" + "---|" * (len(INITS) * len(MODES))]
    for dataset, entry in report["fraction_to_match"].items():
        cells = [("never" if entry[k] is None else f"{100 * entry[k]:g} %") if k in entry else ""
                 for k in (f"{m}/{i}" for i in INITS for m in MODES)]
        lines.append(f"| {DATASETS[dataset]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def choices_table(report: dict) -> str:
    """How often each (epochs @ rate) won a piece's validation selection."""
    lines = ["| data | mode | init | chosen (epochs @ rate: pieces) |", "|---|---|---|---|"]
    from bench.remedis_mini_stats import choice_counts

    counts = report.get("choice_counts") or choice_counts(report["choices"])
    for key, picks in sorted(counts.items()):
        dataset, mode, init = key.split("/")
        counter = Counter(picks)
        lines.append(f"| {DATASETS[dataset]} | {mode} | {init} | "
                     + ", ".join(f"{k}: {v}" for k, v in counter.most_common()) + " |")
    return "\n".join(lines)


def timings_table(report: dict) -> str:
    lines = ["| piece | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.0f} |" for name, seconds in report.get("timings", {}).items()
              if isinstance(seconds, (int, float))]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> Path:
    """Pooled test AUC [95 % interval] against label fraction per init: rows ID and OOD, a
    column per mode; the dotted line is supervised @ 100 % (the paired test's baseline)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from bench.common import fraction_axes, save_png

    panels = [(d, m) for d in DATASETS for m in MODES
              if any(r["dataset"] == d and r["mode"] == m for r in report["rows"])]
    columns = max(1, len({m for _, m in panels}))
    rows_n = max(1, len({d for d, _ in panels}))
    fig = Figure(figsize=(5 * columns, 4 * rows_n))
    FigureCanvasAgg(fig)
    for i, (dataset, mode) in enumerate(panels):
        ax = fig.add_subplot(rows_n, columns, i + 1)
        mine = [r for r in report["rows"] if r["dataset"] == dataset and r["mode"] == mode]
        for k, (init, style) in enumerate(zip(INITS, ("s:", "o-", "D-", "^--"))):
            sub = sorted((r for r in mine if r["init"] == init), key=lambda r: r["fraction"])
            dodge = 1 + 0.04 * (k - 1.5)  # side by side, so overlapping intervals stay readable
            if sub:
                ax.errorbar([100 * r["fraction"] * dodge for r in sub], [r["auc"] for r in sub],
                            yerr=[[r["auc"] - r["low"] for r in sub],
                                  [r["high"] - r["auc"] for r in sub]],
                            fmt=style, capsize=3, label=init)
        base = [r for r in mine if r["init"] == "supervised" and r["fraction"] == 1.0]
        if base:
            ax.axhline(base[0]["auc"], color="grey", ls=":", label="supervised @ 100 %")
        fraction_axes(ax, f"{DATASETS[dataset]}, {mode}")
        ax.set_ylabel("pooled test AUC (95 % interval)")
    return save_png(fig, path)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="remedis_mini.json")
    parser.add_argument("--plot", help="also write the label-efficiency plot to this PNG")
    args = parser.parse_args(argv)
    report = json.loads(Path(args.report).read_text())
    if args.plot:
        plot(report, Path(args.plot))
    sections = [("Design", design_text(report)),
                ("CIFAR-10 curve", curve_table(report)),
                ("Pretraining stages", stages_table(report)),
                ("Hyperparameters chosen on validation", choices_table(report)),
                ("In distribution", sweep_table(report, "id")),
                ("Out of distribution", sweep_table(report, "ood")),
                ("Fraction to match", match_table(report)),
                ("Timings", timings_table(report))]
    text = "\n\n".join(f"<!-- {title} -->\n{table}" for title, table in sections)
    print(text)
    return text


if __name__ == "__main__":
    main()
