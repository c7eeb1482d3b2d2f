"""Slide bags and their labels: the per-slide files of ``embed --slides`` with a label, patient
and split each, checked to make sense together before any training.

Labels come from a CSV ``slide,label[,patient][,split]`` (read as every medfound CSV) or from
Camelyon16 ``tumor_*`` / ``normal_*`` names. Refused, naming the file and line: a label spelling a
missing value (``nan``), a slide named twice, a split other than train/val/test (valid and
validation mean val), splits given for some slides only, labels of one class (the rule of every
classification table, :func:`medfound.data.labeled.generic.require_two_classes`), and features
of two modules or two geometries (every bag must come from one source).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from medfound.slides.embed import read_slide_features
from medfound.slides.reader import SlideError

_PATIENT = re.compile(r"(patient_\d+)", re.IGNORECASE)


@dataclasses.dataclass
class SlideBag:
    name: str
    patient: str
    label: int
    features: np.ndarray
    coords: np.ndarray
    attrs: dict
    tumor_fraction: np.ndarray | None = None


SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test"}
# Attributes every bag of one run must share: features of one module at one geometry.
_ONE_SOURCE = ("module_sha256", "module", "mpp", "tile_size", "image_size")


def _label(value: str, where: str) -> int:
    from medfound.data.labeled.generic import MISSING_LABELS

    text = str(value).strip().lower()
    if text in ("1", "tumor", "tumour", "positive", "true", "metastasis", "macro", "micro", "itc",
                "malignant"):
        return 1
    if text in ("0", "normal", "negative", "false", "benign"):
        return 0
    if text in MISSING_LABELS or not text:
        raise SlideError(f"{where}: label {value!r} is a missing value; give the slide's label "
                         "or drop the row")
    raise SlideError(f"{where}: label {value!r} is not tumor/normal or 1/0")


def _label_rows(labels_file: Path) -> dict[str, dict]:
    """Slide name -> its row of a labels CSV (read as every medfound CSV: BOM, quoting, widths),
    with ``_where`` (file and line) added; a slide named twice is refused."""
    from medfound.data.tables import DatasetFormatError, read_csv_table

    try:
        table = read_csv_table(labels_file)
        column = next((c for c in ("slide", "image") if c in table.header), None)
        if column is None:
            raise DatasetFormatError(f"{labels_file}: no 'slide' column; the header has "
                                     f"{table.header}")
        from medfound.data.labeled.base import check_unique

        names = np.asarray([Path(v).stem for v in table.column(column).tolist()], dtype=str)
        check_unique(table, names, "slide")
    except DatasetFormatError as err:
        raise SlideError(str(err)) from None
    columns = {name: table.column(name).tolist() for name in table.header}
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    return {name: {**row, "_where": f"{labels_file}, line {int(line)}"}
            for name, row, line in zip(names.tolist(), rows, table.lines) if name}


def _split_of(row: dict) -> str:
    """A row's split (train/val/test; valid and validation mean val), refusing anything else."""
    text = str(row["split"]).strip().lower()
    if text not in SPLIT_NAMES:
        raise SlideError(f"{row['_where']}: split {row['split']!r} is not one of "
                         f"{', '.join(SPLIT_NAMES)}")
    return SPLIT_NAMES[text]


def _check_bags(bags: list[SlideBag], files: list[Path], splits: dict[str, str],
                where: str) -> None:
    """One source (module and geometry), two classes, and a split for every slide or none."""
    from medfound.data.labeled.generic import require_two_classes
    from medfound.data.tables import DatasetFormatError

    first = bags[0]
    for bag, file in zip(bags[1:], files[1:]):
        for key in _ONE_SOURCE:
            mine, theirs = first.attrs.get(key), bag.attrs.get(key)
            if mine is not None and theirs is not None and str(mine) != str(theirs):
                raise SlideError(f"{file} and {files[0]} were embedded with a different {key} "
                                 f"({theirs} vs {mine}); train on features of one module at one "
                                 "geometry")
        if bag.features.shape[1:] != first.features.shape[1:]:
            raise SlideError(f"{file} and {files[0]} hold features of different widths "
                             f"({bag.features.shape[1]} vs {first.features.shape[1]})")
    try:
        require_two_classes([b.label for b in bags], where)
    except DatasetFormatError as err:
        raise SlideError(f"{err} (slide labels)") from None
    unsplit = [b.name for b in bags if b.name not in splits]
    if splits and unsplit:
        raise SlideError(f"{where}: gives a split for {len(splits)} slide(s) but none for "
                         f"{', '.join(unsplit[:5])}; give every slide a split, or none")


def load_bags(data: str, labels: str | None = None) -> tuple[list[SlideBag], dict[str, str]]:
    """The slide bags of folder ``data`` with labels; returns (bags, split by slide name or {})."""
    folder = Path(data)
    files = sorted(folder.glob("*.h5"))
    if not files:
        raise SlideError(f"{folder}: no per-slide .h5 files (run medfound embed --slides first)")
    table: dict[str, dict] = {}
    labels_file = Path(labels) if labels else folder / "labels.csv"
    if labels_file.is_file():
        table = _label_rows(labels_file)
    elif labels:
        raise SlideError(f"{labels}: no such labels CSV")
    bags, splits = [], {}
    for file in files:
        d = read_slide_features(file)
        name = file.stem
        row = table.get(name)
        if row is not None:
            label = _label(row.get("label", row.get("class", "")), row["_where"])
            patient = row.get("patient") or name
            if row.get("split"):
                splits[name] = _split_of(row)
        elif not table and name.lower().startswith(("tumor", "tumour", "normal")):
            label = 0 if name.lower().startswith("normal") else 1
            match = _PATIENT.search(name)
            patient = match.group(1) if match else name
        else:
            raise SlideError(f"{file}: no label (add it to {labels_file} as slide,label)")
        bags.append(SlideBag(name=name, patient=patient, label=label,
                             features=d["features"].astype(np.float32), coords=d["coords"],
                             attrs=d["attrs"], tumor_fraction=d.get("tumor_fraction")))
    _check_bags(bags, files, splits, str(labels_file if table else folder))
    return bags, splits
