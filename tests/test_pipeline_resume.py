"""A resumed pretraining input pipeline continues the uninterrupted one exactly, decoding nothing
it skipped.

Real PNG/JPEG files, a MedMNIST-style .npz and a MICLe CSV are written in tmp_path; the batches of
``view_dataset(start_step=s)`` must equal batches s, s+1, ... of the run started at step 0, pixel
for pixel, and the pair streams behind them must name the same files.
"""
from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from medfound.data.images import read_image
from medfound.data.micle import micle_pairs
from medfound.data.tfrecords import write_tfrecords
from medfound.data.unlabeled import StreamWindow, index_stream, open_unlabeled
from medfound.pretrain.config import PretrainConfig
from medfound.pretrain.pipeline import distributed_views, open_source, view_dataset

RNG = np.random.default_rng(11)
BATCH = 4
START = 3  # 3 steps x 4 images = 12 > 10 images: the resumed stream starts in the second epoch
TAKE = 2


def _write_images(folder: Path, count: int = 10) -> list[Path]:
    """``count`` real image files of varied sizes, PNG and JPEG, from random pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        side = 28 + 3 * i
        pixels = RNG.integers(0, 256, (side, side + 5, 3), dtype=np.uint8)
        path = folder / (f"img{i:02d}.png" if i % 3 else f"img{i:02d}.jpg")
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _write_npz(path: Path, compressed: bool) -> Path:
    images = RNG.integers(0, 256, (11, 28, 28), dtype=np.uint8)
    (np.savez_compressed if compressed else np.savez)(path, train_images=images)
    return path


def _write_micle_csv(folder: Path) -> Path:
    """Ten images of four patients (3, 3, 2 and 2 images) listed in a CSV."""
    paths = _write_images(folder / "images")
    patients = ["p1", "p1", "p1", "p2", "p2", "p2", "p3", "p3", "p4", "p4"]
    table = folder / "images.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "patient"])
        writer.writerows([p.relative_to(folder).as_posix(), patient]
                         for p, patient in zip(paths, patients))
    return table


def _pairs(source, config: PretrainConfig, skip: int, count: int, **shard) -> list[tuple]:
    pairs = micle_pairs(source, micle=config.micle, seed=config.seed, repeat=True,
                        window=StreamWindow(skip=skip, **shard))
    return [(p["path_a"].numpy(), p["path_b"].numpy(), p["image_a"].numpy().tobytes())
            for p in pairs.take(count)]


def _views(config: PretrainConfig, source, start_step: int, count: int, *, strategy=None,
           shard_index: int | None = None) -> list[np.ndarray]:
    """``count`` steps of the run's views from ``start_step``: [replica or pipeline, view, ...]."""
    if strategy is not None:  # one pipeline feeding every replica: several batches per step
        iterator = iter(distributed_views(strategy, source, config, start_step=start_step))
        steps = []
        for _ in range(count):
            batch = next(iterator)
            steps.append(np.stack([np.stack([a.numpy(), b.numpy()]) for a, b in zip(
                strategy.experimental_local_results(batch["view_a"]),
                strategy.experimental_local_results(batch["view_b"]))]))
        return steps
    shard = {} if shard_index is None else dict(num_shards=2, shard_index=shard_index)
    per_pipeline = config.batch_size // shard.get("num_shards", 1)
    ds = view_dataset(source, config, per_replica_batch=per_pipeline, start_step=start_step,
                      **shard)
    return [np.stack([b["view_a"].numpy(), b["view_b"].numpy()])[None] for b in ds.take(count)]


@pytest.mark.parametrize("kind", ["folder", "npz", "micle-csv"])
def test_resumed_views_and_pairs_continue_the_uninterrupted_stream(kind, tmp_path, request):
    # folder: one pipeline feeding two replicas; npz: the second of two input pipelines;
    # micle-csv: MICLe partners drawn from the patient groups.
    if kind == "folder":
        _write_images(tmp_path / "folder")
        data = tmp_path / "folder"
    elif kind == "npz":
        data = _write_npz(tmp_path / "tiny.npz", compressed=False)
    else:
        data = _write_micle_csv(tmp_path)
    config = PretrainConfig(data=str(data), out_dir=str(tmp_path / "run"), arch="tiny",
                            image_size=32, batch_size=BATCH, seed=5, micle=kind == "micle-csv")
    source = open_source(config)
    how = dict(strategy=request.getfixturevalue("two_replica_strategy") if kind == "folder"
               else None, shard_index=1 if kind == "npz" else None)
    straight = _views(config, source, 0, START + TAKE, **how)
    resumed = _views(config, source, START, TAKE, **how)
    for step, views in enumerate(resumed, start=START):
        np.testing.assert_array_equal(views, straight[step], err_msg=f"step {step}")
    assert not np.array_equal(straight[0], straight[START])  # the comparison tells steps apart

    skip = START * BATCH
    whole = _pairs(source, config, 0, skip + 2 * BATCH)
    assert _pairs(source, config, skip, 2 * BATCH) == whole[skip:]
    if config.micle:  # partners were drawn, and are drawn alike after the skip
        assert any(a != b for a, b, _ in whole[skip:])


