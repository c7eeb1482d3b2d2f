"""The pretraining loop: one code path for every method (SimCLR, Barlow Twins, MoCo v2, BYOL,
RELIC) on one device, several GPUs or several hosts.

A custom loop (rather than ``model.fit``) because the loss needs the global batch across
replicas and the run must checkpoint and resume exactly: step count, optimizer state and the
learning-rate position all live in the checkpointed optimizer.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path

import keras
import tensorflow as tf

from medfound.models.bit import BiTBackbone
from medfound.errors import TrainingDivergedError
from medfound.interrupts import interrupt_between_steps
from medfound.optim.factory import apply_reached_gradients
from medfound.pretrain import runfolder
from medfound.pretrain.checkpoints import make_checkpoint, restore
from medfound.pretrain.config import PretrainConfig
from medfound.pretrain.model import PretrainNetworks, build_networks, build_optimizer
from medfound.pretrain.pipeline import distributed_views, open_source
from medfound.pretrain.strategy import is_chief, make_strategy
from medfound.runinfo import BACKBONE_WEIGHTS, RunInfo
from medfound.utils.files import atomic_path
from medfound.utils.progress import PlainProgress, make_progress
from medfound.version import __version__

logger = logging.getLogger("medfound.pretrain")
CONFIG_FILE = runfolder.CONFIG_FILE


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
        apply_reached_gradients(optimizer, grads, variables)
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


def _warn_about_queue(config: PretrainConfig, num_examples: int | None) -> None:
    """MoCo's queue should hold a small part of the data: a queue as large as the dataset holds
    keys of each query's own image among its negatives, which measurably hurts (BENCHMARKS.md)."""
    queue = config.method_options.moco_queue_size
    if config.method == "moco" and num_examples and queue >= num_examples // 2:
        logger.warning("moco_queue_size %d is not much smaller than the %d training images: "
                       "queries will meet keys of their own images among the negatives; use a "
                       "queue of at most a quarter of the data (e.g. --moco-queue-size %d)",
                       queue, num_examples,
                       max(2 * config.batch_size, num_examples // 4))


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
    # Checks that write nothing come first: a refused start leaves --out as it was.
    runfolder.check_claimable(run_dir)
    runfolder.check_resume(run_dir, config)
    source = open_source(config)
    fingerprint = runfolder.data_fingerprint(source)
    runfolder.check_data(run_dir, source, fingerprint)
    first_image(source)  # fails fast, naming the file, when no image can be read
    # Ctrl-C stops the run between two steps (a second one at once), never inside TensorFlow.
    with interrupt_between_steps() as check_interrupt:
        if not chief:  # the chief owns and locks the run folder; workers write beside it
            return _pretrain(config, strategy, run_dir, chief, verbose, source, fingerprint,
                             check_interrupt)
        runfolder.claim(run_dir)
        with runfolder.locked(run_dir):
            return _pretrain(config, strategy, run_dir, chief, verbose, source, fingerprint,
                             check_interrupt)


def _pretrain(config: PretrainConfig, strategy, run_dir: Path, chief: bool, verbose: bool,
              source, fingerprint: str, check_interrupt=lambda: None) -> PretrainResult:
    # Every worker must write checkpoints; only the chief's are kept.
    write_dir = run_dir if chief else run_dir / f".worker-{strategy.cluster_resolver.task_id}"
    _warn_about_queue(config, source.num_examples)
    with strategy.scope():
        nets, init = build_networks(config)
        nets.set_dtype_policy(config.precision)  # per model, not Keras' global policy
        optimizer = build_optimizer(config)
        optimizer.build(nets.trainable_variables)
    checkpoint_dir = write_dir / "checkpoints"
    if chief:
        runfolder.remove_leftovers(run_dir)  # of a killed run: only names it writes
        runfolder.prune_missing_checkpoints(checkpoint_dir)
        runfolder.remove_unlisted_checkpoints(checkpoint_dir)
    items = nets.checkpoint_items()
    checkpoint = make_checkpoint(optimizer, items)
    manager = tf.train.CheckpointManager(checkpoint, str(checkpoint_dir),
                                         max_to_keep=config.keep_checkpoints)
    if manager.latest_checkpoint:
        restore(checkpoint, manager.latest_checkpoint, items)
    start = int(optimizer.iterations.numpy())
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / CONFIG_FILE).exists():  # the run's settings, kept as first given
            with _naming(run_dir / CONFIG_FILE):
                config.save(run_dir / CONFIG_FILE)
        runfolder.append_history(run_dir, config, source, fingerprint, start)
    info = RunInfo(arch=nets.backbone.arch, units=config.units, width=config.width,
                   modality=config.modality, init=init.kind,
                   init_path=init.path, init_sha256=init.sha256, method=config.method,
                   steps=start, image_size=config.input_size, data=source.description,
                   medfound_version=__version__)
    check_interrupt()
    run = _Run(strategy, config, nets, optimizer, manager, source, info, run_dir, chief)
    history = _loop(run, start, verbose, check_interrupt)
    nets.set_dtype_policy("float32")  # the backbone handed back computes as any other model
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)
    return PretrainResult(run_dir=run_dir, steps=info.steps, resumed_from=start, history=history,
                          backbone=nets.backbone)


