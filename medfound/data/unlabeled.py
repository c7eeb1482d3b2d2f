"""Unlabeled image sources for self-supervised pretraining: folders, CSVs, MedMNIST .npz, TFRecords, TFDS.

Every source streams dicts {"image": float32 (H, W, 3) in [0, 1], "path": string, "patient": string
("" when unknown)} through tf.data; only file lists and metadata are held in memory (an .npz split
is memory-mapped when stored uncompressed, otherwise that one split array is read when the dataset
is built). Nothing is ever downloaded. Every ``dataset()`` can start part-way into its stream and
keep one shard of it (see ``medfound.data.sources``). Exactness of a skipped stream needs no
element to be dropped as a bad image (``skip_errors``): a dropped image shifts the stream by one,
and skipping counts stream positions, not images that decoded.

CSVs are read, and their image paths checked, by ``medfound.data.tables`` (the same rules as the
labeled loaders); TFRecords live in ``medfound.data.tfrecords``.
"""
from __future__ import annotations

import io
import os
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfound.data.images import DEFAULT_MAX_PIXELS, list_image_files, map_decode
from medfound.data.prepare import to_rgb_float
from medfound.data.sources import (WHOLE_STREAM, SourceError, StreamWindow, UnlabeledSource,
                                   index_stream)
from medfound.data.tables import CSVFormatError, CSVTable, read_csv_table, relative_paths, under
from medfound.data.tfrecords import TFRECORD_MANIFEST, TFRecordSource, is_tfrecord_folder, open_tfrecords

__all__ = ["FileSource", "NpzSource", "SourceError", "TFDSSource", "TFRECORD_MANIFEST", "TFRecordSource",
           "StreamWindow", "UnlabeledSource", "index_stream", "open_unlabeled"]

PATH_COLUMN_CANDIDATES = ("path", "Path", "image", "Image Index", "filename", "file", "image_path")
PATIENT_COLUMN_CANDIDATES = ("patient", "Patient ID", "patient_id", "PatientID", "case_id")
NIH_CSV_GLOB = "Data_Entry_2017*.csv"


@dataclass
class FileSource(UnlabeledSource):
    """Images stored as files (a folder or a CSV of paths), with one patient id per file ("" if unknown)."""

    paths: list[str] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    max_pixels: int = DEFAULT_MAX_PIXELS

    def dataset(self, *, shuffle: bool = True, seed: int = 0, repeat: bool = False,
                window: StreamWindow = WHOLE_STREAM):
        import tensorflow as tf

        paths = tf.constant(self.paths, tf.string)
        patients = tf.constant(self.patients, tf.string)
        ds = index_stream(len(self.paths), shuffle=shuffle, seed=seed, repeat=repeat,
                          window=window)
        ds = ds.map(lambda _, index: {"path": paths[index], "patient": patients[index]})
        ds = map_decode(ds, path_key="path", skip_errors=self.skip_errors, on_error=self.skipped,
                        max_pixels=self.max_pixels, defer_to=self.defer_to)
        ds = ds.map(lambda e: {"image": e["image"], "path": e["path"], "patient": e["patient"]})
        return self._finish(ds)


@dataclass
class NpzSource(UnlabeledSource):
    """One split of a MedMNIST-style .npz (``{split}_images``: (N, H, W) or (N, H, W, C) uint8/uint16)."""

    npz_path: str = ""
    key: str = ""
    shape: tuple = ()
    dtype: str = "uint8"

    def load_array(self) -> np.ndarray:
        """The split's image array: memory-mapped when stored uncompressed, else read (this split only)."""
        return _npz_member(self.npz_path, self.key)

    def dataset(self, *, shuffle: bool = True, seed: int = 0, repeat: bool = False,
                window: StreamWindow = WHOLE_STREAM):
        import tensorflow as tf

        array = self.load_array()
        if isinstance(array, np.memmap):
            # Read one row at a time from the file; converted with TF ops like every source.
            dtype = tf.as_dtype(array.dtype)

            def read(index):
                raw = tf.numpy_function(lambda i: np.asarray(array[int(i)]), [index], dtype, stateful=False)
                raw.set_shape(array.shape[1:])
                return to_rgb_float(raw)
        else:
            # Already in memory (a compressed .npz member): index it with TF ops. A Python
            # callback in a parallel map can deadlock when an exception tears the iterator down.
            pixels = tf.constant(array)

            def read(index):
                return to_rgb_float(tf.gather(pixels, index))
        prefix = f"{Path(self.npz_path).name}#{self.key}/"

        def load(_, index):
            path = tf.strings.join([prefix, tf.strings.as_string(index)])
            return {"image": read(index), "path": path, "patient": tf.constant("")}

        ds = index_stream(self.num_examples, shuffle=shuffle, seed=seed, repeat=repeat,
                          window=window)
        return self._finish(ds.map(load, num_parallel_calls=tf.data.AUTOTUNE))


