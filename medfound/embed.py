"""``medfound embed``: one pooled embedding (mean of the block4 map) per image of a folder or CSV, streamed.

Images are decoded, resized to a square and embedded in batches; every ``part_size`` inputs the
rows are saved as a part in ``<stem>.parts/`` beside the output, so a killed run resumes where it
stopped. When every input is done, the parts are merged (streamed, part by part) into one
``.npz`` / ``.h5`` / ``.parquet`` file written to a temporary path and renamed, bad images are
listed with their problem in ``<stem>.failures.csv``, and the parts are removed. Rows hold only
the image path and its embedding: nothing from DICOM headers or any patient table is copied.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import os
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from medfound.data.prepare import prepare_image  # the one image preparation; also medfound.embed's
from medfound.utils.files import atomic_path
from medfound.utils.ownership import remove_owned
from medfound.utils.progress import make_progress

OUTPUT_FORMATS = {".npz": "npz", ".h5": "h5", ".hdf5": "h5", ".parquet": "parquet"}
PARTS_MANIFEST = "manifest.json"
PARTS_FORMAT_VERSION = 1
_PART_NAME = re.compile(r"^part-(\d{9})-(\d{9})\.npz$")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same inputs give the same .npz bytes
# Inference needs no gradient exchange, so one process drives all its devices; several hosts
# would each embed and write the same rows (several hosts: --engine beam, medfound.beam).
STRATEGIES = ("default", "mirrored", "tpu")
COMMAND = "medfound embed"  # who the outputs belong to (medfound.utils.ownership)


class EmbedError(ValueError):
    """Embedding cannot start or continue; the message says why and what to do."""


@dataclasses.dataclass
class EmbedConfig:
    """What to embed, with which module, and where the rows go."""

    module: str  # SavedModel folder, module .tar.gz, .keras file or registry name on the path
    input: str  # image folder (recursive) or CSV of paths
    out: str  # output file: .npz, .h5 (.hdf5) or .parquet
    image_size: int | None = None  # square side in pixels; default: the module's input_size
    batch_size: int = 32
    part_size: int = 1024  # inputs per resumable part (rounded up to whole batches)
    skip_bad_images: bool = True  # list bad images in <stem>.failures.csv instead of stopping
    path_column: str | None = None  # CSV column holding paths (default: guessed)
    root: str | None = None  # folder the CSV paths are relative to (default: the CSV's)
    max_images: int | None = None  # stop (resumably) after this many inputs (whole batches)
    overwrite: bool = False  # replace an existing output file
    progress: bool = True  # show a progress bar
    # 'default' (one device), 'mirrored' (every local GPU) or 'tpu': each batch is split over
    # the devices and the rows gathered back in input order.
    strategy: str = "default"
    # How the folded backbone computes: its forward pass XLA-compiled (input checks stay
    # outside), and GroupNorm's variance formulation (models.configs.GN_STATISTICS).
    xla: bool = False
    group_norm_statistics: str = "two_pass"


@dataclasses.dataclass
class EmbedResult:
    """What a call to ``embed`` did: the output (None until complete) and the failures so far."""

    out: Path | None
    complete: bool
    num_inputs: int
    num_embedded: int  # rows written (or, when incomplete, rows saved in parts so far)
    processed: int  # inputs handled by this call (the rest came from earlier parts)
    failures: list[tuple[str, str]]
    failures_file: Path | None
    embedding_dim: int
    image_size: int
    parts_dir: Path

    def summary(self, limit: int = 10) -> str:
        """Human text: counts, where the rows are, and the first ``limit`` failures."""
        if self.complete:
            lines = [f"embedded {self.num_embedded} of {self.num_inputs} images "
                     f"({self.embedding_dim}-d embedding at {self.image_size}x{self.image_size}) "
                     f"into {self.out}"]
        else:
            done = self.num_embedded + len(self.failures)
            lines = [f"stopped after {done} of {self.num_inputs} inputs; parts saved in "
                     f"{self.parts_dir}: run the same command again to continue"]
        if self.failures:
            where = f", listed in {self.failures_file}" if self.failures_file else ""
            lines.append(f"{len(self.failures)} image(s) failed{where}:")
            lines += [f"  {path}: {problem}" for path, problem in self.failures[:limit]]
            if len(self.failures) > limit:
                lines.append(f"  ... and {len(self.failures) - limit} more")
        elif self.complete:
            lines.append("no failures")
        return "\n".join(lines)


def output_format(out: str | os.PathLike) -> str:
    """'npz', 'h5' or 'parquet' from the output's suffix; an EmbedError for anything else."""
    suffix = Path(out).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise EmbedError(f"{out}: unknown output format {suffix or '(no suffix)'!r}; use "
                         f"{', '.join(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[suffix]


def sidecar_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """The parts folder and the failures CSV that belong to output ``out`` (``<stem>.parts/``,
    ``<stem>.failures.csv``)."""
    out = Path(out)
    stem = out.with_suffix("")
    return stem.with_name(stem.name + ".parts"), stem.with_name(stem.name + ".failures.csv")


def require_pyarrow():
    """``pyarrow.parquet``, or an EmbedError saying how to install it."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet as pq
    except ImportError:
        raise EmbedError("writing .parquet needs pyarrow (a medfound dependency): pip install pyarrow "
                         "(or write .npz / .h5 instead)") from None
    return pq


def list_inputs(source: str | os.PathLike, *, path_column: str | None = None,
                root: str | os.PathLike | None = None) -> list[str]:
    """The image paths of a folder (recursive, sorted) or a CSV (in row order, under ``root``)."""
    from medfound.data.unlabeled import FileSource, SourceError, open_unlabeled

    try:
        opened = open_unlabeled(source, path_column=path_column, root=root)
    except SourceError as err:
        raise EmbedError(str(err)) from None
    if not isinstance(opened, FileSource):
        raise EmbedError(f"{source}: embed takes an image folder or a CSV of image paths, "
                         f"not a {opened.kind} source")
    return list(opened.paths)


class ModuleEmbedder:
    """A loaded module as ``images (B, S, S, 3) in [0, 1] -> pooled embeddings (B, D)``.

    Whatever the module is (medfound module, PhysioNet file, BiT folder, ``.keras``, archive or
    name), ``medfound.load`` gives the native backbone, folded here for inference: the embedding
    is the spatial mean of the raw block4 map, as ``reduce_mean(module(images), [-3, -2])``.
    With a ``strategy`` of several replicas the module's variables are placed on every device
    and each batch is split over them, rows gathered in input order. ``xla`` compiles the
    forward pass with XLA after the input checks (XLA would drop them); ``group_norm_statistics``
    is GroupNorm's variance formulation (``models.configs.GN_STATISTICS``).
    """

    def __init__(self, module: str | os.PathLike, strategy=None, *, xla: bool = False,
                 group_norm_statistics: str = "two_pass"):
        import tensorflow as tf

        self.xla, self.group_norm_statistics = xla, group_norm_statistics
        self.strategy = strategy
        if strategy is not None and strategy.num_replicas_in_sync > 1:
            with strategy.scope():
                self._load(module)
        else:
            self.strategy = None
            self._load(module)
        from medfound.utils.replicas import split_over_replicas

        # One trace for every batch size and image size.
        self._fn = tf.function(self._call, autograph=False, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
        self._forward = split_over_replicas(self._fn, self.strategy)

    def _load(self, module: str | os.PathLike) -> None:
        from medfound.models.inference import fold
        from medfound.resolve import load

        try:
            backbone = load(module, trainable=False)
        except FileNotFoundError as err:
            raise EmbedError(str(err)) from None
        source = backbone.source
        self.path = Path(source.path) if source.path else Path(str(module))
        self.metadata = source.metadata
        self.input_size = source.input_size
        self.name = source.name or self.path.name or str(module)
        # Parts record it: a run resumed with other compute options would mix their last bits.
        self.fingerprint = (source.sha256 or source.spec) + self.compute_options
        folded = self._model = fold(backbone, self.group_norm_statistics)
        self._call = lambda images: folded(images, training=False)["embedding"]
        if self.xla:
            import tensorflow as tf

            from medfound.models.input_check import enforce_contract

            compiled = tf.function(self._call, autograph=False, jit_compile=True)
            self._call = lambda images: compiled(enforce_contract(images))

    @property
    def compute_options(self) -> str:
        """'' for the default computation, else the options that change it (for fingerprints)."""
        options = (["xla"] if self.xla else []) + (
            [self.group_norm_statistics] if self.group_norm_statistics != "two_pass" else [])
        return "".join(f"+{o}" for o in options)

    @classmethod
    def for_config(cls, config, strategy=None) -> ModuleEmbedder:
        """The embedder an ``EmbedConfig`` or ``SlideEmbedConfig`` asks for (module and compute
        options): one constructor for one process, slides and every Beam worker."""
        return cls(config.module, strategy=strategy, xla=config.xla,
                   group_norm_statistics=config.group_norm_statistics)

    @property
    def default_image_size(self) -> int | None:
        """The module's own input size (metadata, or a PhysioNet file's REMEDIS folder name)."""
        return int(self.input_size) if self.input_size else None

    def __call__(self, images):
        import tensorflow as tf

        out = self._forward(tf.convert_to_tensor(images, tf.float32))
        if len(out.shape) != 2:
            raise EmbedError(f"{self.path}: module gave output of shape {tuple(out.shape)}; "
                             "expected (batch, dim) or a (batch, h, w, dim) feature map")
        return out


# ---- resumable parts ----------------------------------------------------------------------------

def _inputs_digest(paths: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


def open_parts(parts_dir: Path, manifest: dict, *, keys: Sequence[str] | None = None,
               pattern: re.Pattern = _PART_NAME, error: type[Exception] = None) -> int:
    """Creates or checks a parts folder; returns how many rows its parts already cover.

    A folder left by an earlier run must record the same ``keys`` of ``manifest`` (default:
    all), else ``error`` (default ``EmbedError``) says which differ. Temporaries of a killed
    writer (names only ``atomic_path`` makes) are removed. Image and slide embedding share it.
    """
    from medfound.utils.files import TEMP_PREFIX

    error = error or EmbedError
    manifest_file = parts_dir / PARTS_MANIFEST
    if manifest_file.is_file():
        try:
            recorded = json.loads(manifest_file.read_text())
        except json.JSONDecodeError as err:
            raise error(f"{manifest_file}: unreadable ({err}); delete {parts_dir} to "
                        "start over") from None
        changed = [k for k in (keys or manifest) if recorded.get(k) != manifest.get(k)]
        if changed:
            raise error(
                f"{parts_dir}: holds parts of an earlier run with a different "
                f"{', '.join(changed)}; continue it with the same settings, or delete "
                f"{parts_dir} to start over")
        for stale in parts_dir.glob(f"{TEMP_PREFIX}*"):
            if stale.is_file() and not stale.is_symlink():
                stale.unlink()
    else:
        from medfound.utils.ownership import OwnershipError, check_folder

        try:  # a folder of someone else's under the parts folder's name is never adopted
            check_folder(parts_dir, COMMAND, ours=_is_parts_folder, flag="parts folder")
        except OwnershipError as err:
            raise error(str(err)) from None
        parts_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(manifest_file) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return covered_prefix(part_files(parts_dir, pattern))


def part_files(parts_dir: Path, pattern: re.Pattern = _PART_NAME) -> list[tuple[int, int, Path]]:
    """(start, end, file) of every part in ``parts_dir`` whose name matches ``pattern`` (two
    groups: first and past-last row), sorted; image and slide embedding both keep parts so."""
    found = []
    for item in parts_dir.iterdir():
        match = pattern.match(item.name)
        if match:
            found.append((int(match.group(1)), int(match.group(2)), item))
    return sorted(found)


def covered_prefix(parts: list[tuple[int, int, Path]]) -> int:
    """How many rows from 0 the sorted ``parts`` cover without a gap (where a resume starts)."""
    covered = 0
    for start, end, _ in parts:
        if start == covered:
            covered = end
    return covered


def contiguous_parts(parts_dir: Path, total: int, *, pattern: re.Pattern = _PART_NAME,
                     error: type[Exception] | None = None, rows: str = "inputs") -> list[Path]:
    """The part files covering rows 0..``total`` without a gap, in order (``error``, default
    ``EmbedError``, if they do not reach ``total``); image and slide embedding share it."""
    covered, chosen = 0, []
    for start, end, file in part_files(parts_dir, pattern):
        if start == covered:
            chosen.append(file)
            covered = end
    if covered != total:
        raise (error or EmbedError)(f"{parts_dir}: parts cover {covered} of {total} {rows}")
    return chosen


def _write_part(parts_dir: Path, start: int, end: int, indices: list[int],
                embeddings: list[np.ndarray], failed: list[tuple[int, str]], dim: int) -> None:
    target = parts_dir / f"part-{start:09d}-{end:09d}.npz"
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        np.savez(f, index=np.asarray(indices, np.int64),
                 embeddings=(np.stack(embeddings).astype(np.float32) if embeddings
                             else np.zeros((0, dim), np.float32)),
                 failed_index=np.asarray([i for i, _ in failed], np.int64),
                 failed_problem=np.asarray([p for _, p in failed], dtype=str))


def _read_part(file: Path) -> dict[str, np.ndarray]:
    with np.load(file, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


# ---- embedding loop -----------------------------------------------------------------------------

def _batches(paths: Sequence[str], start: int, stop: int, image_size: int, batch_size: int,
             on_error: Callable[[str, str], None]) -> Iterator[tuple[list[int], np.ndarray]]:
    """(indices, images) batches of the inputs ``start..stop-1`` that decode, in input order.

    A batch holds the good images of one block of ``batch_size`` consecutive inputs counted from
    input 0, so its make-up never depends on where a run started: convolution results can change
    in the last bits with the batch's shape, and a resumed run must give the same bytes.
    """
    import tensorflow as tf

    from medfound.data.images import map_decode

    ds = tf.data.Dataset.from_tensor_slices({
        "path": tf.constant(list(paths[start:stop]), tf.string),
        "index": tf.range(start, stop, dtype=tf.int64)})
    # The resize runs inside the decode budget (map_decode): a large image is never held whole
    # outside the call that decoded it.
    ds = map_decode(ds, path_key="path", skip_errors=True, on_error=on_error, deterministic=True,
                    transform=lambda image: prepare_image(image, image_size))
    ds = ds.map(lambda e: (e["index"], e["image"]))
    block, indices, images = None, [], []
    for index, image in ds.prefetch(batch_size).as_numpy_iterator():
        if indices and int(index) // batch_size != block:
            yield indices, np.stack(images)
            indices, images = [], []
        block = int(index) // batch_size
        indices.append(int(index))
        images.append(image)
    if indices:
        yield indices, np.stack(images)


def _problem(path: str, recorded: dict[str, str]) -> str:
    """Why ``path`` yielded no image: what the decoder reported, else what ``read_image`` says."""
    from medfound.data.images import ImageError, read_image

    if path in recorded:
        return recorded[path]
    try:
        read_image(path)
    except ImageError as err:
        return err.problem
    return "image data could not be decoded (corrupt or truncated)"


def make_embed_strategy(name: str):
    """The tf.distribute strategy ``EmbedConfig.strategy`` names (None for one device)."""
    if name not in STRATEGIES:
        raise EmbedError(f"strategy must be one of {list(STRATEGIES)}, got {name!r} (several "
                         "hosts: --engine beam, medfound.beam)")
    if name == "default":
        return None
    from medfound.pretrain.strategy import make_strategy

    return make_strategy(name)


def embed(config: EmbedConfig, *, embedder: ModuleEmbedder | None = None,
          strategy=None) -> EmbedResult:
    """Embeds every input of ``config`` (resuming from saved parts) and writes the output file.

    With ``max_images`` it stops after that many inputs (rounded up to whole batches), leaving
    the parts for the next call; with the same batch size the finished file is byte-identical
    whether or not the run was interrupted (parts hold whole batches too). ``strategy`` (default:
    the one ``config.strategy`` names) spreads each batch over its devices.
    """
    out, fmt = _checked_output(config)
    parts_dir, failures_file = sidecar_paths(out)
    paths = list_inputs(config.input, path_column=config.path_column, root=config.root)
    if embedder is None:
        if strategy is None:
            strategy = make_embed_strategy(config.strategy)
        embedder = ModuleEmbedder.for_config(config, strategy)
    image_size = _image_size(config, embedder)
    with hold_parts(parts_dir, parts_manifest(paths, embedder, image_size)) as covered:
        return _embed_held(config, embedder, out, fmt, paths, image_size, covered)


def _embed_held(config: EmbedConfig, embedder: ModuleEmbedder, out: Path, fmt: str,
                paths: list[str], image_size: int, covered: int) -> EmbedResult:
    """``embed`` once its parts folder is held: embeds from ``covered`` on, then merges."""
    parts_dir, failures_file = sidecar_paths(out)
    # Parts and stopping points fall on batch-block boundaries (see ``_batches``).
    block = config.batch_size
    stop = len(paths) if config.max_images is None else min(
        len(paths), -(-(covered + max(config.max_images, 0)) // block) * block)
    dim = _probe_dim(embedder, image_size)
    progress = make_progress(len(paths), verbose=bool(config.progress), unit_name="image")
    progress.update(covered)
    if covered < stop:
        _embed_into_parts(embedder, paths, range(covered, stop), config=config,
                          parts_dir=parts_dir, image_size=image_size, dim=dim, progress=progress)

    failures = _saved_failures(parts_dir, paths)
    result = dict(num_inputs=len(paths), processed=stop - covered, failures=failures,
                  embedding_dim=dim, image_size=image_size, parts_dir=parts_dir)
    if stop < len(paths):
        embedded = sum(len(_read_part(f)["index"]) for _, _, f in part_files(parts_dir))
        return EmbedResult(out=None, complete=False, num_embedded=embedded, failures_file=None,
                           **result)
    count = finish_output(out, fmt, paths, failures, dim, module=embedder.name,
                          image_size=image_size)
    return EmbedResult(out=out, complete=True, num_embedded=count, failures_file=failures_file,
                       **result)


def finish_output(out: Path, fmt: str, paths: Sequence[str], failures: list[tuple[str, str]],
                  dim: int, *, module: str, image_size: int) -> int:
    """Merges the parts covering every input into ``out``, writes the failures CSV and removes
    the parts folder (its own files only); every engine (one process, Beam) ends here."""
    from medfound.pretrain.runfolder import LOCK_FILE

    parts_dir, failures_file = sidecar_paths(out)
    count = write_output(out, fmt, contiguous_parts(parts_dir, len(paths)), paths, dim,
                         module=module, image_size=image_size)
    write_failures(failures_file, failures)
    remove_owned(parts_dir, _PART_NAME, extra=(PARTS_MANIFEST, LOCK_FILE))
    return count


def parts_manifest(paths: Sequence[str], embedder: ModuleEmbedder, image_size: int) -> dict:
    """What a parts folder records so that only the same run continues it."""
    return {"inputs_sha256": _inputs_digest(paths), "num_inputs": len(paths),
            "module_fingerprint": embedder.fingerprint, "image_size": image_size,
            "format_version": PARTS_FORMAT_VERSION}


@contextlib.contextmanager
def hold_parts(parts_dir: Path, manifest: dict, command: str = "embed") -> Iterator[int]:
    """Opens (``open_parts``) and locks the parts folder for the whole run; yields how many rows
    its parts cover from 0. A second run on the same output (one process or Beam) is refused
    while this one holds it, and only the holder removes temporaries a killed writer left."""
    from medfound.pretrain.runfolder import locked

    if not (parts_dir / PARTS_MANIFEST).is_file():
        open_parts(parts_dir, manifest)  # creates the folder (ownership-checked) and manifest
    with locked(parts_dir, command):
        yield open_parts(parts_dir, manifest)


def _checked_output(config: EmbedConfig) -> tuple[Path, str]:
    """The output path and its format, refusing an existing file (without ``overwrite``), a
    missing pyarrow for .parquet and batch or part sizes below 1."""
    out = Path(config.out)
    fmt = output_format(out)
    if fmt == "parquet":
        require_pyarrow()
    if config.batch_size < 1 or config.part_size < 1:
        raise EmbedError("batch_size and part_size must be at least 1")
    check_outputs(out, overwrite=config.overwrite)
    return out, fmt


def check_outputs(out: Path, *, overwrite: bool) -> None:
    """Refuses, before anything is written, an output, failures CSV or parts folder that
    exists and is not embed's own (medfound.utils.ownership); its own output and failures CSV
    are replaced only with ``overwrite``, its own parts folder is continued."""
    from medfound.utils.ownership import OwnershipError, check_file, check_folder

    parts_dir, failures_file = sidecar_paths(out)
    try:
        check_file(out, COMMAND, ours=_is_embed_output, overwrite=overwrite)
        check_file(failures_file, COMMAND, ours=_is_failures_csv, overwrite=overwrite,
                   flag="failures list")
        check_folder(parts_dir, COMMAND, ours=_is_parts_folder, finished=lambda _: False,
                     flag="parts folder")
    except OwnershipError as err:
        raise EmbedError(str(err)) from None


def _is_embed_output(path: Path) -> bool:
    """Whether ``path`` is a file embed writes: paths and embeddings in its format."""
    fmt = output_format(path)
    if fmt == "npz":
        with zipfile.ZipFile(path) as zf:
            return {"paths.npy", "embeddings.npy"} <= set(zf.namelist())
    if fmt == "h5":
        import h5py

        with h5py.File(path, "r") as f:
            return "paths" in f and "embeddings" in f and "module" in f.attrs
    schema = require_pyarrow().read_schema(str(path))
    return schema.names == ["path", "embedding"] and b"module" in (schema.metadata or {})


def _is_failures_csv(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.readline(64).rstrip(b"\r\n") == b"path,problem"


def _is_parts_folder(folder: Path) -> bool:
    """A parts folder as ``open_parts`` makes it: its manifest records a format version."""
    manifest = folder / PARTS_MANIFEST
    try:
        if manifest.is_symlink() or manifest.stat().st_size > 1 << 20:
            return False
        return "format_version" in json.loads(manifest.read_text())
    except (OSError, ValueError, TypeError, RecursionError):
        return False


def _image_size(config: EmbedConfig, embedder: ModuleEmbedder) -> int:
    """The size images are resized to: the configured one, else the module's own."""
    from medfound.models.configs import MIN_IMAGE_SIZE

    image_size = config.image_size or embedder.default_image_size
    if not image_size:
        raise EmbedError(f"{embedder.path}: module has no medfound metadata, so its input size "
                         "is unknown; pass image_size (--image-size)")
    if image_size < MIN_IMAGE_SIZE:
        raise EmbedError(f"image size {image_size} is below the minimum of {MIN_IMAGE_SIZE}")
    return int(image_size)


