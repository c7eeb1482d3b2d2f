"""MICLe positive pairs: two different images of the same patient (Azizi et al. 2021), streamed.

Every image of the source is an anchor once per epoch. With MICLe on and probability ``p``, an
anchor whose patient has at least two images is paired with another, uniformly drawn image of that
patient; otherwise (MICLe off, single-image or unknown patient, or with probability 1 - p) the
partner is the anchor itself and the caller's two random augmentations make the pair. Paths are
grouped by patient from metadata only; images are decoded lazily in the tf.data pipeline.

The partner draw is seeded by the run seed and the anchor's position in the whole stream, and the
stream can start part-way (``skip``, before any image is decoded) and keep one shard, so a resumed
run draws the same pairs an uninterrupted one would (``StreamWindow``, ``medfound.data.sources``).
"""
from __future__ import annotations

import logging

import numpy as np

from medfound.data.images import make_decoder
from medfound.data.sources import WHOLE_STREAM, StreamWindow, UnlabeledSource, index_stream
from medfound.data.unlabeled import FileSource

logger = logging.getLogger("medfound.data")


def patient_groups(patients: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Groups image indices by patient id ("" = unknown: each such image is its own group).

    Returns (members, start, size, position): ``members[start[i]:start[i] + size[i]]`` are the
    indices of image i's group, and ``members[start[i] + position[i]] == i``.
    """
    n = len(patients)
    keys = [p if p else f"\0{i}" for i, p in enumerate(patients)]
    order = sorted(range(n), key=lambda i: (keys[i], i))
    members = np.asarray(order, dtype=np.int64)
    start = np.zeros(n, np.int64)
    size = np.zeros(n, np.int64)
    position = np.zeros(n, np.int64)
    g0 = 0
    for k in range(1, n + 1):
        if k == n or keys[order[k]] != keys[order[g0]]:
            for offset, i in enumerate(order[g0:k]):
                start[i], size[i], position[i] = g0, k - g0, offset
            g0 = k
    return members, start, size, position


def micle_pairs(source: UnlabeledSource, *, micle: bool = True, probability: float = 1.0,
                seed: int = 0, shuffle: bool = True, repeat: bool = False,
                window: StreamWindow = WHOLE_STREAM):
    """tf.data.Dataset of {"image_a", "image_b", "patient", "path_a", "path_b"} positive pairs.

    ``image_b`` is a different image of the same patient when MICLe applies (see module docstring),
    else the same image as ``image_a``. MICLe needs a file source (folder or CSV) to group by
    patient; other sources give same-image pairs and refuse ``micle=True`` when they carry patients.
    ``window`` selects the part of the anchor stream as in ``UnlabeledSource.dataset``.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    if not isinstance(source, FileSource):
        if micle and source.has_patients:
            raise ValueError(f"MICLe pairs need a folder or CSV source to group images by patient; "
                             f"got a {source.kind} source (open the original files instead)")
        ds = source.dataset(shuffle=shuffle, seed=seed, repeat=repeat, window=window)
        return ds.map(lambda e: {"image_a": e["image"], "image_b": e["image"],
                                 "patient": e["patient"], "path_a": e["path"],
                                 "path_b": e["path"]})
    if micle and not source.has_patients:
        logger.info("MICLe requested but the source has no patient ids: same-image pairs only")
    choose = _partner_choice(source, use_micle=bool(micle) and probability > 0.0,
                             probability=probability, seed=seed)
    ds = index_stream(len(source.paths), shuffle=shuffle, seed=seed, repeat=repeat,
                      window=window).map(choose)
    return _decode_pairs(ds, source)


def _partner_choice(source: FileSource, *, use_micle: bool, probability: float, seed: int):
    """The graph function (position, anchor index) -> {"path_a", "path_b", "patient"}: the
    partner is another image of the anchor's patient when MICLe applies, else the anchor."""
    import tensorflow as tf

    members, start, size, position = patient_groups(source.patients)
    paths = tf.constant(source.paths, tf.string)
    patients = tf.constant(source.patients, tf.string)
    members_t, start_t = tf.constant(members), tf.constant(start)
    size_t, position_t = tf.constant(size), tf.constant(position)
    last_member = tf.constant(max(len(members) - 1, 0), tf.int64)

    # choose and load are plain graph code (tf.where / tf.cond), traced without AutoGraph:
    # converting them and the decoders they call re-parses that source at every pipeline build.
    @tf.autograph.experimental.do_not_convert
    def choose(stream_position, index):
        step_seed = tf.stack([tf.constant(seed, tf.int64), stream_position])
        draws = tf.random.stateless_uniform([2], seed=step_seed, dtype=tf.float32)
        group_size = size_t[index]
        eligible = tf.logical_and(group_size >= 2, draws[0] < probability)
        eligible = tf.logical_and(eligible, tf.constant(use_micle))
        # Uniform over the other group members: draw k in [0, size - 1), skip the anchor's slot.
        k = tf.minimum(tf.cast(draws[1] * tf.cast(group_size - 1, tf.float32), tf.int64),
                       tf.maximum(group_size - 2, 0))
        k = tf.where(k >= position_t[index], k + 1, k)
        # tf.where evaluates both branches: clamp so a one-image group at the end of the member
        # list (where k steps past it) is not read out of bounds. Eligible slots are in range.
        slot = tf.minimum(start_t[index] + k, last_member)
        partner = tf.where(eligible, members_t[slot], index)
        return {"path_a": paths[index], "path_b": paths[partner], "patient": patients[index]}

    return choose


def _decode_pairs(ds, source: FileSource):
    """Decodes both paths of each pair (once when they are the same file), dropping or deferring
    bad files as the source was opened to."""
    import tensorflow as tf

    decode = make_decoder(skip_errors=source.skip_errors, on_error=source.skipped,
                          max_pixels=source.max_pixels, defer_to=source.defer_to)

    @tf.autograph.experimental.do_not_convert
    def load(element):
        a = decode(element["path_a"])
        b_image, b_ok = tf.cond(tf.equal(element["path_a"], element["path_b"]),
                                lambda: (a["image"], a["_ok"]),
                                lambda: _image_and_ok(decode(element["path_b"])))
        return {"image_a": a["image"], "image_b": b_image, "patient": element["patient"],
                "path_a": element["path_a"], "path_b": element["path_b"],
                "_ok": tf.logical_and(a["_ok"], b_ok)}

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if source.skip_errors:
        ds = ds.filter(lambda e: e["_ok"]).ignore_errors(log_warning=True)
    elif source.defer_to is not None:
        ds = ds.filter(lambda e: e["_ok"])
    ds = ds.map(lambda e: {k: v for k, v in e.items() if k != "_ok"})
    return ds.prefetch(tf.data.AUTOTUNE)


def _image_and_ok(decoded: dict):
    return decoded["image"], decoded["_ok"]
