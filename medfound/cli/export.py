"""`medfound export`: write a run or checkpoint as one of the eight REMEDIS hub modules."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from medfound.export.exporter import FORMATS  # no TensorFlow at import
    from medfound.models.configs import GN_STATISTICS

    parser = subparsers.add_parser(
        "export", help="export a pretraining run or checkpoint as a REMEDIS hub module",
        description="Writes a TF2 SavedModel usable as hub.load(path)(images) (or a .keras / "
                    ".onnx file). The name must be a REMEDIS module name agreeing with the "
                    "checkpoint's architecture, modality and BiT initialisation; it may be "
                    "omitted when the run records all three.")
    parser.add_argument("checkpoint", help="run folder (run.json + backbone.weights.h5), BiT .npz, "
                                           ".weights.h5 (with --arch), or a SavedModel folder to "
                                           "convert (a module or a PhysioNet REMEDIS file)")
    parser.add_argument("--name", help="module name, e.g. cxr-50x1-remedis-m")
    parser.add_argument("--out", required=True,
                        help="SavedModel folder to write; for keras/onnx a file or a folder")
    parser.add_argument("--format", dest="fmt", default="saved_model",
                        choices=FORMATS,
                        help="saved_model: TF2 hub module (hub.load); keras: native .keras "
                             "backbone (any Keras 3 backend); onnx: ONNX graph; timm: folder for "
                             "timm.create_model('local-dir:DIR') (default: %(default)s)")
    parser.add_argument("--fold", action="store_true",
                        help="write the faster inference form (kernels standardised once; not "
                             "fine-tunable through the module; recorded in its metadata)")
    parser.add_argument("--xla", action="store_true",
                        help="compile the module's forward pass with XLA (jit_compile; input "
                             "checks stay outside); needs a TensorFlow with the XLA JIT to run "
                             "(pip TensorFlow has it); recorded in its metadata")
    parser.add_argument("--group-norm-statistics", choices=GN_STATISTICS, default="two_pass",
                        help="GroupNorm variance: two_pass (mean, then squared deviations) or "
                             "one_pass (E[x^2] - E[x]^2, one read of the map); recorded in its "
                             "metadata (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier export at --out (never a file or folder "
                             "medfound did not write)")
    parser.add_argument("--arch", help="architecture of a bare .weights.h5 (or .npz)")
    parser.add_argument("--init", choices=("bit-s", "bit-m"),
                        help="BiT initialisation of a .npz/.weights.h5 whose run does not say")
    parser.add_argument("--modality", choices=("cxr", "path"),
                        help="modality when the run does not record it")
    parser.add_argument("--allow-test-arch", action="store_true",
                        help=argparse.SUPPRESS)  # tests only: tiny archs under registry names
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medfound.export.exporter import export_module

    # ExportError, FileNotFoundError, ValueError: one line from medfound.cli.main.
    path = export_module(args.checkpoint, args.out, name=args.name, fmt=args.fmt,
                         arch=args.arch, init=args.init, modality=args.modality,
                         allow_test_arch=args.allow_test_arch, fold=args.fold,
                         jit_compile=args.xla, group_norm_statistics=args.group_norm_statistics,
                         overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0
