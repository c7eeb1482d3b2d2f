"""How inference cost grows: time per image against image size and batch size, module vs ResNet50V2.

The exported module of one architecture (random weights, exported once; the module takes any
size) and ``keras.applications.ResNet50V2`` (no top, average pooling) at the same size and batch
are timed in alternating repetitions in one process, for every (size, batch). Each row gives
milliseconds per image of both, their speed ratio, and the module's time per image divided by
its time at the smallest size and batch 1 (how cost grows). A PNG plots time per image and the
ratio against image size, one line per batch.

    python bench/scaling.py --sizes 96,224,448 --batches 1,8,32 --repeats 5
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (alternating, base_parser, machine_info, median,  # noqa: E402
                          parse_with_defaults,
                          report, speed_ratio, spread, write_json)
from bench.inference import _compiled, export_random  # noqa: E402


DEFAULTS = {"arch": "r50x1", "sizes": "96,224,448", "batches": "1,8,32"}
TINY = {"arch": "tiny", "sizes": "32,64", "batches": "1,2"}


def parse_ints(text: str) -> list[int]:
    """'96,224,448' -> [96, 224, 448]."""
    return [int(item) for item in text.split(",") if item.strip()]


def measure(module, baseline, size: int, batch: int, *, repeats: int, warmup: int) -> dict:
    """One row: ms per image of the module and of ResNet50V2 at (size, batch), and their ratio."""
    import numpy as np
    import tensorflow as tf

    shape = (batch, size, size, 3)
    fns = {"baseline_resnet50v2": _compiled(lambda x: baseline(x, training=False), shape),
           "module": _compiled(lambda x: tf.reduce_mean(module(x), axis=[1, 2]), shape)}
    images = tf.constant(np.random.RandomState(0).rand(*shape).astype(np.float32))
    times = alternating({k: (lambda f=f: f(images).numpy()) for k, f in fns.items()},
                        repeats=repeats, warmup=warmup)
    row = {"size": size, "batch": batch, "repeats": repeats,
           "module_vs_baseline": speed_ratio(times["module"], times["baseline_resnet50v2"]),
           "seconds": times}
    for name in fns:
        row[f"{name}_ms_per_image"] = 1000.0 * median(times[name]) / batch
        row[f"{name}_spread"] = spread(times[name])
    return row


def add_growth(rows: list[dict]) -> None:
    """Adds each row's module and baseline time per image relative to the first row's
    (smallest size, batch 1 when measured) and per megapixel: how cost grows with size."""
    if not rows:
        return
    ref = min(rows, key=lambda r: (r["size"], r["batch"]))
    for row in rows:
        for name in ("module", "baseline_resnet50v2"):
            per_image = row[f"{name}_ms_per_image"]
            row[f"{name}_vs_smallest"] = per_image / ref[f"{name}_ms_per_image"]
            row[f"{name}_ms_per_mpixel"] = per_image / (row["size"] ** 2 / 1e6)
    for row in rows:
        row["reference"] = f"{ref['size']} px, batch {ref['batch']}"


def plot(rows: list[dict], arch: str, path: Path) -> Path:
    """Time per image (log-log) and module / ResNet50V2 speed against image size, per batch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    from medfound.utils.files import atomic_path

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax_time, ax_ratio = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i, batch in enumerate(sorted({r["batch"] for r in rows})):
        sub = sorted((r for r in rows if r["batch"] == batch), key=lambda r: r["size"])
        sizes = [r["size"] for r in sub]
        color = f"C{i}"
        ax_time.plot(sizes, [r["module_ms_per_image"] for r in sub], "o-", color=color,
                     label=f"{arch} module, batch {batch}")
        ax_time.plot(sizes, [r["baseline_resnet50v2_ms_per_image"] for r in sub], "s--",
                     color=color, alpha=0.6, label=f"ResNet50V2, batch {batch}")
        ax_ratio.plot(sizes, [r["module_vs_baseline"] for r in sub], "o-", color=color,
                      label=f"batch {batch}")
    ax_time.set_xscale("log")
    ax_time.set_yscale("log")
    ax_time.set_xlabel("image size (px)")
    ax_time.set_ylabel("ms per image")
    ax_time.legend(fontsize=7)
    ax_ratio.axhline(1.0, color="grey", ls=":")
    ax_ratio.set_xscale("log")
    ax_ratio.set_xlabel("image size (px)")
    ax_ratio.set_ylabel(f"{arch} module speed / ResNet50V2 speed")
    ax_ratio.legend(fontsize=7)
    sizes = sorted({r["size"] for r in rows})
    for ax in (ax_time, ax_ratio):
        ax.xaxis.set_minor_locator(NullLocator())  # only the measured sizes are labelled
        ax.set_xticks(sizes, [str(s) for s in sizes])
    fig.suptitle("inference cost against image size and batch (CPU, alternating repetitions)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def main(argv: list[str] | None = None) -> dict:
    import keras
    import tensorflow as tf

    parser = base_parser(__doc__.split("\n")[0], "bench/results/scaling.json")
    parser.add_argument("--arch", help="architecture of the exported module (default "
                                       f"{DEFAULTS['arch']})")
    parser.add_argument("--sizes", help=f"comma-separated image sizes (default {DEFAULTS['sizes']})")
    parser.add_argument("--batches", help="comma-separated batch sizes (default "
                                          f"{DEFAULTS['batches']})")
    parser.add_argument("--plot", default="bench/results/scaling.png", help="where the PNG goes")
    args = parse_with_defaults(parser, argv, DEFAULTS, TINY)
    rows: list[dict] = []
    result = {"benchmark": "scaling", "machine": machine_info(), "arch": args.arch,
              "command": " ".join(["python bench/scaling.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "baseline": "keras.applications.ResNet50V2(weights=None, include_top=False, "
                          "pooling='avg') at the same size and batch",
              "plot": args.plot, "rows": rows}
    with tempfile.TemporaryDirectory() as scratch:
        module = tf.saved_model.load(str(export_random(args.arch, Path(scratch))))
        # One baseline for every size: each (size, batch) is traced with static shapes anyway.
        baseline = keras.applications.ResNet50V2(weights=None, include_top=False, pooling="avg",
                                                 input_shape=(None, None, 3))
        for size in parse_ints(args.sizes):
            for batch in parse_ints(args.batches):
                rows.append(measure(module, baseline, size, batch, repeats=args.repeats,
                                    warmup=args.warmup))
                add_growth(rows)
                write_json(args.json, result)  # partial results survive an interrupted run
                print(f"done {size} px batch {batch}", flush=True)
    plot(rows, args.arch, Path(args.plot))
    print(f"wrote {args.plot}")
    report(rows, ["size", "batch", "baseline_resnet50v2_ms_per_image", "module_ms_per_image",
                  "module_vs_baseline", "module_vs_smallest", "baseline_resnet50v2_vs_smallest",
                  "module_ms_per_mpixel", "module_spread", "baseline_resnet50v2_spread"],
           args.json, result)
    return result


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
