"""The base of every unlabeled image source, and the seeded, skippable, shardable stream order.

Every ``UnlabeledSource.dataset()`` can read one ``StreamWindow`` of its (shuffled, repeated)
stream: ``skip`` elements are dropped before anything is decoded and shard ``shard_index`` of
``num_shards`` keeps the elements at stream positions ``p % num_shards == shard_index``. With the same seed the elements from position ``skip`` on are exactly those an
unskipped stream yields there, which is how a resumed pretraining run sees the data an
uninterrupted one would have. The formats (files, .npz, TFDS in ``medfound.data.unlabeled``,
TFRecords in ``medfound.data.tfrecords``) build on this module; it imports none of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from medfound.data.images import SkippedFiles


class SourceError(ValueError):
    """A source that cannot be opened (missing columns, unsafe paths, unknown format...)."""


@dataclass(frozen=True)
class StreamWindow:
    """The part of a source's stream one pipeline reads: from stream position ``skip`` on, the
    positions ``p % num_shards == shard_index``. A resumed run sets ``skip``, each input pipeline
    of a distributed run its shard; the default is the whole stream."""

    skip: int = 0
    num_shards: int = 1
    shard_index: int = 0

    def __post_init__(self):
        if self.skip < 0:
            raise ValueError(f"skip must be >= 0, got {self.skip}")
        if not (self.num_shards >= 1 and 0 <= self.shard_index < self.num_shards):
            raise ValueError(f"shard_index must be in [0, num_shards), got {self.shard_index} "
                             f"of {self.num_shards}")

    def apply(self, ds):
        """``ds`` from element ``skip`` on, keeping this shard's positions: for streams without
        an index (TFRecords, TFDS), applied before anything is decoded."""
        import tensorflow as tf

        if self.skip:
            ds = ds.skip(self.skip)
        if self.num_shards > 1:
            # Positions counted from 0 of the whole stream, whatever was skipped.
            n, index = self.num_shards, self.shard_index
            ds = ds.enumerate(start=self.skip).filter(
                lambda position, _: tf.equal(position % n, index)).map(lambda _, e: e)
        return ds


WHOLE_STREAM = StreamWindow()


@dataclass
class UnlabeledSource:
    """Base of all unlabeled sources: a streaming ``dataset()`` plus counts and a privacy-safe description."""

    kind: str
    num_examples: int | None
    has_patients: bool
    description: str
    skip_errors: bool = False
    skipped: SkippedFiles = field(default_factory=SkippedFiles)
    # Without skip_errors, file sources can hand a bad file to ``deferred`` (the stream goes on
    # without it) for the consumer to raise with ``raise_deferred``: pretraining does, since a
    # Python exception inside a parallel Dataset.map can deadlock the iterator's teardown.
    defer_errors: bool = False
    deferred: SkippedFiles = field(default_factory=SkippedFiles)

    def raise_deferred(self) -> None:
        """Raises the first ImageError handed to ``deferred``, if any."""
        if len(self.deferred):
            from medfound.data.images import ImageError

            path, problem = self.deferred.items[0]
            raise ImageError(path, f"{problem} (pass --skip-bad-images to skip unreadable "
                                   "images)")

    @property
    def defer_to(self):
        """The ``defer_to`` callback of this source's decoders (None: raise in the pipeline)."""
        return self.deferred if self.defer_errors and not self.skip_errors else None

    def dataset(self, *, shuffle: bool = True, seed: int = 0, repeat: bool = False,
                window: StreamWindow = WHOLE_STREAM):
        """tf.data.Dataset of {"image", "path", "patient"}; shuffled with ``seed``, endless if
        ``repeat``, only the stream positions in ``window`` (see ``medfound.data.sources``)."""
        raise NotImplementedError

    def _finish(self, ds):
        import tensorflow as tf

        return ds.prefetch(tf.data.AUTOTUNE)


def index_stream(count: int, *, shuffle: bool, seed: int, repeat: bool,
                 window: StreamWindow = WHOLE_STREAM):
    """tf.data.Dataset of (position, index) int64 pairs over ``count`` items, nothing decoded.

    Epoch ``e`` visits every index once, in the order of a stateless shuffle seeded by
    ``(seed, e)`` (or in order without ``shuffle``); ``position = e * count + k`` is the element's
    place in the whole stream. The stream starts at position ``window.skip`` - one epoch's
    permutation away, however far that is - and keeps the window's shard, so any window of the
    stream is the same whether it was reached by iterating or by skipping.
    """
    import tensorflow as tf

    n = int(count)
    first_epoch, offset = divmod(int(window.skip), n) if n else (0, 0)
    if n == 0 or (first_epoch > 0 and not repeat):
        epochs = tf.data.Dataset.range(0)
    elif repeat:
        epochs = tf.data.Dataset.counter(first_epoch)
    else:
        epochs = tf.data.Dataset.range(1)
    seed_t = tf.constant(seed, tf.int64)

    def epoch(e):
        order = tf.range(n, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([seed_t, e]))
        begin = tf.where(tf.equal(e, first_epoch), tf.constant(offset, tf.int64), 0)
        return tf.data.Dataset.from_tensor_slices((e * n + tf.range(begin, n), order[begin:]))

    ds = epochs.flat_map(epoch)
    if window.num_shards > 1:
        shards, index = window.num_shards, window.shard_index
        ds = ds.filter(lambda position, _: tf.equal(position % shards, index))
    return ds
