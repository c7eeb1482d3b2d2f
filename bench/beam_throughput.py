"""``medfound embed --engine beam`` (DirectRunner, N worker processes) against one process.

Each candidate is the whole command a user runs, started as a fresh process on the same inputs
(listing, module loading, decoding, the module, parts, merge), in alternating repetitions:

- ``one``: ``medfound embed`` in one process (TensorFlow's default threads);
- ``beam``: the same command with ``--engine beam --direct_num_workers N
  --direct_running_mode multi_processing``.

Both run on real files: NIH chest X-rays (cxr, 448 px) and the real Aperio slides in
``wsi/`` (tiles at ``--mpp``). A poller samples every process of the command's tree twice a
second: peak resident memory and thread count per process (the memory per worker), and CPU
seconds of the tree (how many cores the command kept busy). A 1-image run of each engine gives
its fixed cost (start-up, module loading, Beam's workers), so the rate at cohort scale is
``(images - 1) / (seconds - fixed seconds)``. The outputs of both engines are compared.

    python bench/beam_throughput.py --data /work/shared/data --images 128 --repeats 3
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (base_parser, machine_info, median, parse_with_defaults,  # noqa: E402
                          report, spread)

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = {"arch": "r50x1", "images": 96, "batch": 16, "workers": 2, "mpp": 0.5, "size": 448,
            "slide_copies": 4}
TINY = {"arch": "tiny", "images": 8, "batch": 4, "workers": 2, "mpp": 4.0, "size": 64,
        "slide_copies": 1}


def sample_tree(pid: int, peaks: dict, stop: threading.Event) -> None:
    """Until ``stop``: peak RSS (MB), peak threads and last CPU seconds of each process under
    ``pid`` (the process itself included), sampled every 0.5 s."""
    import psutil

    root = psutil.Process(pid)
    while not stop.is_set():
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for proc in procs:
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss / 2 ** 20
                    cpu = proc.cpu_times()
                    entry = peaks.setdefault(proc.pid, {"name": " ".join(proc.cmdline()[:3]),
                                                        "rss_mb": 0.0, "threads": 0, "cpu_s": 0.0})
                    entry["rss_mb"] = max(entry["rss_mb"], rss)
                    entry["threads"] = max(entry["threads"], proc.num_threads())
                    # Own time only: a parent's children_* would count its workers twice.
                    entry["cpu_s"] = max(entry["cpu_s"], cpu.user + cpu.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        stop.wait(0.5)


def run_command(args: list[str], out: Path) -> dict:
    """Runs ``python -m medfound ARGS`` to completion; wall seconds and the tree's samples."""
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
        for sidecar in out.parent.glob(out.stem + ".*"):
            shutil.rmtree(sidecar) if sidecar.is_dir() else sidecar.unlink()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "medfound", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict = {}
    stop = threading.Event()
    poller = threading.Thread(target=sample_tree, args=(proc.pid, peaks, stop), daemon=True)
    poller.start()
    output, _ = proc.communicate()
    seconds = time.perf_counter() - start
    stop.set()
    poller.join()
    if proc.returncode != 0:
        raise SystemExit(f"medfound {' '.join(args)} failed ({proc.returncode}):\n{output[-2000:]}")
    procs = sorted(peaks.values(), key=lambda p: -p["rss_mb"])
    return {"seconds": seconds, "processes": procs,
            "peak_rss_mb": max(p["rss_mb"] for p in procs),
            "cpu_s": sum(p["cpu_s"] for p in procs)}


def inputs(data: Path, scratch: Path, images: int, copies: int) -> tuple[Path, Path, Path]:
    """A folder of the first ``images`` NIH PNGs, a folder with one of them, and a cohort of
    ``copies`` links to each real slide (one work item per slide, as in a real cohort)."""
    source = sorted((data / "nih-cxr14-sample" / "images").glob("*.png"))[:images]
    if len(source) < images:
        raise SystemExit(f"{data}/nih-cxr14-sample/images: fewer than {images} PNG files")
    many, one, slides = scratch / "images", scratch / "one", scratch / "slides"
    for folder in (many, one, slides):
        folder.mkdir()
    for path in source:
        (many / path.name).symlink_to(path)
    (one / source[0].name).symlink_to(source[0])
    for slide in sorted((data / "wsi").glob("*.svs")):
        for copy in range(copies):
            (slides / f"{slide.stem}-{copy}{slide.suffix}").symlink_to(slide)
    return many, one, slides


def engines(workers: int) -> dict[str, list[str]]:
    return {"one": [], "beam": ["--engine", "beam", "--direct_num_workers", str(workers),
                                "--direct_running_mode", "multi_processing"]}


def measure(kind: str, base: list[str], out: Path, count_of, *, workers: int, repeats: int,
            warmup: int) -> dict:
    """Alternating repetitions of both engines on one input set; the row of their ratio."""
    runs: dict[str, list[dict]] = {name: [] for name in engines(workers)}
    names = list(runs)
    for rep in range(warmup + repeats):
        order = names[rep % 2:] + names[:rep % 2]
        for name in order:
            result = run_command([*base, "--out", str(out / f"{kind}-{name}{suffix(kind)}"),
                                  *engines(workers)[name]], out / f"{kind}-{name}{suffix(kind)}")
            if rep >= warmup:
                runs[name].append(result)
    items = count_of(out / f"{kind}-one{suffix(kind)}")
    seconds = {name: [r["seconds"] for r in rs] for name, rs in runs.items()}
    row = {"kind": kind, "items": items, "workers": workers,
           "one_per_s": items / median(seconds["one"]), "beam_per_s": items / median(seconds["beam"]),
           "beam_vs_one": median([o / b for o, b in zip(seconds["one"], seconds["beam"])]),
           "spread_one": spread(seconds["one"]), "spread_beam": spread(seconds["beam"]),
           "cores_busy_one": median([r["cpu_s"] / r["seconds"] for r in runs["one"]]),
           "cores_busy_beam": median([r["cpu_s"] / r["seconds"] for r in runs["beam"]]),
           "peak_rss_mb_one": max(r["peak_rss_mb"] for r in runs["one"]),
           "peak_rss_mb_beam_process": max(r["peak_rss_mb"] for r in runs["beam"]),
           "seconds": seconds, "runs": runs}
    row["same_output"] = same_output(kind, out / f"{kind}-one{suffix(kind)}",
                                     out / f"{kind}-beam{suffix(kind)}")
    return row


