"""`medfound embed`: pooled embeddings of a folder or CSV of images, resumable, to npz/h5/parquet."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from medfound.models.configs import GN_STATISTICS  # no TensorFlow at import

    p = subparsers.add_parser(
        "embed", help="embed a folder or CSV of images with a module (npz, h5 or parquet)",
        description="Writes one row per image (its path and the module's pooled embedding). "
                    "Work is saved in parts beside the output, so running the same "
                    "command again after an interruption continues where it stopped. Bad images "
                    "are skipped and listed in <stem>.failures.csv.")
    p.add_argument("--module", required=True,
                   help="module folder, .tar.gz, .keras file or REMEDIS name on the search path")
    p.add_argument("--input", required=True, help="image folder (searched recursively) or CSV")
    p.add_argument("--out", required=True, help="output file: .npz, .h5 or .parquet")
    p.add_argument("--image-size", type=int,
                   help="square side the images are resized to (default: the module's)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default: %(default)s)")
    p.add_argument("--part-size", type=int,
                   help="images (tiles with --slides) per saved part, the unit of resumption "
                        "(default 1024; 256 with --slides)")
    p.add_argument("--path-column", help="CSV column with image paths (default: guessed)")
    p.add_argument("--root", help="folder the CSV paths are relative to (default: the CSV's)")
    skip = p.add_mutually_exclusive_group()
    skip.add_argument("--skip-bad-images", dest="skip_bad_images", action="store_true",
                      default=True, help="list bad images and go on (the default)")
    skip.add_argument("--no-skip-bad-images", dest="skip_bad_images", action="store_false",
                      help="stop at the first bad image")
    p.add_argument("--max-images", type=int,
                   help="stop after this many images (run again to continue)")
    p.add_argument("--strategy", choices=["default", "mirrored", "tpu"], default="default",
                   help="devices each batch is split over: default (one), mirrored (all local "
                        "GPUs), tpu (a TPU VM); no multiworker: embedding needs no exchange "
                        "between hosts: for several hosts use --engine beam "
                        "(default: %(default)s)")
    p.add_argument("--engine", choices=["local", "beam"], default="local",
                   help="local: this process (the default); beam: an Apache Beam pipeline (pip "
                        "install medfound[beam]), every option after the medfound ones passed "
                        "to Beam untouched, e.g. --direct_num_workers 2 --direct_running_mode "
                        "multi_processing, or --runner DataflowRunner and its options; the "
                        "module, inputs and output must be at paths every worker sees")
    p.add_argument("--xla", action="store_true",
                   help="compile the backbone's forward pass with XLA (jit_compile); the input "
                        "checks stay outside it")
    p.add_argument("--group-norm-statistics", choices=GN_STATISTICS, default="two_pass",
                   help="GroupNorm variance: two_pass (mean, then squared deviations) or one_pass "
                        "(E[x^2] - E[x]^2, one read of the map) (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    slides = p.add_argument_group(
        "whole-slide images (--slides)",
        "With --slides, --input is a folder (searched recursively) or CSV of slides (.tif, .svs, "
        "...) and --out a folder that gets one <slide>.h5 per slide (coords: level-0 x, y; "
        "features; attributes), a <slide>.tissue.png and failures.csv. Only tissue is tiled. "
        "Runs resume per slide and within a slide; a slide that fails is listed and the others "
        "go on.")
    slides.add_argument("--slides", action="store_true", help="embed tiles of whole slides")
    res = slides.add_mutually_exclusive_group()
    res.add_argument("--mpp", type=float, default=0.5,
                     help="tile resolution in microns per pixel (default 0.5, about 20x)")
    res.add_argument("--magnification", help="tile resolution as an objective, e.g. 20x")
    slides.add_argument("--tile-size", type=int, default=224,
                        help="tile side in pixels at that resolution (default 224)")
    slides.add_argument("--stride", type=int, help="grid step in pixels (default: the tile size)")
    slides.add_argument("--min-tissue", type=float, default=0.25,
                        help="keep tiles with at least this tissue fraction (default 0.25)")
    slides.add_argument("--annotations",
                        help="folder of <slide>.xml (ASAP) annotations: adds tumor_fraction")
    slides.add_argument("--base-mpp", type=float,
                        help="level-0 microns per pixel for slides that do not record it")
    slides.add_argument("--max-tiles", type=int,
                        help="stop after this many tiles (run again to continue)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.slides:
        return run_slides(args)
    from medfound.embed import EmbedConfig, embed

    config = EmbedConfig(
        module=args.module, input=args.input, out=args.out, image_size=args.image_size,
        batch_size=args.batch_size, part_size=args.part_size or 1024,
        skip_bad_images=args.skip_bad_images, path_column=args.path_column, root=args.root,
        max_images=args.max_images, overwrite=args.overwrite, progress=not args.quiet,
        strategy=args.strategy, xla=args.xla,
        group_norm_statistics=args.group_norm_statistics)
    if args.engine == "beam":
        result = _embed_with_beam(config, getattr(args, "engine_args", []))
    else:
        result = embed(config)  # EmbedError, ImageError, ...: one line from medfound.cli.main
    print(result.summary())
    return 0


def _embed_with_beam(config, beam_args: list[str]):
    require_beam()
    from medfound.beam.images import embed_with_beam

    return embed_with_beam(config, beam_args)


def require_beam() -> None:
    """An EmbedError saying how to install Apache Beam when ``--engine beam`` lacks it."""
    import importlib.util

    from medfound.embed import EmbedError

    if importlib.util.find_spec("apache_beam") is None:
        raise EmbedError("--engine beam needs Apache Beam: pip install 'medfound[beam]'")


def run_slides(args: argparse.Namespace) -> int:
    from medfound.slides.embed import SlideEmbedConfig, embed_slides
    from medfound.slides.tiling import TilingConfig

    # SlideError, EmbedError, FileNotFoundError, ValueError: one line from medfound.cli.main.
    config = SlideEmbedConfig(
        module=args.module, input=args.input, out_dir=args.out,
        tiling=TilingConfig(mpp=args.mpp, magnification=args.magnification,
                            tile_size=args.tile_size, stride=args.stride,
                            min_tissue=args.min_tissue),
        image_size=args.image_size, batch_size=args.batch_size,
        flush_every=256 if args.part_size is None else args.part_size,
        annotations=args.annotations, base_mpp=args.base_mpp, max_tiles=args.max_tiles,
        path_column=args.path_column, root=args.root, progress=not args.quiet, xla=args.xla,
        group_norm_statistics=args.group_norm_statistics)
    if args.engine == "beam":
        require_beam()
        from medfound.beam.slides import embed_slides_with_beam

        result = embed_slides_with_beam(config, getattr(args, "engine_args", []))
    else:
        result = embed_slides(config)
    print(result.summary())
    return 1 if result.failures and not result.done else 0
