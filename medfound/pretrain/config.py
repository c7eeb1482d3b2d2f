"""Configuration of a pretraining run, validated before any work starts."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from medfound.models.configs import get_arch
from medfound.optim.names import LR_SCALINGS, OPTIMIZERS
from medfound.registry import MODALITIES, SSL_METHODS
from medfound.ssl.settings import MethodOptions, MethodSettings
from medfound.utils.files import atomic_path
from medfound.utils.validation import Problems

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
METHOD_OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(MethodOptions))


@dataclasses.dataclass
class PretrainConfig:
    """Everything a pretraining run needs; defaults follow SimCLR v2 / REMEDIS where they apply.

    ``method_options`` holds the objective's knobs; head sizes, temperature and EMA momentum
    left as None take the method's own defaults (``medfound.ssl.methods``: e.g. SimCLR 3 layers
    to 128 at T=0.1, MoCo T=0.2). ``from_dict`` / ``load`` also read the flat layout that
    config.json files of older runs have (those knobs at the top level).
    """

    data: str  # folder, CSV, MedMNIST .npz, TFRecord folder or 'tfds:NAME'
    out_dir: str
    modality: str = "cxr"  # picks the augmentation preset and the default image size
    arch: str = "r50x1"
    units: tuple[int, ...] | None = None  # overrides of the named architecture (small tests)
    width: float | None = None
    init: str = "random"  # 'random' or a backbone spec (medfound.resolve): 'bit-m:PATH', a module, a run
    image_size: int | None = None  # default: the modality's module size (cxr 448, path 224)
    preset: str | None = None  # augmentation preset; default: the modality
    augment: dict = dataclasses.field(default_factory=dict)  # preset overrides (AugmentConfig)
    batch_size: int = 256  # global batch, over all replicas
    steps: int = 1000
    learning_rate: float = 0.3  # base rate, scaled by batch size (see lr_scaling)
    lr_scaling: str = "linear"
    warmup_fraction: float = 0.05
    optimizer: str = "lars"
    weight_decay: float = 1e-6
    momentum: float = 0.9
    method: str = "simclr"  # simclr, barlow, moco, byol or relic
    # the method's knobs (head sizes, temperature, queue, EMA, loss weights)
    method_options: MethodOptions = dataclasses.field(default_factory=MethodOptions)
    micle: bool = False  # positive pairs from two images of one patient where possible
    micle_probability: float = 1.0
    path_column: str | None = None
    patient_column: str | None = None
    split: str = "train"  # split of an .npz or TFDS source
    skip_bad_images: bool = False
    strategy: str = "default"
    precision: str = "float32"
    xla: bool = False
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 50
    preview_images: int = 4  # augmented views written to TensorBoard
    seed: int = 0
    deterministic: bool = False  # tf.config.experimental.enable_op_determinism()

    def __post_init__(self) -> None:
        if self.units is not None:
            self.units = tuple(self.units)
        if isinstance(self.method_options, dict):
            self.method_options = MethodOptions(**self.method_options)

    @property
    def input_size(self) -> int:
        return self.image_size or MODALITIES[self.modality]

    def method_settings(self):
        """The ``MethodSettings`` of this run's objective (``medfound.ssl.methods``)."""
        return MethodSettings(**dataclasses.asdict(self.method_options), total_steps=self.steps, seed=self.seed)

    def validate(self, num_replicas: int = 1) -> None:
        """Refuses impossible values with one message listing every problem."""
        problems = Problems()
        check = problems.check

        check(self.modality in MODALITIES, f"modality must be one of {list(MODALITIES)}, "
                                           f"got {self.modality!r}")
        # Path('') is '.': an empty --out (an unset shell variable) would make the current
        # folder the run.
        check(bool(str(self.out_dir).strip()), "out_dir (--out) must name a folder, got ''")
        check(bool(str(self.data).strip()), "data (--data) must name a source, got ''")
        try:
            get_arch(self.arch)
        except ValueError as err:
            problems.add(str(err))
        if self.init != "random":
            from medfound.resolve import spec_problem

            problem = spec_problem(self.init, "init checkpoint")
            if problem:
                problems.add(problem)
        check(self.image_size is None or self.image_size >= 32,
              f"image_size must be >= 32, got {self.image_size}")
        check(self.batch_size >= 2, f"batch_size must be >= 2 (contrastive pairs need "
                                    f"negatives), got {self.batch_size}")
        check(self.batch_size % max(num_replicas, 1) == 0 and self.batch_size >= num_replicas,
              f"batch_size {self.batch_size} must be a multiple of the {num_replicas} replicas")
        check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        check(self.lr_scaling in LR_SCALINGS, f"lr_scaling must be one of {LR_SCALINGS}")
        check(0 <= self.warmup_fraction < 1, "warmup_fraction must be in [0, 1)")
        check(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, "
                                            f"got {self.optimizer!r}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(self.method in SSL_METHODS, f"method must be one of {SSL_METHODS}, "
                                          f"got {self.method!r}")
        m = self.method_options
        check(m.temperature is None or m.temperature > 0, f"temperature must be > 0, got {m.temperature}")
        for name in ("projection_layers", "projection_hidden_dim", "projection_dim"):
            value = getattr(m, name)
            check(value is None or value >= 1, f"{name} must be >= 1, got {value}")
        check(m.barlow_lambda >= 0, f"barlow_lambda must be >= 0, got {m.barlow_lambda}")
        check(m.relic_alpha >= 0, f"relic_alpha must be >= 0, got {m.relic_alpha}")
        check(m.ema_momentum is None or 0 <= m.ema_momentum <= 1,
              f"ema_momentum must be in [0, 1], got {m.ema_momentum}")
        if self.method == "moco":
            check(m.moco_queue_size >= 2 * self.batch_size,
                  f"moco_queue_size ({m.moco_queue_size}) must hold at least one step's keys "
                  f"(2 x batch_size = {2 * self.batch_size})")
        check(0 <= self.micle_probability <= 1, "micle_probability must be in [0, 1]")
        check(self.strategy in STRATEGIES, f"strategy must be one of {STRATEGIES}, "
                                           f"got {self.strategy!r}")
        check(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, "
                                            f"got {self.precision!r}")
        check(self.checkpoint_every >= 1 and self.keep_checkpoints >= 1,
              "checkpoint_every and keep_checkpoints must be >= 1")
        check(self.log_every >= 1, "log_every must be >= 1")
        from medfound.augment.presets import PRESETS, get_preset

        preset = self.preset or self.modality
        if preset in PRESETS and self.modality in MODALITIES:
            try:
                get_preset(preset, self.input_size, **self.augment)
            except (TypeError, ValueError) as err:
                problems.add(f"augmentation: {err}")
        else:
            problems.add(f"unknown augmentation preset {preset!r}; known: {list(PRESETS)}")
        problems.raise_if_any("pretraining configuration")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @staticmethod
    def upgrade_dict(data: dict) -> dict:
        """``data`` (a saved config) in today's layout: the method knobs that older runs saved at the
        top level move into ``method_options``."""
        data = dict(data)
        flat = {name: data.pop(name) for name in METHOD_OPTION_FIELDS if name in data}
        if flat:
            data["method_options"] = {**flat, **dict(data.get("method_options") or {})}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "PretrainConfig":
        """The config a saved dict describes, in today's layout or the older flat one."""
        return cls(**cls.upgrade_dict(data))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PretrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
