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
(dust), closing fills small holes (lumen, fat). :func:`tissue_mask` computes exactly this without
filtering a float image (lookup tables, majority counts, separable boolean shifts: edges stay
where the median and rank filters put them); :func:`reference_tissue_mask` is the direct PIL
formulation it is checked against.
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


def otsu_threshold(values: np.ndarray, bins: int = 256,
                   weights: np.ndarray | None = None) -> float:
    """The threshold in [0, 1] that maximises the between-class variance of ``values``
    (each counted ``weights`` times, if given: Otsu needs only the histogram)."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0), weights=weights)
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


# The two measures are filtered and thresholded at 8-bit precision: saturation in [0, 1] and
# optical density in [0, OD_TOP] map to the codes 0..255 (PIL's median works on 8-bit images).
OD_TOP = 3.0


def _to_code(values: np.ndarray, top: float) -> np.ndarray:
    return np.clip(values / top * 255.0, 0, 255).astype(np.uint8)


def _code_values(top: float) -> np.ndarray:
    """The float value (float32, as the filtered image is read back) of each 8-bit code."""
    return np.arange(256, dtype=np.float32) / 255.0 * top


def _saturation_codes() -> np.ndarray:
    """(256, 256) lookup: the saturation code of a pixel from (max channel, min channel)."""
    high, low = np.meshgrid(np.arange(256, dtype=np.float32), np.arange(256, dtype=np.float32),
                            indexing="ij")
    sat = np.where(high > 0, (high - low) / np.maximum(high, 1.0), 0.0)
    return _to_code(np.where(low <= high, sat, 0.0), 1.0)


def _density_codes() -> np.ndarray:
    """(256,) lookup: the optical density code of a pixel from its min channel."""
    return _to_code(optical_density(np.arange(256, dtype=np.uint8)[:, None]), OD_TOP)


def _log_otsu(values: np.ndarray, low: float, high: float, floor: float,
              weights: np.ndarray | None = None) -> float:
    """Otsu on log(values) clipped to [low, high], mapped back, at least ``floor``."""
    if values.size == 0 or (weights is not None and weights.sum() == 0):
        return high
    scaled = (np.log(np.clip(values, low, high)) - np.log(low)) / (np.log(high) - np.log(low))
    t = otsu_threshold(scaled, weights=weights)
    return max(float(np.exp(np.log(low) + t * (np.log(high) - np.log(low)))), floor)


def _shifted(mask: np.ndarray, size: int, reduce, axis: int) -> np.ndarray:
    """``reduce`` over the ``size`` neighbours along ``axis`` (0 or 1), edges replicated (as
    PIL's filters do)."""
    r, n = size // 2, mask.shape[axis]
    pad = ((r, r), (0, 0)) if axis == 0 else ((0, 0), (r, r))
    padded = np.pad(mask, pad, mode="edge")
    views = [padded[k:k + n] if axis == 0 else padded[:, k:k + n] for k in range(size)]
    out = views[0].copy()
    for view in views[1:]:
        reduce(out, view, out=out)
    return out


def _square(mask: np.ndarray, size: int, reduce) -> np.ndarray:
    """A square ``size`` window filter, separably: erosion with np.logical_and, dilation with
    np.logical_or, box counts with np.add (exactly PIL's MinFilter / MaxFilter on a mask)."""
    if size <= 1:
        return mask
    return _shifted(_shifted(mask, size, reduce, 0), size, reduce, 1)


def _median_passes(codes: np.ndarray, first: int, size: int) -> np.ndarray:
    """Where the ``size`` median of ``codes`` is >= ``first``: the median of a window reaches a
    level exactly when a majority of the window does, so a box count replaces the median."""
    above = codes >= first
    if size <= 1:
        return above
    counts = _square(above.astype(np.uint8), size, np.add)
    return counts >= size * size - size * size // 2


def _median_counts(codes: np.ndarray, valid: np.ndarray, size: int,
                   rows: int = 256) -> np.ndarray:
    """(256,) histogram of the exact ``size`` medians (edges replicated) of ``codes`` over the
    ``valid`` pixels: every pixel, in blocks of ``rows`` rows to bound memory, so the Otsu
    thresholds are the reference's on levels of any size."""
    if size <= 1:
        return np.bincount(codes[valid].ravel(), minlength=256)
    r, k = size // 2, size * size // 2
    padded = np.pad(codes, r, mode="edge")
    counts = np.zeros(256, np.int64)
    for top in range(0, codes.shape[0], rows):
        block = padded[top:top + min(rows, codes.shape[0] - top) + 2 * r]
        windows = np.lib.stride_tricks.sliding_window_view(block, (size, size))
        medians = np.partition(windows.reshape(-1, size * size), k, axis=1)[:, k]
        counts += np.bincount(medians[valid[top:top + rows].ravel()], minlength=256)
    return counts


def _threshold(codes: np.ndarray, valid: np.ndarray, size: int, top: float,
               low: float, floor: float) -> tuple[float, int]:
    """The log-Otsu threshold of the median-filtered codes over ``valid`` pixels and the first
    code above it."""
    counts = _median_counts(codes, valid, size)
    levels = _code_values(top)
    t = _log_otsu(levels, low, top, floor, weights=counts)
    passing = np.nonzero(levels > t)[0]
    return t, int(passing[0]) if passing.size else 256


def tissue_mask(rgb: np.ndarray, *, min_saturation: float = MIN_SATURATION,
                min_density: float = MIN_DENSITY, median_px: int = 5, speck_px: int = 3,
                hole_px: int = 5) -> tuple[np.ndarray, float, float]:
    """(mask, saturation threshold, density threshold) of an RGB uint8 image (see detect_tissue).

    The same mask as :func:`reference_tissue_mask` (median filter, thresholds, opening, closing,
    all at 8-bit precision with replicated edges) without filtering any float image: the two
    measures come from lookup tables, the median is a majority count of the thresholded codes
    (median >= level iff most of the window is), opening and closing are separable boolean
    shifts. Only the Otsu histograms need real medians: computed exactly at every pixel, so the
    thresholds, and hence the mask, are the reference's on levels of any size.
    """
    rgb = np.asarray(rgb)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high = np.maximum(np.maximum(r, g), b)
    low = np.minimum(np.minimum(r, g), b)
    valid = high > 20  # pure black (empty sparse tiles, scanner padding) is never tissue
    sat = _saturation_codes()[high, low]
    od = _density_codes()[low]
    del high, low
    t_sat, k_sat = _threshold(sat, valid, median_px, 1.0, 1 / 255, min_saturation)
    t_od, k_od = _threshold(od, valid, median_px, OD_TOP, 0.01, min_density)
    mask = _median_passes(sat, k_sat, median_px)
    mask |= _median_passes(od, k_od, median_px)
    mask &= valid
    if speck_px > 1:  # opening: specks (dust) go
        mask = _square(_square(mask, speck_px, np.logical_and), speck_px, np.logical_or)
    if hole_px > 1:  # closing: small holes (lumen, fat) fill
        mask = _square(_square(mask, hole_px, np.logical_or), hole_px, np.logical_and)
    return mask, t_sat, t_od


def reference_tissue_mask(rgb: np.ndarray, *, min_saturation: float = MIN_SATURATION,
                          min_density: float = MIN_DENSITY, median_px: int = 5,
                          speck_px: int = 3,
                          hole_px: int = 5) -> tuple[np.ndarray, float, float]:
    """The direct, slow formulation of :func:`tissue_mask` with PIL's median and rank filters
    (~4x slower on a 4096 x 4096 level): the oracle the fast path is tested and benchmarked
    against."""

    def median(values, top):
        image = Image.fromarray(_to_code(values, top))
        if median_px > 1:
            image = image.filter(ImageFilter.MedianFilter(median_px))
        return np.asarray(image, np.float32) / 255.0 * top

    def rank(mask, size, op):
        return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(op(size))) > 127

    valid = rgb.max(axis=-1) > 20
    sat = median(saturation(rgb), 1.0)
    od = median(optical_density(rgb), OD_TOP)
    t_sat = _log_otsu(sat[valid], 1 / 255, 1.0, min_saturation)
    t_od = _log_otsu(od[valid], 0.01, OD_TOP, min_density)
    mask = ((sat > t_sat) | (od > t_od)) & valid
    if speck_px > 1:
        mask = rank(rank(mask, speck_px, ImageFilter.MinFilter), speck_px, ImageFilter.MaxFilter)
    if hole_px > 1:
        mask = rank(rank(mask, hole_px, ImageFilter.MaxFilter), hole_px, ImageFilter.MinFilter)
    return mask, t_sat, t_od


def detect_tissue(slide, *, max_side: int = 4096, min_saturation: float = MIN_SATURATION,
                  min_density: float = MIN_DENSITY, median_px: int = 5, speck_px: int = 3,
                  hole_px: int = 5) -> TissueMask:
    """The tissue mask of ``slide`` on its largest level with both sides <= ``max_side``.

    ``median_px`` / ``speck_px`` / ``hole_px``: odd window sizes (low-res pixels) of the median
    filter before thresholding, the opening (specks) and the closing (holes).
    """
    level = slide.low_res_level(max_side)
    rgb = slide.read_level(level)
    mask, t_sat, t_od = tissue_mask(rgb, min_saturation=min_saturation, min_density=min_density,
                                    median_px=median_px, speck_px=speck_px, hole_px=hole_px)
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
