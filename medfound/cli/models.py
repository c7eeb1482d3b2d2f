"""`medfound models`: the backbone architectures and the eight REMEDIS module names."""
from __future__ import annotations

import argparse
import json

from medfound.models.configs import ARCHITECTURES
from medfound.registry import HUB_MODULES, INIT_DATA


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models", help="list backbone architectures and the REMEDIS hub-module names",
        description="Lists the BiT ResNetV2 architectures (depth, width, parameters, embedding "
                    "dimension), the small test architectures (such as 'tiny', which the "
                    "quickstart uses) under their own heading, and the eight REMEDIS module "
                    "names with their input size, architecture and BiT initialisation.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--all", action="store_true",
                        help="kept for old scripts: test architectures are always listed now")
    parser.set_defaults(func=run, needs_tensorflow=False)


def _arch_record(s) -> dict:
    return {"name": s.name, "depth": s.depth, "width": s.width, "units": list(s.units),
            "params": s.num_params(), "embedding_dim": s.embedding_dim}


def _arch_table(title: str, specs) -> list[str]:
    lines = [title, f"{'architecture':<14}{'depth':>6}{'width':>7}{'units':>16}{'params':>14}"
                    f"{'embedding':>11}"]
    for s in specs:
        units = "-".join(map(str, s.units))
        lines.append(f"{s.name:<14}{s.depth:>6}{s.width:>7g}{units:>16}{s.num_params():>14,}"
                     f"{s.embedding_dim:>11}")
    return lines


def run(args: argparse.Namespace) -> int:
    real = [s for s in ARCHITECTURES.values() if not s.test_only]
    test = [s for s in ARCHITECTURES.values() if s.test_only]
    if args.json:
        print(json.dumps({
            "architectures": [_arch_record(s) for s in real],
            "test_architectures": [_arch_record(s) for s in test],
            "modules": [
                {"name": m.name, "modality": m.modality, "input_size": m.input_size,
                 "arch": m.arch, "init": m.init} for m in HUB_MODULES.values()],
        }, indent=2))
        return 0
    lines = _arch_table("Backbone architectures (BiT ResNetV2)", real)
    lines += [""] + _arch_table(
        "Test architectures (software tests and the quickstart demo only; not REMEDIS models)",
        test)
    lines += ["", "REMEDIS hub modules",
              f"{'module':<24}{'modality':>9}{'input':>9}{'arch':>8}  initialisation"]
    for m in HUB_MODULES.values():
        lines.append(f"{m.name:<24}{m.modality:>9}{m.input_size:>5}x{m.input_size:<3}{m.arch:>8}  "
                     f"{m.init} ({INIT_DATA[m.init]})")
    print("\n".join(lines))
    return 0
