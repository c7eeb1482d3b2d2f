"""DICOM header fields never reach outputs: embeddings, run records, logs, TensorBoard, console.

Real DICOM files carrying patient identifiers (name, id, birth date, accession number, ...) are
embedded with `medfound embed` (npz, h5, parquet) and used for a tiny pretraining run; every byte
those commands write - output files, sidecars, checkpoints, TensorBoard events, stdout, stderr and
log records - is searched for the header values. The file paths the user passed may appear.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest

from medfound.cli.main import main
from medfound.export.exporter import export_module
from medfound.pretrain import PretrainConfig, pretrain
from tests import dicom_files
from tests.tiny_runs import write_tiny_run

pydicom = pytest.importorskip("pydicom", reason="pydicom (the dicom extra) is not installed")

# Values no medfound output has any reason to contain.
IDENTIFIERS = {
    "PatientName": "Quixotewright^Zebulon^Marmaduke",
    "PatientID": "MRN-7731-QXZ",
    "PatientBirthDate": "19380517",
    "OtherPatientIDs": "ALT-55120-KWP",
    "AccessionNumber": "ACC90210771",
    "InstitutionName": "Saint Ygritte Lowmoor Infirmary",
    "ReferringPhysicianName": "Pemberton-Voss^Octavia",
    "StudyDescription": "CHEST PA Vanterpool protocol",
    "StudyID": "STUDY-88412",
}
RNG = np.random.default_rng(7)


def write_dicom(path: Path, pixels: np.ndarray | None) -> Path:
    """A real DICOM file (16-bit MONOCHROME2) with the identifiers above in its header."""
    return dicom_files.write_dicom(path, pixels, modality="DX", **IDENTIFIERS)


@pytest.fixture(scope="module")
def dicom_folder(tmp_path_factory) -> Path:
    """Six readable DICOM files and one without pixel data, all with patient identifiers."""
    folder = tmp_path_factory.mktemp("dicoms")
    for i in range(6):
        write_dicom(folder / f"image{i}.dcm", RNG.integers(0, 4096, (40, 36)))
    write_dicom(folder / "no_pixels.dcm", None)
    raw = (folder / "image0.dcm").read_bytes()
    assert all(value.encode() in raw for value in IDENTIFIERS.values())  # the search can hit
    return folder


@pytest.fixture(scope="module")
def keras_module(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("module")
    write_tiny_run(root / "run", seed=1, modality="cxr", init="bit-m", steps=1, image_size=32,
                   data="unit-test images")
    return export_module(root / "run", root, name="cxr-50x1-remedis-m", fmt="keras",
                         allow_test_arch=True)


def _views(path: Path) -> list[bytes]:
    """The file's bytes plus what its format hides from a byte search: decompressed zip (npz)
    members, and the values of npz, HDF5 and Parquet arrays as text."""
    data = path.read_bytes()
    views = [data]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            views += [archive.read(name) for name in archive.namelist()]
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            views += [str(arrays[key].tolist()).encode() for key in arrays.files]
    elif path.suffix == ".h5":
        import h5py

        with h5py.File(path, "r") as f:
            f.visititems(lambda name, item: views.append(
                f"{name} {dict(item.attrs)} {item[()] if isinstance(item, h5py.Dataset) else ''}"
                .encode()))
            views.append(str(dict(f.attrs)).encode())
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        views.append(f"{table.to_pydict()} {table.schema.metadata}".encode())
    return views


def _find(blobs: dict[str, list[bytes]], token: str) -> list[str]:
    """Where ``token`` occurs, in any case, as UTF-8, UTF-16 or UTF-32 (numpy's str arrays)."""
    needles = [token.lower().encode(codec) for codec in ("utf-8", "utf-16-le", "utf-32-le")]
    return [where for where, views in blobs.items()
            if any(needle in view.lower() for view in views for needle in needles)]


def _leaks(blobs: dict[str, list[bytes]]) -> list[str]:
    """'where: field (value)' for every header value found."""
    return [f"{where}: {field} ({token})" for field, value in IDENTIFIERS.items()
            for token in {value, *value.split("^")} for where in _find(blobs, token)]


def _written(folder: Path) -> dict[str, list[bytes]]:
    blobs = {str(p): _views(p) for p in folder.rglob("*") if p.is_file()}
    assert blobs, f"nothing written under {folder}"
    return blobs


@pytest.mark.parametrize("suffix", [".npz", ".h5", ".parquet"])
def test_embeddings_hold_paths_and_numbers_only(dicom_folder, keras_module, tmp_path, suffix,
                                                capfd, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "out" / f"emb{suffix}"
    assert main(["embed", "--module", str(keras_module), "--input", str(dicom_folder), "--out",
                 str(out), "--image-size", "32", "--part-size", "4", "--quiet"]) == 0
    console = capfd.readouterr()
    assert "1 image(s) failed" in console.out and out.exists()
    written = _written(tmp_path / "out")
    # The paths the user passed appear (and show that the search reads every format).
    assert str(out) in _find(written, str(dicom_folder / "image3.dcm"))
    assert _find(written, str(dicom_folder / "no_pixels.dcm"))  # the failures list
    assert _leaks({**written, "stdout": [console.out.encode()], "stderr": [console.err.encode()],
                   "log": [caplog.text.encode()]}) == []


def test_pretraining_run_folder_and_console_hold_no_identifiers(dicom_folder, tmp_path, capfd,
                                                                caplog):
    caplog.set_level(logging.INFO)
    run_dir = tmp_path / "run"
    result = pretrain(PretrainConfig(
        data=str(dicom_folder), out_dir=str(run_dir), arch="tiny", image_size=32, batch_size=4,
        steps=1, checkpoint_every=1, log_every=1, preview_images=2, skip_bad_images=True,
        seed=0), verbose=True)
    console = capfd.readouterr()
    assert result.steps == 1
    written = _written(run_dir)
    assert any("events.out.tfevents" in name for name in written)  # TensorBoard was written
    assert str(run_dir / "run.json") in _find(written, "7 images (7 DCM)")
    assert str(run_dir / "config.json") in _find(written, str(dicom_folder))
    assert _leaks({**written, "stdout": [console.out.encode()], "stderr": [console.err.encode()],
                   "log": [caplog.text.encode()]}) == []
