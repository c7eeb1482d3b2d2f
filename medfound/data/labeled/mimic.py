"""MIMIC-CXR-JPG: the CheXpert-labeller CSV joined to the metadata CSV, one row per JPEG.

Images live at ``files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.jpg``; labels are per study
(the same 14 observations and -1/blank cells as CheXpert) and apply to every image of the study.
The official ``mimic-cxr-2.0.0-split.csv`` gives train/validate/test when present.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medfound.data.labeled.base import CSVFormatError, LabeledDataset, check_unique, find_file, npstr, read_csv_table
from medfound.data.labeled.chexpert import observation_labels, resolve_classes
from medfound.data.labeled.splits import checked_splits, split_by_keys, split_dataset

CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv"
METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
FRONTAL_VIEWS = ("PA", "AP")
MIMIC_SPLITS = {"train": "train", "val": "validate", "validate": "validate", "test": "test"}


def _require_file(root: Path, name: str) -> Path:
    found = find_file(root, [name])
    if found is None:
        raise FileNotFoundError(f"{root}: no {name} or {name}.gz (expected the MIMIC-CXR-JPG folder)")
    return found


def _digits(table, column: str) -> np.ndarray:
    values = table.column(column)
    bad = np.flatnonzero(~npstr.isdigit(values)) if values.size else []
    if len(bad):
        raise CSVFormatError(table.path, f"{column} {str(values[bad[0]])!r} is not a number", int(table.lines[bad[0]]))
    return values


def load_mimic(root: str | os.PathLike, split: str | None = None, classes: Sequence[str] | str | None = None,
               uncertainty: str | Mapping[str, str] = "ones", blank: str = "negative",
               frontal_only: bool = True) -> LabeledDataset:
    """MIMIC-CXR-JPG images with their study's labels (images of unlabelled studies are left out).

    ``split`` ('train', 'validate'/'val', 'test') uses the official split CSV; None keeps all.
    """
    root = Path(root)
    classes = resolve_classes(classes)
    chex = read_csv_table(_require_file(root, CHEXPERT_CSV), required=("subject_id", "study_id", *classes))
    meta = read_csv_table(_require_file(root, METADATA_CSV), required=("dicom_id", "subject_id", "study_id"))
    chex_keys = npstr.add(npstr.add(_digits(chex, "subject_id"), "/"), _digits(chex, "study_id"))
    check_unique(chex, chex_keys, "study (subject_id/study_id)")
    dicom = meta.column("dicom_id")
    check_unique(meta, dicom, "dicom_id")
    bad = np.flatnonzero((npstr.find(dicom, "/") >= 0) | (npstr.find(dicom, "..") >= 0) | (dicom == ""))
    if bad.size:
        raise CSVFormatError(meta.path, f"dicom_id {str(dicom[bad[0]])!r} is not a bare file name",
                             int(meta.lines[bad[0]]))
    keep = np.ones(len(meta), bool)
    if frontal_only:
        if "ViewPosition" not in meta.header:
            raise CSVFormatError(meta.path, "frontal_only needs the column 'ViewPosition'", 1)
        keep &= np.isin(meta.column("ViewPosition"), FRONTAL_VIEWS)
    if split is not None:
        if split not in MIMIC_SPLITS:
            raise ValueError(f"unknown MIMIC split {split!r}; use one of {sorted(MIMIC_SPLITS)}")
        split_table = read_csv_table(_require_file(root, SPLIT_CSV), required=("dicom_id", "split"))
        members = split_table.column("dicom_id")[split_table.column("split") == MIMIC_SPLITS[split]]
        keep &= np.isin(dicom, members)
    subject, study = _digits(meta, "subject_id"), _digits(meta, "study_id")
    meta_keys = npstr.add(npstr.add(subject, "/"), study)
    order = np.argsort(chex_keys)
    sorted_keys = chex_keys[order]
    pos = np.minimum(np.searchsorted(sorted_keys, meta_keys), max(len(order) - 1, 0))
    matched = sorted_keys[pos] == meta_keys if len(order) else np.zeros(len(meta), bool)
    keep &= matched
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        raise CSVFormatError(meta.path, "no images left after joining with the labels"
                             + (f" and keeping split {split!r}" if split else "")
                             + (" and frontal views" if frontal_only else ""))
    labels, mask = observation_labels(chex.take(order[pos[rows]]), classes, uncertainty, blank)
    subject, study, dicom = subject[rows], study[rows], dicom[rows]
    rel = [f"files/p{s[:2]}/p{s}/s{t}/{d}.jpg" for s, t, d in zip(subject.tolist(), study.tolist(), dicom.tolist())]
    paths = npstr.add(str(root) + os.sep, np.asarray(rel))
    extra = {"dicom_id": dicom, "study_id": study}
    if "ViewPosition" in meta.header:
        extra["view"] = meta.column("ViewPosition")[rows]
    return LabeledDataset(labels=labels, mask=mask, patient_ids=subject, class_names=classes, task="multilabel",
                          paths=paths, name=f"mimic:{split or 'all'}", meta=extra)


def mimic_splits(root: str | os.PathLike, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                 **kwargs) -> dict[str, LabeledDataset]:
    """train/val/test from the official split CSV when present, else a seeded patient-level split."""
    ds = load_mimic(root, None, **kwargs)
    split_csv = find_file(Path(root), [SPLIT_CSV])
    if split_csv is not None:
        table = read_csv_table(split_csv, required=("dicom_id", "split"))
        names, groups = table.column("dicom_id"), table.column("split")
        lists = {ours: names[groups == theirs] for ours, theirs in
                 (("train", "train"), ("val", "validate"), ("test", "test"))}
        rows = split_by_keys(ds.meta["dicom_id"], lists)
        return checked_splits({k: ds.subset(v, name=f"mimic:{k}") for k, v in rows.items()})
    return split_dataset(ds, {"train": 1 - val_fraction - test_fraction, "val": val_fraction,
                              "test": test_fraction}, seed)
