"""``evaluate``: a fine-tuned classifier measured on any labeled dataset, clean and under graded shifts.

The dataset may differ from the one the model was trained on (out of distribution): model and
data classes are matched by name, and only the shared classes are scored. Each synthetic shift
(``medfound.evaluation.shifts``) is applied at every severity; severity 0 is the clean image, so its metrics equal
the clean ones. Writes ``metrics.json``, ``roc.png`` and ``shifts.png`` (performance vs severity).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np

from medfound.evaluation.shift_names import DEFAULT_SEVERITIES, MAX_SEVERITY, SHIFT_KINDS
from medfound.utils.validation import Problems

SPLITS = ("train", "val", "test")
# Names that mean the same finding in different datasets, after normalisation (see normalise_class).
CLASS_ALIASES = {"pleuraleffusion": "effusion"}


@dataclasses.dataclass
class EvaluateConfig:
    """What to evaluate (a ``model.keras`` or fine-tune folder), on which data, under which shifts."""

    model: str
    task: str
    data: str
    out_dir: str
    split: str = "test"
    shifts: list[str] = dataclasses.field(default_factory=list)
    severities: tuple[float, ...] = DEFAULT_SEVERITIES
    image_size: int | None = None  # default: the size the model was fine-tuned at
    batch_size: int = 32
    center_crop: bool | float | None = None  # default: as fine-tuned
    threshold: float | None = None  # default: as fine-tuned (else 0.5)
    n_boot: int = 1000
    data_options: dict | None = None  # default: the fine-tune's, when task and data are the same
    seed: int | None = None  # split seed; default: the fine-tune's, when task and data are the same
    verbose: bool = True

    def validate(self) -> None:
        """Refuses impossible values with one message listing every problem, before any work."""
        from medfound.data.labeled import TASKS, is_tfds_data

        problems = Problems()
        check = problems.check

        check(self.task in TASKS, f"unknown task {self.task!r}; choose from {list(TASKS)}")
        check(self.split in SPLITS, f"split must be one of {list(SPLITS)}, got {self.split!r}")
        check(is_tfds_data(self.data) or Path(self.data).exists(), f"data not found: {self.data}")
        try:
            resolve_model_path(self.model)
        except (FileNotFoundError, ValueError) as err:
            problems.add(str(err))
        unknown = [k for k in self.shifts if k not in SHIFT_KINDS]
        check(not unknown, f"unknown shift(s) {unknown}; choose from {list(SHIFT_KINDS)}")
        sev = list(self.severities)
        check(len(sev) >= 1 and all(isinstance(s, (int, float)) and not isinstance(s, bool)
                                    and math.isfinite(s) and 0 <= s <= MAX_SEVERITY for s in sev),
              f"severities must be numbers in [0, {MAX_SEVERITY:g}], got {self.severities!r}")
        check(sev == sorted(set(sev)), f"severities must be increasing without repeats, got {self.severities!r}")
        check(self.image_size is None or (isinstance(self.image_size, int) and self.image_size >= 32),
              f"image_size must be an integer >= 32, got {self.image_size!r}")
        check(isinstance(self.batch_size, int) and self.batch_size >= 1,
              f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        check(self.threshold is None or 0 < self.threshold < 1, f"threshold must be in (0, 1), got {self.threshold!r}")
        check(isinstance(self.n_boot, int) and self.n_boot >= 1, f"n_boot must be an integer >= 1, got {self.n_boot!r}")
        problems.raise_if_any("evaluation configuration")


def resolve_model_path(model: str | os.PathLike) -> Path:
    """The ``model.keras`` that ``model`` names (the file itself, or a fine-tune output folder)."""
    path = Path(model)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise FileNotFoundError(f"{model}: no model.keras there (give a fine-tune output folder or its model.keras)")
    if path.suffix != ".keras":
        raise ValueError(f"{path}: not a .keras model file")
    return path


def read_run_info(model_path: Path) -> dict:
    """The fine-tune ``config.json`` beside a model (its 'run' part holds classes and image size), or {}."""
    cfg = model_path.parent / "config.json"
    if not cfg.is_file():
        return {}
    try:
        return json.loads(cfg.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg}: not valid JSON ({err})") from err


def normalise_class(name: str) -> str:
    """A class name reduced for matching across datasets ('Pleural Effusion' == 'Effusion')."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return CLASS_ALIASES.get(key, key)


