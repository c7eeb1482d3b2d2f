"""SimCLR training step against the PyTorch peer: medfound (Keras/TF) vs lightly + timm.

Both sides train the same network on the **same cached views** (one .npy of two views written
by the parent; augmentation is excluded on both sides), two views concatenated into one
backbone call, then a 3-layer projection head (2048-2048-128 for r50x1, BatchNorm after every
Linear), NT-Xent at temperature 0.1 and LARS (momentum 0.9, weight decay 1e-6, biases and
norms excluded from decay and adaptation), at the same learning rate (0.3 x batch / 256).

- ``medfound`` / ``medfound_xla``: the package's own step (``medfound.pretrain.trainer.
  make_train_step`` on ``build_networks`` / ``build_optimizer`` of a ``PretrainConfig``,
  via ``bench.pretrain_step.simclr_step``), ``PretrainConfig.xla`` off / on;
- ``lightly_eager`` / ``lightly_compiled``: timm's backbone (r50x1: ``timm.create_model(
  "resnetv2_50x1_bit", pretrained=False, num_classes=0)``; tiny: ``timm.models.resnetv2.
  ResNetV2(layers=[1, 1, 1, 1], width_factor=0.5, stem_type="fixed", conv_layer=StdConv2d
  eps 1e-8, num_classes=0)``, the BiT recipe of timm's ``_create_resnetv2_bit`` at medfound's
  tiny units and width), ``lightly.models.modules.SimCLRProjectionHead(num_layers=3)``,
  ``lightly.loss.NTXentLoss(temperature=0.1)``, ``lightly.utils.lars.LARS``; eager or with the
  backbone + head under ``torch.compile``. A ``_cl`` suffix runs channels_last.

Differences that remain: timm's pooled output passes its final GroupNorm (trained), medfound's
embedding skips it (that norm gets no gradient); lightly's last BatchNorm has a bias, medfound's
has none (SimCLR v2); medfound's LR schedule warms up, lightly's rate is constant.

Every candidate is its own worker process (``bench.alternatives.Worker``), pinned to
``--threads`` intra-op and inter-op threads (TF ``tf.config.threading``, torch
``set_num_threads`` / ``set_num_interop_threads``) and read back. The parent asks one worker at a
time to run ``--steps-per-rep`` steps, rotating the order each repetition; steps/s are at the
median block, ratios the median of per-repetition ratios of the faster medfound variant over the
faster lightly variant (a variant whose worker fails, e.g. ``torch.compile`` on this CPU, is
recorded with its error and left out; XLA and compiled variants get one warm-up step more,
their compilation). The tiny backbones have the same parameter count on both sides (2,007,328).
Before a row at a larger batch the workers' peak memory is extrapolated from the previous row
(fixed + per-image, from each worker's RSS before and after its warm-up): a row that would not
fit in 90% of ``MemAvailable`` is cut to the two faster variants of the previous row, or skipped
with the reason.

    python bench/simclr_vs_lightly.py --configs r50x1:224:16,r50x1:224:64,tiny:32:16 --repeats 5
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.alternatives import READY, Worker  # noqa: E402
from bench.common import (base_parser, machine_info, median, parse_with_defaults,  # noqa: E402
                          report, speed_ratio, spread, write_json)

MEDFOUND_KINDS = ("medfound", "medfound_xla")
LIGHTLY_KINDS = ("lightly_eager", "lightly_compiled")
GOAL = 1.2
TEMPERATURE, MOMENTUM, WEIGHT_DECAY, BASE_LR = 0.1, 0.9, 1e-6, 0.3


# ---------------------------------------------------------------- worker side

def _memory_mb() -> dict:
    """This process's resident (``rss``) and peak resident (``hwm``) memory in MB."""
    fields = dict(line.split(":", 1) for line in
                  Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {"rss": int(fields["VmRSS"].split()[0]) / 1024,
            "hwm": int(fields["VmHWM"].split()[0]) / 1024}


def _pin_and_read_threads(kind: str, threads: int) -> dict:
    """Pins the worker's runtime to ``threads`` intra- and inter-op threads; reads them back."""
    if kind.startswith("lightly"):
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
        return {"torch_threads": torch.get_num_threads(),
                "torch_interop_threads": torch.get_num_interop_threads()}
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return {"tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}


def _medfound_step(spec: dict, views):
    from bench.pretrain_step import simclr_step

    return simclr_step(spec["arch"], spec["size"], spec["batch"], "lars",
                       xla=spec["kind"] == "medfound_xla", views=views), {}


def timm_backbone(arch: str):
    """timm's counterpart of a medfound architecture (see the module docstring)."""
    import timm

    if arch == "r50x1":
        return timm.create_model("resnetv2_50x1_bit", pretrained=False, num_classes=0)
    from functools import partial

    from timm.layers import StdConv2d
    from timm.models.resnetv2 import ResNetV2

    from medfound.models.configs import get_arch

    spec = get_arch(arch)
    return ResNetV2(layers=list(spec.units), width_factor=spec.width, stem_type="fixed",
                    conv_layer=partial(StdConv2d, eps=1e-8), num_classes=0)


def _lightly_step(spec: dict, views):
    import lightly
    import timm
    import torch
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.models.utils import get_weight_decay_parameters
    from lightly.utils.lars import LARS

    torch.manual_seed(0)
    backbone = timm_backbone(spec["arch"])
    head = SimCLRProjectionHead(backbone.num_features, backbone.num_features, 128, num_layers=3)
    net = torch.nn.Sequential(backbone, head).train()
    x = torch.from_numpy(views).flatten(0, 1).permute(0, 3, 1, 2).contiguous()
    if spec["kind"].endswith("_cl"):
        net, x = net.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    decay, no_decay = get_weight_decay_parameters([net])
    optimizer = LARS([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                     lr=BASE_LR * spec["batch"] / 256, momentum=MOMENTUM,
                     weight_decay=WEIGHT_DECAY)
    criterion = NTXentLoss(temperature=TEMPERATURE)
    model = torch.compile(net) if "compiled" in spec["kind"] else net

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        z_a, z_b = model(x).chunk(2)
        loss = criterion(z_a, z_b)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step, {"torch": torch.__version__, "timm": timm.__version__,
                  "lightly": lightly.__version__, "backbone": type(backbone).__name__,
                  "backbone_params": sum(p.numel() for p in backbone.parameters())}


def run_worker(spec: dict) -> None:
    """A worker: pins threads, builds its step, warms up, then times ``steps`` steps per 'run'."""
    import numpy as np

    threads = _pin_and_read_threads(spec["kind"], spec["threads"])
    views = np.load(spec["views"])
    build = _lightly_step if spec["kind"].startswith("lightly") else _medfound_step
    step, info = build(spec, views)
    built = _memory_mb()
    loss = float("nan")
    for _ in range(spec["warmup"] + ("compiled" in spec["kind"] or "xla" in spec["kind"])):
        loss = step()
    info.update(threads=threads, rss_built_mb=built["rss"], warm_hwm_mb=_memory_mb()["hwm"])
    print(READY, flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "run":
            start = time.perf_counter()
            for _ in range(spec["steps"]):
                loss = step()
            print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
        elif command == "info":
            print(json.dumps({**info, "last_loss": loss, "peak_mb": _memory_mb()["hwm"]}),
                  flush=True)
        elif command == "quit":
            return


# ---------------------------------------------------------------- parent side

def parse_configs(text: str) -> list[tuple[str, int, int]]:
    """'arch:size:batch,...' -> [(arch, size, batch), ...]."""
    return [(a, int(s), int(b)) for a, s, b in (item.strip().split(":")
                                                for item in text.split(",") if item.strip())]


def available_mb() -> float:
    """MemAvailable of /proc/meminfo in MB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def plan_kinds(kinds: list[str], batch: int, previous: dict | None) -> tuple[list[str], str | None]:
    """The candidates a row can run at ``batch`` given the memory ``previous`` (the last row of
    the same arch and size) measured; a reason when it was cut or must be skipped ([] kinds)."""
    if not previous or not previous.get("info"):
        return kinds, None

    def need(names) -> float:
        total = 0.0
        for name in names:
            info = previous["info"][name]
            per_image = (info["peak_mb"] - info["rss_built_mb"]) / previous["batch"]
            total += info["rss_built_mb"] + per_image * batch
        return total

    free = 0.9 * available_mb()
    known = [k for k in kinds if k in previous["info"]]
    if need(known) <= free:
        return known, None
    pair = [previous.get("medfound_best"), previous.get("lightly_best")]
    why = (f"all {len(known)} workers would need about {need(known):.0f} MB at batch {batch} "
           f"(extrapolated from batch {previous['batch']}), 90% of MemAvailable is {free:.0f} MB")
    if None in pair:
        return [], why + "; no medfound and lightly pair ran before: skipped"
    if need(pair) <= free:
        return pair, why + f"; ran the faster two of batch {previous['batch']}: {', '.join(pair)}"
    return [], why + f"; even {', '.join(pair)} would need about {need(pair):.0f} MB: skipped"


def start_workers(kinds: list[str], spec: dict) -> tuple[dict, dict]:
    """A worker per kind; a kind whose worker fails to build or warm up goes to the failures."""
    workers, failures = {}, {}
    for kind in kinds:
        try:
            workers[kind] = Worker({**spec, "kind": kind}, script=__file__)
        except RuntimeError as err:
            failures[kind] = str(err)
            print(f"{kind} failed: {err}", flush=True)
    return workers, failures


def measure(arch: str, size: int, batch: int, *, kinds: list[str], repeats: int, warmup: int,
            steps: int, threads: int, scratch: Path) -> dict:
    """One row: every candidate's step blocks timed in alternation, steps/s, ratios, threads."""
    import numpy as np

    views = scratch / f"views-{size}-{batch}.npy"
    np.save(views, np.random.RandomState(0).rand(2, batch, size, size, 3).astype(np.float32))
    row = {"arch": arch, "size": size, "batch": batch, "repeats": repeats,
           "steps_per_rep": steps, "loadavg_before": list(os.getloadavg())}
    spec = {"arch": arch, "size": size, "batch": batch, "warmup": warmup, "steps": steps,
            "threads": threads, "views": str(views)}
    workers, row["failures"] = start_workers(kinds, spec)
    try:
        names = list(workers)
        times: dict[str, list[float]] = {name: [] for name in names}
        for rep in range(repeats):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                times[name].append(workers[name].ask("run")["seconds"])
        row["loadavg_after"] = list(os.getloadavg())
        row["info"] = {name: worker.ask("info") for name, worker in workers.items()}
    finally:
        for worker in workers.values():
            worker.close()
    for name in names:
        row[f"{name}_steps_s"] = steps / median(times[name])
        row[f"{name}_spread"] = spread(times[name])
    sides = {side: [k for k in names if k.startswith(side)] for side in ("medfound", "lightly")}
    if all(sides.values()):
        best = {side: min(ks, key=lambda k: median(times[k])) for side, ks in sides.items()}
        row.update(medfound_best=best["medfound"], lightly_best=best["lightly"],
                   medfound_xla=best["medfound"] == "medfound_xla",
                   medfound_vs_lightly=speed_ratio(times[best["medfound"]],
                                                   times[best["lightly"]]))
        row["meets_goal"] = bool(row["medfound_vs_lightly"] >= GOAL)
        for mine in sides["medfound"]:
            for theirs in sides["lightly"]:
                row[f"{mine}_vs_{theirs}"] = speed_ratio(times[mine], times[theirs])
    row["seconds"] = times
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n")[0], "bench/results/simclr_vs_lightly.json")
    parser.add_argument("--configs", help="comma-separated arch:size:batch (r50x1 or tiny); "
                                          "within an arch and size, smaller batches first")
    parser.add_argument("--kinds", default=",".join(MEDFOUND_KINDS + LIGHTLY_KINDS),
                        help="candidates (default %(default)s; a _cl suffix on a lightly kind "
                             "runs channels_last)")
    parser.add_argument("--steps-per-rep", type=int, help="training steps per timed block")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="intra- and inter-op threads of every worker (default %(default)s)")
    parser.add_argument("--max-load", type=float, default=0.5,
                        help="1-minute load average above which a row counts as under load "
                             "and is taken again (default %(default)s)")
    parser.add_argument("--retries", type=int, default=1,
                        help="times a row under load is taken again (default %(default)s)")
    args = parse_with_defaults(parser, argv,
                               {"configs": "r50x1:224:16,r50x1:224:64,tiny:32:16",
                                "steps_per_rep": 3},
                               {"configs": "tiny:32:2", "steps_per_rep": 1})
    kinds = [k for k in args.kinds.split(",") if k]
    rows: list[dict] = []
    result = {"benchmark": "simclr_vs_lightly", "machine": machine_info(),
              "command": " ".join(["python bench/simclr_vs_lightly.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "baseline": "lightly 1.6 SimCLR (NTXentLoss, SimCLRProjectionHead, LARS) on timm "
                          "resnetv2 BiT, faster of eager / torch.compile, own process, "
                          "alternating step blocks on the same cached views",
              "goal": GOAL, "threads": args.threads, "rows": rows}
    previous: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for arch, size, batch in parse_configs(args.configs):
            planned, why = plan_kinds(kinds, batch, previous.get((arch, size)))
            if not planned:
                rows.append({"arch": arch, "size": size, "batch": batch, "skipped": why})
            for attempt in range(1, args.retries + 2 if planned else 1):
                row = measure(arch, size, batch, kinds=planned, repeats=args.repeats,
                              warmup=args.warmup, steps=args.steps_per_rep,
                              threads=args.threads, scratch=Path(scratch))
                row.update(memory_plan=why, attempts=attempt, max_load=args.max_load,
                           under_load=max(row["loadavg_before"][0],
                                          row["loadavg_after"][0]) > args.max_load)
                if not row["under_load"]:
                    break
            if planned:
                rows.append(row)
                previous[(arch, size)] = row
            for info in row.get("info", {}).values():
                result.update({k: info[k] for k in ("torch", "timm", "lightly") if k in info})
            write_json(args.json, result)  # partial results survive an interrupted run
            print(f"done {arch} {size} batch {batch}", flush=True)
    columns = ["arch", "size", "batch"] + [f"{k}_steps_s" for k in kinds] + [
        "medfound_best", "lightly_best", "medfound_vs_lightly", "meets_goal", "under_load"]
    report(rows, columns, args.json, result)
    return result


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        run_worker(json.loads(sys.argv[2]))
    else:
        main()