def first_image(source) -> None:
    """Reads a file source's images in order until one decodes: a folder where no file is an
    image fails here, at once and naming the file, instead of inside the input pipeline. With
    ``skip_bad_images`` the bad ones are listed (and never read again); none usable is an error."""
    from medfound.data.images import ImageError, read_image
    from medfound.data.unlabeled import SourceError

    paths = getattr(source, "paths", None)
    if not paths:
        return
    for path in paths:
        try:
            read_image(path, max_pixels=source.max_pixels)
            return
        except ImageError as error:
            if not source.skip_errors:
                raise
            source.skipped(error.path, error.problem)
    first_path, problem = source.skipped.items[0]
    raise SourceError(f"no usable image: all {len(paths)} files of {source.description} failed "
                      f"to read (first: {first_path}: {problem})")


@contextlib.contextmanager
def _naming(path: Path):
    """Re-raises a storage failure of TensorFlow that names no file (only its device) as an
    OSError naming ``path``, the file or folder being written."""
    try:
        yield
    except tf.errors.OpError as error:
        from medfound.errors import STORAGE_ERRNOS

        text = error.message or str(error)
        for code in STORAGE_ERRNOS:
            if os.strerror(code).lower() in text.lower():
                raise OSError(code, os.strerror(code), str(path)) from error
        raise


def _check_finite(losses: list, first_step: int, nets: PretrainNetworks, config: PretrainConfig,
                  manager, check_weights: bool) -> None:
    """Stops the run at the first non-finite loss (or weight, before a checkpoint is written),
    so that the last checkpoint kept is a finite one."""
    bad_step = None
    if losses:
        finite = tf.math.is_finite(tf.stack([tf.cast(x, tf.float32) for x in losses])).numpy()
        if not finite.all():
            bad_step = first_step + int((~finite).argmax())
    if bad_step is None and check_weights:
        weights_ok = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v))
                                    for v in nets.backbone.trainable_variables])
        if not bool(weights_ok.numpy()):
            bad_step = first_step + len(losses) - 1
    losses.clear()
    if bad_step is None:
        return
    last = manager.latest_checkpoint
    kept = (f"the last finite checkpoint, {Path(last).name}, is kept in {manager.directory}"
            if last else "no checkpoint had been written")
    raise TrainingDivergedError(
        f"training diverged: non-finite loss or weights at step {bad_step}; {kept}. Lower "
        f"--learning-rate (now {config.learning_rate:g}) or --warmup-fraction, or check "
        f"--data for NaN or infinite pixels")


@dataclasses.dataclass
class _Run:
    """What the pretraining loop trains, with what, and where it writes (one run, resumed or new)."""

    strategy: tf.distribute.Strategy
    config: PretrainConfig
    nets: PretrainNetworks
    optimizer: keras.optimizers.Optimizer
    manager: tf.train.CheckpointManager
    source: object  # the open image source (medfound.pretrain.pipeline.open_source)
    info: RunInfo  # the run record written beside the backbone weights
    run_dir: Path
    chief: bool

    def save(self, step: int) -> None:
        """A checkpoint at ``step``, then (on the chief) the backbone weights and run record."""
        with _naming(Path(self.manager.directory)):
            self.manager.save(checkpoint_number=step)
        self.info.steps = step
        if self.chief:
            _write_export_files(self.nets, self.info, self.run_dir)


