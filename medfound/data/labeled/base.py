"""The labeled-dataset record every loader returns, and its streaming tf.data pipeline.

A ``LabeledDataset`` holds labels, a loss mask and patient ids in memory (small), and points at
its images: file paths decoded inside tf.data, or an array source (a NumPy array, an HDF5
dataset) read in chunks, so no loader ever holds a whole image set in memory unless it is tiny.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

npstr = getattr(np, "strings", np.char)  # vectorised string ops (np.char on NumPy < 2)
TASK_TYPES = ("multilabel", "binary", "multiclass")
DEFAULT_CHUNK = 512  # rows read at a time from an array source


class DatasetFormatError(ValueError):
    """A data file is not what its loader expects; the message names the file and the problem."""


class CSVFormatError(DatasetFormatError):
    """A CSV row or header is invalid; the message names the file, the line and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class ArraySource(Protocol):
    """Images stored as rows of an array (NumPy, HDF5): ``len`` rows, read by sorted row numbers."""

    def __len__(self) -> int: ...

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Images at the given increasing row numbers, shape (n, H, W[, C])."""
        ...


@dataclasses.dataclass
class NumpySource:
    """An in-memory image array (N, H, W) or (N, H, W, C) as an ArraySource."""

    array: np.ndarray

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.array[rows]


@dataclasses.dataclass
class LabeledDataset:
    """Labels (N, K), a loss mask (N, K; 0 = ignore), patient ids and where the N images are.

    Exactly one image source is set: ``paths`` (N file paths) or ``source`` (an ArraySource with
    ``source_rows`` mapping each example to a row). ``boxes`` (N, 4: top, left, height, width)
    optionally crops each decoded image, which is how tiles of a larger image are represented.
    For 'binary' K is 1; for 'multiclass' labels are one-hot.
    """

    labels: np.ndarray
    mask: np.ndarray
    patient_ids: np.ndarray
    class_names: tuple[str, ...]
    task: str
    paths: np.ndarray | None = None
    source: ArraySource | None = None
    source_rows: np.ndarray | None = None
    boxes: np.ndarray | None = None
    name: str = ""
    meta: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.float32)
        if self.labels.ndim == 1:
            self.labels = self.labels[:, None]
        n, k = self.labels.shape
        self.mask = np.asarray(self.mask, dtype=np.float32)
        if self.mask.shape != (n, k):
            raise ValueError(f"{self.name or 'dataset'}: mask shape {self.mask.shape} != labels {(n, k)}")
        self.patient_ids = np.asarray(self.patient_ids).astype(str)
        if self.patient_ids.shape != (n,):
            raise ValueError(f"{self.name or 'dataset'}: {self.patient_ids.shape[0]} patient ids for {n} rows")
        self.class_names = tuple(self.class_names)
        if len(self.class_names) != k:
            raise ValueError(f"{self.name or 'dataset'}: {len(self.class_names)} class names for {k} label columns")
        if self.task not in TASK_TYPES:
            raise ValueError(f"task must be one of {TASK_TYPES}, got {self.task!r}")
        if self.task == "binary" and k != 1:
            raise ValueError(f"{self.name or 'dataset'}: a binary task has one label column, got {k}")
        if (self.paths is None) == (self.source is None):
            raise ValueError("give exactly one image source: paths or source")
        if self.paths is not None:
            self.paths = np.asarray(self.paths).astype(str)
            if self.paths.shape != (n,):
                raise ValueError(f"{self.name or 'dataset'}: {self.paths.shape[0]} paths for {n} rows")
        else:
            rows = np.arange(n) if self.source_rows is None else self.source_rows
            self.source_rows = np.asarray(rows, dtype=np.int64)
            if self.source_rows.shape != (n,):
                raise ValueError(f"{self.name or 'dataset'}: {self.source_rows.shape[0]} source rows for {n} rows")
        for key, values in self.meta.items():
            if len(values) != n:
                raise ValueError(f"{self.name or 'dataset'}: meta {key!r} has {len(values)} rows for {n}")
        if self.boxes is not None:
            self.boxes = np.asarray(self.boxes, dtype=np.int32)
            if self.boxes.shape != (n, 4):
                raise ValueError(f"{self.name or 'dataset'}: boxes must have shape {(n, 4)}, got {self.boxes.shape}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.labels.shape[1])

    @property
    def patients(self) -> np.ndarray:
        """The distinct patient ids, sorted."""
        return np.unique(self.patient_ids)

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> LabeledDataset:
        """The examples at ``indices`` (in that order) as a new dataset sharing the same image source."""
        idx = np.asarray(indices, dtype=np.int64)

        def take(a):
            return None if a is None else a[idx]

        return LabeledDataset(
            labels=self.labels[idx], mask=self.mask[idx], patient_ids=self.patient_ids[idx],
            class_names=self.class_names, task=self.task, paths=take(self.paths), source=self.source,
            source_rows=take(self.source_rows), boxes=take(self.boxes),
            name=self.name if name is None else name,
            meta={key: np.asarray(values)[idx] for key, values in self.meta.items()})

    def label_counts(self) -> dict[str, dict[str, int]]:
        """Per class: positives, negatives and ignored (masked) examples, for reports and checks."""
        out = {}
        for j, cls in enumerate(self.class_names):
            used = self.mask[:, j] > 0
            pos = int(np.sum(used & (self.labels[:, j] > 0.5)))
            out[cls] = {"positive": pos, "negative": int(used.sum()) - pos, "ignored": int((~used).sum())}
        return out

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary: size, patients, task, classes and label counts."""
        return {"name": self.name, "examples": len(self), "patients": int(self.patients.size),
                "task": self.task, "classes": list(self.class_names), "label_counts": self.label_counts()}

    def tf_dataset(self, image_size: int | tuple[int, int], batch_size: int, shuffle: bool = False,
                   seed: int = 0, center_crop: bool | float = False, repeat: bool = False,
                   drop_remainder: bool = False, shuffle_buffer: int = 4096,
                   chunk_size: int = DEFAULT_CHUNK):
        """Batches of {"image" (B,H,W,3) float32 in [0,1], "label" (B,K), "mask" (B,K), "index" (B,)}.

        Images are decoded and resized inside tf.data (paths) or read in chunks from the array
        source, so memory stays bounded. ``shuffle`` reshuffles every epoch from ``seed``;
        ``center_crop`` True crops the central square before resizing, a float f in (0, 1] the
        central fraction f of that square. ``index`` is the row in this dataset.
        """
        import tensorflow as tf

        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(self) == 0:
            raise ValueError(f"{self.name or 'dataset'}: no examples to stream")
        if self.paths is not None:
            ds = _path_examples(self, shuffle, seed)
        else:
            ds = _array_examples(self, shuffle, seed, chunk_size, shuffle_buffer)
        boxes = None if self.boxes is None else tf.constant(self.boxes)

        def finish(ex):
            image = ex["image"]
            if boxes is not None:
                b = boxes[ex["index"]]
                image = image[b[0]:b[0] + b[2], b[1]:b[1] + b[3]]
            ex["image"] = prepare_image(image, size, center_crop)
            return ex

        ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        return ds.prefetch(tf.data.AUTOTUNE)