def match_classes(model_classes: list[str], data_classes: list[str]) -> list[tuple[int, int]]:
    """(model column, data column) pairs of the classes both share by normalised name.

    A one-output model on a one-column dataset is paired whatever the names (a binary task).
    """
    if len(model_classes) == 1 and len(data_classes) == 1:
        return [(0, 0)]
    data_keys = {normalise_class(c): j for j, c in enumerate(data_classes)}
    pairs = [(i, data_keys[normalise_class(c)]) for i, c in enumerate(model_classes)
             if normalise_class(c) in data_keys]
    if not pairs:
        raise ValueError(f"the model's classes {model_classes} share none with the dataset's {data_classes}")
    return pairs


def _log(config: EvaluateConfig, message: str) -> None:
    if config.verbose:
        print(f"[evaluate] {message}", flush=True)


def load_classifier(model_path: str | os.PathLike):
    """The fine-tuned Keras classifier saved at ``model_path`` (a ``model.keras`` or a fine-tune
    output folder; outputs must include 'logits'), with medfound's layers registered: what
    ``evaluate`` scores and what a caller needing per-image predictions loads (feed it to
    ``medfound.finetune.trainer.predict_logits``)."""
    import keras

    import medfound.finetune.model  # noqa: F401  (registers the classifier's layers for loading)
    import medfound.models.bit  # noqa: F401

    from medfound.utils.limits import load_keras_file

    model_path = resolve_model_path(model_path)
    classifier = load_keras_file(model_path, ValueError, compile=False)
    if not isinstance(classifier.output, dict) or "logits" not in classifier.output:
        raise ValueError(f"{model_path}: not a medfound fine-tuned classifier (outputs must include 'logits')")
    return classifier


@dataclasses.dataclass(frozen=True)
class ClassColumns:
    """Which model outputs are scored against which data columns, and under what names."""

    model_classes: list[str]
    pairs: list[tuple[int, int]]  # (model column, data column)
    task_type: str

    @property
    def model_cols(self) -> list[int]:
        return [p[0] for p in self.pairs]

    @property
    def data_cols(self) -> list[int]:
        return [p[1] for p in self.pairs]

    @property
    def names(self) -> list[str]:
        return [self.model_classes[i] for i in self.model_cols]


def class_columns(model_path: Path, run: dict, num_outputs: int, ds) -> ClassColumns:
    """The model's classes (from its fine-tune ``run`` info, else the dataset's) matched to ``ds``'s."""
    model_classes = list(run.get("class_names") or [])
    if not model_classes:
        if num_outputs != ds.num_classes:
            raise ValueError(f"{model_path}: no config.json with class names beside it, and its {num_outputs} "
                             f"outputs do not match the dataset's {ds.num_classes} classes")
        model_classes = list(ds.class_names)
    if len(model_classes) != num_outputs:
        raise ValueError(f"{model_path}: config.json lists {len(model_classes)} classes for {num_outputs} outputs")
    task_type = run.get("task_type") or ds.task
    pairs = match_classes(model_classes, list(ds.class_names))
    if task_type == "multiclass" and len(pairs) != num_outputs:
        raise ValueError(f"a multi-class model needs all its classes {model_classes} in the data "
                         f"{list(ds.class_names)}")
    return ClassColumns(model_classes, pairs, task_type)


