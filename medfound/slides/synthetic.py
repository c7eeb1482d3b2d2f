"""Synthetic whole-slide images with known answers, for tests, notebooks and benchmarks.

Pyramidal tiled TIFFs in the Camelyon layout (tiled JPEG or LZW levels, downsample 2, resolution
tags) written with tifffile (installed with tiffslide) from real histology images (the BreakHis
sample of the test data), ASAP XML annotations drawn around known regions, a huge sparse slide,
and :func:`write_slide_set`: a labelled tumour / normal set whose tumour fractions are known.
No real slide can be downloaded where tests run; these exercise the real reading code.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

TILE = 64  # TIFF tile side (multiple of 16, as JPEG tiles need)


def tissue_canvas(breakhis: str | os.PathLike, size: tuple[int, int], boxes,
                  seed: int = 0) -> np.ndarray:
    """A white (glass) canvas (h, w, 3) with BreakHis images pasted into ``boxes`` (x0, y0, x1, y1)."""
    w, h = size
    canvas = np.full((h, w, 3), 240, np.uint8)
    images = sorted(Path(breakhis).glob("*.png"))
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


def rect(x0, y0, x1, y1) -> list[tuple[int, int]]:
    """The corners of an axis-aligned rectangle, as an ASAP polygon."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


# The default geometry of write_slide_set: a 768 x 512 level 0 (0.25 um/px), tissue pasted into
# TISSUE, the tumour (a malignant image) into TUMOUR inside it; both aligned to 128 px.
SET_SIZE = (768, 512)
TISSUE = (128, 128, 640, 384)
TUMOUR = (128, 128, 384, 384)


def write_slide_set(folder: str | os.PathLike, breakhis: str | os.PathLike, n_tumor: int = 4,
                    n_normal: int = 4, *, first_normal: int | None = None,
                    tumour_box: tuple[int, int, int, int] = TUMOUR) -> Path:
    """A Camelyon16-style labelled set in ``folder``: ``tumor_XXX.tif`` (benign tissue with a
    malignant BreakHis image in ``tumour_box``, annotated in ``tumor_XXX.xml``) and
    ``normal_XXX.tif`` (benign tissue only). Numbers run on from the tumour slides (or from
    ``first_normal``); compression alternates LZW / JPEG. Slide i uses the i-th benign image
    (and the i-th malignant one), cycling, so the answer per tile is known by construction."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    benign = sorted(Path(breakhis).glob("SOB_B_*.png"))
    malignant = sorted(Path(breakhis).glob("SOB_M_*.png"))
    if not benign or not malignant:
        raise FileNotFoundError(f"{breakhis}: needs BreakHis SOB_B_*.png and SOB_M_*.png images")
    w, h = SET_SIZE
    start = n_tumor if first_normal is None else first_normal
    slides = [(i, True) for i in range(n_tumor)] + [(start + j, False) for j in range(n_normal)]
    for i, tumour in slides:
        name = f"tumor_{i:03d}" if tumour else f"normal_{i:03d}"
        canvas = np.full((h, w, 3), 240, np.uint8)
        x0, y0, x1, y1 = TISSUE
        image = Image.open(benign[i % len(benign)]).convert("RGB").resize((x1 - x0, y1 - y0))
        canvas[y0:y1, x0:x1] = np.asarray(image)
        if tumour:
            tx0, ty0, tx1, ty1 = tumour_box
            image = Image.open(malignant[i % len(malignant)]).convert("RGB")
            canvas[ty0:ty1, tx0:tx1] = np.asarray(image.resize((tx1 - tx0, ty1 - ty0)))
            write_asap_xml(folder / f"{name}.xml", [rect(*tumour_box)])
        write_pyramid(folder / f"{name}.tif", canvas, compression="jpeg" if i % 2 else "lzw")
    return folder


def write_random_module(folder: str | os.PathLike, *, arch: str = "tiny", image_size: int = 32,
                        seed: int = 0, name: str = "path-50x1-remedis-m") -> Path:
    """A hub module of a randomly initialised backbone (no pretraining), for demonstrations and
    speed measurements where only the code path, not the weights, matters."""
    import keras

    from medfound.export.exporter import export_module
    from medfound.models.bit import build_backbone
    from medfound.runinfo import BACKBONE_WEIGHTS, RunInfo

    folder = Path(folder)
    keras.utils.set_random_seed(seed)
    run = folder / "run"
    run.mkdir(parents=True, exist_ok=True)
    build_backbone(arch).save_weights(str(run / BACKBONE_WEIGHTS))
    # Labelled as the BiT-M start the module name demands; the weights are random.
    RunInfo(arch=arch, modality="path", init="bit-m", steps=1, image_size=image_size,
            data="random weights (medfound.slides.synthetic)").save(run)
    return export_module(run, folder / name, name=name, allow_test_arch=arch == "tiny")


def _random_crop(image: Image.Image, side: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (40-100 % of the short side), flipped at random, resized to ``side``."""
    w, h = image.size
    c = int(min(w, h) * rng.uniform(0.4, 1.0))
    x, y = int(rng.integers(0, w - c + 1)), int(rng.integers(0, h - c + 1))
    crop = np.asarray(image.crop((x, y, x + c, y + c)).resize((side, side)))
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def write_mosaic_set(folder: str | os.PathLike, breakhis: str | os.PathLike, n_tumor: int = 8,
                     n_normal: int = 8, *, tumour_box: tuple[int, int, int, int] = TISSUE,
                     cell: int = 128, seed: int = 0) -> Path:
    """A labelled set whose slide-level answer is known by construction: the tissue (TISSUE) is a
    mosaic of ``cell``-px random crops (random place, scale and flip); the cells of a tumour slide
    inside ``tumour_box`` (annotated in its XML) come from the malignant BreakHis images, all
    other cells from the benign ones, each image of the pool used in turn (in a random order) so
    that every slide shows its class's images. No two tiles are the same pixels, but no slide
    needs tissue unseen in training: a classifier of pooled embeddings (even of a random module)
    can separate the classes, which checks that the signal travels from the pixels through tiles,
    embedding and pooling to the slide score. It does not measure a model."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    benign = [Image.open(p).convert("RGB") for p in sorted(Path(breakhis).glob("SOB_B_*.png"))]
    malignant = [Image.open(p).convert("RGB") for p in sorted(Path(breakhis).glob("SOB_M_*.png"))]
    if not benign or not malignant:
        raise FileNotFoundError(f"{breakhis}: needs BreakHis SOB_B_*.png and SOB_M_*.png images")
    rng = np.random.default_rng(seed)
    w, h = SET_SIZE
    x0, y0, x1, y1 = TISSUE
    for i in range(n_tumor + n_normal):
        tumour = i < n_tumor
        name = f"tumor_{i:03d}" if tumour else f"normal_{i:03d}"
        canvas = np.full((h, w, 3), 240, np.uint8)
        order = {id(pool): iter(np.concatenate([rng.permutation(len(pool)) for _ in range(64)]))
                 for pool in (benign, malignant)}
        for y in range(y0, y1, cell):
            for x in range(x0, x1, cell):
                inside = tumour_box[0] <= x < tumour_box[2] and tumour_box[1] <= y < tumour_box[3]
                pool = malignant if tumour and inside else benign
                image = pool[next(order[id(pool)])]
                canvas[y:y + cell, x:x + cell] = _random_crop(image, cell, rng)
        if tumour:
            write_asap_xml(folder / f"{name}.xml", [rect(*tumour_box)])
        write_pyramid(folder / f"{name}.tif", canvas, compression="jpeg" if i % 2 else "lzw")
    return folder
