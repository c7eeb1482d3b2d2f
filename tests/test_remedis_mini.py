"""bench/remedis_mini.py at its tiniest settings, and the statistics and folds it rests on.

The end-to-end test runs every piece (--tiny: supervised and REMEDIS, 1 seed, 2 folds, linear
probes) and checks what can be wrong: every NIH image predicted exactly once per (init,
fraction) by a model whose training and validation patients exclude its own, at the OOD size,
its saved scores reproducing the run's own test AUC; no NIH image in pretraining; the CIFAR
curve and the per-(stage, seed) files; the paired test rows; the tables; a report-only rerun
giving the same rows.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not an installed package
from bench import remedis_mini, remedis_mini_cv, remedis_mini_stats, remedis_mini_tables  # noqa: E402
from bench import remedis_mini_pretrain  # noqa: E402


def cifar_subset(source: Path, path: Path, n_train: int = 256, n_test: int = 64) -> Path:
    """Evenly spaced images of the shared CIFAR-10 subset (sorted by class: every class kept)."""
    with np.load(source) as data:
        train = slice(None, None, len(data["train_labels"]) // n_train)
        test = slice(None, None, len(data["test_labels"]) // n_test)
        np.savez(path, train_images=data["train_images"][train],
                 train_labels=data["train_labels"][train], test_images=data["test_images"][test],
                 test_labels=data["test_labels"][test], classes=data["classes"])
    return path


def test_folds_are_patient_disjoint_and_cover_every_image_once():
    """Each fold's test patients are in no train/val of that fold; test folds partition the rows."""
    patients = np.repeat(np.arange(60).astype(str), np.random.default_rng(0).integers(1, 6, 60))
    seen = np.zeros(patients.size, int)
    for fold in range(5):
        rows = remedis_mini_cv.fold_rows(patients, 5, fold, 0.15)
        seen[rows["test"]] += 1
        sets = {k: set(patients[v]) for k, v in rows.items()}
        assert not (sets["test"] & sets["train"]) and not (sets["test"] & sets["val"])
        assert not (sets["train"] & sets["val"]) and sets["val"]
        assert sorted(np.concatenate(list(rows.values())).tolist()) == list(range(patients.size))
    assert (seen == 1).all()


def test_assemble_refuses_overlapping_folds_and_waits_for_missing_ones():
    piece = {"dataset": "ood", "mode": "linear", "init": "random", "fraction": 1.0, "seed": 0}
    halves = [dict(piece, rows=[0, 1], scores=[0.1, 0.2]), dict(piece, rows=[2, 3], scores=[0.3, 0.4])]
    assert remedis_mini_stats.assemble(halves[:1], 4) == {}  # a fold missing: no group yet
    group = remedis_mini_stats.assemble(halves, 4)[("ood", "linear", "random", 1.0)][0]
    assert group.tolist() == [0.1, 0.2, 0.3, 0.4]
    with pytest.raises(ValueError, match="more than once"):
        remedis_mini_stats.assemble(halves + [dict(piece, rows=[1], scores=[0.5])], 4)


def test_paired_rule_tells_a_clearly_worse_init_from_an_equal_one():
    """One pooled AUC per group; 'matches' only when the paired interval's low end is above
    -MARGIN: an init with the baseline's own scores matches, a noisier one does not."""
    from medfound.evaluation.metrics import runs_bootstrap_auc

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 800)
    patients = np.repeat(np.arange(200), 4).astype(str)
    base = np.stack([labels + rng.normal(0, 0.8, 800) for _ in range(3)])
    worse = np.stack([labels + rng.normal(0, 2.0, 800) for _ in range(3)])
    truth = {"ood": {"labels": labels, "groups": patients}}
    groups = {("ood", "linear", "supervised", 1.0): dict(enumerate(base)),
              ("ood", "linear", "remedis", 0.1): dict(enumerate(base)),
              ("ood", "linear", "random", 0.1): dict(enumerate(worse))}
    rows = {r["init"]: r for r in remedis_mini_stats.summarise(groups, truth, n_boot=200)}
    assert rows["remedis"]["matches"] and rows["remedis"]["difference"] == 0.0
    assert not rows["random"]["matches"] and rows["random"]["difference_high"] < 0
    assert rows["random"]["seed_sd"] > 0 and len(rows["random"]["seed_aucs"]) == 3
    boot = runs_bootstrap_auc(labels, base, patients, n_boot=200)
    assert boot["low"] < boot["auc"] < boot["high"] and boot["high"] - boot["low"] < 0.12
    assert remedis_mini_stats.fraction_to_match(list(rows.values()))["ood"] == {
        "linear/remedis": 0.1, "linear/random": None, "linear/supervised": 1.0}