@dataclass
class TFDSSource(UnlabeledSource):
    """A TFDS dataset already prepared under a local data_dir (never downloaded)."""

    name: str = ""
    split: str = "train"
    data_dir: str | None = None
    image_key: str = "image"

    def dataset(self, *, shuffle: bool = True, seed: int = 0, repeat: bool = False,
                window: StreamWindow = WHOLE_STREAM):
        """As the base class; skipped examples are read but their images are not decoded."""
        import tensorflow as tf
        import tensorflow_datasets as tfds

        builder = tfds.builder(self.name, data_dir=self.data_dir)
        read_config = tfds.ReadConfig(shuffle_seed=seed, add_tfds_id=True)
        key = self.image_key
        feature = builder.info.features[key]
        ds = builder.as_dataset(split=self.split, shuffle_files=shuffle, read_config=read_config,
                                decoders={key: tfds.decode.SkipDecoding()})

        def convert(example):
            image = to_rgb_float(feature.decode_example(example[key]))
            image.set_shape((None, None, 3))
            return {"image": image, "path": example["tfds_id"], "patient": tf.constant("")}

        if shuffle:
            ds = ds.shuffle(4096, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = window.apply(ds)
        return self._finish(ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE))


def open_unlabeled(source: str | os.PathLike, *, path_column: str | None = None,
                   patient_column: str | None = None, root: str | os.PathLike | None = None,
                   split: str = "train", image_key: str = "image", skip_errors: bool = False,
                   data_dir: str | os.PathLike | None = None,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> UnlabeledSource:
    """Opens an unlabeled image source: a folder, a .csv(.gz), a .npz, TFRecords, or ``tfds:NAME[:SPLIT]``.

    CSV paths are resolved under ``root`` (default: the CSV's folder, or its ``images/`` subfolder
    where the files are) and may not escape it. ``data_dir`` is the local TFDS folder. With
    ``skip_errors`` bad images are dropped and listed in ``source.skipped`` instead of failing.
    """
    text = str(source)
    if text.startswith("tfds:"):
        return _open_tfds(text, split=split, image_key=image_key, data_dir=data_dir,
                          skip_errors=skip_errors)
    path = Path(text)
    lower = path.name.lower()
    if any(ch in text for ch in "*?[") or lower.endswith((".tfrecord", ".tfrecords")) or (
            ".tfrecord-" in lower) or (path.is_dir() and is_tfrecord_folder(path)):
        return open_tfrecords(text, skip_errors=skip_errors)
    if not path.exists():
        raise SourceError(f"{path}: source not found (expected a folder, .csv, .npz, TFRecord "
                          "file/glob or tfds:NAME)")
    if path.is_dir():
        return _open_folder(path, skip_errors=skip_errors, max_pixels=max_pixels)
    if lower.endswith((".csv", ".csv.gz")):
        return _open_csv(path, path_column=path_column, patient_column=patient_column,
                         root=root, skip_errors=skip_errors, max_pixels=max_pixels)
    if lower.endswith(".npz"):
        return _open_npz(path, split=split, skip_errors=skip_errors)
    raise SourceError(f"{path}: unsupported source type (expected a folder, .csv, .npz, TFRecord "
                      "file/glob or tfds:NAME)")


def _open_folder(folder: Path, *, skip_errors: bool, max_pixels: int) -> FileSource:
    files = list_image_files(folder)
    if not files:
        raise SourceError(f"{folder}: no image files found (PNG, JPEG, TIFF, BMP, DICOM)")
    patients = [""] * len(files)
    patient_note = "no patient ids"
    nih = sorted(folder.glob(NIH_CSV_GLOB)) or sorted(folder.parent.glob(NIH_CSV_GLOB))
    if nih:
        by_name = _nih_patients(nih[-1])
        patients = [by_name.get(f.name, "") for f in files]
        known = sum(1 for p in patients if p)
        patient_note = (f"patient ids from {nih[-1].name} for {known} of {len(files)} images "
                        f"({len(set(p for p in patients if p))} patients)")
    kinds = Counter(f.suffix.lower().lstrip(".") or "dicom" for f in files)
    kind_text = ", ".join(f"{n} {k.upper()}" for k, n in sorted(kinds.items()))
    return FileSource(
        kind="folder", num_examples=len(files), has_patients=any(patients),
        description=f"folder '{folder.name}': {len(files)} images ({kind_text}); {patient_note}",
        skip_errors=skip_errors, paths=[str(f) for f in files], patients=patients,
        max_pixels=max_pixels)


def _read_table(csv_path: Path, required: tuple[str, ...] = ()) -> CSVTable:
    """``read_csv_table`` with its refusals as SourceError (the error of every unlabeled source)."""
    try:
        return read_csv_table(csv_path, required=required)
    except CSVFormatError as err:
        raise SourceError(str(err)) from None


def _nih_patients(csv_path: Path) -> dict[str, str]:
    table = _read_table(csv_path, required=("Image Index", "Patient ID"))
    return dict(zip(table.column("Image Index").tolist(), table.column("Patient ID").tolist()))


def _pick_column(path: Path, columns: list[str], wanted: str | None, candidates: tuple[str, ...],
                 what: str, required: bool) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise SourceError(f"{path}: {what} column '{wanted}' not found "
                              f"(columns: {', '.join(columns)})")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    if required:
        raise SourceError(f"{path}: no {what} column found; pass path_column= (columns: "
                          f"{', '.join(columns)})")
    return None


def _open_csv(csv_path: Path, *, path_column: str | None, patient_column: str | None,
              root: str | os.PathLike | None, skip_errors: bool, max_pixels: int) -> FileSource:
    table = _read_table(csv_path)
    if not len(table):
        raise SourceError(f"{csv_path}: CSV has a header but no rows")
    path_col = _pick_column(csv_path, table.header, path_column, PATH_COLUMN_CANDIDATES, "path", True)
    patient_col = _pick_column(csv_path, table.header, patient_column, PATIENT_COLUMN_CANDIDATES,
                               "patient", False)
    try:
        rel = relative_paths(table, path_col)
    except CSVFormatError as err:
        raise SourceError(f"{err} (column '{path_col}')") from None
    base = Path(root) if root is not None else csv_path.parent
    if root is None and not (base / rel[0]).exists() and (base / "images" / rel[0]).exists():
        base = base / "images"  # the NIH layout: bare file names, images under images/
    paths = under(base, rel).tolist()
    patients = table.column(patient_col).tolist() if patient_col else [""] * len(paths)
    if not Path(paths[0]).exists():
        raise SourceError(f"{csv_path}, line {int(table.lines[0])}: image '{rel[0]}' not found under "
                          f"{base}; pass root= (the folder the CSV paths are relative to)")
    described = (f"patient ids from column '{patient_col}' ({len(set(p for p in patients if p))} "
                 "patients)" if patient_col else "no patient ids")
    return FileSource(
        kind="csv", num_examples=len(paths), has_patients=any(patients),
        description=f"CSV '{csv_path.name}': {len(paths)} images from column '{path_col}'; "
                    f"{described}",
        skip_errors=skip_errors, paths=paths, patients=patients, max_pixels=max_pixels)


def _npz_member(npz_path: str, key: str) -> np.ndarray:
    """One array of an .npz: a read-only memmap when the member is stored, else loaded alone."""
    with zipfile.ZipFile(npz_path) as archive:
        info = archive.getinfo(f"{key}.npy")
        if info.compress_type == zipfile.ZIP_STORED:
            with open(npz_path, "rb") as f:
                f.seek(info.header_offset)
                local = f.read(30)
                name_len = int.from_bytes(local[26:28], "little")
                extra_len = int.from_bytes(local[28:30], "little")
                f.seek(info.header_offset + 30 + name_len + extra_len)
                shape, fortran, dtype = _read_npy_header(f)
                offset = f.tell()
            return np.memmap(npz_path, dtype=dtype, mode="r", offset=offset, shape=shape,
                             order="F" if fortran else "C")
    from medfound.utils.limits import check_zip

    check_zip(npz_path, ".npz")  # a compressed member is inflated whole: bounded first
    with np.load(npz_path, allow_pickle=False) as data:
        return data[key]


def _npz_header(npz_path: Path, key: str) -> tuple[tuple, np.dtype]:
    with zipfile.ZipFile(npz_path) as archive:
        with archive.open(f"{key}.npy") as member:
            shape, _, dtype = _read_npy_header(io.BufferedReader(member))
    return shape, dtype


def _read_npy_header(stream) -> tuple[tuple, bool, np.dtype]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    return np.lib.format.read_array_header_2_0(stream)


def _open_npz(path: Path, *, split: str, skip_errors: bool) -> NpzSource:
    key = f"{split}_images"
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
    except zipfile.BadZipFile:
        raise SourceError(f"{path}: not a valid .npz (zip) file") from None
    if key not in names:
        raise SourceError(f"{path}: no '{key}' array (arrays: {', '.join(sorted(names))})")
    shape, dtype = _npz_header(path, key)
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (1, 3, 4)):
        raise SourceError(f"{path}: '{key}' has shape {shape}; expected (N, H, W) or (N, H, W, C)")
    if len(shape) and (shape[1] < 2 or shape[2] < 2):
        raise SourceError(f"{path}: '{key}' images are {shape[2]}x{shape[1]} pixels; at least 2 "
                          "per side are needed")
    _check_npz_values(path, key, _npz_member(str(path), key))
    return NpzSource(
        kind="npz", num_examples=int(shape[0]), has_patients=False,
        description=f"npz '{path.name}' split '{split}': {shape[0]} images of "
                    f"{shape[1]}x{shape[2]} {np.dtype(dtype).name}; no patient ids",
        skip_errors=skip_errors, npz_path=str(path), key=key, shape=tuple(shape),
        dtype=np.dtype(dtype).name)


