"""Whole slides on Beam: one work item per slide, each embedded by ``medfound.slides.embed``.

A worker loads the module once and runs ``embed_slide`` (tissue detection, tiling, streamed
tiles, resumable parts, one ``<slide>.h5``) on each slide it is given, so every file is the one
``medfound embed --slides`` writes; a slide that fails is listed by name in ``failures.csv``,
in the input order, and the others go on. Finished slides are skipped on a rerun.
"""
from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from pathlib import Path

import apache_beam as beam

from medfound.embed import ModuleEmbedder
from medfound.slides.embed import (FAILURES_FILE, LOCK_COMMAND, SlideEmbedConfig,
                                   SlideEmbedResult, SlideError, _failure, _record_failures,
                                   embed_slide, prepare_slides, slide_sizes)


class EmbedSlideFn(beam.DoFn):
    """``(index, slide)`` -> ``(index, slide, problem or None, tiles added)``."""

    def __init__(self, config: SlideEmbedConfig):
        self.config = config
        self._embedder = None

    def setup(self) -> None:
        self._embedder = ModuleEmbedder.for_config(self.config)
        self._sizes = slide_sizes(self.config, self._embedder)

    def process(self, element):
        index, slide = element
        try:
            _, added = embed_slide(Path(slide), self.config, self._embedder, *self._sizes)
        except Exception as err:  # noqa: BLE001 - the per-slide boundary, as in one process
            yield index, slide, _failure(Path(slide), err), 0
            return
        yield index, slide, None, added


class _WriteFailures(beam.DoFn):
    """Writes failures.csv (input order) once every slide is done, as ``_embed_all`` does."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def process(self, outcomes):
        failures = [(slide, problem) for _, slide, problem, _ in sorted(outcomes) if problem]
        out_dir = Path(self.out_dir)
        if failures or (out_dir / FAILURES_FILE).exists():
            _record_failures(out_dir, failures)
        yield sum(added for *_, added in outcomes)


class EmbedSlides(beam.PTransform):
    """``(index, slide path)`` -> one ``<slide>.h5`` each in ``config.out_dir`` and its
    failures.csv; yields the number of tiles embedded."""

    def __init__(self, config: SlideEmbedConfig):
        super().__init__()
        self.config = config

    def expand(self, pcoll):
        return (pcoll | "Spread" >> beam.Reshuffle()
                | "Embed" >> beam.ParDo(EmbedSlideFn(self.config))
                | "All" >> beam.combiners.ToList()
                | "Failures" >> beam.ParDo(_WriteFailures(str(self.config.out_dir))))


def embed_slides_with_beam(config: SlideEmbedConfig,
                           beam_args: Sequence[str] = ()) -> SlideEmbedResult:
    """``medfound embed --slides`` on Beam: the same files, failures and resumption."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from medfound.pretrain.runfolder import locked

    if config.max_tiles is not None:
        raise SlideError("--max-tiles stops one process part way; with --engine beam stop the "
                         "pipeline instead (a rerun skips finished slides)")
    slides, out_dir, unannotated = prepare_slides(config)
    start = time.perf_counter()
    with locked(out_dir, LOCK_COMMAND):
        before = {s for s in slides if (out_dir / f"{s.stem}.h5").is_file()}
        options = PipelineOptions(list(beam_args))
        options.get_all_options(display_warnings=True)  # Beam's own 'did you mean' for a typo
        with beam.Pipeline(options=options) as pipeline:
            _ = (pipeline | "Slides" >> beam.Create([(i, str(s)) for i, s in enumerate(slides)])
                 | "EmbedSlides" >> EmbedSlides(config))
        failures = _read_failures(out_dir / FAILURES_FILE)
    failed = {slide for slide, _ in failures}
    done = [out_dir / f"{s.stem}.h5" for s in slides
            if str(s) not in failed and (out_dir / f"{s.stem}.h5").is_file()]
    return SlideEmbedResult(done=done, failures=failures, tiles=_tiles(done, before, out_dir),
                            seconds=time.perf_counter() - start, complete=True,
                            unannotated=[str(s) for s in unannotated],
                            annotations=config.annotations)


def _read_failures(file: Path) -> list[tuple[str, str]]:
    if not file.is_file():
        return []
    with open(file, newline="") as f:
        return [(row[0], row[1]) for row in list(csv.reader(f))[1:]]


def _tiles(done: list[Path], before: set[Path], out_dir: Path) -> int:
    """Tiles in the slides this run finished (a slide resumed mid-way counts whole)."""
    import h5py

    finished_before = {out_dir / f"{s.stem}.h5" for s in before}
    total = 0
    for file in done:
        if file not in finished_before:
            with h5py.File(file, "r") as f:
                total += int(f.attrs["num_tiles"])
    return total