def test_cifar_curve_stops_at_the_first_doubling_below_the_delta_and_can_continue(tmp_path):
    from types import SimpleNamespace

    args = SimpleNamespace(supervised_steps=400, supervised_max_steps=1600, plateau_delta=0.005)
    curve = [{"steps": 400 * 2 ** i, "test_accuracy": a}
             for i, a in enumerate([0.485, 0.544, 0.598])]
    rising = remedis_mini_pretrain._plateau_result(args, curve)
    assert not rising["plateaued"] and rising["steps"] == 1600
    # Cut by the cap: a later call with a higher cap continues from the cached curve.
    stages = tmp_path / "stages"
    stages.mkdir()
    (stages / "plateau.json").write_text(json.dumps(rising))
    assert remedis_mini_pretrain.plateau(args, tmp_path) == rising
    flat = remedis_mini_pretrain._plateau_result(
        args, curve + [{"steps": 3200, "test_accuracy": 0.601}])
    assert flat["plateaued"] and flat["steps"] == 1600


def test_tiny_has_its_own_folder_and_the_study_defaults_to_linear_ood():
    """--tiny pieces would be reused by the study if they shared a folder; OOD full fine-tuning
    is opt-in (it would take the study past its compute budget), ID keeps both modes."""
    study, tiny = remedis_mini.parse_args([]), remedis_mini.parse_args(["--tiny"])
    assert Path(tiny.out).resolve() != Path(study.out).resolve()
    assert (study.modes, study.ood_modes) == (["linear", "full"], ["linear"])
    both = remedis_mini.parse_args(["--ood-modes", "linear", "full"])
    assert remedis_mini.modes_of(both, "ood") == ["linear", "full"]
    assert remedis_mini.modes_of(both, "id") == ["linear", "full"]


