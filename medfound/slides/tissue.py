"""Tissue detection on a low-resolution level: Otsu thresholds on saturation and optical density,
then specks removed and small holes closed.

Glass is white or light grey: unsaturated and transparent. Stained tissue is either coloured
(high HSV saturation: eosin, haematoxylin) or, where the stain is pale, at least darker than glass
(optical density, OD = -ln(I / 255) of the darkest channel). Neither alone suffices: pale tissue
has the saturation of tinted glass, and strongly stained tissue is bimodal in OD. A pixel is
tissue when either measure passes its own Otsu threshold, computed on a log scale (glass is a
tight cluster near zero, tissue spreads over a decade, so a linear Otsu splits the tissue instead
of separating it from glass) after a median filter, with floors so that a slide without tissue
(glass only, empty sparse tiles) is not split into two classes of noise. Opening removes specks
(dust), closing fills small holes (lumen, fat), with PIL's rank filters.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

MIN_SATURATION = 0.04  # below this nothing is tissue by colour, whatever Otsu says
MIN_DENSITY = 0.15  # optical density floor: darkest channel <= ~219 of 255


@dataclasses.dataclass
class TissueMask:
    """A boolean mask (h, w) of a level whose downsample from level 0 is ``downsample``."""

    mask: np.ndarray
    downsample: float
    saturation_threshold: float  # the thresholds used (see detect_tissue)
    density_threshold: float
    level: int
    _integral: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def fraction_in(self, x: float, y: float, size: float) -> float:
        """Tissue fraction of a level-0 square (x, y, side)."""
        return float(self.fractions(np.array([x]), np.array([y]), size)[0, 0])

    def fractions(self, xs: np.ndarray, ys: np.ndarray, size: float) -> np.ndarray:
        """(len(ys), len(xs)) tissue fractions of the level-0 squares (x, y, side ``size``) of a
        grid, from a summed-area table (one pass, whatever the number of tiles)."""
        if self._integral is None:
            counts = self.mask.astype(np.int32).cumsum(0).cumsum(1)
            self._integral = np.pad(counts, ((1, 0), (1, 0)))
        h, w = self.mask.shape
        d = self.downsample

        def span(starts, limit):
            lo = np.floor(np.asarray(starts, np.float64) / d).astype(np.int64)
            hi = np.maximum(lo + 1, np.ceil((np.asarray(starts, np.float64) + size) / d)
                            .astype(np.int64))
            return np.clip(lo, 0, limit), np.clip(hi, 0, limit)

        x0, x1 = span(xs, w)
        y0, y1 = span(ys, h)
        s = self._integral
        total = (s[y1][:, x1] - s[y0][:, x1] - s[y1][:, x0] + s[y0][:, x0]).astype(np.float64)
        area = (y1 - y0)[:, None] * (x1 - x0)[None, :]
        return np.where(area > 0, total / np.maximum(area, 1), 0.0)


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1] of an RGB uint8 image."""
    rgb = rgb.astype(np.float32)
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    return np.where(high > 0, (high - low) / np.maximum(high, 1.0), 0.0)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold in [0, 1] that maximises the between-class variance of ``values``."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Optical density -ln(I / 255) of the darkest channel of an RGB uint8 image (0 on white)."""
    return -np.log(np.maximum(rgb.min(axis=-1).astype(np.float32), 1.0) / 255.0)


def _median(values: np.ndarray, size: int, top: float) -> np.ndarray:
    """A ``size`` median filter of values in [0, top], at 8-bit precision (PIL)."""
    if size <= 1:
        return values
    image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8))
    return np.asarray(image.filter(ImageFilter.MedianFilter(size)), np.float32) / 255.0 * top


def _log_otsu(values: np.ndarray, low: float, high: float, floor: float) -> float:
    """Otsu on log(values) clipped to [low, high], mapped back, at least ``floor``."""
    if values.size == 0:
        return high
    scaled = (np.log(np.clip(values, low, high)) - np.log(low)) / (np.log(high) - np.log(low))
    t = otsu_threshold(scaled)
    return max(float(np.exp(np.log(low) + t * (np.log(high) - np.log(low)))), floor)


def _rank(mask: np.ndarray, size: int, op) -> np.ndarray:
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.filter(op(size))) > 127


def detect_tissue(slide, *, max_side: int = 4096, min_saturation: float = MIN_SATURATION,
                  min_density: float = MIN_DENSITY, median_px: int = 5, speck_px: int = 3,
                  hole_px: int = 5) -> TissueMask:
    """The tissue mask of ``slide`` on its largest level with both sides <= ``max_side``.

    ``median_px`` / ``speck_px`` / ``hole_px``: odd window sizes (low-res pixels) of the median
    filter before thresholding, the opening (specks) and the closing (holes).
    """
    level = slide.low_res_level(max_side)
    rgb = slide.read_level(level)
    # Pure black (empty sparse tiles, scanner padding) is never tissue.
    valid = rgb.max(axis=-1) > 20
    sat = _median(saturation(rgb), median_px, 1.0)
    od = _median(optical_density(rgb), median_px, 3.0)
    t_sat = _log_otsu(sat[valid], 1 / 255, 1.0, min_saturation)
    t_od = _log_otsu(od[valid], 0.01, 3.0, min_density)
    mask = ((sat > t_sat) | (od > t_od)) & valid
    if speck_px > 1:
        mask = _rank(_rank(mask, speck_px, ImageFilter.MinFilter), speck_px, ImageFilter.MaxFilter)
    if hole_px > 1:
        mask = _rank(_rank(mask, hole_px, ImageFilter.MaxFilter), hole_px, ImageFilter.MinFilter)
    w0 = slide.dimensions[0]
    return TissueMask(mask=mask, downsample=w0 / rgb.shape[1], saturation_threshold=t_sat,
                      density_threshold=t_od, level=level)


def overlay_png(thumbnail: np.ndarray, mask: np.ndarray, out: str | os.PathLike, *,
                color=(0, 200, 0), alpha: float = 0.4) -> Path:
    """Writes ``mask`` tinted over ``thumbnail`` (resized to it) as a PNG, atomically."""
    from medfound.utils.files import atomic_path

    h, w = thumbnail.shape[:2]
    m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 0
    image = thumbnail.astype(np.float32).copy()
    image[m] = image[m] * (1 - alpha) + np.asarray(color, np.float32) * alpha
    out = Path(out)
    with atomic_path(out) as tmp:
        Image.fromarray(image.astype(np.uint8)).save(tmp, format="PNG")
    return out
