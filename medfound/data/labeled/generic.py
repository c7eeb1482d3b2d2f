"""Generic labeled sources: a CSV of image paths and labels, and class-per-folder layouts.

A single label column holds class names (two classes: binary, more: multi-class); several label
columns hold 0/1 (blank = ignore) for multi-label tasks. Patient ids come from a column, a
regular expression on the file name, or (folders) a per-slide sub-folder.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfound.data.tables import npstr
from medfound.data.labeled.base import (CSVFormatError, DatasetFormatError, LabeledDataset, check_unique,
                                        parse_label_column, read_csv_table, relative_paths, under)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm")
MULTILABEL_CELLS = {"1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "": np.nan}
DEFAULT_PATIENT_REGEX = r"(?:patient|case|subject|slide|wsi)[_-]?([A-Za-z0-9]+)"


def _class_task(values: np.ndarray, classes: Sequence[str] | None, positive_class: str | None,
                where: str, lines: np.ndarray | None = None) -> tuple[np.ndarray, tuple[str, ...], str]:
    """One-hot (multi-class) or (N, 1) (binary) labels from class-name values."""
    found = sorted(set(values.tolist()))
    if isinstance(classes, str):  # "0,1,l" as typed
        classes = classes.split(",")
    given = classes
    # Label cells are text; a class list from the command line arrives parsed (0, 1, 'l').
    classes = tuple(str(c) for c in classes) if classes is not None else tuple(found)
    if positive_class is not None:
        positive_class = str(positive_class)
    position = {c: j for j, c in enumerate(classes)}
    for v in found:
        if v not in position:
            row = np.flatnonzero(values == v)[0]
            line = f", line {int(lines[row])}" if lines is not None else ""
            raise DatasetFormatError(f"{where}{line}: unknown label value {v!r}; classes are {list(classes)}")
    if given is None:
        _refuse_missing_labels(values, where, lines)
    if given is None and len(found) > 2:
        _refuse_typo_in_binary_labels(values, found, where, lines)
    require_two_classes(classes, where)
    index = np.array([position[v] for v in values.tolist()], dtype=np.int64)
    if len(classes) == 2:
        positive = positive_class if positive_class is not None else classes[1]
        if positive not in position:
            raise ValueError(f"positive class {positive!r} is not one of {list(classes)}")
        return (index == position[positive]).astype(np.float32)[:, None], (positive,), "binary"
    return np.eye(len(classes), dtype=np.float32)[index], classes, "multiclass"


# Label cells that spell a missing value (pandas, R and Excel write these), lower-cased.
MISSING_LABELS = ("nan", "na", "n/a", "null", "#n/a")


def require_two_classes(classes: Sequence, where: str) -> None:
    """The one rule of every classification table (images or slides): two classes at least."""
    if len(set(classes)) < 2:
        raise DatasetFormatError(f"{where}: a classification task needs at least two classes, "
                                 f"found {sorted(set(map(str, classes)))}")


def _refuse_missing_labels(values: np.ndarray, where: str, lines: np.ndarray | None) -> None:
    """A label spelled as a missing value ('nan', 'NA', ...) would become a class of its own."""
    missing = np.flatnonzero(np.isin(npstr.lower(values), MISSING_LABELS)) if values.size else []
    if len(missing):
        row = int(missing[0])
        line = f", line {int(lines[row])}" if lines is not None else f", row {row}"
        raise DatasetFormatError(f"{where}{line}: label {str(values[row])!r} is a missing value, "
                                 "not a class; give the label or drop the row (or pass the class "
                                 "list, classes=..., if it is a class)")


# Pairs of label values that mean a binary task (lower-cased).
_BINARY_PAIRS = ({"0", "1"}, {"0.0", "1.0"}, {"false", "true"}, {"no", "yes"}, {"n", "y"},
                 {"negative", "positive"}, {"neg", "pos"})


def _refuse_typo_in_binary_labels(values: np.ndarray, found: list[str], where: str,
                                  lines: np.ndarray | None) -> None:
    """More than two classes found where two of them are a binary pair (0/1, yes/no, ...) and
    the rest do not continue it (2, 3, ... would): most likely a typo that would silently turn
    the task multi-class. Refused naming the odd value's row; an explicit class list allows it."""
    lower = {v.lower() for v in found}
    pair = next((p for p in _BINARY_PAIRS if p <= lower), None)
    if pair is None:
        return
    others = [v for v in found if v.lower() not in pair]
    if pair == {"0", "1"} and all(v.isdigit() for v in others):
        return  # 0, 1, 2, ...: integer class ids
    odd = others[0]
    row = int(np.flatnonzero(values == odd)[0])
    line = f", line {int(lines[row])}" if lines is not None else f", row {row}"
    raise DatasetFormatError(
        f"{where}{line}: label value {odd!r} among binary labels {sorted(pair)}"
        + (f" ({len(others)} other values: {others[:5]})" if len(others) > 1 else "")
        + "; fix the value, or pass the class list (classes=...) to make it a "
          f"{len(found)}-class task")


