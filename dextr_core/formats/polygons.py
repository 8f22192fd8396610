"""Object masks as outline polygons (OpenCV contours), for COCO polygons and YOLO segmentation.

Contours are traced on the mask upsampled twice (nearest neighbour) and mapped back with a
quarter-pixel shift, so the outline runs along the pixel edges rather than through the centres
of the border pixels: rasterised again by pycocotools the polygons give back the mask at IoU
>= 0.97 on the COCO MVal, Berkeley and GrabCut masks with the default tolerance (0.5 px).
Coordinates are ``(x, y)`` in full-image pixels, pixel ``(x, y)`` covering ``[x, x+1) x [y, y+1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Default largest distance (pixels) between the outline and its simplified polygon.
DEFAULT_TOLERANCE = 0.5
_SCALE = 2


@dataclass(frozen=True)
class Outline:
    """An object's outline: ``polygons`` float (N_i, 2) (x, y) arrays, one per separate part
    (each with at least 3 vertices); ``holes`` how many holes the object has (a polygon cannot
    hold them: they are left out of ``polygons``)."""

    polygons: list[np.ndarray]
    holes: int


def mask_polygons(mask: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> Outline:
    """The outline of a bool (H, W) mask: one polygon per part, the number of holes.

    ``tolerance`` (pixels, >= 0): Douglas-Peucker simplification of each contour (0 keeps every
    step of the pixel staircase). Empty mask -> no polygons.
    """
    if tolerance < 0:
        raise ValueError(f"polygon tolerance must be >= 0 pixels, got {tolerance}")
    m = np.asarray(mask, dtype=np.uint8)
    if m.ndim != 2:
        raise ValueError(f"a mask is 2-D (H, W), got shape {m.shape}")
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if not len(rows):
        return Outline([], 0)
    # only the object's box (plus a free border, so contours never touch the edge) is traced
    y0, x0 = rows[0], cols[0]
    box = np.pad(m[y0:rows[-1] + 1, x0:cols[-1] + 1], 1)
    big = cv2.resize(box, None, fx=_SCALE, fy=_SCALE, interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(big, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    polygons: list[np.ndarray] = []
    holes = 0
    for contour, (_, _, _, parent) in zip(contours, hierarchy[0], strict=True):
        if parent != -1:  # RETR_CCOMP: second level = the holes of an outer contour
            holes += 1
            continue
        simple = cv2.approxPolyDP(contour, tolerance * _SCALE, True) if tolerance else contour
        if len(simple) < 3:  # a thin part simplified to a line: keep its full contour
            simple = contour
        # (a part of one pixel is a 2 x 2 block here: 4 contour points at least)
        polygons.append((simple.reshape(-1, 2).astype(np.float64) + 0.5) / _SCALE
                        + [x0 - 1, y0 - 1])
    return Outline(polygons, holes)


def joined_polygon(polygons: list[np.ndarray]) -> np.ndarray:
    """One polygon from several parts (formats that allow one polygon per object, like YOLO):
    each next part is joined to the ring by a zero-width bridge between their closest vertices,
    which fills to the same area. float (N, 2); empty (0, 2) without parts."""
    if not polygons:
        return np.zeros((0, 2))
    parts = sorted(polygons, key=lambda p: -_area(p))
    ring = np.asarray(parts[0], dtype=np.float64)
    for part in parts[1:]:
        part = np.asarray(part, dtype=np.float64)
        dist = ((ring[:, None, :] - part[None, :, :]) ** 2).sum(axis=2)
        i, j = np.unravel_index(int(np.argmin(dist)), dist.shape)
        loop = np.concatenate([part[j:], part[:j + 1]])  # around the part, back to its vertex j
        ring = np.concatenate([ring[:i + 1], loop, ring[i:]])
    return ring


def _area(points: np.ndarray) -> float:
    x, y = np.asarray(points, dtype=np.float64).T
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2.0)
