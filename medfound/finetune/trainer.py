"""``finetune``: a backbone plus a linear head trained on a labeled task, measured on val and test.

Linear mode freezes the backbone and computes every embedding once, so only the head trains;
full mode trains end to end. Both use a warm-up cosine schedule and stop early when the
validation mean AUC (or, where no class has both labels in val, the validation loss) stops
improving, restoring the best epoch's weights. Everything in the run folder is written atomically.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from medfound.finetune.config import FinetuneConfig
from medfound.finetune.linear_probe import embed_rows
from medfound.finetune.losses import loss_for_task
from medfound.finetune.model import (build_classifier, build_head, default_image_size,
                                     pooled_features)
from medfound.optim.factory import apply_reached_gradients
from medfound.resolve import load
from medfound.utils.files import atomic_path
from medfound.utils.replicas import split_over_replicas

COMMAND = "medfound finetune"  # who the run folder belongs to (medfound.utils.ownership)
MODEL_FILE = "model.keras"
WEIGHTS_FILE = "model.weights.h5"  # written instead when the backbone cannot be serialised (foreign SavedModel)


@dataclasses.dataclass
class FinetuneResult:
    """What a fine-tuning run produced: where, the metrics, the per-epoch history and the model."""

    out_dir: Path
    model_path: Path
    metrics: dict
    history: list[dict]
    best_epoch: int
    stopped_early: bool
    image_size: int
    class_names: tuple[str, ...]
    task_type: str
    model: keras.Model | None = None

    @property
    def test_mean_auc(self) -> float | None:
        return self.metrics["test"]["mean_auc"]

    @property
    def val_mean_auc(self) -> float | None:
        return self.metrics["val"]["mean_auc"]


def make_optimizer(config: FinetuneConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """SGD-momentum, LARS or AdamW on a linear warm-up + cosine decay schedule over ``total_steps``."""
    from medfound.optim.factory import make_optimizer as optimizer_for

    return optimizer_for(config.optimizer, config.learning_rate, total_steps, warmup_fraction=config.warmup_fraction,
                         momentum=config.momentum, weight_decay=config.weight_decay)


def select_classes(ds, classes: list[str] | tuple[str, ...] | None):
    """The dataset with only the named label columns (in that order); multi-label tasks only."""
    if classes is None or tuple(classes) == ds.class_names:
        return ds
    unknown = [c for c in classes if c not in ds.class_names]
    if unknown:
        raise ValueError(f"{ds.name or 'dataset'}: unknown class(es) {unknown}; the task has {list(ds.class_names)}")
    if ds.task != "multilabel":
        raise ValueError(f"{ds.name or 'dataset'}: choosing classes needs a multi-label task, this one is {ds.task}")
    cols = [ds.class_names.index(c) for c in classes]
    # replace() keeps the dataset's class (a TFDS-backed one streams its own way) and its sources.
    return dataclasses.replace(ds, labels=ds.labels[:, cols], mask=ds.mask[:, cols],
                               class_names=tuple(classes), task="multilabel", meta=dict(ds.meta))


def has_auc(labels: np.ndarray, mask: np.ndarray) -> bool:
    """Whether any class has both a positive and a negative under the mask (so a mean AUC exists)."""
    used = mask > 0
    pos = np.sum(used & (labels > 0.5), axis=0)
    neg = np.sum(used & (labels < 0.5), axis=0)
    return bool(np.any((pos > 0) & (neg > 0)))


# Any batch and image size: one trace per function, not one per batch shape.
IMAGES_SPEC = tf.TensorSpec((None, None, None, 3), tf.float32)


def embedding_function(backbone: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """images -> (B, D) pooled embeddings in inference mode, traced once for every batch and size."""

    @tf.function(input_signature=[IMAGES_SPEC])
    def forward(images):
        return pooled_features(backbone(images, training=False))

    return forward


def logits_function(classifier: keras.Model,
                    transform: Callable[[tf.Tensor], tf.Tensor] | None = None
                    ) -> Callable[[tf.Tensor], tf.Tensor]:
    """images -> (B, K) logits in inference mode (``transform`` edits the images first), traced once."""

    @tf.function(input_signature=[IMAGES_SPEC])
    def forward(images):
        if transform is not None:
            images = transform(images)
        return classifier(images, training=False)["logits"]

    return forward


def embed_dataset(backbone: keras.Model, ds, image_size: int, batch_size: int,
                  center_crop: bool | float = False,
                  forward: Callable[[tf.Tensor], tf.Tensor] | None = None) -> np.ndarray:
    """The (N, D) pooled embeddings of a ``LabeledDataset`` in row order, backbone in inference
    mode; pass ``forward = embedding_function(backbone)`` to reuse one trace across calls."""
    forward = forward or embedding_function(backbone)
    return embed_rows(forward, ds, image_size, batch_size, center_crop).astype(np.float32)


def predict_logits(classifier: keras.Model, ds, image_size: int, batch_size: int,
                   center_crop: bool | float = False,
                   transform: Callable[[tf.Tensor], tf.Tensor] | None = None,
                   forward: Callable[[tf.Tensor], tf.Tensor] | None = None) -> np.ndarray:
    """The (N, K) logits of a classifier over a ``LabeledDataset``, in row order; ``transform``
    edits images first; pass ``forward = logits_function(...)`` to reuse one trace across calls."""
    forward = forward or logits_function(classifier, transform)
    return embed_rows(forward, ds, image_size, batch_size, center_crop)


def probabilities(logits: np.ndarray, task_type: str) -> np.ndarray:
    """Sigmoid (multi-label, binary) or softmax (multi-class) of logits, in NumPy."""
    logits = np.asarray(logits, np.float64)
    if task_type == "multiclass":
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-logits))


class EarlyStopping:
    """Tracks the best epoch of a monitored score, keeps its weights, and says when patience ran out."""

    def __init__(self, variables: list, higher_is_better: bool, patience: int, min_delta: float = 0.0):
        self.variables = variables
        self.sign = 1.0 if higher_is_better else -1.0
        self.patience = patience
        self.min_delta = min_delta
        self.best = -math.inf
        self.best_epoch = 0
        self.wait = 0
        self._weights: list[np.ndarray] | None = None

    def update(self, epoch: int, score: float) -> bool:
        """Records one epoch's score; returns True when training should stop."""
        value = self.sign * score if np.isfinite(score) else -math.inf
        if self._weights is None or value > self.best + self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self._weights = [np.array(v.numpy()) for v in self.variables]
            return False
        self.wait += 1
        return self.patience > 0 and self.wait >= self.patience

    def restore(self) -> None:
        """Puts the best epoch's weights back."""
        if self._weights is not None:
            for variable, value in zip(self.variables, self._weights):
                variable.assign(value)


