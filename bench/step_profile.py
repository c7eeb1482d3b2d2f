"""Where the time of one SimCLR step goes: reading, augmentation, forward, loss, backward, LARS.

Method: split timings of separately built functions, all on the package's own pieces in one
process, timed in alternating repetitions (each repetition starts its candidate afresh, makes
one untimed call and times ``--steps-per-rep`` more: ``bench.input_pipeline.alternating_fresh``):

- ``read_decode``: the run's pair stream (``medfound.data.micle.micle_pairs``: file reading and
  decoding, no augmentation), ``batch`` pairs per step;
- ``augment``: the run's augmentation and batching (``medfound.pretrain.pipeline.augment_views``,
  the preset's real augmentation) on ``batch`` pairs already decoded and held in memory;
- ``pipeline``: the whole real input pipeline (``view_dataset``: both of the above);
- ``forward``: backbone + projection head + NT-Xent loss (training mode, no tape);
- ``loss``: NT-Xent alone on cached projections. With one replica (this default strategy)
  there is no cross-replica gather: it is the loss itself;
- ``forward_backward``: ``forward`` under a GradientTape and its gradients;
- ``optimizer``: LARS applying cached gradients (``apply_reached_gradients``);
- ``step``: the real train step (``medfound.pretrain.trainer.make_train_step``) on cached views;
- ``fed_step``: the real train step fed by the real pipeline (what a run sees, the pipeline
  overlapping the step).

The table derives ``backbone + head`` = forward - loss, ``backward`` = forward_backward -
forward and ``step rest`` = step - forward_backward - optimizer (the distribution wrapper,
metrics; may read below 0 within noise), with shares of ``pipeline + step`` (the cost if nothing
overlapped); ``exposed_pipeline`` = fed_step - step is the input cost a run actually pays here.
``--warmup`` is not used (every repetition makes its own untimed call). ``--xla`` compiles the
model functions (and the step, ``PretrainConfig.xla``); ``--profile``
adds the op types of one step from a TF profiler trace (``bench.alternatives._profile_tf``).

    python bench/step_profile.py --configs cxr:r50x1:224:16,path:r50x1:224:16 --repeats 5
"""
from __future__ import annotations

import functools
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (base_parser, machine_info, median, parse_with_defaults,  # noqa: E402
                          report, spread, write_json)
from bench.input_pipeline import PRESET_DATA, alternating_fresh  # noqa: E402

MEASURED = ("read_decode", "augment", "pipeline", "forward", "loss", "forward_backward",
            "optimizer", "step", "fed_step")


def parse_configs(text: str) -> list[tuple[str, str, int, int]]:
    """'preset:arch:size:batch,...' -> [(preset, arch, size, batch), ...]."""
    return [(p, a, int(s), int(b)) for p, a, s, b in (item.strip().split(":")
                                                     for item in text.split(",") if item.strip())]


def pipelines(config, batch: int) -> dict:
    """The input candidates: zero-argument starters returning a function that pulls one step."""
    import tensorflow as tf

    from medfound.data.micle import micle_pairs
    from medfound.pretrain.pipeline import augment_views, open_source, view_dataset

    source = open_source(config)
    pairs = micle_pairs(source, micle=config.micle, probability=config.micle_probability,
                        seed=config.seed, shuffle=True, repeat=True)
    images = pairs.map(lambda p: {"image_a": p["image_a"], "image_b": p["image_b"]})
    # Shapes only: decoding still runs for every pair, and images of any size batch together.
    read = images.map(lambda p: (tf.shape(p["image_a"]), tf.shape(p["image_b"]))).batch(batch)
    held = [p for p in images.take(batch)]  # decoded once, then served from memory
    cached = functools.reduce(lambda a, b: a.concatenate(b),
                              [tf.data.Dataset.from_tensors(p) for p in held]).repeat()
    augmented = augment_views(cached, config, per_replica_batch=batch)
    full = view_dataset(source, config, per_replica_batch=batch)

    def starter(ds):
        def start():
            iterator = iter(ds)
            return lambda: tf.nest.map_structure(lambda t: t.shape, next(iterator))
        return start

    return {"read_decode": starter(read), "augment": starter(augmented),
            "pipeline": starter(full)}, full


def model_pieces(config, views: dict) -> dict:
    """The model candidates (forward, loss, forward_backward, optimizer, step) on cached views."""
    import tensorflow as tf

    from medfound.optim.factory import apply_reached_gradients
    from medfound.pretrain.model import build_networks, build_optimizer
    from medfound.pretrain.trainer import make_train_step
    from medfound.ssl.losses import nt_xent_loss

    nets, _ = build_networks(config)
    optimizer = build_optimizer(config)
    optimizer.build(nets.trainable_variables)
    variables, method = nets.trainable_variables, nets.method
    compiled = functools.partial(tf.function, jit_compile=bool(config.xla))

    def loss_of(batch):
        x = tf.concat([batch["view_a"], batch["view_b"]], axis=0)
        return method.loss(nets.backbone(x, training=True)["embedding"], method.targets(x)).loss

    @compiled
    def forward_backward(batch):
        with tf.GradientTape() as tape:
            loss = loss_of(batch)
        return tape.gradient(loss, variables)

    # The gradients are summed inside the function so that all of them are computed.
    gradient_sum = tf.function(lambda b: tf.add_n([tf.reduce_sum(g) for g in
                                                   forward_backward(b) if g is not None]))
    reached = [(g, v) for g, v in zip(forward_backward(views), variables) if g is not None]
    cached_grads = [g for g, _ in reached]
    apply = tf.function(lambda gs: apply_reached_gradients(
        optimizer, gs, [v for _, v in reached]) or tf.constant(0.0))
    x = tf.concat([views["view_a"], views["view_b"]], axis=0)
    z = method.projection(nets.backbone(x, training=True)["embedding"], training=True)
    z_a, z_b = tf.split(z, 2, axis=0)
    loss = tf.function(lambda a, b: nt_xent_loss(a, b, method.settings.temperature).loss)
    forward = compiled(loss_of)
    step = make_train_step(tf.distribute.get_strategy(), nets, optimizer, config)
    return {"forward": lambda: float(forward(views)),
            "loss": lambda: float(loss(z_a, z_b)),
            "forward_backward": lambda: float(gradient_sum(views)),
            "optimizer": lambda: float(apply(cached_grads)),
            "step": lambda: float(step(views)["loss"])}, step


