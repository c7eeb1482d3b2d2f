"""The pretraining stages of ``bench/remedis_mini.py``, one (stage, seed) at a time, each kept on
disk (``stage_{init}_seed{s}.json``) and reused.

- ``supervised``: the CIFAR-10 subset with labels, trained until test accuracy stops improving:
  seed 0 runs complete schedules (warm-up, cosine) of ``--supervised-steps``, twice that, ... up
  to ``--supervised-max-steps``, and stops at the first doubling that adds less than
  ``--plateau-delta`` test accuracy (the curve goes in the report); the other seeds train at the
  length where it stopped improving.
- ``remedis``: supervised seed s's BiT checkpoint continued with SimCLR (seed s).
- ``simclr``: the same SimCLR run from random init (seed s).

The SimCLR stages see PneumoniaMNIST train images only: no NIH image (the OOD study's patients)
is in any pretraining set.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from bench import label_efficiency_pneumonia as lep
from bench.common import write_json

STAGES = ("supervised", "remedis", "simclr")
MODULE_NAMES = {"supervised": "bench-cifar10-tiny-supervised",
                "remedis": "bench-cxr-tiny-bits-simclr", "simclr": "bench-cxr-tiny-simclr"}


def stage_file(out: Path, init: str, seed: int) -> Path:
    return out / "stages" / f"stage_{init}_seed{seed}.json"


def _supervised_run(args, out: Path, seed: int, steps: int):
    from medfound.pretrain.supervised import SupervisedConfig, pretrain_supervised

    return pretrain_supervised(SupervisedConfig(
        data=str(args.cifar), out_dir=str(out / "supervised" / f"seed{seed}" / f"steps{steps}"),
        arch=args.arch, image_size=args.image_size, batch_size=args.supervised_batch,
        steps=steps, learning_rate=args.supervised_lr, log_every=max(1, min(100, steps // 10)),
        eval_split="test", seed=seed), verbose=False)


def plateau(args, out: Path) -> dict:
    """Seed 0's curve (steps, CIFAR-10 test accuracy, seconds) of doubling schedules, and the
    length where accuracy stopped improving by ``plateau_delta``; kept in plateau.json."""
    import fcntl

    (out / "stages").mkdir(parents=True, exist_ok=True)
    # One curve per study: a second process (bench/remedis_mini_parallel.sh) waits for it here.
    with open(out / "stages" / "plateau.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _plateau_locked(args, out)


def _plateau_locked(args, out: Path) -> dict:
    path = out / "stages" / "plateau.json"
    cached = json.loads(path.read_text()) if path.is_file() else None
    if cached and (cached["plateaued"]
                   or 2 * cached["curve"][-1]["steps"] > args.supervised_max_steps):
        return cached
    # A curve cut by an earlier, lower --supervised-max-steps (or a kill) continues where it
    # stopped: the file is rewritten after every point.
    curve = cached["curve"] if cached else []
    steps = 2 * curve[-1]["steps"] if curve else args.supervised_steps
    result = _plateau_result(args, curve)
    while steps <= args.supervised_max_steps and not result["plateaued"]:
        t0 = time.perf_counter()
        run = _supervised_run(args, out, 0, steps)
        curve.append({"steps": steps, "test_accuracy": run.eval_accuracy,
                      "seconds": time.perf_counter() - t0})
        print(f"supervised seed 0, {steps} steps: CIFAR-10 test accuracy "
              f"{run.eval_accuracy:.3f}", flush=True)
        result = _plateau_result(args, curve)
        write_json(path, result)
        steps *= 2
    return result


def _plateau_result(args, curve: list[dict]) -> dict:
    """The curve so far, whether its last doubling added less than ``plateau_delta`` and the
    length kept (the shorter of that pair, else the longest run)."""
    plateaued = len(curve) > 1 and \
        curve[-1]["test_accuracy"] - curve[-2]["test_accuracy"] < args.plateau_delta
    return {"curve": curve, "plateaued": plateaued,
            "steps": curve[-2 if plateaued else -1]["steps"] if curve else None,
            "rule": f"complete schedules of doubling length from {args.supervised_steps} steps "
                    f"(at most {args.supervised_max_steps}); stop at the first doubling that "
                    f"adds less than {args.plateau_delta:g} CIFAR-10 test accuracy; keep the "
                    "shorter"}


def pretrain_stage(args, out: Path, init: str, seed: int) -> dict:
    """One (stage, seed): the exported module and what the stage took; reused when finished."""
    from medfound.export.exporter import export_module

    path = stage_file(out, init, seed)
    steps = plateau(args, out)["steps"]
    if path.is_file():  # reused only when it started from the CIFAR stage's current length
        stage = json.loads(path.read_text())
        if init == "simclr" or stage.get("supervised_steps") == steps:
            return stage
    t0 = time.perf_counter()
    sup = _supervised_run(args, out, seed, steps) if init in ("supervised", "remedis") else None
    # A stage redone from a longer CIFAR stage writes beside the earlier one, never over it.
    where = out / init / f"seed{seed}" / (f"sup{steps}" if sup else "")
    if init == "supervised":
        module = export_module(sup.run_dir, where / "supervised.keras", fmt="keras",
                               name=MODULE_NAMES[init], modality="cxr")
        stage = {"steps": steps, "start": "random", "cifar_test_accuracy": sup.eval_accuracy,
                 "losses": [h["loss"] for h in sup.history]}
    else:
        start = f"bit-s:{sup.checkpoint}" if init == "remedis" else "random"
        pre = lep.pretrain_backbone(args, Path(args.data), where, init=start,
                                    name=MODULE_NAMES[init], seed=seed)
        module = pre.module
        stage = {"steps": args.pretrain_steps, "start": start, "losses": pre.losses,
                 "data": str(args.data), "nih_images": 0}
    stage.update(init=init, seed=seed, module=str(module), seconds=time.perf_counter() - t0,
                 supervised_steps=steps if sup else None)
    write_json(path, stage)
    print(f"{init} seed {seed}: done ({stage['seconds']:.0f} s)", flush=True)
    return stage
