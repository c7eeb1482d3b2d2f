"""Slides -> one HDF5 per slide (``coords``, ``features``, attributes), resumable and fault-tolerant.

Each slide's tiles (tissue only, see :mod:`medfound.slides.tiling`) are embedded in batches;
every ``flush_every`` tiles the rows are saved as a part (``part-START-END.npy``, written to a
temporary name and renamed) in ``<stem>.h5.parts/``, with a manifest of the settings. When every
tile is done the parts are merged, part by part, into ``<stem>.h5`` (written to a temporary path
and renamed) and the parts are removed. Running the same command again skips finished slides and
continues a killed one from its last saved part, so no tile is stored twice; a kill can never
leave a half-written HDF5 file (HDF5 files are not crash-safe, renamed .npy parts are). A slide
that fails is listed by name in ``failures.csv`` and the others go on. Tiles are read by a
background thread into a queue of at most two batches, so memory is bounded whatever the slide's
size. Attributes: mpp, tile size (pixels and level-0), level read, module name and fingerprint,
slide path and size, as CLAM / TRIDENT files carry them.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re
import queue
import sys
import threading
import time
from pathlib import Path

import numpy as np

from medfound.embed import contiguous_parts, open_parts
from medfound.slides.inputs import list_slides, plan_outputs, slide_identity
from medfound.slides.reader import SLIDE_SUFFIXES, SlideError, open_slide
from medfound.slides.tiling import TilingConfig, plan_tiles, read_tile
from medfound.slides.tissue import detect_tissue, overlay_png
from medfound.utils.progress import StatusLine

FAILURES_FILE = "failures.csv"
LOCK_COMMAND = "embed --slides"  # who holds --out (medfound.pretrain.runfolder.locked)
FORMAT_VERSION = 1


@dataclasses.dataclass
class SlideEmbedConfig:
    """Which slides, which module, tile geometry, and where the per-slide files go."""

    module: str
    input: str  # folder of slides (recursive) or CSV with a 'slide' (or 'path') column
    out_dir: str
    tiling: TilingConfig = dataclasses.field(default_factory=TilingConfig)
    image_size: int | None = None  # size fed to the module; default: the module's input size
    batch_size: int = 32
    flush_every: int = 256  # tiles per saved part (the unit of resumption)
    annotations: str | None = None  # folder of <slide stem>.xml (ASAP); adds 'tumor_fraction'
    path_column: str | None = None  # CSV input: the column naming the slides (default: guessed)
    root: str | None = None  # CSV input: the folder its paths are relative to (default: its own)
    base_mpp: float | None = None  # level-0 um/px for files that do not record it
    max_tiles: int | None = None  # stop (resumably) after this many tiles in this call
    progress: bool = True
    xla: bool = False  # the module's forward pass XLA-compiled (EmbedConfig.xla)
    group_norm_statistics: str = "two_pass"  # GroupNorm's variance (models.configs.GN_STATISTICS)

    def validate(self) -> None:
        """Refuses, in one line naming each flag and its range, every number that makes no
        sense for a slide (medfound.slides.limits), before anything is read or written."""
        from medfound.slides.limits import problems

        found = self.tiling.problems() + problems({
            "base_mpp": self.base_mpp, "batch_size": self.batch_size,
            "flush_every": self.flush_every, "max_tiles": self.max_tiles,
            "image_size": self.image_size})
        found += [f"--{name.replace('_', '-')} is empty; give a folder" for name in
                  ("annotations", "root") if getattr(self, name) is not None
                  and not str(getattr(self, name)).strip()]
        if found:
            raise SlideError("; ".join(found))


@dataclasses.dataclass
class SlideEmbedResult:
    done: list[Path]  # finished per-slide files (this call or earlier)
    failures: list[tuple[str, str]]  # (slide, problem)
    tiles: int  # tiles embedded by this call
    seconds: float
    complete: bool
    unannotated: list[str] = dataclasses.field(default_factory=list)  # no <slide>.xml found
    annotations: str | None = None  # the --annotations folder

    def summary(self) -> str:
        rate = self.tiles / self.seconds if self.seconds > 0 else 0.0
        lines = [f"{len(self.done)} slide(s) embedded, {self.tiles} tiles this run "
                 f"({rate:.1f} tiles/s)" + ("" if self.complete else
                                            "; stopped early: run again to continue")]
        if self.unannotated:
            names = ", ".join(Path(s).name for s in self.unannotated[:5])
            lines.append(f"{len(self.unannotated)} slide(s) have no annotation in "
                         f"{self.annotations} (tumor_fraction 0): {names}"
                         + (" ..." if len(self.unannotated) > 5 else ""))
        lines += [f"  failed: {problem}" if problem.startswith(f"{slide}:") else
                  f"  failed: {slide}: {problem}" for slide, problem in self.failures]
        return "\n".join(lines)


def _record_failures(out_dir: Path, failures: list[tuple[str, str]]) -> None:
    from medfound.utils.files import atomic_path

    with atomic_path(out_dir / FAILURES_FILE) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["slide", "problem"])
            writer.writerows(failures)


def _tile_batches(slide, grid, start: int, stop: int, batch_size: int):
    """Yields (start, uint8 tiles) from a reader thread through a queue of two batches; batches
    are the blocks of ``batch_size`` tiles counted from tile 0, cut to [start, stop)."""
    q: queue.Queue = queue.Queue(maxsize=2)
    stop_flag = threading.Event()

    def work():
        try:
            i = start
            while i < stop:
                j = min((i // batch_size + 1) * batch_size, stop)
                tiles = np.stack([read_tile(slide, grid, int(x), int(y))
                                  for x, y in grid.coords[i:j]])
                while not stop_flag.is_set():
                    try:
                        q.put((i, tiles), timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop_flag.is_set():
                    return
                i = j
            q.put(None)
        except BaseException as err:  # handed to the consumer
            q.put(err)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop_flag.set()
        thread.join(timeout=5)


PARTS_MANIFEST = "manifest.json"
_PART_NAME = re.compile(r"^part-(\d{9})-(\d{9})\.npy$")
# Settings a resumed slide must share with the run that wrote its parts.
_RESUME_KEYS = ("format_version", "slide", "slide_identity", "module_sha256", "mpp", "tile_size",
                "stride", "min_tissue", "image_size", "level", "num_tiles", "coords_sha256")
def _parts_dir(final: Path) -> Path:
    return final.with_name(final.name + ".parts")


def _write_part(parts_dir: Path, start: int, rows: np.ndarray) -> None:
    from medfound.utils.files import atomic_path

    with atomic_path(parts_dir / f"part-{start:09d}-{start + len(rows):09d}.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, rows.astype(np.float32), allow_pickle=False)


def _merge(parts_dir: Path, final: Path, attrs: dict, datasets: dict, n: int, dim: int) -> None:
    """Writes the finished slide file from its parts (streamed), then removes the parts."""
    import h5py

    from medfound.utils.files import atomic_path

    chosen = contiguous_parts(parts_dir, n, pattern=_PART_NAME, error=SlideError, rows="tiles")
    with atomic_path(final) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(attrs)
            for name, data in datasets.items():
                f.create_dataset(name, data=data)
            features = f.create_dataset("features", shape=(n, dim), dtype="float32",
                                        chunks=(min(256, max(n, 1)), dim))
            at = 0
            for file in chosen:
                rows = np.load(file, allow_pickle=False)
                features[at:at + len(rows)] = rows
                at += len(rows)
    for file in chosen:  # only what this module wrote: the manifest and the parts it names
        file.unlink()
    (parts_dir / PARTS_MANIFEST).unlink(missing_ok=True)
    try:
        parts_dir.rmdir()
    except OSError:
        pass  # something else is in there: leave it


def _check_finished(final: Path, wanted: dict) -> None:
    """Refuses to reuse a finished slide file that was embedded with other settings."""
    import h5py

    try:
        with h5py.File(final, "r") as f:
            recorded = {k: f.attrs.get(k) for k in wanted}
    except OSError as err:
        raise SlideError(f"{final}: unreadable ({err}); move it away to embed the slide "
                         "again") from None
    changed = [k for k, v in wanted.items() if recorded[k] is None or
               (recorded[k] != v if isinstance(v, str) else not np.isclose(recorded[k], v))]
    if "slide_identity" in changed:
        raise SlideError(f"{final}: was embedded from another file of this name (the slide's "
                         "size or content differ now); move it away to embed this slide")
    if changed:
        raise SlideError(f"{final}: was embedded with a different {', '.join(changed)}; use "
                         "another output folder or the same settings")


def _coords_digest(coords: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(coords, np.int64).tobytes()).hexdigest()


def embed_slide(slide_path: Path, config: SlideEmbedConfig, embedder, image_size: int, dim: int,
                *, budget: int | None = None,
                log: StatusLine | None = None) -> tuple[Path | None, int]:
    """Embeds one slide; returns (finished file, or None if stopped by ``budget``; tiles added)."""
    from medfound.data.prepare import prepare_image

    out_dir = Path(config.out_dir)
    final = out_dir / f"{slide_path.stem}.h5"
    if not slide_path.is_file():
        raise SlideError(f"{slide_path}: no such slide file")
    wanted = {"slide_identity": slide_identity(slide_path),
              "module_sha256": embedder.fingerprint, "mpp": config.tiling.target_mpp,
              "tile_size": config.tiling.tile_size, "stride": config.tiling.stride or 0,
              "min_tissue": config.tiling.min_tissue, "image_size": image_size}
    if final.is_file():
        _check_finished(final, wanted)
        return final, 0
    parts_dir = _parts_dir(final)
    with open_slide(slide_path, base_mpp=config.base_mpp) as slide:
        mask = detect_tissue(slide)
        grid = plan_tiles(slide, mask, config.tiling, config.batch_size)
        n = len(grid.coords)
        if n == 0:
            raise SlideError(f"{slide_path}: no tissue found (tissue covers {mask.fraction:.1%} "
                             f"of the slide, no tile reaches {config.tiling.min_tissue:.0%})")
        annotations, xml = _slide_annotations(config, slide_path, slide.dimensions)
        tissue_png = out_dir / f"{slide_path.stem}.tissue.png"
        overlay_png(slide.thumbnail(1024), mask.mask, tissue_png)  # of this slide, not a stale one
        attrs = {
            "format_version": FORMAT_VERSION, "slide": str(slide_path), "slide_name":
            slide_path.stem, "mpp": grid.mpp, "base_mpp": grid.base_mpp, "tile_size":
            grid.tile_size, "patch_size_level0": grid.size0, "level": grid.level,
            "image_size": image_size, "module": embedder.name,
            "module_sha256": embedder.fingerprint, "num_tiles": n,
            "slide_width": slide.dimensions[0], "slide_height": slide.dimensions[1],
            "tissue_fraction": mask.fraction, **wanted}
        done = open_parts(parts_dir, {**attrs, "coords_sha256": _coords_digest(grid.coords)},
                          keys=_RESUME_KEYS, pattern=_PART_NAME, error=SlideError)
        stop = n if budget is None else min(n, done + max(budget, 0))
        # Parts end on batch boundaries counted from tile 0, so a resumed slide is embedded in the
        # same batches as an uninterrupted one.
        bs = config.batch_size
        part = max(bs, -(-config.flush_every // bs) * bs)
        added, start_time, last = 0, time.perf_counter(), 0.0
        pending: list[np.ndarray] = []
        part_start = done
        for _, tiles in _tile_batches(slide, grid, done, stop, bs):
            images = prepare_image(tiles, image_size)  # uint8 tiles: / 255 there
            pending.append(np.asarray(embedder(images), np.float32))
            added += len(tiles)
            at = done + added
            if at % part == 0 or at == stop:
                _write_part(parts_dir, part_start, np.concatenate(pending))
                pending, part_start = [], at
            now = time.perf_counter()
            if log and (now - last > 1.0 or at == stop):
                last = now
                rate = added / max(now - start_time, 1e-9)
                log.update(f"{slide_path.name}: {at}/{n} tiles ({rate:.1f} tiles/s)")
        if done + added < n:
            return None, added
    datasets = {"coords": grid.coords, "tissue": grid.tissue}
    if config.annotations:
        datasets["tumor_fraction"] = (annotations.tumour_fraction(grid.coords, grid.size0)
                                      if annotations else np.zeros(n, np.float32))
        attrs["annotations"] = str(xml) if annotations else ""
    _merge(parts_dir, final, attrs, datasets, n, dim)
    return final, added


def _slide_annotations(config: SlideEmbedConfig, slide_path: Path, size: tuple[int, int]):
    """(annotations or None, its file) of a slide, read and checked before any tile is embedded:
    an unreadable, non-ASAP or misplaced annotation fails the slide instead of labelling it
    'no tumour'."""
    if not config.annotations:
        return None, None
    from medfound.slides.annotations import check_within, read_asap_xml

    xml = Path(config.annotations) / f"{slide_path.stem}.xml"
    if not xml.is_file():
        return None, xml
    annotations = read_asap_xml(xml)
    check_within(annotations, *size, str(xml))
    return annotations, xml


def _failure(slide: Path, err: BaseException) -> str:
    """One line for failures.csv naming the slide; an error medfound did not name keeps its kind."""
    from medfound.errors import UserError

    text = (str(err).strip().splitlines() or [""])[0]
    if not isinstance(err, (SlideError, UserError)) or not text:
        text = f"{type(err).__name__}: {text}".rstrip(": ")
    return text if text.startswith(str(slide)) else f"{slide}: {text}"


def embed_slides(config: SlideEmbedConfig, *, embedder=None) -> SlideEmbedResult:
    """Embeds every slide of ``config.input``; see the module docstring.

    Everything that concerns all slides (settings, the slide list, which file each slide
    writes) is checked before anything is written; the --out folder is then locked against a
    second embed; from there on a slide that fails, whatever the reason, is listed by name in
    failures.csv and the others go on."""
    from medfound.pretrain.runfolder import locked

    slides, out_dir, unannotated = prepare_slides(config)
    with locked(out_dir, LOCK_COMMAND):
        result = _embed_all(config, slides, out_dir, embedder)
    result.unannotated = [str(s) for s in unannotated]
    result.annotations = config.annotations
    return result


def prepare_slides(config: SlideEmbedConfig) -> tuple[list[Path], Path, list[Path]]:
    """(slides, --out folder, slides without annotations) once everything that concerns all
    slides is checked; creates --out. Every engine (one process, Beam) starts here."""
    config.validate()
    slides = list_slides(config.input, path_column=config.path_column, root=config.root)
    if not slides:
        raise SlideError(f"{config.input}: no slides ({', '.join(SLIDE_SUFFIXES)}) found")
    out_dir = Path(config.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SlideError(f"--out {out_dir} is a file; give a folder for the per-slide files")
    plan_outputs(slides, out_dir)
    unannotated = []
    if config.annotations:
        from medfound.slides.annotations import annotation_folder

        unannotated = annotation_folder(config.annotations, slides)[1]
    out_dir.mkdir(parents=True, exist_ok=True)
    return slides, out_dir, unannotated


def slide_sizes(config: SlideEmbedConfig, embedder) -> tuple[int, int]:
    """(image size tiles are resized to, embedding width) for ``embedder``."""
    image_size = config.image_size or embedder.default_image_size or config.tiling.tile_size
    return image_size, int(embedder(np.zeros((1, image_size, image_size, 3), np.float32)).shape[-1])


def _embed_all(config: SlideEmbedConfig, slides: list[Path], out_dir: Path,
               embedder) -> SlideEmbedResult:
    from medfound.embed import ModuleEmbedder

    embedder = embedder or ModuleEmbedder.for_config(config)
    image_size, dim = slide_sizes(config, embedder)
    log = StatusLine(sys.stderr) if config.progress else None
    done, failures, tiles = [], [], 0
    start = time.perf_counter()
    complete = True
    for slide_path in slides:
        budget = None if config.max_tiles is None else config.max_tiles - tiles
        if budget is not None and budget <= 0:
            complete = False
            break
        try:
            final, added = embed_slide(slide_path, config, embedder, image_size, dim,
                                       budget=budget, log=log)
        except Exception as err:  # noqa: BLE001 - the per-slide boundary: one slide, not all
            failures.append((str(slide_path), _failure(slide_path, err)))
            if log:
                log.say(f"{slide_path.name}: failed: {failures[-1][1]}")
            continue
        tiles += added
        if log:
            log.end()
        if final is None:
            complete = False
            break
        done.append(final)
    if failures or (out_dir / FAILURES_FILE).exists():
        _record_failures(out_dir, failures)
    return SlideEmbedResult(done=done, failures=failures, tiles=tiles,
                            seconds=time.perf_counter() - start, complete=complete)


SLIDE_DATASETS = ("coords", "features")  # what every per-slide file holds, one row per tile


def read_slide_features(file: str | os.PathLike) -> dict:
    """The arrays and attributes of one per-slide HDF5 file (as ``embed_slides`` wrote it).

    A file that is not HDF5, is cut short, or lacks the per-slide datasets (a foreign ``.h5`` in
    the folder) is a ``SlideError`` naming it, not h5py's traceback.
    """
    import h5py

    try:
        with h5py.File(file, "r") as f:
            missing = [k for k in SLIDE_DATASETS if not isinstance(f.get(k), h5py.Dataset)]
            if missing:
                raise SlideError(f"{file}: not a per-slide file of medfound embed --slides (no "
                                 f"{', '.join(missing)}); move it out of the folder")
            out = {k: f[k][:] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
            out["attrs"] = dict(f.attrs)
    except (OSError, KeyError, ValueError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise  # a storage problem, reported as one by the CLI
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise SlideError(f"{file}: not a readable HDF5 file ({reason}); was it cut short?") from None
    if len(out["coords"]) != len(out["features"]):
        raise SlideError(f"{file}: {len(out['coords'])} coords but {len(out['features'])} feature "
                         "rows; the file is damaged")
    return out