def _embed_into_parts(embedder: ModuleEmbedder, paths: list[str], span: range, *,
                      config: EmbedConfig, parts_dir: Path, image_size: int, dim: int,
                      progress) -> None:
    """Embeds ``paths[span]`` batch by batch and writes them as parts of ``config.part_size``
    inputs (rounded up to whole batches), each part listing its inputs that failed; the first
    bad image raises unless ``config.skip_bad_images``."""
    from medfound.data.images import SkippedFiles

    skipped = SkippedFiles()
    recorded: dict[str, str] = {}
    part_size = -(-config.part_size // config.batch_size) * config.batch_size
    stop = span.stop
    part_start, part_end = span.start, min(span.start + part_size, stop)
    indices: list[int] = []
    rows: list[np.ndarray] = []

    def flush(start: int, end: int) -> None:
        recorded.update(dict(skipped.items))
        done = set(indices)
        failed = [(i, _problem(paths[i], recorded)) for i in range(start, end) if i not in done]
        if failed and not config.skip_bad_images:
            index, problem = failed[0]
            raise EmbedError(f"{paths[index]}: {problem} (pass skip_bad_images=True / "
                             "--skip-bad-images to list bad images and go on)")
        _write_part(parts_dir, start, end, indices, rows, failed, dim)
        indices.clear()
        rows.clear()
        progress.update(end)

    for batch_indices, images in _batches(paths, span.start, stop, image_size,
                                          config.batch_size, skipped):
        vectors = embedder(images).numpy()
        for index, vector in zip(batch_indices, vectors):
            while index >= part_end:
                flush(part_start, part_end)
                part_start, part_end = part_end, min(part_end + part_size, stop)
            indices.append(index)
            rows.append(vector)
    while part_start < stop:
        flush(part_start, part_end)
        part_start, part_end = part_end, min(part_end + part_size, stop)


def _probe_dim(embedder: ModuleEmbedder, image_size: int) -> int:
    """The embedding length, from one blank image (also traces the module once)."""
    return int(embedder(np.zeros((1, image_size, image_size, 3), np.float32)).shape[-1])


def _saved_failures(parts_dir: Path, paths: Sequence[str]) -> list[tuple[str, str]]:
    failures = []
    for _, _, file in part_files(parts_dir):
        part = _read_part(file)
        failures += [(paths[int(i)], str(p)) for i, p in zip(part["failed_index"],
                                                              part["failed_problem"])]
    return failures


def write_failures(file: Path, failures: Sequence[tuple[str, str]]) -> None:
    """Writes ``path,problem`` rows (a header only when nothing failed), atomically."""
    with atomic_path(file) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "problem"])
        writer.writerows(failures)


