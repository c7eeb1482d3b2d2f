"""The pretraining loop: one code path for every method (SimCLR, Barlow Twins, MoCo v2, BYOL,
RELIC) on one device, several GPUs or several hosts.

A custom loop (rather than ``model.fit``) because the loss needs the global batch across
replicas and the run must checkpoint and resume exactly: step count, optimizer state and the
learning-rate position all live in the checkpointed optimizer.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import keras
import tensorflow as tf

from medfound.models.bit import BiTBackbone
from medfound.pretrain.checkpoints import make_checkpoint, remove_leftovers, restore
from medfound.pretrain.config import PretrainConfig
from medfound.pretrain.model import PretrainNetworks, build_networks, build_optimizer
from medfound.pretrain.pipeline import distributed_views, open_source
from medfound.pretrain.strategy import is_chief, make_strategy
from medfound.runinfo import BACKBONE_WEIGHTS, RunInfo
from medfound.utils.files import atomic_path
from medfound.utils.progress import make_progress
from medfound.version import __version__

logger = logging.getLogger("medfound.pretrain")
CONFIG_FILE = "config.json"
# Fields that must not change when a run directory is resumed.
_FROZEN_ON_RESUME = ("arch", "units", "width", "method", "projection_layers",
                     "projection_hidden_dim", "projection_dim", "moco_queue_size", "optimizer",
                     "batch_size", "modality", "init")


@dataclasses.dataclass
class PretrainResult:
    """What a run did: its directory, steps, the logged metrics (one dict per log point) and
    the trained backbone (the same weights as ``backbone.weights.h5``)."""

    run_dir: Path
    steps: int
    resumed_from: int
    history: list[dict]
    backbone: BiTBackbone = dataclasses.field(repr=False)

    @property
    def backbone_weights(self) -> Path:
        return self.run_dir / BACKBONE_WEIGHTS


def make_train_step(strategy: tf.distribute.Strategy, nets: PretrainNetworks,
                    optimizer: keras.optimizers.Optimizer, config: PretrainConfig):
    """A tf.function taking one distributed batch, applying one update (then the method's
    EMA / queue work), returning the method's metrics averaged over replicas."""
    replicas = strategy.num_replicas_in_sync
    variables = nets.trainable_variables
    method = nets.method
    loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def forward_backward(batch):
        views = tf.concat([batch["view_a"], batch["view_b"]], axis=0)
        targets = method.targets(views)  # target networks: no gradient, outside the tape
        with tf.GradientTape() as tape:
            features = nets.backbone(views, training=True)["embedding"]
            out = method.loss(features, targets)
            # Keras sums gradients over replicas: scale so the sum is the global mean gradient.
            loss = out.loss / replicas
            if loss_scaling:
                loss = optimizer.scale_loss(loss)
        grads = tape.gradient(loss, variables)
        return grads, {"loss": out.loss, **out.metrics}, out.updates

    if config.xla and replicas == 1:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def replica_step(batch):
        grads, metrics, updates = forward_backward(batch)
        optimizer.apply_gradients(zip(grads, variables))
        return metrics, updates

    @tf.function
    def train_step(distributed_batch):
        metrics, updates = strategy.run(replica_step, args=(distributed_batch,))
        # Updates hold the same global values on every replica: take the first local copy.
        updates = {k: strategy.experimental_local_results(v)[0] for k, v in updates.items()}
        method.after_update(updates, optimizer.iterations)
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                for k, v in metrics.items()}

    return train_step


def _check_resume(run_dir: Path, config: PretrainConfig) -> None:
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    changed = [f"{k}: {saved.get(k)!r} -> {getattr(config, k)!r}" for k in _FROZEN_ON_RESUME
               if _jsonable(saved.get(k)) != _jsonable(getattr(config, k))]
    if changed:
        raise ValueError(f"{run_dir} holds a run with another configuration; use a new --out "
                         f"or the same settings ({'; '.join(changed)})")


