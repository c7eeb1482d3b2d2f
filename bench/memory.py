"""Peak resident memory of export, embedding extraction and a pretraining step, each in a fresh process.

Every case runs in its own child process (this script with ``--child``), which reports the peak
resident set size of its own process: ``VmHWM`` from /proc/self/status (Linux). The
figure reported is that peak minus the peak of a baseline child that only imported TensorFlow
and Keras, measured in the same run: the memory the work itself needed.

Cases (inputs are prepared by the parent beforehand, so only the work is in the child):
- export: ``medfound.export.exporter.export_module`` of a random-weight backbone's
  ``.weights.h5`` to a hub SavedModel (r50x1, r152x2);
- embed: ``medfound.embed.embed`` of N generated PNGs through an exported module into ``.npz``,
  at two counts (default 1,000 and 10,000): bounded memory means the larger count does not need
  more memory than the extra embeddings alone would take;
- step: one SimCLR pretraining step (``make_train_step``, LARS, tracing included) at 224 px with a
  small batch (r50x1, r152x2).

    python bench/memory.py            # all cases at their defaults
    python bench/memory.py --tiny     # smoke-test sizes
"""
from __future__ import annotations

import concurrent.futures
import csv
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (base_parser, machine_info, parse_with_defaults, report,  # noqa: E402
                          write_json)

RESULT_PREFIX = "MEMORY_RESULT "
MB = 1024.0  # /proc reports kB
DEFAULTS = {"export_archs": "r50x1,r152x2", "step_archs": "r50x1,r152x2", "step_size": 224,
            "step_batch": 4, "embed_counts": "1000,10000", "embed_arch": "r50x1",
            "embed_size": 64, "embed_batch": 32, "image_pixels": 64, "embed_format": "saved_model"}
TINY = {"export_archs": "tiny", "step_archs": "tiny", "step_size": 32, "step_batch": 2,
        "embed_counts": "8,24", "embed_arch": "tiny", "embed_size": 32, "embed_batch": 8,
        "image_pixels": 32, "embed_format": "keras"}


# ---------------------------------------------------------------- child side (one case each)

def peak_kb() -> int:
    """This process's peak resident memory in kB: VmHWM from /proc/self/status.

    Not ``ru_maxrss``: Linux keeps it across ``execve``, so a child started by a parent that
    had grown large reports the parent's peak (seen here: 2.1 GB for a bare import).
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/status has no VmHWM line: peak memory needs Linux")


def child_export(spec: dict) -> dict:
    """Exports a ``.weights.h5`` to a hub SavedModel, as ``medfound export`` does."""
    from medfound.export.exporter import export_module

    out = export_module(spec["weights"], spec["out"], name=f"bench-{spec['arch']}",
                        arch=spec["arch"], modality="cxr")
    return {"written_mb": sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
            / MB / MB}


def child_embed(spec: dict) -> dict:
    """Streams the images listed in a CSV through a module into an ``.npz``."""
    from medfound.embed import EmbedConfig, embed

    result = embed(EmbedConfig(module=spec["module"], input=spec["csv"], out=spec["out"],
                               image_size=spec["size"], batch_size=spec["batch"],
                               path_column="path", progress=False))
    return {"embedded": result.num_embedded, "embedding_dim": result.embedding_dim,
            "embeddings_mb": result.num_embedded * result.embedding_dim * 4 / MB / MB}


def child_step(spec: dict) -> dict:
    """One SimCLR step (trace + run) of the package's own train step on cached views."""
    import tensorflow as tf

    from medfound.pretrain.config import PretrainConfig
    from medfound.pretrain.model import build_networks, build_optimizer
    from medfound.pretrain.trainer import make_train_step

    size, batch = spec["size"], spec["batch"]
    config = PretrainConfig(data="unused", out_dir="unused", arch=spec["arch"], image_size=size,
                            batch_size=batch, steps=10)
    nets, _ = build_networks(config)
    step = make_train_step(tf.distribute.get_strategy(), nets, build_optimizer(config), config)
    views = {"view_a": tf.random.stateless_uniform([batch, size, size, 3], seed=[0, 1]),
             "view_b": tf.random.stateless_uniform([batch, size, size, 3], seed=[0, 2])}
    loss = float(step(views)["loss"])
    return {"loss": loss, "params_m": sum(int(v.shape.num_elements())
                                          for v in nets.backbone.weights) / 1e6}


