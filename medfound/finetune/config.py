"""Configuration of a fine-tuning run (``medfound finetune``), validated before any work starts."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

from medfound.optim.names import OPTIMIZERS
from medfound.utils.validation import Problems

MODES = ("linear", "full")
# No 'multiworker': each host would run its own validation and early stopping, and hosts whose
# last bits differ could stop at different epochs and hang the collective; one host's devices
# ('mirrored', e.g. 8 GPUs) already fine-tune r152x2.
STRATEGIES = ("default", "mirrored", "tpu")
# Default input size of a task when the module does not say (cxr 448, path 224, as the modules).
TASK_MODALITY = {"chexpert": "cxr", "mimic": "cxr", "nih": "cxr", "camelyon": "path", "breakhis": "path"}
FALLBACK_IMAGE_SIZE = 224


@dataclasses.dataclass
class FinetuneConfig:
    """Everything a fine-tuning run needs: module, task data, head/backbone training and evaluation."""

    module: str  # a backbone spec (medfound.resolve): module name/path, 'random:ARCH', BiT .npz, ...
    task: str  # chexpert|mimic|nih|camelyon|breakhis|medmnist|csv|folder
    data: str
    out_dir: str
    mode: str = "linear"  # 'linear': frozen backbone, head only; 'full': end to end
    classes: list[str] | None = None  # label columns to keep (multi-label tasks); default all
    label_fraction: float = 1.0  # patient-level fraction of the training split, in (0, 1]
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05
    patience: int = 3  # epochs without a better validation score before stopping; 0 = never stop early
    min_delta: float = 0.0  # an improvement must exceed this
    steps_per_epoch: int | None = None  # cap on training steps per epoch (default: one pass)
    image_size: int | None = None  # default: the module's input size, else the task's modality
    center_crop: bool | float = False
    threshold: float = 0.5  # decision threshold for accuracy, sensitivity and specificity
    n_boot: int = 1000  # bootstrap draws for the 95% intervals
    data_options: dict = dataclasses.field(default_factory=dict)  # keyword arguments for the task loader
    seed: int = 0
    verbose: bool = True
    # 'default' (one device), 'mirrored' (all local GPUs) or 'tpu'.
    # Distributes --mode full training; linear mode's one embedding pass and its small head
    # run on one device.
    strategy: str = "default"

    def validate(self) -> None:
        """Refuses impossible values with one message listing every problem, before any work."""
        from medfound.data.labeled import TASKS, is_tfds_data, parse_fraction

        problems = Problems()
        check = problems.check

        def is_int(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        check(self.task in TASKS, f"unknown task {self.task!r}; choose from {list(TASKS)}")
        check(self.mode in MODES, f"mode must be one of {list(MODES)}, got {self.mode!r}")
        check(self.strategy in STRATEGIES,
              f"strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}")
        check(self.optimizer in OPTIMIZERS, f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if isinstance(self.label_fraction, str):  # '10%' or '0.1' ('10' is refused: write 0.1)
            try:
                self.label_fraction = parse_fraction(self.label_fraction)
            except ValueError as err:
                problems.add(str(err))
        else:
            check(_finite(self.label_fraction) and 0 < self.label_fraction <= 1,
                  f"label_fraction must be in (0, 1], got {self.label_fraction!r}")
        check(is_int(self.epochs) and self.epochs >= 1, f"epochs must be an integer >= 1, got {self.epochs!r}")
        check(is_int(self.batch_size) and self.batch_size >= 1,
              f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        check(_finite(self.learning_rate) and self.learning_rate > 0,
              f"learning_rate must be a finite number > 0, got {self.learning_rate!r}")
        check(_finite(self.momentum) and 0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum!r}")
        check(_finite(self.weight_decay) and self.weight_decay >= 0,
              f"weight_decay must be >= 0, got {self.weight_decay!r}")
        check(_finite(self.warmup_fraction) and 0 <= self.warmup_fraction < 1,
              f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        check(is_int(self.patience) and self.patience >= 0, f"patience must be an integer >= 0, got {self.patience!r}")
        check(_finite(self.min_delta) and self.min_delta >= 0, f"min_delta must be >= 0, got {self.min_delta!r}")
        check(self.steps_per_epoch is None or (is_int(self.steps_per_epoch) and self.steps_per_epoch >= 1),
              f"steps_per_epoch must be an integer >= 1 or None, got {self.steps_per_epoch!r}")
        check(self.image_size is None or (is_int(self.image_size) and self.image_size >= 32),
              f"image_size must be an integer >= 32, got {self.image_size!r}")
        check(isinstance(self.center_crop, bool) or (_finite(self.center_crop) and 0 < self.center_crop <= 1),
              f"center_crop must be true/false or a fraction in (0, 1], got {self.center_crop!r}")
        check(_finite(self.threshold) and 0 < self.threshold < 1, f"threshold must be in (0, 1), got {self.threshold!r}")
        check(is_int(self.n_boot) and self.n_boot >= 1, f"n_boot must be an integer >= 1, got {self.n_boot!r}")
        check(self.classes is None or (isinstance(self.classes, (list, tuple)) and len(self.classes) >= 1
                                       and all(isinstance(c, str) and c for c in self.classes)),
              f"classes must be a non-empty list of class names, got {self.classes!r}")
        check(isinstance(self.data_options, dict), f"data_options must be a dict, got {type(self.data_options)}")
        check(bool(str(self.out_dir)), "out_dir must be given")
        check(is_tfds_data(self.data) or Path(self.data).exists(), f"data not found: {self.data}")
        from medfound.resolve import spec_problem

        problem = spec_problem(self.module, f"module {self.module!r}")
        if problem:
            problems.add(problem)
        problems.raise_if_any("fine-tuning configuration")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike, run: dict | None = None) -> None:
        """Writes the configuration as JSON, atomically; ``run`` (resolved values) goes under the key 'run'."""
        from medfound.utils.files import atomic_path

        data = self.to_dict()
        if run is not None:
            data["run"] = run
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True, default=str))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FinetuneConfig":
        """Reads a ``config.json`` written by ``save`` (unknown keys are refused, naming the file)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        data.pop("run", None)  # what the run resolved (image size, classes), written beside the config
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown fine-tuning config keys {unknown}")
        return cls(**data)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
