"""Markdown tables of a ``bench/remedis_mini.py`` report, as BENCHMARKS.md section 9 shows them.

    python bench/remedis_mini_tables.py bench/reports/remedis_mini.json

Every number in that section's tables comes from the report through this script, so the text and
the JSON cannot drift apart.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

INITS = ("random", "supervised", "remedis", "simclr")
MODES = ("linear", "full")
DATASETS = {"id": "ID", "ood": "OOD"}


def _auc(mean: float, sd: float | None = None, low: float | None = None,
         high: float | None = None) -> str:
    if mean is None or math.isnan(mean):
        return "n/a"
    text = f"{mean:.3f}"
    if sd is not None and not math.isnan(sd):
        text += f" ± {sd:.3f}"
    if low is not None and high is not None and not (math.isnan(low) or math.isnan(high)):
        text += f" [{low:.2f}, {high:.2f}]"
    return text


def choices_table(report: dict) -> str:
    """Every candidate's validation AUC per (dataset, mode, init), and the one chosen."""
    lines = ["| data | mode | init | val AUC per candidate (epochs @ rate) | chosen |",
             "|---|---|---|---|---|"]
    order = {(d, m, i): n for n, (d, m, i) in enumerate(
        (d, m, i) for d in DATASETS for m in MODES for i in INITS)}
    for c in sorted(report["choices"], key=lambda c: order[(c["dataset"], c["mode"], c["init"])]):
        tried = ", ".join(
            f"{t['epochs']} @ {t['learning_rate']:g}: "
            + ("failed (" + t["error"] + ")" if "error" in t
               else "no AUC (one class)" if t["val_auc"] is None else f"{t['val_auc']:.3f}")
            for t in c["tried"])
        lines.append(f"| {DATASETS[c['dataset']]} | {c['mode']} | {c['init']} | {tried} | "
                     f"**{c['chosen_epochs']} @ {c['chosen_lr']:g}** |")
    return "\n".join(lines)


def sweep_table(report: dict, dataset: str) -> str:
    """Test AUC per init and mode at each fraction: mean ± sd over seeds [mean 95 % interval]."""
    rows = [r for r in report["rows"] if r["dataset"] == dataset]
    fractions = sorted({r["fraction"] for r in rows})
    lines = ["| init | mode | epochs @ rate | " + " | ".join(f"{100 * f:g} %" for f in fractions)
             + " |", "|---|---|---|" + "---|" * len(fractions)]
    for mode in MODES:
        for init in INITS:
            mine = {r["fraction"]: r for r in rows if r["mode"] == mode and r["init"] == init}
            if not mine:
                continue
            first = next(iter(mine.values()))
            cells = [_auc(mine[f]["test_auc_mean"], mine[f]["test_auc_std"],
                          mine[f]["ci_low_mean"], mine[f]["ci_high_mean"]) if f in mine else ""
                     for f in fractions]
            lines.append(f"| {init} | {mode} | {first['epochs']} @ {first['lr']:g} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def zero_shot_table(report: dict) -> str:
    lines = ["| init | linear head | full fine-tuning |", "|---|---|---|"]
    by = {(z["mode"], z["init"]): z for z in report["zero_shot"]}
    for init in INITS:
        cells = []
        for mode in MODES:
            z = by.get((mode, init))
            cells.append(_auc(z["test_auc_mean"], z["test_auc_std"], z["ci_low_mean"],
                              z["ci_high_mean"]) if z else "")
        lines.append(f"| {init} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fraction(value) -> str:
    return "never" if value is None else f"{100 * value:g} %"


def match_table(report: dict) -> str:
    """The smallest fraction at which each init matches the supervised baseline trained on
    100 % (the report's rule: not below it beyond seed noise): in the same mode, and against the
    baseline's better mode."""
    lines = ["| data | against | baseline AUC | " + " | ".join(
        f"{init}, {mode}" for init in ("remedis", "simclr", "random") for mode in MODES) + " |",
        "|---|---|---|" + "---|" * 6]
    for dataset, entry in report["fraction_to_match"].items():
        base = entry["supervised_at_100"]
        strongest = entry["strongest_baseline_mode"]
        for kind, label, value in (
                ("same_mode", "supervised @ 100 %, same mode",
                 ", ".join(f"{m} {base[m]:.3f}" for m in MODES if m in base)),
                ("against_strongest", f"the better baseline ({strongest})",
                 f"{base[strongest]:.3f}")):
            cells = [_fraction(entry[kind].get(f"{mode}/{init}"))
                     for init in ("remedis", "simclr", "random") for mode in MODES]
            lines.append(f"| {DATASETS[dataset]} | {label} | {value} | " + " | ".join(cells)
                         + " |")
    return "\n".join(lines)


def timings_table(report: dict) -> str:
    lines = ["| stage | minutes |", "|---|---|"]
    for name, seconds in report.get("timings", {}).items():
        lines.append(f"| {name} | {seconds / 60:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="remedis_mini.json")
    parser.add_argument("--rescore", action="store_true",
                        help="first recompute the report's spreads (ddof=1) and matches (the "
                             "seed-noise rule) from its per-seed AUCs and write it back")
    args = parser.parse_args(argv)
    report = json.loads(Path(args.report).read_text())
    if args.rescore:
        from bench.common import write_json
        from bench.remedis_mini import rescore

        write_json(args.report, rescore(report))
    sections = [("Hyperparameters chosen on validation", choices_table(report)),
                ("In distribution", sweep_table(report, "id")),
                ("Out of distribution", sweep_table(report, "ood")),
                ("Zero-shot", zero_shot_table(report)),
                ("Fraction to match", match_table(report)),
                ("Timings", timings_table(report))]
    text = "\n\n".join(f"<!-- {title} -->\n{table}" for title, table in sections)
    print(text)
    return text


if __name__ == "__main__":
    main()