CHILDREN = {"export": child_export, "embed": child_embed, "step": child_step}


def run_child(spec: dict) -> None:
    """Body of a child process: do one case and print its result line (peak memory included)."""
    import keras  # noqa: F401  (the baseline's imports, so every case starts from them)
    import tensorflow  # noqa: F401

    start = time.perf_counter()
    extra = CHILDREN[spec["kind"]](spec) if spec["kind"] != "baseline" else {}
    result = {"seconds": time.perf_counter() - start, **extra, "vmhwm_kb": peak_kb()}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ---------------------------------------------------------------- parent side

def measure(spec: dict, timeout: float) -> dict:
    """Runs one case in a fresh Python process; its peak memory, or why there is none."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout after {timeout:g} s", "wall_s": time.perf_counter() - start}
    wall = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        return {"status": f"failed (exit {proc.returncode}): {' '.join(tail)[:200]}",
                "wall_s": wall}
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    result.update(status="ok", wall_s=wall, peak_mb=result["vmhwm_kb"] / MB)
    return result


def write_images(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` distinct grayscale PNGs of ``size`` x ``size`` (smooth gradient plus noise)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 160, size, dtype=np.float32)[None, :]
    paths = []
    for i in range(count):
        pixels = ramp + rng.integers(0, 96, (size, size)).astype(np.float32)
        path = folder / f"img{i:05d}.png"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8), mode="L").save(path)
        paths.append(path)
    return paths


def write_list(path: Path, images: list[Path]) -> Path:
    """A CSV with one ``path`` column listing ``images`` relative to the CSV's folder."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path"])
        writer.writerows([str(p.relative_to(path.parent))] for p in images)
    return path


def random_weights(arch: str, folder: Path) -> Path:
    """A random-weight backbone's ``.weights.h5`` (built in the parent: not part of a case)."""
    import gc

    import keras

    from medfound.models.bit import build_backbone

    backbone = build_backbone(arch)
    path = folder / f"{arch}.weights.h5"
    backbone.save_weights(str(path))
    del backbone
    keras.backend.clear_session()
    gc.collect()
    return path


def embed_module(arch: str, fmt: str, folder: Path) -> Path:
    """A random-weight ``arch`` exported as a hub SavedModel or a ``.keras`` module."""
    from medfound.export.exporter import export_module

    folder.mkdir()
    weights = random_weights(arch, folder)
    return export_module(weights, folder / (f"bench-{arch}" + (".keras" if fmt == "keras" else "")),
                         name=f"bench-{arch}", arch=arch, modality="cxr", fmt=fmt)


def plan(args, scratch: Path) -> list[dict]:
    """The child specifications of every case, with their inputs written to ``scratch``."""
    specs: list[dict] = [{"kind": "baseline", "case": "baseline (import tensorflow, keras)"}]
    for arch in filter(None, args.export_archs.split(",")):
        specs.append({"kind": "export", "case": f"export {arch}", "arch": arch,
                      "weights": str(random_weights(arch, scratch)),
                      "out": str(scratch / f"exported-{arch}")})
    counts = [int(c) for c in args.embed_counts.split(",") if c.strip()]
    if counts:
        module = embed_module(args.embed_arch, args.embed_format, scratch / "embed-module")
        images = write_images(scratch / "images", max(counts), args.image_pixels)
        for count in counts:
            specs.append({"kind": "embed", "case": f"embed {count} images", "images": count,
                          "arch": args.embed_arch, "module": str(module),
                          "format": args.embed_format,
                          "csv": str(write_list(scratch / f"list{count}.csv", images[:count])),
                          "out": str(scratch / f"embeddings{count}.npz"),
                          "size": args.embed_size, "batch": args.embed_batch})
    for arch in filter(None, args.step_archs.split(",")):
        specs.append({"kind": "step", "case": f"SimCLR step {arch}", "arch": arch,
                      "size": args.step_size, "batch": args.step_batch})
    return specs


