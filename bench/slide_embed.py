"""Whole-slide embedding speed: tiles/s of ``embed_slides`` against the module on cached tensors.

One synthetic Camelyon-layout slide (a tiled JPEG pyramid at 0.25 um/px, written with tifffile
from the real BreakHis images of the data folder, tissue over most of it) is embedded end to end
(open, tissue detection, tile planning, tile reading and resizing on the reader thread, the
module, the parts and the final HDF5) in alternating repetitions with the same number of tiles
fed to the same module from one cached tensor batch, with tile reading alone, and with the
per-slide setup alone (open, tissue detection, thumbnail and mask PNG, tile planning). A ratio
``slide / cached`` near 1 means the module bounds slide embedding; well below 1, the reader or
tissue detection does. ``loop_vs_cached`` takes the fixed setup out: on a real slide (tens of
thousands of tiles against one setup) that is the figure that counts.

    python bench/slide_embed.py --data /work/shared/data --arch r50x1 --repeats 5
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (alternating, base_parser, machine_info,  # noqa: E402
                          parse_with_defaults, per_second, report, speed_ratio, spread)


def write_slide(path: Path, breakhis: Path, side: int) -> Path:
    """A square tiled JPEG pyramid (downsample 2 per level) of BreakHis images on glass."""
    import numpy as np
    import tifffile
    from PIL import Image

    images = sorted(breakhis.glob("*.png"))
    canvas = np.full((side, side, 3), 240, np.uint8)
    cell = side // 4
    for i in range(16):
        if i in (0, 15):
            continue  # two corners of glass
        y, x = divmod(i, 4)
        im = Image.open(images[i % len(images)]).convert("RGB").resize((cell, cell))
        canvas[y * cell:(y + 1) * cell, x * cell:(x + 1) * cell] = np.asarray(im)
    pages, level = [canvas], canvas
    while max(level.shape[:2]) > 512:
        level = np.asarray(Image.fromarray(level).resize((level.shape[1] // 2,
                                                           level.shape[0] // 2)))
        pages.append(level)
    with tifffile.TiffWriter(str(path), bigtiff=True) as tif:
        for i, page in enumerate(pages):
            res = 1e4 / (0.25 * 2 ** i)
            tif.write(page, tile=(256, 256), photometric="rgb", compression="jpeg",
                      resolution=(res, res), resolutionunit="CENTIMETER",
                      subfiletype=1 if i else 0, metadata=None)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], "bench/results/slide_embed.json")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared"
                                              / "data"))
    parser.add_argument("--arch")
    parser.add_argument("--size", type=int, help="tile and module input side in pixels")
    parser.add_argument("--slide-side", type=int, help="level-0 side of the slide in pixels")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--module", help="an existing module folder (default: a random --arch)")
    args = parse_with_defaults(parser, argv, {"arch": "r50x1", "size": 224, "slide_side": 8192,
                                              "batch": 32},
                               {"arch": "tiny", "size": 32, "slide_side": 2048, "batch": 8})
    import numpy as np

    from medfound.embed import ModuleEmbedder, prepare_image
    from medfound.slides.embed import SlideEmbedConfig, embed_slides
    from medfound.slides.reader import open_slide
    from medfound.slides.synthetic import write_random_module
    from medfound.slides.tiling import TilingConfig, plan_tiles, read_tile
    from medfound.slides.tissue import detect_tissue, overlay_png

    work = Path(tempfile.mkdtemp(prefix="medfound-bench-slides-"))
    try:
        slides = work / "slides"
        slides.mkdir()
        slide = write_slide(slides / "bench_000.tif", Path(args.data) / "breakhis",
                            args.slide_side)
        module = Path(args.module) if args.module else write_random_module(
            work / "module", arch=args.arch, image_size=args.size)
        embedder = ModuleEmbedder(str(module))
        # 0.5 um/px tiles of a 0.25 um/px slide: read from level 1, as Camelyon users do at 20x
        tiling = TilingConfig(mpp=0.5, tile_size=args.size, min_tissue=0.5)
        with open_slide(slide) as s:
            grid = plan_tiles(s, detect_tissue(s), tiling)
        n = len(grid.coords)
        rng = np.random.default_rng(0)
        cached = prepare_image(rng.uniform(size=(args.batch, args.size, args.size, 3))
                               .astype(np.float32), args.size)
        runs = iter(range(10 ** 6))

        def slide_run():
            out = work / f"out{next(runs)}"
            config = SlideEmbedConfig(module=str(module), input=str(slides), out_dir=str(out),
                                      tiling=tiling, image_size=args.size,
                                      batch_size=args.batch, progress=False)
            result = embed_slides(config, embedder=embedder)
            assert result.tiles == n and not result.failures, result.summary()
            shutil.rmtree(out)

        def cached_run():
            for _ in range(-(-n // args.batch)):
                np.asarray(embedder(cached))

        def setup_run():  # the per-slide fixed work embed_slides does before its first tile
            with open_slide(slide) as s:
                mask = detect_tissue(s)
                overlay_png(s.thumbnail(1024), mask.mask, work / "tissue.png")
                plan_tiles(s, mask, tiling)

        def reader_run():
            with open_slide(slide) as s:
                for x, y in grid.coords:
                    read_tile(s, grid, int(x), int(y))

        times = alternating({"slide": slide_run, "cached": cached_run, "reader": reader_run,
                             "setup": setup_run},
                            repeats=args.repeats, warmup=args.warmup)
        cached_tiles = -(-n // args.batch) * args.batch
        row = {"arch": args.arch if not args.module else str(module), "size": args.size,
               "slide": f"{args.slide_side}x{args.slide_side}", "tiles": n,
               "batch": args.batch, "level": grid.level,
               "slide_tiles_per_s": per_second(times["slide"], n),
               "cached_images_per_s": per_second(times["cached"], cached_tiles),
               "reader_tiles_per_s": per_second(times["reader"], n),
               "slide_vs_cached": speed_ratio(times["slide"], times["cached"]) * n / cached_tiles,
               "reader_vs_cached": speed_ratio(times["reader"], times["cached"]) * n
               / cached_tiles,
               "setup_seconds": float(np.median(times["setup"])),
               # the tile loop alone (slide minus its fixed setup) against the cached module:
               # what a Camelyon slide of tens of thousands of tiles sees
               "loop_vs_cached": float(np.median([
                   (c / cached_tiles) / ((t - u) / n) for t, c, u in
                   zip(times["slide"], times["cached"], times["setup"])])),
               "spread_slide": spread(times["slide"]), "spread_cached": spread(times["cached"])}
        command = "python bench/slide_embed.py " + " ".join(argv if argv is not None
                                                            else sys.argv[1:])
        report([row], ["arch", "size", "slide", "tiles", "batch", "slide_tiles_per_s",
                       "cached_images_per_s", "reader_tiles_per_s", "setup_seconds",
                       "slide_vs_cached", "loop_vs_cached", "reader_vs_cached"], args.json,
               {"machine": machine_info(), "command": command.strip(),
                "baseline": "the same module on one cached tensor batch, same tile count",
                "rows": [row], "seconds": times})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
