"""Label efficiency of each pretraining method on PneumoniaMNIST, side by side.

Runs ``bench/label_efficiency_pneumonia.py`` once per ``--methods`` entry (linear probe by default,
everything else as that script's defaults), each in ``OUT/<method>`` (a finished run there is
reused), then writes one table, one JSON and one PNG with a curve per method and the random-init
baseline.

    python bench/methods_pneumonia.py --methods simclr,barlow,moco,byol,relic
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import label_efficiency_pneumonia  # noqa: E402
from bench.common import machine_info, report  # noqa: E402

# MoCo's queue must stay well below the 4,708 training images, or each query meets keys of its
# own image among the negatives (the library's default of 16,384 is for ImageNet-sized data).
MOCO_QUEUE = 1024


def run_method(method: str, out: Path, args, extra: list[str]) -> dict:
    """The per-method benchmark's JSON, running it unless ``out`` already holds a finished run."""
    import json

    result_file = out / "label_efficiency.json"
    if args.reuse and result_file.is_file():
        result = json.loads(result_file.read_text())
        if "total_seconds" in result:  # finished (partial files lack it)
            print(f"{method}: reusing {result_file}", flush=True)
            return result
    argv = ["--method", method, "--modes", args.mode, "--out", str(out), *extra]
    if method == "moco":
        argv += ["--moco-queue-size", str(args.moco_queue_size)]
    return label_efficiency_pneumonia.main(argv)


def merge(results: dict[str, dict], mode: str) -> list[dict]:
    """One row per (method or 'random init', fraction): mean, spread and n of the test AUC."""
    rows: list[dict] = []
    random_rows = None
    for method, result in results.items():
        mine = [r for r in result["rows"] if r["mode"] == mode]
        rows += [dict(r, method=method) for r in mine if r["init"] == "pretrained"]
        random_rows = random_rows or [dict(r, method="random init") for r in mine
                                      if r["init"] == "random"]
    return rows + (random_rows or [])


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["fraction"])
        ax.errorbar([100 * r["fraction"] for r in mine], [r["test_auc_mean"] for r in mine],
                    yerr=[r["test_auc_std"] for r in mine], marker="o", capsize=3, label=method,
                    linestyle="--" if method == "random init" else "-")
    ax.set(xscale="log", xlabel="labels used (%)", ylabel="test AUC (mean ± sd over seeds)",
           title="PneumoniaMNIST: pretraining methods against random init")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="simclr,barlow,moco,byol,relic")
    parser.add_argument("--mode", choices=["linear", "full"], default="linear")
    parser.add_argument("--moco-queue-size", type=int, default=MOCO_QUEUE,
                        help="MoCo's queue (default %(default)s; see the module)")
    parser.add_argument("--out", default="bench/results/methods_pneumonia")
    parser.add_argument("--no-reuse", dest="reuse", action="store_false",
                        help="run every method again even where OUT/<method> has finished")
    args, extra = parser.parse_known_args(argv)  # the rest goes to each per-method run
    out = Path(args.out)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    results = {m: run_method(m, out / m, args, extra) for m in methods}
    rows = merge(results, args.mode)
    for row in rows:
        row["percent"] = f"{100 * row['fraction']:g}%"
    result = {"benchmark": "methods_pneumonia", "machine": machine_info(), "mode": args.mode,
              "command": " ".join(["python bench/methods_pneumonia.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "baseline": "the same architecture from random initialisation, fine-tuned the same "
                          "way (the 'random init' rows; identical in every method's run)",
              "moco_queue_size": args.moco_queue_size,
              "fraction_to_match": {m: r["fraction_to_match"].get(args.mode)
                                    for m, r in results.items()},
              "pretraining_losses": {m: r["pretrain"]["losses"] for m, r in results.items()},
              "plot": str(plot(rows, out / "methods_pneumonia.png")), "rows": rows}
    report(rows, ["method", "percent", "test_auc_mean", "test_auc_std", "n"],
           out / "methods_pneumonia.json", result)
    for method, need in result["fraction_to_match"].items():
        print(f"{method}: matches random init @ 100 % with "
              f"{'no fraction tried' if need is None else f'{need:.0%} of the labels'}")
    return result


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
