"""ASAP XML annotations (Camelyon16/17) -> tumour fraction per tile.

Camelyon16 groups its polygons as ``Tumor`` (or ``_0``/``_1`` in Camelyon16's own files) and cuts
holes out of them with ``Exclusion`` (``_2``) polygons; Camelyon17 uses ``metastases``. Every group
that is not an exclusion group counts as tumour. A pixel is tumour when it lies in a tumour
polygon and in no exclusion polygon; dots and lines (fewer than three points) cover no area. Fractions are measured by
rasterising the polygons over each tile on a ``samples x samples`` grid (the polygon edges with
PIL), only for tiles that touch a polygon's bounding box.
"""
from __future__ import annotations

import dataclasses
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

EXCLUSION_GROUPS = ("exclusion", "_2")


class AnnotationError(ValueError):
    """An annotation file cannot be read; the message names it."""


@dataclasses.dataclass
class Annotations:
    """Tumour polygons and exclusion holes, as (K, 2) float arrays in level-0 pixels."""

    tumours: list[np.ndarray]
    exclusions: list[np.ndarray]

    def tumour_fraction(self, coords: np.ndarray, size0: float, samples: int = 64) -> np.ndarray:
        """(N,) fraction of each level-0 square (x, y, side ``size0``) that is tumour."""
        out = np.zeros(len(coords), np.float32)
        if not self.tumours:
            return out
        boxes = np.array([[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()]
                          for p in self.tumours])
        scale = samples / size0
        for i, (x, y) in enumerate(np.asarray(coords, np.float64)):
            if not np.any((boxes[:, 0] < x + size0) & (boxes[:, 2] > x) &
                          (boxes[:, 1] < y + size0) & (boxes[:, 3] > y)):
                continue
            canvas = Image.new("L", (samples, samples), 0)
            draw = ImageDraw.Draw(canvas)
            for polygons, value in ((self.tumours, 255), (self.exclusions, 0)):
                for p in polygons:
                    # pixel centres: a sample (i, j) is at (i + 0.5) / scale
                    pts = [((px - x) * scale - 0.5, (py - y) * scale - 0.5) for px, py in p]
                    draw.polygon(pts, fill=value)
            out[i] = np.asarray(canvas).mean() / 255.0
        return out


def read_asap_xml(path: str | os.PathLike) -> Annotations:
    """The tumour and exclusion polygons of an ASAP XML file."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as err:
        raise AnnotationError(f"{path}: not a readable ASAP XML file ({err})") from None
    if root.tag != "ASAP_Annotations":
        raise AnnotationError(f"{path}: not an ASAP annotation file (root element <{root.tag}>, "
                              "expected <ASAP_Annotations>)")
    tumours, exclusions = [], []
    for annotation in root.iter("Annotation"):
        group = (annotation.get("PartOfGroup") or "").strip().lower()
        points = []
        for c in annotation.iter("Coordinate"):
            try:
                points.append((int(c.get("Order", len(points))), float(c.get("X")),
                               float(c.get("Y"))))
            except (TypeError, ValueError):
                raise AnnotationError(f"{path}: annotation {annotation.get('Name')!r} has a "
                                      "coordinate without numeric X/Y") from None
        if not all(np.isfinite(v) for _, x, y in points for v in (x, y)):
            raise AnnotationError(f"{path}: annotation {annotation.get('Name')!r} has a "
                                  "coordinate that is not a finite number (nan or inf)")
        if len(points) < 3:
            continue  # dots and lines cover no area
        polygon = np.array([(x, y) for _, x, y in sorted(points)], np.float64)
        if group in EXCLUSION_GROUPS:
            exclusions.append(polygon)
        else:
            tumours.append(polygon)
    return Annotations(tumours=tumours, exclusions=exclusions)


def check_within(annotations: Annotations, width: int, height: int, where: str) -> None:
    """Refuses polygons wholly outside the level-0 slide (an annotation of another slide, or in
    another level's coordinates): they would label every tile 'no tumour'."""
    for kind, polygons in (("tumour", annotations.tumours), ("exclusion", annotations.exclusions)):
        for i, p in enumerate(polygons):
            if p[:, 0].max() < 0 or p[:, 1].max() < 0 or p[:, 0].min() > width or \
                    p[:, 1].min() > height:
                raise AnnotationError(
                    f"{where}: {kind} polygon {i + 1} ({p[:, 0].min():.0f}..{p[:, 0].max():.0f}, "
                    f"{p[:, 1].min():.0f}..{p[:, 1].max():.0f}) lies outside the {width}x{height} "
                    "slide; is it this slide's annotation, in level-0 pixels?")


def annotation_folder(folder: str, slides: list[Path]) -> tuple[Path, list[Path]]:
    """The --annotations folder and the slides without a ``<stem>.xml`` in it, refusing a
    folder that is missing, a file, or holds an annotation for none of the slides (a typo)."""
    path = Path(folder)
    if path.is_file():
        raise AnnotationError(f"--annotations {path} is a file; give the folder holding one "
                              "<slide>.xml per slide")
    if not path.is_dir():
        raise AnnotationError(f"--annotations {path}: no such folder")
    missing = [s for s in slides if not (path / f"{s.stem}.xml").is_file()]
    if len(missing) == len(slides):
        raise AnnotationError(f"--annotations {path}: none of the {len(slides)} slide(s) has "
                              "an annotation <slide>.xml there; is it the right folder?")
    return path, missing


def tile_labels(fractions: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """1 where a tile's tumour fraction reaches ``threshold``, else 0."""
    return (np.asarray(fractions) >= threshold).astype(np.int64)
