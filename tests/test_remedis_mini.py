"""bench/remedis_mini.py at its tiniest settings: the report's structure, not its numbers.

Four inits (random, supervised, REMEDIS, SimCLR from random) in and out of distribution, the
(rate, epoch budget) pairs chosen on validation, zero-shot transfer of the ID heads, the
fractions to match the supervised baseline, the stage times and the plot. Linear probes only, to keep it cheap: full
fine-tuning goes through the same sweep (``finetune`` in the other mode, tested elsewhere).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not an installed package
from bench import remedis_mini, remedis_mini_tables  # noqa: E402


def cifar_subset(source: Path, path: Path, n_train: int = 256, n_test: int = 64) -> Path:
    """Evenly spaced images of the shared CIFAR-10 subset (its files are sorted by class, so every
    class is kept): the supervised stage's real data, small."""
    import numpy as np

    with np.load(source) as data:
        train = slice(None, None, len(data["train_labels"]) // n_train)
        test = slice(None, None, len(data["test_labels"]) // n_test)
        np.savez(path, train_images=data["train_images"][train],
                 train_labels=data["train_labels"][train], test_images=data["test_images"][test],
                 test_labels=data["test_labels"][test], classes=data["classes"])
    return path


@pytest.mark.slow
def test_remedis_mini_reports_four_inits_in_and_out_of_distribution(tmp_path, shared_data):
    from medfound.formats.metadata import read_metadata

    out = tmp_path / "remedis_mini"
    cifar = cifar_subset(shared_data / "cifar10-small.npz", tmp_path / "cifar.npz")
    remedis_mini.main(["--tiny", "--modes", "linear",
                       "--data", str(shared_data / "pneumoniamnist.npz"),
                       "--nih", str(shared_data / "nih-cxr14-sample"), "--cifar", str(cifar),
                       "--out", str(out)])
    report = json.loads((out / "remedis_mini.json").read_text())
    inits = set(remedis_mini.INITS)
    assert set(report["inits"]) == inits == set(report["modules"])

    # Every (dataset, init) has a row per fraction: an AUC, its seeds and a bootstrap interval.
    rows = {(r["dataset"], r["mode"], r["init"], r["fraction"]): r for r in report["rows"]}
    assert set(rows) == {(d, "linear", i, 1.0) for d in ("id", "ood") for i in inits}
    for row in rows.values():
        assert row["n"] == 1 and len(row["test_aucs"]) == 1
        auc, low, high = row["test_auc_mean"], row["ci_low_mean"], row["ci_high_mean"]
        # One seed: the mean is that run's AUC, inside its own bootstrap interval.
        assert auc == row["test_aucs"][0] or (math.isnan(auc) and math.isnan(row["test_aucs"][0]))
        assert math.isnan(auc) or low <= auc <= high
        assert math.isnan(row["test_auc_std"])  # no spread from one seed (ddof=1)
        assert row["lr"] == float(remedis_mini.TINY["lrs_linear"])  # the one candidate of --tiny
        assert row["epochs"] == int(remedis_mini.TINY["budgets_linear"])

    # The stages: the supervised accuracy on CIFAR, REMEDIS continuing the supervised checkpoint.
    stages = report["stages"]
    assert report["settings"]["cifar"] == str(cifar)
    assert 0.0 <= stages["supervised"]["cifar_test_accuracy"] <= 1.0
    assert stages["remedis"]["init"].startswith("bit-s:")
    assert stages["remedis"]["init"].endswith("supervised.npz")
    assert stages["simclr"]["init"] == "random"
    for name in ("supervised", "remedis", "simclr"):
        assert stages[name]["losses"] and all(math.isfinite(v) for v in stages[name]["losses"])
    remedis = read_metadata(report["modules"]["remedis"])
    assert (remedis.init, remedis.method) == ("bit-s", "simclr")
    assert read_metadata(report["modules"]["supervised"]).method == "supervised"
    assert report["modules"]["random"] == "random:tiny"

    # (Rate, budget) chosen on validation, per (dataset, mode, init), every candidate written down
    # with its validation AUC; the sweep's 100 % seed-0 run is the chosen candidate's own.
    choices = {(c["dataset"], c["mode"], c["init"]) for c in report["choices"]}
    assert choices == {(d, "linear", i) for d in ("id", "ood") for i in inits}
    for choice in report["choices"]:
        assert (choice["chosen_lr"], choice["chosen_epochs"]) in [
            (t["learning_rate"], t["epochs"]) for t in choice["tried"]]
        for tried in choice["tried"]:
            if "error" in tried:  # a run that failed is listed, without a score, and lost
                assert tried["val_auc"] is None and "best_epoch" not in tried
                continue
            # None: the tiny validation split can hold one class only (no AUC).
            assert tried["val_auc"] is None or 0.0 <= tried["val_auc"] <= 1.0
            assert 1 <= tried["best_epoch"] <= tried["epochs_run"] <= tried["epochs"]
        selection = json.loads((out / choice["dataset"] / "linear" / choice["init"]
                                / "selection.json").read_text())
        assert selection["chosen"] == {"epochs": choice["chosen_epochs"],
                                       "learning_rate": choice["chosen_lr"]}

    # Zero-shot: the ID heads on the NIH test split, one run per seed.
    assert {(z["mode"], z["init"]) for z in report["zero_shot"]} == {("linear", i) for i in inits}
    assert all(z["n"] == 1 for z in report["zero_shot"])
    assert {(z["init"], z["seed"]) for z in report["zero_shot_runs"]} == {(i, 0) for i in inits}

    # One seed gives no spread: no init is said to match the baseline (MATCH_RULE), in either
    # dataset, not even the baseline itself.
    for dataset in ("id", "ood"):
        entry = report["fraction_to_match"][dataset]
        assert entry["rule"] == remedis_mini.MATCH_RULE
        assert entry["supervised_at_100"]["linear"] == \
            rows[(dataset, "linear", "supervised", 1.0)]["test_auc_mean"]
        assert set(entry["same_mode"].values()) == {None}, entry

    assert {"supervised", "remedis", "simclr", "zeroshot"} <= set(report["timings"])
    assert Path(report["plot"]).read_bytes()[:4] == b"\x89PNG"

    # BENCHMARKS.md's tables are rendered from the report: one line per choice, per sweep row.
    tables = remedis_mini_tables.main([str(out / "remedis_mini.json")])
    for choice in report["choices"]:
        assert f"| {choice['mode']} | {choice['init']} | " in tables
    for dataset, heading in (("id", "In distribution"), ("ood", "Out of distribution")):
        block = tables.split(f"<!-- {heading} -->")[1].split("<!--")[0]
        assert sum(line.startswith("| ") for line in block.splitlines()) == 1 + len(inits)
        value = rows[(dataset, "linear", "remedis", 1.0)]["test_auc_mean"]
        assert "| remedis | linear |" in block and (math.isnan(value) or f"{value:.3f}" in block)


def _row(fraction, aucs):
    import numpy as np

    return {"fraction": fraction, "n": len(aucs), "test_auc_mean": float(np.mean(aucs)),
            "test_auc_std": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else math.nan}


def test_match_rule_needs_a_spread_and_allows_only_seed_noise():
    """'Matches' is 'not below the baseline beyond seed noise', judged on the seeds' spread:
    0.914 vs 0.912 with one seed each was called a match by 'mean >= target'; now no verdict."""
    target = _row(1.0, [0.910, 0.912, 0.914])
    assert remedis_mini.within_noise(_row(0.1, [0.914]), _row(1.0, [0.912])) is None
    assert remedis_mini.within_noise(_row(0.1, [0.904, 0.908, 0.912]), target)  # within noise
    assert not remedis_mini.within_noise(_row(0.1, [0.880, 0.885, 0.890]), target)  # clearly below
    curve = [_row(0.01, [0.80, 0.82, 0.81]), _row(0.05, [0.905, 0.909, 0.912]),
             _row(0.1, [0.95, 0.96, 0.97])]
    assert remedis_mini.first_match(curve, target) == 0.05
    assert remedis_mini.first_match(curve[:1], target) is None


def test_rescore_recomputes_spreads_and_matches_from_the_seed_aucs():
    """--rescore turns a report written under the old rules (sd ddof=0, 'mean >= baseline')
    into today's from the per-seed AUCs it holds, without running anything."""
    import numpy as np

    def row(init, fraction, aucs):
        return {"dataset": "id", "mode": "linear", "init": init, "fraction": fraction,
                "n": len(aucs), "test_aucs": aucs, "test_auc_mean": float(np.mean(aucs)),
                "test_auc_std": float(np.std(aucs))}  # ddof=0, as written before

    rows = [row("supervised", 1.0, [0.910, 0.912, 0.914])]
    rows += [row(init, f, [0.80, 0.81, 0.82] if f < 0.5 else [0.905, 0.909, 0.913])
             for init in ("random", "remedis", "simclr") for f in (0.01, 0.5, 1.0)]
    runs = [{"mode": "linear", "init": "random", "seed": s, "test_auc": a}
            for s, a in enumerate([0.5, 0.6, 0.7])]
    report = {"rows": rows, "zero_shot_runs": runs,
              "zero_shot": [{"mode": "linear", "init": "random", "test_auc_std": 0.0816}]}
    rescored = remedis_mini.rescore(report)
    assert rescored["rows"][0]["test_auc_std"] == pytest.approx(0.002)  # ddof=1
    assert rescored["zero_shot"][0]["test_auc_std"] == pytest.approx(0.1)
    entry = rescored["fraction_to_match"]["id"]
    assert entry["rule"] == remedis_mini.MATCH_RULE
    assert entry["same_mode"]["linear/remedis"] == 0.5  # 0.909 +- noise vs 0.912; 0.81 is not
