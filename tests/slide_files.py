"""Test slides: pyramidal tiled TIFFs (the Camelyon layout) written with tifffile from real
BreakHis images, ASAP XML drawn around known regions, and broken files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TILE = 64  # TIFF tile side (multiple of 16, as JPEG tiles need)


def tissue_canvas(breakhis: Path, size: tuple[int, int], boxes, seed: int = 0) -> np.ndarray:
    """A white (glass) canvas (h, w, 3) with BreakHis images pasted into ``boxes`` (x0, y0, x1, y1)."""
    w, h = size
    canvas = np.full((h, w, 3), 240, np.uint8)
    images = sorted(breakhis.glob("*.png"))
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        image = Image.open(images[(seed + i) % len(images)]).convert("RGB")
        canvas[y0:y1, x0:x1] = np.asarray(image.resize((x1 - x0, y1 - y0), Image.BILINEAR))
    return canvas


def write_pyramid(path: Path, level0: np.ndarray, *, mpp: float = 0.25, levels: int = 3,
                  compression: str = "jpeg") -> Path:
    """Writes ``level0`` as a tiled pyramid (downsample 2 per level) with resolution tags."""
    import tifffile

    pages = [level0]
    for _ in range(1, levels):
        prev = Image.fromarray(pages[-1])
        pages.append(np.asarray(prev.resize((max(1, prev.width // 2), max(1, prev.height // 2)),
                                            Image.BILINEAR)))
    with tifffile.TiffWriter(str(path), bigtiff=False) as tif:
        for i, page in enumerate(pages):
            scale = mpp * 2 ** i
            tif.write(page, tile=(TILE, TILE), photometric="rgb", compression=compression,
                      resolution=(1e4 / scale, 1e4 / scale), resolutionunit="CENTIMETER",
                      subfiletype=1 if i else 0, metadata=None)
    return path


def write_sparse_pyramid(path: Path, size: tuple[int, int], patch: np.ndarray,
                         at: tuple[int, int], *, mpp: float = 0.25, levels: int = 7,
                         tile: int = 512) -> Path:
    """A huge virtual slide: every tile empty (zero bytes on disk) except those covering ``patch``
    pasted at level-0 ``at`` (tile-aligned); far bigger than memory if read whole."""
    import tifffile

    w, h = size
    with tifffile.TiffWriter(str(path), bigtiff=True) as tif:
        for i in range(levels):
            d = 2 ** i
            lw, lh = -(-w // d), -(-h // d)
            small = patch if d == 1 else np.asarray(Image.fromarray(patch).resize(
                (max(1, patch.shape[1] // d), max(1, patch.shape[0] // d)), Image.BILINEAR))
            px, py = at[0] // d, at[1] // d

            def tiles(lw=lw, lh=lh, small=small, px=px, py=py, TILE=tile):
                for ty in range(0, lh, TILE):
                    for tx in range(0, lw, TILE):
                        x0, y0 = max(tx, px), max(ty, py)
                        x1 = min(tx + TILE, px + small.shape[1])
                        y1 = min(ty + TILE, py + small.shape[0])
                        if x0 >= x1 or y0 >= y1:
                            # tifffile takes the dtype from the first tile: make it glass
                            yield None if tx or ty else np.full((TILE, TILE, 3), 240, np.uint8)
                            continue
                        tile = np.full((TILE, TILE, 3), 240, np.uint8)
                        tile[y0 - ty:y1 - ty, x0 - tx:x1 - tx] = small[y0 - py:y1 - py,
                                                                       x0 - px:x1 - px]
                        yield tile

            scale = mpp * d
            tif.write(tiles(), shape=(lh, lw, 3), dtype=np.uint8, tile=(tile, tile),
                      photometric="rgb", compression="lzw",
                      resolution=(1e4 / scale, 1e4 / scale), resolutionunit="CENTIMETER",
                      subfiletype=1 if i else 0, metadata=None)
    return path


def write_asap_xml(path: Path, tumours, exclusions=()) -> Path:
    """ASAP XML (Camelyon16/17 style): polygons (lists of level-0 (x, y)) in group Tumor, holes in
    group Exclusion."""
    lines = ['<?xml version="1.0"?>', "<ASAP_Annotations>", "\t<Annotations>"]
    for i, (group, polygons) in enumerate([("Tumor", tumours), ("Exclusion", exclusions)]):
        for j, polygon in enumerate(polygons):
            lines.append(f'\t\t<Annotation Name="Annotation {i}_{j}" Type="Polygon" '
                         f'PartOfGroup="{group}" Color="#F4FA58">')
            lines.append("\t\t\t<Coordinates>")
            lines += [f'\t\t\t\t<Coordinate Order="{k}" X="{x}" Y="{y}" />'
                      for k, (x, y) in enumerate(polygon)]
            lines += ["\t\t\t</Coordinates>", "\t\t</Annotation>"]
    lines += ["\t</Annotations>", "\t<AnnotationGroups>",
              '\t\t<Group Name="Tumor" PartOfGroup="None" Color="#F4FA58"><Attributes /></Group>',
              '\t\t<Group Name="Exclusion" PartOfGroup="None" Color="#64FE2E"><Attributes />'
              "</Group>", "\t</AnnotationGroups>", "</ASAP_Annotations>"]
    path.write_text("\n".join(lines) + "\n")
    return path


def rect(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
