"""CheXpert and PatchCamelyon from locally prepared TFDS datasets, as streaming ``LabeledDataset``s.

Nothing is ever downloaded. Two TFDS datasets are supported, each prepared into a ``data_dir``
(default: the TFDS default, ``~/tensorflow_datasets``) from files the user already has:

- ``chexpert`` (the real ``tfds`` builder, version 3.1.0): prepared through its ``manual_dir``,
  which holds ``CheXpert-v1.0-small/`` with ``train/``, ``valid/``, ``train.csv`` and ``valid.csv``
  (``prepare_chexpert``). TFDS keeps, per image, the CSV ``Path`` (feature ``name``), the view
  (``image_view``) and the 14 observation cells as classes uncertain/positive/negative/unmentioned,
  in the CSV's column order; so the uncertainty policies and the blank policy of
  ``medfound.data.labeled.chexpert`` apply unchanged, and the patient id is the ``patientNNNNN``
  folder of ``name``. TFDS drops ``Sex``, ``Age`` and ``AP/PA``, and does not record the column
  names: ``prepare_chexpert`` therefore refuses a CSV whose header is not the standard one.
  Splits: TFDS ``train`` cut by patient into train/val, TFDS ``validation`` (valid.csv) as test.
- ``patch_camelyon`` (the real builder, version 2.0.0): ``prepare_patch_camelyon`` builds it from
  the original ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`` (or ``.h5.gz``) files
  with the real builder's ``_info`` and ``_generate_examples``; only where the files come from
  changes. TFDS keeps ``id`` (``{split}_{row}``, the row in the original file), the image and the
  label; it drops the slide of each patch, so patients are one pseudo-patient per patch
  (``pcam-{split}-{row}``, as the HDF5 loader without meta files) unless ``meta_dir`` holds the
  ``..._meta.csv`` files, whose ``wsi`` column is then used. The official splits are train/val/test.

Labels, masks and patient ids are read once (images are not decoded for that); images stream
from the TFDS record files and are decoded and prepared (``prepare_image``) inside tf.data: the
datasets are plain ``LabeledDataset``s whose source, a ``TFDSImages``, is a ``StreamedSource``.
On the command line::

    medfound finetune --task chexpert --data tfds:chexpert --data-option data_dir=DIR \\
        [--data-option manual_dir=MANUAL_DIR] ...
    medfound finetune --task camelyon --data tfds:patch_camelyon --data-option data_dir=DIR \\
        [--data-option manual_dir=H5_DIR] ...

``manual_dir`` prepares the dataset first when it is not prepared yet (for ``patch_camelyon`` it
is the folder with the ``.h5`` files); a prepared dataset is reused as it is.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medfound.data.labeled.base import (CSVTable, DatasetFormatError, LabeledDataset, npstr, parse_label_column,
                                        read_csv_table)
from medfound.data.labeled.splits import checked_splits, split_dataset

TFDS_PREFIX = "tfds:"
TASK_BUILDERS: dict[str, str] = {"chexpert": "chexpert", "camelyon": "patch_camelyon"}
KEY_META = "tfds_key"  # per-row meta: the TFDS example's key feature, used to find its image

CHEXPERT_DIR = "CheXpert-v1.0-small"  # the folder the TFDS builder expects inside manual_dir
CHEXPERT_META_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
# The TFDS builder's label classes as CheXpert CSV cells; parsed by the CSV loader's policies.
TFDS_CHEXPERT_CELLS = {"uncertain": "-1.0", "positive": "1.0", "negative": "0.0", "unmentioned": ""}
TFDS_CELL_VALUES = {"1.0": 1.0, "0.0": 0.0, "-1.0": -1.0, "": np.nan}  # what the builder can read

PCAM_FILE = "camelyonpatch_level_2_split_{split}_{part}"
PCAM_FILE_SPLITS = ("train", "valid", "test")
PCAM_TFDS_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def _tfds():
    """``tensorflow_datasets``, imported on first use (it is heavy). Preparing its package builders
    needs ``importlib_resources``, which setup.py installs (TFDS omits it on Python >= 3.9)."""
    import tensorflow_datasets

    return tensorflow_datasets


def is_tfds_data(data: str | os.PathLike) -> bool:
    """Whether a ``--data`` value names a TFDS dataset (``tfds:NAME``) rather than a path."""
    return str(data).startswith(TFDS_PREFIX)


# --- The image source: TFDS record files, streamed by example key. ---

@dataclasses.dataclass
class TFDSImages:
    """The images of one split of a prepared TFDS dataset: a ``StreamedSource``.

    Rows are record positions in the split's stored order (``shuffle_files=False``), which is
    how ``read`` finds them; ``examples``, what ``LabeledDataset.tf_dataset`` uses, streams the
    records instead (files shuffled if asked) and matches each to its row by its key feature
    (``ds.meta['tfds_key']``), so it works in any record order.
    """

    name: str
    split: str
    data_dir: str | None
    key: str
    num_examples: int
    image_key: str = "image"

    def __len__(self) -> int:
        return self.num_examples

    def builder(self):
        return _tfds().builder(self.name, data_dir=self.data_dir)

    def _records(self, builder, shuffle: bool, seed: int, with_key: bool):
        tfds = _tfds()
        read_config = tfds.ReadConfig(shuffle_seed=seed, shuffle_reshuffle_each_iteration=True,
                                      try_autocache=False)
        wanted = {self.image_key: True, **({self.key: True} if with_key else {})}
        return builder.as_dataset(split=self.split, shuffle_files=shuffle, read_config=read_config,
                                  decoders=tfds.decode.PartialDecoding(
                                      wanted, decoders={self.image_key: tfds.decode.SkipDecoding()}))

    def read(self, rows: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """The decoded images at record positions ``rows`` (in the order given; repeats allowed).

        One pass over the records up to the last row, decoding only the wanted ones: an array
        (n, H, W, C) when the images share a size (PatchCamelyon), else a list of n arrays
        (CheXpert). For training, ``tf_dataset`` streams instead.
        """
        import tensorflow as tf

        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size == 0:
            return np.zeros((0, 0, 0, 3), np.uint8)
        if rows.min() < 0 or rows.max() >= self.num_examples:
            raise IndexError(f"TFDS '{self.name}' split '{self.split}': rows must be in [0, {self.num_examples}), "
                             f"got {int(rows.min())}..{int(rows.max())}")
        uniq, inverse = np.unique(rows, return_inverse=True)
        builder = self.builder()
        feature = builder.info.features[self.image_key]
        wanted = tf.constant(uniq)
        last = int(uniq[-1])
        records = self._records(builder, shuffle=False, seed=0, with_key=False).enumerate()
        records = records.take_while(lambda i, _: i <= last)
        records = records.filter(lambda i, _: tf.reduce_any(tf.equal(i, wanted)))
        images = records.map(lambda _, ex: feature.decode_example(ex[self.image_key]))
        found = [np.asarray(image) for image in images.as_numpy_iterator()]
        picked = [found[i] for i in inverse.reshape(-1).tolist()]
        if len({image.shape for image in picked}) == 1:
            return np.stack(picked)
        return picked

    def examples(self, ds: LabeledDataset, shuffle: bool, seed: int, buffer: int):
        """Unbatched {"image", "label", "mask", "index"} for the rows of ``ds`` (any order).

        Records are matched to rows through ``ds.meta['tfds_key']``; records of other rows are
        skipped before their images are decoded. ``shuffle`` shuffles the files and a buffer,
        reshuffled every epoch from ``seed``.
        """
        import tensorflow as tf

        if KEY_META not in ds.meta:
            raise ValueError(f"{ds.name or 'dataset'}: a TFDS source needs meta['{KEY_META}'] (each row's "
                             f"'{self.key}' feature) to find its images")
        keys = np.asarray(ds.meta[KEY_META]).astype(str)
        if np.unique(keys).size != keys.size:
            raise ValueError(f"{ds.name or 'dataset'}: the same TFDS example twice; rows of a TFDS source "
                             "must be distinct")
        builder = self.builder()
        feature = builder.info.features[self.image_key]
        records = self._records(builder, shuffle, seed, with_key=True)
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.range(keys.size, dtype=tf.int64)),
            default_value=-1)
        labels, mask = tf.constant(ds.labels), tf.constant(ds.mask)
        key, image_key = self.key, self.image_key
        rows = records.map(lambda ex: (table.lookup(ex[key]), ex[image_key]))
        rows = rows.filter(lambda i, _: i >= 0)
        if shuffle:
            rows = rows.shuffle(min(buffer, len(ds)), seed=seed, reshuffle_each_iteration=True)

        def decode(i, encoded):
            return {"image": feature.decode_example(encoded), "label": labels[i], "mask": mask[i], "index": i}

        return rows.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# --- Opening prepared datasets: never downloading, clear errors when not prepared. ---

def open_builder(name: str, data_dir: str | os.PathLike | None = None):
    """The TFDS builder ``name`` over ``data_dir``, refusing an unprepared dataset with the path and the fix."""
    tfds = _tfds()

    try:
        builder = tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir))
    except Exception as exc:  # unknown names raise DatasetNotFoundError and friends
        raise ValueError(f"{TFDS_PREFIX}{name}: no TFDS builder '{name}' ({exc})") from None
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"{TFDS_PREFIX}{name}: TFDS dataset '{builder.name}' is not prepared under {builder.data_dir}; "
            "medfound never downloads data - pass manual_dir= (the folder with your local copy) to prepare "
            f"it there, or data_dir= where it was prepared")
    return builder


def _read_features(builder, split: str, features: Sequence[str], widths: Mapping[str, int] | None = None,
                   batch: int = 4096) -> dict[str, np.ndarray]:
    """Whole columns of non-image features of one split, in record order, without reading images.

    A feature in ``widths`` is a sequence that must hold exactly that many values per example.
    """
    import tensorflow as tf
    tfds = _tfds()

    widths = dict(widths or {})
    ds = builder.as_dataset(split=split, shuffle_files=False, read_config=tfds.ReadConfig(try_autocache=False),
                            decoders=tfds.decode.PartialDecoding({f: True for f in features}))
    ds = ds.map(lambda ex: {f: ex[f] for f in features})
    spec = ds.element_spec
    shapes = {f: [None] if f in widths else [] for f in features}
    pads = {f: tf.constant("" if spec[f].dtype == tf.string else -1, spec[f].dtype) for f in features}
    blocks: dict[str, list[np.ndarray]] = {f: [] for f in features}
    for block in tfds.as_numpy(ds.padded_batch(batch, padded_shapes=shapes, padding_values=pads)):
        for f in features:
            blocks[f].append(block[f])
    columns = {}
    for f in features:
        if f in widths:
            width = max([widths[f], *(b.shape[1] for b in blocks[f])])
            rows = [np.pad(b, ((0, 0), (0, width - b.shape[1])), constant_values=-1) for b in blocks[f]]
            columns[f] = np.concatenate(rows) if rows else np.zeros((0, widths[f]), np.int64)
            if columns[f].shape[1] != widths[f] or np.any(columns[f] < 0):
                raise DatasetFormatError(f"{builder.data_dir}: feature '{f}' of split '{split}' must hold "
                                         f"{widths[f]} values per example")
        else:
            columns[f] = np.concatenate(blocks[f]) if blocks[f] else np.zeros((0,), object)
    return columns


def _text(values: np.ndarray) -> np.ndarray:
    return np.asarray([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values.tolist()], dtype=str)


# --- CheXpert ---

def _chexpert_manual_root(manual_dir: str | os.PathLike) -> Path:
    """The folder that holds ``CheXpert-v1.0-small`` (``manual_dir`` itself or, if it is that folder, its parent)."""
    root = Path(manual_dir)
    if root.name == CHEXPERT_DIR and not (root / CHEXPERT_DIR).exists():
        root = root.parent
    return root


def check_chexpert_manual_dir(manual_dir: str | os.PathLike) -> Path:
    """Refuses a manual_dir the TFDS builder would fail on (missing parts, a header in another order,
    cells it cannot read, missing images), naming the file and line; returns the folder for TFDS."""
    from medfound.data.labeled.chexpert import CHEXPERT_CLASSES

    root = _chexpert_manual_root(manual_dir)
    folder = root / CHEXPERT_DIR
    for part in ("train", "valid", "train.csv", "valid.csv"):
        if not (folder / part).exists():
            raise FileNotFoundError(f"{folder / part}: not found; the TFDS chexpert builder needs manual_dir "
                                    f"({root}) to hold {CHEXPERT_DIR}/ with train/, valid/, train.csv and valid.csv")
    header = [*CHEXPERT_META_COLUMNS, *CHEXPERT_CLASSES]
    for csv_name in ("train.csv", "valid.csv"):
        table = read_csv_table(folder / csv_name)
        if table.header != header:
            raise DatasetFormatError(f"{folder / csv_name}: header must be the standard CheXpert one {header} "
                                     f"(TFDS keeps the labels by position), got {table.header}")
        for c in CHEXPERT_CLASSES:
            parse_label_column(table, c, TFDS_CELL_VALUES)
        paths = table.column("Path")
        for i, rel in enumerate(paths.tolist()):
            if not (root / rel).is_file():
                raise FileNotFoundError(f"{folder / csv_name}, line {int(table.lines[i])}: "
                                        f"image {root / rel} not found")
    return root


def prepare_chexpert(manual_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None):
    """Prepares the real TFDS ``chexpert`` dataset from a local ``manual_dir`` (no download); returns the builder.

    A dataset already prepared under ``data_dir`` is reused without looking at ``manual_dir``.
    """
    tfds = _tfds()

    builder = tfds.builder("chexpert", data_dir=None if data_dir is None else os.fspath(data_dir))
    if builder.is_prepared():
        return builder
    root = check_chexpert_manual_dir(manual_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.fspath(root), try_download_gcs=False,
        download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    return builder


def _chexpert_table(builder, split: str) -> tuple[CSVTable, np.ndarray, np.ndarray]:
    """One TFDS chexpert split as a CheXpert CSV table (Path and the 14 cells), plus views and keys."""
    from medfound.data.labeled.chexpert import CHEXPERT_CLASSES

    cols = _read_features(builder, split, ("name", "label", "image_view"), widths={"label": len(CHEXPERT_CLASSES)})
    label_names = builder.info.features["label"].feature.names
    cells = np.asarray([TFDS_CHEXPERT_CELLS[n] for n in label_names], dtype=object)[cols["label"]]
    views = np.asarray([n.capitalize() for n in builder.info.features["image_view"].names])[cols["image_view"]]
    names = _text(cols["name"])
    raw = {"Path": names, "Frontal/Lateral": views}
    raw.update({c: cells[:, j].astype(str) for j, c in enumerate(CHEXPERT_CLASSES)})
    where = Path(builder.data_dir) / f"{split} split"
    return CSVTable(where, list(raw), raw, np.arange(1, names.size + 1)), views, names


def load_tfds_chexpert(data_dir: str | os.PathLike | None = None, split: str = "train",
                       classes: Sequence[str] | str | None = None, uncertainty: str | Mapping[str, str] = "ones",
                       blank: str = "negative", frontal_only: bool = False,
                       manual_dir: str | os.PathLike | None = None) -> LabeledDataset:
    """One split ('train' or 'validation') of the TFDS chexpert dataset, labelled as ``load_chexpert`` does."""
    from medfound.data.labeled.chexpert import chexpert_patient_ids, observation_labels, resolve_classes

    builder = prepare_chexpert(manual_dir, data_dir) if manual_dir is not None else open_builder("chexpert", data_dir)
    if split not in builder.info.splits:
        raise ValueError(f"unknown TFDS chexpert split {split!r}; use one of {list(builder.info.splits)}")
    classes = resolve_classes(classes)
    table, views, names = _chexpert_table(builder, split)
    if len(table) == 0:
        raise DatasetFormatError(f"{builder.data_dir}: split '{split}' has no examples")
    positions = np.arange(len(table))  # record positions: the source's rows
    if frontal_only:
        keep = views == "Frontal"
        table, views, names, positions = table.take(keep), views[keep], names[keep], positions[keep]
        if len(table) == 0:
            raise DatasetFormatError(f"{builder.data_dir}: no frontal images in split '{split}'")
    labels, mask = observation_labels(table, classes, uncertainty, blank)
    source = TFDSImages(name=builder.name, split=split, data_dir=_data_dir_of(builder), key="name",
                        num_examples=int(builder.info.splits[split].num_examples))
    return LabeledDataset(labels=labels, mask=mask, patient_ids=chexpert_patient_ids(table, names),
                          class_names=classes, task="multilabel", source=source, source_rows=positions,
                          name=f"tfds-chexpert:{split}", meta={"view": views, KEY_META: names})


def tfds_chexpert_splits(data_dir: str | os.PathLike | None = None, val_fraction: float = 0.1, seed: int = 0,
                         **kwargs) -> dict[str, LabeledDataset]:
    """train/val/test: TFDS ``train`` cut by patient into train and val, TFDS ``validation`` as test."""
    train = load_tfds_chexpert(data_dir, "train", **kwargs)
    kwargs.pop("manual_dir", None)  # prepared by now
    parts = split_dataset(train, {"train": 1 - val_fraction, "val": val_fraction}, seed)
    parts["test"] = load_tfds_chexpert(data_dir, "validation", **kwargs)
    return checked_splits(parts)


# --- PatchCamelyon ---

def _pcam_sources(h5_dir: Path) -> dict[str, Path]:
    """``{split}_{x,y}`` -> the original file (``.h5`` or ``.h5.gz``), all six required."""
    found, missing = {}, []
    for split in PCAM_FILE_SPLITS:
        for part in ("x", "y"):
            name = PCAM_FILE.format(split=split, part=part)
            path = next((p for p in (h5_dir / f"{name}.h5", h5_dir / f"{name}.h5.gz") if p.is_file()), None)
            if path is None:
                missing.append(f"{name}.h5[.gz]")
            else:
                found[f"{split}_{part}"] = path
    if missing:
        raise FileNotFoundError(f"{h5_dir}: missing PatchCamelyon file(s) {missing} (the TFDS builder needs "
                                "train, valid and test)")
    return found


def _checked_h5(sources: Mapping[str, Path], work: Path) -> dict[str, str]:
    """Local ``.h5`` paths for the builder (``.gz`` files gunzipped into ``work``), checked with the HDF5 loader."""
    from medfound.data.labeled.pcam import load_pcam

    paths = {}
    for key, src in sources.items():
        if src.suffix == ".gz":
            dst = work / src.name[:-3]
            with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
        else:
            dst = work / src.name
            os.symlink(src.resolve(), dst)
        paths[key] = str(dst)
    for split in PCAM_FILE_SPLITS:
        try:
            x = load_pcam(work, split).source
        except (DatasetFormatError, OSError) as err:  # name the user's file, not the temporary copy
            raise type(err)(str(err).replace(str(work), str(sources[f"{split}_x"].parent))) from None
        if tuple(x.shape[1:]) != (96, 96, 3):
            raise DatasetFormatError(f"{sources[f'{split}_x']}: TFDS patch_camelyon needs 96x96x3 patches, "
                                     f"got {x.shape[1:]}")
    return paths


def _local_pcam_builder_class():
    """The real patch_camelyon builder, reading its six files from local paths instead of downloading."""
    _tfds()
    from tensorflow_datasets.datasets.patch_camelyon.patch_camelyon_dataset_builder import Builder

    class LocalPatchCamelyon(Builder, skip_registration=True):
        name = "patch_camelyon"
        pkg_dir_path = Builder._get_pkg_dir_path()  # the real README/citation
        local_paths: dict[str, str] = {}

        def _split_generators(self, dl_manager):
            tfds = _tfds()

            paths = self.local_paths
            return [tfds.core.SplitGenerator(name=tfds.Split.TEST, gen_kwargs=dict(split="test", paths=paths)),
                    tfds.core.SplitGenerator(name=tfds.Split.TRAIN, gen_kwargs=dict(split="train", paths=paths)),
                    tfds.core.SplitGenerator(name=tfds.Split.VALIDATION,
                                             gen_kwargs=dict(split="valid", paths=paths))]

    return LocalPatchCamelyon


def prepare_patch_camelyon(h5_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None):
    """Prepares the real TFDS ``patch_camelyon`` dataset from the original local HDF5 files; returns the builder.

    ``h5_dir`` holds ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`` or ``.h5.gz``
    (gunzipped into a temporary folder beside the output, removed afterwards). The result is the
    same as ``tfds build patch_camelyon`` would write, read back with ``tfds.builder``. A dataset
    already prepared under ``data_dir`` is reused.
    """
    tfds = _tfds()

    data_dir = None if data_dir is None else os.fspath(data_dir)
    builder = tfds.builder("patch_camelyon", data_dir=data_dir)
    if builder.is_prepared():
        return builder
    sources = _pcam_sources(Path(h5_dir))
    root = Path(builder.data_dir_root)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".medfound-pcam-", dir=root) as work:
        local = _local_pcam_builder_class()(data_dir=data_dir)
        local.local_paths = _checked_h5(sources, Path(work))
        local.download_and_prepare(download_config=tfds.download.DownloadConfig(
            try_download_gcs=False, download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    return tfds.builder("patch_camelyon", data_dir=data_dir)


def load_tfds_pcam(data_dir: str | os.PathLike | None = None, split: str = "train",
                   meta_dir: str | os.PathLike | None = None,
                   manual_dir: str | os.PathLike | None = None) -> LabeledDataset:
    """One split ('train', 'val'/'validation' or 'test') of TFDS patch_camelyon as a binary 'tumor' dataset."""
    tfds_split = PCAM_TFDS_SPLITS.get(split, split)
    if tfds_split not in PCAM_TFDS_SPLITS.values():
        raise ValueError(f"unknown PatchCamelyon split {split!r}; use one of {sorted(PCAM_TFDS_SPLITS)}")
    if manual_dir is not None:
        builder = prepare_patch_camelyon(manual_dir, data_dir)
    else:
        builder = open_builder("patch_camelyon", data_dir)
    cols = _read_features(builder, tfds_split, ("id", "label"))
    ids, y = _text(cols["id"]), cols["label"].astype(np.float32)
    file_split, rows = _pcam_rows(builder, tfds_split, ids)
    meta_dir = meta_dir if meta_dir is not None else manual_dir
    patients = _pcam_patients(meta_dir, file_split, rows, int(builder.info.splits[tfds_split].num_examples))
    source = TFDSImages(name=builder.name, split=tfds_split, data_dir=_data_dir_of(builder), key="id",
                        num_examples=ids.size)
    return LabeledDataset(labels=y[:, None], mask=np.ones((ids.size, 1), np.float32), patient_ids=patients,
                          class_names=("tumor",), task="binary", source=source,
                          name=f"tfds-pcam:{file_split}", meta={KEY_META: ids, "row": rows})


def _pcam_rows(builder, split: str, ids: np.ndarray) -> tuple[str, np.ndarray]:
    """The original file's split name and each example's row in it, from ids like ``valid_12``."""
    file_split = {"train": "train", "validation": "valid", "test": "test"}[split]
    rows = np.empty(ids.size, np.int64)
    for i, text in enumerate(ids.tolist()):
        prefix, _, row = text.rpartition("_")
        if prefix != file_split or not row.isdigit():
            raise DatasetFormatError(f"{builder.data_dir}: example id {text!r} in split '{split}' is not "
                                     f"'{file_split}_ROW'")
        rows[i] = int(row)
    return file_split, rows


def _pcam_patients(meta_dir: str | os.PathLike | None, split: str, rows: np.ndarray, n: int) -> np.ndarray:
    """Each row's slide ('wsi' of ``{meta_dir}/..._{split}_meta.csv``) if there, else a pseudo-patient per patch."""
    meta = None if meta_dir is None else Path(meta_dir) / f"{PCAM_FILE.format(split=split, part='meta')}.csv"
    if meta is None or not meta.is_file():
        return npstr.add(f"pcam-{split}-", rows.astype(str))
    table = read_csv_table(meta, required=("wsi",))
    if len(table) != n:
        raise DatasetFormatError(f"{meta}: {len(table)} rows but the TFDS split holds {n} patches")
    return table.column("wsi")[rows]


