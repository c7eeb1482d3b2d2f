"""Labeled medical image datasets for fine-tuning and evaluation, with patient-level splits.

Every loader returns a ``LabeledDataset`` (labels, loss mask, patient ids, image paths or an array
source) whose ``tf_dataset`` streams 3-channel float images in [0, 1] at the module size.
``load_task_splits`` gives train/val/test for a task name as used on the command line; ``data``
is a path, or ``tfds:chexpert`` / ``tfds:patch_camelyon`` for a locally prepared TFDS dataset
(options ``data_dir`` and ``manual_dir``; see ``medfound.data.labeled.tfds_sources``).
"""
from __future__ import annotations

import os
from collections.abc import Callable

from medfound.data.labeled.base import (CSVFormatError, DatasetFormatError, LabeledDataset, NumpySource,
                                        as_keras_inputs, prepare_image)
from medfound.data.labeled.splits import (LABEL_FRACTIONS, PatientLeakageError, check_no_leakage,
                                          label_fraction_subset, parse_fraction, parse_fractions,
                                          patient_split, split_dataset)
from medfound.data.labeled.tfds_sources import is_tfds_data

TASKS = ("chexpert", "mimic", "nih", "camelyon", "breakhis", "medmnist", "csv", "folder")


def _task_loaders() -> dict[str, Callable[..., dict[str, LabeledDataset]]]:
    from medfound.data.labeled.chexpert import chexpert_splits
    from medfound.data.labeled.generic import load_csv, load_folder
    from medfound.data.labeled.medmnist import medmnist_splits
    from medfound.data.labeled.mimic import mimic_splits
    from medfound.data.labeled.nih import nih_splits
    from medfound.data.labeled.pcam import load_camelyon_patches, pcam_splits
    from medfound.data.labeled.tiling import load_breakhis

    def camelyon(path, seed=0, **kw):
        from pathlib import Path

        if any(Path(path).glob("camelyonpatch_level_2_split_*_x.h5*")):
            return pcam_splits(path)
        return split_dataset(load_camelyon_patches(path, **kw), seed=seed)

    return {
        "chexpert": chexpert_splits, "mimic": mimic_splits, "nih": nih_splits, "camelyon": camelyon,
        "breakhis": lambda path, seed=0, **kw: split_dataset(load_breakhis(path, **kw), seed=seed),
        "medmnist": lambda path, seed=0, **kw: medmnist_splits(path, **kw),
        "csv": lambda path, seed=0, **kw: split_dataset(load_csv(path, **kw), seed=seed),
        "folder": lambda path, seed=0, **kw: split_dataset(load_folder(path, **kw), seed=seed),
    }


def load_task_splits(task: str, path: str | os.PathLike, seed: int = 0, **kwargs) -> dict[str, LabeledDataset]:
    """train/val/test ``LabeledDataset``s for a task name, patient-disjoint (leakage is refused).

    Official splits are used where the dataset has them (CheXpert valid.csv as test, NIH lists,
    MIMIC split CSV, PatchCamelyon files, MedMNIST); otherwise an 80/10/10 patient split by ``seed``.
    Extra keyword arguments go to the task's loader. ``path`` ``tfds:chexpert`` (task chexpert) or
    ``tfds:patch_camelyon`` (task camelyon) reads a prepared TFDS dataset under the ``data_dir``
    keyword (default: TFDS's), preparing it first from ``manual_dir`` when given; never downloading.
    """
    loaders = _task_loaders()
    if task not in loaders:
        raise ValueError(f"unknown task {task!r}; choose from {list(loaders)}")
    if is_tfds_data(path):
        from medfound.data.labeled.tfds_sources import tfds_task_splits

        parts = tfds_task_splits(task, str(path), seed=seed, **kwargs)
    else:
        parts = loaders[task](path, seed=seed, **kwargs)
    check_no_leakage(parts)
    return parts


__all__ = ["CSVFormatError", "DatasetFormatError", "LABEL_FRACTIONS", "LabeledDataset", "NumpySource",
           "PatientLeakageError", "TASKS", "as_keras_inputs", "check_no_leakage", "is_tfds_data",
           "label_fraction_subset", "load_task_splits", "parse_fraction", "parse_fractions", "patient_split", "prepare_image",
           "split_dataset"]
