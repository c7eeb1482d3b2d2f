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
                    "dimension) and the eight REMEDIS module names with their input size, "
                    "architecture and BiT initialisation.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--all", action="store_true",
                        help="also list the small test-only configurations")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    archs = [s for s in ARCHITECTURES.values() if args.all or not s.test_only]
    if args.json:
        print(json.dumps({
            "architectures": [
                {"name": s.name, "depth": s.depth, "width": s.width, "units": list(s.units),
                 "params": s.num_params(), "embedding_dim": s.embedding_dim} for s in archs],
            "modules": [
                {"name": m.name, "modality": m.modality, "input_size": m.input_size,
                 "arch": m.arch, "init": m.init} for m in HUB_MODULES.values()],
        }, indent=2))
        return 0
    print(f"{'architecture':<14}{'depth':>6}{'width':>7}{'units':>16}{'params':>14}{'embedding':>11}")
    for s in archs:
        units = "-".join(map(str, s.units))
        print(f"{s.name:<14}{s.depth:>6}{s.width:>7g}{units:>16}{s.num_params():>14,}"
              f"{s.embedding_dim:>11}")
    print()
    print(f"{'module':<24}{'modality':>9}{'input':>9}{'arch':>8}  initialisation")
    for m in HUB_MODULES.values():
        print(f"{m.name:<24}{m.modality:>9}{m.input_size:>5}x{m.input_size:<3}{m.arch:>8}  "
              f"{m.init} ({INIT_DATA[m.init]})")
    return 0
