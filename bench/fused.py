"""GroupNorm and weight standardisation fused: XLA and one-pass GroupNorm against the defaults.

One process, every candidate timed in alternating repetitions (``bench.common.alternating``) on
the same cached batch, random weights (nothing downloaded). Per (size, batch) row:

- ``module`` / ``module_xla`` / ``module_one_pass`` / ``module_xla_one_pass``: the exported r50x1
  SavedModel (``tf.saved_model.load``, block4 map averaged) as ``medfound export`` writes it by
  default, with ``--xla``, with ``--group-norm-statistics one_pass``, and with both;
- ``native_eager`` / ``native_graph`` / ``native_xla`` (+ ``_one_pass``): the folded native
  backbone (``models.inference.fold``, what ``medfound embed`` runs) called eagerly, in a
  ``tf.function``, and in a ``tf.function(jit_compile=True)``;
- ``resnet50v2``: ``keras.applications.ResNet50V2(weights=None, include_top=False,
  pooling="avg")`` in a ``tf.function`` (the per-FLOP baseline: Keras' default, no XLA).

Ratios are medians of per-repetition ratios against ``resnet50v2``: ``X_vs_resnet50v2`` (speed)
and ``X_per_flop_vs_resnet50v2`` (speed x BiT FLOPs / ResNet50V2 FLOPs, both counted from the
graphs; target >= 0.85 at 224 px batch 16), plus ``X_vs_module`` / ``X_vs_native_graph``.
``first_call_s`` is each candidate's first call (XLA compiles there; not in the timings).
Training rows: the SimCLR step (``bench.pretrain_step.simclr_step``, forward + backward + LARS)
with ``PretrainConfig.xla`` off and on. Threads are pinned (``--threads``) and read back; the
1-minute load average is recorded before and after every row (``under_load`` above
``--max-load``: retake it on an idle machine).

    python bench/fused.py --configs 224:16,224:1 --train-configs tiny:32:16,r50x1:64:8 --repeats 5
    python bench/fused.py --tiny   # smoke test: tiny arch, 32 px
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (alternating, base_parser, format_table, graph_flops,  # noqa: E402
                          machine_info, parse_with_defaults, per_second, report, speed_ratio,
                          spread, write_json)

MODULE_FORMS = {"module": {}, "module_xla": {"jit_compile": True},
                "module_one_pass": {"group_norm_statistics": "one_pass"},
                "module_xla_one_pass": {"jit_compile": True, "group_norm_statistics": "one_pass"}}
NATIVE_FORMS = {f"native_{mode}{suffix}": (mode, statistics)
                for suffix, statistics in (("", "two_pass"), ("_one_pass", "one_pass"))
                for mode in ("eager", "graph", "xla")}
KINDS = ("resnet50v2", *MODULE_FORMS, *NATIVE_FORMS)
TARGET_PER_FLOP = 0.85


def export_forms(arch: str, folder: Path, kinds: list[str]) -> dict[str, Path]:
    """One random-weight backbone exported once per module form in ``kinds`` (custom name)."""
    from medfound.export.exporter import export_module
    from medfound.models.bit import build_backbone

    weights = folder / f"{arch}.weights.h5"
    build_backbone(arch).save_weights(str(weights))
    return {kind: export_module(weights, folder / kind, name=f"bench-{arch}", arch=arch,
                                modality="cxr", **options)
            for kind, options in MODULE_FORMS.items() if kind in kinds}


def candidates(arch: str, shape: tuple, kinds: list[str], modules: dict[str, Path]) -> dict:
    """{kind: a tf.function or eager callable of the images} for every kind asked for."""
    import keras
    import tensorflow as tf

    from medfound.models.bit import build_backbone
    from medfound.models.inference import fold

    def compiled(body, xla: bool = False):
        return tf.function(body, autograph=False, jit_compile=xla,
                           input_signature=[tf.TensorSpec(shape, tf.float32)])

    fns = {}
    if "resnet50v2" in kinds:
        net = keras.applications.ResNet50V2(weights=None, include_top=False, pooling="avg",
                                            input_shape=shape[1:])
        fns["resnet50v2"] = compiled(lambda x: net(x, training=False))
    for kind, path in modules.items():
        module = tf.saved_model.load(str(path))
        fns[kind] = compiled(lambda x, m=module: tf.reduce_mean(m(x), axis=[1, 2]))
    native = build_backbone(arch) if any(k in NATIVE_FORMS for k in kinds) else None
    for kind, (mode, statistics) in NATIVE_FORMS.items():
        if kind not in kinds:
            continue
        folded = fold(native, statistics)
        body = (lambda x, f=folded: f(x, training=False)["embedding"])
        fns[kind] = body if mode == "eager" else compiled(body, xla=mode == "xla")
    return fns


def threads_now() -> dict:
    """The thread counts TensorFlow holds, read back from it."""
    import tensorflow as tf

    return {"tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}


def measure(arch: str, size: int, batch: int, kinds: list[str], *, repeats: int, warmup: int,
            scratch: Path, max_load: float) -> dict:
    """One inference row: images/s, ratios against ResNet50V2 (speed and per FLOP)."""
    import time

    import numpy as np
    import tensorflow as tf

    load_before = os.getloadavg()
    shape = (batch, size, size, 3)
    fns = candidates(arch, shape, kinds, export_forms(arch, scratch, kinds))
    images = tf.constant(np.random.RandomState(0).rand(*shape).astype(np.float32))
    calls = {k: (lambda f=f: np.asarray(f(images))) for k, f in fns.items()}
    first = {}
    for kind, call in calls.items():
        start = time.perf_counter()
        call()
        first[kind] = time.perf_counter() - start
    times = alternating(calls, repeats=repeats, warmup=warmup)
    graph_kind = next((k for k in kinds if k.startswith("native_graph")), None)
    bit_fn = fns[graph_kind] if graph_kind else candidates(arch, shape, ["native_graph"], {})[
        "native_graph"]
    flops = {"bit": graph_flops(bit_fn)}
    if "resnet50v2" in fns:
        flops["resnet50v2"] = graph_flops(fns["resnet50v2"])
    row = {"arch": arch, "size": size, "batch": batch, "repeats": repeats,
           "gflop_per_image_bit": flops["bit"] / batch / 1e9, "first_call_s": first,
           "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
           "threads": threads_now()}
    row["under_load"] = max(row["loadavg_before"][0], row["loadavg_after"][0]) > max_load
    if "resnet50v2" in flops:
        row["gflop_per_image_resnet50v2"] = flops["resnet50v2"] / batch / 1e9
    for kind in fns:
        row[f"{kind}_img_s"] = per_second(times[kind], batch)
        row[f"{kind}_spread"] = spread(times[kind])
        # each BiT form against the baseline and against its family's default form
        family = "module" if kind.startswith("module") else "native_graph"
        for base in ("resnet50v2", family):
            if base in times and kind not in (base, "resnet50v2"):
                row[f"{kind}_vs_{base}"] = speed_ratio(times[kind], times[base])
        if "resnet50v2" in flops and kind != "resnet50v2":
            row[f"{kind}_per_flop_vs_resnet50v2"] = row[f"{kind}_vs_resnet50v2"] * \
                flops["bit"] / flops["resnet50v2"]
    row["seconds"] = times
    return row


def measure_training(arch: str, size: int, batch: int, *, repeats: int, warmup: int) -> dict:
    """One training row: the SimCLR step (forward + backward + LARS) without and with XLA."""
    from bench.pretrain_step import simclr_step

    load_before = os.getloadavg()
    steps = {"train": simclr_step(arch, size, batch, "lars"),
             "train_xla": simclr_step(arch, size, batch, "lars", xla=True)}
    times = alternating(steps, repeats=repeats, warmup=max(warmup, 1))
    return {"arch": arch, "size": size, "batch": batch, "repeats": repeats,
            "train_img_s": per_second(times["train"], batch),
            "train_xla_img_s": per_second(times["train_xla"], batch),
            "train_xla_vs_train": speed_ratio(times["train_xla"], times["train"]),
            "train_spread": spread(times["train"]), "train_xla_spread": spread(times["train_xla"]),
            "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
            "threads": threads_now(), "seconds": times}


def parse_configs(text: str) -> list[tuple]:
    """'size:batch,...' (or 'arch:size:batch,...') -> tuples, ints where numbers."""
    return [tuple(int(v) if v.isdigit() else v for v in item.strip().split(":"))
            for item in text.split(",") if item.strip()]


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n")[0], "bench/results/fused.json")
    parser.add_argument("--arch", help="architecture of the inference rows (default r50x1)")
    parser.add_argument("--configs", help="inference rows, size:batch,... (default 224:16,224:1)")
    parser.add_argument("--train-configs",
                        help="training rows, arch:size:batch,... ('' for none; default "
                             "tiny:32:16,r50x1:64:8)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="candidates (default: all)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="TensorFlow intra-op threads, pinned (default: the cores)")
    parser.add_argument("--max-load", type=float, default=0.5,
                        help="1-minute load average above which a row is marked under_load")
    args = parse_with_defaults(
        parser, argv,
        defaults={"arch": "r50x1", "configs": "224:16,224:1",
                  "train_configs": "tiny:32:16,r50x1:64:8"},
        tiny={"arch": "tiny", "configs": "32:2", "train_configs": "tiny:32:2"})
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)  # before any op runs
    except RuntimeError:  # TensorFlow already started in this process with another count
        raise SystemExit(f"bench/fused.py pins {args.threads} threads before TensorFlow starts: "
                         "run it as its own process") from None
    kinds = [k for k in args.kinds.split(",") if k in KINDS]
    rows, train_rows = [], []
    result = {"benchmark": "fused", "machine": machine_info(), "threads": args.threads,
              "command": " ".join(["python bench/fused.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "baseline": "keras.applications.ResNet50V2(weights=None, include_top=False, "
                          "pooling='avg') in a tf.function (no XLA), same size and batch; "
                          "training: the SimCLR step without XLA",
              "target_per_flop": TARGET_PER_FLOP, "rows": rows, "train_rows": train_rows}
    with tempfile.TemporaryDirectory() as scratch:
        for size, batch in parse_configs(args.configs):
            folder = Path(scratch) / f"{size}-{batch}"
            folder.mkdir()
            rows.append(measure(args.arch, size, batch, kinds, repeats=args.repeats,
                                warmup=args.warmup, scratch=folder, max_load=args.max_load))
            write_json(args.json, result)  # partial results survive an interrupted run
            print(f"done {args.arch} {size} batch {batch}", flush=True)
    for arch, size, batch in parse_configs(args.train_configs):
        train_rows.append(measure_training(arch, size, batch, repeats=args.repeats,
                                           warmup=args.warmup))
        write_json(args.json, result)
        print(f"done training {arch} {size} batch {batch}", flush=True)
    columns = ["size", "batch", "under_load", "resnet50v2_img_s"] + [
        f"{kind}_per_flop_vs_resnet50v2" for kind in kinds if kind != "resnet50v2"]
    report(rows, columns, args.json, result)
    if train_rows:
        print(format_table(train_rows, ["arch", "size", "batch", "train_img_s", "train_xla_img_s",
                                        "train_xla_vs_train"]))
    return result


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
