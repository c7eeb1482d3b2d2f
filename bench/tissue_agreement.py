"""Tissue detection correctness: the committed detector's masks against the reference's, at full
level size. No timings (speed is ``bench/tissue_detect.py``'s, and needs an idle machine).

For every level of the real whole-slide images in ``DATA/wsi`` (CMU-1-Small-Region, one level,
and its 4-level pyramid) and the 4096 x 4096 level of ``bench/slide_embed.py``'s synthetic slide,
``tissue_mask`` (lookup tables, majority counts, exact median histograms) and
``reference_tissue_mask`` (PIL median and rank filters) run on the same array; each row records
the pixels, the differing pixels, both pairs of thresholds and the tissue fraction. One more row
puts black pixels on every other row and column of a real 1100 x 1100 crop: where a 1-in-4
sample of the pixels (the detector before it used every pixel) would see no valid pixel at all.

    python bench/tissue_agreement.py --data /work/shared/data --json bench/reports/tissue_agreement.json
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine_info, write_json  # noqa: E402

WSI = ("CMU-1-Small-Region.svs", "CMU-1-Small-Region-pyramid.svs")


def agreement(name: str, rgb) -> dict:
    """One row: the two detectors on ``rgb``, compared pixel for pixel."""
    from medfound.slides.tissue import reference_tissue_mask, tissue_mask

    fast, t_sat, t_od = tissue_mask(rgb)
    ref, r_sat, r_od = reference_tissue_mask(rgb)
    print(f"{name}: {int((fast != ref).sum())} differing pixels", flush=True)
    return {"image": name, "pixels": int(rgb.shape[0] * rgb.shape[1]),
            "differing_pixels": int((fast != ref).sum()),
            "same_thresholds": (t_sat, t_od) == (r_sat, r_od),
            "thresholds": [t_sat, t_od], "reference_thresholds": [r_sat, r_od],
            "tissue_fraction": float(ref.mean())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared"
                                              / "data"))
    parser.add_argument("--slide-side", type=int, default=4096,
                        help="side of the synthetic slide (0: leave it out)")
    parser.add_argument("--json", default="bench/results/tissue_agreement.json")
    args = parser.parse_args(argv)
    from medfound.slides.reader import open_slide

    rows = []
    for name in WSI:
        with open_slide(Path(args.data) / "wsi" / name) as slide:
            for level in range(len(slide.level_dimensions)):
                rows.append(agreement(f"{name} level {level}", slide.read_level(level)))
                if level == 0 and name == WSI[0]:
                    crop = slide.read_level(0)[:1100, :1100].copy()
                    crop[::2, ::2] = 0
                    rows.append(agreement(f"{name} 1100 x 1100 crop, black grid", crop))
    if args.slide_side:
        from bench.slide_embed import write_slide

        with tempfile.TemporaryDirectory(prefix="medfound-bench-tissue-") as work:
            path = write_slide(Path(work) / "bench_000.tif", Path(args.data) / "breakhis",
                               args.slide_side)
            with open_slide(path) as slide:
                level = slide.low_res_level(4096)
                rows.append(agreement(f"synthetic {args.slide_side} slide level {level}",
                                      slide.read_level(level)))
    command = "python bench/tissue_agreement.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    result = {"benchmark": "tissue_agreement", "machine": machine_info(),
              "baseline": "reference_tissue_mask (PIL median and rank filters) on the same array",
              "command": command.strip(), "rows": rows,
              "all_identical": all(r["differing_pixels"] == 0 and r["same_thresholds"]
                                   for r in rows)}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