def _check_npz_values(path: Path, key: str, array: np.ndarray, chunk: int = 1024) -> None:
    """Refuses pixel arrays whose range medfound would have to guess: uint8 and uint16 are read
    as 0-255 / 0-65535 (MedMNIST's convention) and floats must already lie in [0, 1]; a float
    array in another range, NaN or infinite values, and other integer types (signed, with their
    negative values, or wider than 16 bits) are refused, saying which values were found."""
    dtype = np.dtype(array.dtype)
    if dtype in (np.uint8, np.uint16):
        return
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise SourceError(f"{path}: '{key}' has dtype {dtype.name}; expected uint8, uint16 or "
                          "floats in [0, 1]")
    low, high, bad, first_bad = np.inf, -np.inf, 0, None
    for begin in range(0, len(array), chunk):
        part = np.asarray(array[begin:begin + chunk])
        if np.issubdtype(dtype, np.floating):
            finite = np.isfinite(part)
            if not finite.all():
                if first_bad is None:
                    first_bad = begin + int(np.argwhere(~finite)[0][0])
                bad += int((~finite).sum())
                part = part[finite]
        if part.size:
            low, high = min(low, float(part.min())), max(high, float(part.max()))
    if bad:
        raise SourceError(f"{path}: '{key}' holds {bad} NaN or infinite pixel values (the first "
                          f"in image {first_bad}); replace them before training")
    found = f"values in [{low:g}, {high:g}]"
    if np.issubdtype(dtype, np.floating):
        if low >= 0 and high <= 1:
            return
        hint = ("divide by 255 (images / 255.0) or store uint8" if low >= 0 and high <= 255 else
                "rescale them to [0, 1] (or store uint8 / uint16)")
        raise SourceError(f"{path}: '{key}' is {dtype.name} with {found}, but float images must "
                          f"be in [0, 1] and medfound will not guess their range: {hint}")
    raise SourceError(f"{path}: '{key}' is {dtype.name} with {found}; medfound reads only uint8 "
                      "(0-255), uint16 (0-65535) or floats in [0, 1] and will not guess the "
                      "range of other integers: window or rescale them into one of those first")


