"""Real whole-slide images: the OpenSlide test slide CMU-1-Small-Region (Aperio SVS, real H&E skin,
2220 x 2967 at 0.499 um/px, one level) and the 4-level pyramid made from it, both in
``../shared/data/wsi`` (see its README). Tissue masks, tiling at 0.5 and 1.0 um/px and
``embed --slides`` on real slide files, as a user's SVS would go through them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tiffslide", reason="tiffslide (a medfound dependency) is not installed")

from medfound.slides.reader import open_slide  # noqa: E402
from medfound.slides.tiling import TilingConfig, plan_tiles  # noqa: E402
from medfound.slides.tissue import detect_tissue, reference_tissue_mask, tissue_mask  # noqa: E402

SINGLE = "CMU-1-Small-Region.svs"
PYRAMID = "CMU-1-Small-Region-pyramid.svs"


@pytest.fixture(scope="module")
def wsi(shared_data) -> Path:
    folder = shared_data / "wsi"
    if not (folder / SINGLE).is_file() or not (folder / PYRAMID).is_file():
        pytest.skip(f"real whole-slide images not found in {folder} ({SINGLE}, {PYRAMID})")
    return folder


def test_tissue_mask_of_the_real_slide_is_the_reference_and_agrees_across_levels(wsi):
    with open_slide(wsi / SINGLE) as slide:
        assert slide.dimensions == (2220, 2967) and slide.mpp == pytest.approx(0.499)
        rgb = slide.read_level(0)
        single = detect_tissue(slide)
    # The whole 6.6 M-pixel level, over the 1,048,576 pixels where thresholds once came from a
    # subsample: the reference's thresholds and mask, pixel for pixel.
    fast, t_sat, t_od = tissue_mask(rgb)
    ref, r_sat, r_od = reference_tissue_mask(rgb)
    assert (t_sat, t_od) == (r_sat, r_od)
    np.testing.assert_array_equal(fast, ref)
    # The section covers about a third of this crop, the rest is glass: measured 0.356 (level 0,
    # tiffslide 3.0.1); the band leaves room for another JPEG decoder, not for another detector.
    assert single.level == 0 and 0.32 < single.fraction < 0.40, single.fraction
    with open_slide(wsi / PYRAMID) as slide:
        assert len(slide.level_dimensions) == 4
        at_level0 = detect_tissue(slide)
        coarse = detect_tissue(slide, max_side=1000)  # its 4x level, 555 x 741
    # Level 0 re-encoded at JPEG q95: nearly the same mask (measured 0.352 vs 0.356).
    assert np.mean(at_level0.mask != single.mask) < 0.02
    # The 4x level's mask against the single-level mask reduced 4 x 4 by majority.
    assert coarse.downsample == pytest.approx(4.0)
    h, w = coarse.mask.shape
    blocks = single.mask[:4 * h, :4 * w].reshape(h, 4, w, 4).mean(axis=(1, 3)) >= 0.5
    assert np.mean(blocks != coarse.mask) < 0.05, np.mean(blocks != coarse.mask)


def test_thresholds_come_from_every_pixel_not_a_sample(wsi):
    """Black (empty sparse-tile) pixels exactly where a regular 1-in-4 sample would look: a
    sampled histogram holds no valid pixel and its thresholds jump to the maximum (1.0, 3.0)."""
    with open_slide(wsi / SINGLE) as slide:
        crop = slide.read_level(0)[:1100, :1100].copy()  # 1.21 M pixels
    crop[::2, ::2] = 0
    _, t_sat, t_od = tissue_mask(crop)
    _, r_sat, r_od = reference_tissue_mask(crop)
    assert (t_sat, t_od) == (r_sat, r_od) and t_sat < 0.2 and t_od < 1.0


@pytest.mark.parametrize("name", [SINGLE, PYRAMID])
def test_tiles_at_half_and_one_micron_follow_the_mpp_ratio(wsi, name):
    """A 64-px tile covers 64 x 64 level-0 pixels at 0.5 um/px and 128 x 128 at 1.0 um/px: the
    grid has a quarter of the cells (17 x 23 against 34 x 46) and so, on the same mask, about a
    quarter of the tissue tiles; the pyramid reads the 1.0 um/px tiles from its 2x level."""
    with open_slide(wsi / name) as slide:
        mask = detect_tissue(slide)
        fine = plan_tiles(slide, mask, TilingConfig(mpp=0.5, tile_size=64, min_tissue=0.5))
        coarse = plan_tiles(slide, mask, TilingConfig(mpp=1.0, tile_size=64, min_tissue=0.5))
    assert len(fine.coords) > 400  # measured 590 (single) / 586 (pyramid)
    assert 3.6 < len(fine.coords) / len(coarse.coords) < 4.4, (len(fine.coords), len(coarse.coords))
    assert fine.level == 0 and coarse.level == (1 if name == PYRAMID else 0)


def test_embed_slides_on_the_real_svs_files(wsi, tmp_path, capsys):
    from medfound.cli.main import main
    from medfound.slides.embed import read_slide_features
    from tests.tiny_runs import export_tiny_module

    module = export_tiny_module(tmp_path / "module", "path-tiny-wsi-test", seed=5,
                                modality="path", init="bit-m", steps=1, image_size=32,
                                data="unit-test slides")
    out = tmp_path / "emb"
    rc = main(["embed", "--slides", "--module", str(module), "--input", str(wsi),
               "--out", str(out), "--mpp", "1.0", "--tile-size", "64", "--min-tissue", "0.5",
               "--image-size", "32", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    single = read_slide_features(out / "CMU-1-Small-Region.h5")
    pyramid = read_slide_features(out / "CMU-1-Small-Region-pyramid.h5")
    # One finite 1024-d embedding per kept tile, as many as the tiling test plans (~145).
    for features in (single, pyramid):
        assert features["features"].shape[1] == 1024 and 120 < len(features["features"]) < 170
        assert np.isfinite(features["features"]).all()
        assert len(features["coords"]) == len(features["features"])
