"""Which slides a command reads and which file each one writes, decided before any work.

:func:`list_slides` lists a folder or a CSV of slides (CSV paths follow the one path rule of every
medfound table); :func:`plan_outputs` maps each slide to exactly one ``<stem>.h5``, refusing two
slides that would write the same file; :func:`slide_identity` is what finished work is keyed by
besides the name, so a slide replaced under the same name is embedded anew, not served stale.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from medfound.slides.reader import SLIDE_SUFFIXES, SlideError


def list_slides(source: str | os.PathLike, *, path_column: str | None = None,
                root: str | os.PathLike | None = None) -> list[Path]:
    """Slides of a folder (recursive, sorted) or a CSV ('slide', 'path', 'image' or first column,
    or ``path_column``). CSV paths follow the one path rule of every medfound table
    (:func:`medfound.data.tables.relative_paths`): relative to ``root`` (default: the CSV's
    folder) and inside it; absolute, home and escaping paths are refused with the file and line."""
    source = Path(source)
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in SLIDE_SUFFIXES
                      and p.is_file() and not p.name.startswith("."))
    if source.is_file() and source.name.lower().endswith((".csv", ".csv.gz")):
        from medfound.data.labeled.base import check_unique
        from medfound.data.tables import (CSVFormatError, DatasetFormatError, read_csv_table,
                                          relative_paths, under)

        try:
            table = read_csv_table(source)
            fields = table.header
            column = path_column or next((c for c in ("slide", "path", "image") if c in fields),
                                         fields[0] if fields else None)
            if column not in fields:
                raise CSVFormatError(source, f"no column {column!r}; the header has {fields}", 1)
            rel = relative_paths(table, column)
            check_unique(table, rel, "slide path")
        except DatasetFormatError as err:
            raise SlideError(str(err)) from None
        return [Path(p) for p in under(Path(root) if root else source.parent, rel).tolist()]
    raise SlideError(f"{source}: not a folder of slides or a CSV of slide paths")


IDENTITY_BYTES = 1 << 20  # a slide's identity hashes its first and last MiB (and its size)


def slide_identity(path: Path) -> str:
    """What finished and partial work is keyed by besides the name: the slide's size and a hash
    of its first and last MiB (its header and tile index), so that a slide replaced under the
    same name is never served a stale .h5, while a copy (new mtime, same bytes) still is."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        digest.update(f.read(IDENTITY_BYTES))
        if size > IDENTITY_BYTES:
            f.seek(max(IDENTITY_BYTES, size - IDENTITY_BYTES))
            digest.update(f.read(IDENTITY_BYTES))
    return f"{size}:{digest.hexdigest()[:32]}"


def plan_outputs(slides: list[Path], out_dir: Path) -> dict[Path, Path]:
    """Slide -> its <stem>.h5, decided before any work: two slides that would write the same
    file (a.svs in two folders, a.svs beside a.tif, A.svs beside a.svs on a case-blind disk)
    are refused, naming both."""
    outputs, seen = {}, {}
    for slide in slides:
        key = slide.stem.lower()
        if key in seen:
            raise SlideError(f"{seen[key]} and {slide} would both be embedded as "
                             f"{out_dir / (slide.stem + '.h5')}; rename one, or embed them into "
                             "separate --out folders")
        seen[key] = slide
        outputs[slide] = out_dir / f"{slide.stem}.h5"
    return outputs
