"""The labeled-dataset record every loader returns, and its streaming tf.data pipeline.

A ``LabeledDataset`` holds labels, a loss mask and patient ids in memory (small), and points at
its images: file paths decoded inside tf.data, an array source (a NumPy array, an HDF5
dataset) read in chunks, or a streamed source (TFDS records) read in its stored order, so no
loader ever holds a whole image set in memory unless it is tiny. CSVs are read and their paths
checked by ``medfound.data.tables``; images are prepared by ``medfound.data.prepare``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from medfound.data.prepare import prepare_image
from medfound.data.tables import (CSVFormatError, CSVTable, DatasetFormatError, find_file, npstr, open_text,
                                  read_csv_table, relative_paths, under)

__all__ = ["ArraySource", "CSVFormatError", "CSVTable", "DatasetFormatError", "LabeledDataset", "NumpySource",
           "StreamedSource", "as_keras_inputs", "check_unique", "find_file", "npstr", "open_text",
           "parse_label_column", "prepare_image", "read_csv_table", "relative_paths", "under"]

TASK_TYPES = ("multilabel", "binary", "multiclass")
DEFAULT_CHUNK = 512  # rows read at a time from an array source


class ArraySource(Protocol):
    """Images stored as rows of an array (NumPy, HDF5): ``len`` rows, read by sorted row numbers."""

    def __len__(self) -> int: ...

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Images at the given increasing row numbers, shape (n, H, W[, C]) (a streamed source
        whose images differ in size gives a list of n arrays)."""
        ...


@runtime_checkable
class StreamedSource(ArraySource, Protocol):
    """An ArraySource best read in its own order (TFDS record files): ``tf_dataset`` streams it
    through ``examples`` rather than reading chunks of rows; ``read`` still works, slowly."""

    def examples(self, ds: LabeledDataset, shuffle: bool, seed: int, buffer: int):
        """Unbatched {"image", "label", "mask", "index"} for the rows of ``ds``, in any order."""
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

        Images are decoded and resized inside tf.data (paths), read in chunks from an array
        source, or streamed in their stored order from a ``StreamedSource`` (TFDS; batches then
        come in record order), so memory stays bounded. ``shuffle`` reshuffles every epoch from ``seed``;
        ``center_crop`` True crops the central square before resizing, a float f in (0, 1] the
        central fraction f of that square. ``index`` is the row in this dataset.
        """
        import tensorflow as tf

        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(self) == 0:
            raise ValueError(f"{self.name or 'dataset'}: no examples to stream")
        if self.paths is not None:
            ds = _path_examples(self, shuffle, seed)
        elif isinstance(self.source, StreamedSource):
            ds = self.source.examples(self, shuffle, seed, shuffle_buffer)
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


# --- CSV helpers shared by the CSV-based loaders. ---

LABEL_CELLS: dict[str, float] = {"1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "-1": -1.0, "-1.0": -1.0,
                                 "": np.nan}


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