def _path_examples(ds: LabeledDataset, shuffle: bool, seed: int):
    """Unbatched examples decoded from files; the index order is reshuffled every epoch."""
    import tensorflow as tf

    n = len(ds)
    paths, labels, mask = tf.constant(ds.paths), tf.constant(ds.labels), tf.constant(ds.mask)
    order = tf.data.Dataset.range(n)
    if shuffle:
        order = order.shuffle(n, seed=seed, reshuffle_each_iteration=True)

    def gather(i):
        return {"path": paths[i], "label": labels[i], "mask": mask[i], "index": i}

    from medfound.data.images import map_decode

    examples = map_decode(order.map(gather), path_key="path", deterministic=True)
    return examples.map(lambda e: {k: e[k] for k in ("image", "label", "mask", "index")})


def _array_examples(ds: LabeledDataset, shuffle: bool, seed: int, chunk_size: int, buffer: int):
    """Unbatched examples read from the array source a chunk of sorted rows at a time."""
    import tensorflow as tf

    n = len(ds)
    first = ds.source.read(np.sort(ds.source_rows[:1]))
    image_shape = first.shape[1:]
    epoch = [0]

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        order = np.arange(n)
        if shuffle:
            order = np.random.default_rng([seed, epoch[0]]).permutation(n)
        epoch[0] += 1
        for start in range(0, n, chunk_size):
            idx = order[start:start + chunk_size]
            # Read in increasing source-row order (HDF5 needs it), then restore the wanted order.
            rows = ds.source_rows[idx]
            sort = np.argsort(rows, kind="stable")
            uniq, inverse = np.unique(rows[sort], return_inverse=True)
            block = np.asarray(ds.source.read(uniq))[inverse]
            images = np.empty_like(block)
            images[sort] = block
            yield images, ds.labels[idx], ds.mask[idx], idx.astype(np.int64)

    k = ds.num_classes
    signature = (tf.TensorSpec((None, *image_shape), tf.as_dtype(first.dtype)),
                 tf.TensorSpec((None, k), tf.float32), tf.TensorSpec((None, k), tf.float32),
                 tf.TensorSpec((None,), tf.int64))
    out = tf.data.Dataset.from_generator(chunks, output_signature=signature).unbatch()
    if shuffle:
        out = out.shuffle(min(buffer, n), seed=seed, reshuffle_each_iteration=True)
    return out.map(lambda x, y, m, i: {"image": x, "label": y, "mask": m, "index": i})


