"""The Beam transform and driver behind ``medfound embed --engine beam`` (plain images).

Work items are parts: ``(start, end, paths[start:end])``. A worker embeds a part with exactly
the code ``medfound embed`` runs in one process (``medfound.embed._embed_into_parts``: the same
decoding, ``prepare_image``, batches of ``batch_size`` consecutive inputs counted from input 0,
and the same part file), so every row has the value one process gives, and a rerun after a kill
gives the same bytes. Batches are these fixed blocks, not ``beam.BatchElements``: that groups by
bundle and timing, and convolution results change in the last bits with a batch's make-up.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import apache_beam as beam

from medfound.embed import (EmbedConfig, EmbedError, EmbedResult, ModuleEmbedder, _checked_output,
                            _embed_into_parts, _image_size, _probe_dim, _read_part,
                            contiguous_parts, finish_output, hold_parts, list_inputs,
                            parts_manifest, sidecar_paths)
from medfound.beam.parts import pending_parts
from medfound.utils.progress import make_progress

LOCK_COMMAND = "embed --engine beam"


class _Window(Sequence):
    """``paths[start:start + len(part)]`` indexed by global input number, as the part code uses."""

    def __init__(self, start: int, part: Sequence[str]):
        self.start, self.part = start, list(part)

    def __len__(self) -> int:
        return self.start + len(self.part)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self.part[key.start - self.start:key.stop - self.start]
        return self.part[key - self.start]


class EmbedPartFn(beam.DoFn):
    """Embeds one part per element into ``parts_dir``; the module is loaded once per worker."""

    def __init__(self, config: EmbedConfig, parts_dir: str, image_size: int, dim: int):
        self.config, self.parts_dir = config, parts_dir
        self.image_size, self.dim = image_size, dim
        self._embedder = None

    def setup(self) -> None:
        self._embedder = ModuleEmbedder.for_config(self.config)

    def process(self, element):
        start, end, paths = element
        _embed_into_parts(self._embedder, _Window(start, paths), range(start, end),
                          config=self.config, parts_dir=Path(self.parts_dir),
                          image_size=self.image_size, dim=self.dim,
                          progress=make_progress(end, verbose=False, unit_name="image"))
        yield start, end


class EmbedImages(beam.PTransform):
    """``(start, end, paths)`` parts -> part files in ``parts_dir``; yields each (start, end).

    Python users build their own pipeline with it; ``embed_with_beam`` is the whole command.
    The parts are spread over the workers (``Reshuffle``) before the module runs.
    """

    def __init__(self, config: EmbedConfig, parts_dir: str | Path, image_size: int, dim: int):
        super().__init__()
        self._fn = EmbedPartFn(config, str(parts_dir), image_size, dim)

    def expand(self, pcoll):
        return pcoll | "Spread" >> beam.Reshuffle() | "Embed" >> beam.ParDo(self._fn)


def embed_with_beam(config: EmbedConfig, beam_args: Sequence[str] = ()) -> EmbedResult:
    """``medfound embed`` on Beam: the same output, failures and resumption as ``embed``.

    ``beam_args`` are Beam's pipeline options (``--runner``, ``--direct_num_workers``, ...),
    passed to ``PipelineOptions`` untouched. Workers and this process must see the module, the
    inputs and the output's folder at the same paths (a shared file system).
    """
    _refuse_single_process_options(config)
    out, fmt = _checked_output(config)
    parts_dir, failures_file = sidecar_paths(out)
    paths = list_inputs(config.input, path_column=config.path_column, root=config.root)
    embedder = ModuleEmbedder.for_config(config)  # the fingerprint, size and width the parts record
    image_size = _image_size(config, embedder)
    dim = _probe_dim(embedder, image_size)
    part_size = -(-config.part_size // config.batch_size) * config.batch_size
    with hold_parts(parts_dir, parts_manifest(paths, embedder, image_size), LOCK_COMMAND):
        pending = pending_parts(parts_dir, len(paths), part_size)
        if pending:
            _run_pipeline(config, parts_dir, image_size, dim, paths, pending, beam_args)
        failures = [(paths[int(i)], str(p)) for file in contiguous_parts(parts_dir, len(paths))
                    for i, p in zip(*_failed(file))]
        count = finish_output(out, fmt, paths, failures, dim, module=embedder.name,
                              image_size=image_size)
    return EmbedResult(out=out, complete=True, num_inputs=len(paths), num_embedded=count,
                       processed=sum(end - start for start, end in pending), failures=failures,
                       failures_file=failures_file, embedding_dim=dim, image_size=image_size,
                       parts_dir=parts_dir)


def _run_pipeline(config: EmbedConfig, parts_dir: Path, image_size: int, dim: int,
                  paths: list[str], pending: list[tuple[int, int]], beam_args) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    items = [(start, end, paths[start:end]) for start, end in pending]
    options = PipelineOptions(list(beam_args))
    options.get_all_options(display_warnings=True)  # Beam's own 'did you mean' for a typo
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline | "Parts" >> beam.Create(items)
             | "EmbedImages" >> EmbedImages(config, parts_dir, image_size, dim))


def _failed(file: Path):
    part = _read_part(file)
    return part["failed_index"], part["failed_problem"]


def _refuse_single_process_options(config: EmbedConfig) -> None:
    """Options whose meaning is one process's are refused rather than silently ignored."""
    if config.max_images is not None:
        raise EmbedError("--max-images stops one process part way; with --engine beam stop the "
                         "pipeline instead (a rerun continues from its finished parts)")
    if not config.skip_bad_images:
        raise EmbedError("--no-skip-bad-images stops at the first bad image, which has no "
                         "order across workers; with --engine beam bad images are listed")
    if config.strategy != "default":
        raise EmbedError("--strategy places one process's batches on its devices; with "
                         "--engine beam give the runner's own options instead")
