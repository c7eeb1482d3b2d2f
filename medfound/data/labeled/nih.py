"""NIH ChestX-ray14: ``Data_Entry_2017*.csv`` findings (joined with '|') as 14 multi-hot labels.

'No Finding' is all zeros. Images are found by name under ``images/`` or the release's
``images_NNN/images/`` folders. The official ``train_val_list.txt``/``test_list.txt`` define the
test split when present; otherwise the split is cut by patient.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfound.data.labeled.base import (CSVFormatError, DatasetFormatError, LabeledDataset, check_unique, npstr,
                                        open_text, read_csv_table)
from medfound.data.labeled.splits import checked_splits, split_by_keys, split_dataset

NIH_CLASSES: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
NO_FINDING = "No Finding"
REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def find_nih_csv(path: str | os.PathLike) -> Path:
    """``path`` if it is the CSV, else the (newest-named) ``Data_Entry_2017*.csv[.gz]`` in the folder."""
    path = Path(path)
    if path.is_file():
        return path
    found = sorted(path.glob("Data_Entry_2017*.csv")) + sorted(path.glob("Data_Entry_2017*.csv.gz"))
    if not found:
        raise FileNotFoundError(f"{path}: no Data_Entry_2017*.csv found (expected the NIH ChestX-ray14 folder)")
    return found[-1]


def index_images(root: Path) -> dict[str, Path]:
    """Image file name -> path, over ``root``, ``root/images`` and ``root/images_*/images``."""
    folders = [root, root / "images", *sorted(root.glob("images_*/images")), *sorted(root.glob("images_*"))]
    index: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file():
                    index.setdefault(entry.name, Path(entry.path))
    return index


def finding_labels(values: np.ndarray, lines: np.ndarray, csv_path: Path,
                   classes: Sequence[str] = NIH_CLASSES) -> np.ndarray:
    """Multi-hot (N, 14) float32 from 'A|B' strings; unknown findings are refused with their line."""
    uniq, inverse = np.unique(values, return_inverse=True)
    table = np.zeros((uniq.size, len(classes)), np.float32)
    position = {c: j for j, c in enumerate(classes)}
    for i, text in enumerate(uniq.tolist()):
        tokens = [t.strip() for t in text.split("|")]
        line = int(lines[np.flatnonzero(inverse == i)[0]])
        if tokens == [NO_FINDING]:
            continue
        for t in tokens:
            if t == NO_FINDING:
                raise CSVFormatError(csv_path, f"'No Finding' together with findings in {text!r}", line)
            if t not in position:
                raise CSVFormatError(csv_path, f"unknown finding {t!r} in {text!r}; known: "
                                     f"{[*classes, NO_FINDING]}", line)
            table[i, position[t]] = 1.0
    return table[inverse.reshape(-1)]


def load_nih(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
             views: Sequence[str] | None = None, missing: str = "error") -> LabeledDataset:
    """Loads the NIH ChestX-ray14 table (all rows) as a 14-class multi-label dataset.

    ``views`` keeps only those 'View Position' values (for example ('PA',)); ``missing='drop'``
    drops rows whose image file is absent instead of refusing them.
    """
    if missing not in ("error", "drop"):
        raise ValueError(f"missing must be 'error' or 'drop', got {missing!r}")
    csv_path = find_nih_csv(path)
    root = Path(image_root) if image_root is not None else csv_path.parent
    table = read_csv_table(csv_path, required=REQUIRED_COLUMNS)
    if len(table) == 0:
        raise CSVFormatError(csv_path, "no data rows")
    names = table.column("Image Index")
    check_unique(table, names, "image")
    if views is not None:
        if "View Position" not in table.header:
            raise CSVFormatError(csv_path, "a view filter needs the column 'View Position'", 1)
        table = table.take(np.isin(table.column("View Position"), list(views)))
        names = table.column("Image Index")
    bad = np.flatnonzero(npstr.find(names, "/") >= 0) if names.size else []
    if len(bad):
        raise CSVFormatError(csv_path, f"image index {str(names[bad[0]])!r} must be a bare file name",
                             int(table.lines[bad[0]]))
    index = index_images(root)
    found = np.asarray([n in index for n in names.tolist()], dtype=bool)
    if not found.all():
        absent = names[~found]
        if missing == "error":
            raise DatasetFormatError(
                f"{csv_path}: {absent.size} image(s) listed but not found under {root} (images/ or "
                f"images_*/images/), e.g. {absent[:5].tolist()} (line {int(table.lines[~found][0])}); "
                "use missing='drop' to skip them")
        table, names = table.take(found), names[found]
        if len(table) == 0:
            raise DatasetFormatError(f"{csv_path}: none of the listed images were found under {root}")
    labels = finding_labels(table.column("Finding Labels"), table.lines, csv_path)
    patients = table.column("Patient ID")
    empty = np.flatnonzero(patients == "")
    if empty.size:
        raise CSVFormatError(csv_path, "empty 'Patient ID'", int(table.lines[empty[0]]))
    patients = np.asarray([p.lstrip("0") or "0" for p in patients.tolist()])  # '00012' and '12' agree
    meta = {"image": names}
    for key, column in (("view", "View Position"), ("follow_up", "Follow-up #"), ("age", "Patient Age"),
                        ("sex", "Patient Gender")):
        if column in table.header:
            meta[key] = table.column(column)
    return LabeledDataset(labels=labels, mask=np.ones_like(labels), patient_ids=patients, class_names=NIH_CLASSES,
                          task="multilabel", paths=np.asarray([str(index[n]) for n in names.tolist()]),
                          name="nih", meta=meta)


def read_list(path: Path) -> list[str]:
    """The non-empty lines of an official split list (one image name a line)."""
    with open_text(path) as f:  # UTF-8, BOM accepted, as every medfound CSV
        return [line.strip() for line in f if line.strip()]


def nih_splits(path: str | os.PathLike, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
               use_official: bool = True, **kwargs) -> dict[str, LabeledDataset]:
    """train/val/test by patient: the official lists when present (val cut from train_val), else a seeded split."""
    ds = load_nih(path, **kwargs)
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    lists = {"train_val": folder / "train_val_list.txt", "test": folder / "test_list.txt"}
    if use_official and all(p.is_file() for p in lists.values()):
        rows = split_by_keys(ds.meta["image"], {k: read_list(p) for k, p in lists.items()})
        train_val = ds.subset(rows["train_val"], name="nih:train_val")
        parts = split_dataset(train_val, {"train": 1 - val_fraction, "val": val_fraction}, seed)
        parts = {"train": parts["train"], "val": parts["val"], "test": ds.subset(rows["test"], name="nih:test")}
        return checked_splits(parts)
    train = 1.0 - val_fraction - test_fraction
    return split_dataset(ds, {"train": train, "val": val_fraction, "test": test_fraction}, seed)
