"""Issue 25, class 9: every compressed input is bounded before it is expanded
(medfound.utils.limits), and the image pipeline's decoded pixels are bounded (decode budget)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_hostile_cli import Case, assert_refused

ZEROS = 256 << 20  # 256 MiB of zeros: a few hundred KiB compressed


def _zip_bomb(path: Path, members: dict[str, int]) -> None:
    """A zip whose members are ``size`` zero bytes each, deflated (what np.savez_compressed and
    Keras write); streamed, so the test itself never holds them."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, size in members.items():
            with zf.open(name, "w", force_zip64=True) as f:
                header = {"descr": "|u1", "fortran_order": False, "shape": (size // 784, 28, 28)}
                np.lib.format.write_array_header_2_0(f, header)
                chunk = bytes(1 << 20)
                for _ in range(size // len(chunk)):
                    f.write(chunk)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bombs")
    _zip_bomb(root / "unlabeled.npz", {"train_images.npy": ZEROS})
    _zip_bomb(root / "medmnist.npz", {f"{s}_{k}.npy": ZEROS if k == "images" else 1 << 20
                                      for s in ("train", "val", "test")
                                      for k in ("images", "labels")})
    with zipfile.ZipFile(root / "model.keras", "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("model.weights.h5", "w", force_zip64=True) as f:
            for _ in range(ZEROS >> 20):
                f.write(bytes(1 << 20))
    rng = np.random.default_rng(0)
    np.savez(root / "labeled.npz", **{f"{s}_{k}": v for s in ("train", "val", "test") for k, v in (
        ("images", rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)),
        ("labels", np.array([[0], [1], [0], [1]])))})
    return root


CASES = {
    "pretrain-npz-bomb": Case("pretrain --data {w}/unlabeled.npz --out {w}/run --arch tiny "
                              "--image-size 32 --batch-size 4 --steps 2 --quiet",
                              ["{w}/unlabeled.npz: this .npz would expand to", "bomb"]),
    "finetune-medmnist-bomb": Case("finetune --module random:tiny --task medmnist --data "
                                   "{w}/medmnist.npz --out {w}/ft --epochs 1 --quiet",
                                   ["{w}/medmnist.npz: this .npz would expand to"]),
    "evaluate-keras-bomb": Case("evaluate --model {w}/model.keras --task medmnist --data "
                                "{w}/labeled.npz --out {w}/ev",
                                ["{w}/model.keras: this .keras file would expand to"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_compression_bomb_is_refused_before_it_expands(world, name, capsys):
    assert_refused(world, CASES[name], capsys)


def test_an_hdf5_bomb_is_refused_from_its_declared_size(tmp_path):
    import h5py

    from medfound.data.labeled.pcam import DatasetFormatError, H5Source

    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", shape=(4000, 96, 96, 3), dtype="u1", chunks=(64, 96, 96, 3),
                         compression="gzip")  # never written: all fill value, a few KiB
    with pytest.raises(DatasetFormatError, match="HDF5 dataset would expand to"):
        H5Source(path, "x")


def test_large_images_decode_one_at_a_time_inside_the_budget(tmp_path):
    """A PNG above LARGE_PIXELS is deferred by the parallel map and decoded (and transformed) by
    the sequential one; the pixels are those read_image gives; the parallel decodes in flight
    are bounded by the budget."""
    import tensorflow as tf

    from medfound.data import images

    assert images.decode_calls(None) * images.LARGE_PIXELS <= images.DECODE_BUDGET_PIXELS
    assert images.decode_calls(64) * images.LARGE_PIXELS <= images.DECODE_BUDGET_PIXELS
    side = int(np.sqrt(images.LARGE_PIXELS)) + 8
    rng = np.random.default_rng(0)
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(big,
                                                                               compress_level=1)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(small)
    decoder = images.make_decoder(large_pixels=images.LARGE_PIXELS)
    _, _, later = decoder.or_defer(tf.constant(str(big)))
    assert bool(later)
    _, _, later = decoder.or_defer(tf.constant(str(small)))
    assert not bool(later)
    ds = images.map_decode(tf.data.Dataset.from_tensor_slices([str(big), str(small)]),
                           transform=lambda image: image[:8, :8])
    got = [e["image"] for e in ds.as_numpy_iterator()]
    assert np.array_equal(got[0], images.read_image(big)[:8, :8])
    assert np.array_equal(got[1], images.read_image(small)[:8, :8])
