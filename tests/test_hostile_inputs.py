"""Issue 25, class 10: inputs that once ended in a traceback or a misleading line are one line,
exit 2, naming the file and the problem; nothing of the user's changes."""
from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from tests.test_hostile_cli import Case, assert_refused
from tests.tiny_runs import export_tiny_module


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    export_tiny_module(root, "module", modality="cxr", init="bit-s")
    (root / "images").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "images" / "0.png")
    config = {"module": "os", "class_name": "system", "registered_name": "system",
              "config": {"command": f"touch {root}/PLANTED"}}
    with zipfile.ZipFile(root / "evil.keras", "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.0"}))
        zf.writestr("model.weights.h5", b"")
    (root / "garbage.keras").write_bytes(b"not a zip at all")
    (root / "cut.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with h5py.File(root / "foreign.weights.h5", "w") as f:
        f.create_dataset("spreadsheet", data=np.arange(10))
    rng = np.random.default_rng(0)
    np.savez(root / "oneclass.npz", **{f"{s}_{k}": v for s in ("train", "val", "test") for k, v in (
        ("images", rng.integers(0, 256, (8, 28, 28), dtype=np.uint8)),
        ("labels", np.array([[0], [1]] * 4) if s == "train" else np.zeros((8, 1), int)))})
    return root


EMBED = "embed --input {w}/images --out {w}/e.npz --image-size 32 --module"
CASES = {
    "keras-naming-os-system": Case(f"{EMBED} {{w}}/evil.keras",
                                   ["{w}/evil.keras: not a loadable .keras model",
                                    "Could not locate class 'system'"]),
    "evaluate-keras-naming-os-system": Case("evaluate --model {w}/evil.keras --task medmnist "
                                            "--data {w}/oneclass.npz --out {w}/ev",
                                            ["{w}/evil.keras: not a loadable .keras model"]),
    "garbage-keras-is-not-file-not-found": Case(f"{EMBED} {{w}}/garbage.keras",
                                                ["{w}/garbage.keras: not a readable .keras file"]),
    "spec-of-5000-characters": Case(f"{EMBED} {'x' * 5000}",
                                    ["(5000 characters): file name too long"]),
    "truncated-weights-h5": Case(f"{EMBED} tiny:{{w}}/cut.weights.h5",
                                 ["{w}/cut.weights.h5: does not fit a tiny backbone"]),
    "foreign-weights-h5": Case(f"{EMBED} tiny:{{w}}/foreign.weights.h5",
                               ["{w}/foreign.weights.h5: does not fit a tiny backbone"]),
    "architecture-mismatch-says-who-said-what": Case(
        f"{EMBED} small:{{w}}/module",
        ["you gave architecture 'small' but the file records 'tiny'"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_input_is_one_line_naming_the_file(world, name, capsys):
    assert_refused(world, CASES[name], capsys)
    assert not (world / "PLANTED").exists()


def test_label_efficiency_with_every_auc_undefined_says_so(world, capsys, tmp_path):
    """The test split has one class: every AUC is undefined; once 'Data cannot be log-scaled'."""
    out = tmp_path / "le"
    assert_refused(world, Case(f"label-efficiency --modules random:tiny --task medmnist --data "
                               f"{{w}}/oneclass.npz --out {out} --epochs 1 --fractions 0.5 "
                               "--seeds 0 --quiet",
                               ["{w}/oneclass.npz: every run's test AUC is undefined"]), capsys)


def test_zarr_futures_left_unretrieved_after_a_bad_tile_are_not_logged(caplog):
    """The one place tiles are read installs a filter for asyncio's 'never retrieved' reports
    (zarr's concurrent tile decodes); asyncio's other errors still show."""
    from medfound.slides.reader import _quiet_zarr_futures

    _quiet_zarr_futures()
    _quiet_zarr_futures()  # once only
    logger = logging.getLogger("asyncio")
    assert sum(type(f).__name__ == "_UnretrievedFutureFilter" for f in logger.filters) == 1
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        logger.error("Future exception was never retrieved\nfuture: <Future finished>")
        logger.error("Task exception was never retrieved")
        logger.error("Unclosed event loop")
    assert [r.getMessage() for r in caplog.records] == ["Unclosed event loop"]