def _feature_batches(features: np.ndarray, labels: np.ndarray, mask: np.ndarray, batch_size: int,
                     steps: int, seed: int, epoch: int) -> Iterator[tuple[np.ndarray, ...]]:
    order = np.random.default_rng([seed, epoch]).permutation(len(features))
    for step in range(steps):
        idx = order[step * batch_size:(step + 1) * batch_size]
        if idx.size == 0:
            return
        yield features[idx], labels[idx], mask[idx]


def _log(config: FinetuneConfig, message: str) -> None:
    if config.verbose:
        print(f"[finetune] {message}", flush=True)


def write_json(path: Path, data) -> None:
    """Writes JSON atomically (NaN and infinity become null)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(_jsonable(data), indent=2, sort_keys=True))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


@dataclasses.dataclass
class _Training:
    """What one fine-tuning mode trains and how: its variables, the forward pass, each epoch's
    batches, and the logits of the validation and test splits with the current weights."""

    variables: list
    forward: Callable
    epoch_batches: Callable[[int], Iterator]
    val_logits: Callable[[], np.ndarray]
    test_logits: Callable[[], np.ndarray]
    classifier: Callable[[], keras.Model]  # the backbone + head model to save


def _task_splits(config: FinetuneConfig):
    """The train (label fraction applied), val and test splits of the task, classes selected."""
    from medfound.data.labeled import label_fraction_subset, load_task_splits

    splits = load_task_splits(config.task, config.data, seed=config.seed, **config.data_options)
    missing = [s for s in ("train", "val", "test") if s not in splits or len(splits[s]) == 0]
    if missing:
        raise ValueError(f"{config.data}: task {config.task!r} gave no examples for split(s) {missing}")
    splits = {name: select_classes(splits[name], config.classes) for name in ("train", "val", "test")}
    return label_fraction_subset(splits["train"], config.label_fraction, config.seed), splits["val"], splits["test"]


def _linear_training(config: FinetuneConfig, backbone: keras.Model, splits: dict, size: int, steps: int,
                     strategy: tf.distribute.Strategy) -> _Training:
    """Frozen backbone: every split embedded once, then only a standardising linear head trains."""
    train = splits["train"]
    backbone.trainable = False
    embed_fn = split_over_replicas(embedding_function(backbone), strategy)
    feats = {name: embed_dataset(backbone, ds, size, config.batch_size, config.center_crop, forward=embed_fn)
             for name, ds in splits.items()}
    head = build_head(train.num_classes, *_standardisation(feats["train"]))
    head.build((None, feats["train"].shape[1]))

    def forward(inputs, training):
        return head(inputs, training=training)

    def epoch_batches(epoch: int):
        return _feature_batches(feats["train"], train.labels, train.mask, config.batch_size, steps, config.seed, epoch)

    return _Training(head.trainable_variables, forward, epoch_batches,
                     val_logits=lambda: np.asarray(head(feats["val"], training=False)),
                     test_logits=lambda: np.asarray(head(feats["test"], training=False)),
                     classifier=lambda: build_classifier(backbone, head, train.task))


FEATURE_STATISTICS_SAMPLE = 512  # training images the full-mode head's standardisation is measured on


def _feature_statistics(config: FinetuneConfig, backbone: keras.Model, train, size: int,
                        strategy: tf.distribute.Strategy) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the starting backbone's pooled features on a seeded sample of the
    training images. The full-mode head standardises with them (fixed), as the linear head does:
    the raw block4 embedding is large (squared norm 2e5-4e5 for the 1024-d tiny BiTs of the
    benchmarks), so one SGD step on a zero-initialised head gives logits in the thousands and
    training diverges (loss 1e9 in the first epoch at lr 0.05 on PneumoniaMNIST)."""
    count = min(len(train), FEATURE_STATISTICS_SAMPLE)
    rows = np.sort(np.random.default_rng(config.seed).choice(len(train), count, replace=False))
    embed_fn = split_over_replicas(embedding_function(backbone), strategy)
    feats = embed_dataset(backbone, train.subset(rows), size, config.batch_size,
                          config.center_crop, forward=embed_fn)
    return _standardisation(feats)


