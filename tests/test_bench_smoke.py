"""The benchmark scripts run end to end at their tiniest settings and write their ratio fields.

No timing is asserted (the machine is shared); only that each script measures its candidates
against its baseline and records the ratios, machine and command in its JSON.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not an installed package
from bench import inference, input_pipeline, pretrain_step  # noqa: E402

FAST = ["--repeats", "1", "--warmup", "0"]


def finite_positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def load(path):
    data = json.loads(path.read_text())
    assert {"cpu", "cores", "tensorflow", "keras", "date"} <= set(data["machine"])
    assert data["command"].startswith("python bench/") and data["baseline"]
    return data


def test_inference_writes_ratios_against_resnet50v2(tmp_path):
    out = tmp_path / "inference.json"
    inference.main(["--configs", "tiny:32:1", "--peak-size", "256", "--json", str(out), *FAST])
    data = load(out)
    assert finite_positive(data["matmul_peak_gflops"])
    (row,) = data["rows"]
    assert (row["arch"], row["size"], row["batch"]) == ("tiny", 32, 1)
    for key in ("module_vs_baseline", "native_folded_vs_baseline", "native_unfolded_vs_baseline",
                "folding_speedup", "module_peak_fraction", "baseline_resnet50v2_peak_fraction"):
        assert finite_positive(row[key]), key
    # FLOPs come from the graphs: ResNet50V2 at 32 px costs more than the tiny BiT.
    assert row["gflop_per_image_baseline"] > row["gflop_per_image_bit"] > 0


def test_pretrain_step_writes_simclr_vs_supervised(tmp_path):
    out = tmp_path / "pretrain_step.json"
    pretrain_step.main(["--configs", "tiny:32:2", "--optimizer", "sgd", "--json", str(out),
                        *FAST])
    (row,) = load(out)["rows"]
    assert finite_positive(row["simclr_vs_supervised"]) and row["goal"] == 0.45
    assert row["meets_goal"] == (row["simclr_vs_supervised"] >= 0.45)
    assert row["simclr_views_s"] == pytest.approx(2 * row["simclr_img_s"])


def test_input_pipeline_writes_bound_on_real_images(tmp_path, shared_data):
    out = tmp_path / "input_pipeline.json"
    input_pipeline.main(["--data", str(shared_data), "--presets", "cxr", "--cxr-size", "32",
                         "--batch", "2", "--batches-per-rep", "1", "--step-arch", "tiny",
                         "--step-batch", "2", "--json", str(out), *FAST])
    (row,) = load(out)["rows"]
    assert (row["preset"], row["size"]) == ("cxr", 32)
    for key in ("views_s_one_thread", "views_s_all_cores", "all_cores_vs_one_thread",
                "pipeline_fed_vs_cached", "pipeline_capacity_vs_model"):
        assert finite_positive(row[key]), key
    assert row["bound"] in ("model", "pipeline")
