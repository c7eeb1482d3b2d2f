"""`medfound label-efficiency`: modules x label fractions x seeds, and the labels each needs."""
from __future__ import annotations

import argparse

from medfound.cli.finetune import MODULE_HELP, _defaults, add_training_arguments, config_from_args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "label-efficiency", help="compare modules across label fractions (data-efficient generalisation)",
        description="Fine-tunes every module at every label fraction and seed (patient-level, nested "
                    "subsets), then writes results.json, table.md and label_efficiency.png, and the "
                    "smallest fraction of labels at which each module matches the baseline module "
                    "trained on all labels. Finished runs are reused, so an interrupted sweep resumes.")
    p.add_argument("--modules", nargs="+", required=True, help=MODULE_HELP + " (several)")
    p.add_argument("--baseline", help="module whose 100%% score is the target (default: the last)")
    p.add_argument("--fractions", default="0.01,0.05,0.1,0.25,0.5,1",
                   help="label fractions in (0, 1] (or percentages with %%), comma-separated; 1 "
                        "(all labels) is always added (default: %(default)s)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    add_training_arguments(p, _defaults())
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medfound.finetune.label_efficiency import label_efficiency

    from medfound.data.labeled import parse_fractions
    from medfound.errors import UserError

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        fractions = parse_fractions(args.fractions)
    except ValueError as error:
        if "above 1" in str(error):
            raise UserError(f"--fractions: {error}") from None
        raise UserError("--fractions and --seeds take comma-separated numbers") from None
    result = label_efficiency(config_from_args(args), args.modules, fractions, seeds,
                              baseline=args.baseline)
    print((result.out_dir / "table.md").read_text())
    print(f"results: {result.out_dir / 'results.json'}\nplot:    {result.out_dir / 'label_efficiency.png'}")
    return 0
