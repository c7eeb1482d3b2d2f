#!/usr/bin/env python
"""Turn up to eight pretraining runs into the canonical REMEDIS release folder.

Usage::

    python export/make_release.py --out release/ \
        --module cxr-50x1-remedis-m=runs/cxr-r50x1-bitm \
        --module path-152x2-remedis-s=runs/path-r152x2-bits
    medfound publish release/
    medfound verify release/

Each ``--module NAME=RUN`` exports one run (a folder with run.json + backbone.weights.h5) as the
module NAME; export refuses a name that disagrees with the run's architecture, modality or BiT
initialisation. ``--module RUN`` (no name) lets the run's own record choose the name. The release
folder gets one SavedModel folder per name, the release MODEL_CARD.md and ``release.json``
(which run became which module). Nothing is published until ``medfound publish`` runs.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_module(text: str) -> tuple[str | None, Path]:
    """'NAME=RUN' -> (NAME, RUN); 'RUN' -> (None, RUN)."""
    name, sep, run = text.partition("=")
    return (name, Path(run)) if sep else (None, Path(text))


def make_release(modules: list[tuple[str | None, Path]], out: Path,
                 model_card: Path | None = None, *, allow_test_arch: bool = False) -> dict:
    """Exports every (name, run) pair into ``out``; returns the release record it writes.

    ``allow_test_arch`` is for the test suite only (tiny runs under registry names); the command
    line has no such option.
    """
    from medfound.export.exporter import export_module
    from medfound.formats.metadata import read_metadata
    from medfound.registry import HUB_MODULES
    from medfound.utils.files import atomic_path

    if not 1 <= len(modules) <= len(HUB_MODULES):
        raise SystemExit(f"give between 1 and {len(HUB_MODULES)} --module arguments")
    out.mkdir(parents=True, exist_ok=True)
    record = {"modules": {}}
    for name, run in modules:
        staging = out / ".staging"  # the final name is only known once the run has been read
        path = export_module(run, staging, name=name, allow_test_arch=allow_test_arch)
        meta = read_metadata(path)
        if meta.name in record["modules"]:
            shutil.rmtree(staging)
            raise SystemExit(f"two runs give the module {meta.name}; one run per name")
        final = out / meta.name
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        record["modules"][meta.name] = {"run": str(run), "arch": meta.arch,
                                        "init": meta.init, "steps": meta.steps,
                                        "pretraining_data": meta.pretraining_data}
        print(f"exported {run} -> {final}")
    card = model_card or REPO / "MODEL_CARD.md"
    with atomic_path(out / "MODEL_CARD.md") as tmp:
        shutil.copyfile(card, tmp)
    with atomic_path(out / "release.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="release folder to fill")
    parser.add_argument("--module", action="append", required=True, type=parse_module,
                        metavar="NAME=RUN", help="a run to export (repeat, up to eight)")
    parser.add_argument("--model-card", type=Path, help="release card (default: MODEL_CARD.md)")
    args = parser.parse_args(argv)
    record = make_release(args.module, args.out, args.model_card)
    print(f"{len(record['modules'])} module(s) in {args.out}; next: medfound publish {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