def bounded_check(rows: list[dict]) -> dict | None:
    """Whether embedding more images needed more memory than the extra embeddings alone take.

    Streaming keeps one part of rows in memory; an extractor that held every embedding would
    grow by at least (extra images x dim x 4 bytes) between the smallest and largest count.
    """
    done = sorted((r for r in rows if r["kind"] == "embed" and r["status"] == "ok"),
                  key=lambda r: r["images"])
    if len(done) < 2:
        return None
    small, large = done[0], done[-1]
    growth = large["peak_mb"] - small["peak_mb"]
    held = (large["images"] - small["images"]) * large["embedding_dim"] * 4 / MB / MB
    return {"images": [small["images"], large["images"]],
            "peak_mb": [small["peak_mb"], large["peak_mb"]], "growth_mb": growth,
            "extra_embeddings_mb": held, "large_vs_small": large["above_baseline_mb"]
            / small["above_baseline_mb"] if small["above_baseline_mb"] > 0 else None,
            "bounded": bool(growth < held)}


def case_row(spec: dict, got: dict, base: dict) -> dict:
    """A table row: what the case was, what its child reported, and its peak above baseline."""
    row = {k: v for k, v in spec.items() if k in ("kind", "case", "arch", "images", "size",
                                                  "batch")}
    row.update(got)
    if got["status"] == "ok":
        row["above_baseline_mb"] = got["peak_mb"] - base["peak_mb"]
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n")[0], "bench/results/memory.json")
    parser.add_argument("--export-archs",
                        help="architectures to export, comma-separated, '' for none "
                             f"(default {DEFAULTS['export_archs']})")
    parser.add_argument("--step-archs", help="architectures for one SimCLR step, '' for none "
                                             f"(default {DEFAULTS['step_archs']})")
    parser.add_argument("--step-size", type=int, help=f"default {DEFAULTS['step_size']}")
    parser.add_argument("--step-batch", type=int, help="images per step, two views each "
                                                      f"(default {DEFAULTS['step_batch']})")
    parser.add_argument("--embed-counts", help="numbers of images to embed, '' for none "
                                               f"(default {DEFAULTS['embed_counts']})")
    parser.add_argument("--embed-arch", help="architecture of the embedding module "
                                             f"(default {DEFAULTS['embed_arch']})")
    parser.add_argument("--embed-size", type=int,
                        help=f"embedding input size (default {DEFAULTS['embed_size']})")
    parser.add_argument("--embed-batch", type=int, help=f"default {DEFAULTS['embed_batch']}")
    parser.add_argument("--embed-format", choices=["saved_model", "keras"],
                        help="module format embedded from (default saved_model, the hub "
                             "module; keras exports much faster, for smoke tests)")
    parser.add_argument("--image-pixels", type=int,
                        help=f"side of the PNGs written (default {DEFAULTS['image_pixels']})")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per case")
    parser.add_argument("--jobs", type=int, default=1,
                        help="cases run at once (peak memory is per process; 1 for timings)")
    args = parse_with_defaults(parser, argv, DEFAULTS, TINY)
    rows: list[dict] = []
    result = {"benchmark": "memory", "machine": machine_info(),
              "command": " ".join(["python bench/memory.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "baseline": "peak resident memory of a fresh process that only imported "
                          "tensorflow and keras", "rows": rows}
    with tempfile.TemporaryDirectory() as scratch:
        specs = plan(args, Path(scratch))
        base = measure(specs[0], args.timeout)
        if base["status"] != "ok":
            raise SystemExit(f"baseline process failed: {base['status']}")
        with concurrent.futures.ThreadPoolExecutor(max(args.jobs, 1)) as pool:
            measured = pool.map(lambda s: measure(s, args.timeout), specs[1:])
            for spec, got in zip(specs, itertools.chain([base], measured)):  # as each ends
                rows.append(case_row(spec, got, base))
                write_json(args.json, result)  # partial results survive an interrupted run
                print(f"{spec['case']}: {got['status']}", flush=True)
    result["embed_bounded"] = bounded_check(rows)
    report(rows, ["case", "size", "batch", "peak_mb", "above_baseline_mb", "seconds", "status"],
           args.json, result)
    if result["embed_bounded"]:
        print("embedding memory: " + json.dumps(result["embed_bounded"]))
    return result


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        run_child(json.loads(sys.argv[2]))
    else:
        main()
