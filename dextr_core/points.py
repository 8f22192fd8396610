"""Extreme points of a mask, as DEXTR's evaluation protocol simulates an annotator's four clicks."""

from __future__ import annotations

import numpy as np


def _median_of(values: np.ndarray) -> int:
    """The lower median of a 1-D integer array (an element of it, never an average)."""
    ordered = np.sort(values)
    return int(ordered[(ordered.size - 1) // 2])


def extreme_points(mask: np.ndarray) -> np.ndarray:
    """The four extreme points of a mask: left-most, right-most, top, bottom.

    ``mask`` is a (H, W) array; non-zero (or True) pixels belong to the object. Returns a (4, 2)
    ``int64`` array of (x, y) in pixel coordinates (column, row), in the order left, right, top,
    bottom. No jitter is added (DEXTR's test protocol).

    Ties: when several object pixels share the extreme coordinate (e.g. a vertical edge on the
    left-most column), the point taken is the lower median of them along the other axis, i.e. the
    element at index ``(n - 1) // 2`` of their sorted coordinates. The result is always an object
    pixel and depends only on the mask.

    Raises ``ValueError`` when the mask is not 2-D or holds no object pixel.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"extreme_points expects a 2-D mask (H, W), got shape {m.shape}")
    ys, xs = np.nonzero(m)
    if xs.size == 0:
        raise ValueError("extreme_points got an empty mask: it has no object pixel to click on")
    x_min, x_max = xs.min(), xs.max()
    y_min, y_max = ys.min(), ys.max()
    left = (int(x_min), _median_of(ys[xs == x_min]))
    right = (int(x_max), _median_of(ys[xs == x_max]))
    top = (_median_of(xs[ys == y_min]), int(y_min))
    bottom = (_median_of(xs[ys == y_max]), int(y_max))
    return np.array([left, right, top, bottom], dtype=np.int64)
