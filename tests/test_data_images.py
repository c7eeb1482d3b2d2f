"""Image decoding: every PIL mode, DICOM, bad files with clear errors, and the tf.data decoder."""
from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from medfound.data.images import (ImageError, SkippedFiles, image_dataset, list_image_files,
                                  read_image)
from tests.dicom_files import write_dicom

RNG = np.random.default_rng(0)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bomb_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A tiny, well-formed PNG that declares a huge size (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + _png_chunk(b"IEND", b""))
    path.write_bytes(data)
    return path


def make_bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Hand-made bad files -> (path, a word the error must contain)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.png").write_bytes(b"")
    good = folder / "_full.png"
    Image.fromarray(RNG.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    good.unlink()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "text.png").write_text("this is not an image\n")
    Image.new("L", (1, 1), 7).save(folder / "one.png")
    write_bomb_png(folder / "bomb.png")
    return {
        "zero": (folder / "zero.png", "empty"),
        "truncated": (folder / "truncated.png", "truncated"),
        "text": (folder / "text.png", "not a recognised image"),
        "one": (folder / "one.png", "1x1"),
        "bomb": (folder / "bomb.png", "decompression bomb"),
    }


@pytest.mark.parametrize("name", ["zero", "truncated", "text", "one", "bomb"])
def test_bad_files_raise_image_error_naming_file_and_problem(tmp_path, name):
    path, word = make_bad_files(tmp_path)[name]
    with pytest.raises(ImageError) as info:
        read_image(path)
    assert str(info.value).startswith(f"{path}: ")
    assert word in info.value.problem
    assert info.value.path == str(path)


def test_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="cannot read file"):
        read_image(tmp_path / "nope.png")


def test_rgba_and_la_drop_alpha(tmp_path):
    rgba = RNG.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    rgba[..., 3] = RNG.integers(0, 256, (5, 7))
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (5, 7, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, rgba[..., :3] / np.float32(255))
    Image.fromarray(rgba[..., [0, 3]], "LA").save(tmp_path / "la.png")
    la = read_image(tmp_path / "la.png")
    for c in range(3):
        np.testing.assert_array_equal(la[..., c], rgba[..., 0] / np.float32(255))


def test_palette_png_is_expanded_through_its_palette(tmp_path):
    image = Image.fromarray(RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=16)
    image.save(tmp_path / "pal.png")
    assert Image.open(tmp_path / "pal.png").mode == "P"
    expected = np.asarray(image.convert("RGB")) / np.float32(255)
    np.testing.assert_array_equal(read_image(tmp_path / "pal.png"), expected)


def test_16bit_grayscale_png_and_tiff_keep_16_bit_precision(tmp_path):
    gray = RNG.integers(0, 65536, (9, 10)).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    Image.fromarray(gray).save(tmp_path / "g16.tif")
    for name in ("g16.png", "g16.tif"):
        out = read_image(tmp_path / name)
        assert out.shape == (9, 10, 3)
        np.testing.assert_allclose(out[..., 1], gray / 65535.0, atol=1e-7)


def test_16bit_rgb_png_is_not_reduced_to_8_bits(tmp_path):
    rgb = RNG.integers(0, 65536, (6, 5, 3)).astype(np.uint16)
    (tmp_path / "rgb16.png").write_bytes(tf.io.encode_png(rgb).numpy())
    np.testing.assert_allclose(read_image(tmp_path / "rgb16.png"), rgb / 65535.0, atol=1e-7)


def test_cmyk_jpeg_converts_to_rgb(tmp_path):
    Image.new("CMYK", (8, 6), (10, 200, 30, 40)).save(tmp_path / "cmyk.jpg")
    out = read_image(tmp_path / "cmyk.jpg")
    expected = np.asarray(Image.open(tmp_path / "cmyk.jpg").convert("RGB")) / 255.0
    assert out.shape == (6, 8, 3)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out[..., 0].mean() > out[..., 1].mean()  # little cyan, much magenta: red > green


def test_float_and_int32_tiffs_are_scaled_into_unit_range(tmp_path):
    values = np.linspace(-5.0, 20.0, 12, dtype=np.float32).reshape(3, 4)
    Image.fromarray(values, "F").save(tmp_path / "f.tif")
    out = read_image(tmp_path / "f.tif")
    np.testing.assert_allclose(out[..., 0], (values + 5.0) / 25.0, atol=1e-6)
    ints = np.arange(12, dtype=np.int32).reshape(3, 4) * 5000
    Image.fromarray(ints, "I").save(tmp_path / "i.tif")
    np.testing.assert_allclose(read_image(tmp_path / "i.tif")[..., 2], ints / 65535.0, atol=1e-7)