def tfds_pcam_splits(data_dir: str | os.PathLike | None = None, seed: int = 0,
                     **kwargs) -> dict[str, LabeledDataset]:
    """The official train/validation/test splits as train/val/test (slide-disjoint; checked)."""
    del seed  # official splits
    parts = {"train": load_tfds_pcam(data_dir, "train", **kwargs)}
    kwargs.setdefault("meta_dir", kwargs.pop("manual_dir", None))  # prepared by now; metas may sit there
    parts["val"] = load_tfds_pcam(data_dir, "val", **kwargs)
    parts["test"] = load_tfds_pcam(data_dir, "test", **kwargs)
    return checked_splits(parts)


def _data_dir_of(builder) -> str:
    """The data_dir root a builder reads from (so the source opens the same place later)."""
    return os.fspath(builder.data_dir_root)


# --- The task entry point used by load_task_splits. ---

def tfds_task_splits(task: str, data: str, seed: int = 0, data_dir: str | os.PathLike | None = None,
                     **kwargs) -> dict[str, LabeledDataset]:
    """train/val/test for ``--task TASK --data tfds:NAME`` (chexpert: tfds:chexpert, camelyon: tfds:patch_camelyon)."""
    name = str(data)[len(TFDS_PREFIX):]
    expected = TASK_BUILDERS.get(task)
    if expected is None:
        raise ValueError(f"task {task!r} has no TFDS source; tfds: data works for {sorted(TASK_BUILDERS)}")
    if name != expected:
        raise ValueError(f"task {task!r} reads TFDS '{expected}' (--data {TFDS_PREFIX}{expected}), got {data!r}")
    if task == "chexpert":
        return tfds_chexpert_splits(data_dir, seed=seed, **kwargs)
    return tfds_pcam_splits(data_dir, seed=seed, **kwargs)
