"""The same weights on every Keras 3 backend: a PhysioNet-format file converted to ``.keras`` runs
under JAX and PyTorch without TensorFlow and gives the module's map; fine-tuning with
``model.fit`` gives the same result on TensorFlow, JAX and PyTorch.

Each backend runs in its own process (``tests/backend_worker.py``), as a user's script would.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from medfound.cli.main import main
from tests.bit_reference import bit_random_checkpoint

pytest.importorskip("tf_keras", reason="tf-keras (test extra) builds the PhysioNet fixture")
from tests.physionet_format import write_physionet_module  # noqa: E402

WORKER = Path(__file__).with_name("backend_worker.py")
NAME = "cxr-50x1-remedis-m"
OTHER_BACKENDS = ("jax", "torch")
TINY_UNITS, TINY_WIDTH = (1, 1, 1, 1), 0.5  # the 'tiny' architecture
MAP_TOLERANCE = 1e-4  # relative to the map's largest value; float32 reordering is ~1e-5


def run_worker(backend: str, *args, check: bool = True) -> dict:
    """Runs the worker under ``backend``; its one JSON line, or the failure with its stderr."""
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(WORKER.parents[1])}
    out = subprocess.run([sys.executable, str(WORKER), *map(str, args)], capture_output=True,
                         text=True, env=env, timeout=600)
    if check and out.returncode != 0:
        raise AssertionError(f"{backend} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def relative_error(got, want) -> float:
    return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A PhysioNet-format file (the fixture's structure at the tiny size, so the three backends
    run in seconds), its .keras conversion by the CLI, the folder form of that file, a BiT
    .npz, test images and the file's own output on them (TensorFlow)."""
    root = tmp_path_factory.mktemp("backends")
    npz = root / "tiny.npz"
    np.savez(npz, **bit_random_checkpoint(TINY_UNITS, TINY_WIDTH, seed=3))
    physionet = write_physionet_module(npz, root / "tiny-physionet", TINY_UNITS, TINY_WIDTH)
    keras_file = root / "k" / f"{NAME}.keras"
    assert main(["export", str(physionet), "--format", "keras", "--out", str(keras_file),
                 "--name", NAME, "--init", "bit-m", "--modality", "cxr",
                 "--allow-test-arch"]) == 0
    folder = root / "keras-folder"  # the folder form, as the Hugging Face layout holds it
    with zipfile.ZipFile(keras_file) as zf:
        zf.extractall(folder)
    images = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)).astype("float32")
    np.save(root / "images.npy", images)
    want = tf.saved_model.load(str(physionet))(images).numpy()
    return {"root": root, "npz": npz, "physionet": physionet, "keras": keras_file,
            "folder": folder, "images": root / "images.npy", "want": want}


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_converted_physionet_file_runs_without_tensorflow(converted, backend, tmp_path):
    """.keras file, its folder form, keras.saving.load_model after a plain ``import medfound``
    and a BiT .npz: the file's map on JAX / PyTorch, TensorFlow never imported."""
    from medfound.resolve import load

    npz_want = load(f"tiny:{converted['npz']}")(np.load(converted["images"]))["feature_map"]
    specs = [converted["keras"], converted["folder"], f"load_model:{converted['keras']}",
             f"tiny:{converted['npz']}"]
    report = run_worker(backend, "embed", converted["images"], tmp_path / "out", *specs)
    assert report["backend"] == backend and report["classes"] == ["BiTBackbone"] * 4
    assert report["tensorflow"] is False, "loading a converted file imported TensorFlow"
    for index, want in enumerate([converted["want"]] * 3 + [npz_want.numpy()]):
        got = np.load(tmp_path / f"out{index}.npz")["feature_map"]
        assert relative_error(got, want) < MAP_TOLERANCE, specs[index]


def test_savedmodel_on_another_backend_reads_through_tensorflow_or_says_how(converted, tmp_path):
    """With TensorFlow installed a SavedModel loads under JAX too (read through TensorFlow);
    without it, one message says to convert it, naming the folder."""
    run_worker("jax", "embed", converted["images"], tmp_path / "o", converted["physionet"])
    assert relative_error(np.load(tmp_path / "o0.npz")["feature_map"], converted["want"]) \
        < MAP_TOLERANCE
    refused = run_worker("jax", "embed", converted["images"], tmp_path / "r", "--no-tensorflow",
                         converted["physionet"])
    assert str(converted["physionet"]) in refused["error"]
    assert "--format keras" in refused["error"] and not (tmp_path / "r0.npz").exists()


def test_fit_gives_the_same_model_on_every_backend(converted, tmp_path):
    """Linear probe and full fine-tuning with model.fit: the same losses, probabilities and
    backbone weights on TensorFlow, JAX and PyTorch (to float32 rounding); the linear probe
    leaves the backbone as it was and full fine-tuning changes it."""
    results = {}
    for backend in ("tensorflow", *OTHER_BACKENDS):
        report = run_worker(backend, "fit", converted["keras"], tmp_path / f"{backend}-")
        assert report["trainable_backbone_weights_linear"] == 0
        assert report["trainable_backbone_weights_full"] > 0
        results[backend] = {mode: dict(np.load(tmp_path / f"{backend}-{mode}.npz"))
                            for mode in ("linear", "full")}
    for mode in ("linear", "full"):
        reference = results["tensorflow"][mode]
        assert reference["loss"][-1] < reference["loss"][0], f"{mode}: the loss did not fall"
        moved = np.abs(reference["backbone_after"] - reference["backbone_before"]).max()
        assert (moved > 1e-6) == (mode == "full"), f"backbone moved by {moved} in {mode} mode"
        for backend in OTHER_BACKENDS:
            for key in ("loss", "probabilities", "backbone_after"):
                np.testing.assert_allclose(results[backend][mode][key], reference[key],
                                           rtol=1e-4, atol=1e-5, err_msg=f"{backend} {mode} {key}")


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_a_0_255_batch_is_refused_on_every_backend(converted, backend):
    """The input contract holds for backend tensors too (not only NumPy arrays)."""
    report = run_worker(backend, "contract", converted["keras"])
    assert report["refused"] and "divide by 255" in report["refused"]
