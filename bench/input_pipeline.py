"""Input pipeline speed of the pretraining presets on real images, and what bounds a step here.

1. Views per second of the real pretraining pipeline (decode, MICLe/SimCLR pairing, two
   augmented views per image, batching): ``cxr`` at 448 on NIH chest X-rays and ``path`` at 224
   on BreakHis histology, with one tf.data thread (the per-core figure) and with all cores.
2. A SimCLR step fed by that pipeline against the same step on cached tensors, in alternating
   repetitions: a ratio near 1 means the model bounds the step, well below 1 the pipeline does.

    python bench/input_pipeline.py --data /work/shared/data --repeats 5
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (base_parser, machine_info,  # noqa: E402
                          per_second, report, speed_ratio, spread, write_json)

# preset -> (image folder under the data folder, image size)
PRESET_DATA = {"cxr": ("nih-cxr14-sample/images", 448), "path": ("breakhis", 224)}


def pipeline(folder: Path, preset: str, size: int, batch: int, threads: int | None):
    """The package's own pretraining view pipeline over ``folder`` (endless batches)."""
    import tensorflow as tf

    from medfound.pretrain.config import PretrainConfig
    from medfound.pretrain.pipeline import open_source, view_dataset

    config = PretrainConfig(data=str(folder), out_dir="unused", modality=preset,
                            image_size=size, batch_size=batch)
    ds = view_dataset(open_source(config), config, per_replica_batch=batch)
    if threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
        ds = ds.with_options(options)
    return ds, config


def alternating_fresh(starts: dict, pull, count: int, repeats: int) -> dict[str, list[float]]:
    """Alternating repetitions where each starts its candidate afresh (``starts[name]()``),
    makes one untimed ``pull`` and times ``count`` more."""
    times: dict[str, list[float]] = {name: [] for name in starts}
    names = list(starts)
    for rep in range(repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            state = starts[name]()
            pull(state)
            start = time.perf_counter()
            for _ in range(count):
                pull(state)
            times[name].append(time.perf_counter() - start)
            del state
    return times


def measure(folder: Path, preset: str, size: int, *, batch: int, batches_per_rep: int,
            step_arch: str, step_size: int | None, step_batch: int, repeats: int,
            warmup: int, units=None, width=None) -> dict:
    """One row: pipeline views/s (1 thread, all cores) and the pipeline-fed vs cached step."""
    import tensorflow as tf

    from medfound.pretrain.model import build_networks, build_optimizer
    from medfound.pretrain.trainer import make_train_step

    cores = os.cpu_count() or 1
    datasets = {name: pipeline(folder, preset, size, batch, threads)[0]
                for name, threads in (("one_thread", 1), ("all_cores", None))}
    # Each repetition starts a fresh iterator and times batches after its first: an idle live
    # iterator would fill its prefetch buffer while the other candidate runs and look free.
    times = alternating_fresh({k: (lambda ds=ds: iter(ds)) for k, ds in datasets.items()},
                              lambda it: next(it)["view_a"].shape, batches_per_rep, repeats)
    views = 2 * batch * batches_per_rep
    row = {"preset": preset, "size": size, "batch": batch, "repeats": repeats, "cores": cores,
           "batches_per_rep": batches_per_rep,
           "views_s_one_thread": per_second(times["one_thread"], views),
           "views_s_all_cores": per_second(times["all_cores"], views),
           "views_s_per_core": per_second(times["all_cores"], views) / cores,
           "all_cores_vs_one_thread": speed_ratio(times["all_cores"], times["one_thread"]),
           "pipeline_spread": spread(times["all_cores"])}

    # The step: the same SimCLR step fed by the real pipeline or by one cached batch.
    step_size = step_size or size
    ds, config = pipeline(folder, preset, step_size, step_batch, None)
    config.arch, config.units, config.width = step_arch, units, width
    strategy = tf.distribute.get_strategy()
    nets, _ = build_networks(config)
    step = make_train_step(strategy, nets, build_optimizer(config), config)
    cached = next(iter(ds))
    for _ in range(max(warmup, 1)):
        float(step(cached)["loss"])  # trace once, outside the timings
    step_times = alternating_fresh(
        {"cached": lambda: None, "pipeline": lambda: iter(ds)},
        lambda it: float(step(cached if it is None else next(it))["loss"]),
        batches_per_rep, repeats)
    model_views_s = per_second(step_times["cached"], 2 * step_batch * batches_per_rep)
    row.update({
        "step_arch": step_arch, "step_size": step_size, "step_batch": step_batch,
        "step_views_s_cached": model_views_s,
        "step_views_s_pipeline": per_second(step_times["pipeline"],
                                            2 * step_batch * batches_per_rep),
        "pipeline_fed_vs_cached": speed_ratio(step_times["pipeline"], step_times["cached"]),
        "pipeline_capacity_vs_model": row["views_s_all_cores"] / model_views_s
        if step_size == size else None,
        "step_seconds": step_times, "pipeline_seconds": times})
    ratio = row["pipeline_fed_vs_cached"]
    row["bound"] = "model" if ratio >= 0.9 else "pipeline"
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n")[0], "bench/results/input_pipeline.json")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared"
                                              / "data"),
                        help="folder holding nih-cxr14-sample/ and breakhis/ (default: "
                             "%(default)s)")
    parser.add_argument("--presets", default="cxr,path", help="comma-separated presets")
    parser.add_argument("--cxr-size", type=int, default=PRESET_DATA["cxr"][1])
    parser.add_argument("--path-size", type=int, default=PRESET_DATA["path"][1])
    parser.add_argument("--batch", type=int, default=16, help="pipeline batch (images)")
    parser.add_argument("--batches-per-rep", type=int, default=4)
    parser.add_argument("--step-arch", default="r50x1")
    parser.add_argument("--step-size", type=int, help="step image size (default: the preset's)")
    parser.add_argument("--step-batch", type=int, default=4)
    parser.add_argument("--units", help="override units per block (smoke tests)")
    parser.add_argument("--width", type=float, help="override the width factor (smoke tests)")
    args = parser.parse_args(argv)
    sizes = {"cxr": args.cxr_size, "path": args.path_size}
    units = tuple(int(u) for u in args.units.split(",")) if args.units else None
    rows: list[dict] = []
    result = {"benchmark": "input_pipeline", "machine": machine_info(),
              "command": " ".join(["python bench/input_pipeline.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "baseline": "the same SimCLR step on one cached batch of views",
              "rows": rows}
    for preset in args.presets.split(","):
        sub, _ = PRESET_DATA[preset]
        folder = Path(args.data) / sub
        if not folder.is_dir():
            raise SystemExit(f"{folder}: real images for the {preset} preset not found; pass "
                             "--data (the folder of nih-cxr14-sample/ and breakhis/)")
        rows.append(measure(folder, preset, sizes[preset], batch=args.batch,
                            batches_per_rep=args.batches_per_rep, step_arch=args.step_arch,
                            step_size=args.step_size, step_batch=args.step_batch,
                            repeats=args.repeats, warmup=args.warmup, units=units,
                            width=args.width))
        write_json(args.json, result)  # partial results survive an interrupted run
        print(f"done {preset}", flush=True)
    report(rows, ["preset", "size", "views_s_one_thread", "views_s_all_cores",
                              "views_s_per_core", "step_arch", "step_size",
                              "step_views_s_cached", "pipeline_fed_vs_cached",
                              "pipeline_capacity_vs_model", "bound"], args.json, result)
    return result


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
