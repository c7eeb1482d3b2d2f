"""Input pipeline of a pretraining run: source -> (MICLe) pairs -> two augmented views -> batches."""
from __future__ import annotations

import tensorflow as tf

from medfound.augment.presets import AugmentConfig, augment_pair, get_preset
from medfound.pretrain.config import PretrainConfig


def augment_config(config: PretrainConfig) -> AugmentConfig:
    """The augmentation preset of the run (its modality's unless named) at the run's size,
    with the run's overrides."""
    return get_preset(config.preset or config.modality, config.input_size, **config.augment)


def open_source(config: PretrainConfig):
    """Opens the run's unlabeled image source (nothing is read yet)."""
    from medfound.data.unlabeled import open_unlabeled

    source = open_unlabeled(config.data, path_column=config.path_column,
                            patient_column=config.patient_column, split=config.split,
                            skip_errors=config.skip_bad_images)
    source.defer_errors = True  # a bad file is raised by the training loop, naming it
    return source


def view_dataset(source, config: PretrainConfig, *, per_replica_batch: int,
                 num_shards: int = 1, shard_index: int = 0, start_step: int = 0) -> tf.data.Dataset:
    """Endless batches of {'view_a', 'view_b'} (B, S, S, 3) for one input pipeline.

    Each training step consumes ``config.batch_size`` elements of the seeded, repeated image
    stream over all ``num_shards`` pipelines; this pipeline keeps every ``num_shards``-th element.
    A run resumed at ``start_step`` skips the elements already consumed before decoding any, and
    the augmentation seeds derive from the run seed, the pipeline and the element's place in its
    shard, so from ``start_step`` on the batches equal those of an uninterrupted run exactly -
    as long as no image was dropped as bad (``skip_bad_images``), which shifts the stream.
    """
    from medfound.data.micle import micle_pairs
    from medfound.data.sources import StreamWindow

    window = StreamWindow(skip=start_step * config.batch_size, num_shards=num_shards,
                          shard_index=shard_index)
    pairs = micle_pairs(source, micle=config.micle, probability=config.micle_probability,
                        seed=config.seed, shuffle=True, repeat=True, window=window)
    first = start_step * config.batch_size // num_shards
    return augment_views(pairs, config, per_replica_batch=per_replica_batch,
                         shard_index=shard_index, first=first)


def augment_views(pairs: tf.data.Dataset, config: PretrainConfig, *, per_replica_batch: int,
                  shard_index: int = 0, first: int = 0) -> tf.data.Dataset:
    """Batches of {'view_a', 'view_b'}: the run's augmentation of each pair of ``pairs`` (element
    ``first`` + i of the shard seeded by its place), batched and prefetched. Kept apart from the
    reading so that a benchmark can time the augmentation on already decoded images."""
    aug = augment_config(config)

    # Plain graph code (the augmentation ops branch with tf.cond): tracing it without AutoGraph's
    # source rewriting builds the same graph several seconds sooner at every run start.
    @tf.autograph.experimental.do_not_convert
    def augment(index, pair):
        seed = tf.stack([tf.cast(config.seed * 1000 + shard_index, tf.int64), index + first])
        view_a, view_b = augment_pair(pair["image_a"], pair["image_b"], seed, aug)
        return {"view_a": view_a, "view_b": view_b}

    return (pairs.enumerate()
            .map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(per_replica_batch, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE))


def distributed_views(strategy: tf.distribute.Strategy, source, config: PretrainConfig,
                      start_step: int = 0):
    """The run's distributed dataset: each input pipeline builds its own shard of the batch."""

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return view_dataset(source, config,
                            per_replica_batch=context.get_per_replica_batch_size(config.batch_size),
                            num_shards=context.num_input_pipelines,
                            shard_index=context.input_pipeline_id, start_step=start_step)

    return strategy.distribute_datasets_from_function(dataset_fn)
