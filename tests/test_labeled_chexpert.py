"""CheXpert loader: the real 223,414-row train.csv under every uncertainty policy, checked against
counts made here with the csv module, plus CSV validation and streaming on images written here."""
from __future__ import annotations

import csv
import gzip
import re

import numpy as np
import pytest
from PIL import Image

from medfound.data.labeled.base import CSVFormatError
from medfound.data.labeled.chexpert import (CHEXPERT_CLASSES, COMPETITION_CLASSES, chexpert_splits,
                                            load_chexpert)
from medfound.data.labeled.splits import PatientLeakageError

N_ROWS = 223_414
N_PATIENTS = 64_540


@pytest.fixture(scope="module")
def real_csv(shared_data):
    path = shared_data / "chexpert" / "train.csv.gz"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="module")
def direct(real_csv):
    """Raw cells per observation, views and patient folders, read with the csv module only."""
    with gzip.open(real_csv, "rt", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    cells = {c: np.array([r[c] for r in rows]) for c in CHEXPERT_CLASSES}
    frontal = np.array([r["Frontal/Lateral"] == "Frontal" for r in rows])
    patients = np.array([r["Path"].split("/")[2] for r in rows])
    return {"cells": cells, "frontal": frontal, "patients": patients}


def _expected(cells: np.ndarray, uncertainty: str, blank: str):
    pos, neg, unc, bl = (cells == "1.0"), (cells == "0.0"), (cells == "-1.0"), (cells == "")
    assert (pos | neg | unc | bl).all()  # the real file has only these four cell kinds
    label = pos | (unc & (uncertainty == "ones"))
    ignored = (unc & (uncertainty == "ignore")) | (bl & (blank == "ignore"))
    return label.astype(np.float32), (~ignored).astype(np.float32)


@pytest.mark.parametrize("uncertainty", ["ones", "zeros", "ignore"])
def test_full_scale_counts_per_policy(real_csv, direct, uncertainty):
    ds = load_chexpert(real_csv, classes="all", uncertainty=uncertainty)
    assert len(ds) == N_ROWS and ds.class_names == CHEXPERT_CLASSES and ds.task == "multilabel"
    counts = ds.label_counts()
    for j, c in enumerate(CHEXPERT_CLASSES):
        cells = direct["cells"][c]
        n1, n0, nu, nb = (int((cells == v).sum()) for v in ("1.0", "0.0", "-1.0", ""))
        assert n1 + n0 + nu + nb == N_ROWS
        want = {"ones": (n1 + nu, n0 + nb, 0), "zeros": (n1, n0 + nu + nb, 0), "ignore": (n1, n0 + nb, nu)}
        assert (counts[c]["positive"], counts[c]["negative"], counts[c]["ignored"]) == want[uncertainty], c
        label, mask = _expected(cells, uncertainty, "negative")
        np.testing.assert_array_equal(ds.labels[:, j], label)
        np.testing.assert_array_equal(ds.mask[:, j], mask)
    np.testing.assert_array_equal(ds.patient_ids, direct["patients"])
    assert ds.patients.size == N_PATIENTS


def test_full_scale_blank_ignored_frontal_only_default_classes(real_csv, direct):
    ds = load_chexpert(real_csv, uncertainty="ones", blank="ignore", frontal_only=True)
    assert ds.class_names == COMPETITION_CLASSES
    keep = direct["frontal"]
    assert len(ds) == int(keep.sum()) < N_ROWS
    for j, c in enumerate(COMPETITION_CLASSES):
        label, mask = _expected(direct["cells"][c][keep], "ones", "ignore")
        np.testing.assert_array_equal(ds.labels[:, j], label)
        np.testing.assert_array_equal(ds.mask[:, j], mask)
    assert all(re.fullmatch(r"patient\d{5}", p) for p in ds.patient_ids[:1000])


HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_CLASSES]


def _row(path, view="Frontal", **cells):
    return [path, "Female", "60", view, "AP" if view == "Frontal" else "",
            *[cells.get(c.replace(" ", "_"), "") for c in CHEXPERT_CLASSES]]


