"""Configuration of a pretraining run, validated before any work starts."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from medfound.models.configs import get_arch
from medfound.registry import MODALITIES, SSL_METHODS
from medfound.utils.files import atomic_path
from medfound.utils.validation import Problems

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("lars", "sgd", "adamw")
LR_SCALINGS = ("linear", "sqrt")
INIT_KINDS = ("bit-s", "bit-m")


@dataclasses.dataclass
class PretrainConfig:
    """Everything a pretraining run needs; defaults follow SimCLR v2 / REMEDIS where they apply.

    Head sizes, temperature and EMA momentum left as None take the method's own defaults
    (``medfound.ssl.methods``: e.g. SimCLR 3 layers to 128 at T=0.1, MoCo T=0.2).
    """

    data: str  # folder, CSV, MedMNIST .npz, TFRecord folder or 'tfds:NAME'
    out_dir: str
    modality: str = "cxr"  # picks the augmentation preset and the default image size
    arch: str = "r50x1"
    units: tuple[int, ...] | None = None  # overrides of the named architecture (small tests)
    width: float | None = None
    init: str = "random"  # 'random', 'bit-s:PATH' or 'bit-m:PATH' (a BiT .npz or SavedModel)
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
    temperature: float | None = None  # SimCLR/RELIC/MoCo
    projection_layers: int | None = None
    projection_hidden_dim: int | None = None  # default: the backbone's embedding size
    projection_dim: int | None = None
    barlow_lambda: float = 0.0051
    relic_alpha: float = 1.0
    moco_queue_size: int = 16384
    ema_momentum: float | None = None  # BYOL/MoCo target momentum at step 0 (cosine to 1)
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

    @property
    def input_size(self) -> int:
        return self.image_size or MODALITIES[self.modality]

    @property
    def init_kind(self) -> str:
        """'random', 'bit-s' or 'bit-m'."""
        return self.init.partition(":")[0]

    @property
    def init_path(self) -> str | None:
        _, _, path = self.init.partition(":")
        return path or None

    def method_settings(self):
        """The ``MethodSettings`` of this run's objective (``medfound.ssl.methods``)."""
        from medfound.ssl.methods import MethodSettings

        return MethodSettings(
            projection_layers=self.projection_layers,
            projection_hidden_dim=self.projection_hidden_dim, projection_dim=self.projection_dim,
            temperature=self.temperature, barlow_lambda=self.barlow_lambda,
            relic_alpha=self.relic_alpha, moco_queue_size=self.moco_queue_size,
            ema_momentum=self.ema_momentum, total_steps=self.steps, seed=self.seed)

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup_fraction * self.steps))

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
        check(self.init == "random" or (self.init_kind in INIT_KINDS and self.init_path),
              f"init must be 'random', 'bit-s:PATH' or 'bit-m:PATH', got {self.init!r}")
        if self.init_path:
            check(Path(self.init_path).exists(), f"init checkpoint not found: {self.init_path}")
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
        check(self.temperature is None or self.temperature > 0,
              f"temperature must be > 0, got {self.temperature}")
        for name in ("projection_layers", "projection_hidden_dim", "projection_dim"):
            value = getattr(self, name)
            check(value is None or value >= 1, f"{name} must be >= 1, got {value}")
        check(self.barlow_lambda >= 0, f"barlow_lambda must be >= 0, got {self.barlow_lambda}")
        check(self.relic_alpha >= 0, f"relic_alpha must be >= 0, got {self.relic_alpha}")
        check(self.ema_momentum is None or 0 <= self.ema_momentum <= 1,
              f"ema_momentum must be in [0, 1], got {self.ema_momentum}")
        if self.method == "moco":
            check(self.moco_queue_size >= 2 * self.batch_size,
                  f"moco_queue_size ({self.moco_queue_size}) must hold at least one step's keys "
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

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PretrainConfig":
        return cls(**json.loads(Path(path).read_text()))
