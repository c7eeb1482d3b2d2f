"""Inference speed: the exported module and native backbone against Keras ResNet50V2.

Candidates: the module, the native backbone folded (weight standardisation computed once),
unfolded, and folded under XLA (``jit_compile``). For each (architecture, image size, batch) the candidates are timed in alternating
repetitions in one process; speeds are reported as ratios against ``keras.applications.ResNet50V2``
(random weights, no top, average pooling) at the same size and batch, together with the fraction
of this machine's measured float32 matmul peak that each reaches. Weights are random (nothing is
downloaded); speed does not depend on them.

    python bench/inference.py --configs r50x1:224:1,r50x1:224:8 --repeats 5
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (alternating, base_parser, graph_flops, machine_info,  # noqa: E402
                          matmul_peak_gflops, per_second, report, speed_ratio, spread, write_json)

DEFAULT_CONFIGS = "r50x1:224:1,r50x1:224:8,r50x1:448:1,r152x2:224:1"
CANDIDATES = ("baseline_resnet50v2", "module", "native_folded", "native_unfolded",
              "native_folded_xla")


def parse_configs(text: str) -> list[tuple[str, int, int]]:
    """'arch:size:batch,...' -> [(arch, size, batch), ...]."""
    configs = []
    for item in text.split(","):
        arch, size, batch = item.strip().split(":")
        configs.append((arch, int(size), int(batch)))
    return configs


def export_random(arch: str, folder: Path, *, units=None, width=None) -> Path:
    """A random-weight backbone exported as a real module (custom name: not a REMEDIS model)."""
    from medfound.export.exporter import export_module
    from medfound.models.bit import build_backbone

    backbone = build_backbone(arch, units=units, width=width)
    weights = folder / f"{arch}.weights.h5"
    backbone.save_weights(str(weights))
    return export_module(weights, folder / f"bench-{arch}", name=f"bench-{arch}", arch=arch,
                         modality="cxr")


def _compiled(fn, shape, xla: bool = False):
    import tensorflow as tf

    return tf.function(fn, autograph=False, jit_compile=xla,
                       input_signature=[tf.TensorSpec(shape, tf.float32)])


def measure(arch: str, size: int, batch: int, *, repeats: int, warmup: int, peak: float,
            scratch: Path, units=None, width=None) -> dict:
    """One table row: images/s, ratios and fraction of matmul peak for each candidate."""
    import keras
    import numpy as np
    import tensorflow as tf

    from medfound.models.bit import build_backbone
    from medfound.models.inference import fold

    module_dir = export_random(arch, scratch, units=units, width=width)
    module = tf.saved_model.load(str(module_dir))
    native = build_backbone(arch, units=units, width=width)
    folded = fold(native)
    baseline = keras.applications.ResNet50V2(weights=None, include_top=False, pooling="avg",
                                             input_shape=(size, size, 3))
    shape = (batch, size, size, 3)
    fns = {
        "baseline_resnet50v2": _compiled(lambda x: baseline(x, training=False), shape),
        "module": _compiled(lambda x: tf.reduce_mean(module(x), axis=[1, 2]), shape),
        "native_folded": _compiled(lambda x: folded(x, training=False)["pre_logits"], shape),
        "native_unfolded": _compiled(lambda x: native(x, training=False)["pre_logits"], shape),
        # XLA fuses GroupNorm's elementwise passes; the baseline stays without it (Keras default).
        "native_folded_xla": _compiled(lambda x: folded(x, training=False)["pre_logits"], shape,
                                       xla=True),
    }
    images = tf.constant(np.random.RandomState(0).rand(*shape).astype(np.float32))
    times = alternating({k: (lambda f=f: f(images).numpy()) for k, f in fns.items()},
                        repeats=repeats, warmup=warmup)
    # FLOPs from the graphs already traced for timing (no extra trace).
    flops = {"baseline_resnet50v2": graph_flops(fns["baseline_resnet50v2"]),
             "native": graph_flops(fns["native_folded"])}
    row = {"arch": arch, "size": size, "batch": batch, "repeats": repeats,
           "gflop_per_image_bit": flops["native"] / batch / 1e9,
           "gflop_per_image_baseline": flops["baseline_resnet50v2"] / batch / 1e9}
    for name in CANDIDATES:
        ips = per_second(times[name], batch)
        model_flops = flops["baseline_resnet50v2" if name.startswith("baseline") else "native"]
        row[f"{name}_img_s"] = ips
        row[f"{name}_peak_fraction"] = model_flops / batch * ips / (peak * 1e9)
        row[f"{name}_spread"] = spread(times[name])
        if name != "baseline_resnet50v2":
            row[f"{name}_vs_baseline"] = speed_ratio(times[name], times["baseline_resnet50v2"])
    row["folding_speedup"] = speed_ratio(times["native_folded"], times["native_unfolded"])
    row["seconds"] = {k: v for k, v in times.items()}
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n")[0], "bench/results/inference.json")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help="comma-separated arch:size:batch (default: %(default)s)")
    parser.add_argument("--units", help="override units per block, e.g. 1,1,1,1 (smoke tests)")
    parser.add_argument("--width", type=float, help="override the width factor (smoke tests)")
    parser.add_argument("--peak-size", type=int, default=2048, help="matmul size for the peak")
    args = parser.parse_args(argv)
    units = tuple(int(u) for u in args.units.split(",")) if args.units else None
    peak = matmul_peak_gflops(args.peak_size, max(args.repeats, 3))
    rows: list[dict] = []
    result = {"benchmark": "inference", "machine": machine_info(), "matmul_peak_gflops": peak,
              "command": " ".join(["python bench/inference.py", *(argv if argv is not None
                                                                   else sys.argv[1:])]),
              "baseline": "keras.applications.ResNet50V2(weights=None, include_top=False, "
                          "pooling='avg') at the same size and batch",
              "rows": rows}
    with tempfile.TemporaryDirectory() as scratch:
        for arch, size, batch in parse_configs(args.configs):
            folder = Path(scratch) / f"{arch}-{size}-{batch}"
            folder.mkdir()
            rows.append(measure(arch, size, batch, repeats=args.repeats, warmup=args.warmup,
                                peak=peak, scratch=folder, units=units, width=args.width))
            write_json(args.json, result)  # partial results survive an interrupted run
            print(f"done {arch} {size} batch {batch}", flush=True)
    print(f"matmul peak: {peak:.1f} GFLOP/s ({args.peak_size}x{args.peak_size} float32)")
    report(rows, ["arch", "size", "batch", "baseline_resnet50v2_img_s",
                              "module_img_s", "module_vs_baseline", "native_folded_vs_baseline",
                              "native_unfolded_vs_baseline", "native_folded_xla_vs_baseline",
                              "folding_speedup",
                              "module_peak_fraction", "baseline_resnet50v2_peak_fraction"], args.json, result)
    return result


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
