"""The benchmark scripts run end to end at their tiniest settings and write their ratio fields.

No timing is asserted (the machine is shared); only that each script measures its candidates
against its baseline and records the ratios, machine and command in its JSON.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not an installed package
from bench import (fused, inference, input_pipeline, label_efficiency_pneumonia,  # noqa: E402
                   memory, methods_pneumonia, pretrain_step, scaling)

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
                "native_folded_xla_vs_baseline", "folding_speedup", "module_peak_fraction", "baseline_resnet50v2_peak_fraction"):
        assert finite_positive(row[key]), key
    # FLOPs come from the graphs: ResNet50V2 at 32 px costs more than the tiny BiT.
    assert row["gflop_per_image_baseline"] > row["gflop_per_image_bit"] > 0


def test_fused_writes_per_flop_ratios_and_the_xla_training_step(tmp_path):
    # Its own process, as it is run: it pins TensorFlow's threads before TensorFlow starts,
    # which a test process that already ran TensorFlow cannot do.
    out = tmp_path / "fused.json"
    root = Path(fused.__file__).resolve().parents[1]
    subprocess.run([sys.executable, str(root / "bench" / "fused.py"), "--tiny", "--kinds",
                    "resnet50v2,module_xla,native_xla_one_pass", "--json", str(out), *FAST],
                   cwd=root, check=True, env={**os.environ, "PYTHONPATH": str(root)})
    data = load(out)
    (row,), (train,) = data["rows"], data["train_rows"]
    assert (row["arch"], row["size"], row["batch"]) == ("tiny", 32, 2)
    for key in ("module_xla_vs_resnet50v2", "module_xla_per_flop_vs_resnet50v2",
                "native_xla_one_pass_per_flop_vs_resnet50v2", "train_xla_vs_train"):
        assert finite_positive(row.get(key, train.get(key))), key
    # per FLOP = speed ratio x BiT FLOPs / ResNet50V2 FLOPs, both counted from the graphs
    assert row["module_xla_per_flop_vs_resnet50v2"] == pytest.approx(
        row["module_xla_vs_resnet50v2"] * row["gflop_per_image_bit"]
        / row["gflop_per_image_resnet50v2"])
    assert row["threads"]["tf_intra_op_threads"] == data["threads"]
    assert len(row["loadavg_before"]) == 3 and isinstance(row["under_load"], bool)


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


def test_scaling_writes_time_per_image_ratios_and_plot(tmp_path):
    out, png = tmp_path / "scaling.json", tmp_path / "scaling.png"
    scaling.main(["--tiny", "--sizes", "32,64", "--batches", "1", "--json", str(out),
                  "--plot", str(png), *FAST])
    data = load(out)
    assert [(r["size"], r["batch"]) for r in data["rows"]] == [(32, 1), (64, 1)]
    for row in data["rows"]:
        for key in ("module_ms_per_image", "baseline_resnet50v2_ms_per_image",
                    "module_vs_baseline", "module_vs_smallest", "module_ms_per_mpixel"):
            assert finite_positive(row[key]), key
    first, second = data["rows"]
    assert first["module_vs_smallest"] == 1.0  # the reference row is the smallest size
    assert second["module_vs_smallest"] == pytest.approx(
        second["module_ms_per_image"] / first["module_ms_per_image"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_memory_measures_each_case_in_a_fresh_process(tmp_path):
    out = tmp_path / "memory.json"
    memory.main(["--tiny", "--export-archs", "", "--step-archs", "", "--jobs", "3",
                 "--json", str(out)])
    data = load(out)
    base, *embeds = data["rows"]
    assert base["kind"] == "baseline" and base["above_baseline_mb"] == 0.0
    assert [r["images"] for r in embeds] == [8, 24]
    for row in data["rows"]:
        assert row["status"] == "ok", row["status"]
        assert finite_positive(row["peak_mb"]) and row["peak_mb"] == pytest.approx(
            row["vmhwm_kb"] / 1024)
    for row in embeds:
        # A child that loads a model and embeds images needs more than bare imports.
        assert row["embedded"] == row["images"] and finite_positive(row["above_baseline_mb"])
    check = data["embed_bounded"]
    assert check["images"] == [8, 24] and isinstance(check["bounded"], bool)
    assert check["growth_mb"] == pytest.approx(embeds[1]["peak_mb"] - embeds[0]["peak_mb"])


def test_label_efficiency_pneumonia_compares_pretrained_with_random_init(tmp_path, shared_data):
    out = tmp_path / "le"
    label_efficiency_pneumonia.main(["--tiny", "--data", str(shared_data / "pneumoniamnist.npz"),
                                     "--modes", "linear", "--fractions", "1",
                                     "--out", str(out)])
    data = load(out / "label_efficiency.json")
    assert data["pretrain"]["losses"] and all(math.isfinite(v) for v in data["pretrain"]["losses"])
    rows = {(r["init"], r["mode"], r["fraction"]): r for r in data["rows"]}
    assert set(rows) == {("pretrained", "linear", 1.0), ("random", "linear", 1.0)}
    for row in rows.values():
        # Pneumonia shows even to a random tiny network: both probes are above chance (the tiny
        # run measured 0.65 for each; labels unrelated to the images would give about 0.5).
        assert row["test_auc_mean"] > 0.55 and row["n"] == 1, row
    assert data["targets"]["linear"] == rows[("random", "linear", 1.0)]["test_auc_mean"]
    need = data["fraction_to_match"]["linear"]
    reached = rows[("pretrained", "linear", 1.0)]["test_auc_mean"] >= data["targets"]["linear"]
    assert need == (1.0 if reached else None)
    assert (out / "label_efficiency_pneumonia.png").read_bytes()[:4] == b"\x89PNG"


def test_methods_pneumonia_puts_each_method_beside_random_init(tmp_path, shared_data):
    out = tmp_path / "methods"
    argv = ["--methods", "barlow,moco", "--moco-queue-size", "16", "--out", str(out), "--tiny",
            "--data", str(shared_data / "pneumoniamnist.npz"), "--fractions", "1"]
    data = methods_pneumonia.main(argv)
    assert [(r["method"], r["fraction"]) for r in data["rows"]] == [
        ("barlow", 1.0), ("moco", 1.0), ("random init", 1.0)]
    assert set(data["fraction_to_match"]) == {"barlow", "moco"}
    assert load(out / "methods_pneumonia.json")["rows"] == data["rows"]
    for method in ("barlow", "moco"):  # each run is the per-method benchmark's own
        run = load(out / method / "label_efficiency.json")
        assert f"--method {method}" in run["command"]
        assert run["rows"][0]["test_auc_mean"] == data["rows"][["barlow", "moco"].index(method)][
            "test_auc_mean"]
    assert "--moco-queue-size 16" in load(out / "moco" / "label_efficiency.json")["command"]
    assert (out / "methods_pneumonia.png").read_bytes()[:4] == b"\x89PNG"
    again = methods_pneumonia.main(argv)  # finished runs are reused, not run again
    assert again["rows"] == data["rows"]


def test_physionet_parity_compares_medfound_with_the_fixture_file(tmp_path):
    pytest.importorskip("tf_keras", reason="tf-keras (test extra) builds the PhysioNet fixture")
    from bench import physionet_parity

    out = tmp_path / "parity.json"
    physionet_parity.main(["--tiny", "--json", str(out), *FAST])
    (row,) = load(out)["rows"]
    assert (row["arch"], row["size"], row["shape"]) == ("tiny", 32, [1, 1, 1, 1024])
    assert row["rel_error"] < 1e-3 and finite_positive(row["speed_vs_fixture"])


def test_slide_embed_writes_slide_vs_cached_ratio(tmp_path, shared_data):
    pytest.importorskip("tifffile", reason="tifffile (test extra) writes the benchmark slide")
    from bench import slide_embed

    out = tmp_path / "slide_embed.json"
    slide_embed.main(["--tiny", "--slide-side", "1024", "--data", str(shared_data),
                      "--json", str(out), *FAST])
    data = load(out)
    (row,) = data["rows"]
    assert row["tiles"] > 0 and row["level"] == 1  # 0.5 um/px tiles from the 0.25 um/px slide
    for key in ("slide_tiles_per_s", "cached_images_per_s", "reader_tiles_per_s",
                "slide_vs_cached", "reader_vs_cached", "setup_seconds"):
        assert finite_positive(row[key]), key


def test_alternatives_writes_onnx_vs_savedmodel_ratio_and_parity(tmp_path):
    from bench import alternatives

    out = tmp_path / "alternatives.json"
    alternatives.main(["--arch", "tiny", "--configs", "32:1", "--kinds", "module,onnx",
                       "--threads", "1", "--max-load", "1000", "--profile",
                       "--json", str(out), *FAST])
    data = load(out)
    (row,) = data["rows"]
    assert finite_positive(row["onnx_vs_module"])
    assert row["onnx_vs_module_max_rel_error"] < 1e-4
    assert data["onnxruntime"] and "ORT_ENABLE_ALL" in data["ort_session_options"]
    # Every worker pinned the requested threads, read back from its runtime (ORT: the session).
    assert row["threads"]["onnx"] == {"tf_intra_op_threads": 1, "ort_intra_op_threads": 1,
                                      "ort_timed_session_profiling": False}
    assert row["threads"]["module"] == {"tf_intra_op_threads": 1}
    assert row["under_load"] is False and row["attempts"] == 1 and len(row["loadavg_before"]) == 3
    # ONNX Runtime profiled one call of a separate session: its kernels, the convolutions first.
    assert "Conv" in row["profiles"]["onnx"]["profile"]


def test_embed_speed_writes_files_vs_cached_ratio(tmp_path, shared_data):
    from bench import embed_speed

    out = tmp_path / "embed_speed.json"
    embed_speed.main(["--tiny", "--data", str(shared_data), "--json", str(out), *FAST])
    (row,) = load(out)["rows"]
    assert row["preset"] == "path" and row["images"] == 8
    for key in ("embed_vs_cached", "pipeline_vs_cached", "embed_img_s", "cached_img_s"):
        assert finite_positive(row[key]), key


def test_tissue_detect_writes_fast_vs_reference_and_mask_agreement(tmp_path, shared_data):
    pytest.importorskip("tifffile", reason="tifffile (test extra) writes the benchmark slide")
    from bench import tissue_detect

    out = tmp_path / "tissue_detect.json"
    tissue_detect.main(["--tiny", "--data", str(shared_data), "--json", str(out), *FAST])
    (row,) = load(out)["rows"]
    assert row["level_pixels"] == 512 * 512 and 0.5 < row["tissue_fraction"] < 1
    assert finite_positive(row["speedup"]) and row["same_thresholds"]
    assert row["differing_pixels"] == 0  # the fast detector gives the reference's mask


def test_tissue_agreement_reports_masks_equal_to_the_reference_on_the_real_slides(tmp_path,
                                                                                 shared_data):
    if not (shared_data / "wsi" / "CMU-1-Small-Region.svs").is_file():
        pytest.skip(f"real whole-slide images not found in {shared_data / 'wsi'}")
    from bench import tissue_agreement

    out = tmp_path / "tissue_agreement.json"
    tissue_agreement.main(["--data", str(shared_data), "--slide-side", "0", "--json", str(out)])
    data = load(out)
    # One level of the single-level slide, its black-grid crop, four levels of the pyramid.
    assert len(data["rows"]) == 6 and data["all_identical"], data["rows"]
    assert data["rows"][0]["pixels"] == 2220 * 2967