def measure(preset: str, arch: str, size: int, batch: int, *, data: Path, repeats: int,
            steps: int, xla: bool, profile: Path | None) -> dict:
    """One row: seconds per step of every candidate, the derived components and their shares."""
    from medfound.pretrain.config import PretrainConfig

    folder = data / PRESET_DATA[preset][0]
    if not folder.is_dir():
        raise SystemExit(f"{folder}: real images for the {preset} preset not found; pass --data "
                         "(the folder of nih-cxr14-sample/ and breakhis/)")
    config = PretrainConfig(data=str(folder), out_dir="unused", modality=preset, arch=arch,
                            image_size=size, batch_size=batch, steps=1000, xla=xla)
    starts, full = pipelines(config, batch)
    views = next(iter(full))
    pieces, step = model_pieces(config, views)
    starts.update({name: (lambda fn=fn: fn) for name, fn in pieces.items()})

    def fed():
        iterator = iter(full)
        return lambda: float(step(next(iterator))["loss"])

    starts["fed_step"] = fed
    load_before = os.getloadavg()
    times = alternating_fresh(starts, lambda pull: pull(), steps, repeats)
    per_step = {name: median(t) / steps for name, t in times.items()}
    row = {"preset": preset, "arch": arch, "size": size, "batch": batch, "xla": xla,
           "repeats": repeats, "steps_per_rep": steps, "loadavg_before": list(load_before),
           "loadavg_after": list(os.getloadavg()), "seconds_per_step": per_step,
           "spread": {name: spread(t) for name, t in times.items()}, "seconds": times}
    row["components"] = components(per_step)
    row["augment_share"] = row["components"]["augment"]["share"]
    row["exposed_pipeline_s"] = per_step["fed_step"] - per_step["step"]
    if profile is not None:
        from bench.alternatives import _profile_tf

        totals = _profile_tf(pieces["step"], profile / f"{preset}-{arch}-{size}-{batch}")
        row["profile_top_ops_s"] = dict(sorted(totals.items(), key=lambda kv: -kv[1])[:12])
    return row


def components(t: dict) -> dict:
    """The table: each component's seconds per step (measured or derived) and its share of
    pipeline + step (the serial cost)."""
    parts = {"read_decode": (t["read_decode"], "measured"),
             "augment": (t["augment"], "measured (decoded images in memory)"),
             "backbone + head": (t["forward"] - t["loss"], "forward - loss"),
             "loss (1 replica: no cross-replica gather)": (t["loss"], "measured"),
             "backward": (t["forward_backward"] - t["forward"], "forward_backward - forward"),
             "optimizer (LARS apply)": (t["optimizer"], "measured"),
             "step rest": (t["step"] - t["forward_backward"] - t["optimizer"],
                           "step - forward_backward - optimizer")}
    serial = t["pipeline"] + t["step"]
    return {name: {"seconds": s, "share": s / serial, "how": how}
            for name, (s, how) in parts.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n")[0], "bench/results/step_profile.json")
    parser.add_argument("--configs", help="comma-separated preset:arch:size:batch")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared"
                                              / "data"),
                        help="folder holding nih-cxr14-sample/ and breakhis/ (default: "
                             "%(default)s)")
    parser.add_argument("--steps-per-rep", type=int, help="steps timed per repetition")
    parser.add_argument("--xla", action="store_true", help="compile the model functions")
    parser.add_argument("--profile", action="store_true",
                        help="add the op types of one step from a TF profiler trace")
    args = parse_with_defaults(parser, argv,
                               {"configs": "cxr:r50x1:224:16,path:r50x1:224:16",
                                "steps_per_rep": 3},
                               {"configs": "cxr:tiny:32:2", "steps_per_rep": 1})
    rows: list[dict] = []
    result = {"benchmark": "step_profile", "machine": machine_info(),
              "command": " ".join(["python bench/step_profile.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "baseline": "shares of pipeline + step (the serial cost of one step)",
              "method": "split timings of separately built functions, alternating "
                        "repetitions (see the module docstring)", "rows": rows}
    with tempfile.TemporaryDirectory() as scratch:
        for preset, arch, size, batch in parse_configs(args.configs):
            rows.append(measure(preset, arch, size, batch, data=Path(args.data),
                                repeats=args.repeats, steps=args.steps_per_rep, xla=args.xla,
                                profile=Path(scratch) if args.profile else None))
            write_json(args.json, result)  # partial results survive an interrupted run
            print(f"done {preset} {arch} {size} batch {batch}", flush=True)
    table = [{"config": f"{r['preset']} {r['arch']} {r['size']}px b{r['batch']}",
              "component": name, "s/step": c["seconds"], "share": c["share"]}
             for r in rows for name, c in r["components"].items()]
    report(table, ["config", "component", "s/step", "share"], args.json, result)
    return result


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
