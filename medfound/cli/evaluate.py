"""`medfound evaluate`: a fine-tuned model on another dataset and under graded synthetic shifts."""
from __future__ import annotations

import argparse

from medfound.cli.finetune import DATA_HELP, TASK_CHOICES
from medfound.cli.options import parse_key_values
from medfound.evaluation.shift_names import DEFAULT_SEVERITIES, MAX_SEVERITY, SHIFT_KINDS

from medfound.finetune.evaluate import SPLITS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="evaluate a fine-tuned model out of distribution and under synthetic shifts",
        description="Scores a fine-tuned model (a `medfound finetune` folder or its model.keras) on a labeled "
                    "dataset, possibly another one than it was trained on (classes matched by name), and "
                    "optionally under synthetic shifts at graded severities. Writes metrics.json, roc.png and "
                    "shifts.png (performance against severity).")
    p.add_argument("--model", required=True, help="fine-tune output folder or its model.keras")
    p.add_argument("--task", required=True, choices=TASK_CHOICES,
                   help="labeled task the model was fine-tuned on")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="patient-level split to evaluate on (default: %(default)s)")
    p.add_argument("--shift", action="append", default=[],
                   help=f"synthetic shift(s) to apply: {', '.join(SHIFT_KINDS)} (repeatable or comma-separated)")
    p.add_argument("--severities", default=",".join(f"{s:g}" for s in DEFAULT_SEVERITIES),
                   help=f"comma-separated severities in [0, {MAX_SEVERITY:g}] (default: %(default)s)")
    p.add_argument("--image-size", type=int, help="input size (default: as fine-tuned)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default: %(default)s)")
    p.add_argument("--threshold", type=float, help="decision threshold (default: as fine-tuned)")
    p.add_argument("--n-boot", type=int, default=1000,
                   help="bootstrap draws for the 95%% intervals (default: %(default)s)")
    p.add_argument("--data-option", action="append", default=None, metavar="KEY=VALUE",
                   help="keyword argument for the task loader (default: the fine-tune's on the same data)")
    p.add_argument("--seed", type=int, help="split seed (default: the fine-tune's on the same data, else 0)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def _severities(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        from medfound.errors import UserError

        raise UserError(f"--severities takes numbers like 0,1,2, got {text!r}") from None


def config_from_args(args: argparse.Namespace):
    """The EvaluateConfig the parsed command line describes."""
    from medfound.finetune.evaluate import EvaluateConfig

    shifts = [k.strip() for item in args.shift for k in item.split(",") if k.strip()]
    return EvaluateConfig(
        model=args.model, task=args.task, data=args.data, out_dir=args.out, split=args.split, shifts=shifts,
        severities=_severities(args.severities), image_size=args.image_size, batch_size=args.batch_size,
        threshold=args.threshold, n_boot=args.n_boot,
        data_options=parse_key_values(args.data_option, "--data-option") if args.data_option is not None else None,
        seed=args.seed, verbose=not args.quiet)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    config.validate()  # a ValueError naming every problem: one line from medfound.cli.main
    from medfound.finetune.evaluate import evaluate

    metrics = evaluate(config)
    auc = metrics["clean"]["mean_auc"]
    print(f"clean mean AUC: {'n/a' if auc is None else f'{auc:.4f}'}")
    for kind, rows in metrics["shifts"].items():
        values = ", ".join(f"{r['severity']:g}: " + ("n/a" if r["mean_auc"] is None else f"{r['mean_auc']:.3f}")
                           for r in rows)
        print(f"{kind}: {values}")
    print(f"metrics: {config.out_dir}/metrics.json")
    return 0