def suffix(kind: str) -> str:
    return ".npz" if kind != "slides" else ""


def same_output(kind: str, one: Path, beam: Path) -> float:
    """Largest relative difference between the engines' embeddings (rows in the same order)."""
    import numpy as np

    if kind == "slides":
        from medfound.slides.embed import read_slide_features

        pairs = [(read_slide_features(f)["features"], read_slide_features(beam / f.name)["features"])
                 for f in sorted(one.glob("*.h5"))]
    else:
        from medfound.embed import read_embeddings

        (paths_a, a), (paths_b, b) = read_embeddings(one), read_embeddings(beam)
        assert paths_a == paths_b, "the engines' rows differ in order"
        pairs = [(a, b)]
    return float(max(np.max(np.abs(x - y)) / max(np.max(np.abs(x)), 1e-12) for x, y in pairs))


def count_rows(file: Path) -> int:
    from medfound.embed import read_embeddings

    return len(read_embeddings(file)[0])


def count_tiles(folder: Path) -> int:
    from medfound.slides.embed import read_slide_features

    return sum(len(read_slide_features(f)["features"]) for f in folder.glob("*.h5"))


def fixed_cost(module: str, one_image: Path, out: Path, workers: int, repeats: int) -> dict:
    """Median seconds of each engine on a single image: start-up, module loading, Beam's workers."""
    seconds = {name: median([run_command(["embed", "--module", module, "--input", str(one_image),
                                          "--out", str(out / f"fixed-{name}.npz"), "--quiet",
                                          *flags], out / f"fixed-{name}.npz")["seconds"]
                             for _ in range(repeats)])
               for name, flags in engines(workers).items()}
    return {f"fixed_s_{name}": s for name, s in seconds.items()}


def at_scale(result: dict) -> None:
    """Adds to the images row each engine's rate once its fixed cost is paid (a cohort's rate):
    ``(items - 1) / (median seconds - fixed seconds)``, and their ratio."""
    for row in result["rows"]:
        if row["kind"] != "images":
            continue
        for name in engines(row["workers"]):
            row[f"{name}_per_s_at_scale"] = (row["items"] - 1) / (
                median(row["seconds"][name]) - result[f"fixed_s_{name}"])
        row["beam_vs_one_at_scale"] = row["beam_per_s_at_scale"] / row["one_per_s_at_scale"]


def rescore(path: str) -> None:
    """Recomputes the derived figures of a written report from its raw runs (no new timing)."""
    import json

    from bench.common import write_json

    result = json.loads(Path(path).read_text())
    at_scale(result)
    write_json(path, result)
    print(f"rescored {path}")


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n")[0], "bench/results/beam_throughput.json")
    parser.add_argument("--rescore", metavar="REPORT",
                        help="recompute the derived figures of REPORT from its raw runs")
    parser.add_argument("--data", default="../shared/data", help="the shared data folder")
    for key in DEFAULTS:
        parser.add_argument(f"--{key.replace('_', '-')}", type=str if key == "arch" else
                            float if key == "mpp" else int, help=f"default {DEFAULTS[key]}")
    args = parse_with_defaults(parser, argv, DEFAULTS, TINY)
    if args.rescore:
        return rescore(args.rescore)
    import psutil

    from bench.embed_speed import export_module

    rows: list[dict] = []
    result = {"benchmark": "beam_throughput", "machine": machine_info(),
              "command": " ".join(["python bench/beam_throughput.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "loadavg_before": list(os.getloadavg()), "baseline": "medfound embed, one process",
              "settings": {k: getattr(args, k) for k in DEFAULTS}, "rows": rows}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        module = str(export_module(scratch, args.arch))
        many, one, slides = inputs(Path(args.data), scratch, args.images,
                                   args.slide_copies)
        out = scratch / "out"
        out.mkdir()
        common = ["--module", module, "--batch-size", str(args.batch), "--quiet"]
        images = ["embed", *common, "--input", str(many), "--image-size", str(args.size),
                  "--part-size", str(2 * args.batch)]
        tiles = ["embed", *common, "--input", str(slides), "--slides", "--mpp", str(args.mpp),
                 "--image-size", "224"]  # tiles go to the module at their own size
        for kind, base, count in (("images", images, count_rows), ("slides", tiles, count_tiles)):
            rows.append(measure(kind, base, out, count, workers=args.workers,
                                repeats=args.repeats, warmup=args.warmup))
            print(f"done {kind}", flush=True)
        result.update(fixed_cost(module, one, out, args.workers, max(1, args.repeats // 2)))
    result["loadavg_after"] = list(os.getloadavg())
    result["memory_total_mb"] = psutil.virtual_memory().total / 2 ** 20
    at_scale(result)
    report(rows, ["kind", "items", "workers", "one_per_s", "beam_per_s", "beam_vs_one",
                  "beam_vs_one_at_scale", "spread_one", "spread_beam", "cores_busy_one",
                  "cores_busy_beam",
                  "peak_rss_mb_one", "peak_rss_mb_beam_process", "same_output"], args.json, result)
    return result


if __name__ == "__main__":
    main()
