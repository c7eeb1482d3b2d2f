"""Pretraining step speed: a SimCLR step (two views per image) vs a supervised step (one view).

Both steps train the same backbone architecture with the same optimizer on cached tensors in
one process, timed in alternating repetitions. The figure is SimCLR source images/s over
supervised images/s; 0.5 is the ideal (twice the backbone work per image), and the goal is
>= 0.45 (projection head, NT-Xent loss and the rest cost under 10%).

    python bench/pretrain_step.py --configs tiny:64:16,r50x1:96:8 --repeats 5
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (alternating, base_parser, machine_info,  # noqa: E402
                          per_second, report, speed_ratio, spread, write_json)

DEFAULT_CONFIGS = "tiny:64:16,r50x1:96:8,r50x1:128:8"
GOAL = 0.45


def parse_configs(text: str) -> list[tuple[str, int, int]]:
    """'arch:size:batch,...' -> [(arch, size, batch), ...]."""
    return [(a, int(s), int(b)) for a, s, b in (item.strip().split(":")
                                                for item in text.split(","))]


def simclr_step(arch: str, size: int, batch: int, optimizer: str, *, xla: bool = False,
                views=None):
    """The package's own SimCLR train step (default strategy, ``PretrainConfig.xla`` as given)
    on one cached batch of views: ``views`` (2, B, S, S, 3) float32, else random ones."""
    import tensorflow as tf

    from medfound.pretrain.config import PretrainConfig
    from medfound.pretrain.model import build_networks, build_optimizer
    from medfound.pretrain.trainer import make_train_step

    config = PretrainConfig(data="unused", out_dir="unused", arch=arch, image_size=size,
                            batch_size=batch, steps=1000, optimizer=optimizer, xla=xla)
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        nets, _ = build_networks(config)
        opt = build_optimizer(config)
        opt.build(nets.trainable_variables)
    step = make_train_step(strategy, nets, opt, config)
    if views is None:
        views = tf.stack([tf.random.stateless_uniform([batch, size, size, 3], seed=[0, i])
                          for i in (1, 2)])
    batch_views = {"view_a": tf.constant(views[0]), "view_b": tf.constant(views[1])}
    return lambda: float(step(batch_views)["loss"])


def supervised_step(arch: str, size: int, batch: int, optimizer: str, num_classes: int = 14):
    """A plain supervised step of the same backbone (+ linear classifier) on single views."""
    import keras
    import tensorflow as tf

    from medfound.models.bit import build_backbone
    from medfound.pretrain.config import PretrainConfig
    from medfound.pretrain.model import build_optimizer

    config = PretrainConfig(data="unused", out_dir="unused", arch=arch, image_size=size,
                            batch_size=batch, steps=1000, optimizer=optimizer)
    backbone = build_backbone(arch)
    classifier = keras.layers.Dense(num_classes)
    classifier.build((None, backbone.embedding_dim))
    variables = backbone.trainable_variables + classifier.trainable_variables
    opt = build_optimizer(config)
    images = tf.random.stateless_uniform([batch, size, size, 3], seed=[0, 3])
    labels = tf.random.stateless_uniform([batch], seed=[0, 4], maxval=num_classes,
                                         dtype=tf.int32)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = classifier(backbone(x, training=True)["pre_logits"])
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return lambda: float(step(images, labels))


def measure(arch: str, size: int, batch: int, *, repeats: int, warmup: int,
            optimizer: str) -> dict:
    """One row: SimCLR and supervised images/s and their ratio."""
    times = alternating({"simclr": simclr_step(arch, size, batch, optimizer),
                         "supervised": supervised_step(arch, size, batch, optimizer)},
                        repeats=repeats, warmup=warmup)
    ratio = speed_ratio(times["simclr"], times["supervised"])
    return {"arch": arch, "size": size, "batch": batch, "optimizer": optimizer,
            "repeats": repeats,
            "simclr_img_s": per_second(times["simclr"], batch),
            "simclr_views_s": per_second(times["simclr"], 2 * batch),
            "supervised_img_s": per_second(times["supervised"], batch),
            "simclr_vs_supervised": ratio, "goal": GOAL, "meets_goal": bool(ratio >= GOAL),
            "simclr_spread": spread(times["simclr"]),
            "supervised_spread": spread(times["supervised"]), "seconds": times}


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n")[0], "bench/results/pretrain_step.json")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help="comma-separated arch:size:batch (default: %(default)s)")
    parser.add_argument("--optimizer", default="lars", choices=["lars", "sgd", "adamw"])
    args = parser.parse_args(argv)
    rows: list[dict] = []
    result = {"benchmark": "pretrain_step", "machine": machine_info(),
              "command": " ".join(["python bench/pretrain_step.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "baseline": "supervised step (backbone + linear classifier, softmax cross-entropy,"
                          " same optimizer) on single views of the same batch size",
              "rows": rows}
    for arch, size, batch in parse_configs(args.configs):
        rows.append(measure(arch, size, batch, repeats=args.repeats, warmup=args.warmup,
                            optimizer=args.optimizer))
        write_json(args.json, result)  # partial results survive an interrupted run
        print(f"done {arch} {size} batch {batch}", flush=True)
    report(rows, ["arch", "size", "batch", "optimizer", "supervised_img_s",
                              "simclr_img_s", "simclr_vs_supervised", "meets_goal",
                              "simclr_spread", "supervised_spread"], args.json, result)
    return result


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
