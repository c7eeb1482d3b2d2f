"""`medfound embed --engine beam`: 2 DirectRunner workers give one process's rows, resumably.

The pipeline tests run Beam's DirectRunner in multi_processing mode (2 worker processes) over
real NIH chest X-rays plus bad files, with a tiny exported module, and compare row for row with
single-process `medfound embed`; they skip, saying why, where apache_beam is not installed.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medfound.beam.parts import pending_parts
from medfound.cli.main import main
from medfound.embed import (EmbedConfig, ModuleEmbedder, embed, hold_parts, list_inputs,
                            parts_manifest, read_embeddings, sidecar_paths)
from medfound.utils.files import sha256_file
from tests.tiny_runs import export_tiny_module

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
NUM_GOOD = 30
BATCH, PART = 2, 2  # 16 parts: enough for a kill to land between the first and the last
TWO_WORKERS = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]


@pytest.fixture(scope="module")
def beam():
    return pytest.importorskip(
        "apache_beam", reason="apache_beam is not installed (pip install 'medfound[beam]'); "
                              "the Beam engine is an extra")


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
    return export_tiny_module(tmp_path_factory.mktemp("beam_module"), "cxr-50x1-remedis-m",
                              seed=5, modality="cxr", init="bit-m", steps=1, image_size=SIZE,
                              data="unit-test images")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, shared_data):
    """Thirty real NIH radiographs (some RGBA) and two bad files among them."""
    folder = tmp_path_factory.mktemp("beam_images")
    for src in sorted((shared_data / "nih-cxr14-sample" / "images").glob("*.png"))[:NUM_GOOD]:
        shutil.copy(src, folder / src.name)
    (folder / "00000003_bad.png").write_text("patient notes, not pixels")
    (folder / "sub").mkdir()
    (folder / "sub" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(40))
    return folder


@pytest.fixture(scope="module")
def one_process(module_dir, image_folder, tmp_path_factory):
    """Single-process `medfound embed` on the same inputs: the answer Beam must give."""
    out = tmp_path_factory.mktemp("beam_reference") / "emb.npz"
    result = embed(EmbedConfig(module=str(module_dir), input=str(image_folder), out=str(out),
                               image_size=SIZE, batch_size=BATCH, part_size=PART, progress=False))
    assert len(result.failures) == 2
    return out


@pytest.fixture
def worker_path(monkeypatch):
    """Beam's worker processes import this checkout's medfound (they inherit the environment)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def command(module_dir, image_folder, out, *extra) -> list[str]:
    return ["embed", "--module", str(module_dir), "--input", str(image_folder), "--out",
            str(out), "--image-size", str(SIZE), "--batch-size", str(BATCH), "--part-size",
            str(PART), "--quiet", "--engine", "beam", *extra]


def assert_same_rows(out, reference):
    paths, rows = read_embeddings(out)
    ref_paths, ref_rows = read_embeddings(reference)
    assert paths == ref_paths and rows.shape == ref_rows.shape
    np.testing.assert_allclose(rows, ref_rows, rtol=1e-6, atol=1e-7)
    failures = sidecar_paths(out)[1].read_text()
    assert failures == sidecar_paths(reference)[1].read_text()
    assert "00000003_bad.png" in failures and "truncated.jpg" in failures


@pytest.fixture(scope="module")
def two_workers(beam, module_dir, image_folder, one_process, tmp_path_factory):
    out = tmp_path_factory.mktemp("beam_two") / "emb.npz"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(REPO_ROOT))
        assert main(command(module_dir, image_folder, out, *TWO_WORKERS)) == 0
    return out


def test_two_workers_give_the_rows_and_failures_of_one_process(two_workers, one_process):
    assert_same_rows(two_workers, one_process)
    parts_dir, _ = sidecar_paths(two_workers)
    assert not parts_dir.exists()  # merged, then its own files removed


