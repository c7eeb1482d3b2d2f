"""PatchCamelyon from its original HDF5 files, streamed in chunks, and Camelyon-style patch folders.

The release holds ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`` (x: uint8
(N, 96, 96, 3) under key 'x'; y: uint8 (N, 1, 1, 1) under key 'y') and optionally
``..._meta.csv`` with the whole-slide image ('wsi') of each patch, used as the patient id.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from medfound.data.labeled.base import DatasetFormatError, LabeledDataset, npstr, read_csv_table
from medfound.data.labeled.splits import checked_splits

PCAM_SPLITS = {"train": "train", "val": "valid", "valid": "valid", "test": "test"}
FILE_PATTERN = "camelyonpatch_level_2_split_{split}_{part}"
CAMELYON_PATIENT_REGEX = r"(patient_\d+)"  # Camelyon17 patch names: patient_004_node_4_x_..._y_...


class H5Source:
    """One HDF5 dataset as an ArraySource: rows are read in chunks, never the whole array."""

    def __init__(self, path: str | os.PathLike, key: str):
        import h5py

        self.path, self.key = str(path), key
        self._lock = threading.Lock()
        self._file = None
        try:
            with h5py.File(self.path, "r") as f:
                if key not in f:
                    raise DatasetFormatError(f"{self.path}: no dataset {key!r} (found {list(f.keys())})")
                self.shape, self.dtype = tuple(f[key].shape), f[key].dtype
        except OSError as exc:
            raise DatasetFormatError(f"{self.path}: not a readable HDF5 file ({exc})") from None
        from medfound.utils.limits import check_expansion

        try:  # h5 chunks may be compressed: the declared size is bounded by the file's
            check_expansion(self.path, int(np.prod(self.shape)) * self.dtype.itemsize,
                            what="HDF5 dataset")
        except ValueError as exc:
            raise DatasetFormatError(str(exc)) from None

    def __len__(self) -> int:
        return int(self.shape[0])

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows (increasing) of the dataset; a contiguous run is read as one slice."""
        import h5py

        rows = np.asarray(rows, dtype=np.int64)
        with self._lock:
            if self._file is None:
                self._file = h5py.File(self.path, "r")
            data = self._file[self.key]
            if rows.size and rows[-1] - rows[0] + 1 == rows.size:
                return data[int(rows[0]):int(rows[-1]) + 1]
            return data[rows]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"], state["_lock"] = None, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _pcam_file(root: Path, split: str, part: str) -> Path:
    name = FILE_PATTERN.format(split=split, part=part)
    path = root / f"{name}.h5"
    if path.is_file():
        return path
    if (root / f"{name}.h5.gz").is_file():
        raise DatasetFormatError(f"{root / (name + '.h5.gz')}: compressed; gunzip it first (HDF5 cannot be "
                                 "streamed from a .gz)")
    raise FileNotFoundError(f"{path}: not found (expected the PatchCamelyon .h5 files in {root})")


def load_pcam(root: str | os.PathLike, split: str = "train") -> LabeledDataset:
    """One PatchCamelyon split as a binary ('tumor') dataset streaming from the x file in chunks."""
    if split not in PCAM_SPLITS:
        raise ValueError(f"unknown PatchCamelyon split {split!r}; use one of {sorted(PCAM_SPLITS)}")
    root, name = Path(root), PCAM_SPLITS[split]
    x_path, y_path = _pcam_file(root, name, "x"), _pcam_file(root, name, "y")
    x = H5Source(x_path, "x")
    if len(x.shape) != 4 or x.shape[-1] not in (1, 3) or x.dtype != np.uint8:
        raise DatasetFormatError(f"{x_path}: 'x' must be uint8 (N, H, W, 3), got {x.dtype} {x.shape}")
    y_source = H5Source(y_path, "y")
    if y_source.shape[0] != x.shape[0] or int(np.prod(y_source.shape[1:])) != 1:
        raise DatasetFormatError(f"{y_path}: 'y' must be (N, 1, 1, 1) with N = {x.shape[0]} like {x_path.name}, "
                                 f"got {y_source.shape}")
    y = np.asarray(y_source.read(np.arange(len(y_source)))).reshape(-1)  # N bytes: small
    bad = np.flatnonzero((y != 0) & (y != 1))
    if bad.size:
        raise DatasetFormatError(f"{y_path}: label {int(y[bad[0]])} at row {int(bad[0])} is not 0 or 1")
    patients = _pcam_patients(root, name, y.size)
    return LabeledDataset(labels=y[:, None].astype(np.float32), mask=np.ones((y.size, 1), np.float32),
                          patient_ids=patients, class_names=("tumor",), task="binary", source=x,
                          name=f"pcam:{name}")


def _pcam_patients(root: Path, split: str, n: int) -> np.ndarray:
    """Slide ids from ``..._meta.csv`` ('wsi' column) when present, else one pseudo-patient per patch."""
    meta = root / f"{FILE_PATTERN.format(split=split, part='meta')}.csv"
    if not meta.is_file():
        return npstr.add(f"pcam-{split}-", np.arange(n).astype(str))
    table = read_csv_table(meta, required=("wsi",))
    if len(table) != n:
        raise DatasetFormatError(f"{meta}: {len(table)} rows but the HDF5 files hold {n} patches")
    return table.column("wsi")


def pcam_splits(root: str | os.PathLike) -> dict[str, LabeledDataset]:
    """The official train/valid/test files as train/val/test (slide-disjoint by construction; checked)."""
    parts = {"train": load_pcam(root, "train"), "val": load_pcam(root, "valid"), "test": load_pcam(root, "test")}
    return checked_splits(parts)


def load_camelyon_patches(root: str | os.PathLike, patient_regex: str = CAMELYON_PATIENT_REGEX,
                          positive_class: str | None = None) -> LabeledDataset:
    """Camelyon-style patch folders (one folder per class) with the patient id read from each file name."""
    from medfound.data.labeled.generic import load_folder

    return load_folder(root, patient_regex=patient_regex, positive_class=positive_class, require_patient=True,
                       name="camelyon-patches")