# ---- output writers (streamed part by part) -----------------------------------------------------

def write_output(out: Path, fmt: str, parts: Sequence[Path], paths: Sequence[str], dim: int, *,
                 module: str, image_size: int) -> int:
    """Merges ``parts`` (in order) into ``out``; returns the number of rows written.

    Only one part's embeddings are in memory at a time; the file appears under its final name
    only when complete.
    """
    embedded_paths: list[str] = []
    for file in parts:
        with np.load(file, allow_pickle=False) as data:
            embedded_paths += [paths[int(i)] for i in data["index"]]

    def chunks() -> Iterator[np.ndarray]:
        for file in parts:
            with np.load(file, allow_pickle=False) as data:
                yield np.ascontiguousarray(data["embeddings"], dtype="<f4")

    writer = {"npz": _write_npz, "h5": _write_h5, "parquet": _write_parquet}[fmt]
    with atomic_path(out) as tmp:
        writer(tmp, embedded_paths, chunks(), dim, module=module, image_size=image_size)
    return len(embedded_paths)


def _write_npz(tmp: Path, paths: list[str], chunks: Iterator[np.ndarray], dim: int, *,
               module: str, image_size: int) -> None:
    def member(zf: zipfile.ZipFile, name: str):
        info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
        info.compress_type = zipfile.ZIP_STORED
        return zf.open(info, "w", force_zip64=True)

    with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
        with member(zf, "paths") as f:
            np.lib.format.write_array(f, np.asarray(paths, dtype=str).reshape(len(paths)))
        with member(zf, "embeddings") as f:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
                      "fortran_order": False, "shape": (len(paths), dim)}
            np.lib.format.write_array_header_2_0(f, header)
            for chunk in chunks:
                f.write(chunk.tobytes())
        with member(zf, "module") as f:
            np.lib.format.write_array(f, np.asarray(module))
        with member(zf, "image_size") as f:
            np.lib.format.write_array(f, np.asarray(image_size, np.int64))


