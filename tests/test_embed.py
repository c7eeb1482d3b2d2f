"""`medfound embed`: rows match the module on real NIH images, bad files listed, resumable, formats."""
from __future__ import annotations

import argparse
import csv
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf

from medfound.cli import embed as embed_cli
from medfound.data.images import read_image
from medfound.embed import (EmbedConfig, EmbedError, ModuleEmbedder, embed, prepare_image,
                            read_embeddings, sidecar_paths)
from medfound.utils.files import sha256_file
from tests.tiny_runs import export_tiny_module

NAME = "cxr-50x1-remedis-m"
SIZE = 64
NUM_GOOD = 10
BAD = ("empty.png", "not_an_image.png", "z_corrupt_data.png", "sub/truncated.jpg")


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
    """A tiny backbone (random weights) exported as a real hub SavedModel."""
    return export_tiny_module(tmp_path_factory.mktemp("embed_module"), NAME, seed=3,
                              modality="cxr", init="bit-m", steps=1, image_size=SIZE,
                              data="unit-test images")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, shared_data):
    """Ten real NIH chest X-rays (some RGBA) in nested folders, plus four bad files."""
    folder = tmp_path_factory.mktemp("embed_images")
    sources = sorted((shared_data / "nih-cxr14-sample" / "images").glob("*.png"))[:NUM_GOOD]
    for number, src in enumerate(sources):
        target = folder / ("sub" if number % 3 == 0 else "") / src.name
        target.parent.mkdir(exist_ok=True)
        shutil.copy(src, target)
    (folder / "empty.png").write_bytes(b"")
    (folder / "not_an_image.png").write_text("patient notes, not pixels")
    data = bytearray(sources[0].read_bytes())
    data[60:200] = bytes(140)  # header and IEND intact, pixel data destroyed
    (folder / "z_corrupt_data.png").write_bytes(bytes(data))
    (folder / "sub" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(40))
    return folder


def reference(module_dir, paths, size=SIZE):
    """What the module itself gives for ``paths``: decoded independently, pooled feature map."""
    module = tf.saved_model.load(str(module_dir))
    images = tf.stack([prepare_image(read_image(p), size) for p in paths])
    return tf.reduce_mean(module(images), axis=[1, 2]).numpy()


_LOADED: dict = {}


def run_embed(module_dir, source, out, **kwargs):
    """Library call; the loaded module is shared between calls (as a long-lived caller would)."""
    kwargs.setdefault("image_size", SIZE)
    kwargs.setdefault("progress", False)
    if module_dir not in _LOADED:
        _LOADED[module_dir] = ModuleEmbedder(module_dir)
    return embed(EmbedConfig(module=str(module_dir), input=str(source), out=str(out), **kwargs),
                 embedder=_LOADED[module_dir])


@pytest.fixture(scope="module")
def full_run(module_dir, image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("embed_full") / "emb.npz"
    result = run_embed(module_dir, image_folder, out, part_size=4, batch_size=3)
    return result, out


def test_rows_are_inputs_minus_failures_and_match_the_module(full_run, module_dir, image_folder):
    result, out = full_run
    assert result.complete and result.out == out and out.is_file()
    assert result.num_inputs == NUM_GOOD + len(BAD)
    failed = {path: problem for path, problem in result.failures}
    assert sorted(failed) == sorted(str(image_folder / b) for b in BAD)
    assert "empty" in failed[str(image_folder / "empty.png")]
    assert "not a recognised image format" in failed[str(image_folder / "not_an_image.png")]
    assert "corrupt" in failed[str(image_folder / "z_corrupt_data.png")]
    paths, embeddings = read_embeddings(out)
    assert len(paths) == result.num_embedded == NUM_GOOD == result.num_inputs - len(failed)
    assert paths == sorted(paths) and not set(paths) & set(failed)  # folder order, no bad rows
    assert embeddings.shape == (NUM_GOOD, 1024) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, reference(module_dir, paths), atol=1e-4, rtol=1e-4)
    parts_dir, failures_file = sidecar_paths(out)
    assert result.failures_file == failures_file and not parts_dir.exists()
    with open(failures_file, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["path"]: r["problem"] for r in rows} == failed
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".tmp-")] == []
    with np.load(out) as data:
        assert str(data["module"]) == NAME and int(data["image_size"]) == SIZE
        assert set(data.files) == {"paths", "embeddings", "module", "image_size"}
    assert "10 of 14 images" in result.summary() and "4 image(s) failed" in result.summary()


def test_interrupted_run_resumes_to_the_same_file(full_run, module_dir, image_folder, tmp_path):
    _, complete = full_run
    out = tmp_path / "emb.npz"
    first = run_embed(module_dir, image_folder, out, part_size=4, batch_size=3, max_images=5)
    parts_dir, _ = sidecar_paths(out)
    assert not first.complete and first.out is None and not out.exists()
    assert first.processed == 6 and parts_dir.is_dir()  # whole batches: parts of 6, stop at 6
    assert [p.name for p in parts_dir.glob("part-*")] == ["part-000000000-000000006.npz"]
    second = run_embed(module_dir, image_folder, out, part_size=4, batch_size=3, max_images=2)
    assert not second.complete and second.processed == 3
    assert "run the same command again" in second.summary()
    last = run_embed(module_dir, image_folder, out, part_size=4, batch_size=3)
    assert last.complete and last.processed == NUM_GOOD + len(BAD) - 9
    assert sha256_file(out) == sha256_file(complete)  # byte-identical to the uninterrupted run
    assert last.failures == full_run[0].failures and not parts_dir.exists()