def _shift_row(severity: float, report: dict) -> dict:
    """One severity's line of a shift curve, taken from its classification report."""
    return {"severity": float(severity), "mean_auc": report["mean_auc"],
            "mean_auc_ci95": report["mean_auc_ci95"], "accuracy": report["accuracy"],
            "per_class_auc": {c: v["auc"] for c, v in report["per_class"].items()},
            **({"sensitivity": report["sensitivity"], "specificity": report["specificity"]}
               if "sensitivity" in report else {})}


def evaluate(config: EvaluateConfig) -> dict:
    """Evaluates a fine-tuned model on ``config.task``/``config.data`` (clean and shifted); returns metrics.json's dict."""
    from medfound.data.labeled import load_task_splits
    from medfound.evaluation.metrics import classification_report
    from medfound.evaluation.plots import plot_roc_curves, plot_shift_curves
    from medfound.evaluation.shifts import apply_shift
    from medfound.finetune.model import default_image_size
    from medfound.finetune.trainer import predict_logits, probabilities, write_json

    config.validate()
    started = time.time()
    model_path = resolve_model_path(config.model)
    saved = read_run_info(model_path)
    run = saved.get("run", {})
    classifier = load_classifier(model_path)
    same_data = saved.get("task") == config.task and Path(str(saved.get("data", ""))).resolve() == Path(config.data).resolve()
    seed = config.seed if config.seed is not None else (saved.get("seed", 0) if same_data else 0)
    options = config.data_options if config.data_options is not None else (
        saved.get("data_options", {}) if same_data else {})
    ds = load_task_splits(config.task, config.data, seed=seed, **options)[config.split]
    cols = class_columns(model_path, run, int(classifier.output["logits"].shape[-1]), ds)
    labels, mask, names = ds.labels[:, cols.data_cols], ds.mask[:, cols.data_cols], cols.names
    size = config.image_size or run.get("image_size") or default_image_size(config.task, None)
    crop = config.center_crop if config.center_crop is not None else saved.get("center_crop", False)
    threshold = config.threshold if config.threshold is not None else saved.get("threshold", 0.5)
    _log(config, f"{model_path} on {config.task}:{config.split} ({len(ds)} examples, {ds.patients.size} patients), "
                 f"classes {names}, {size} px")

    def measure(transform=None) -> tuple[dict, np.ndarray]:
        logits = predict_logits(classifier, ds, size, config.batch_size, crop, transform=transform)
        probs = probabilities(logits, cols.task_type)[:, cols.model_cols]
        return classification_report(labels, probs, names, cols.task_type, mask=mask, threshold=threshold,
                                     n_boot=config.n_boot, seed=seed, groups=ds.patient_ids), probs

    clean, clean_probs = measure()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"model": str(model_path), "task": config.task, "data": str(config.data), "split": config.split,
                     "split_seed": seed, "examples": len(ds), "patients": int(ds.patients.size), "image_size": int(size),
                     "class_map": {cols.model_classes[i]: ds.class_names[j] for i, j in cols.pairs},
                     "trained_on": saved.get("task"), "clean": clean, "shifts": {}}
    for kind in config.shifts:
        rows = []
        for severity in config.severities:
            report, _ = measure(lambda images, k=kind, s=float(severity): apply_shift(images, k, s))
            rows.append(_shift_row(severity, report))
            _log(config, f"{kind} severity {severity:g}: mean AUC {report['mean_auc']}, accuracy {report['accuracy']}")
        results["shifts"][kind] = rows
    results["seconds"] = time.time() - started
    write_json(out / "metrics.json", results)
    plot_roc_curves(labels, clean_probs, names, out / "roc.png", mask=mask,
                    title=f"{config.task}:{config.split} ROC ({model_path.parent.name})")
    if config.shifts:
        plot_shift_curves(results["shifts"], out / "shifts.png", clean=clean)
    _log(config, f"clean mean AUC {clean['mean_auc']}; wrote {out}")
    return json.loads((out / "metrics.json").read_text())