def _write_h5(tmp: Path, paths: list[str], chunks: Iterator[np.ndarray], dim: int, *,
              module: str, image_size: int) -> None:
    import h5py

    with h5py.File(tmp, "w", track_order=True) as f:
        f.attrs["module"] = module
        f.attrs["image_size"] = image_size
        f.create_dataset("paths", data=np.asarray(paths, dtype=object),
                         dtype=h5py.string_dtype("utf-8"), shape=(len(paths),))
        rows = f.create_dataset("embeddings", shape=(len(paths), dim), dtype="<f4",
                                chunks=(min(max(len(paths), 1), 1024), dim) if dim else None)
        at = 0
        for chunk in chunks:
            rows[at:at + len(chunk)] = chunk
            at += len(chunk)


def _write_parquet(tmp: Path, paths: list[str], chunks: Iterator[np.ndarray], dim: int, *,
                   module: str, image_size: int) -> None:
    import pyarrow as pa

    pq = require_pyarrow()
    schema = pa.schema([("path", pa.string()), ("embedding", pa.list_(pa.float32(), dim))],
                       metadata={"module": module, "image_size": str(image_size)})
    with pq.ParquetWriter(str(tmp), schema) as writer:
        at = 0
        for chunk in chunks:
            values = pa.array(chunk.reshape(-1), pa.float32())
            table = pa.Table.from_arrays(
                [pa.array(paths[at:at + len(chunk)], pa.string()),
                 pa.FixedSizeListArray.from_arrays(values, dim)], schema=schema)
            writer.write_table(table)
            at += len(chunk)


def read_embeddings(file: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """(paths, embeddings) of an ``embed`` output of any format, for checks and downstream use."""
    file = Path(file)
    fmt = output_format(file)
    if fmt == "npz":
        from medfound.utils.limits import check_zip

        check_zip(file, ".npz")
        with np.load(file, allow_pickle=False) as data:
            return [str(p) for p in data["paths"]], data["embeddings"]
    if fmt == "h5":
        import h5py

        with h5py.File(file, "r") as f:
            return [p.decode() if isinstance(p, bytes) else str(p) for p in f["paths"][()]], \
                f["embeddings"][()]
    pq = require_pyarrow()
    table = pq.read_table(str(file))
    paths = table.column("path").to_pylist()
    dim = table.schema.field("embedding").type.list_size
    values = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return paths, values.astype(np.float32).reshape(len(paths), dim)