def _write_csv(path, rows, header=HEADER):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _small_layout(tmp_path, patients=(1, 2, 3, 4, 5, 6), split="train"):
    """A CheXpert-v1.0-small folder with real JPEG files (gray, 40x48) and a CSV."""
    root = tmp_path / "CheXpert-v1.0-small"
    rows = []
    rng = np.random.default_rng(0)
    for p in patients:
        for view in ("frontal", "lateral"):
            rel = f"CheXpert-v1.0-small/{split}/patient{p:05d}/study1/view{1 if view == 'frontal' else 2}_{view}.jpg"
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(tmp_path / rel)
            rows.append(_row(rel, view.capitalize(), Edema="1.0" if p % 2 else "0.0",
                             Atelectasis="-1.0" if p % 3 == 0 else "", Cardiomegaly="1.0"))
    _write_csv(root / f"{split if split == 'train' else 'valid'}.csv", rows)
    return root


def test_streams_images_from_the_real_layout(tmp_path):
    root = _small_layout(tmp_path)
    ds = load_chexpert(root, uncertainty="ignore", frontal_only=True)
    assert len(ds) == 6 and all(p.endswith("frontal.jpg") for p in ds.paths)
    assert list(ds.patient_ids) == [f"patient{p:05d}" for p in range(1, 7)]
    atel = ds.class_names.index("Atelectasis")
    np.testing.assert_array_equal(ds.mask[:, atel], [1, 1, 0, 1, 1, 0])
    batch = next(iter(ds.tf_dataset(32, batch_size=4, center_crop=True)))
    assert batch["image"].shape == (4, 32, 32, 3)
    img = batch["image"].numpy()
    assert img.min() >= 0 and img.max() <= 1 and np.allclose(img[..., 0], img[..., 2])  # gray -> 3 channels
    np.testing.assert_array_equal(batch["label"].numpy(), ds.labels[:4])
    np.testing.assert_array_equal(batch["mask"].numpy(), ds.mask[:4])


def test_splits_use_valid_csv_as_test_and_refuse_leakage(tmp_path):
    root = _small_layout(tmp_path, patients=range(1, 11))
    _small_layout(tmp_path, patients=(64541, 64542), split="valid")
    parts = chexpert_splits(root, val_fraction=0.2, seed=3)
    assert set(parts["test"].patient_ids) == {"patient64541", "patient64542"}
    assert set(parts["train"].patient_ids).isdisjoint(parts["val"].patient_ids)
    assert len(parts["train"]) + len(parts["val"]) == 20
    _small_layout(tmp_path, patients=(64541, 7), split="valid")  # patient00007 is also in train.csv
    with pytest.raises(PatientLeakageError, match="patient00007"):
        chexpert_splits(root, val_fraction=0.2, seed=3)


@pytest.mark.parametrize("rows, problem, line", [
    ([_row("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", Edema="2.0")],
     "unknown label value '2.0'", 2),
    ([_row("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"),
      _row("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg")], "duplicate image path", 3),
    ([_row("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"),
      _row("../secrets/patient00002/study1/view1_frontal.jpg")], "escapes the data root", 3),
    ([_row("/etc/patient00001/study1/view1_frontal.jpg")], "absolute image path", 2),
    ([_row("CheXpert-v1.0-small/train/nobody/study1/view1_frontal.jpg")], "no 'patientNNNNN'", 2),
])
def test_bad_rows_are_refused_with_file_and_line(tmp_path, rows, problem, line):
    path = _write_csv(tmp_path / "train.csv", rows)
    with pytest.raises(CSVFormatError, match=re.escape(problem)) as info:
        load_chexpert(path)
    assert str(path) in str(info.value) and f"line {line}" in str(info.value)


def test_missing_column_and_bad_policy_are_refused(tmp_path):
    header = [h for h in HEADER if h != "Edema"]
    path = _write_csv(tmp_path / "train.csv", [_row("CheXpert-v1.0-small/train/patient00001/s/v.jpg")[:-1]], header)
    with pytest.raises(CSVFormatError, match=r"missing required column\(s\) \['Edema'\]") as info:
        load_chexpert(path)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match="unknown CheXpert observation"):
        load_chexpert(path, classes=["Edemaa"])
    with pytest.raises(ValueError, match="uncertainty policy"):
        load_chexpert(path, classes=["Atelectasis"], uncertainty="maybe")
