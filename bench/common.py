"""Timing helpers shared by the benchmarks: alternating repetitions, medians, ratios, matmul peak.

The machines these run on are shared and noisy, so a speed is never reported alone: every
candidate is timed in the same process as its baseline, in alternating repetitions, and the
headline figure is the median of the per-repetition ratios.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

MIN_REPEATS = 5


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (a plain float, for JSON)."""
    return float(statistics.median(values))


def time_once(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes; ``fn`` must block until its work is done."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternating(candidates: dict[str, Callable[[], object]], *, repeats: int = MIN_REPEATS,
                warmup: int = 1) -> dict[str, list[float]]:
    """Times every candidate ``repeats`` times, interleaved (A B C, B C A, ...) after ``warmup``
    untimed calls each, so slow drifts of a shared machine hit all candidates alike."""
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_once(candidates[name]))
    return times


def speed_ratio(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    """Median over repetitions of baseline time / candidate time (> 1: candidate is faster)."""
    return median([b / c for c, b in zip(candidate, baseline)])


def per_second(seconds: Sequence[float], items: int) -> float:
    """Items per second at the median repetition time."""
    return items / median(seconds)


def spread(seconds: Sequence[float]) -> float:
    """Relative spread of repetition times, (max - min) / median: how noisy a row was."""
    return (max(seconds) - min(seconds)) / median(seconds)


def matmul_peak_gflops(n: int = 2048, repeats: int = MIN_REPEATS) -> float:
    """GFLOP/s of a large float32 ``tf.matmul`` (n x n), the median of ``repeats`` timings."""
    import tensorflow as tf

    a = tf.random.stateless_uniform([n, n], seed=[1, 2])
    b = tf.random.stateless_uniform([n, n], seed=[3, 4])
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    product()
    seconds = [time_once(lambda: product().numpy()) for _ in range(repeats)]
    return 2.0 * n ** 3 / median(seconds) / 1e9


def graph_flops(fn, *specs) -> float:
    """Floating-point operations of one call of ``fn`` on ``specs``, counted from its graph.

    ``fn`` may be a ``tf.function`` with an input signature (then ``specs`` may be omitted).
    Counts 2 x multiply-adds of Conv2D, DepthwiseConv2dNative, MatMul and BatchMatMul ops with
    static shapes (everything else is small next to them in a ResNet); nested functions are
    walked too.
    """
    import tensorflow as tf

    if not hasattr(fn, "get_concrete_function"):
        fn = tf.function(fn, autograph=False)
    return _graph_flops(fn.get_concrete_function(*specs).graph)


def _graph_flops(graph) -> float:
    total = 0.0
    for op in graph.get_operations():
        kind = op.type
        if kind in ("Conv2D", "DepthwiseConv2dNative"):
            out = op.outputs[0].shape
            kernel = op.inputs[1].shape
            per_output = kernel[0] * kernel[1] * (kernel[2] if kind == "Conv2D" else 1)
            total += 2.0 * out.num_elements() * per_output
        elif kind in ("MatMul", "BatchMatMulV2", "BatchMatMulV3"):
            a = op.inputs[0].shape
            transpose = op.get_attr("transpose_a") if kind == "MatMul" else op.get_attr("adj_x")
            inner = a[-2] if transpose else a[-1]
            total += 2.0 * op.outputs[0].shape.num_elements() * inner
        for name in ("f", "then_branch", "body"):
            try:
                attr = op.get_attr(name)
            except (ValueError, TypeError):
                continue
            nested = graph._functions.get(getattr(attr, "name", ""))  # noqa: SLF001
            if nested is not None and hasattr(nested, "graph"):
                total += _graph_flops(nested.graph)
    return total


def machine_info() -> dict:
    """CPU model, core count, library versions and the date: what a table must state."""
    import keras
    import numpy
    import tensorflow as tf

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "python": platform.python_version(), "tensorflow": tf.__version__,
        "keras": keras.__version__, "numpy": numpy.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "note": "shared machine: other jobs run at the same time; trust ratios, not absolutes",
    }


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (floats with 3 significant digits)."""
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def fraction_axes(ax, title: str, *, title_size: float | None = None,
                  legend_size: float = 8) -> None:
    """Labels a test-AUC-against-label-fraction panel (log x axis), as every label-efficiency plot."""
    ax.set_xscale("log")
    ax.set_xlabel("training labels used (%)")
    ax.set_ylabel("test AUC (mean ± sd over seeds)")
    ax.set_title(title, fontsize=title_size)
    ax.legend(fontsize=legend_size)


def save_png(fig, path: str | os.PathLike) -> Path:
    """Lays out ``fig`` and writes it as a PNG via a temporary file renamed into place."""
    from medfound.utils.files import atomic_path

    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return Path(path)


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    """Writes the results as JSON via a temporary file renamed into place."""
    from medfound.utils.files import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def base_parser(description: str, default_json: str) -> argparse.ArgumentParser:
    """The options every benchmark has: repetitions, warm-up and where the JSON goes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS,
                        help=f"timed repetitions per candidate (median of these; >= "
                             f"{MIN_REPEATS} for published figures)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--json", default=default_json, help="where the results are written")
    return parser


def parse_with_defaults(parser: argparse.ArgumentParser, argv: list[str] | None,
                        defaults: dict, tiny: dict) -> argparse.Namespace:
    """Adds ``--tiny`` (smoke-test settings ``tiny``), parses ``argv`` and fills every option the
    user left unset (None) from ``tiny`` or ``defaults``: explicit flags win over either set."""
    parser.add_argument("--tiny", action="store_true",
                        help="smoke-test defaults: " + ", ".join(f"{k}={v}" for k, v in tiny.items()))
    args = parser.parse_args(argv)
    for key, value in (tiny if args.tiny else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def report(rows: Sequence[dict], columns: Sequence[str], path: str | os.PathLike,
           payload: dict) -> None:
    """Prints the table of ``rows`` and writes the full results to ``path`` (every script's end)."""
    print(format_table(rows, columns))
    write_json(path, payload)
    print(f"wrote {path}")