def _standardisation(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and variance (plus 1e-6, so a constant feature divides by 1e-3) that
    both heads standardise their input with."""
    return feats.mean(0), feats.var(0) + 1e-6


def _full_training(config: FinetuneConfig, backbone: keras.Model, splits: dict, size: int, steps: int,
                   strategy: tf.distribute.Strategy, optimizer: keras.optimizers.Optimizer,
                   replicas: int) -> _Training:
    """End to end: backbone and head train together, each batch split over the replicas."""
    from medfound.data.images import naming_bad_images

    train = splits["train"]
    mean, var = _feature_statistics(config, backbone, train, size, strategy)
    with strategy.scope():
        head = build_head(train.num_classes, mean, var)
        backbone.trainable = True
        classifier = build_classifier(backbone, head, train.task)
        variables = classifier.trainable_variables
        # Slots made now, in the scope, on every replica: made lazily in the first step
        # they would be created inside the distributed function's branch and fail.
        optimizer.build(variables)
    stream = train.tf_dataset(size, config.batch_size, shuffle=True, seed=config.seed,
                              center_crop=config.center_crop, repeat=config.steps_per_epoch is not None)

    def forward(inputs, training):
        return classifier(inputs, training=training)["logits"]

    def epoch_batches(epoch: int):
        batches = stream.take(steps).map(lambda b: (b["image"], b["label"], b["mask"]))
        if replicas > 1:
            # A last batch with fewer examples than replicas would leave a replica none,
            # and the backbone cannot run on an empty batch: it is dropped (a few examples
            # of one epoch; the shuffle changes them each epoch).
            batches = batches.filter(lambda images, *_: tf.shape(images)[0] >= replicas)
            batches = strategy.experimental_distribute_dataset(batches)
        with naming_bad_images(train.paths):
            yield from batches

    # One trace for every epoch's validation, each batch split over the devices.
    logits_fn = split_over_replicas(logits_function(classifier), strategy)

    def split_logits(ds) -> np.ndarray:
        return predict_logits(classifier, ds, size, config.batch_size, config.center_crop, forward=logits_fn)

    return _Training(variables, forward, epoch_batches, val_logits=lambda: split_logits(splits["val"]),
                     test_logits=lambda: split_logits(splits["test"]), classifier=lambda: classifier)


def _train_step_function(training: _Training, optimizer, loss_fn, strategy: tf.distribute.Strategy,
                         replicas: int):
    """One optimisation step over a (possibly distributed) batch, returning the summed replica loss."""

    def replica_step(inputs, labels, mask):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, training.forward(inputs, True), mask)
            # Gradients are summed over replicas: scale so the sum is the mean over them.
            scaled = loss / replicas
        grads = tape.gradient(scaled, training.variables)
        apply_reached_gradients(optimizer, grads, training.variables)
        return scaled

    @tf.function(reduce_retracing=True)
    def train_step(inputs, labels, mask):
        if replicas == 1:
            return replica_step(inputs, labels, mask)
        per_replica = strategy.run(replica_step, args=(inputs, labels, mask))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return train_step


def _train_epochs(config: FinetuneConfig, training: _Training, train_step, optimizer, loss_fn, val,
                  task_type: str, stopper: EarlyStopping, monitor_auc: bool) -> tuple[list[dict], bool]:
    """Epochs until ``config.epochs`` or early stopping; the best epoch's weights restored.
    Returns the per-epoch history and whether it stopped early."""
    from medfound.evaluation.metrics import mean_auc

    history: list[dict] = []
    stopped = False
    for epoch in range(1, config.epochs + 1):
        t0 = time.time()
        losses = [float(train_step(*batch)) for batch in training.epoch_batches(epoch)]
        logits = training.val_logits()
        val_loss = float(loss_fn(val.labels, logits, val.mask))
        val_auc = mean_auc(val.labels, probabilities(logits, task_type), val.mask)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                  "steps": len(losses), "val_loss": val_loss, "val_mean_auc": val_auc,
                  "learning_rate": float(optimizer.learning_rate), "seconds": time.time() - t0}
        history.append(record)
        _log(config, f"epoch {epoch}: loss {record['train_loss']:.4f}, val loss {val_loss:.4f}, "
                     f"val mean AUC {val_auc:.4f}")
        if not all(np.isfinite([record["train_loss"], val_loss])):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {record['train_loss']}, "
                                     f"val loss {val_loss}); lower the learning rate")
        if stopper.update(epoch, val_auc if monitor_auc else val_loss):
            stopped = True
            _log(config, f"early stop after epoch {epoch}: no better "
                         f"{'val_mean_auc' if monitor_auc else 'val_loss'} for {config.patience} epoch(s); "
                         f"best epoch {stopper.best_epoch}")
            break
    stopper.restore()
    return history, stopped


def _split_reports(config: FinetuneConfig, splits: dict, split_logits: dict, loss_fn, task_type: str,
                   class_names) -> dict:
    """The classification report (with patients and loss) of the val and test splits."""
    from medfound.evaluation.metrics import classification_report

    metrics: dict = {}
    for name in ("val", "test"):
        ds = splits[name]
        metrics[name] = classification_report(ds.labels, probabilities(split_logits[name], task_type), class_names,
                                              task_type, mask=ds.mask, threshold=config.threshold,
                                              n_boot=config.n_boot, seed=config.seed, groups=ds.patient_ids)
        metrics[name]["patients"] = int(ds.patients.size)
        metrics[name]["loss"] = float(loss_fn(ds.labels, split_logits[name], ds.mask))
    return metrics


def _write_run(config: FinetuneConfig, classifier: keras.Model, run_info: dict, splits: dict,
               test_logits: np.ndarray, metrics: dict, history: list[dict], best_epoch: int) -> Path:
    """Writes the run folder: the model, config.json (with ``run_info``), metrics, history and the
    two plots; returns the model file's path."""
    from medfound.evaluation.plots import plot_roc_curves

    from medfound.utils.ownership import claim_folder

    out = claim_folder(config.out_dir, COMMAND)
    model_path = save_classifier(classifier, out)
    run_info = {**run_info, "model_file": model_path.name,
                "splits": {name: ds.describe() for name, ds in splits.items()}}
    config.save(out / "config.json", run=_jsonable(run_info))
    write_json(out / "metrics.json", metrics)
    write_json(out / "history.json", history)
    test = splits["test"]
    plot_roc_curves(test.labels, probabilities(test_logits, run_info["task_type"]), run_info["class_names"],
                    out / "roc_test.png", mask=test.mask,
                    title=f"{config.task} test ROC ({config.mode}, {config.module})")
    plot_training_curves(history, out / "training_curves.png", best_epoch=best_epoch)
    return model_path


def check_out_dir(out: Path, overwrite: bool = False) -> None:
    """Refuses an --out that is not new, empty or a fine-tuning run (medfound.utils.ownership):
    a finished run is replaced only with ``overwrite``, an unfinished one (killed) is redone."""
    from medfound.utils.ownership import check_folder

    check_folder(out, COMMAND, overwrite=overwrite, ours=_is_unmarked_run,
                 finished=lambda folder: (folder / "metrics.json").exists())


def _is_unmarked_run(folder: Path) -> bool:
    """A run written before the ownership marker: a fine-tuning config.json beside its model."""
    if not ((folder / MODEL_FILE).is_file() or (folder / WEIGHTS_FILE).is_file()):
        return False
    try:
        FinetuneConfig.load(folder / "config.json")
    except (OSError, ValueError, TypeError, KeyError):
        return False
    return True


def finetune(config: FinetuneConfig, *, strategy: tf.distribute.Strategy | None = None,
             overwrite: bool = False) -> FinetuneResult:
    """Fine-tunes ``config.module`` on ``config.task`` and writes model, config, metrics, history and plots.

    ``strategy`` (default: the one ``config.strategy`` names) spreads the work over devices: the
    backbone lives in its scope and every embedding or prediction batch is split over its
    replicas; in full mode the head and optimizer live there too and each training batch is split
    (gradients averaged). Linear mode's small head trains on one device.
    """
    config.validate()
    started = time.time()
    out = Path(config.out_dir)
    check_out_dir(out, overwrite)  # before any work: a user's folder is never written into
    train, val, test = _task_splits(config)
    splits = {"train": train, "val": val, "test": test}
    task_type, num_classes, class_names = train.task, train.num_classes, train.class_names
    if strategy is None:
        from medfound.pretrain.strategy import make_strategy

        strategy = make_strategy(config.strategy)
    # Training steps are split over the replicas in full mode only.
    replicas = strategy.num_replicas_in_sync if config.mode == "full" else 1
    with strategy.scope():
        backbone = load(config.module, seed=config.seed)
    size = default_image_size(config.task, backbone.source.input_size, config.image_size)
    _log(config, f"{config.task}: train {len(train)} ({train.patients.size} patients, fraction "
                 f"{config.label_fraction:g}), val {len(val)}, test {len(test)}; {task_type} with "
                 f"{num_classes} class(es); {config.mode} mode at {size} px")
    loss_fn = loss_for_task(task_type)
    steps = math.ceil(len(train) / config.batch_size)
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch) if config.mode == "linear" else config.steps_per_epoch
    with strategy.scope() if config.mode == "full" else contextlib.nullcontext():
        optimizer = make_optimizer(config, total_steps=config.epochs * steps)
    monitor_auc = has_auc(val.labels, val.mask)
    if config.mode == "linear":
        training = _linear_training(config, backbone, splits, size, steps, strategy)
    else:
        training = _full_training(config, backbone, splits, size, steps, strategy, optimizer, replicas)
    train_step = _train_step_function(training, optimizer, loss_fn, strategy, replicas)
    stopper = EarlyStopping(training.variables, higher_is_better=monitor_auc, patience=config.patience,
                            min_delta=config.min_delta)
    history, stopped = _train_epochs(config, training, train_step, optimizer, loss_fn, val, task_type, stopper,
                                     monitor_auc)

    classifier = training.classifier()
    split_logits = {"val": training.val_logits(), "test": training.test_logits()}
    metrics = _split_reports(config, splits, split_logits, loss_fn, task_type, class_names)
    metrics.update({"module": config.module, "mode": config.mode, "task": config.task, "task_type": task_type,
                    "image_size": size, "label_fraction": config.label_fraction,
                    "train_examples": len(train), "train_patients": int(train.patients.size),
                    "monitor": "val_mean_auc" if monitor_auc else "val_loss", "best_epoch": stopper.best_epoch,
                    "epochs_run": len(history), "stopped_early": stopped, "seconds": time.time() - started})

    model_path = _write_run(config, classifier, {"task_type": task_type, "class_names": list(class_names),
                                                 "image_size": size, "module_format": backbone.source.format,
                                                 "module_sha256": backbone.source.sha256,
                                                 "arch": backbone.arch},
                            splits, split_logits["test"], metrics, history, stopper.best_epoch)
    test_auc = metrics["test"]["mean_auc"]
    _log(config, f"test mean AUC {test_auc if test_auc is None else round(test_auc, 4)}; wrote {out}")
    return FinetuneResult(out_dir=out, model_path=model_path, metrics=_jsonable(metrics), history=history,
                          best_epoch=stopper.best_epoch, stopped_early=stopped, image_size=size,
                          class_names=tuple(class_names), task_type=task_type, model=classifier)