def _warn_about_queue(config: PretrainConfig, num_examples: int | None) -> None:
    """MoCo's queue should hold a small part of the data: a queue as large as the dataset holds
    keys of each query's own image among its negatives, which measurably hurts (BENCHMARKS.md)."""
    if config.method == "moco" and num_examples and config.moco_queue_size >= num_examples // 2:
        logger.warning("moco_queue_size %d is not much smaller than the %d training images: "
                       "queries will meet keys of their own images among the negatives; use a "
                       "queue of at most a quarter of the data (e.g. --moco-queue-size %d)",
                       config.moco_queue_size, num_examples,
                       max(2 * config.batch_size, num_examples // 4))


def _jsonable(value):
    return json.loads(json.dumps(value))


def _current_lr(optimizer) -> float:
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = inner.learning_rate
    return float(lr(inner.iterations) if callable(lr) else lr)


def pretrain(config: PretrainConfig, *, strategy: tf.distribute.Strategy | None = None,
             verbose: bool = True) -> PretrainResult:
    """Runs (or resumes) self-supervised pretraining as configured and returns what it did.

    The run directory receives ``config.json``, ``checkpoints/`` (the last
    ``keep_checkpoints``), ``logs/`` (TensorBoard) and, at every checkpoint and at the end,
    ``backbone.weights.h5`` + ``run.json`` for export. Re-running on the same directory resumes
    from the latest checkpoint, exactly where it stopped (networks, optimizer, data stream);
    ``steps`` may grow on resume, which moves the learning-rate and EMA schedules (both are
    functions of it) from that step on.
    """
    if strategy is None:
        config.validate()  # before the strategy, which may start a cluster runtime
        strategy = make_strategy(config.strategy)
    config.validate(strategy.num_replicas_in_sync)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    chief = is_chief(strategy)
    run_dir = Path(config.out_dir)
    # Every worker must write checkpoints; only the chief's are kept.
    write_dir = run_dir if chief else run_dir / f".worker-{strategy.cluster_resolver.task_id}"
    _check_resume(run_dir, config)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.precision)
    try:
        source = open_source(config)
        _warn_about_queue(config, source.num_examples)
        with strategy.scope():
            nets, init_sha256 = build_networks(config)
            optimizer = build_optimizer(config)
            optimizer.build(nets.trainable_variables)
        if chief:
            remove_leftovers(run_dir)  # of a killed run: half-written checkpoints, temporaries
        items = nets.checkpoint_items()
        checkpoint = make_checkpoint(optimizer, items)
        manager = tf.train.CheckpointManager(checkpoint, str(write_dir / "checkpoints"),
                                             max_to_keep=config.keep_checkpoints)
        if manager.latest_checkpoint:
            restore(checkpoint, manager.latest_checkpoint, items)
        start = int(optimizer.iterations.numpy())
        if chief:
            run_dir.mkdir(parents=True, exist_ok=True)
            config.save(run_dir / CONFIG_FILE)
        info = RunInfo(arch=nets.backbone.arch, units=config.units, width=config.width,
                       modality=config.modality, init=config.init_kind,
                       init_path=config.init_path, init_sha256=init_sha256, method=config.method,
                       steps=start, image_size=config.input_size, data=source.description,
                       medfound_version=__version__)
        history = _loop(strategy, config, nets, optimizer, manager, source, info, start,
                        chief, run_dir, verbose)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)
    return PretrainResult(run_dir=run_dir, steps=info.steps, resumed_from=start, history=history,
                          backbone=nets.backbone)


def _loop(strategy, config, nets, optimizer, manager, source, info, start, chief, run_dir,
          verbose) -> list[dict]:
    history: list[dict] = []
    if start >= config.steps:
        return history
    iterator = iter(distributed_views(strategy, source, config, start_step=start))
    train_step = make_train_step(strategy, nets, optimizer, config)
    writer = (tf.summary.create_file_writer(str(run_dir / "logs")) if chief
              else tf.summary.create_noop_writer())
    progress = make_progress(config.steps, stateful_metrics=["loss", "acc", "img/s", "lr"],
                             verbose=bool(verbose and chief))
    progress.update(start)
    images_per_step = 2 * config.batch_size
    tick, tick_step = time.perf_counter(), start
    window: list[dict] = []
    for step in range(start, config.steps):
        batch = next(iterator)
        if step == start and chief and config.preview_images:
            _write_views(writer, strategy, batch, step, config.preview_images)
        window.append(train_step(batch))  # device tensors: no host sync until logged
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            # Metrics are means over the steps since the last log point, not one noisy batch.
            values = {k: float(sum(float(m[k]) for m in window) / len(window)) for k in window[0]}
            window = []
            elapsed = time.perf_counter() - tick
            values.update(step=done, learning_rate=_current_lr(optimizer),
                          images_per_second=images_per_step * (done - tick_step) / elapsed)
            tick, tick_step = time.perf_counter(), done
            history.append(values)
            with writer.as_default(step=done):
                for key, value in values.items():
                    if key != "step":
                        tf.summary.scalar(key, value)
            shown = [("loss", values["loss"])]
            if "contrastive_accuracy" in values:
                shown.append(("acc", values["contrastive_accuracy"]))
            progress.update(done, shown + [("img/s", values["images_per_second"]),
                                           ("lr", values["learning_rate"])])
        if done % config.checkpoint_every == 0 or done == config.steps:
            manager.save(checkpoint_number=done)
            info.steps = done
            if chief:
                _write_export_files(nets, info, run_dir)
    writer.flush()
    return history


def _write_views(writer, strategy, batch, step, count: int) -> None:
    """A few augmented view pairs, side by side, so a user sees what the model sees."""
    view_a = strategy.experimental_local_results(batch["view_a"])[0][:count]
    view_b = strategy.experimental_local_results(batch["view_b"])[0][:count]
    with writer.as_default(step=step):
        tf.summary.image("augmented_view_pairs", tf.concat([view_a, view_b], axis=2),
                         max_outputs=count)


def _write_export_files(nets: PretrainNetworks, info: RunInfo, run_dir: Path) -> None:
    """Backbone weights and run record, each replaced atomically (export reads them)."""
    with atomic_path(run_dir / BACKBONE_WEIGHTS) as tmp:
        nets.backbone.save_weights(tmp)
    info.save(run_dir)
