"""Supervised pretraining of a BiT backbone on labeled natural images: the "BiT-S" stage of REMEDIS.

REMEDIS starts from BiT, a ResNetV2 trained with labels on natural images, and continues it with
contrastive learning on unlabeled medical images. BiT's own weights cannot be downloaded here, so
this trains the same architecture with a softmax head on any labeled image array (for example a
CIFAR-10 subset) and writes a run folder that the rest of medfound takes as it is:

- ``supervised.npz``: the weights under BiT's checkpoint keys (``resnet/block1/unit01/...``, the
  head as ``resnet/head/conv2d``), so ``PretrainConfig(init="bit-s:RUN/supervised.npz")`` and
  ``medfound pretrain --init bit-s:...`` continue from it exactly as from ``BiT-S-R50x1.npz``;
- ``backbone.weights.h5`` + ``run.json`` (method ``supervised``): the headless backbone, so
  ``export_module(RUN, ...)`` / ``medfound export`` turns the run into a module (the strong
  supervised baseline, fine-tuned through the same loader as every other module);
- ``metrics.json``: the held-out accuracy and the loss history; ``config.json``.

    from medfound.pretrain.supervised import SupervisedConfig, pretrain_supervised
    result = pretrain_supervised(SupervisedConfig(data="cifar10-small.npz", out_dir="runs/bit-s",
                                                  arch="tiny", steps=1000))
    PretrainConfig(data="cxr.npz", out_dir="runs/remedis", arch="tiny",
                   init=f"bit-s:{result.checkpoint}")
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from medfound.utils.files import atomic_path
from medfound.utils.validation import Problems

logger = logging.getLogger("medfound.pretrain")
CHECKPOINT_FILE = "supervised.npz"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"


@dataclasses.dataclass
class SupervisedConfig:
    """A supervised run: an image array with integer class labels, one BiT backbone, SGD.

    ``data`` is an ``.npz`` holding ``{train_split}_images`` (N, H, W[, C]) uint8 and
    ``{train_split}_labels`` (N,) or (N, 1) class indices; ``{eval_split}_*`` (optional) is scored
    at the end. Augmentation is BiT's small-image recipe: pad, random crop back and horizontal flip.
    """

    data: str
    out_dir: str
    arch: str = "r50x1"
    units: tuple[int, ...] | None = None  # overrides of the named architecture (small tests)
    width: float | None = None
    image_size: int | None = None  # default: the images' own size (at least 32)
    batch_size: int = 128
    steps: int = 1000
    learning_rate: float = 0.02  # SGD-momentum peak rate (warm-up, then cosine to 0); BiT: 0.03 x batch/256
    momentum: float = 0.9
    weight_decay: float = 5e-4  # decoupled, as keras.optimizers.SGD applies it
    warmup_fraction: float = 0.05
    label_smoothing: float = 0.0
    crop_padding: int = 4  # pixels of reflection padding before the random crop (0: no crop)
    flip: bool = True
    train_split: str = "train"
    eval_split: str | None = "test"  # None: no held-out score
    log_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.units is not None:
            self.units = tuple(self.units)

    def validate(self) -> None:
        """Refuses impossible values (and a data file without the named arrays) in one message."""
        from medfound.models.configs import get_arch

        problems = Problems()
        check = problems.check
        try:
            get_arch(self.arch)
        except ValueError as err:
            problems.add(str(err))
        check(self.image_size is None or self.image_size >= 32,
              f"image_size must be >= 32, got {self.image_size}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(0 <= self.warmup_fraction < 1, "warmup_fraction must be in [0, 1)")
        check(0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)")
        check(self.crop_padding >= 0, f"crop_padding must be >= 0, got {self.crop_padding}")
        check(self.log_every >= 1, "log_every must be >= 1")
        check(bool(str(self.out_dir)), "out_dir must be given")
        path = Path(self.data)
        if not path.is_file():
            problems.add(f"{path}: labeled image .npz not found")
        else:
            try:
                with np.load(path, allow_pickle=False) as data:
                    names = set(data.files)
            except (OSError, ValueError) as err:
                names = set()
                problems.add(f"{path}: not a readable .npz ({err})")
            splits = [self.train_split] + ([self.eval_split] if self.eval_split else [])
            missing = [f"{s}_{k}" for s in splits for k in ("images", "labels")
                       if names and f"{s}_{k}" not in names]
            check(not missing, f"{path}: missing arrays {missing} (has {sorted(names)})")
        problems.raise_if_any("supervised pretraining configuration")

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SupervisedConfig":
        return cls(**json.loads(Path(path).read_text()))


@dataclasses.dataclass
class SupervisedResult:
    """What a supervised run left: its folder, the BiT-format checkpoint, scores and the model."""

    run_dir: Path
    checkpoint: Path  # BiT-keyed .npz: PretrainConfig(init=f"bit-s:{checkpoint}") continues it
    steps: int
    history: list[dict]  # {step, loss, accuracy} means since the previous log point
    eval_accuracy: float | None  # top-1 on eval_split (None without one)
    class_names: list[str]
    seconds: float
    model: object = dataclasses.field(default=None, repr=False)  # BiTBackbone with its head


def read_split(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, C) uint8 and labels (N,) int64 of one split, or a one-line error."""
    from medfound.utils.limits import check_zip

    check_zip(path, ".npz")  # bounded before a member is inflated
    with np.load(path, allow_pickle=False) as data:
        images, labels = data[f"{split}_images"], np.asarray(data[f"{split}_labels"])
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{path}: '{split}_images' has shape {images.shape}; expected (N, H, W) "
                         "or (N, H, W, 1|3)")
    labels = labels.reshape(len(labels), -1)
    if labels.shape[1] != 1 or len(labels) != len(images):
        raise ValueError(f"{path}: '{split}_labels' has shape {labels.shape}; expected one class "
                         f"index per image ({len(images)})")
    labels = labels[:, 0]
    if not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
        raise ValueError(f"{path}: '{split}_labels' must hold class indices >= 0")
    return images, labels.astype(np.int64)