def save_classifier(classifier: keras.Model, out: Path) -> Path:
    """Saves backbone + head as ``model.keras``; a backbone Keras cannot serialise gets its weights saved instead."""
    path = out / MODEL_FILE
    try:
        with atomic_path(path) as tmp:
            classifier.save(tmp)
        return path
    except (TypeError, ValueError, NotImplementedError) as err:
        weights = out / WEIGHTS_FILE
        with atomic_path(weights) as tmp:
            classifier.save_weights(tmp)
        print(f"[finetune] note: {MODEL_FILE} could not be written ({err}); saved {weights.name} instead, "
              "which loads into a classifier rebuilt on the same module")
        return weights


def plot_training_curves(history: list[dict], path: str | os.PathLike, best_epoch: int | None = None,
                         dpi: int = 110) -> Path:
    """Training and validation loss, and validation mean AUC, per epoch as a PNG (written atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9.0, 3.8))
    FigureCanvasAgg(fig)
    ax_loss, ax_auc = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    aucs = [np.nan if h["val_mean_auc"] is None else h["val_mean_auc"] for h in history]
    ax_auc.plot(epochs, aucs, marker="o", color="tab:green")
    ax_auc.set_xlabel("epoch")
    ax_auc.set_ylabel("validation mean AUC")
    for ax in (ax_loss, ax_auc):
        if best_epoch:
            ax.axvline(best_epoch, color="0.5", linestyle="--", linewidth=1)
    fig.suptitle("fine-tuning" + (f" (best epoch {best_epoch})" if best_epoch else ""))
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return out
