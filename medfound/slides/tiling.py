"""Tiles of a slide at a requested resolution, in level-0 coordinates, with their tissue fraction.

A tile of ``tile_size`` pixels at ``mpp`` covers ``tile_size * mpp / base_mpp`` level-0 pixels; it
is read from the smallest level that still has that resolution and resized, so a 0.5 um/px tile of
a 0.25 um/px slide comes from level 1 when the slide has one (and from level 0, downscaled, if
not). Only tiles with at least ``min_tissue`` tissue are kept, so background is never embedded.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from medfound.slides.reader import SlideError, magnification_to_mpp


@dataclasses.dataclass(frozen=True)
class TilingConfig:
    """Resolution and geometry of the tiles (``magnification`` wins over ``mpp`` when given)."""

    mpp: float = 0.5
    magnification: str | None = None  # e.g. '20x'
    tile_size: int = 224  # pixels at the target resolution
    stride: int | None = None  # pixels at the target resolution; default: tile_size (no overlap)
    min_tissue: float = 0.25  # keep tiles with at least this tissue fraction

    @property
    def target_mpp(self) -> float:
        return magnification_to_mpp(self.magnification) if self.magnification else float(self.mpp)

    def problems(self) -> list[str]:
        """Every refused setting (medfound.slides.limits: finite, within a slide's range)."""
        from medfound.slides.limits import BOUNDS, problems

        found = problems({"tile_size": self.tile_size, "stride": self.stride,
                          "min_tissue": self.min_tissue})
        if not self.magnification:
            return problems({"mpp": self.mpp}) + found
        try:
            mpp = self.target_mpp
        except SlideError as err:
            return [f"--{err}"] + found
        if BOUNDS["mpp"].problem(mpp):
            low, high = BOUNDS["mpp"].low, BOUNDS["mpp"].high
            found.insert(0, f"--magnification {self.magnification!r} is {mpp:g} um/px, outside "
                            f"[{low:g}, {high:g}] um/px")
        return found

    def validate(self) -> None:
        found = self.problems()
        if found:
            raise SlideError("; ".join(found))


@dataclasses.dataclass
class TileGrid:
    """The kept tiles of one slide: level-0 top-left corners and the level they are read from."""

    coords: np.ndarray  # (N, 2) int64 level-0 (x, y)
    tissue: np.ndarray  # (N,) float32 tissue fraction
    size0: float  # tile side in level-0 pixels
    level: int  # level read from
    read_size: int  # tile side in pixels at ``level``
    tile_size: int  # side after resizing (pixels at the target mpp)
    mpp: float  # target microns per pixel
    base_mpp: float


def plan_tiles(slide, tissue_mask, config: TilingConfig, batch_size: int = 1) -> TileGrid:
    """All tiles on a regular grid (stride ``config.stride``) with enough tissue, in row order.

    A tile larger than the slide is refused (it would be padding, not tissue), as is a grid whose
    batches of ``batch_size`` tiles, read at the best level, would not fit the per-slide memory
    bound (medfound.slides.limits.TILE_MEMORY_BYTES)."""
    config.validate()
    base = slide.mpp
    factor = config.target_mpp / base
    if factor < 0.999:
        raise SlideError(f"{slide.path}: asked for {config.target_mpp} um/px but level 0 is "
                         f"{base:.4g} um/px; medfound does not upsample")
    size0 = config.tile_size * factor
    stride0 = (config.stride or config.tile_size) * factor
    w, h = slide.dimensions
    if size0 > min(w, h) + 0.5:
        raise SlideError(f"{slide.path}: a {config.tile_size}-px tile at {config.target_mpp:g} "
                         f"um/px covers {size0:.0f} level-0 px, more than the {w}x{h} slide "
                         f"(at {base:.4g} um/px); use a finer --mpp or a smaller --tile-size")
    xs = np.arange(0, max(w - size0, 0) + 1, stride0)
    ys = np.arange(0, max(h - size0, 0) + 1, stride0)
    fractions = tissue_mask.fractions(xs, ys, size0).astype(np.float32)  # (len(ys), len(xs))
    rows, cols = np.nonzero(fractions >= max(config.min_tissue, 1e-9))  # row order
    coords = np.stack([np.round(xs[cols]), np.round(ys[rows])], axis=1)
    tissue = fractions[rows, cols]
    level = slide.best_level(factor)
    read_size = int(round(size0 / slide.level_downsamples[level]))
    _check_tile_memory(slide, level, read_size, batch_size)
    return TileGrid(coords=coords.astype(np.int64).reshape(-1, 2), tissue=tissue,
                    size0=float(size0), level=level, read_size=max(read_size, 1),
                    tile_size=config.tile_size, mpp=config.target_mpp, base_mpp=base)


def _check_tile_memory(slide, level: int, read_size: int, batch_size: int) -> None:
    """Refuses tiles whose batches in flight (one read, two queued) exceed the memory bound."""
    from medfound.slides.limits import TILE_MEMORY_BYTES

    need = 3 * max(batch_size, 1) * read_size * read_size * 3
    if need > TILE_MEMORY_BYTES:
        raise SlideError(f"{slide.path}: each tile is read as {read_size}x{read_size} px from "
                         f"level {level} (the coarsest level fine enough); batches of "
                         f"{batch_size} need {need / 2 ** 30:.1f} GiB, over the "
                         f"{TILE_MEMORY_BYTES / 2 ** 30:.0f} GiB bound per slide; use a smaller "
                         "--batch-size, a finer --mpp, or a pyramidal copy of the slide")


def read_tile(slide, grid: TileGrid, x: int, y: int) -> np.ndarray:
    """One tile as RGB uint8 (tile_size, tile_size, 3)."""
    region = slide.read_region((x, y), grid.level, (grid.read_size, grid.read_size))
    if grid.read_size != grid.tile_size:
        region = np.asarray(Image.fromarray(region).resize((grid.tile_size, grid.tile_size),
                                                           Image.BILINEAR))
    return region
