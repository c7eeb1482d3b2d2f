"""One data-reading layer: labeled and unlabeled CSVs are read, and their image paths resolved,
by the same rules (medfound.data.tables), and every pipeline prepares images with one function
(medfound.data.prepare). Each case runs through both a labeled and an unlabeled loader."""
from __future__ import annotations

import ast
import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfound.data.labeled.base import CSVFormatError
from medfound.data.labeled.generic import load_csv
from medfound.data.unlabeled import SourceError, open_unlabeled

DATA = Path(__file__).resolve().parents[1] / "medfound" / "data"


def _labeled(csv_path: Path) -> list[str]:
    return load_csv(csv_path, check_files=False).paths.tolist()


def _unlabeled(csv_path: Path) -> list[str]:
    return list(open_unlabeled(csv_path).paths)


LOADERS = {"labeled": (_labeled, CSVFormatError), "unlabeled": (_unlabeled, SourceError)}


def _write(folder: Path, paths: list[str], *, bom: bool = False, encoding: str = "utf-8") -> Path:
    """A CSV ``path,label`` (and the images ok.png, b.png, sub/c.png under ``folder``)."""
    for name in ("ok.png", "b.png", "sub/c.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), 40).save(folder / name)
    csv_path = folder / "list.csv"
    with open(csv_path, "w", newline="", encoding="utf-8-sig" if bom else encoding) as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows([p, "cyst" if i % 2 else "tumour"] for i, p in enumerate(paths))
    return csv_path


@pytest.mark.parametrize("side", LOADERS)
def test_a_csv_with_a_byte_order_mark_loads_on_both_sides(tmp_path, side):
    load, _ = LOADERS[side]
    csv_path = _write(tmp_path, ["ok.png", "b.png"], bom=True)
    assert csv_path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert load(csv_path) == [str(tmp_path / "ok.png"), str(tmp_path / "b.png")]


# path in the CSV -> ("file", the file it names under the CSV's folder) or ("refused", the problem)
PATHS = {
    "a/../b.png": ("file", "b.png"), "./b.png": ("file", "b.png"), "sub//c.png": ("file", "sub/c.png"),
    "sub\\c.png": ("file", "sub/c.png"), "sub/./x/../c.png": ("file", "sub/c.png"),
    "~/x.png": ("refused", "home image path"), "~user/x.png": ("refused", "home image path"),
    "/abs/x.png": ("refused", "absolute image path"),
    "\\\\server\\share\\x.png": ("refused", "absolute image path"),
    "C:\\images\\x.png": ("refused", "absolute image path"), "C:x.png": ("refused", "absolute image path"),
    "../x.png": ("refused", "escapes the data root"), "a/../../x.png": ("refused", "escapes the data root"),
    "a\\..\\..\\x.png": ("refused", "escapes the data root"), "a/..": ("refused", "names the data root itself"),
}
ACCEPTED = {path: target for path, (kind, target) in PATHS.items() if kind == "file"}
REFUSED = {path: problem for path, (kind, problem) in PATHS.items() if kind == "refused"}


@pytest.mark.parametrize("side", LOADERS)
@pytest.mark.parametrize("written", ACCEPTED)
def test_paths_inside_the_root_resolve_the_same_on_both_sides(tmp_path, side, written):
    load, _ = LOADERS[side]
    csv_path = _write(tmp_path, ["ok.png", written])
    assert load(csv_path) == [str(tmp_path / "ok.png"), str(tmp_path / ACCEPTED[written])]


@pytest.mark.parametrize("side", LOADERS)
@pytest.mark.parametrize("written", REFUSED)
def test_paths_outside_the_root_are_refused_the_same_on_both_sides(tmp_path, side, written):
    load, error = LOADERS[side]
    csv_path = _write(tmp_path, ["ok.png", written])
    with pytest.raises(error) as info:
        load(csv_path)
    message = str(info.value)
    assert message.startswith(f"{csv_path}, line 3: ") and REFUSED[written] in message
    assert "\n" not in message


@pytest.mark.parametrize("side", LOADERS)
def test_bad_csv_text_is_refused_the_same_on_both_sides(tmp_path, side):
    load, error = LOADERS[side]
    csv_path = _write(tmp_path, ["ok.png", "b.png"])
    with open(csv_path, "a", encoding="utf-8") as f:
        f.write("b.png,cyst,extra\n")
    with pytest.raises(error, match=r"line 4: row has 3 fields, the header has 2"):
        load(csv_path)
    csv_path.write_bytes(b"path,label\nok.png,cyst\n\xe9t\xe9.png,cyst\n")  # Latin-1, not UTF-8
    with pytest.raises(error, match=r"line 3: not UTF-8 text"):
        load(csv_path)


def test_slide_csvs_are_read_by_the_same_reader(tmp_path):
    from medfound.slides.embed import list_slides
    from medfound.slides.mil import _label_rows

    listing = tmp_path / "slides.csv"
    listing.write_text("\ufeffslide,label\nA.tif, tumor\narchive/B.tif,normal\n", encoding="utf-8")
    assert list_slides(listing) == [tmp_path / "A.tif", tmp_path / "archive" / "B.tif"]
    assert list_slides(listing, root="/disk") == [Path("/disk/A.tif"), Path("/disk/archive/B.tif")]
    assert {name: row["label"] for name, row in _label_rows(listing).items()} == {"A": "tumor", "B": "normal"}


# --- one image preparation ---

def test_one_prepare_image_serves_every_pipeline():
    import medfound.data.labeled as labeled
    import medfound.embed as embed
    from medfound.data.prepare import prepare_image
    from medfound.slides import embed as slide_embed

    assert embed.prepare_image is prepare_image and labeled.prepare_image is prepare_image
    source = Path(slide_embed.__file__).read_text()
    assert "from medfound.data.prepare import prepare_image" in source


def test_prepare_image_scales_types_channels_and_batches():
    from medfound.data.prepare import prepare_image, to_rgb_float

    rng = np.random.default_rng(0)
    gray8 = rng.integers(0, 256, (2, 12, 10), dtype=np.uint8)
    out = prepare_image(gray8[..., None], 12).numpy()  # a uint8 batch (slides feed these)
    assert out.shape == (2, 12, 12, 3) and out.dtype == np.float32
    # a non-square image is resized, not cropped, so compare at its own size
    same = to_rgb_float(gray8[..., None]).numpy()
    np.testing.assert_array_equal(same, np.repeat(gray8[..., None], 3, axis=-1) / np.float32(255))
    np.testing.assert_array_equal(prepare_image(gray8[0], (12, 10)).numpy(), same[0])  # identity size
    gray16 = rng.integers(0, 65536, (6, 6), dtype=np.uint16)
    np.testing.assert_allclose(prepare_image(gray16, 6).numpy()[..., 1], gray16 / 65535.0, atol=1e-7)
    gray_alpha = np.stack([gray8[0], np.full_like(gray8[0], 7)], axis=-1)
    np.testing.assert_array_equal(to_rgb_float(gray_alpha).numpy(), same[0])
    rgba = np.concatenate([rng.uniform(size=(4, 4, 3)), np.zeros((4, 4, 1))], axis=-1).astype(np.float32)
    np.testing.assert_array_equal(to_rgb_float(rgba).numpy(), rgba[..., :3])
    wide = np.zeros((4, 8, 3), np.float32)
    wide[:, 2:6] = 1.0
    np.testing.assert_array_equal(prepare_image(wide, 4, center_crop=True).numpy(), 1.0)
    with pytest.raises(ValueError, match="center_crop fraction"):
        prepare_image(wide, 4, center_crop=1.5)


# --- each on-disk format in one module, no import cycle ---

def _imports(module: str) -> set[str]:
    tree = ast.parse((DATA / f"{module}.py").read_text())
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_tfrecords_and_unlabeled_do_not_import_each_other():
    assert "medfound.data.unlabeled" not in _imports("tfrecords")
    assert "medfound.data.tfrecords" in _imports("unlabeled")
    assert not {"medfound.data.unlabeled", "medfound.data.tfrecords"} & _imports("sources")
    from medfound.data import tfrecords, unlabeled

    assert unlabeled.TFRecordSource is tfrecords.TFRecordSource