def test_real_nih_rgba_and_breakhis_images(shared_data):
    nih = sorted((shared_data / "nih-cxr14-sample" / "images").glob("*.png"))
    rgba = [p for p in nih[:400] if Image.open(p).mode == "RGBA"]
    assert rgba, "the NIH sample should contain RGBA images"
    for p in rgba[:3]:
        out = read_image(p)
        raw = np.asarray(Image.open(p))
        assert out.shape == (64, 64, 3)
        np.testing.assert_array_equal(out, raw[..., :3] / np.float32(255))
    breakhis = sorted((shared_data / "breakhis").glob("*.png"))
    out = read_image(breakhis[0])
    assert out.shape == (460, 700, 3) and 0.0 <= out.min() and out.max() <= 1.0
    assert out.std() > 0.01


def _write_dicom(path: Path, pixels: np.ndarray, **attrs) -> Path:
    pytest.importorskip("pydicom", reason="pydicom (the dicom extra) is not installed")
    return write_dicom(path, pixels, **attrs)


def test_dicom_monochrome1_rescale_and_window(tmp_path):
    pixels = RNG.integers(0, 4096, (12, 10)).astype(np.uint16)
    _write_dicom(tmp_path / "m1.dcm", pixels, PhotometricInterpretation="MONOCHROME1",
                 RescaleSlope=2, RescaleIntercept=-100)
    values = pixels * 2.0 - 100.0
    expected = 1.0 - (values - values.min()) / (values.max() - values.min())
    out = read_image(tmp_path / "m1.dcm")
    assert out.shape == (12, 10, 3)
    np.testing.assert_allclose(out[..., 0], expected, atol=1e-6)
    # A stored window clips: values below center - width/2 are black.
    _write_dicom(tmp_path / "win", pixels, WindowCenter=2000, WindowWidth=1000)  # no extension
    windowed = read_image(tmp_path / "win")
    np.testing.assert_allclose(windowed[..., 0], np.clip((pixels - 1500.0) / 1000.0, 0, 1),
                               atol=1e-6)
    assert [p.name for p in list_image_files(tmp_path)] == ["m1.dcm", "win"]


def test_dicom_without_pixel_data_and_without_pydicom(tmp_path, monkeypatch):
    path = _write_dicom(tmp_path / "empty.dcm", np.zeros((0, 0)))
    with pytest.raises(ImageError, match="no pixel data"):
        read_image(path)
    monkeypatch.setitem(sys.modules, "pydicom", None)  # as if the extra were not installed
    with pytest.raises(ImageError, match=r"pip install medfound\[dicom\]"):
        read_image(path)


def test_image_dataset_matches_read_image_for_native_and_fallback_formats(tmp_path):
    rgb = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    gray16 = RNG.integers(0, 65536, (20, 30)).astype(np.uint16)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "b.jpg", quality=95)
    Image.fromarray(gray16).save(tmp_path / "c.png")
    Image.fromarray(rgb).save(tmp_path / "d.tif")
    Image.fromarray(rgb).convert("P").save(tmp_path / "e.png")
    Image.new("CMYK", (9, 7), (10, 200, 30, 40)).save(tmp_path / "f.jpg")
    paths = [str(p) for p in sorted(tmp_path.iterdir())]
    ds = image_dataset(paths)
    assert ds.element_spec["image"].shape.as_list() == [None, None, 3]
    seen = []
    for element in ds:
        path = element["path"].numpy().decode()
        image = element["image"].numpy()
        expected = read_image(path)
        assert image.dtype == np.float32 and image.shape == expected.shape
        # JPEG: TensorFlow's and Pillow's IDCTs may differ by one grey level.
        tolerance = 1.01 / 255 if path.endswith(".jpg") else 0.0
        np.testing.assert_allclose(image, expected, atol=tolerance)
        seen.append(path)
    assert seen == paths


def test_image_dataset_error_names_the_file_and_skip_errors_reports(tmp_path):
    bad = make_bad_files(tmp_path / "bad")
    good = tmp_path / "good.png"
    Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(good)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one.png: image is 1x1"):
        list(image_dataset([str(good), str(bad["one"][0])]))
    skipped = SkippedFiles()
    paths = [str(good)] + [str(p) for p, _ in bad.values()]
    out = [e["path"].numpy().decode() for e in image_dataset(paths, skip_errors=True,
                                                              on_error=skipped)]
    assert out == [str(good)]
    assert sorted(p for p, _ in skipped.items) == sorted(str(p) for p, _ in bad.values())
    problems = dict(skipped.items)
    for path, word in bad.values():
        assert word in problems[str(path)]
    assert "5 file(s) skipped" in skipped.summary()