def as_keras_inputs(batch: dict) -> tuple:
    """Maps a tf_dataset batch to Keras ``(image, label, mask)`` (x, y, sample_weight) form."""
    return batch["image"], batch["label"], batch["mask"]


def resolve_under(root: Path, relative: str, csv_path: str | os.PathLike, line: int) -> Path:
    """``root / relative``, refusing absolute paths and ``..`` that would leave the data root."""
    check_relative(relative, csv_path, line)
    return root / relative


def check_relative(relative: str, csv_path: str | os.PathLike, line: int) -> None:
    """Raises CSVFormatError if a CSV path is empty, absolute or climbs out of the data root."""
    if not relative:
        raise CSVFormatError(csv_path, "empty image path", line)
    parts = relative.replace("\\", "/").split("/")
    if relative.startswith(("/", "\\")) or (len(relative) > 1 and relative[1] == ":") or os.path.isabs(relative):
        raise CSVFormatError(csv_path, f"absolute image path {relative!r} is not allowed; "
                             "paths must be relative to the data root", line)
    if ".." in parts:
        raise CSVFormatError(csv_path, f"image path {relative!r} escapes the data root ('..')", line)


# --- Preprocessing that matches the modules: 3-channel float in [0, 1] at the module size. ---

def prepare_image(image, size: tuple[int, int], center_crop: bool | float = False):
    """A decoded image (H,W,C uint8 or float; C in 1..4) as (size, 3) float32 in [0, 1].

    Gray is repeated to three channels and alpha dropped; ``center_crop`` True takes the central
    square first, a float f in (0, 1] the central fraction f of that square; then a bilinear,
    antialiased resize to ``size``.
    """
    import tensorflow as tf

    image = tf.convert_to_tensor(image)
    if image.shape.rank == 2:
        image = image[..., None]
    if image.dtype == tf.uint8:
        image = tf.cast(image, tf.float32) / 255.0
    elif image.dtype == tf.uint16:
        image = tf.cast(image, tf.float32) / 65535.0
    else:
        image = tf.cast(image, tf.float32)
    channels = tf.shape(image)[-1]
    image = tf.case([(tf.equal(channels, 1), lambda: tf.tile(image[..., :1], [1, 1, 3])),
                     (tf.equal(channels, 2), lambda: tf.tile(image[..., :1], [1, 1, 3]))],
                    default=lambda: image[..., :3])
    if center_crop:
        fraction = 1.0 if center_crop is True else float(center_crop)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"center_crop fraction must be in (0, 1], got {center_crop}")
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        side = tf.cast(tf.cast(tf.minimum(h, w), tf.float32) * fraction, tf.int32)
        side = tf.maximum(side, 1)
        top, left = (h - side) // 2, (w - side) // 2
        image = image[top:top + side, left:left + side]
    image = tf.image.resize(image, size, method="bilinear", antialias=True)
    image = tf.clip_by_value(image, 0.0, 1.0)
    return tf.ensure_shape(image, (*size, 3))


# --- CSV helpers shared by the CSV-based loaders. ---

LABEL_CELLS: dict[str, float] = {"1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "-1": -1.0, "-1.0": -1.0,
                                 "": np.nan}


