"""A PNG grid of augmented view pairs, so a user can see what the model will see during pretraining.

Rows are the input images; the first column is the original (letterboxed to the view size), then
``pairs`` pairs of views, each pair made by ``augment_pair`` from one seed as in training.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont, ImageOps

from medfound.augment.presets import augment_pair, get_preset
from medfound.data.images import read_image
from medfound.utils.files import atomic_path

MAX_PAIRS = 16
CELL_GAP = 4  # pixels between the two views of a pair and around the grid
PAIR_GAP = 16  # pixels between pairs (and after the original)
HEADER = 18  # pixels of column labels above the grid
BACKGROUND = (255, 255, 255)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(image, np.float32) * 255.0), 0, 255).astype(np.uint8)


def _check_arguments(paths: Sequence[str | os.PathLike], out_png: str | os.PathLike, pairs: int,
                     seed: int) -> None:
    if isinstance(paths, (str, os.PathLike)) or not paths:
        raise ValueError("write_preview needs a non-empty list of image paths")
    if not str(out_png).lower().endswith(".png"):
        raise ValueError(f"{out_png}: the preview is a PNG file; give a path ending in .png")
    if isinstance(pairs, bool) or not isinstance(pairs, int) or not 1 <= pairs <= MAX_PAIRS:
        raise ValueError(f"pairs must be an int in [1, {MAX_PAIRS}], got {pairs!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


def write_preview(paths: list[str], out_png: str, preset: str = "cxr",
                  image_size: int | None = None, pairs: int = 4, seed: int = 0) -> Path:
    """Writes a PNG grid (rows = images; columns = original, then ``pairs`` view pairs) atomically.

    Returns the path written.

    Arguments, the preset and every image are checked before any augmentation runs; unreadable
    images raise a ValueError naming the file.
    """
    _check_arguments(paths, out_png, pairs, seed)
    config = get_preset(preset, image_size=image_size)
    images = [read_image(p) for p in paths]  # every file is checked before any work starts
    size = config.image_size
    pair_width = 2 * size + CELL_GAP
    width = CELL_GAP + size + pairs * (PAIR_GAP + pair_width) + CELL_GAP
    height = HEADER + len(images) * (size + CELL_GAP) + CELL_GAP
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((CELL_GAP, 3), "original", fill=(0, 0, 0), font=font)
    for j in range(pairs):
        left = CELL_GAP + size + PAIR_GAP + j * (PAIR_GAP + pair_width)
        draw.text((left, 3), f"pair {j + 1} ({preset}, {size}px)", fill=(0, 0, 0), font=font)

    for i, array in enumerate(images):
        top = HEADER + i * (size + CELL_GAP)
        original = Image.fromarray(_to_uint8(array))
        canvas.paste(ImageOps.pad(original, (size, size), color=(128, 128, 128)), (CELL_GAP, top))
        image = tf.constant(array, tf.float32)
        for j in range(pairs):
            pair_seed = tf.constant([seed, i * pairs + j], tf.int64)
            view_a, view_b = augment_pair(image, image, pair_seed, config)
            left = CELL_GAP + size + PAIR_GAP + j * (PAIR_GAP + pair_width)
            canvas.paste(Image.fromarray(_to_uint8(view_a.numpy())), (left, top))
            canvas.paste(Image.fromarray(_to_uint8(view_b.numpy())), (left + size + CELL_GAP, top))

    with atomic_path(out_png) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(out_png)
