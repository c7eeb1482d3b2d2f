"""A whole-slide image reader on `tiffslide`, with named errors for files it cannot use.

Why tiffslide: it is a pure-Python wheel on PyPI (tifffile + zarr + imagecodecs) that installs on a
clean machine with no system library, exposes the OpenSlide API (levels, downsamples, microns per
pixel, ``read_region``, thumbnails) and reads the Camelyon16/17 layout (generic tiled pyramidal
TIFF, JPEG or LZW levels, resolution tags) as well as Aperio .svs. OpenSlide (``openslide-bin`` +
``openslide-python``) reads more vendor formats but ships a native library; nothing here needs it.

A file is refused, by name, when it is missing, not a TIFF, truncated (a tile points past the end
of the file), or not a tiled pyramid (a plain strip TIFF cannot be read region by region).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

SLIDE_SUFFIXES = (".tif", ".tiff", ".svs", ".btf", ".ndpi")
# Typical microns per pixel of a 40x objective (Camelyon16: 0.243 um/px at level 0).
MPP_40X = 0.25


class SlideError(ValueError):
    """A slide cannot be opened or read; the message names the file and the problem."""


def magnification_to_mpp(magnification: str | float) -> float:
    """Microns per pixel of an objective magnification ('20x', 20 -> 0.5; 40x -> 0.25)."""
    text = str(magnification).strip().lower().rstrip("x")
    try:
        value = float(text)
    except ValueError:
        raise SlideError(f"magnification {magnification!r}: expected a number like 20x") from None
    if value <= 0:
        raise SlideError(f"magnification {magnification!r}: must be positive")
    return MPP_40X * 40.0 / value


class Slide:
    """An open slide: level geometry, microns per pixel, RGB regions and a thumbnail.

    Use :func:`open_slide`; close it (or use ``with``) to release the file.
    """

    def __init__(self, path: Path, handle, mpp: float | None):
        self.path = path
        self._slide = handle
        self._mpp = mpp

    # geometry
    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height) in pixels."""
        return tuple(int(v) for v in self._slide.dimensions)

    @property
    def level_count(self) -> int:
        return int(self._slide.level_count)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [tuple(int(v) for v in d) for d in self._slide.level_dimensions]

    @property
    def level_downsamples(self) -> list[float]:
        return [float(d) for d in self._slide.level_downsamples]

    @property
    def mpp(self) -> float:
        """Level-0 microns per pixel (an error if the file records none)."""
        if self._mpp is None:
            raise SlideError(f"{self.path}: records no resolution (microns per pixel); pass "
                             "base_mpp= / --base-mpp")
        return self._mpp

    def with_mpp(self, mpp: float) -> "Slide":
        """Sets the level-0 microns per pixel for a file that does not record it."""
        self._mpp = float(mpp)
        return self

    def best_level(self, downsample: float) -> int:
        """The smallest level that still has at least the resolution ``downsample`` asks for."""
        best = 0
        for level, d in enumerate(self.level_downsamples):
            if d <= downsample * 1.001:
                best = level
        return best

    # pixels
    def read_region(self, location: tuple[int, int], level: int,
                    size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 (h, w, 3) of ``size`` (w, h) at ``level``, top-left at level-0 ``location``."""
        _quiet_zarr_futures()
        try:
            region = self._slide.read_region(tuple(int(v) for v in location), int(level),
                                             tuple(int(v) for v in size), as_array=True)
        except Exception as err:  # tifffile/zarr/imagecodecs raise many kinds
            raise SlideError(f"{self.path}: cannot read level {level} at {location}: "
                             f"{type(err).__name__}: {err}") from None
        return _as_rgb8(np.asarray(region), self.path)

    def read_level(self, level: int) -> np.ndarray:
        """A whole (low-resolution) level as RGB uint8."""
        w, h = self.level_dimensions[level]
        if w * h > 64_000_000:
            raise SlideError(f"{self.path}: level {level} is {w}x{h}; too big to read whole")
        return self.read_region((0, 0), level, (w, h))

    def low_res_level(self, max_side: int = 2048) -> int:
        """The largest level whose longer side is at most ``max_side`` (else the smallest)."""
        for level, (w, h) in enumerate(self.level_dimensions):
            if max(w, h) <= max_side:
                return level
        return self.level_count - 1

    def thumbnail(self, max_side: int = 1024) -> np.ndarray:
        """An RGB thumbnail whose longer side is at most ``max_side``."""
        from PIL import Image

        image = Image.fromarray(self.read_level(self.low_res_level(max(max_side, 2048))))
        image.thumbnail((max_side, max_side), Image.BILINEAR)
        return np.asarray(image)

    def close(self) -> None:
        self._slide.close()

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _as_rgb8(region: np.ndarray, path: Path) -> np.ndarray:
    """RGB uint8 (h, w, 3) from what a TIFF holds: gray (h, w) or (h, w, 1), gray + alpha, RGB,
    RGBA (alpha composited on white, as OpenSlide users expect); other pixel types are refused."""
    if region.dtype != np.uint8:
        raise SlideError(f"{path}: pixels are {region.dtype}; medfound reads 8-bit slides "
                         "(brightfield RGB or gray)")
    if region.ndim == 2:
        region = region[..., None]
    channels = region.shape[-1] if region.ndim == 3 else 0
    if channels not in (1, 2, 3, 4):
        raise SlideError(f"{path}: pixels of shape {region.shape[2:]}; expected gray or RGB")
    if channels in (2, 4):  # gray or colour with alpha
        alpha = region[..., -1:].astype(np.float32) / 255.0
        region = (region[..., :-1] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if region.shape[-1] == 1:
        region = np.repeat(region, 3, axis=-1)
    return np.ascontiguousarray(region, dtype=np.uint8)


def _check_tiff(path: Path) -> None:
    """Refuses files tiffslide would open but not read: non-TIFF, truncated, untiled."""
    import tifffile

    size = path.stat().st_size
    try:
        with tifffile.TiffFile(str(path)) as tif:
            pages = list(tif.series[0].levels[0].pages) if tif.series else []
            if not pages:
                raise SlideError(f"{path}: TIFF holds no image")
            for level in tif.series[0].levels:
                page = level.pages[0]
                ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts) if c]
                if ends and max(ends) > size:
                    raise SlideError(f"{path}: truncated (image data runs past the end of the "
                                     f"{size}-byte file)")
            first = tif.series[0].levels[0].pages[0]
            if not first.is_tiled:
                raise SlideError(f"{path}: not a tiled whole-slide image (plain strip TIFF); "
                                 "convert it to a tiled pyramid, e.g. vips tiffsave --tile "
                                 "--pyramid")
    except SlideError:
        raise
    except Exception as err:
        raise SlideError(f"{path}: not a readable TIFF ({_reason(err)})") from None


def _reason(err: Exception) -> str:
    """A reader's error as text, without the file bytes it may quote (tifffile's
    ``header=b'root'``): a refusal never copies a file's content into a message or a table."""
    text = re.sub(r"""\bb('(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")""", "b'...'", str(err))
    return f"{type(err).__name__}: {text}"