def open_text(path: str | os.PathLike):
    """Opens a CSV or text file for reading, transparently gunzipping ``.gz`` files."""
    import gzip

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def find_file(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of ``names`` (each also tried with ``.gz``) that exists in ``folder``."""
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


class CSVTable:
    """A CSV read column-wise: each column a NumPy string array (made on first use), with line numbers."""

    def __init__(self, path: Path, header: list[str], raw: dict[str, Sequence[str]], lines: np.ndarray):
        self.path = path
        self.header = header
        self._raw = raw
        self._cache: dict[str, np.ndarray] = {}
        self.lines = lines

    def __len__(self) -> int:
        return int(self.lines.shape[0])

    @property
    def columns(self) -> dict[str, Sequence[str]]:
        """Column name -> values (raw sequences; use ``column`` for a NumPy array)."""
        return self._raw

    def column(self, name: str) -> np.ndarray:
        """One column as a NumPy string array with surrounding whitespace removed."""
        if name not in self._cache:
            values = np.asarray(self._raw[name], dtype=str)
            self._cache[name] = npstr.strip(values) if values.size else values
        return self._cache[name]

    def take(self, keep: np.ndarray) -> CSVTable:
        """The rows where ``keep`` (boolean or indices) holds."""
        return CSVTable(self.path, self.header, {k: self.column(k)[keep] for k in self.header},
                        self.lines[keep])


def read_csv_table(path: str | os.PathLike, required: Sequence[str] = ()) -> CSVTable:
    """Reads a whole CSV column-wise, refusing missing columns and rows of the wrong length."""
    import csv

    path = Path(path)
    with open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise CSVFormatError(path, "empty file, no header row") from None
        except csv.Error as e:
            raise CSVFormatError(path, f"unreadable CSV header: {e}", 1) from None
        try:
            rows = list(reader)
        except csv.Error as e:
            raise CSVFormatError(path, f"unreadable CSV: {e}", reader.line_num) from None
        last_line = reader.line_num
    if len(rows) + 1 == last_line:  # one physical line per row: line numbers follow from the index
        lines = np.arange(2, len(rows) + 2, dtype=np.int64)
    else:  # quoted newlines somewhere: read again, noting each row's last physical line
        with open_text(path) as f:
            reader = csv.reader(f)
            next(reader)
            line_list = []
            for _ in reader:
                line_list.append(reader.line_num)
        lines = np.asarray(line_list, dtype=np.int64)
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    if np.any(lengths == 0):  # drop blank lines
        keep = np.flatnonzero(lengths > 0)
        rows = [rows[i] for i in keep]
        lines, lengths = lines[keep], lengths[keep]
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise CSVFormatError(path, f"duplicate column names {dupes}", 1)
    missing = [c for c in required if c not in header]
    if missing:
        raise CSVFormatError(path, f"missing required column(s) {missing}; the header has {header}", 1)
    width = len(header)
    bad = np.flatnonzero(lengths != width)
    if bad.size:
        i = int(bad[0])
        raise CSVFormatError(path, f"row has {int(lengths[i])} fields, the header has {width}", int(lines[i]))
    if rows:
        raw = dict(zip(header, zip(*rows)))
    else:
        raw = {name: () for name in header}
    return CSVTable(path, header, raw, lines)


def parse_label_column(table: CSVTable, name: str, cells: dict[str, float] = LABEL_CELLS) -> np.ndarray:
    """A label column as float32 (blank -> NaN), refusing values outside ``cells`` with their line."""
    values = table.column(name)
    uniq, inverse = np.unique(values, return_inverse=True)
    mapped = np.empty(uniq.shape[0], dtype=np.float32)
    for i, value in enumerate(uniq.tolist()):
        if value not in cells:
            line = int(table.lines[np.flatnonzero(inverse == i)[0]])
            raise CSVFormatError(table.path, f"unknown label value {value!r} in column {name!r} "
                                 f"(allowed: {sorted(k for k in cells if k)} or blank)", line)
        mapped[i] = cells[value]
    return mapped[inverse.reshape(-1)]


def check_unique(table: CSVTable, values: np.ndarray, what: str) -> None:
    """Refuses duplicate values (for example the same image path twice), naming both lines."""
    uniq, first, counts = np.unique(values, return_index=True, return_counts=True)
    if uniq.size != values.size:
        dup = int(np.flatnonzero(counts > 1)[0])
        value = str(uniq[dup])
        lines = table.lines[values == value][:2]
        raise CSVFormatError(table.path, f"duplicate {what} {value!r} (also on line {int(lines[0])})",
                             int(lines[1]))


def check_relative_paths(table: CSVTable, paths: np.ndarray) -> None:
    """Refuses empty, absolute or root-escaping paths in a CSV column, naming the line."""
    paths = np.asarray(paths, dtype=str)
    suspect = ((npstr.str_len(paths) == 0) | npstr.startswith(paths, "/")
               | npstr.startswith(paths, "\\") | (npstr.find(paths, "..") >= 0)
               | (npstr.find(paths, ":") >= 0))
    for i in np.flatnonzero(suspect).tolist():
        check_relative(str(paths[i]), table.path, int(table.lines[i]))
