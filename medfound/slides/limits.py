"""The one place the numbers of the slide commands are checked: every option of ``embed --slides``
and of the slide tasks, and every resolution read from a file.

A number is refused unless finite and within a range that makes sense for a microscope slide
(0.05-100 um/px: an oil-immersion 100x objective scans at about 0.1 um/px, a slide overview
camera at tens of um/px); each refusal names the flag and states the range, and all problems of
one command are reported together on one line. Ranges are wide on purpose: they exist to refuse
what cannot be a slide (NaN, 0, 1.27e-4 um/px), not to second-guess a plausible setting.
"""
from __future__ import annotations

import dataclasses
import math

MPP_RANGE = (0.05, 100.0)  # microns per pixel a microscope slide can have
# Memory one slide may take for tiles in flight (a batch being read and two queued), in bytes.
TILE_MEMORY_BYTES = 2 << 30


@dataclasses.dataclass(frozen=True)
class Bound:
    """A closed (or, with ``open_low``, half-open) range for one option, and its flag."""

    flag: str
    low: float
    high: float
    integer: bool = False
    unit: str = ""
    open_low: bool = False

    def problem(self, value) -> str | None:
        """Why ``value`` is refused, or None."""
        if value is None:
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"{self.flag} {value!r}: not a number"
        shown = f"{self.flag} {value!r}"
        if self.integer and (isinstance(value, float) and not value.is_integer()):
            return f"{shown}: must be a whole number"
        low_ok = number > self.low if self.open_low else number >= self.low
        if not (math.isfinite(number) and low_ok and number <= self.high):
            bracket = "(" if self.open_low else "["
            return (f"{shown}: must be a finite number in {bracket}{self.low:g}, {self.high:g}]"
                    f"{self.unit}")
        return None


# Keyed by the field of SlideEmbedConfig / TilingConfig / SlideTaskConfig they check.
BOUNDS = {
    "mpp": Bound("--mpp", *MPP_RANGE, unit=" um/px"),
    "base_mpp": Bound("--base-mpp", *MPP_RANGE, unit=" um/px"),
    "tile_size": Bound("--tile-size", 8, 4096, integer=True, unit=" px"),
    "stride": Bound("--stride", 1, 4096, integer=True, unit=" px"),
    "min_tissue": Bound("--min-tissue", 0.0, 1.0),
    "batch_size": Bound("--batch-size", 1, 4096, integer=True),
    "flush_every": Bound("--part-size", 1, 1_000_000, integer=True, unit=" tiles"),
    "max_tiles": Bound("--max-tiles", 1, 10 ** 12, integer=True, unit=" tiles"),
    "image_size": Bound("--image-size", 32, 4096, integer=True, unit=" px"),
    "epochs": Bound("--epochs", 1, 100_000, integer=True),
    "learning_rate": Bound("--learning-rate", 0.0, 10.0, open_low=True),
    "weight_decay": Bound("--weight-decay", 0.0, 10.0),
    "hidden": Bound("hidden", 1, 65_536, integer=True),
    "val_fraction": Bound("val_fraction", 0.0, 0.9),
    "test_fraction": Bound("test_fraction", 0.0, 0.9, open_low=True),
    "tile_threshold": Bound("--tile-threshold", 0.0, 1.0, open_low=True),
    "n_boot": Bound("--n-boot", 0, 1_000_000, integer=True),
}


def problems(values: dict) -> list[str]:
    """The refusals of the options in ``values`` (field name -> value; None: not given)."""
    return [p for name, value in values.items() if (p := BOUNDS[name].problem(value))]


def check_file_mpp(value, where: str) -> float:
    """A level-0 resolution read from a slide file, refused (naming the slide) unless finite and
    in MPP_RANGE: a wrong tag would make one tile cover the slide many times over."""
    low, high = MPP_RANGE
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and low <= number <= high):
        from medfound.slides.reader import SlideError

        raise SlideError(f"{where}: records a resolution of {value} um/px, outside the "
                         f"{low:g}-{high:g} um/px of a microscope slide; give the right one "
                         "with --base-mpp")
    return number