def open_slide(path: str | os.PathLike, *, base_mpp: float | None = None) -> Slide:
    """Opens a whole-slide image; a :class:`SlideError` names the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise SlideError(f"{path}: no such slide file")
    if path.suffix.lower() in (".tif", ".tiff", ".btf", ".svs"):
        _check_tiff(path)
    import tiffslide

    try:
        handle = tiffslide.TiffSlide(str(path))
    except Exception as err:
        raise SlideError(f"{path}: cannot open as a slide ({_reason(err)})") from None
    mpp = base_mpp
    if mpp is None:
        value = handle.properties.get(tiffslide.PROPERTY_NAME_MPP_X)
        if value not in (None, "", 0):
            from medfound.slides.limits import check_file_mpp

            try:
                mpp = check_file_mpp(value, str(path))
            except SlideError:
                handle.close()
                raise
    return Slide(path, handle, mpp)


class _UnretrievedFutureFilter:
    """Drops asyncio's 'exception was never retrieved' reports: zarr decodes a region's tiles
    in concurrent futures, and when one tile is corrupt the others' errors (already reported as
    one SlideError by ``read_region``) were logged later as tracebacks flooding stderr."""

    def filter(self, record) -> bool:
        return "exception was never retrieved" not in str(record.msg)


def _quiet_zarr_futures() -> None:
    import logging

    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _UnretrievedFutureFilter) for f in logger.filters):
        logger.addFilter(_UnretrievedFutureFilter())

