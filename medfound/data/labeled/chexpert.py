"""CheXpert (and MIMIC-CXR, which uses the same labeller): observation columns to labels and masks.

Label cells are 1.0 (positive), 0.0 (negative), -1.0 (uncertain) or blank (not mentioned).
Uncertain cells follow a policy ('ones', 'zeros' or 'ignore' via the loss mask), per class if
wanted; blank cells are negative unless ``blank='ignore'``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medfound.data.labeled.base import (CSVFormatError, CSVTable, LabeledDataset, check_unique, find_file, npstr,
                                        parse_label_column, read_csv_table, relative_paths, under)
from medfound.data.labeled.splits import checked_splits, split_dataset

CHEXPERT_CLASSES: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices")
COMPETITION_CLASSES: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
UNCERTAINTY_POLICIES = ("ones", "zeros", "ignore")
BLANK_POLICIES = ("negative", "ignore")
PATIENT_PATTERN = re.compile(r"(?:^|/)(patient\d+)(?:/|$)")


def resolve_classes(classes: Sequence[str] | str | None) -> tuple[str, ...]:
    """The requested observations: None -> the 5 competition ones, 'all' -> all 14, else a checked list."""
    if classes is None:
        return COMPETITION_CLASSES
    if isinstance(classes, str):
        if classes == "all":
            return CHEXPERT_CLASSES
        if classes == "competition":
            return COMPETITION_CLASSES
        classes = [c.strip() for c in classes.split(",")]
    unknown = [c for c in classes if c not in CHEXPERT_CLASSES]
    if unknown:
        raise ValueError(f"unknown CheXpert observation(s) {unknown}; choose from {list(CHEXPERT_CLASSES)}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"observation listed twice in {list(classes)}")
    return tuple(classes)


def observation_labels(table: CSVTable, classes: Sequence[str], uncertainty: str | Mapping[str, str] = "ones",
                       blank: str = "negative") -> tuple[np.ndarray, np.ndarray]:
    """Labels and mask (N, K) float32 from CheXpert-style observation columns under the policies."""
    if isinstance(uncertainty, str):
        policies = {c: uncertainty for c in classes}
    else:
        unknown = set(uncertainty) - set(classes)
        if unknown:
            raise ValueError(f"uncertainty policy given for classes not loaded: {sorted(unknown)}")
        policies = {c: uncertainty.get(c, "ones") for c in classes}
    for c, p in policies.items():
        if p not in UNCERTAINTY_POLICIES:
            raise ValueError(f"uncertainty policy for {c!r} must be one of {UNCERTAINTY_POLICIES}, got {p!r}")
    if blank not in BLANK_POLICIES:
        raise ValueError(f"blank policy must be one of {BLANK_POLICIES}, got {blank!r}")
    n = len(table)
    labels = np.zeros((n, len(classes)), np.float32)
    mask = np.ones((n, len(classes)), np.float32)
    for j, c in enumerate(classes):
        raw = parse_label_column(table, c)
        labels[raw == 1.0, j] = 1.0
        uncertain = raw == -1.0
        if policies[c] == "ones":
            labels[uncertain, j] = 1.0
        elif policies[c] == "ignore":
            mask[uncertain, j] = 0.0
        if blank == "ignore":
            mask[np.isnan(raw), j] = 0.0
    return labels, mask


def find_chexpert_csv(path: str | os.PathLike, split: str) -> Path:
    """The CSV for a split: ``path`` itself if a file, else ``{split}.csv[.gz]`` inside the folder."""
    path = Path(path)
    if path.is_file():
        return path
    name = {"train": "train.csv", "valid": "valid.csv", "val": "valid.csv", "test": "test.csv"}.get(split)
    if name is None:
        raise ValueError(f"unknown CheXpert split {split!r}; use 'train', 'valid' or 'test'")
    found = find_file(path, [name]) if path.is_dir() else None
    if found is None:
        raise FileNotFoundError(f"{path}: no {name} or {name}.gz found (expected the CheXpert-v1.0[-small] folder)")
    return found


def image_root_for(csv_path: Path, first_path: str) -> Path:
    """Where CSV paths are relative to: the folder above the dataset folder when paths start with its name."""
    folder = csv_path.parent
    head = first_path.replace("\\", "/").split("/", 1)[0]
    if head == folder.name or (head.startswith("CheXpert-v1.0") and not (folder / head).exists()):
        return folder.parent
    return folder


def chexpert_patient_ids(table: CSVTable, paths: np.ndarray) -> np.ndarray:
    """The ``patientNNNNN`` component of each CheXpert path; a path without one is refused."""
    # Patients are shared by several images: parse each distinct folder once.
    folders = [p.rsplit("/", 2)[0] if p.count("/") >= 2 else p for p in paths.tolist()]
    uniq, inverse = np.unique(np.asarray(folders), return_inverse=True)
    ids = []
    for folder in uniq.tolist():
        m = PATIENT_PATTERN.search(folder + "/")
        if m is None:
            line = int(table.lines[np.flatnonzero(np.asarray(folders) == folder)[0]])
            raise CSVFormatError(table.path, f"no 'patientNNNNN' folder in image path under {folder!r}", line)
        ids.append(m.group(1))
    return np.asarray(ids)[inverse.reshape(-1)]


def load_chexpert(path: str | os.PathLike, split: str = "train", classes: Sequence[str] | str | None = None,
                  uncertainty: str | Mapping[str, str] = "ones", blank: str = "negative",
                  frontal_only: bool = False, image_root: str | os.PathLike | None = None) -> LabeledDataset:
    """Loads a CheXpert ``train.csv``/``valid.csv`` (or ``.csv.gz``) as a multi-label dataset.

    ``path`` is the CSV or the ``CheXpert-v1.0[-small]`` folder; images are at ``image_root /
    Path`` (default: the folder the CSV paths start from). Images are not opened here.
    """
    csv_path = find_chexpert_csv(path, split)
    classes = resolve_classes(classes)
    table = read_csv_table(csv_path, required=("Path", "Frontal/Lateral", *classes))
    if len(table) == 0:
        raise CSVFormatError(csv_path, "no data rows")
    paths = relative_paths(table, "Path")
    check_unique(table, paths, "image path")
    if frontal_only:
        keep = npstr.lower(table.column("Frontal/Lateral")) == "frontal"
        table, paths = table.take(keep), paths[keep]
        if len(table) == 0:
            raise CSVFormatError(csv_path, "no frontal images (column 'Frontal/Lateral')")
    labels, mask = observation_labels(table, classes, uncertainty, blank)
    root = Path(image_root) if image_root is not None else image_root_for(csv_path, str(paths[0]))
    full = under(root, paths)
    meta = {"view": table.column("Frontal/Lateral")}
    for key, column in (("ap_pa", "AP/PA"), ("sex", "Sex"), ("age", "Age")):
        if column in table.header:
            meta[key] = table.column(column)
    return LabeledDataset(labels=labels, mask=mask, patient_ids=chexpert_patient_ids(table, paths),
                          class_names=classes, task="multilabel", paths=full, name=f"chexpert:{split}",
                          meta=meta)


def chexpert_splits(path: str | os.PathLike, val_fraction: float = 0.1, seed: int = 0,
                    **kwargs) -> dict[str, LabeledDataset]:
    """train/val/test: train.csv cut by patient into train and val; the official valid.csv as test.

    Without a valid.csv the test split is also cut from train.csv by patient. Leakage is refused.
    """
    train = load_chexpert(path, "train", **kwargs)
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    valid_csv = find_file(folder, ["valid.csv"])
    if valid_csv is None:
        return split_dataset(train, {"train": 1 - 2 * val_fraction, "val": val_fraction, "test": val_fraction}, seed)
    parts = split_dataset(train, {"train": 1 - val_fraction, "val": val_fraction}, seed)
    parts["test"] = load_chexpert(valid_csv, "valid", **kwargs)
    return checked_splits(parts)