class _MetricLog:
    """The metrics of the steps since the last log point, averaged and written to the history,
    TensorBoard and the progress bar at each log point."""

    def __init__(self, run: _Run, start: int, verbose: bool):
        self.run = run
        self.writer = (tf.summary.create_file_writer(str(run.run_dir / "logs")) if run.chief
                       else tf.summary.create_noop_writer())
        self.progress = make_progress(run.config.steps, stateful_metrics=["loss", "acc", "img/s", "lr"],
                                      verbose=bool(verbose and run.chief))
        self.progress.update(start)
        self.history: list[dict] = []
        self.window: list[dict] = []
        self.tick, self.tick_step = time.perf_counter(), start

    def add(self, metrics: dict) -> None:
        self.window.append(metrics)  # device tensors: no host sync until written

    def write(self, done: int) -> None:
        # Metrics are means over the steps since the last log point, not one noisy batch.
        window, self.window = self.window, []
        values = {k: float(sum(float(m[k]) for m in window) / len(window)) for k in window[0]}
        elapsed = time.perf_counter() - self.tick
        values.update(step=done, learning_rate=_current_lr(self.run.optimizer),
                      images_per_second=2 * self.run.config.batch_size * (done - self.tick_step) / elapsed)
        self.tick, self.tick_step = time.perf_counter(), done
        self.history.append(values)
        with self.writer.as_default(step=done):
            for key, value in values.items():
                if key != "step":
                    tf.summary.scalar(key, value)
        shown = [("loss", values["loss"])]
        if "contrastive_accuracy" in values:
            shown.append(("acc", values["contrastive_accuracy"]))
        if isinstance(self.progress, PlainProgress):  # Keras' bar would print 312.5000
            shown.append(("img/s", values["images_per_second"]))
        self.progress.update(done, shown + [("lr", values["learning_rate"])])


def _loop(run: _Run, start: int, verbose: bool, check_interrupt=lambda: None) -> list[dict]:
    """Trains from step ``start`` to ``config.steps``, logging and checkpointing on schedule."""
    config = run.config
    if start >= config.steps:
        # Nothing to train, yet a kill may have come between the last checkpoint and the
        # export files: finish them from the checkpoint just restored.
        if run.chief and start > 0:
            run.info.steps = start
            _write_export_files(run.nets, run.info, run.run_dir)
        return []
    iterator = iter(distributed_views(run.strategy, run.source, config, start_step=start))
    train_step = make_train_step(run.strategy, run.nets, run.optimizer, config)
    log = _MetricLog(run, start, verbose)
    unchecked: list = []  # losses not yet checked to be finite
    for step in range(start, config.steps):
        check_interrupt()
        batch = _next_batch(iterator, run.source)
        if step == start and run.chief and config.preview_images:
            _write_views(log.writer, run.strategy, batch, step, config.preview_images)
        metrics = train_step(batch)
        log.add(metrics)
        unchecked.append(metrics["loss"])
        done = step + 1
        logging_now = done % config.log_every == 0 or done == config.steps
        saving_now = done % config.checkpoint_every == 0 or done == config.steps
        if logging_now or saving_now:
            _check_finite(unchecked, done - len(unchecked) + 1, run.nets, config, run.manager,
                          check_weights=saving_now)
        if logging_now:
            log.write(done)
        if saving_now:
            run.save(done)
    log.writer.flush()
    return log.history


def _next_batch(iterator, source):
    """The next batch; a file the input pipeline could not decode is named (TensorFlow's own
    message, e.g. 'Invalid PNG data, size 4185', does not say which file it was)."""
    try:
        batch = next(iterator)
        source.raise_deferred()
        return batch
    except tf.errors.InvalidArgumentError as error:
        from medfound.data.images import ImageError, read_image
        from medfound.errors import UserError

        reason = (error.message or str(error)).strip().splitlines()[0]
        for path in getattr(source, "paths", None) or []:
            try:
                read_image(path, max_pixels=source.max_pixels)
            except ImageError as bad:
                raise ImageError(bad.path, f"{bad.problem} (pass --skip-bad-images to skip "
                                           "unreadable images)") from None
        raise UserError(f"an image of {source.description} could not be decoded ({reason}); "
                        "pass --skip-bad-images to skip unreadable images") from None


def _write_views(writer, strategy, batch, step, count: int) -> None:
    """A few augmented view pairs, side by side, so a user sees what the model sees."""
    view_a = strategy.experimental_local_results(batch["view_a"])[0][:count]
    view_b = strategy.experimental_local_results(batch["view_b"])[0][:count]
    with writer.as_default(step=step):
        tf.summary.image("augmented_view_pairs", tf.concat([view_a, view_b], axis=2),
                         max_outputs=count)


def _write_export_files(nets: PretrainNetworks, info: RunInfo, run_dir: Path) -> None:
    """Backbone weights and run record, each replaced atomically (export reads them)."""
    with _naming(run_dir / BACKBONE_WEIGHTS), atomic_path(run_dir / BACKBONE_WEIGHTS) as tmp:
        nets.backbone.save_weights(tmp)
    info.save(run_dir)
