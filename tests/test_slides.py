"""Whole-slide images: reading, tissue, tiling, ASAP annotations, per-slide embedding (resumable,
fault-tolerant) and slide-level MIL, on pyramidal TIFFs written from real BreakHis images."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path


import h5py
import numpy as np
import pytest

pytest.importorskip("tiffslide", reason="tiffslide (a medfound dependency) is not installed")
pytest.importorskip("tifffile", reason="tifffile (test extra) writes the test slides")

from medfound.slides.annotations import read_asap_xml, tile_labels  # noqa: E402
from tests.auc_reference import auc_from_predictions  # noqa: E402
from medfound.slides.embed import SlideEmbedConfig, embed_slides, read_slide_features  # noqa: E402
from medfound.slides.reader import SlideError, magnification_to_mpp, open_slide  # noqa: E402
from medfound.slides.tiling import TilingConfig, plan_tiles, read_tile  # noqa: E402
from medfound.slides.tissue import (detect_tissue, otsu_threshold, overlay_png,  # noqa: E402
                                    reference_tissue_mask, tissue_mask)
from medfound.slides.synthetic import (SET_SIZE, TISSUE, rect, tissue_canvas, write_asap_xml,  # noqa: E402
                                       write_mosaic_set, write_pyramid, write_slide_set,
                                       write_sparse_pyramid)

REPO = Path(__file__).resolve().parents[1]
NAME = "path-50x1-remedis-m"
SIZE = 32  # module input size: tiles of 32 px at 1 um/px (128 level-0 px of a 0.25 um/px slide)
TILING = TilingConfig(mpp=1.0, tile_size=32, min_tissue=0.5)
W, H = SET_SIZE  # level-0 size of the small slides (write_slide_set's; TISSUE: where tissue is)


@pytest.fixture(scope="module")
def breakhis(shared_data):
    return shared_data / "breakhis"


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
    from tests.tiny_runs import export_tiny_module

    return export_tiny_module(tmp_path_factory.mktemp("slide_module"), NAME, seed=5,
                              modality="path", init="bit-m", steps=1, image_size=SIZE,
                              data="unit-test slides")


@pytest.fixture(scope="module")
def embedder(module_dir):
    """The module, loaded once for every embedding call of this file."""
    from medfound.embed import ModuleEmbedder

    return ModuleEmbedder(str(module_dir))


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


@pytest.mark.parametrize("windows", [{}, {"median_px": 3, "speck_px": 5, "hole_px": 3}])
def test_fast_tissue_mask_is_the_median_and_rank_filter_mask(breakhis, windows):
    """The lookup/majority/shift detector gives pixel for pixel the mask (and thresholds) of the
    direct PIL median and rank filters: same edges, nothing smoothed away."""
    rng = np.random.default_rng(0)
    speckled = tissue_canvas(breakhis, (W // 2, H // 2), [(64, 64, 320, 192)], seed=2)
    speckled[::7, ::5] = 0  # black sparse-tile pixels inside tissue: never tissue
    speckled[10:12, 10:12] = (120, 40, 120)
    small = tissue_canvas(breakhis, (W // 2, H // 2), [(100, 60, 116, 76), (200, 100, 260, 180)])
    images = [speckled, small, rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)]
    for image in images:
        fast, t_sat, t_od = tissue_mask(image, **windows)
        ref, r_sat, r_od = reference_tissue_mask(image, **windows)
        assert (t_sat, t_od) == (r_sat, r_od)
        np.testing.assert_array_equal(fast, ref)
    assert tissue_mask(small, **windows)[0][62:74, 102:114].all()  # the 16-px patch stays


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


# ---- embedding -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slide_folder(breakhis, tmp_path_factory):
    folder = write_slide_set(tmp_path_factory.mktemp("slides"), breakhis)
    # problem slides: reported by name, the others go on
    glass = np.full((H, W, 3), 240, np.uint8)
    write_pyramid(folder / "zz_blank.tif", glass)
    good = (folder / "tumor_000.tif").read_bytes()
    (folder / "zz_truncated.tif").write_bytes(good[: len(good) // 2])
    return folder


@pytest.fixture(scope="module")
def embedded(module_dir, embedder, slide_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded")
    config = SlideEmbedConfig(module=str(module_dir), input=str(slide_folder), out_dir=str(out),
                              tiling=TILING, image_size=SIZE, annotations=str(slide_folder),
                              batch_size=8,
                              flush_every=8, progress=False)
    return config, embed_slides(config, embedder=embedder)


def test_embed_writes_one_h5_per_slide_and_reports_bad_slides(embedded, embedder):
    config, result = embedded
    out = Path(config.out_dir)
    assert sorted(p.stem for p in result.done) == [f"normal_{i:03d}" for i in range(4, 8)] + \
        [f"tumor_{i:03d}" for i in range(4)]
    failed = dict(result.failures)
    assert set(Path(p).name for p in failed) == {"zz_blank.tif", "zz_truncated.tif"}
    assert "no tissue" in failed[str(Path(config.input) / "zz_blank.tif")]
    assert "truncated" in failed[str(Path(config.input) / "zz_truncated.tif")]
    with open(out / "failures.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    d = read_slide_features(out / "tumor_000.h5")
    # 1 um/px tiles of 32 px = 128 level-0 px: the 512 x 256 tissue region holds 4 x 2
    assert d["coords"].shape == (8, 2) and d["features"].shape[0] == 8
    assert d["attrs"]["mpp"] == 1.0 and d["attrs"]["tile_size"] == 32
    assert d["attrs"]["module"] == NAME and len(d["attrs"]["module_sha256"]) == 64
    # tumour fraction from the drawn box [128, 384)^2: exactly the 4 tiles inside it
    inside = [(x, y) for x in (128, 256) for y in (128, 256)]
    expected = [1.0 if (x, y) in inside else 0.0 for x, y in d["coords"]]
    np.testing.assert_allclose(d["tumor_fraction"], expected, atol=0.02)
    # features are the module's own embedding of the tiles
    from medfound.embed import prepare_image
    with open_slide(Path(config.input) / "tumor_000.tif") as s:
        grid = plan_tiles(s, detect_tissue(s), TILING)
        tiles = np.stack([read_tile(s, grid, x, y) for x, y in d["coords"]]) / 255.0
    ref = embedder(prepare_image(tiles.astype(np.float32), SIZE))
    np.testing.assert_allclose(d["features"], ref, atol=1e-4)
    assert (out / "tumor_000.tissue.png").is_file()


KILL_SCRIPT = """
import sys, time
from medfound.embed import ModuleEmbedder
from medfound.slides.embed import SlideEmbedConfig, embed_slides
from medfound.slides.tiling import TilingConfig

