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

    def validate(self) -> None:
        if self.tile_size < 8 or (self.stride is not None and self.stride < 1):
            raise SlideError(f"tile size {self.tile_size} / stride {self.stride}: too small")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise SlideError(f"min_tissue {self.min_tissue}: must be in [0, 1]")
        if self.target_mpp <= 0:
            raise SlideError(f"mpp {self.target_mpp}: must be positive")


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


def plan_tiles(slide, tissue_mask, config: TilingConfig) -> TileGrid:
    """All tiles on a regular grid (stride ``config.stride``) with enough tissue, in row order."""
    config.validate()
    base = slide.mpp
    factor = config.target_mpp / base
    if factor < 0.999:
        raise SlideError(f"{slide.path}: asked for {config.target_mpp} um/px but level 0 is "
                         f"{base:.4g} um/px; medfound does not upsample")
    size0 = config.tile_size * factor
    stride0 = (config.stride or config.tile_size) * factor
    w, h = slide.dimensions
    xs = np.arange(0, max(w - size0, 0) + 1, stride0)
    ys = np.arange(0, max(h - size0, 0) + 1, stride0)
    fractions = tissue_mask.fractions(xs, ys, size0).astype(np.float32)  # (len(ys), len(xs))
    rows, cols = np.nonzero(fractions >= max(config.min_tissue, 1e-9))  # row order
    coords = np.stack([np.round(xs[cols]), np.round(ys[rows])], axis=1)
    tissue = fractions[rows, cols]
    level = slide.best_level(factor)
    read_size = int(round(size0 / slide.level_downsamples[level]))
    return TileGrid(coords=coords.astype(np.int64).reshape(-1, 2), tissue=tissue,
                    size0=float(size0), level=level, read_size=max(read_size, 1),
                    tile_size=config.tile_size, mpp=config.target_mpp, base_mpp=base)


def read_tile(slide, grid: TileGrid, x: int, y: int) -> np.ndarray:
    """One tile as RGB uint8 (tile_size, tile_size, 3)."""
    region = slide.read_region((x, y), grid.level, (grid.read_size, grid.read_size))
    if grid.read_size != grid.tile_size:
        region = np.asarray(Image.fromarray(region).resize((grid.tile_size, grid.tile_size),
                                                           Image.BILINEAR))
    return region
