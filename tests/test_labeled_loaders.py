"""NIH, PatchCamelyon, MedMNIST, MIMIC-CXR, generic CSV/folder and BreakHis tiling loaders on real
files (the shared data) or files written here in the real layouts."""
from __future__ import annotations

import csv
import os
import re

import h5py
import numpy as np
import pytest
from PIL import Image

from medfound.data.images import read_image
from medfound.data.labeled import load_task_splits
from medfound.data.labeled.base import CSVFormatError, DatasetFormatError, prepare_image
from medfound.data.labeled.generic import load_csv, load_folder
from medfound.data.labeled.medmnist import load_medmnist
from medfound.data.labeled.mimic import load_mimic, mimic_splits
from medfound.data.labeled.nih import NIH_CLASSES, load_nih, nih_splits
from medfound.data.labeled.pcam import H5Source, load_camelyon_patches, load_pcam
from medfound.data.labeled.tiling import load_breakhis, parse_breakhis_name, tile_boxes


# --- NIH ChestX-ray14 (real sample) ---

def test_nih_real_sample_labels_and_patient_split(shared_data):
    root = shared_data / "nih-cxr14-sample"
    ds = load_nih(root)
    with open(root / "Data_Entry_2017_v2020.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(ds) == len(rows) == 1000 and ds.patients.size == 264
    for i, r in enumerate(rows):
        findings = set(r["Finding Labels"].split("|")) - {"No Finding"}
        assert {NIH_CLASSES[j] for j in np.flatnonzero(ds.labels[i])} == findings
        assert os.path.basename(ds.paths[i]) == r["Image Index"]
        assert ds.patient_ids[i] == str(int(r["Patient ID"]))
    assert ds.labels[[r["Finding Labels"] == "No Finding" for r in rows]].sum() == 0
    parts = nih_splits(root, seed=2)
    sets = [set(parts[k].patient_ids) for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sum(len(p) for p in parts.values()) == 1000
    batch = next(iter(parts["test"].tf_dataset(32, batch_size=16)))  # the sample has RGBA files too
    assert batch["image"].shape == (16, 32, 32, 3) and batch["label"].shape == (16, 14)
    assert 0 <= float(batch["image"].numpy().min()) and float(batch["image"].numpy().max()) <= 1


def test_nih_official_lists_define_the_test_split(shared_data, tmp_path):
    src = shared_data / "nih-cxr14-sample"
    (tmp_path / "images").symlink_to(src / "images")
    with open(src / "Data_Entry_2017_v2020.csv", newline="") as f:
        rows = list(csv.reader(f))
    with open(tmp_path / "Data_Entry_2017_v2020.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    test_patients = {r[3] for r in rows[1:]}
    test_patients = set(sorted(test_patients)[:50])
    (tmp_path / "test_list.txt").write_text("\n".join(r[0] for r in rows[1:] if r[3] in test_patients))
    (tmp_path / "train_val_list.txt").write_text("\n".join(r[0] for r in rows[1:] if r[3] not in test_patients))
    parts = nih_splits(tmp_path)
    assert set(parts["test"].patient_ids) == test_patients
    # A list that puts one patient's images on both sides is refused.
    leak = next(r for r in rows[1:] if r[3] in test_patients)
    with open(tmp_path / "train_val_list.txt", "a") as f:
        f.write("\n" + leak[0])
    (tmp_path / "test_list.txt").write_text("\n".join(r[0] for r in rows[1:] if r[3] in test_patients and r != leak))
    with pytest.raises(ValueError, match=f"leakage.*{leak[3]}"):
        nih_splits(tmp_path)


def test_nih_unknown_finding_is_refused(tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / "00000001_000.png")
    (tmp_path / "Data_Entry_2017.csv").write_text(
        "Image Index,Finding Labels,Patient ID\n00000001_000.png,Cardiomegaly|Flu,1\n")
    with pytest.raises(CSVFormatError, match=r"line 2: unknown finding 'Flu'"):
        load_nih(tmp_path)


# --- PatchCamelyon (.h5 files written here in the real layout) ---

def _write_pcam(root, sizes=(("train", 40), ("valid", 12), ("test", 12))):
    rng = np.random.default_rng(0)
    data = {}
    for split, n in sizes:
        x = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        y = rng.integers(0, 2, (n, 1, 1, 1), dtype=np.uint8)
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
            f.create_dataset("x", data=x, chunks=(min(8, n), 96, 96, 3))
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
            f.create_dataset("y", data=y)
        data[split] = (x, y)
    return data


class RecordingH5Source(H5Source):
    """A real H5Source that also notes how many rows each read asked for."""

    def __init__(self, *args):
        super().__init__(*args)
        self.reads = []

    def read(self, rows):
        self.reads.append(len(rows))
        return super().read(rows)


def test_pcam_streams_in_chunks_and_keeps_pixels(tmp_path):
    data = _write_pcam(tmp_path)
    ds = load_pcam(tmp_path, "train")
    assert ds.task == "binary" and len(ds) == 40
    np.testing.assert_array_equal(ds.labels[:, 0], data["train"][1].reshape(-1))
    ds.source = RecordingH5Source(tmp_path / "camelyonpatch_level_2_split_train_x.h5", "x")
    seen = {}
    for batch in ds.tf_dataset(96, batch_size=7, shuffle=True, seed=1, chunk_size=16):
        for img, label, i in zip(batch["image"].numpy(), batch["label"].numpy(), batch["index"].numpy()):
            seen[int(i)] = True
            np.testing.assert_allclose(img, data["train"][0][i] / 255.0, atol=1e-5)
            assert label[0] == data["train"][1].reshape(-1)[i]
    assert sorted(seen) == list(range(40))
    assert max(ds.source.reads) <= 16  # never the whole file at once
    sub = ds.subset([39, 3, 3])  # subsets and repeated rows read correctly too
    imgs = next(iter(sub.tf_dataset(96, batch_size=3)))["image"].numpy()
    np.testing.assert_allclose(imgs[0], data["train"][0][39] / 255.0, atol=1e-5)
    np.testing.assert_allclose(imgs[2], data["train"][0][3] / 255.0, atol=1e-5)
    parts = load_task_splits("camelyon", tmp_path)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [40, 12, 12]


def test_pcam_bad_files_are_refused(tmp_path):
    _write_pcam(tmp_path, sizes=(("valid", 4),))
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_valid_y.h5", "w") as f:
        f.create_dataset("y", data=np.full((4, 1, 1, 1), 2, np.uint8))
    with pytest.raises(DatasetFormatError, match=r"split_valid_y\.h5: label 2 at row 0"):
        load_pcam(tmp_path, "valid")
    (tmp_path / "camelyonpatch_level_2_split_test_x.h5.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(DatasetFormatError, match="gunzip"):
        load_pcam(tmp_path, "test")


# --- MedMNIST (real PneumoniaMNIST) ---

def test_pneumoniamnist_official_counts_and_pixels(shared_data):
    path = shared_data / "pneumoniamnist.npz"
    parts = load_task_splits("medmnist", path)
    counts = {k: (int((v.labels == 0).sum()), int((v.labels == 1).sum())) for k, v in parts.items()}
    assert counts == {"train": (1214, 3494), "val": (135, 389), "test": (234, 390)}
    assert parts["train"].task == "binary"
    raw = np.load(path)["test_images"]
    batch = next(iter(parts["test"].tf_dataset(28, batch_size=5)))
    np.testing.assert_allclose(batch["image"].numpy()[..., 1], raw[:5] / 255.0, atol=1e-5)


def test_medmnist_multiclass_and_bad_keys(tmp_path):
    path = tmp_path / "organamnist.npz"
    labels = np.array([[0], [2], [1], [2]], np.uint8)
    np.savez(path, train_images=np.zeros((4, 28, 28), np.uint8), train_labels=labels)
    ds = load_medmnist(path, "train")
    assert ds.task == "multiclass" and ds.labels.shape == (4, 3)
    np.testing.assert_array_equal(ds.labels.argmax(1), labels[:, 0])
    with pytest.raises(DatasetFormatError, match="missing 'test_images'"):
        load_medmnist(path, "test")


# --- MIMIC-CXR-JPG (CSVs and JPEGs written here in the real layout) ---

def _write_mimic(root):
    chex_header = ["subject_id", "study_id", "Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                   "Pleural Effusion"]
    chex = [["10000032", "50414267", "1.0", "", "-1.0", "0.0", ""],
            ["10000032", "53189527", "", "1.0", "", "", "1.0"],
            ["10000764", "57375967", "-1.0", "0.0", "1.0", "", ""]]
    meta = [["dicom_id", "subject_id", "study_id", "ViewPosition"],
            ["02aa804e-bde0afdd", "10000032", "50414267", "PA"],
            ["174413ec-4ec4c1f7", "10000032", "50414267", "LATERAL"],
            ["2a2277a9-b0ded155", "10000032", "53189527", "AP"],
            ["096052b7-d256dc40", "10000764", "57375967", "PA"],
            ["8959e402-2175d68d", "10000898", "50771383", "PA"]]  # a study without labels
    with open(root / "mimic-cxr-2.0.0-chexpert.csv", "w", newline="") as f:
        csv.writer(f).writerows([chex_header, *chex])
    with open(root / "mimic-cxr-2.0.0-metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows(meta)
    with open(root / "mimic-cxr-2.0.0-split.csv", "w", newline="") as f:
        csv.writer(f).writerows([["dicom_id", "study_id", "subject_id", "split"],
                                 ["02aa804e-bde0afdd", "50414267", "10000032", "train"],
                                 ["174413ec-4ec4c1f7", "50414267", "10000032", "train"],
                                 ["2a2277a9-b0ded155", "53189527", "10000032", "train"],
                                 ["096052b7-d256dc40", "57375967", "10000764", "test"]])
    for d, s, t, _ in meta[1:]:
        p = root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{t}" / f"{d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((36, 40), 100, np.uint8)).save(p)


def test_mimic_join_views_policies_and_splits(tmp_path):
    _write_mimic(tmp_path)
    ds = load_mimic(tmp_path, uncertainty="ignore")
    assert [os.path.basename(p) for p in ds.paths] == ["02aa804e-bde0afdd.jpg", "2a2277a9-b0ded155.jpg",
                                                       "096052b7-d256dc40.jpg"]
    assert all(os.path.isfile(p) for p in ds.paths)
    np.testing.assert_array_equal(ds.labels, [[1, 0, 0, 0, 0], [0, 1, 0, 0, 1], [0, 0, 1, 0, 0]])
    np.testing.assert_array_equal(ds.mask, [[1, 1, 0, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    assert list(ds.patient_ids) == ["10000032", "10000032", "10000764"]
    assert len(load_mimic(tmp_path, frontal_only=False)) == 4
    parts = mimic_splits(tmp_path)
    assert set(parts["test"].patient_ids) == {"10000764"} and len(parts["train"]) == 2
    batch = next(iter(ds.tf_dataset(32, batch_size=3)))
    np.testing.assert_allclose(batch["image"].numpy(), 100 / 255.0, atol=1e-3)


# --- generic CSV, folders, Camelyon-style patches ---

def _png(path, value=0, size=(20, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)


def test_generic_csv_multiclass_multilabel_and_validation(tmp_path):
    for i in range(6):
        _png(tmp_path / "img" / f"{i}.png", value=40 * i)
    (tmp_path / "labels.csv").write_text("path,label,patient\n" + "".join(
        f"img/{i}.png,{['cyst', 'normal', 'tumor'][i % 3]},pt{i // 2}\n" for i in range(6)))
    ds = load_csv(tmp_path / "labels.csv", patient_column="patient")
    assert ds.task == "multiclass" and ds.class_names == ("cyst", "normal", "tumor")
    np.testing.assert_array_equal(ds.labels.argmax(1), [0, 1, 2, 0, 1, 2])
    assert list(ds.patient_ids) == ["pt0", "pt0", "pt1", "pt1", "pt2", "pt2"]
    (tmp_path / "ml.csv").write_text("path,a,b\nimg/0.png,1,\nimg/1.png,0,1\n")
    ml = load_csv(tmp_path / "ml.csv", label_columns=["a", "b"])
    assert ml.task == "multilabel"
    np.testing.assert_array_equal(ml.mask, [[1, 0], [1, 1]])
    cases = {
        "path,label\nimg/0.png,cyst\nimg/0.png,tumor\n": ("duplicate image path", 3),
        "path,label\n../img/0.png,cyst\n": ("escapes the data root", 2),
        "path,label\n/etc/passwd,cyst\n": ("absolute image path", 2),
        "path,label\nimg/0.png,cyst\nimg/1.png,flu\n": ("unknown label value 'flu'", 3),
        "path,labels\nimg/0.png,cyst\n": ("missing required column(s) ['label']", 1),
        "path,label\nimg/0.png,cyst\nimg/9.png,cyst\n": ("not found", 3),
        "path,label\nimg/0.png,cyst,extra\n": ("row has 3 fields", 2),
    }
    for text, (problem, line) in cases.items():
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(DatasetFormatError, match=re.escape(problem)) as info:
            load_csv(bad, classes=["cyst", "tumor"])
        assert str(bad) in str(info.value) and f"line {line}" in str(info.value), info.value


def test_camelyon_patch_folders_group_by_patient(tmp_path):
    for cls, value in (("normal", 10), ("tumor", 200)):
        for p in (4, 9):
            for k in range(2):
                _png(tmp_path / cls / f"patch_patient_{p:03d}_node_1_x_{k * 96}_y_0.png", value, (32, 32))
    ds = load_camelyon_patches(tmp_path)
    assert ds.task == "binary" and ds.class_names == ("tumor",) and len(ds) == 8
    assert sorted(set(ds.patient_ids)) == ["patient_004", "patient_009"]
    batch = next(iter(ds.tf_dataset(32, batch_size=8)))
    means = batch["image"].numpy().mean(axis=(1, 2, 3))
    np.testing.assert_array_equal(means > 0.5, batch["label"].numpy()[:, 0] == 1)
    _png(tmp_path / "tumor" / "anonymous.png", 0, (32, 32))
    with pytest.raises(DatasetFormatError, match="anonymous.png: no patient/slide id"):
        load_camelyon_patches(tmp_path)
    assert len(load_folder(tmp_path)) == 9  # the generic folder loader lets it be its own patient


# --- BreakHis tiling (real images) ---

def test_breakhis_tiles_labels_patients_and_pixels(shared_data):
    root = shared_data / "breakhis"
    files = sorted(p.name for p in root.glob("SOB_*.png"))
    assert tile_boxes(460, 700, 224).shape == (6, 4) and tile_boxes(460, 700, 96).shape == (28, 4)
    ds = load_breakhis(root, tile=224)
    assert len(ds) == 6 * len(files) and ds.task == "binary"
    for name in files:
        rows = [i for i, p in enumerate(ds.paths) if p.endswith(name)]
        assert len(rows) == 6
        assert set(ds.labels[rows, 0]) == {1.0 if name.startswith("SOB_M") else 0.0}
        assert set(ds.patient_ids[rows]) == {"-".join(name.split("-")[1:3])}
    assert parse_breakhis_name("SOB_B_A-14-22549AB-40-001.png")["patient"] == "14-22549AB"
    small = load_breakhis(root, tile=96, magnifications=[40])
    assert len(small) == 28 * sum("-40-" in f for f in files)
    # the streamed tile is the crop of the decoded image at its box
    i = 4
    batch = next(iter(ds.subset([i]).tf_dataset(224, batch_size=1)))
    t, l, h, w = ds.boxes[i]
    np.testing.assert_allclose(batch["image"].numpy()[0], read_image(ds.paths[i])[t:t + h, l:l + w], atol=2e-3)
    parts = load_task_splits("breakhis", root, tile=96, seed=0)
    by_split = {k: set(v.patient_ids) for k, v in parts.items()}
    assert sum(len(v) for v in by_split.values()) == len(set(ds.patient_ids))
    assert "14-25197" in set.union(*by_split.values())  # 5 images of one patient, all in one split


def test_prepare_image_center_crop_and_channels():
    image = np.zeros((40, 80), np.uint8)
    image[:, 20:60] = 255  # the central square is white
    out = prepare_image(image[..., None], (16, 16), center_crop=True).numpy()
    assert out.shape == (16, 16, 3) and out.min() > 0.99
    out = prepare_image(image[..., None], (16, 16)).numpy()
    assert out[:, 0].max() < 0.01 and out[:, 8].min() > 0.99
    rgba = np.concatenate([np.full((8, 8, 3), 0.25, np.float32), np.zeros((8, 8, 1), np.float32)], -1)
    np.testing.assert_allclose(prepare_image(rgba, (8, 8)).numpy(), 0.25, atol=1e-6)
