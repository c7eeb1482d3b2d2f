"""Whole-slide images (Camelyon16/17 pyramidal TIFFs): read them and find their tissue.

Slides are read with `tiffslide <https://github.com/Bayer-Group/tiffslide>`_ (see
:mod:`medfound.slides.reader` for why); :mod:`medfound.slides.tissue` masks glass out on a
low-resolution level so that background is never embedded.
"""
from medfound.slides.reader import Slide, SlideError, magnification_to_mpp, open_slide
from medfound.slides.tissue import TissueMask, detect_tissue, overlay_png

__all__ = ["Slide", "SlideError", "TissueMask", "detect_tissue", "magnification_to_mpp",
           "open_slide", "overlay_png"]
