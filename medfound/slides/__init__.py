"""Whole-slide images (Camelyon16/17 pyramidal TIFFs): read, find tissue, tile, annotate, embed,
and learn slide-level classifiers on the tile embeddings.

Slides are read with `tiffslide <https://github.com/Bayer-Group/tiffslide>`_ (see
:mod:`medfound.slides.reader` for why); :mod:`~medfound.slides.tissue` masks glass out on a
low-resolution level, :mod:`~medfound.slides.tiling` lays tiles at a requested resolution over
the tissue, :mod:`~medfound.slides.annotations` reads ASAP XML, :mod:`~medfound.slides.embed`
writes one HDF5 per slide (``coords``, ``features``, attributes; the CLAM / TRIDENT layout) and
:mod:`~medfound.slides.mil` trains mean-pooling and attention-MIL slide classifiers on them.
"""
from medfound.slides.reader import Slide, SlideError, magnification_to_mpp, open_slide
from medfound.slides.tissue import TissueMask, detect_tissue, overlay_png

__all__ = ["Slide", "SlideError", "TissueMask", "detect_tissue", "magnification_to_mpp",
           "open_slide", "overlay_png"]
