"""REMEDIS weights in timm and in the tools encoders are benchmarked with.

A PhysioNet-format r50x1 file goes through ``medfound export --format timm``; timm's own
``resnetv2_50x1_bit`` loads the folder (``local-dir:``), its transforms built from the folder's
``pretrained_cfg`` prepare the images, and the raw block4 map equals the file's map. TRIDENT's
custom patch-encoder recipe and kaiko-ai eva's timm wrapper store the embedding medfound computes.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from medfound.cli.main import main
from medfound.export.timm_export import EMBEDDING_LINE
from tests.bit_reference import bit_random_checkpoint

pytest.importorskip("tf_keras", reason="tf-keras (test extra) builds the PhysioNet fixture")
for _extra in ("torch", "timm"):
    if importlib.util.find_spec(_extra) is None:
        pytest.skip(f"{_extra} (an extra CI installs) is not installed", allow_module_level=True)
from tests.physionet_format import BLOCK_UNITS, write_physionet_module  # noqa: E402

WORKER = Path(__file__).with_name("torch_worker.py")

TOLERANCE = 1e-4  # relative to the largest value, as the issue asks; measured ~1e-5


def relative_error(got, want) -> float:
    return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


def run_torch(job: str, folder: Path, images: np.ndarray, tmp_path: Path) -> dict:
    """The PyTorch side, in its own process (no TensorFlow there, as for a PyTorch user)."""
    np.save(tmp_path / "images.npy", images)
    out = subprocess.run([sys.executable, str(WORKER), job, str(folder),
                          str(tmp_path / "images.npy"), str(tmp_path / f"{job}.npz")],
                         capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PYTHONPATH": str(WORKER.parents[1])})
    assert out.returncode == 0, f"{job} worker failed:\n{out.stderr[-3000:]}"
    if job != "eva":  # eva itself imports TensorFlow (through its tensorboard logging)
        assert json.loads(out.stdout.strip().splitlines()[-1])["tensorflow"] is False
    return dict(np.load(tmp_path / f"{job}.npz"))


def uint8_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def module_map(module: Path, images: np.ndarray) -> np.ndarray:
    """The file's own output (TensorFlow) on uint8 images / 255."""
    return tf.saved_model.load(str(module))(images.astype(np.float32) / 255).numpy()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The PhysioNet-format r50x1 file as a chest X-ray and as a pathology module, each
    converted to a timm folder by the CLI."""
    root = tmp_path_factory.mktemp("timm")
    npz = root / "BiT-M-R50x1.npz"
    np.savez(npz, **bit_random_checkpoint(BLOCK_UNITS["r50x1"], 1, seed=7))
    cxr = write_physionet_module(npz, root / "cxr-50x1-remedis-m", BLOCK_UNITS["r50x1"], 1)
    path = root / "path-50x1-remedis-m"  # the same weights under a pathology module's name
    shutil.copytree(cxr, path)
    out = {}
    for module in (cxr, path):
        target = root / "timm" / module.name
        assert main(["export", str(module), "--format", "timm", "--out", str(target)]) == 0
        out[module.name] = (module, target)
    return out


def test_timm_loads_the_folder_and_gives_the_module_map(files, tmp_path):
    """Raw block4 (forward_intermediates, norm=False) on images through the folder's own
    transforms equals the file's map within 1e-4; after the card's one line, model(x) is the
    REMEDIS embedding; the config carries the input contract."""
    module, folder = files["cxr-50x1-remedis-m"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnetv2_50x1_bit" and config["num_classes"] == 0
    assert config["pretrained_cfg"]["input_size"] == [3, 448, 448]
    assert config["pretrained_cfg"]["mean"] == config["pretrained_cfg"]["std"] == [0.5] * 3
    assert config["input_contract"]["value_range"] == [0.0, 1.0]
    assert EMBEDDING_LINE in (folder / "README.md").read_text()
    images = uint8_images(2, 448)
    want = module_map(module, images)
    got = run_torch("timm", folder, images, tmp_path)
    assert relative_error(got["block4"], want) < TOLERANCE
    assert relative_error(got["embedding"], want.mean(axis=(1, 2))) < TOLERANCE


def test_medfound_reads_its_timm_folder_back(files, capsys):
    """medfound.load of the timm folder: the same map, the module's metadata kept; medfound info
    prints it with the input contract."""
    from medfound.resolve import load

    _, path_folder = files["path-50x1-remedis-m"]
    assert main(["info", str(path_folder)]) == 0
    printed = capsys.readouterr().out
    assert "name: path-50x1-remedis-m" in printed and "224x224 px at 0.5 um/px" in printed
    module, folder = files["cxr-50x1-remedis-m"]
    images = uint8_images(1, 64, seed=1)
    backbone = load(folder)
    assert backbone.source.format == "timm" and backbone.source.name == "cxr-50x1-remedis-m"
    got = backbone(images.astype(np.float32) / 255)["feature_map"].numpy()
    assert relative_error(got, module_map(module, images)) < TOLERANCE


def test_trident_custom_encoder_recipe_stores_the_medfound_embedding(files, tmp_path):
    """TRIDENT's custom patch-encoder recipe on 224-pixel tiles stores medfound's embedding;
    the pathology folder says which tiles it expects (224 px at 0.5 um/px)."""
    from medfound.resolve import load

    module, folder = files["path-50x1-remedis-m"]
    contract = json.loads((folder / "config.json").read_text())["input_contract"]
    assert (contract["tile_size"], contract["mpp"]) == (224, 0.5)
    tiles = uint8_images(3, 224, seed=2)
    stored = run_torch("trident", folder, tiles, tmp_path)["embedding"]
    want = load(module)(tiles.astype(np.float32) / 255)["embedding"].numpy()
    assert relative_error(stored, want) < TOLERANCE


def test_eva_timm_wrapper_stores_the_medfound_embedding(files, tmp_path):
    """kaiko-ai eva's TimmModel wrapper on the folder gives medfound's embedding."""
    if importlib.util.find_spec("eva") is None:
        pytest.skip("kaiko-eva (the tools extra, which CI installs) is not installed")
    module, folder = files["path-50x1-remedis-m"]
    tiles = uint8_images(2, 224, seed=3)
    got = run_torch("eva", folder, tiles, tmp_path)["embedding"]
    assert relative_error(got, module_map(module, tiles).mean(axis=(1, 2))) < TOLERANCE


def test_a_size_timm_lacks_is_refused_in_one_line(tmp_path, capsys):
    """The tiny test architecture has no timm model: one line, nothing written."""
    npz = tmp_path / "tiny.npz"
    np.savez(npz, **bit_random_checkpoint((1, 1, 1, 1), 0.5, seed=1))
    code = main(["export", f"tiny:{npz}", "--format", "timm", "--name", "tiny-timm", "--init",
                 "bit-m", "--modality", "cxr", "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "timm has no architecture for tiny" in err and "\n" not in err
    assert not (tmp_path / "t").exists()


def test_huggingface_layout_offers_the_timm_folder(files, tmp_path):
    """publish --layout huggingface writes <name>-timm/ beside the Keras folder; verify checks and
    probes it; timm loads it as it would from hf-hub:OWNER/NAME-timm after an upload."""
    from tests.test_publish import make_release

    module, _ = files["cxr-50x1-remedis-m"]
    release = tmp_path / "release"
    make_release([(module.name, module)], release)
    assert main(["publish", str(release), "--layout", "huggingface"]) == 0
    layout = release / "huggingface"
    manifest = json.loads((layout / "manifest.json").read_text())
    unit = layout / manifest["modules"][module.name]["timm_folder"]
    assert unit.name == f"{module.name}-timm" and (unit / "model.safetensors").is_file()
    assert main(["verify", str(layout)]) == 0
    images = uint8_images(1, 448, seed=4)
    got = run_torch("timm", unit, images, tmp_path)
    assert relative_error(got["block4"], module_map(module, images)) < TOLERANCE
    weights = unit / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the weights
    weights.write_bytes(bytes(data))
    assert main(["verify", str(layout)]) == 1  # verification failed (2: unreadable input)