def _open_tfds(text: str, *, split: str, image_key: str, data_dir, skip_errors: bool) -> TFDSSource:
    import tensorflow_datasets as tfds

    parts = text[len("tfds:"):].split(":")
    name = parts[0]
    if len(parts) > 1 and parts[1]:
        split = parts[1]
    if not name:
        raise SourceError(f"{text}: expected tfds:NAME[:SPLIT]")
    try:
        builder = tfds.builder(name, data_dir=None if data_dir is None else str(data_dir))
    except Exception as exc:  # unknown names raise DatasetNotFoundError and friends
        raise SourceError(f"{text}: no TFDS builder '{name}' ({exc})") from None
    if not builder.is_prepared():
        raise SourceError(f"{text}: TFDS dataset '{name}' is not prepared under "
                          f"{builder.data_dir}; medfound never downloads data - prepare it "
                          "yourself (tfds build) and pass data_dir")
    info = builder.info
    if image_key not in info.features:
        raise SourceError(f"{text}: no feature '{image_key}' (features: "
                          f"{', '.join(info.features.keys())}); pass image_key=")
    try:
        count = int(info.splits[split].num_examples)
    except (KeyError, ValueError):
        raise SourceError(f"{text}: no split '{split}' (splits: "
                          f"{', '.join(info.splits.keys())})") from None
    return TFDSSource(
        kind="tfds", num_examples=count, has_patients=False,
        description=f"TFDS '{name}' split '{split}': {count} images (feature '{image_key}'); "
                    "no patient ids",
        skip_errors=skip_errors, name=name, split=split,
        data_dir=None if data_dir is None else str(data_dir), image_key=image_key)