def load_csv(csv_path: str | os.PathLike, path_column: str = "path", label_columns: Sequence[str] | str = "label",
             patient_column: str | None = None, root: str | os.PathLike | None = None,
             classes: Sequence[str] | None = None, positive_class: str | None = None,
             check_files: bool = True) -> LabeledDataset:
    """A CSV of relative image paths and labels; refuses bad rows with the file, line and problem.

    Without ``patient_column`` each image counts as its own patient (say so in any report).
    ``root`` defaults to the CSV's folder; paths follow ``medfound.data.tables``' rule (relative,
    inside the root; ``a/../b.png`` is ``b.png``).
    """
    csv_path = Path(csv_path)
    label_columns = [label_columns] if isinstance(label_columns, str) else list(label_columns)
    required = [path_column, *label_columns, *([patient_column] if patient_column else [])]
    table = read_csv_table(csv_path, required=required)
    if len(table) == 0:
        raise CSVFormatError(csv_path, "no data rows")
    rel = relative_paths(table, path_column)
    check_unique(table, rel, "image path")
    base = Path(root) if root is not None else csv_path.parent
    paths = under(base, rel)
    if check_files:
        for p, line in zip(paths.tolist(), table.lines.tolist()):
            if not os.path.isfile(p):
                raise CSVFormatError(csv_path, f"image file {p} not found", line)
    if len(label_columns) == 1:
        values = table.column(label_columns[0])
        empty = np.flatnonzero(values == "")
        if empty.size:
            raise CSVFormatError(csv_path, f"empty label in column {label_columns[0]!r}", int(table.lines[empty[0]]))
        labels, names, task = _class_task(values, classes, positive_class, str(csv_path), table.lines)
        mask = np.ones_like(labels)
    else:
        raw = np.stack([parse_label_column(table, c, MULTILABEL_CELLS) for c in label_columns], axis=1)
        labels, mask = np.nan_to_num(raw, nan=0.0).astype(np.float32), np.isfinite(raw).astype(np.float32)
        names, task = tuple(label_columns), "multilabel"
    if patient_column:
        patients = table.column(patient_column)
        empty = np.flatnonzero(patients == "")
        if empty.size:
            raise CSVFormatError(csv_path, f"empty patient id in column {patient_column!r}", int(table.lines[empty[0]]))
    else:
        patients = rel
    return LabeledDataset(labels=labels, mask=mask, patient_ids=patients, class_names=names, task=task,
                          paths=paths, name=csv_path.stem)


def _patient_of(rel: Path, regex: re.Pattern | None, nested: bool) -> str | None:
    if regex is not None:
        m = regex.search(rel.name)
        if m:
            return m.group(1) if m.groups() else m.group(0)
    if nested and len(rel.parts) > 2:  # class/slide/.../patch.png: the slide folder
        return rel.parts[1]
    return None


def load_folder(root: str | os.PathLike, patient_regex: str | None = DEFAULT_PATIENT_REGEX,
                positive_class: str | None = None, classes: Sequence[str] | None = None,
                require_patient: bool = False, name: str = "folder") -> LabeledDataset:
    """A class-per-folder layout (``root/<class>/[<slide>/]image``) as a binary or multi-class dataset.

    The patient id is the first group of ``patient_regex`` in the file name, else the sub-folder
    under the class folder, else (unless ``require_patient``) the image itself.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    class_dirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is not None:
        unknown = [c for c in class_dirs if c not in classes]
        if unknown:
            raise DatasetFormatError(f"{root}: folder(s) {unknown} are not among the classes {list(classes)}")
    regex = re.compile(patient_regex) if patient_regex else None
    paths, values, patients = [], [], []
    for cls in class_dirs:
        for dirpath, dirnames, filenames in os.walk(root / cls):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in sorted(filenames):
                if fname.startswith(".") or not fname.lower().endswith(IMAGE_SUFFIXES):
                    continue
                full = Path(dirpath) / fname
                rel = full.relative_to(root)
                patient = _patient_of(rel, regex, nested=True)
                if patient is None:
                    if require_patient:
                        raise DatasetFormatError(f"{full}: no patient/slide id in the file name "
                                                 f"(pattern {patient_regex!r}) and no slide sub-folder")
                    patient = str(rel)
                paths.append(str(full))
                values.append(cls)
                patients.append(patient)
    if not paths:
        raise DatasetFormatError(f"{root}: no images in class folders (expected root/<class>/<image>)")
    labels, names, task = _class_task(np.asarray(values), classes, positive_class, str(root))
    return LabeledDataset(labels=labels, mask=np.ones_like(labels), patient_ids=np.asarray(patients),
                          class_names=names, task=task, paths=np.asarray(paths), name=name)
