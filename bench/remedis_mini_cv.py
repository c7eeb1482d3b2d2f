"""The fine-tuning pieces of ``bench/remedis_mini.py``: NIH patient folds, fold files, one
(dataset, mode, init, seed, fold) piece with its own hyperparameter selection, and the test
predictions every run leaves on disk (the statistics pool them; a finished piece is reused).

OOD is patient-level k-fold cross-validation on the NIH sample: fold k's patients are its test
set; its validation patients are carved from the other folds' patients (by ``patient_split``,
seeded by k) and choose the (rate, epoch budget) pair; label fractions are patient-level subsets
(``label_fraction_indices``) of the remaining training patients. Each fold is written as a
MedMNIST-layout ``.npz`` (train/val/test arrays at the OOD size), so ``finetune`` uses the splits
exactly as cut here.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

NIH_FOLD_SEED = 0  # the fold assignment is one for every init, seed and mode (paired tests)


def nih_arrays(nih_dir: Path, size: int, limit: int = 0) -> dict:
    """The NIH sample as arrays: images (N, size, size) uint8, labels (any finding = 1),
    patients and names; ``limit`` keeps the table's first ``limit`` patients, every image of
    each (0: all)."""
    from PIL import Image

    table = nih_dir / "Data_Entry_2017_v2020.csv"
    if not table.is_file():
        raise SystemExit(f"{table}: NIH sample table not found; pass --nih")
    with open(table, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if limit:
        kept = set(list(dict.fromkeys(row["Patient ID"] for row in rows))[:limit])
        rows = [row for row in rows if row["Patient ID"] in kept]
    images = []
    for row in rows:
        with Image.open(nih_dir / "images" / row["Image Index"]) as image:
            image = image.convert("L")
            if image.size != (size, size):
                image = image.resize((size, size), Image.BILINEAR)
            images.append(np.asarray(image))
    return {"images": np.stack(images).astype(np.uint8),
            "labels": np.array([r["Finding Labels"].strip() != "No Finding" for r in rows], np.int64),
            "patients": np.array([r["Patient ID"] for r in rows]),
            "names": np.array([r["Image Index"] for r in rows])}


def fold_rows(patients: np.ndarray, folds: int, fold: int, val_fraction: float) -> dict:
    """Row indices of fold ``fold``: test (its patients), val (patients carved from the rest,
    seeded by the fold) and train (the remaining patients); whole patients everywhere."""
    from medfound.data.labeled import patient_split

    cut = patient_split(patients, {f"fold{k}": 1.0 for k in range(folds)}, seed=NIH_FOLD_SEED)
    test = cut[f"fold{fold}"]
    rest = np.setdiff1d(np.arange(patients.size), test)
    inner = patient_split(patients[rest], {"train": 1.0 - val_fraction, "val": val_fraction},
                          seed=fold)
    return {"train": rest[inner["train"]], "val": rest[inner["val"]], "test": test}


def fold_npz(nih: dict, rows: dict, fraction: float, seed: int, path: Path) -> Path:
    """Fold ``rows`` as a MedMNIST-layout .npz; train is the patient-level ``fraction`` subset
    (``seed``) of the fold's training patients. Written once, then reused."""
    from medfound.data.labeled.splits import label_fraction_indices
    from medfound.utils.files import atomic_path

    if path.is_file():
        return path
    train = rows["train"]
    if fraction < 1.0:
        train = train[label_fraction_indices(nih["patients"][train], fraction, seed)]
    arrays = {}
    for split, index in (("train", train), ("val", rows["val"]), ("test", rows["test"])):
        arrays[f"{split}_images"] = nih["images"][index]
        arrays[f"{split}_labels"] = nih["labels"][index][:, None]
        arrays[f"{split}_rows"] = index  # the NIH rows, so predictions map back to images
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return path


def predict_test(run_dir: str, data: Path, size: int, batch: int) -> list[float]:
    """The fine-tuned classifier's positive-class probability for each test image of ``data``."""
    from medfound.data.labeled.medmnist import load_medmnist
    from medfound.finetune.evaluate import load_classifier
    from medfound.finetune.trainer import predict_logits, probabilities

    classifier = load_classifier(run_dir)
    logits = predict_logits(classifier, load_medmnist(data, "test"), size, batch)
    return probabilities(logits, "binary")[:, 0].tolist()


def piece_dir(out: Path, dataset: str, mode: str, init: str, seed: int, fold: int | None) -> Path:
    path = out / dataset / mode / init / f"seed{seed}"
    return path if fold is None else path / f"fold{fold}"


def run_piece(args, base, dataset: str, init: str, module: str, seed: int, fold: int | None,
              data_of, fractions, candidates) -> list[dict]:
    """One (dataset, mode, init, seed, fold) piece: the (rate, budget) chosen on this piece's
    validation patients at 100 %, then every fraction with it; one predictions file per
    fraction (reused when present). ``data_of(fraction)`` is (.npz, label_fraction): OOD a
    fold file per fraction at 100 %, ID the one file at that fraction."""
    from medfound.finetune.label_efficiency import label_efficiency
    from medfound.finetune.selection import select_hyperparameters

    from bench.common import write_json

    where = piece_dir(Path(args.out), dataset, base.mode, init, seed, fold)
    files = {f: where / f"predictions_f{f:g}.json" for f in fractions}
    if all(p.is_file() for p in files.values()):
        return [json.loads(p.read_text()) for p in files.values()]
    size = args.ood_image_size if dataset == "ood" else args.image_size
    full = dataclasses.replace(base, module=module, data=str(data_of(1.0)[0]), image_size=size,
                               out_dir=str(where / "f1"))
    selection = select_hyperparameters(full, candidates, seed=seed)
    records = []
    for fraction in fractions:
        if not files[fraction].is_file():
            data, label_fraction = data_of(fraction)
            own = dataset == "ood" and fraction < 1  # a file of its own: a folder of its own
            config = dataclasses.replace(selection.config, data=str(data), out_dir=str(
                where / f"f{fraction:g}") if own else selection.config.out_dir)
            runs = label_efficiency(config, [module], [label_fraction], [seed],
                                    baseline=module).runs
            run = next(r for r in runs if r["fraction"] == label_fraction)
            with np.load(data) as arrays:
                rows = arrays["test_rows"].tolist() if "test_rows" in arrays.files else \
                    list(range(len(arrays["test_labels"])))
            record = {"dataset": dataset, "mode": base.mode, "init": init, "seed": seed,
                      "fold": fold, "fraction": fraction, "rows": rows,
                      "scores": predict_test(run["run_dir"], data, size,
                                             base.batch_size),
                      "chosen": selection.chosen, "run_dir": run["run_dir"],
                      "tried": [{k: t.get(k) for k in ("learning_rate", "epochs", "val_auc",
                                                       "error")} for t in selection.tried]}
            write_json(files[fraction], record)
        records.append(json.loads(files[fraction].read_text()))
    return records
