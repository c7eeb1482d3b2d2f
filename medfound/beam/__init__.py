"""Embedding whole cohorts on Apache Beam: ``medfound embed ... --engine beam`` and its transform.

The pipeline cuts the input list into the same resumable parts ``medfound embed`` keeps, embeds
each part on a worker (module loaded once per worker) with the same reading, preparation and
batching code, writes it to ``<stem>.parts/`` and, when every part exists, merges them with the
same writer into the same ``.npz`` / ``.h5`` / ``.parquet`` and failures CSV. The runner and its
settings are Beam's own pipeline options, passed through untouched.

apache_beam is imported only when one of these names is used (``pip install medfound[beam]``).
"""
from __future__ import annotations

_LAZY = {"EmbedImages": "medfound.beam.images", "EmbedPartFn": "medfound.beam.images",
         "embed_with_beam": "medfound.beam.images", "pending_parts": "medfound.beam.parts",
         "EmbedSlides": "medfound.beam.slides", "EmbedSlideFn": "medfound.beam.slides",
         "embed_slides_with_beam": "medfound.beam.slides"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'medfound.beam' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
