"""Unlabeled sources (folder, CSV, .npz, TFRecords, TFDS), the TFRecord writer and its CLI."""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from medfound.cli import make_tfrecords as make_tfrecords_cli
from medfound.data.images import read_image
from medfound.data.tfrecords import write_tfrecords
from medfound.data.unlabeled import SourceError, open_unlabeled

RNG = np.random.default_rng(1)


def nih_patient(path: bytes | str) -> str:
    """Patient id from an NIH file name ``{patient:08d}_{followup:03d}.png``."""
    name = Path(path.decode() if isinstance(path, bytes) else path).name
    return str(int(name.split("_")[0]))


def test_nih_folder_streams_images_with_patient_ids(shared_data):
    source = open_unlabeled(shared_data / "nih-cxr14-sample")
    assert source.kind == "folder" and source.num_examples == 1000 and source.has_patients
    assert "264 patients" in source.description
    assert "00000001" not in source.description and ".png" not in source.description
    count = 0
    for element in source.dataset(seed=3).take(40):
        image = element["image"].numpy()
        assert image.shape == (64, 64, 3) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert element["patient"].numpy().decode() == nih_patient(element["path"].numpy())
        count += 1
    assert count == 40


def test_shuffle_is_seeded_and_repeat_is_endless(tmp_path):
    for i in range(8):
        Image.fromarray(RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    source = open_unlabeled(tmp_path)

    def order(seed):
        return [e["path"].numpy() for e in source.dataset(seed=seed)]
    first = order(1)
    assert first == order(1) and sorted(first) == sorted(order(2)) and first != order(2)
    assert sorted(first) == [e["path"].numpy() for e in source.dataset(shuffle=False)]
    assert len(list(source.dataset(repeat=True, shuffle=False).take(30))) == 30
    assert not source.has_patients and "no patient ids" in source.description


def test_breakhis_folder(shared_data):
    source = open_unlabeled(shared_data / "breakhis")
    assert source.num_examples == 12 and "12 PNG" in source.description
    sizes = {tuple(e["image"].shape) for e in source.dataset().take(2)}
    assert sizes == {(460, 700, 3)}


def test_nih_csv_source_and_patient_column(shared_data):
    csv_path = shared_data / "nih-cxr14-sample" / "Data_Entry_2017_v2020.csv"
    source = open_unlabeled(csv_path, patient_column="Patient ID")
    assert source.kind == "csv" and source.num_examples == 1000 and source.has_patients
    for element in source.dataset().take(10):
        assert element["patient"].numpy().decode() == nih_patient(element["path"].numpy())
    with pytest.raises(SourceError, match="patient column 'Subject' not found"):
        open_unlabeled(csv_path, patient_column="Subject")
    with pytest.raises(SourceError, match="path column 'file_name' not found"):
        open_unlabeled(csv_path, path_column="file_name")


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("bad_path, word", [
    ("../outside.png", "escapes the data root"),
    ("sub/../../outside.png", "escapes the data root"),
    ("/etc/passwd", "absolute image path"),
    ("C:\\images\\x.png", "absolute image path"),
])
def test_csv_paths_may_not_escape_the_root(tmp_path, bad_path, word):
    Image.new("L", (8, 8), 3).save(tmp_path / "ok.png")
    csv_path = _write_csv(tmp_path / "list.csv", [{"path": "ok.png"}, {"path": bad_path}])
    with pytest.raises(SourceError) as info:
        open_unlabeled(csv_path)
    assert word in str(info.value) and f"{csv_path}, line 3" in str(info.value)


def test_csv_missing_columns_and_root(tmp_path):
    Image.new("L", (8, 8), 3).save(tmp_path / "ok.png")
    csv_path = _write_csv(tmp_path / "list.csv", [{"name": "ok.png", "case": "7"}])
    with pytest.raises(SourceError, match="no path column found"):
        open_unlabeled(csv_path)
    source = open_unlabeled(csv_path, path_column="name", patient_column="case")
    assert source.has_patients and [e["patient"].numpy() for e in source.dataset()] == [b"7"]
    with pytest.raises(SourceError, match="not found under"):
        open_unlabeled(csv_path, path_column="name", root=tmp_path / "elsewhere")


def test_pneumoniamnist_npz_split_streams_the_stored_pixels(shared_data):
    npz = shared_data / "pneumoniamnist.npz"
    source = open_unlabeled(npz, split="val")
    assert source.num_examples == 524 and not source.has_patients
    reference = np.load(npz)["val_images"]
    for element in source.dataset(seed=5).take(20):
        index = int(element["path"].numpy().decode().rsplit("/", 1)[1])
        image = element["image"].numpy()
        assert image.shape == (28, 28, 3)
        np.testing.assert_array_equal(image[..., 0], reference[index] / np.float32(255))
    with pytest.raises(SourceError, match="no 'extra_images' array"):
        open_unlabeled(npz, split="extra")


def test_uncompressed_npz_is_memory_mapped(tmp_path):
    images = RNG.integers(0, 65536, (6, 5, 4)).astype(np.uint16)
    np.savez(tmp_path / "small.npz", train_images=images)
    source = open_unlabeled(tmp_path / "small.npz")
    array = source.load_array()
    assert isinstance(array, np.memmap)
    np.testing.assert_array_equal(array, images)
    got = {int(e["path"].numpy().decode().rsplit("/", 1)[1]): e["image"].numpy()
           for e in source.dataset()}
    np.testing.assert_allclose(got[3][..., 2], images[3] / 65535.0, atol=1e-7)


def test_tfrecord_round_trip_is_pixel_exact(shared_data, tmp_path):
    nih = shared_data / "nih-cxr14-sample"
    names = sorted(p.name for p in (nih / "images").glob("*.png"))[:30]
    gray16 = RNG.integers(0, 65536, (16, 12)).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "images16.png")
    rows = [{"file": f"images/{n}", "who": nih_patient(n)} for n in names]
    rows.append({"file": "extra/x16.png", "who": "99"})
    (tmp_path / "data" / "extra").mkdir(parents=True)
    (tmp_path / "data" / "images").symlink_to(nih / "images")
    (tmp_path / "images16.png").rename(tmp_path / "data" / "extra" / "x16.png")
    csv_path = _write_csv(tmp_path / "data" / "subset.csv", rows)
    source = open_unlabeled(csv_path, path_column="file", patient_column="who")
    shards = write_tfrecords(source, tmp_path / "out", num_shards=3)
    assert [p.name for p in shards] == [f"unlabeled-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [p.name for p in shards] + ["tfrecords.json"])  # no temporary files left behind
    manifest = json.loads((tmp_path / "out" / "tfrecords.json").read_text())
    assert manifest["count"] == 31 and manifest["has_patients"]
    back = open_unlabeled(tmp_path / "out")
    assert back.kind == "tfrecord" and back.num_examples == 31 and back.has_patients
    seen = {}
    for element in back.dataset(seed=0):
        path = element["path"].numpy().decode()
        np.testing.assert_array_equal(element["image"].numpy(), read_image(path))
        seen[path] = element["patient"].numpy().decode()
    assert len(seen) == 31 and seen[str(tmp_path / "data" / "extra" / "x16.png")] == "99"
    assert all(p == nih_patient(k) for k, p in seen.items() if "images/" in k)
    # A glob over the shards reads the same records.
    assert open_unlabeled(str(tmp_path / "out" / "unlabeled-*.tfrecord")).num_examples == 31


def test_skip_errors_skips_and_reports_bad_files_in_a_folder(tmp_path):
    for i in range(3):
        Image.fromarray(RNG.integers(0, 256, (10, 10), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "empty.png").write_bytes(b"")
    (tmp_path / "sub" / "notes.jpg").write_text("not a jpeg")
    strict = open_unlabeled(tmp_path)
    assert strict.num_examples == 5
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty.png: file is empty"):
        list(strict.dataset(shuffle=False))
    lenient = open_unlabeled(tmp_path, skip_errors=True)
    paths = sorted(Path(e["path"].numpy().decode()).name for e in lenient.dataset())
    assert paths == ["0.png", "1.png", "2.png"]
    reported = dict(lenient.skipped.items)
    assert set(reported) == {str(tmp_path / "sub" / "empty.png"), str(tmp_path / "sub" / "notes.jpg")}
    assert "not a recognised image" in reported[str(tmp_path / "sub" / "notes.jpg")]


def test_prepared_tfds_builder_is_read_locally(shared_data, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    images = np.load(shared_data / "pneumoniamnist.npz")["test_images"][:6]

    class MedfoundTinyXray(tfds.core.GeneratorBasedBuilder):
        """Six PneumoniaMNIST test images, prepared locally without any download."""
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"image": tfds.features.Image(shape=(28, 28, 1))}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, image in enumerate(images):
                yield i, {"image": image[:, :, None]}

    with pytest.raises(SourceError, match="not prepared"):
        open_unlabeled("tfds:medfound_tiny_xray", data_dir=tmp_path)
    MedfoundTinyXray(data_dir=str(tmp_path)).download_and_prepare()
    source = open_unlabeled("tfds:medfound_tiny_xray:train", data_dir=tmp_path)
    assert source.kind == "tfds" and source.num_examples == 6
    got = sorted(e["image"].numpy()[..., 1].tobytes() for e in source.dataset(seed=1))
    assert got == sorted((image / np.float32(255)).tobytes() for image in images)
    with pytest.raises(SourceError, match="no split 'validation'"):
        open_unlabeled("tfds:medfound_tiny_xray:validation", data_dir=tmp_path)


def test_make_tfrecords_command(shared_data, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    make_tfrecords_cli.register(parser.add_subparsers())
    args = parser.parse_args(["make-tfrecords", str(shared_data / "breakhis"),
                              "--out", str(tmp_path / "out"), "--shards", "2"])
    assert args.func(args) == 0
    assert "wrote 12 images to 2 shard(s)" in capsys.readouterr().out
    assert open_unlabeled(tmp_path / "out").num_examples == 12
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_text("no")
    from medfound.cli.main import main

    assert main(["make-tfrecords", str(tmp_path / "bad"), "--out", str(tmp_path / "out2"),
                 "--shards", "1"]) == 2
    assert "x.png: not a recognised image format" in capsys.readouterr().err
    assert not (tmp_path / "out2" / "tfrecords.json").exists()
    assert main(["make-tfrecords", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "out3")]) == 2