def test_remedis_mini_tiny_end_to_end(tmp_path, shared_data):
    """The real pipeline at --tiny (supervised and REMEDIS, 1 seed, 2 patient folds, 30 NIH
    patients): seconds, not minutes, so CI can run it."""
    from medfound.evaluation.metrics import roc_auc

    out, nih_dir = tmp_path / "remedis_mini", shared_data / "nih-cxr14-sample"
    cifar = cifar_subset(shared_data / "cifar10-small.npz", tmp_path / "cifar.npz", 64, 32)
    argv = ["--tiny", "--cifar", str(cifar), "--nih", str(nih_dir),
            "--data", str(shared_data / "pneumoniamnist.npz"), "--out", str(out)]
    report = remedis_mini.main(argv)
    settings = report["settings"]
    inits, size = settings["inits"].split(","), settings["ood_image_size"]
    assert size != settings["image_size"]  # so the size check below tells OOD from ID
    nih = remedis_mini_cv.nih_arrays(nih_dir, size, settings["nih_limit"])
    n = nih["labels"].size
    ood = [r for r in remedis_mini.collect(out) if r["dataset"] == "ood"]
    # Every NIH image predicted exactly once per (init, seed, fraction), never by a model that
    # trained or validated on its patient; a fraction's training patients a subset of 100 %'s.
    for init in inits:
        for fraction in (0.5, 1.0):
            mine = [r for r in ood if r["init"] == init and r["fraction"] == fraction]
            assert sorted(i for r in mine for i in r["rows"]) == list(range(n))
            for r in mine:
                name = f"fold{r['fold']}_f1.npz" if fraction == 1 else f"fold{r['fold']}_f0.5_s0.npz"
                with np.load(out / "folds" / name) as data, \
                        np.load(out / "folds" / f"fold{r['fold']}_f1.npz") as whole:
                    seen = set(nih["patients"][np.r_[data["train_rows"], data["val_rows"]]])
                    assert data["test_rows"].tolist() == r["rows"]
                    assert set(data["train_rows"]) <= set(whole["train_rows"])
                assert not seen & set(nih["patients"][r["rows"]])
                run = Path(r["run_dir"])
                assert json.loads((run / "config.json").read_text())["image_size"] == size
                # The saved predictions are the run's own: its test AUC, from the scores.
                assert roc_auc(nih["labels"][r["rows"]], np.array(r["scores"])) == pytest.approx(
                    json.loads((run / "metrics.json").read_text())["test"]["mean_auc"], abs=1e-6)
    # The stages: REMEDIS continues the supervised checkpoint, and its SimCLR run (as the
    # library recorded it) saw the PneumoniaMNIST subset only, no NIH image.
    stages = {(s["init"], s["seed"]): s for s in report["stages"]}
    assert set(stages) == {("supervised", 0), ("remedis", 0)}
    assert stages[("remedis", 0)]["start"].startswith("bit-s:")
    remedis_dir = Path(stages[("remedis", 0)]["module"]).parent
    simclr_run = json.loads((remedis_dir / "pretrain" / "config.json").read_text())
    assert Path(simclr_run["data"]).name == f"subset{settings['limit']}.npz"
    assert [c["steps"] for c in report["cifar_curve"]["curve"]] == [2]
    # One pooled row per (dataset, init, fraction); paired rows against supervised @ 100 %.
    rows = {(r["dataset"], r["init"], r["fraction"]): r for r in report["rows"]}
    assert set(rows) == {("id", i, 1.0) for i in inits} | {
        ("ood", i, f) for i in inits for f in (0.5, 1.0)}
    assert rows[("ood", "supervised", 1.0)]["difference"] == 0.0
    assert rows[("ood", "remedis", 0.5)]["images"] == n
    # A longer CIFAR curve later (a higher cap) redoes the stages that start from it, beside
    # their earlier outputs (an export onto the earlier module was refused); SimCLR is kept.
    remedis_mini.main(argv + ["--only", "pretrain", "--supervised-max-steps", "4",
                              "--plateau-delta", "-1"])  # any doubling counts as a gain
    curve = json.loads((out / "stages" / "plateau.json").read_text())["curve"]
    assert [c["steps"] for c in curve] == [2, 4]
    for init in ("supervised", "remedis"):
        redone = json.loads(remedis_mini_pretrain.stage_file(out, init, 0).read_text())
        assert redone["supervised_steps"] == 4 and Path(redone["module"]).is_file()
        assert Path(stages[(init, 0)]["module"]).is_file()  # the earlier one is not lost
        assert redone["module"] != stages[(init, 0)]["module"]
    estimate = report["estimate"]  # at DEFAULTS: ID linear+full, OOD linear; OOD full on top
    assert 0 < estimate["hours"] < estimate["hours_with_ood_full"]
    tables = remedis_mini_tables.main([str(out / "remedis_mini.json"),
                                       "--plot", str(tmp_path / "plot.png")])
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    block = tables.split("<!-- Out of distribution -->")[1].split("<!--")[0]
    assert sum(line.startswith("| ") for line in block.splitlines()) == 1 + len(inits)
    assert f"{rows[('ood', 'remedis', 0.5)]['auc']:.3f}" in block
    assert report["modes"] == {"id": ["linear"], "ood": ["linear"]}
    assert "Fine-tuning modes: ID linear; OOD linear (OOD full fine-tuning left out" in tables
    # Reused: a second report call trains nothing and gives the same rows, intervals and all.
    again = remedis_mini.main(argv + ["--only", "report"])
    assert json.dumps(again["rows"], sort_keys=True) == json.dumps(report["rows"], sort_keys=True)
    # The report covers --seeds only: seed 1 ran nothing, so its report has no rows or stages.
    other = remedis_mini.main(argv + ["--only", "report", "--seeds", "1"])
    assert other["rows"] == [] and other["stages"] == []