def test_parts_of_a_different_run_are_refused_and_outputs_not_overwritten(
        full_run, module_dir, image_folder, tmp_path):
    out = tmp_path / "emb.npz"
    run_embed(module_dir, image_folder, out, part_size=4, batch_size=2, max_images=4)
    with pytest.raises(EmbedError, match="different image_size"):
        run_embed(module_dir, image_folder, out, image_size=SIZE + 32)
    # Other compute options change the last bits: their rows must not join these parts.
    config = EmbedConfig(module=str(module_dir), input=str(image_folder), out=str(out),
                         image_size=SIZE, progress=False, group_norm_statistics="one_pass")
    with pytest.raises(EmbedError, match="different module_fingerprint"):
        embed(config, embedder=ModuleEmbedder.for_config(config))
    with pytest.raises(EmbedError, match="pass --overwrite"):
        run_embed(module_dir, image_folder, full_run[1])


@pytest.mark.parametrize("suffix", [".h5", ".parquet"])
def test_other_formats_hold_the_same_rows(full_run, module_dir, image_folder, tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow", reason="parquet output needs the optional pyarrow")
    want_paths, want = read_embeddings(full_run[1])
    out = tmp_path / f"emb{suffix}"
    result = run_embed(module_dir, image_folder, out, part_size=6, batch_size=8)
    paths, embeddings = read_embeddings(out)
    assert result.complete and paths == want_paths
    # Another batch size may pick another convolution algorithm: equal to float32 rounding.
    np.testing.assert_allclose(embeddings, want, rtol=1e-4, atol=1e-4)


def test_parquet_without_pyarrow_says_how_to_install(module_dir, image_folder, tmp_path,
                                                     monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(EmbedError, match=r"needs pyarrow .*: pip install pyarrow"):
        run_embed(module_dir, image_folder, tmp_path / "emb.parquet")
    assert not sidecar_paths(tmp_path / "emb.parquet")[0].exists()  # refused before any work


def parse(argv):
    parser = argparse.ArgumentParser(prog="medfound")
    embed_cli.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_cli_csv_input_default_image_size_and_strict_mode(module_dir, image_folder, tmp_path,
                                                         capsys):
    good = sorted(p for p in image_folder.rglob("*.png") if p.name.startswith("0000"))[:2]
    table = tmp_path / "images.csv"
    rows = [str(p.relative_to(image_folder)) for p in good] + ["not_an_image.png"]
    table.write_text("path,Patient ID\n" + "".join(f"{r},77\n" for r in rows))
    out = tmp_path / "emb.h5"
    args = parse(["embed", "--module", str(module_dir), "--input", str(table), "--root",
                  str(image_folder), "--out", str(out), "--quiet"])
    assert args.skip_bad_images and args.image_size is None
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "at 448x448" in printed and "1 image(s) failed" in printed
    paths, embeddings = read_embeddings(out)
    assert paths == [str(p) for p in good]  # CSV order; the patient column is not copied
    import h5py

    with h5py.File(out) as f:
        assert set(f.keys()) == {"paths", "embeddings"} and f.attrs["image_size"] == 448
    np.testing.assert_allclose(embeddings, reference(module_dir, paths, 448), atol=1e-4,
                               rtol=1e-4)
    from medfound.cli.main import main

    assert main(["embed", "--module", str(module_dir), "--input", str(table), "--root",
                 str(image_folder), "--out", str(tmp_path / "strict.npz"), "--quiet",
                 "--no-skip-bad-images", "--image-size", "32"]) == 2
    err = capsys.readouterr().err
    assert "not_an_image.png: not a recognised image format" in err
    assert not (tmp_path / "strict.npz").exists()


def test_two_replicas_split_each_batch_and_keep_the_rows(full_run, module_dir, image_folder,
                                                         tmp_path, two_replica_strategy):
    """--strategy: the module's variables sit on both (logical CPU) devices, each batch is split
    over the two replicas and gathered back, and the file holds the one-device rows in order."""
    from medfound.embed import make_embed_strategy

    out = tmp_path / "emb.npz"
    result = embed(EmbedConfig(module=str(module_dir), input=str(image_folder), out=str(out),
                               image_size=SIZE, part_size=4, batch_size=3, progress=False,
                               strategy="mirrored"), strategy=two_replica_strategy)
    assert result.complete and result.failures == full_run[0].failures
    paths, embeddings = read_embeddings(out)
    expected_paths, expected = read_embeddings(full_run[1])
    assert paths == expected_paths
    np.testing.assert_allclose(embeddings, expected, atol=1e-5, rtol=1e-5)

    embedder = ModuleEmbedder(module_dir, strategy=two_replica_strategy)
    variable = embedder._model.weights[0].value  # the folded backbone's tf.Variable
    devices = {v.device for v in two_replica_strategy.experimental_local_results(variable)}
    assert len(devices) == 2
    images = np.random.default_rng(0).random((5, SIZE, SIZE, 3)).astype(np.float32)
    spread = embedder(images).numpy()
    assert embedder._forward.spread.experimental_get_tracing_count() == 1  # split path ran
    np.testing.assert_allclose(spread, _LOADED[module_dir](images).numpy(), atol=1e-5, rtol=1e-5)
    assert embedder(images[:1]).shape == (1, 1024)  # fewer images than replicas: one device
    with pytest.raises(EmbedError, match="several hosts: --engine beam"):
        make_embed_strategy("multiworker")