@pytest.mark.parametrize("kind", ["npz", "npz-compressed", "tfrecords"])
def test_each_shard_resumes_its_own_part_of_the_stream(tmp_path, kind):
    data = _write_npz(tmp_path / "tiny.npz", compressed=kind == "npz-compressed")
    if kind == "tfrecords":  # no index: skipped records are read, not parsed
        write_tfrecords(open_unlabeled(data), tmp_path / "records", num_shards=3)
        data = tmp_path / "records"
    config = PretrainConfig(data=str(data), out_dir=str(tmp_path / "run"), arch="tiny",
                            image_size=32, batch_size=BATCH, seed=2)
    source = open_unlabeled(config.data)
    half = BATCH // 2
    # Each step takes BATCH elements of the stream over both pipelines, half from each.
    whole = _pairs(source, config, 0, (START + TAKE) * BATCH)
    assert len({path for path, _, _ in whole[:11]}) == 11  # one epoch: every image once
    for i in range(2):
        mine = _pairs(source, config, 0, (START + TAKE) * half, num_shards=2, shard_index=i)
        assert mine == whole[i::2]
        assert _pairs(source, config, START * BATCH, TAKE * half, num_shards=2,
                      shard_index=i) == mine[START * half:]


def test_skipped_images_are_never_decoded(tmp_path):
    _write_images(tmp_path / "folder")
    source = open_unlabeled(tmp_path / "folder")
    order = [e["path"].numpy().decode() for e in source.dataset(seed=9)]
    kept = {p: read_image(p) for p in order[7:]}
    for skipped in order[:7]:  # were they decoded, the stream would fail on them
        Path(skipped).write_bytes(b"not an image any more")
    with pytest.raises(tf.errors.InvalidArgumentError, match="not a recognised image"):
        list(source.dataset(seed=9))
    rest = list(source.dataset(seed=9, window=StreamWindow(skip=7)))
    assert [e["path"].numpy().decode() for e in rest] == order[7:]
    for element in rest:
        np.testing.assert_array_equal(element["image"].numpy(),
                                      kept[element["path"].numpy().decode()])
    pairs = micle_pairs(source, micle=False, seed=9, window=StreamWindow(skip=7))
    assert [p["path_a"].numpy().decode() for p in pairs] == order[7:]


def test_index_stream_positions_epochs_and_shards():
    def take(count, *, shuffle, seed, repeat, **window):
        stream = index_stream(5, shuffle=shuffle, seed=seed, repeat=repeat,
                              window=StreamWindow(**window))
        return [tuple(int(v) for v in pair)
                for pair in itertools.islice(stream.as_numpy_iterator(), count)]

    whole = take(40, shuffle=True, seed=1, repeat=True)
    assert [p for p, _ in whole] == list(range(40))
    epochs = [sorted(i for _, i in whole[e * 5:(e + 1) * 5]) for e in range(3)]
    assert epochs == [list(range(5))] * 3  # every image once per epoch
    assert [i for _, i in whole[:5]] != [i for _, i in whole[5:10]]  # reshuffled each epoch
    assert take(10, shuffle=True, seed=1, repeat=True, skip=7) == whole[7:17]
    assert take(10, shuffle=True, seed=1, repeat=True, skip=6, num_shards=3,
                shard_index=2) == [pair for pair in whole[6:] if pair[0] % 3 == 2][:10]
    assert take(9, shuffle=False, seed=0, repeat=False, skip=3) == [(3, 3), (4, 4)]
    assert take(9, shuffle=True, seed=1, repeat=False, skip=5) == []
    with pytest.raises(ValueError, match="shard_index"):
        StreamWindow(num_shards=2, shard_index=2)
    with pytest.raises(ValueError, match="skip must be >= 0"):
        StreamWindow(skip=-1)
