"""COCO ``segmentation`` values: RLE (the default) or polygons from the object's outline.

A COCO polygon cannot hold a hole, so an object with holes keeps its RLE even when polygons are
asked for (:func:`segmentation` says so and the export's summary counts them).
"""

from __future__ import annotations

import numpy as np

from .polygons import DEFAULT_TOLERANCE, mask_polygons

#: The ``--segmentation`` choices of the COCO export.
SEGMENTATIONS = ("rle", "polygon")


def segmentation(mask: np.ndarray, rle: dict, mode: str = "rle",
                 tolerance: float = DEFAULT_TOLERANCE) -> tuple[dict | list, bool]:
    """``(segmentation, kept_rle)`` for one object.

    ``mask``: bool (H, W); ``rle``: its COCO RLE ``{"size": [H, W], "counts": str}``;
    ``mode``: "rle" -> ``rle``; "polygon" -> ``[[x1, y1, x2, y2, ...], ...]`` (one list per part,
    pixels, rounded to 0.01) unless the object has holes, then ``rle`` and ``kept_rle`` True.
    """
    if mode not in SEGMENTATIONS:
        raise ValueError(f"segmentation must be one of {SEGMENTATIONS}, got {mode!r}")
    if mode == "rle":
        return rle, False
    outline = mask_polygons(mask, tolerance)
    if outline.holes or not outline.polygons:  # (an empty mask is never exported)
        return rle, bool(outline.holes)
    return [[round(float(v), 2) for v in poly.ravel()] for poly in outline.polygons], False
