"""Whole-slide images: reading, tissue detection, tiling and ASAP XML annotations, on pyramidal
TIFFs written from real BreakHis images."""
from __future__ import annotations


import numpy as np
import pytest

pytest.importorskip("tiffslide", reason="tiffslide (a medfound dependency) is not installed")
pytest.importorskip("tifffile", reason="tifffile (test extra) writes the test slides")

from medfound.slides.annotations import read_asap_xml, tile_labels  # noqa: E402
from medfound.slides.reader import SlideError, magnification_to_mpp, open_slide  # noqa: E402
from medfound.slides.tiling import TilingConfig, plan_tiles, read_tile  # noqa: E402
from medfound.slides.tissue import detect_tissue, otsu_threshold, overlay_png  # noqa: E402
from tests.slide_files import rect, tissue_canvas, write_asap_xml, write_pyramid  # noqa: E402

W, H = 768, 512  # level-0 size of the small slides
TISSUE = (128, 128, 640, 384)  # where BreakHis tissue is pasted (tile-aligned at 128 px)


@pytest.fixture(scope="module")
def breakhis(shared_data):
    return shared_data / "breakhis"


# ---- reader and tissue ----------------------------------------------------------------------------

def test_reader_levels_mpp_thumbnail_and_named_errors(breakhis, tmp_path):
    canvas = tissue_canvas(breakhis, (W, H), [TISSUE])
    slide_file = write_pyramid(tmp_path / "s.tif", canvas, compression="jpeg")
    with open_slide(slide_file) as s:
        assert s.dimensions == (W, H) and s.level_count == 3
        assert s.level_downsamples == [1.0, 2.0, 4.0]
        assert s.mpp == pytest.approx(0.25, rel=1e-3)
        assert s.best_level(2.0) == 1 and s.best_level(3.0) == 1 and s.best_level(0.5) == 0
        thumb = s.thumbnail(100)
        assert max(thumb.shape[:2]) == 100 and thumb.dtype == np.uint8
        region = s.read_region((256, 256), 0, (64, 64))
        assert np.abs(region.astype(int) - canvas[256:320, 256:320]).mean() < 12  # JPEG
    assert magnification_to_mpp("20x") == pytest.approx(0.5)
    assert magnification_to_mpp(40) == pytest.approx(0.25)

    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(slide_file.read_bytes()[: slide_file.stat().st_size * 2 // 3])
    plain = tmp_path / "plain.tif"
    import tifffile
    tifffile.imwrite(plain, canvas, photometric="rgb")  # strips, no tiles
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"not a tiff at all" * 10)
    for path, words in [(tmp_path / "missing.tif", "no such slide"), (truncated, "truncated"),
                        (plain, "not a tiled"), (garbage, "not a readable TIFF")]:
        with pytest.raises(SlideError, match=words) as err:
            open_slide(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("seed", [0, 1])  # the palest BreakHis image; a strongly stained one
def test_tissue_mask_finds_the_pasted_tissue_and_nothing_on_glass(breakhis, tmp_path, seed):
    canvas = tissue_canvas(breakhis, (W, H), [TISSUE], seed=seed)
    canvas[20:22, 20:22] = (120, 40, 120)  # a speck of dust: removed
    with open_slide(write_pyramid(tmp_path / "s.tif", canvas)) as s:
        mask = detect_tissue(s, max_side=384)  # level 1 (384 x 256)
        assert mask.level == 1 and mask.downsample == 2.0
        x0, y0, x1, y1 = (v // 2 for v in TISSUE)
        inside = mask.mask[y0 + 4:y1 - 4, x0 + 4:x1 - 4].mean()
        outside = np.concatenate([mask.mask[:y0 - 4].ravel(), mask.mask[y1 + 4:].ravel()]).mean()
        assert inside > 0.95 and outside < 0.01
        assert not mask.mask[8:12, 8:12].any()  # the speck
        assert mask.fraction_in(*TISSUE[:2], 128) > 0.95 and mask.fraction_in(0, 0, 64) == 0
        png = overlay_png(s.thumbnail(200), mask.mask, tmp_path / "mask.png")
        from PIL import Image
        overlay = np.asarray(Image.open(png))
        assert overlay.shape[:2] == s.thumbnail(200).shape[:2]
        # tinted green over tissue, untouched glass
        ty, tx = overlay.shape[0] // 2, overlay.shape[1] // 2
        assert overlay[ty, tx, 1] > overlay[ty, tx, 0] and (overlay[2, 2] == s.thumbnail(200)[2, 2]).all()
    # glass with a blue tint and scanner noise: no tissue
    glass = np.full((H, W, 3), (232, 234, 240), np.uint8) + np.random.default_rng(0).integers(
        0, 6, (H, W, 3), dtype=np.uint8)
    with open_slide(write_pyramid(tmp_path / "glass.tif", glass)) as s:
        assert detect_tissue(s).mask.sum() == 0
    assert 0.1 < otsu_threshold(np.r_[np.full(100, 0.1), np.full(100, 0.8)]) < 0.8


def test_tiles_at_requested_mpp_come_from_the_best_level(breakhis, tmp_path):
    canvas = tissue_canvas(breakhis, (W, H), [TISSUE])
    with open_slide(write_pyramid(tmp_path / "s.tif", canvas, compression="lzw")) as s:
        mask = detect_tissue(s)
        grid = plan_tiles(s, mask, TilingConfig(mpp=0.5, tile_size=64, min_tissue=0.5))
        # 0.5 um/px of a 0.25 um/px slide: level 1, 64 px there = 128 level-0 px
        assert grid.level == 1 and grid.size0 == 128 and grid.read_size == 64
        assert len(grid.coords) == (512 // 128) * (256 // 128)
        assert set(map(tuple, grid.coords)) == {(x, y) for x in range(128, 640, 128)
                                                for y in range(128, 384, 128)}
        assert (grid.tissue > 0.9).all()
        # the vectorised tissue fractions are those of each tile's own window of the mask
        d = mask.downsample
        for (x, y), t in zip(grid.coords, grid.tissue):
            window = mask.mask[int(y // d):int(np.ceil((y + 128) / d)),
                               int(x // d):int(np.ceil((x + 128) / d))]
            assert t == pytest.approx(window.mean())
        edge = mask.fraction_in(64, 64, 128)  # half glass: a quarter of the square is tissue
        assert 0.15 < edge < 0.35
        tile = read_tile(s, grid, 256, 128)
        assert tile.shape == (64, 64, 3)
        from PIL import Image
        expected = np.asarray(Image.fromarray(canvas[128:256, 256:384]).resize((64, 64)))
        assert np.abs(tile.astype(int) - expected).mean() < 6
        half = plan_tiles(s, mask, TilingConfig(magnification="20x", tile_size=64, stride=32,
                                                min_tissue=0.5))
        assert half.mpp == 0.5 and len(half.coords) > len(grid.coords)  # overlapping stride


    with open_slide(write_pyramid(tmp_path / "s2.tif", canvas)) as s:
        with pytest.raises(SlideError, match="does not upsample"):
            plan_tiles(s, detect_tissue(s), TilingConfig(mpp=0.1, tile_size=64))
        level0 = plan_tiles(s, detect_tissue(s), TilingConfig(mpp=0.3, tile_size=64))
        assert level0.level == 0 and level0.read_size == round(64 * 0.3 / 0.25)
        assert read_tile(s, level0, *level0.coords[0]).shape == (64, 64, 3)


def test_tumour_fractions_match_the_drawn_polygons_with_holes(tmp_path):
    xml = write_asap_xml(tmp_path / "a.xml", [rect(100, 100, 300, 300)],
                         exclusions=[rect(150, 150, 250, 250)])
    ann = read_asap_xml(xml)
    assert len(ann.tumours) == 1 and len(ann.exclusions) == 1
    coords = np.array([[100, 100], [0, 0], [150, 150], [200, 100], [50, 100], [1000, 1000]])
    got = ann.tumour_fraction(coords, 100, samples=100)
    # [100,200)^2 minus the hole [150,200)^2: 0.75; outside: 0; inside the hole: 0;
    # [200,300)x[100,200) minus [200,250)x[150,200): 0.75; [50,150)x[100,200): 0.5
    np.testing.assert_allclose(got, [0.75, 0.0, 0.0, 0.75, 0.5, 0.0], atol=0.02)
    np.testing.assert_array_equal(tile_labels(got, 0.5), [1, 0, 0, 1, 1, 0])
    triangle = write_asap_xml(tmp_path / "t.xml", [[(0, 0), (100, 0), (0, 100)]])
    assert read_asap_xml(triangle).tumour_fraction(np.array([[0, 0]]), 100)[0] == \
        pytest.approx(0.5, abs=0.03)
    bad = tmp_path / "bad.xml"
    bad.write_text("<ASAP_Annotations><Annotations>")
    with pytest.raises(ValueError, match="bad.xml"):
        read_asap_xml(bad)


def test_tile_labels_of_a_slide_follow_its_annotation(breakhis, tmp_path):
    canvas = tissue_canvas(breakhis, (W, H), [TISSUE])
    with open_slide(write_pyramid(tmp_path / "s.tif", canvas)) as s:
        grid = plan_tiles(s, detect_tissue(s), TilingConfig(mpp=1.0, tile_size=32, min_tissue=0.5))
    # a tumour box over the left half of the tissue with a hole cut into one of its tiles
    xml = write_asap_xml(tmp_path / "s.xml", [rect(128, 128, 384, 384)],
                         exclusions=[rect(128, 128, 192, 256)])
    fractions = read_asap_xml(xml).tumour_fraction(grid.coords, grid.size0)
    expected = {(128, 128): 0.5, (256, 128): 1.0, (128, 256): 1.0, (256, 256): 1.0}
    got = {tuple(map(int, c)): float(f) for c, f in zip(grid.coords, fractions)}
    assert len(got) == 8
    for xy, f in got.items():
        assert f == pytest.approx(expected.get(xy, 0.0), abs=0.02), xy
    labels = tile_labels(fractions, 0.75)
    assert labels.sum() == 3 and labels.dtype == np.int64