def test_rerun_on_a_finished_output_changes_nothing(two_workers, module_dir, image_folder,
                                                    capsys):
    before = sha256_file(two_workers)
    assert main(command(module_dir, image_folder, two_workers, *TWO_WORKERS)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sha256_file(two_workers) == before and not sidecar_paths(two_workers)[0].exists()


def test_a_killed_pipeline_resumes_to_the_same_file(two_workers, module_dir, image_folder,
                                                    tmp_path, worker_path):
    out = tmp_path / "emb.npz"
    parts_dir, failures_file = sidecar_paths(out)
    run = subprocess.Popen(
        [sys.executable, "-m", "medfound", *command(module_dir, image_folder, out, *TWO_WORKERS)],
        cwd=REPO_ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and run.poll() is None:
            if parts_dir.is_dir() and len(list(parts_dir.glob("part-*.npz"))) >= 2:
                break
            time.sleep(0.05)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # the driver and the two Beam workers it started
        run.wait()
    written = sorted(p.name for p in parts_dir.glob("part-*.npz"))
    assert run.returncode == -signal.SIGKILL and not out.exists()
    assert 2 <= len(written) < 16, written  # killed part way
    from medfound.beam import embed_with_beam

    result = embed_with_beam(EmbedConfig(
        module=str(module_dir), input=str(image_folder), out=str(out), image_size=SIZE,
        batch_size=BATCH, part_size=PART, progress=False), TWO_WORKERS)
    assert result.complete and result.processed == 32 - PART * len(written)  # finished: skipped
    assert sha256_file(out) == sha256_file(two_workers)
    assert failures_file.read_bytes() == sidecar_paths(two_workers)[1].read_bytes()
    assert not parts_dir.exists()


def test_a_second_run_on_the_same_output_is_refused(beam, module_dir, image_folder, tmp_path,
                                                    capsys):
    out = tmp_path / "emb.npz"
    parts_dir, _ = sidecar_paths(out)
    embedder = ModuleEmbedder(module_dir)
    manifest = parts_manifest(list_inputs(image_folder), embedder, SIZE)
    with hold_parts(parts_dir, manifest, "embed --engine beam"):  # a first pipeline, running
        assert main(command(module_dir, image_folder, out)) == 2
        assert "is in use by another medfound embed --engine beam" in capsys.readouterr().err
        assert main(command(module_dir, image_folder, out)[:-2]) == 2  # one process too
        assert "is in use by another medfound" in capsys.readouterr().err
    assert not out.exists()


def test_in_process_runner_writes_parquet_through_the_same_writer(beam, module_dir,
                                                                  image_folder, one_process,
                                                                  tmp_path):
    out = tmp_path / "emb.parquet"
    assert main(command(module_dir, image_folder, out)) == 0  # Beam's default: DirectRunner
    assert_same_rows(out, one_process)


def test_beam_options_reach_only_the_beam_engine(module_dir, image_folder, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(command(module_dir, image_folder, tmp_path / "e.npz")[:-2] + TWO_WORKERS)
    assert "unrecognized arguments: --direct_num_workers" in capsys.readouterr().err


@pytest.mark.parametrize("names, total, size, expected", [
    ([], 5, 2, [(0, 2), (2, 4), (4, 5)]),
    ([(0, 2), (4, 6)], 7, 2, [(2, 4), (6, 7)]),  # workers finished out of order
    ([(0, 2), (0, 4), (2, 6)], 8, 4, [(6, 8)]),  # an earlier run cut otherwise: chained as merged
    ([(0, 4), (4, 8)], 8, 4, []),
])
def test_pending_parts_fill_exactly_the_gaps(tmp_path, names, total, size, expected):
    for start, end in names:
        (tmp_path / f"part-{start:09d}-{end:09d}.npz").write_bytes(b"")
    assert pending_parts(tmp_path, total, size) == expected


# ---- whole slides: one work item per slide ------------------------------------------------------

SLIDE_ARGS = ["--slides", "--mpp", "1.0", "--tile-size", "64", "--batch-size", "16",
              "--part-size", "32"]


@pytest.fixture(scope="module")
def slide_folder(shared_data, tmp_path_factory):
    """The two real Aperio slides (one level, pyramid) and a truncated copy of one."""
    folder = tmp_path_factory.mktemp("beam_slides")
    for slide in sorted((shared_data / "wsi").glob("*.svs")):
        (folder / slide.name).symlink_to(slide)
    data = (shared_data / "wsi" / "CMU-1-Small-Region.svs").read_bytes()
    (folder / "cut-short.svs").write_bytes(data[: len(data) // 3])
    return folder


def slide_command(module_dir, slide_folder, out, *extra) -> list[str]:
    return ["embed", "--module", str(module_dir), "--input", str(slide_folder), "--out",
            str(out), "--image-size", str(SIZE), "--quiet", *SLIDE_ARGS, *extra]


def test_slides_on_two_workers_give_the_files_of_one_process(beam, module_dir, slide_folder,
                                                             tmp_path, worker_path, capsys):
    from medfound.pretrain.runfolder import locked
    from medfound.slides.embed import read_slide_features

    one, two = tmp_path / "one", tmp_path / "two"
    assert main(slide_command(module_dir, slide_folder, one)) == 0
    assert main(slide_command(module_dir, slide_folder, two, "--engine", "beam",
                              *TWO_WORKERS)) == 0
    names = sorted(p.name for p in one.iterdir() if not p.name.startswith("."))
    assert names == sorted(p.name for p in two.iterdir() if not p.name.startswith("."))
    assert [n for n in names if n.endswith(".h5")] == ["CMU-1-Small-Region-pyramid.h5",
                                                        "CMU-1-Small-Region.h5"]
    for name in names:
        if name.endswith(".h5"):
            a, b = read_slide_features(one / name), read_slide_features(two / name)
            assert a["attrs"] == b["attrs"] and a["coords"].shape[0] > 50
            np.testing.assert_array_equal(a["coords"], b["coords"])
            np.testing.assert_allclose(a["features"], b["features"], rtol=1e-6, atol=1e-7)
        else:  # failures.csv and the tissue overlays
            assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert "cut-short.svs" in (two / "failures.csv").read_text()
    finished = {p.name: (sha256_file(p), p.stat().st_mtime_ns) for p in two.glob("*.h5")}
    assert main(slide_command(module_dir, slide_folder, two, "--engine", "beam")) == 0
    assert {p.name: (sha256_file(p), p.stat().st_mtime_ns)
            for p in two.glob("*.h5")} == finished  # skipped, not rewritten
    with locked(two, "embed --slides"):  # a local `embed --slides` (or a pipeline) running
        assert main(slide_command(module_dir, slide_folder, two, "--engine", "beam")) == 2
    assert "is in use by another medfound embed --slides" in capsys.readouterr().err
