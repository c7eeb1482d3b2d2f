"""Tiling of large pathology images into patches, and the BreakHis loader built on it.

A tile is a crop box (top, left, height, width) on an image file; tiled datasets repeat the file
path once per box and the crop happens in tf.data after decoding, so nothing is written to disk.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfound.data.labeled.base import DatasetFormatError, LabeledDataset

BREAKHIS_PATTERN = re.compile(
    r"^SOB_(?P<label>[BM])_(?P<subtype>[A-Z]+)-(?P<year>\d+)-(?P<patient>[0-9A-Za-z]+)-(?P<mag>\d+)-(?P<seq>\d+)$")


def tile_boxes(height: int, width: int, tile: int, stride: int | None = None) -> np.ndarray:
    """(M, 4) boxes (top, left, tile, tile) of a grid of whole tiles, centred on the image.

    ``stride`` defaults to ``tile`` (no overlap); leftover margins are split evenly on both sides.
    An image smaller than a tile gets no boxes.
    """
    if tile < 1:
        raise ValueError(f"tile size must be positive, got {tile}")
    stride = tile if stride is None else stride
    if stride < 1:
        raise ValueError(f"stride must be positive, got {stride}")
    if height < tile or width < tile:
        return np.zeros((0, 4), np.int32)
    rows = (height - tile) // stride + 1
    cols = (width - tile) // stride + 1
    top0 = (height - ((rows - 1) * stride + tile)) // 2
    left0 = (width - ((cols - 1) * stride + tile)) // 2
    tops, lefts = np.meshgrid(top0 + stride * np.arange(rows), left0 + stride * np.arange(cols), indexing="ij")
    boxes = np.stack([tops.ravel(), lefts.ravel(), np.full(tops.size, tile), np.full(tops.size, tile)], axis=1)
    return boxes.astype(np.int32)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file from its header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            width, height = im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetFormatError(f"{path}: cannot read the image header ({exc})") from None
    return height, width


def tile_dataset(ds: LabeledDataset, tile: int, stride: int | None = None) -> LabeledDataset:
    """Each image of a path dataset as its grid of tiles, with the image's labels and patient id.

    Images smaller than a tile are refused, naming the file.
    """
    if ds.paths is None:
        raise ValueError("tiling needs a dataset of image files (paths)")
    rows, boxes = [], []
    for i, p in enumerate(ds.paths.tolist()):
        h, w = image_size(p)
        b = tile_boxes(h, w, tile, stride)
        if b.shape[0] == 0:
            raise DatasetFormatError(f"{p}: image is {w}x{h}, smaller than the {tile}x{tile} tile")
        rows.append(np.full(b.shape[0], i))
        boxes.append(b)
    index = np.concatenate(rows)
    out = ds.subset(index, name=f"{ds.name}:tiles{tile}" if ds.name else None)
    out.boxes = np.concatenate(boxes).astype(np.int32)
    out.meta["tile_of"] = index
    return out


def parse_breakhis_name(name: str) -> dict[str, str]:
    """The fields of a BreakHis file name ``SOB_{B,M}_{subtype}-{year}-{patient}-{mag}-{seq}.png``.

    Returns label ('benign'/'malignant'), subtype, patient ('{year}-{patient}'), magnification, seq.
    """
    stem = Path(name).stem
    m = BREAKHIS_PATTERN.match(stem)
    if m is None:
        raise DatasetFormatError(f"{name}: not a BreakHis file name (SOB_{{B,M}}_{{subtype}}-{{year}}-{{patient}}-"
                                 "{mag}-{seq}.png)")
    return {"label": "malignant" if m["label"] == "M" else "benign", "subtype": m["subtype"],
            "patient": f"{m['year']}-{m['patient']}", "magnification": m["mag"], "seq": m["seq"]}


def load_breakhis(root: str | os.PathLike, tile: int | None = 224, stride: int | None = None,
                  magnifications: Sequence[int | str] | None = None) -> LabeledDataset:
    """BreakHis images under ``root`` (any depth) as a binary 'malignant' task, tiled when ``tile`` is set.

    The patient id ('{year}-{patient}') and label come from the file name, so all magnifications
    and tiles of one patient stay on one side of a split.
    """
    root = Path(root)
    files = sorted(p for p in root.rglob("SOB_*") if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise DatasetFormatError(f"{root}: no BreakHis images (SOB_*.png) found")
    fields = [parse_breakhis_name(p.name) for p in files]
    if magnifications is not None:
        wanted = {str(m).rstrip("Xx") for m in magnifications}
        keep = [i for i, f in enumerate(fields) if f["magnification"] in wanted]
        files, fields = [files[i] for i in keep], [fields[i] for i in keep]
        if not files:
            raise DatasetFormatError(f"{root}: no BreakHis images at magnification(s) {sorted(wanted)}")
    labels = np.array([[1.0 if f["label"] == "malignant" else 0.0] for f in fields], np.float32)
    ds = LabeledDataset(labels=labels, mask=np.ones_like(labels), patient_ids=[f["patient"] for f in fields],
                        class_names=("malignant",), task="binary", paths=[str(p) for p in files], name="breakhis",
                        meta={"subtype": np.array([f["subtype"] for f in fields]),
                              "magnification": np.array([f["magnification"] for f in fields])})
    return ds if tile is None else tile_dataset(ds, tile, stride)
