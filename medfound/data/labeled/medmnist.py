"""MedMNIST ``.npz`` files ({split}_images, {split}_labels) as in-memory array datasets.

MedMNIST has no patient ids, so each image is its own pseudo-patient (``medmnist-{split}-{i}``);
the official train/val/test split is used as given.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medfound.data.labeled.base import DatasetFormatError, LabeledDataset, NumpySource, npstr
from medfound.data.labeled.splits import checked_splits

MEDMNIST_SPLITS = {"train": "train", "val": "val", "valid": "val", "test": "test"}
MULTILABEL_SETS = ("chestmnist",)  # the MedMNIST sets whose labels are multi-hot


def medmnist_task(labels: np.ndarray, path: Path) -> tuple[str, int]:
    """('binary'|'multiclass'|'multilabel', K) inferred from a MedMNIST label array."""
    if labels.ndim == 2 and labels.shape[1] > 1 or any(path.name.startswith(s) for s in MULTILABEL_SETS):
        return "multilabel", int(labels.shape[1])
    top = int(labels.max()) if labels.size else 0
    return ("binary", 1) if top <= 1 else ("multiclass", top + 1)


def load_medmnist(path: str | os.PathLike, split: str = "train", task: str | None = None,
                  class_names: tuple[str, ...] | None = None) -> LabeledDataset:
    """One split of a MedMNIST ``.npz`` (images (N,H,W) or (N,H,W,3) uint8) as a labeled dataset."""
    path = Path(path)
    if split not in MEDMNIST_SPLITS:
        raise ValueError(f"unknown MedMNIST split {split!r}; use one of {sorted(MEDMNIST_SPLITS)}")
    name = MEDMNIST_SPLITS[split]
    from medfound.utils.limits import check_zip

    try:
        check_zip(path, ".npz")  # bounded before a member is inflated
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            if f"{name}_images" not in keys or f"{name}_labels" not in keys:
                raise DatasetFormatError(f"{path}: missing '{name}_images'/'{name}_labels' (has {sorted(keys)})")
            images, labels = data[f"{name}_images"], data[f"{name}_labels"]
    except (OSError, ValueError) as exc:
        if isinstance(exc, DatasetFormatError):
            raise
        raise DatasetFormatError(f"{path}: not a readable .npz file ({exc})") from None
    if images.ndim not in (3, 4) or images.dtype != np.uint8:
        raise DatasetFormatError(f"{path}: '{name}_images' must be uint8 (N,H,W[,C]), "
                                 f"got {images.dtype} {images.shape}")
    labels = labels.reshape(labels.shape[0], -1) if labels.ndim != 2 else labels
    if labels.shape[0] != images.shape[0]:
        raise DatasetFormatError(f"{path}: {images.shape[0]} images but {labels.shape[0]} labels in split {name!r}")
    if labels.size and (labels.min() < 0 or not np.all(labels == np.round(labels))):
        raise DatasetFormatError(f"{path}: '{name}_labels' must be non-negative integers")
    inferred, k = medmnist_task(labels, path)
    task = task or inferred
    n = labels.shape[0]
    if task == "multilabel":
        y = labels.astype(np.float32)
        if y.size and y.max() > 1:
            raise DatasetFormatError(f"{path}: multi-label '{name}_labels' must be 0/1")
    elif task == "binary":
        if labels.shape[1] != 1 or (labels.size and labels.max() > 1):
            raise DatasetFormatError(f"{path}: a binary task needs (N, 1) labels in {{0, 1}}")
        y = labels.astype(np.float32)
    elif task == "multiclass":
        k = max(k, int(labels.max()) + 1 if labels.size else 0)
        y = np.eye(k, dtype=np.float32)[labels[:, 0].astype(np.int64)]
    else:
        raise ValueError(f"task must be 'binary', 'multiclass' or 'multilabel', got {task!r}")
    names = class_names or ((("positive",) if task == "binary" else tuple(str(i) for i in range(y.shape[1]))))
    patients = npstr.add(f"medmnist-{name}-", np.arange(n).astype(str))
    return LabeledDataset(labels=y, mask=np.ones_like(y), patient_ids=patients, class_names=names, task=task,
                          source=NumpySource(images), name=f"{path.stem}:{name}")


def medmnist_splits(path: str | os.PathLike, **kwargs) -> dict[str, LabeledDataset]:
    """The official train/val/test splits of a MedMNIST ``.npz``."""
    return checked_splits({s: load_medmnist(path, s, **kwargs) for s in ("train", "val", "test")})
