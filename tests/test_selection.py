"""medfound.finetune.selection: (rate, budget) chosen on validation AUC, reused by the sweep."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from medfound.finetune.config import FinetuneConfig
from medfound.finetune.selection import candidate_name, grid, select_hyperparameters


def test_grid_varies_the_first_field_slowest_and_names_each_candidate():
    candidates = grid(epochs=[2, 6], learning_rate=[0.01, 0.05])
    assert candidates == [{"epochs": 2, "learning_rate": 0.01}, {"epochs": 2, "learning_rate": 0.05},
                          {"epochs": 6, "learning_rate": 0.01}, {"epochs": 6, "learning_rate": 0.05}]
    assert [candidate_name(c) for c in candidates[:2]] == ["epochs2_learning_rate0.01",
                                                           "epochs2_learning_rate0.05"]


def test_bad_candidates_are_refused_before_any_run(tmp_path):
    base = FinetuneConfig(module="random:tiny", task="medmnist", data=str(tmp_path),
                          out_dir=str(tmp_path / "sel"))
    for bad, message in (([{"epoch": 2}], "not FinetuneConfig fields"),
                         ([{"seed": 1}], "set by the selection itself"),
                         ([{"epochs": 2}, {"epochs": 2}], "duplicate candidates"),
                         ([], "at least one candidate"),
                         ([{"epochs": 0}], "epochs must be an integer >= 1")):
        with pytest.raises(ValueError, match=message):
            select_hyperparameters(base, bad)
    assert not (tmp_path / "sel").exists()


def small_pneumonia(source: Path, path: Path, per_class: int = 24) -> Path:
    """``per_class`` images of each class per split of the real PneumoniaMNIST file."""
    arrays = {}
    with np.load(source) as data:
        for split in ("train", "val", "test"):
            labels = data[f"{split}_labels"][:, 0]
            pick = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in (0, 1)]))
            arrays[f"{split}_images"] = data[f"{split}_images"][pick]
            arrays[f"{split}_labels"] = data[f"{split}_labels"][pick]
    np.savez(path, **arrays)
    return path


@pytest.mark.slow
def test_selection_keeps_the_best_validation_auc_and_the_sweep_reuses_its_run(shared_data, tmp_path):
    from medfound.finetune.label_efficiency import label_efficiency

    data = small_pneumonia(shared_data / "pneumoniamnist.npz", tmp_path / "pneu.npz")
    base = FinetuneConfig(module="random:tiny", task="medmnist", data=str(data),
                          out_dir=str(tmp_path / "sel"), mode="linear", image_size=32,
                          batch_size=16, n_boot=5, patience=0, verbose=False)
    candidates = grid(epochs=[1, 3], learning_rate=[0.5])
    selection = select_hyperparameters(base, candidates, seed=0)

    # Every candidate ran once, with its own settings, and its validation AUC is the run's.
    assert [(t["epochs"], t["learning_rate"]) for t in selection.tried] == [(1, 0.5), (3, 0.5)]
    vals = []
    for tried in selection.tried:
        metrics = json.loads((Path(tried["run_dir"]) / "metrics.json").read_text())
        assert tried["val_auc"] == metrics["val"]["mean_auc"]
        assert tried["epochs_run"] == tried["epochs"]  # patience 0: no early stop
        vals.append(-math.inf if tried["val_auc"] is None else tried["val_auc"])
    best = int(np.argmax(vals))  # the first of equal scores, as the selection
    assert selection.chosen == candidates[best]
    assert (selection.config.epochs, selection.config.learning_rate) == (candidates[best]["epochs"], 0.5)
    assert selection.config.module == "random:tiny" and selection.config.data == str(data)
    written = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert written["chosen"] == candidates[best] and len(written["tried"]) == 2

    # The sweep with the chosen config reuses the selection's run; a rerun reuses both.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "sel").rglob("metrics.json")}
    assert len(stamps) == 2
    sweep = label_efficiency(selection.config, ["random:tiny"], [1.0], [0])
    assert sweep.runs[0]["run_dir"] == selection.tried[best]["run_dir"]
    assert select_hyperparameters(base, candidates, seed=0).tried == selection.tried
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "sel").rglob("metrics.json")}


def test_a_candidate_whose_run_fails_loses_and_the_others_go_on(shared_data, tmp_path):
    data = small_pneumonia(shared_data / "pneumoniamnist.npz", tmp_path / "pneu.npz", per_class=8)
    base = FinetuneConfig(module="random:tiny", task="medmnist", data=str(data),
                          out_dir=str(tmp_path / "sel"), mode="linear", image_size=32, epochs=1,
                          batch_size=16, n_boot=5, patience=0, verbose=False)
    # A rate of 1e38 overflows the head in its first step: the run cannot score its splits.
    candidates = grid(learning_rate=[1e38, 0.5])
    selection = select_hyperparameters(base, candidates, seed=0)
    failed, ok = selection.tried
    assert failed["val_auc"] is None and failed["error"]
    assert ok["val_auc"] is not None and selection.chosen == {"learning_rate": 0.5}
