"""The TFRecord format of unlabeled images: writing any source as shards, parsing, and reading them back.

``write_tfrecords`` converts any unlabeled source into sharded TFRecords (for large runs) with a
``tfrecords.json`` manifest; ``open_tfrecords`` (what ``open_unlabeled`` calls for TFRecord
files, globs and folders) reads them back as a ``TFRecordSource``. Each record holds ``image`` (encoded PNG, or JPEG on request), ``path`` and ``patient``. PNGs are
8-bit when the decoded pixels are exactly 8-bit values and 16-bit otherwise, and single-channel when
the three channels are equal, so PNG round trips are pixel-exact.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from medfound.data.prepare import to_rgb_float
from medfound.data.sources import WHOLE_STREAM, SourceError, StreamWindow, UnlabeledSource
from medfound.utils.files import atomic_path

TFRECORD_MANIFEST = "tfrecords.json"
SHARD_PATTERN = "unlabeled-{i:05d}-of-{n:05d}.tfrecord"


def shard_name(index: int, num_shards: int) -> str:
    """File name of shard ``index`` of ``num_shards``."""
    return SHARD_PATTERN.format(i=index, n=num_shards)


def _encode_fn(encode: str):
    import tensorflow as tf

    def encode_image(image):
        gray = tf.reduce_all(tf.logical_and(tf.equal(image[..., 0], image[..., 1]),
                                            tf.equal(image[..., 0], image[..., 2])))
        image = tf.cond(gray, lambda: image[..., :1], lambda: image)
        if encode == "jpeg":
            return tf.io.encode_jpeg(tf.cast(tf.round(image * 255.0), tf.uint8), quality=95)
        as8 = tf.round(image * 255.0)
        exact8 = tf.reduce_all(tf.abs(as8 / 255.0 - image) <= 0.25 / 65535.0)
        return tf.cond(
            exact8,
            lambda: tf.io.encode_png(tf.cast(as8, tf.uint8)),
            lambda: tf.io.encode_png(tf.cast(tf.round(image * 65535.0), tf.uint16)))

    def fn(example):
        return encode_image(example["image"]), example["path"], example["patient"]

    return fn


def _serialize(image: bytes, path: bytes, patient: bytes) -> bytes:
    import tensorflow as tf

    def feature(value: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    return tf.train.Example(features=tf.train.Features(feature={
        "image": feature(image), "path": feature(path), "patient": feature(patient)})
    ).SerializeToString()


def write_tfrecords(source: UnlabeledSource, out_dir: str | os.PathLike, *, num_shards: int = 8,
                    encode: str = "png") -> list[Path]:
    """Streams ``source`` (in its stored order) into ``num_shards`` TFRecord shards under ``out_dir``.

    Examples go round-robin to the shards; every shard and the ``tfrecords.json`` manifest (count,
    description, shard names) are written to temporary names and renamed on success. Returns the
    shard paths. Bad images fail the write unless the source was opened with ``skip_errors``.
    """
    import tensorflow as tf

    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if encode not in ("png", "jpeg"):
        raise ValueError(f"encode must be 'png' or 'jpeg', got {encode!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    finals = [out / shard_name(i, num_shards) for i in range(num_shards)]
    ds = source.dataset(shuffle=False).map(_encode_fn(encode),
                                           num_parallel_calls=tf.data.AUTOTUNE)
    count = 0
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_path(p)) for p in finals]
        writers = [stack.enter_context(tf.io.TFRecordWriter(str(t))) for t in tmps]
        for image, path, patient in ds.as_numpy_iterator():
            writers[count % num_shards].write(_serialize(image, path, patient))
            count += 1
        for w in writers:
            w.flush()
    manifest = {
        "format": "medfound-unlabeled-tfrecords-v1",
        "count": count,
        "num_shards": num_shards,
        "encode": encode,
        "has_patients": bool(source.has_patients),
        "description": source.description,
        "skipped": len(source.skipped),
        "files": [p.name for p in finals],
    }
    with atomic_path(out / TFRECORD_MANIFEST) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2) + "\n")
    return finals


def parse_example(serialized):
    """Parses one serialized record into {"image": float32 (H, W, 3) in [0, 1], "path", "patient"}."""
    import tensorflow as tf

    features = tf.io.parse_single_example(serialized, {
        "image": tf.io.FixedLenFeature([], tf.string),
        "path": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "patient": tf.io.FixedLenFeature([], tf.string, default_value=""),
    })
    # uint16 then / 65535 exactly as the file decoder does, so PNG round trips are pixel-exact.
    image = to_rgb_float(tf.io.decode_image(features["image"], channels=3, dtype=tf.uint16,
                                            expand_animations=False))
    image.set_shape((None, None, 3))
    return {"image": image, "path": features["path"], "patient": features["patient"]}


@dataclass
class TFRecordSource(UnlabeledSource):
    """TFRecord shards written by ``write_tfrecords`` (features image, path, patient)."""

    files: list[str] = field(default_factory=list)

    def dataset(self, *, shuffle: bool = True, seed: int = 0, repeat: bool = False,
                window: StreamWindow = WHOLE_STREAM):
        """As the base class; skipped records are read (TFRecords have no index) but not parsed."""
        import tensorflow as tf

        files = tf.data.Dataset.from_tensor_slices(tf.constant(self.files, tf.string))
        if shuffle:
            files = files.shuffle(len(self.files), seed=seed, reshuffle_each_iteration=True)
        ds = files.interleave(tf.data.TFRecordDataset, cycle_length=min(8, len(self.files)),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if shuffle:
            ds = ds.shuffle(4096, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = window.apply(ds)
        ds = ds.map(parse_example, num_parallel_calls=tf.data.AUTOTUNE)
        if self.skip_errors:
            ds = ds.ignore_errors(log_warning=True)
        return self._finish(ds)


def is_tfrecord_folder(folder: Path) -> bool:
    """Whether a folder holds TFRecord shards (a manifest or ``*.tfrecord*`` files)."""
    return (folder / TFRECORD_MANIFEST).exists() or any(folder.glob("*.tfrecord*"))


def open_tfrecords(pattern: str, *, skip_errors: bool = False) -> TFRecordSource:
    """TFRecord shards (a file, a glob or a folder; its manifest used when it lists them) as a source."""
    import tensorflow as tf

    path = Path(pattern)
    manifest = None
    if path.is_dir():
        manifest_path = path / TFRECORD_MANIFEST
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            files = [str(path / name) for name in manifest["files"]]
        else:
            files = sorted(str(p) for p in path.glob("*.tfrecord*"))
    else:
        files = sorted(tf.io.gfile.glob(pattern))
        manifest_path = path.parent / TFRECORD_MANIFEST
        if manifest_path.exists():
            candidate = json.loads(manifest_path.read_text())
            if sorted(str(path.parent / n) for n in candidate["files"]) == files:
                manifest = candidate
    missing = [f for f in files if not Path(f).exists()]
    if not files or missing:
        raise SourceError(f"{pattern}: no TFRecord files found" if not files else
                          f"{pattern}: shard listed in {TFRECORD_MANIFEST} is missing: {missing[0]}")
    count = int(manifest["count"]) if manifest else None
    has_patients = bool(manifest.get("has_patients")) if manifest else False
    origin = f"; written from: {manifest['description']}" if manifest else ""
    return TFRecordSource(
        kind="tfrecord", num_examples=count, has_patients=has_patients,
        description=f"TFRecords: {len(files)} shard(s), "
                    f"{count if count is not None else 'unknown number of'} images{origin}",
        skip_errors=skip_errors, files=files)
