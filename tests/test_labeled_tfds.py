"""TFDS sources: the real TFDS ``chexpert`` and ``patch_camelyon`` builders, prepared here (no download)
from a CheXpert-v1.0-small folder and PatchCamelyon HDF5 files written by the test, then loaded
through medfound and checked against the written CSV cells, HDF5 arrays and image files."""
from __future__ import annotations

import csv
import gzip
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

from medfound.data.labeled import is_tfds_data, label_fraction_subset, load_task_splits
from medfound.data.labeled.base import DatasetFormatError, LabeledDataset
from medfound.data.labeled.tfds_sources import (TFDSImages, load_tfds_chexpert, prepare_chexpert,
                                                prepare_patch_camelyon)

tfds = pytest.importorskip("tensorflow_datasets")

# The real CheXpert-v1.0 CSV header, written out here so a wrong column order in the package shows.
HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
          "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
          "Fracture,Support Devices").split(",")
OBSERVATIONS = HEADER[5:]
COMPETITION = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
CELLS = ["1.0", "0.0", "-1.0", ""]
VALID_SIZE = 32  # valid images are all this size, so they can be compared pixel for pixel


# --- CheXpert ---

def _write_split(root, split: str, patients: list[int], rng: np.random.Generator, sized: bool) -> list[dict]:
    """Writes grayscale JPEGs and {split}.csv; returns the rows as written."""
    folder = root / "CheXpert-v1.0-small"
    rows = []
    for p in patients:
        for study in range(1, 1 + (p % 2) + 1):
            views = ["view1_frontal"] + (["view2_lateral"] if (p + study) % 3 == 0 else [])
            for view in views:
                rel = f"CheXpert-v1.0-small/{split}/patient{p:05d}/study{study}/{view}.jpg"
                h, w = (VALID_SIZE, VALID_SIZE) if sized else (int(rng.integers(28, 48)), int(rng.integers(28, 48)))
                level = 30 + 17 * len(rows)  # a distinct brightness per image
                pixels = np.clip(level + rng.integers(-10, 10, (h, w)), 0, 255).astype(np.uint8)
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels, mode="L").save(root / rel, quality=95)
                rows.append({"Path": rel, "Sex": "Female", "Age": "60",
                             "Frontal/Lateral": "Lateral" if "lateral" in view else "Frontal", "AP/PA": "AP"})
    cells = rng.choice(CELLS, size=(len(rows), len(OBSERVATIONS)))
    for j in range(len(OBSERVATIONS)):  # every column holds all four kinds of cell
        cells[:4, j] = rng.permutation(CELLS)
    for row, values in zip(rows, cells):
        row.update(zip(OBSERVATIONS, values.tolist()))
    with open(folder / f"{split}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return rows


@pytest.fixture(scope="module")
def chexpert(tmp_path_factory):
    """A manual_dir in the CheXpert-v1.0-small layout, prepared once with the real TFDS builder."""
    base = tmp_path_factory.mktemp("chexpert")
    manual = base / "manual"
    rng = np.random.default_rng(0)
    train = _write_split(manual, "train", list(range(1, 9)), rng, sized=False)
    valid = _write_split(manual, "valid", [64541, 64542, 64543], rng, sized=True)
    data_dir = base / "tfds"
    builder = prepare_chexpert(manual, data_dir)
    return {"manual": manual, "data_dir": data_dir, "train": train, "valid": valid, "builder": builder}


def _expected(rows: list[dict], classes: list[str], uncertainty: str, blank: str):
    cells = np.array([[r[c] for c in classes] for r in rows])
    label = (cells == "1.0") | ((cells == "-1.0") & (uncertainty == "ones"))
    ignored = ((cells == "-1.0") & (uncertainty == "ignore")) | ((cells == "") & (blank == "ignore"))
    return label.astype(np.float32), (~ignored).astype(np.float32)


def _by_path(rows: list[dict]) -> dict[str, dict]:
    return {r["Path"]: r for r in rows}


def test_chexpert_prepared_by_the_real_builder(chexpert):
    builder = tfds.builder("chexpert", data_dir=chexpert["data_dir"])
    assert builder.is_prepared() and builder.version == "3.1.0"
    assert builder.info.splits["train"].num_examples == len(chexpert["train"])
    assert builder.info.splits["validation"].num_examples == len(chexpert["valid"])


@pytest.mark.parametrize("uncertainty", ["ones", "zeros", "ignore"])
@pytest.mark.parametrize("blank", ["negative", "ignore"])
def test_chexpert_labels_and_masks_match_the_csv(chexpert, uncertainty, blank):
    for split, rows in (("train", chexpert["train"]), ("validation", chexpert["valid"])):
        ds = load_tfds_chexpert(chexpert["data_dir"], split, classes="all", uncertainty=uncertainty, blank=blank)
        assert isinstance(ds.source, TFDSImages) and ds.class_names == tuple(OBSERVATIONS)
        written = _by_path(rows)
        assert sorted(ds.meta["tfds_key"].tolist()) == sorted(written)
        ordered = [written[p] for p in ds.meta["tfds_key"].tolist()]
        labels, mask = _expected(ordered, OBSERVATIONS, uncertainty, blank)
        np.testing.assert_array_equal(ds.labels, labels)
        np.testing.assert_array_equal(ds.mask, mask)
        np.testing.assert_array_equal(ds.patient_ids, [r["Path"].split("/")[2] for r in ordered])
        np.testing.assert_array_equal(ds.meta["view"], [r["Frontal/Lateral"] for r in ordered])


def test_chexpert_task_splits_competition_classes_and_patients(chexpert):
    parts = load_task_splits("chexpert", "tfds:chexpert", seed=3, data_dir=str(chexpert["data_dir"]),
                             uncertainty="ignore", val_fraction=0.25)
    assert set(parts) == {"train", "val", "test"}
    assert all(p.class_names == tuple(COMPETITION) for p in parts.values())
    train_keys = set(parts["train"].meta["tfds_key"]) | set(parts["val"].meta["tfds_key"])
    assert train_keys == set(_by_path(chexpert["train"]))
    assert set(parts["test"].meta["tfds_key"]) == set(_by_path(chexpert["valid"]))
    assert not set(parts["train"].patient_ids) & set(parts["val"].patient_ids)
    assert len(parts["val"].patients) == 2  # 25 % of 8 patients
    written = _by_path(chexpert["train"])
    val = parts["val"]
    labels, mask = _expected([written[p] for p in val.meta["tfds_key"]], COMPETITION, "ignore", "negative")
    np.testing.assert_array_equal(val.labels, labels)
    np.testing.assert_array_equal(val.mask, mask)
    masked = sum(int((p.mask == 0).sum()) for p in (parts["train"], val))
    uncertain = sum(r[c] == "-1.0" for r in chexpert["train"] for c in COMPETITION)
    assert masked == uncertain > 0  # exactly the uncertain cells are ignored
    frontal = load_task_splits("chexpert", "tfds:chexpert", data_dir=chexpert["data_dir"], frontal_only=True)
    n_frontal = sum(r["Frontal/Lateral"] == "Frontal" for r in chexpert["train"])
    assert len(frontal["train"]) + len(frontal["val"]) == n_frontal < len(chexpert["train"])


def _stream(ds, size: int, **kw) -> dict[str, np.ndarray]:
    batches = list(ds.tf_dataset(size, 4, **kw))
    return {k: np.concatenate([b[k].numpy() for b in batches]) for k in ("image", "label", "mask", "index")}


def test_chexpert_images_stream_decoded_and_resized(chexpert):
    test = load_tfds_chexpert(chexpert["data_dir"], "validation")
    out = _stream(test, VALID_SIZE)
    assert sorted(out["index"].tolist()) == list(range(len(test)))
    assert out["image"].shape == (len(test), VALID_SIZE, VALID_SIZE, 3) and out["image"].dtype == np.float32
    np.testing.assert_array_equal(out["label"], test.labels[out["index"]])
    np.testing.assert_array_equal(out["mask"], test.mask[out["index"]])
    for image, i in zip(out["image"], out["index"]):
        want = np.asarray(Image.open(chexpert["manual"] / test.meta["tfds_key"][i]), np.float32) / 255.0
        for c in range(3):  # gray repeated to three channels; JPEG decoders may differ by a level
            np.testing.assert_allclose(image[..., c], want, atol=2.5 / 255)

    train = load_tfds_chexpert(chexpert["data_dir"], "train")
    part = label_fraction_subset(train, 0.5, seed=1)
    assert isinstance(part.source, TFDSImages) and len(part) < len(train)
    out = _stream(part, 24, shuffle=True, seed=5)
    assert sorted(out["index"].tolist()) == list(range(len(part)))  # only the subset's rows, each once
    assert out["image"].shape[1:] == (24, 24, 3)
    assert out["image"].min() >= 0.0 and out["image"].max() <= 1.0
    for image, i in zip(out["image"], out["index"]):  # the right image: its mean brightness
        want = np.asarray(Image.open(chexpert["manual"] / part.meta["tfds_key"][i]), np.float32).mean() / 255.0
        assert abs(float(image.mean()) - want) < 0.02
    np.testing.assert_array_equal(out["label"], part.labels[out["index"]])


def test_chexpert_not_prepared_and_bad_manual_dir(tmp_path, chexpert):
    empty = tmp_path / "no-tfds-here"
    with pytest.raises(FileNotFoundError, match="not prepared") as err:
        load_task_splits("chexpert", "tfds:chexpert", data_dir=empty)
    assert str(empty) in str(err.value)
    missing = tmp_path / "no-manual"
    with pytest.raises(FileNotFoundError) as err:
        load_task_splits("chexpert", "tfds:chexpert", data_dir=empty, manual_dir=missing)
    assert str(missing / "CheXpert-v1.0-small") in str(err.value)
    bad = tmp_path / "bad"
    shutil.copytree(chexpert["manual"], bad)
    text = (bad / "CheXpert-v1.0-small" / "valid.csv").read_text()
    (bad / "CheXpert-v1.0-small" / "valid.csv").write_text(text.replace("Edema,Consolidation", "Consolidation,Edema"))
    with pytest.raises(DatasetFormatError, match="valid.csv: header must be the standard"):
        prepare_chexpert(bad, tmp_path / "out")
    assert not tfds.builder("chexpert", data_dir=tmp_path / "out").is_prepared()
    with pytest.raises(ValueError, match="tfds:chexpert"):
        load_task_splits("chexpert", "tfds:patch_camelyon", data_dir=empty)
    with pytest.raises(ValueError, match="no TFDS source"):
        load_task_splits("nih", "tfds:chexpert")
    assert is_tfds_data("tfds:chexpert") and not is_tfds_data(chexpert["manual"])


# --- PatchCamelyon ---

SIZES = {"train": 7, "valid": 4, "test": 5}


def _write_h5(path, key: str, array: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=array)


@pytest.fixture(scope="module")
def pcam(tmp_path_factory):
    """Original-format HDF5 files (train gzipped, as downloaded) and the TFDS dataset prepared from them."""
    base = tmp_path_factory.mktemp("pcam")
    h5_dir = base / "h5"
    h5_dir.mkdir()
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in SIZES.items():
        x = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        y = np.resize(np.array([0, 1], np.uint8), n)[rng.permutation(n)].reshape(n, 1, 1, 1)
        arrays[split] = (x, y)
        for part, array in (("x", x), ("y", y)):
            path = h5_dir / f"camelyonpatch_level_2_split_{split}_{part}.h5"
            _write_h5(path, part, array)
            if split == "train":  # the release ships .h5.gz
                with open(path, "rb") as fin, gzip.open(f"{path}.gz", "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                path.unlink()
    slides = [f"patient_00{i % 3}_node_{i % 2}" for i in range(SIZES["train"])]
    with open(h5_dir / "camelyonpatch_level_2_split_train_meta.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["", "coord_y", "coord_x", "tumor_patch", "center_tumor_patch", "wsi"])
        writer.writerows([i, 0, 0, False, False, s] for i, s in enumerate(slides))
    data_dir = base / "tfds"
    prepare_patch_camelyon(h5_dir, data_dir)
    return {"h5_dir": h5_dir, "data_dir": data_dir, "arrays": arrays, "slides": np.array(slides)}


def test_pcam_prepared_by_the_real_builder(pcam):
    builder = tfds.builder("patch_camelyon", data_dir=pcam["data_dir"])
    assert builder.is_prepared() and builder.version == "2.0.0"
    for tfds_split, split in (("train", "train"), ("validation", "valid"), ("test", "test")):
        assert builder.info.splits[tfds_split].num_examples == SIZES[split]
    example = next(iter(tfds.as_numpy(builder.as_dataset(split="validation").take(1))))
    row = int(example["id"].decode().split("_")[1])
    np.testing.assert_array_equal(example["image"], pcam["arrays"]["valid"][0][row])
    assert not list(pcam["data_dir"].glob(".medfound-pcam-*"))  # the gunzipped copies are gone


def test_pcam_labels_pixels_and_patients(pcam):
    parts = load_task_splits("camelyon", "tfds:patch_camelyon", data_dir=pcam["data_dir"], meta_dir=pcam["h5_dir"])
    for name, split in (("train", "train"), ("val", "valid"), ("test", "test")):
        ds = parts[name]
        x, y = pcam["arrays"][split]
        rows = ds.meta["row"]
        assert ds.task == "binary" and ds.class_names == ("tumor",)
        assert sorted(rows.tolist()) == list(range(SIZES[split]))
        np.testing.assert_array_equal(ds.labels[:, 0], y.reshape(-1)[rows])
        want_patients = pcam["slides"][rows] if split == "train" else [f"pcam-{split}-{r}" for r in rows]
        np.testing.assert_array_equal(ds.patient_ids, want_patients)
        out = _stream(ds, 96, shuffle=name == "train", seed=2)
        assert sorted(out["index"].tolist()) == list(range(len(ds)))
        np.testing.assert_array_equal(out["label"], ds.labels[out["index"]])
        np.testing.assert_allclose(out["image"], x[rows[out["index"]]].astype(np.float32) / 255.0, atol=1e-6)
    small = _stream(parts["test"], 32)
    assert small["image"].shape == (SIZES["test"], 32, 32, 3)
    assert 0.0 <= small["image"].min() and small["image"].max() <= 1.0


def test_tfds_source_reads_rows_and_streams_in_a_plain_labeled_dataset(pcam):
    """The TFDS source keeps the array-source protocol: ``read`` gives the images at record
    positions (it used to raise), and a LabeledDataset built anew around it streams."""
    ds = load_task_splits("camelyon", "tfds:patch_camelyon", data_dir=pcam["data_dir"])["val"]
    x = pcam["arrays"]["valid"][0]
    rows = np.array([3, 0, 3, 1])  # any order, repeats allowed
    images = ds.source.read(ds.source_rows[rows])
    assert isinstance(images, np.ndarray) and images.shape == (4, 96, 96, 3)
    np.testing.assert_array_equal(images, x[ds.meta["row"][rows]])
    fresh = LabeledDataset(labels=ds.labels, mask=ds.mask, patient_ids=ds.patient_ids, class_names=ds.class_names,
                           task=ds.task, source=ds.source, meta=dict(ds.meta))
    out = _stream(fresh, 96)
    np.testing.assert_allclose(out["image"], x[ds.meta["row"][out["index"]]] / 255.0, atol=1e-6)


def test_chexpert_source_reads_images_of_several_sizes(chexpert):
    train = load_tfds_chexpert(chexpert["data_dir"], "train", frontal_only=True)
    rows = train.source_rows[[0, len(train) - 1]]
    images = train.source.read(rows)
    assert isinstance(images, list) and len(images) == 2
    for image, key in zip(images, train.meta["tfds_key"][[0, len(train) - 1]]):
        want = np.asarray(Image.open(chexpert["manual"] / key))
        assert image.shape[:2] == want.shape
        assert abs(float(image.mean()) - float(want.mean())) < 2.0


def test_pcam_errors_name_the_path(tmp_path, pcam):
    empty = tmp_path / "tfds"
    with pytest.raises(FileNotFoundError, match="not prepared") as err:
        load_task_splits("camelyon", "tfds:patch_camelyon", data_dir=empty)
    assert str(empty) in str(err.value)
    partial = tmp_path / "h5"
    shutil.copytree(pcam["h5_dir"], partial)
    (partial / "camelyonpatch_level_2_split_test_y.h5").unlink()
    with pytest.raises(FileNotFoundError, match="camelyonpatch_level_2_split_test_y.h5") as err:
        load_task_splits("camelyon", "tfds:patch_camelyon", data_dir=empty, manual_dir=partial)
    assert str(partial) in str(err.value)
    assert not tfds.builder("patch_camelyon", data_dir=empty).is_prepared()


def test_finetune_and_evaluate_configs_accept_tfds_data(tmp_path):
    """`--data tfds:NAME` is not a path: validation must not refuse it as 'data not found'."""
    from medfound.finetune.config import FinetuneConfig

    ok = FinetuneConfig(module="random:tiny", task="chexpert", data="tfds:chexpert",
                        out_dir=str(tmp_path / "ft"))
    ok.validate()
    missing = FinetuneConfig(module="random:tiny", task="chexpert", data=str(tmp_path / "nope"),
                             out_dir=str(tmp_path / "ft"))
    with pytest.raises(ValueError, match="data not found"):
        missing.validate()
