"""``medfound embed`` images/s on real image files against the same module on cached tensors.

For each preset (cxr: NIH chest X-ray PNGs at 448 px; path: BreakHis patches at 224 px, copied
to as many files as asked) one module is loaded once, then, in alternating repetitions:

- ``embed``: ``medfound.embed.embed`` end to end on the files (listing, decoding, resizing, the
  module, parts, the final ``.npz``), with the module already loaded;
- ``cached``: the same module on one cached tensor batch, as many batches as ``embed`` makes;
- ``pipeline``: the reading pipeline alone (``medfound.embed._batches``: decode + resize).

``embed / cached`` >= 0.9 means decoding and writing are hidden behind the module. ``--profile``
adds a cProfile of one ``embed`` call (top functions by own time).

    python bench/embed_speed.py --data /work/shared/data --presets cxr,path --images 64
"""
from __future__ import annotations

import cProfile
import io
import pstats
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (alternating, base_parser, machine_info, parse_with_defaults,  # noqa: E402
                          per_second, report, speed_ratio, spread)

PRESETS = {"cxr": ("nih-cxr14-sample/images", 448), "path": ("breakhis", 224)}
DEFAULTS = {"arch": "r50x1", "images": 64, "batch": 16, "presets": "cxr,path"}
TINY = {"arch": "tiny", "images": 8, "batch": 4, "presets": "path"}


def image_files(data: Path, preset: str, count: int, folder: Path) -> Path:
    """A folder of ``count`` real image files of the preset (copies when the source has fewer)."""
    source = sorted((data / PRESETS[preset][0]).glob("*.png"))
    if not source:
        raise SystemExit(f"{data / PRESETS[preset][0]}: no PNG files")
    folder.mkdir(parents=True)
    for i in range(count):
        shutil.copyfile(source[i % len(source)], folder / f"{i:05d}.png")
    return folder


def export_module(root: Path, arch: str) -> Path:
    """A random-weight ``arch`` exported as a ``.keras`` module (quick to write; embed folds it
    into the same native backbone a SavedModel module gives)."""
    from medfound.export.exporter import export_module as export
    from medfound.models.bit import build_backbone

    weights = root / f"{arch}.weights.h5"
    build_backbone(arch).save_weights(str(weights))
    return export(weights, root / f"bench-{arch}.keras", name=f"bench-{arch}", arch=arch,
                  modality="cxr", fmt="keras")


def measure(preset: str, files: Path, embedder, *, count: int, batch: int, repeats: int,
            warmup: int, scratch: Path, profile: bool) -> dict:
    import os

    import numpy as np

    from medfound.embed import EmbedConfig, _batches, embed, list_inputs

    size = PRESETS[preset][1]
    out = scratch / f"{preset}.npz"
    config = EmbedConfig(module="unused", input=str(files), out=str(out), image_size=size,
                         batch_size=batch, overwrite=True, progress=False)
    cached = np.random.RandomState(0).rand(batch, size, size, 3).astype(np.float32)
    paths = list_inputs(files)
    batches = -(-count // batch)

    def run_embed():
        result = embed(config, embedder=embedder)
        assert result.num_embedded == count, result.summary()

    def run_cached():
        for _ in range(batches):
            embedder(cached).numpy()

    def run_pipeline():
        for _ in _batches(paths, 0, count, size, batch, lambda *a: None):
            pass

    load = os.getloadavg()
    times = alternating({"embed": run_embed, "cached": run_cached, "pipeline": run_pipeline},
                        repeats=repeats, warmup=warmup)
    row = {"preset": preset, "size": size, "batch": batch, "images": count,
           "loadavg_before": list(load), "loadavg_after": list(os.getloadavg()),
           "embed_img_s": per_second(times["embed"], count),
           "cached_img_s": per_second(times["cached"], batches * batch),
           "pipeline_img_s": per_second(times["pipeline"], count),
           "embed_vs_cached": speed_ratio(times["embed"], times["cached"]) * count
           / (batches * batch),
           "pipeline_vs_cached": speed_ratio(times["pipeline"], times["cached"]) * count
           / (batches * batch),
           "spread_embed": spread(times["embed"]), "spread_cached": spread(times["cached"]),
           "seconds": times}
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(run_embed)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
        row["profile_tottime"] = text.getvalue()
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n")[0], "bench/results/embed_speed.json")
    parser.add_argument("--data", default="../shared/data", help="the shared data folder")
    parser.add_argument("--arch", help=f"default {DEFAULTS['arch']}")
    parser.add_argument("--images", type=int, help=f"files per preset (default {DEFAULTS['images']})")
    parser.add_argument("--batch", type=int, help=f"default {DEFAULTS['batch']}")
    parser.add_argument("--presets", help=f"default {DEFAULTS['presets']}")
    parser.add_argument("--profile", action="store_true", help="cProfile one embed call")
    args = parse_with_defaults(parser, argv, DEFAULTS, TINY)
    from medfound.embed import ModuleEmbedder

    rows: list[dict] = []
    result = {"benchmark": "embed_speed", "machine": machine_info(),
              "command": " ".join(["python bench/embed_speed.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "baseline": "the same loaded module on one cached tensor batch, as many batches",
              "rows": rows}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        embedder = ModuleEmbedder(export_module(scratch, args.arch))
        for preset in args.presets.split(","):
            files = image_files(Path(args.data), preset, args.images, scratch / preset)
            rows.append(measure(preset, files, embedder, count=args.images, batch=args.batch,
                                repeats=args.repeats, warmup=args.warmup, scratch=scratch,
                                profile=args.profile))
            print(f"done {preset}", flush=True)
    report(rows, ["preset", "size", "batch", "images", "embed_img_s", "cached_img_s",
                  "pipeline_img_s", "embed_vs_cached", "pipeline_vs_cached"], args.json, result)
    return result


if __name__ == "__main__":
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
