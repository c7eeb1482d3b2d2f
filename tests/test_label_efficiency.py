"""`medfound label-efficiency`: the sweep, its outputs, resuming, and the matching rule."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from medfound.cli.main import main
from medfound.finetune.label_efficiency import fraction_to_match


def test_fraction_to_match_takes_the_smallest_fraction_reaching_the_target():
    curve = {0.01: 0.70, 0.1: 0.81, 0.05: 0.80, 1.0: 0.85}
    assert fraction_to_match(curve, 0.80) == 0.05
    assert fraction_to_match(curve, 0.60) == 0.01
    assert fraction_to_match(curve, 0.90) is None
    assert fraction_to_match({0.01: math.nan, 0.5: 0.9}, 0.8) == 0.5


@pytest.mark.slow
def test_sweep_on_pneumoniamnist_writes_table_plot_and_resumes(shared_data, tmp_path, capsys):
    argv = ["label-efficiency", "--modules", "random:small", "random:tiny", "--fractions", "0.05",
            "--seeds", "0", "--task", "medmnist", "--data", str(shared_data / "pneumoniamnist.npz"),
            "--out", str(tmp_path / "le"), "--image-size", "32", "--epochs", "2",
            "--n-boot", "50", "--quiet"]
    assert main(argv) == 0
    results = json.loads((tmp_path / "le" / "results.json").read_text())
    assert {(r["module"], r["fraction"]) for r in results["runs"]} == {
        (m, f) for m in ("random:small", "random:tiny") for f in (0.05, 1.0)}
    for r in results["runs"]:  # each score is its run's own test metric, not a copy or a default
        run_metrics = json.loads((Path(r["run_dir"]) / "metrics.json").read_text())
        assert r["test_mean_auc"] == pytest.approx(run_metrics["test"]["mean_auc"])
    assert results["baseline"] == "random:tiny"
    assert results["pretraining"] == {"random:small": "none (random init)",
                                      "random:tiny": "none (random init)"}
    assert results["target_auc"] == results["summary"]["random:tiny"]["1.0"]["mean"]
    # The baseline reaches its own 100% score at 5% exactly when its 5% mean does; else at 100%.
    tiny = results["summary"]["random:tiny"]
    expected = 0.05 if tiny["0.05"]["mean"] >= results["target_auc"] else 1.0
    assert results["fraction_to_match"]["random:tiny"] == expected
    assert (tmp_path / "le" / "label_efficiency.png").read_bytes()[:4] == b"\x89PNG"
    assert "labels to match" in capsys.readouterr().out
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "le" / "runs").rglob("metrics.json")}
    assert len(stamps) == 4
    assert main(argv) == 0  # a rerun reuses every finished run
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


def test_unknown_baseline_is_refused_before_any_run(tmp_path, capsys):
    assert main(["label-efficiency", "--modules", "random:tiny", "--baseline", "random:small",
                 "--task", "medmnist", "--data", str(tmp_path / "x.npz"), "--out",
                 str(tmp_path / "le")]) == 2
    assert "baseline 'random:small' is not among the modules" in capsys.readouterr().err
    assert not (tmp_path / "le").exists()
