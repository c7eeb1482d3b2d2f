"""Tissue detection speed: the committed detector against its direct PIL formulation, one level.

One synthetic Camelyon-layout slide (as in ``bench/slide_embed.py``: a tiled JPEG pyramid of real
BreakHis images, 14 of 16 cells tissue) is read once at the level ``detect_tissue`` uses; then
``tissue_mask`` (lookup tables, majority counts for the median, separable boolean opening and
closing) and ``reference_tissue_mask`` (PIL median and rank filters on 8-bit images: the detector
as first merged) run on that same array in alternating repetitions. Both masks are compared pixel
by pixel: the fast path is meant to give the same mask, not a smoothed one.

    python bench/tissue_detect.py --data /work/shared/data --slide-side 4096 --repeats 5
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (alternating, base_parser, machine_info, median,  # noqa: E402
                          parse_with_defaults, report, speed_ratio, spread)
from bench.slide_embed import write_slide  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], "bench/results/tissue_detect.json")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared"
                                              / "data"))
    parser.add_argument("--slide-side", type=int, help="level-0 side of the slide in pixels")
    parser.add_argument("--max-side", type=int, help="detect_tissue's max_side (level choice)")
    args = parse_with_defaults(parser, argv, {"slide_side": 4096, "max_side": 4096},
                               {"slide_side": 512, "max_side": 4096})
    import numpy as np

    from medfound.slides.reader import open_slide
    from medfound.slides.tissue import reference_tissue_mask, tissue_mask

    with tempfile.TemporaryDirectory(prefix="medfound-bench-tissue-") as work:
        slide = write_slide(Path(work) / "bench_000.tif", Path(args.data) / "breakhis",
                            args.slide_side)
        with open_slide(slide) as s:
            level = s.low_res_level(args.max_side)
            rgb = s.read_level(level)
    fast, t_sat, t_od = tissue_mask(rgb)
    ref, r_sat, r_od = reference_tissue_mask(rgb)
    times = alternating({"fast": lambda: tissue_mask(rgb),
                         "reference": lambda: reference_tissue_mask(rgb)},
                        repeats=args.repeats, warmup=args.warmup)
    row = {"slide": f"{args.slide_side}x{args.slide_side}", "level": level,
           "level_pixels": int(rgb.shape[0] * rgb.shape[1]),
           "fast_s": median(times["fast"]), "reference_s": median(times["reference"]),
           "speedup": speed_ratio(times["fast"], times["reference"]),
           "tissue_fraction": float(fast.mean()), "differing_pixels": int((fast != ref).sum()),
           "same_thresholds": bool(np.isclose(t_sat, r_sat) and np.isclose(t_od, r_od)),
           "spread_fast": spread(times["fast"]), "spread_reference": spread(times["reference"])}
    command = "python bench/tissue_detect.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report([row], ["slide", "level_pixels", "fast_s", "reference_s", "speedup",
                   "differing_pixels", "same_thresholds", "tissue_fraction"], args.json,
           {"machine": machine_info(), "command": command.strip(), "rows": [row],
            "baseline": "reference_tissue_mask (PIL median and rank filters) on the same level",
            "seconds": times})
    return 0


if __name__ == "__main__":
    sys.exit(main())
