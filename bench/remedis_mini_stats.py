"""The statistics of ``bench/remedis_mini.py``: predictions pooled per (dataset, mode, init,
fraction), one AUC per group with an interval over patients and pretraining seeds
(``medfound.evaluation.metrics.runs_bootstrap_auc``), and the paired test against the supervised
baseline trained on 100 % of the labels."""
from __future__ import annotations

import math

import numpy as np

MARGIN = 0.02
MATCH_RULE = (f"an init at fraction f matches the supervised baseline at 100 % (same mode) when "
              f"the lower end of the 95 % interval of the paired difference AUC(init, f) - "
              f"AUC(supervised, 100 %) is above -{MARGIN} (non-inferiority, margin {MARGIN}); the "
              "difference is bootstrapped over patients (the same draw for both) and over "
              "pretraining seeds (paired by seed index: REMEDIS seed s continues supervised seed s)")
INTERVAL = ("95 % percentile bootstrap of the AUC averaged over pretraining seeds: each draw "
            "resamples patients (the same for every seed) and the seeds, so the interval holds "
            "patient and pretraining variance")


def assemble(records: list[dict], n: int) -> dict:
    """{(dataset, mode, init, fraction): {seed: scores (n,)}} from the pieces' predictions;
    a (group, seed) whose rows are not all predicted yet is left out; a row predicted twice
    (overlapping test folds) is an error."""
    parts: dict = {}
    for r in records:
        key = (r["dataset"], r["mode"], r["init"], r["fraction"])
        parts.setdefault(key, {}).setdefault(r["seed"], []).append(r)
    groups: dict = {}
    for key, seeds in parts.items():
        for seed, pieces in seeds.items():
            scores, seen = np.full(n, np.nan), np.zeros(n, int)
            for piece in pieces:
                scores[piece["rows"]] = piece["scores"]
                np.add.at(seen, piece["rows"], 1)
            if seen.max() > 1:
                raise ValueError(f"{key} seed {seed}: rows {np.flatnonzero(seen > 1)[:5].tolist()} "
                                 "predicted more than once (test folds overlap)")
            if seen.min() == 1:
                groups.setdefault(key, {})[seed] = scores
    return groups


def summarise(groups: dict, truth: dict, n_boot: int) -> list[dict]:
    """One row per group: pooled AUC with its interval (INTERVAL), the seeds' AUCs and sd
    (ddof=1), and the paired difference to supervised @ 100 % in the same mode (MATCH_RULE).
    ``truth[dataset]`` is {"labels", "groups"} (patients; images where there are none)."""
    from medfound.evaluation.metrics import roc_auc, runs_bootstrap_auc

    rows = []
    for (dataset, mode, init, fraction), by_seed in sorted(groups.items(), key=str):
        seeds = sorted(by_seed)
        scores = np.stack([by_seed[s] for s in seeds])
        labels, patients = truth[dataset]["labels"], truth[dataset]["groups"]
        base = groups.get((dataset, mode, "supervised", 1.0))
        paired = None if base is None else np.stack([base[s] for s in sorted(base)])
        boot = runs_bootstrap_auc(labels, scores, patients, baseline=paired, n_boot=n_boot)
        aucs = [roc_auc(labels, s) for s in scores]
        row = {"dataset": dataset, "mode": mode, "init": init, "fraction": fraction,
               "seeds": seeds, "seed_aucs": aucs, "auc": boot["auc"], "low": boot["low"],
               "high": boot["high"], "half_width": (boot["high"] - boot["low"]) / 2,
               "seed_sd": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else math.nan,
               "images": int(labels.size), "patients": int(np.unique(patients).size)}
        if paired is not None:
            row.update(difference=boot["difference"], difference_low=boot["difference_low"],
                       difference_high=boot["difference_high"],
                       matches=bool(boot["difference_low"] > -MARGIN))
        rows.append(row)
    return rows


def fraction_to_match(rows: list[dict]) -> dict:
    """{dataset: {"mode/init": smallest fraction that matches (MATCH_RULE) or None}}."""
    found: dict = {}
    for row in sorted(rows, key=lambda r: r["fraction"]):
        key = f"{row['mode']}/{row['init']}"
        entry = found.setdefault(row["dataset"], {})
        if "matches" in row:
            entry.setdefault(key, None)
            if row["matches"] and entry[key] is None:
                entry[key] = row["fraction"]
    return found


def choice_counts(choices: list[dict]) -> dict:
    """{"dataset/mode/init": {"epochs @ rate": pieces}}: how often each candidate won a piece's
    validation selection (kept in the report, so the table of it traces to the JSON)."""
    counts: dict = {}
    for c in choices:
        key = f"{c['dataset']}/{c['mode']}/{c['init']}"
        pick = f"{c['chosen']['epochs']} @ {c['chosen']['learning_rate']:g}"
        counts.setdefault(key, {})
        counts[key][pick] = counts[key].get(pick, 0) + 1
    return counts