inner = ModuleEmbedder(sys.argv[1])

class Slow:  # the real module, slowed down so that the kill lands mid-slide
    name, fingerprint, default_image_size = inner.name, inner.fingerprint, 32

    def __call__(self, images):
        time.sleep(0.3)
        return inner(images)

embed_slides(SlideEmbedConfig(module=sys.argv[1], input=sys.argv[2], out_dir=sys.argv[3],
             tiling=TilingConfig(mpp=1.0, tile_size=32, min_tissue=0.5), image_size=32,
             batch_size=1, flush_every=1, progress=False), embedder=Slow())
"""


def test_killed_run_resumes_without_duplicate_tiles(embedded, slide_folder, module_dir, embedder,
                                                    tmp_path):
    config, _ = embedded
    reference = read_slide_features(Path(config.out_dir) / "tumor_001.h5")
    src = tmp_path / "in"
    src.mkdir()
    (src / "tumor_001.tif").write_bytes((slide_folder / "tumor_001.tif").read_bytes())
    out = tmp_path / "out"
    parts = out / "tumor_001.h5.parts"
    # A real kill: a subprocess embedding tile by tile, SIGKILLed once three parts are saved.
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(module_dir), str(src),
                             str(out)], env=env)
    deadline, done = time.time() + 120, 0
    while time.time() < deadline and proc.poll() is None:
        done = len(list(parts.glob("part-*.npy"))) if parts.is_dir() else 0
        if done >= 3:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done = len(list(parts.glob("part-*.npy")))
    assert 3 <= done < 8, f"the kill came too late or never ({done} parts)"
    assert not (out / "tumor_001.h5").exists()
    again = SlideEmbedConfig(module=str(module_dir), input=str(src), out_dir=str(out),
                             tiling=TILING, image_size=SIZE, batch_size=8, progress=False)
    result = embed_slides(again, embedder=embedder)
    assert result.failures == [] and result.tiles == 8 - done  # only the rest was embedded
    got = read_slide_features(out / "tumor_001.h5")
    np.testing.assert_array_equal(got["coords"], reference["coords"])
    assert len(got["features"]) == len(got["coords"]) == 8  # no duplicates, none missing
    np.testing.assert_allclose(got["features"], reference["features"], atol=1e-4)
    assert not parts.exists()  # merged and removed
    assert embed_slides(again, embedder=embedder).tiles == 0  # a finished slide is skipped...
    coarser = dataclasses.replace(again, tiling=TilingConfig(mpp=2.0, tile_size=32))
    refused = embed_slides(coarser, embedder=embedder)  # ...but not reused for other settings
    assert refused.tiles == 0 and "mpp" in refused.failures[0][1]
    # a changed setting does not mix with an earlier run's parts
    (src / "tumor_002.tif").write_bytes((slide_folder / "tumor_002.tif").read_bytes())
    half = SlideEmbedConfig(module=str(module_dir), input=str(src), out_dir=str(out),
                            tiling=TILING, image_size=SIZE, batch_size=2, flush_every=2,
                            max_tiles=4, progress=False)
    assert embed_slides(half, embedder=embedder).tiles == 4
    assert not (out / "tumor_002.h5").exists()
    other = SlideEmbedConfig(module=str(module_dir), input=str(src), out_dir=str(out),
                             tiling=TilingConfig(mpp=1.0, tile_size=32, min_tissue=0.9),
                             image_size=SIZE, progress=False)
    changed = embed_slides(other, embedder=embedder)
    assert changed.failures and "different" in changed.failures[0][1]
    assert len(list((out / "tumor_002.h5.parts").glob("part-*.npy"))) == 2  # kept


def test_huge_sparse_slide_is_tiled_without_reading_it_whole(module_dir, embedder, breakhis,
                                                             tmp_path):
    canvas = tissue_canvas(breakhis, (512, 512), [(0, 0, 512, 512)])
    at = (100 * 512, 50 * 512)
    (tmp_path / "big").mkdir()
    slide = write_sparse_pyramid(tmp_path / "big" / "huge.tif", (120_000, 60_000), canvas, at,
                                 levels=7, tile=1024)
    with open_slide(slide) as s:
        assert s.dimensions == (120_000, 60_000)  # 21.6 GB as RGB if read whole
        with pytest.raises(SlideError, match="too big"):
            s.read_level(0)
    out = tmp_path / "out"
    result = embed_slides(SlideEmbedConfig(module=str(module_dir), input=str(tmp_path / "big"),
                                           out_dir=str(out), tiling=TILING, image_size=SIZE,
                                           progress=False), embedder=embedder)
    assert result.failures == []
    d = read_slide_features(out / "huge.h5")
    assert len(d["coords"]) >= 9  # the 512 x 512 patch holds 4 x 4 tiles of 128 level-0 px
    x, y = d["coords"].T
    assert x.min() >= at[0] - 128 and x.max() < at[0] + 512 and y.min() >= at[1] - 128


def test_cli_embed_slides_lists_bad_slides_and_goes_on(module_dir, slide_folder, tmp_path, capsys):
    from medfound.cli.main import main

    emb = tmp_path / "emb"
    rc = main(["embed", "--slides", "--module", str(module_dir), "--input", str(slide_folder),
               "--out", str(emb), "--mpp", "1.0", "--tile-size", "32", "--min-tissue", "0.5",
               "--image-size", "32", "--max-tiles", "20", "--quiet"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "stopped early" in printed.out and len(list(emb.glob("*.h5"))) == 2
    rc = main(["embed", "--slides", "--module", str(module_dir), "--input", str(slide_folder),
               "--out", str(emb), "--magnification", "10x", "--tile-size", "32",
               "--min-tissue", "0.5", "--image-size", "32", "--annotations", str(slide_folder)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "zz_truncated.tif" in printed.out and "zz_blank.tif" in printed.out
    assert "tiles/s" in printed.out and "tiles/s" in printed.err  # summary and progress
    # Progress into a file or pipe (not a terminal): one update per line, nothing run together.
    assert "\r" not in printed.err
    updates = [line for line in printed.err.splitlines() if "tiles/s)" in line]
    assert updates and all(line.count("tiles/s") == 1 for line in updates), printed.err
    assert all(line.count("failed:") <= 1 for line in printed.err.splitlines())
    assert len(list(emb.glob("*.h5"))) == 8 and not list(emb.glob("*.parts"))
    for line in printed.out.splitlines():
        if "failed:" in line:
            assert line.count(":") >= 2 and "Traceback" not in line
    rc = main(["embed", "--slides", "--module", str(module_dir), "--input",
               str(tmp_path / "nowhere"), "--out", str(emb), "--quiet"])
    assert rc == 2 and "nowhere" in capsys.readouterr().err  # the one error path: exit 2



# ---- slide-level learning ------------------------------------------------------------------------

def write_bags(folder: Path, n_per_class: int = 24, tiles: int = 20, dim: int = 16, seed: int = 0):
    """Per-slide files in the embed --slides layout: Gaussian tile features; a tumour slide has
    two tiles (its 'metastasis') shifted along feature 0. Returns the planted tile indices."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    planted, rows = {}, []
    for i in range(2 * n_per_class):
        tumour = i % 2 == 0
        name = f"slide_{i:03d}"
        features = rng.normal(size=(tiles, dim)).astype(np.float32)
        where = rng.choice(tiles, 2, replace=False)
        if tumour:
            features[where, 0] += 4.0
            planted[name] = set(where.tolist())
        coords = np.stack([np.arange(tiles) % 5 * 128, np.arange(tiles) // 5 * 128], 1)
        with h5py.File(folder / f"{name}.h5", "w") as f:
            f.create_dataset("coords", data=coords)
            f.create_dataset("features", data=features)
            f.create_dataset("tumor_fraction", data=np.isin(np.arange(tiles), where)
                             .astype(np.float32) if tumour else np.zeros(tiles, np.float32))
            f.attrs.update({"slide": "", "slide_width": 640, "slide_height": 512, "mpp": 1.0,
                            "base_mpp": 0.25, "tile_size": 32, "patch_size_level0": 128.0,
                            "module": "synthetic"})
        # two slides of the same class per patient (Camelyon17 has five nodes per patient)
        rows.append((name, "tumor" if tumour else "normal", f"patient_{i // 4 * 2 + i % 2:03d}"))
    with open(folder / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("slide", "label", "patient"), *rows])
    return planted


def test_attention_mil_finds_the_few_tumour_tiles(tmp_path):
    from medfound.slides.mil import SlideTaskConfig, load_bags, run_slide_task, split_patients

    planted = write_bags(tmp_path / "bags")
    bags, _ = load_bags(str(tmp_path / "bags"))
    split = split_patients(bags, 0.2, 0.3, seed=0)
    patients = {}
    for b in bags:  # whole patients per split
        patients.setdefault(b.patient, set()).add(split[b.name])
    assert all(len(s) == 1 for s in patients.values())
    metrics = run_slide_task(SlideTaskConfig(data=str(tmp_path / "bags"),
                                             out_dir=str(tmp_path / "out"), epochs=10, n_boot=200,
                                             verbose=False))
    att, mean = metrics["models"]["attention"], metrics["models"]["mean"]
    assert att["auc"] >= 0.9 and att["n"] == metrics["splits"]["test"] >= 8
    # two tumour tiles in twenty are diluted by mean pooling; attention picks them out
    assert att["auc"] > mean["auc"]
    low, high = att["auc_ci95"]
    assert low <= att["auc"] <= high
    # the attention lands on the planted tiles of the tumour test slides
    import keras
    import medfound.slides.mil  # noqa: F401  (registers the attention layer)
    from medfound.slides.mil import _standardise, tile_scores

    model = keras.saving.load_model(str(tmp_path / "out" / "model_attention.keras"))
    norm = _standardise(bags, {b.name for b in bags if split[b.name] == "train"})
    mass = [tile_scores(model, b, norm)[sorted(planted[b.name])].sum()
            for b in bags if split[b.name] == "test" and b.label]
    assert np.mean(mass) > 0.3  # uniform attention would give them 2 / 20
    assert len(list((tmp_path / "out" / "heatmaps").glob("*.attention.png"))) == att["n"]
    with open(tmp_path / "out" / "predictions.csv") as f:
        assert len(list(csv.DictReader(f))) == 2 * att["n"]
    # the tile task on the same files: the planted tiles are the annotated ones
    tiles = run_slide_task(SlideTaskConfig(data=str(tmp_path / "bags"), task="camelyon16-tiles",
                                           out_dir=str(tmp_path / "tiles"), epochs=20,
                                           batch_size=64, learning_rate=1e-2, n_boot=100,
                                           verbose=False))
    assert tiles["test"]["positives"] == 2 * att["positives"] and tiles["test"]["auc"] > 0.95


def test_cli_finetune_on_embedded_slides_gives_auc_and_heatmaps(embedded, tmp_path, capsys):
    from medfound.cli.main import main

    config, _ = embedded
    out = tmp_path / "mil"
    rc = main(["finetune", "--task", "camelyon16-slides", "--data", config.out_dir,
               "--out", str(out), "--epochs", "5", "--n-boot", "100", "--quiet"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "test AUC (mean" in printed.out and "test AUC (attention" in printed.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["splits"]["test"] >= 2 and set(metrics["models"]) == {"mean", "attention"}
    assert metrics["module"] == NAME and metrics["mpp"] == 1.0
    for kind, m in metrics["models"].items():  # recomputed from the saved test scores
        assert m["auc"] == pytest.approx(auc_from_predictions(out / "predictions.csv", kind))
        assert m["n"] == metrics["splits"]["test"]
    heatmaps = sorted((out / "heatmaps").glob("*.png"))
    assert len(heatmaps) == 2 * metrics["splits"]["test"]
    from PIL import Image
    assert Image.open(heatmaps[0]).size[0] > 100

    tiles_out = tmp_path / "tiles"
    rc = main(["finetune", "--task", "camelyon16-tiles", "--data", config.out_dir,
               "--out", str(tiles_out), "--epochs", "30", "--n-boot", "100", "--quiet"])
    assert rc == 0
    tm = json.loads((tiles_out / "metrics.json").read_text())["test"]
    # a random tiny network need not separate the tiles: the separation is tested on the
    # synthetic bags; here the path from annotations to tile labels and AUC
    assert 0 < tm["positives"] < tm["n"]
    assert tm["auc"] == pytest.approx(auc_from_predictions(tiles_out / "predictions.csv", "tiles"))
    assert list((tiles_out / "heatmaps").glob("*.tiles.png"))
    rc = main(["finetune", "--task", "camelyon16-slides", "--data", str(tmp_path / "empty"),
               "--out", str(out), "--quiet"])
    assert rc == 2 and "no per-slide .h5" in capsys.readouterr().err


def test_slide_auc_on_slides_with_a_known_answer_beats_chance(module_dir, embedder, breakhis,
                                                              tmp_path):
    """Slides -> tissue -> tiles -> the module -> bags -> mean pooling: tumour slides (mosaics of
    malignant BreakHis crops) against normal ones (benign crops) must reach a slide AUC of 0.8 on
    8 held-out slides (chance, e.g. features or labels mixed up between slides, reaches it about
    one time in twenty)."""
    from medfound.slides.mil import SlideTaskConfig, run_slide_task

    slides = write_mosaic_set(tmp_path / "slides", breakhis, 10, 10, seed=0)
    emb = tmp_path / "emb"
    result = embed_slides(SlideEmbedConfig(module=str(module_dir), input=str(slides),
                                           out_dir=str(emb), tiling=TILING, image_size=SIZE,
                                           progress=False), embedder=embedder)
    assert not result.failures and len(result.done) == 20

    metrics = run_slide_task(SlideTaskConfig(
        data=str(emb), out_dir=str(tmp_path / "mil"), models=("mean",), epochs=20,
        val_fraction=0.1, test_fraction=0.4, n_boot=200, verbose=False))
    mean = metrics["models"]["mean"]
    assert metrics["splits"]["test"] == mean["n"] == 8 and mean["positives"] == 4
    assert mean["auc"] >= 0.8, mean
    low, high = mean["auc_ci95"]
    assert low <= mean["auc"] <= high