def class_names_of(path: str | os.PathLike, num_classes: int) -> list[str]:
    """The file's ``classes`` array when it has one, else '0', '1', ..."""
    with np.load(path, allow_pickle=False) as data:
        if "classes" in data.files and len(data["classes"]) == num_classes:
            return [str(c) for c in data["classes"]]
    return [str(i) for i in range(num_classes)]


def _preprocess(images, size: int):
    from medfound.data.prepare import prepare_image

    return prepare_image(images, size)


def train_dataset(images: np.ndarray, labels: np.ndarray, config: SupervisedConfig, size: int):
    """Endless shuffled, augmented batches of (images in [0, 1] at ``size``, labels)."""
    import tensorflow as tf

    pad = config.crop_padding

    @tf.autograph.experimental.do_not_convert
    def augment(index, image, label):
        seed = tf.stack([tf.constant(config.seed, tf.int64), index])
        image = _preprocess(image[None], size)[0]
        if pad:
            image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
            image = tf.image.stateless_random_crop(image, (size, size, 3), seed=seed)
        if config.flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
        return image, label

    return (tf.data.Dataset.from_tensor_slices((images, labels))
            .shuffle(len(images), seed=config.seed, reshuffle_each_iteration=True).repeat()
            .enumerate().map(lambda i, x: augment(i, *x), num_parallel_calls=tf.data.AUTOTUNE,
                             deterministic=True)
            .batch(config.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def evaluate_accuracy(model, images: np.ndarray, labels: np.ndarray, size: int,
                      batch_size: int = 256) -> float:
    """Top-1 accuracy of a backbone with a head (``logits`` output) on an image array."""
    import tensorflow as tf

    @tf.function
    def predict(batch):
        return tf.argmax(model(_preprocess(batch, size), training=False)["logits"], axis=-1)

    correct = 0
    for start in range(0, len(images), batch_size):
        pred = predict(tf.constant(images[start:start + batch_size])).numpy()
        correct += int((pred == labels[start:start + batch_size]).sum())
    return correct / max(len(images), 1)


def bit_checkpoint_arrays(model) -> dict[str, np.ndarray]:
    """The backbone's (and head's) weights under BiT's checkpoint keys, as ``load_bit_weights``
    reads them (the inverse of that import)."""
    from medfound.models.bit_weights import expected_keys

    return {key: np.asarray(variable.numpy()) for key, variable in expected_keys(model).items()}


def pretrain_supervised(config: SupervisedConfig, *, verbose: bool = True) -> SupervisedResult:
    """Trains ``config.arch`` with a softmax head on the labeled images and writes the run folder
    (see the module docstring). A folder holding a finished run of the same configuration is
    reused as it is (nothing is trained again)."""
    import keras
    import tensorflow as tf

    from medfound.models.bit import build_backbone
    from medfound.optim.factory import apply_reached_gradients, make_optimizer
    from medfound.runinfo import BACKBONE_WEIGHTS, RunInfo
    from medfound.version import __version__

    config.validate()
    run_dir = Path(config.out_dir)
    finished = _finished(run_dir, config)
    if finished is not None:
        return finished
    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    images, labels = read_split(config.data, config.train_split)
    num_classes = int(labels.max()) + 1
    if len(np.unique(labels)) < 2:  # a softmax over one class has zero loss: nothing is learned
        raise ValueError(f"{config.data}: '{config.train_split}_labels' hold a single class "
                         f"({int(labels[0])}); supervised pretraining needs at least two")
    size = config.image_size or max(32, int(images.shape[1]))
    model = build_backbone(config.arch, num_classes=num_classes, units=config.units,
                           width=config.width)
    # Every weight decays here, norms and biases too, as supervised pretraining always has.
    optimizer = make_optimizer("sgd", config.learning_rate, config.steps, warmup_fraction=config.warmup_fraction,
                               momentum=config.momentum, weight_decay=config.weight_decay,
                               exclude_from_weight_decay=())
    variables = model.trainable_variables
    smoothing = config.label_smoothing

    @tf.function
    def train_step(batch_images, batch_labels):
        with tf.GradientTape() as tape:
            logits = model(batch_images, training=True)["logits"]
            targets = tf.one_hot(batch_labels, num_classes)
            loss = tf.reduce_mean(keras.losses.categorical_crossentropy(
                targets, logits, from_logits=True, label_smoothing=smoothing))
        grads = tape.gradient(loss, variables)
        apply_reached_gradients(optimizer, grads, variables)
        correct = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1), batch_labels), tf.float32))
        return loss, correct

    history: list[dict] = []
    window: list[tuple] = []
    progress = keras.utils.Progbar(config.steps, stateful_metrics=["loss", "acc"],
                                   verbose=1 if verbose else 0)
    for step, (batch_images, batch_labels) in enumerate(
            train_dataset(images, labels, config, size).take(config.steps), start=1):
        window.append(train_step(batch_images, batch_labels))
        if step % config.log_every == 0 or step == config.steps:
            loss = float(np.mean([float(w[0]) for w in window]))
            acc = float(np.mean([float(w[1]) for w in window]))
            window = []
            if not np.isfinite(loss):
                raise FloatingPointError(f"supervised pretraining diverged at step {step} (loss "
                                         f"{loss}); lower learning_rate")
            history.append({"step": step, "loss": loss, "accuracy": acc})
            progress.update(step, [("loss", loss), ("acc", acc)])
    eval_accuracy = None
    if config.eval_split:
        eval_images, eval_labels = read_split(config.data, config.eval_split)
        eval_accuracy = evaluate_accuracy(model, eval_images, eval_labels, size)
    names = class_names_of(config.data, num_classes)

    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / CONFIG_FILE)
    arrays = bit_checkpoint_arrays(model)
    with atomic_path(run_dir / CHECKPOINT_FILE) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    headless = build_backbone(config.arch, units=config.units, width=config.width)
    from medfound.models.bit_weights import load_bit_weights

    load_bit_weights(headless, run_dir / CHECKPOINT_FILE)
    with atomic_path(run_dir / BACKBONE_WEIGHTS) as tmp:
        headless.save_weights(tmp)
    RunInfo(arch=headless.arch, units=config.units, width=config.width, modality=None,
            init="random", method="supervised", steps=config.steps, image_size=size,
            data=f"{Path(config.data).name} split '{config.train_split}': {len(images)} labeled "
                 f"images, {num_classes} classes", medfound_version=__version__).save(run_dir)
    seconds = time.perf_counter() - started
    metrics = {"eval_split": config.eval_split, "eval_accuracy": eval_accuracy,
               "class_names": names, "steps": config.steps, "image_size": size,
               "train_examples": int(len(images)), "history": history, "seconds": seconds}
    with atomic_path(run_dir / METRICS_FILE) as tmp:  # last: its presence marks a finished run
        Path(tmp).write_text(json.dumps(metrics, indent=2))
    if verbose:
        shown = "n/a" if eval_accuracy is None else f"{eval_accuracy:.3f}"
        print(f"supervised {config.arch}: {config.steps} steps in {seconds:.0f} s; "
              f"{config.eval_split} accuracy {shown}; wrote {run_dir}", flush=True)
    return SupervisedResult(run_dir, run_dir / CHECKPOINT_FILE, config.steps, history,
                            eval_accuracy, names, seconds, model)


def _finished(run_dir: Path, config: SupervisedConfig) -> SupervisedResult | None:
    """The result of a finished run of the same configuration in ``run_dir``, else None."""
    metrics_file, config_file = run_dir / METRICS_FILE, run_dir / CONFIG_FILE
    if not (metrics_file.is_file() and config_file.is_file() and (run_dir / CHECKPOINT_FILE).is_file()):
        return None
    saved = json.loads(config_file.read_text())
    if saved != json.loads(json.dumps(dataclasses.asdict(config))):
        raise ValueError(f"{run_dir} holds a supervised run with another configuration; use a "
                         "new out_dir or the same settings")
    metrics = json.loads(metrics_file.read_text())
    return SupervisedResult(run_dir, run_dir / CHECKPOINT_FILE, metrics["steps"],
                            metrics["history"], metrics["eval_accuracy"], metrics["class_names"],
                            0.0)
