"""Brush strokes that correct a mask by hand: what a stroke is, where it lands, what it changes.

A :class:`Stroke` is one drag of the Paint or Erase brush: its ``mode``, its ``width`` (the
brush's diameter in full-image pixels) and its ``points``, the pointer's path as ``(x, y)``
full-image pixel coordinates (pixel column ``j`` is centred on ``x = j``, as for clicks). Its
footprint is every pixel whose centre lies within ``width / 2`` of the path: a band with round
caps and round joins, a disc for a path of one point. Nothing outside the footprint changes.

An object's mask is the model's mask for its clicks with its strokes applied on top, in order:
``paint`` sets the footprint, ``erase`` clears it (:func:`apply_strokes`). More clicks re-run
the model; the strokes are applied again on the new mask.

Canvas positions map to image coordinates by ``image = origin + canvas / scale - 0.5`` (scale in
canvas px per image px; origin the image position of the canvas's left/top edge), the same rule
as ui/canvas.py's clicks (:func:`canvas_to_image_xy`, :func:`canvas_stroke`).

Pure numpy; no Streamlit. Stored in object records as ``{"mode", "width", "points"}``
(:meth:`Stroke.to_doc` / :meth:`Stroke.from_doc`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: The brush modes: paint adds the footprint to the mask, erase removes it.
MODES = ("paint", "erase")
#: Brush widths (image px) a stroke may have.
MIN_WIDTH, MAX_WIDTH = 1.0, 2000.0
#: Most points one stroke keeps (a longer path is refused as input, not cut).
MAX_POINTS = 20_000


@dataclass(frozen=True)
class Stroke:
    """One brush stroke in full-image pixels: ``mode`` "paint" | "erase", ``width`` the brush's
    diameter (px, MIN_WIDTH..MAX_WIDTH), ``points`` ((x, y), ...) the path (at least one)."""

    mode: str
    width: float
    points: tuple[tuple[float, float], ...]

    def __post_init__(self):
        problem = _problem(self.mode, self.width, self.points)
        if problem:
            raise ValueError(problem)
        object.__setattr__(self, "width", float(self.width))
        object.__setattr__(self, "points", tuple((float(x), float(y)) for x, y in self.points))

    def to_doc(self) -> dict:
        """The stroke as a JSON document: ``{"mode", "width", "points": [[x, y], ...]}`` (1/100
        px; what the progress store keeps)."""
        return {"mode": self.mode, "width": round(self.width, 2),
                "points": [[round(x, 2), round(y, 2)] for x, y in self.points]}

    @classmethod
    def from_doc(cls, doc) -> Stroke:
        """The inverse of :meth:`to_doc`; ValueError naming what is wrong for anything else."""
        if not isinstance(doc, dict):
            raise ValueError(f"a stroke is a document {{mode, width, points}}, got {doc!r:.80}")
        return cls(doc.get("mode"), doc.get("width"), doc.get("points"))


def stroke_problem(doc) -> str | None:
    """Why ``doc`` is not a stored stroke (a sentence), None when it is one."""
    if not isinstance(doc, dict):
        return "a stroke is not a document {mode, width, points}"
    return _problem(doc.get("mode"), doc.get("width"), doc.get("points"))


def _problem(mode, width, points) -> str | None:
    if mode not in MODES:
        return f"stroke mode {mode!r} is not one of {', '.join(MODES)}"
    if not _number(width) or not MIN_WIDTH <= width <= MAX_WIDTH:
        return f"stroke width {width!r} is not a number of pixels in {MIN_WIDTH:g}..{MAX_WIDTH:g}"
    if not isinstance(points, list | tuple) or not 1 <= len(points) <= MAX_POINTS:
        return f"a stroke has 1..{MAX_POINTS} points [x, y]"
    for p in points:
        if (not isinstance(p, list | tuple) or len(p) != 2
                or not all(_number(v) and math.isfinite(v) for v in p)):
            return f"stroke point {p!r:.40} is not a pair of finite numbers [x, y]"
    return None


def _number(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


# ---- canvas -> image ---------------------------------------------------------------------------


def canvas_to_image_xy(points, scale: Sequence[float], origin: Sequence[float] = (0.0, 0.0)
                       ) -> np.ndarray:
    """Canvas positions (N, 2) ``(x, y)`` CSS px -> full-image coordinates, float (N, 2):
    ``origin + canvas / scale - 0.5``. ``scale``: (sx, sy) canvas px per image px; ``origin``:
    where the canvas's left/top edge lies on the image, in edge coordinates (the image spans
    [0, W) x [0, H); pixel j spans [j, j + 1) and has its centre at coordinate j)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    sx, sy = float(scale[0]), float(scale[1])
    if sx <= 0 or sy <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return np.column_stack([origin[0] + pts[:, 0] / sx - 0.5, origin[1] + pts[:, 1] / sy - 0.5])


def image_to_canvas_xy(points, scale: Sequence[float], origin: Sequence[float] = (0.0, 0.0)
                       ) -> np.ndarray:
    """The exact inverse of :func:`canvas_to_image_xy`: ``(image + 0.5 - origin) * scale``."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return np.column_stack([(pts[:, 0] + 0.5 - origin[0]) * float(scale[0]),
                            (pts[:, 1] + 0.5 - origin[1]) * float(scale[1])])


def canvas_stroke(mode: str, canvas_points, canvas_width: float, scale: Sequence[float],
                  origin: Sequence[float] = (0.0, 0.0)) -> Stroke:
    """A stroke drawn on a canvas (points (N, 2) and width in canvas px) in image pixels: points
    by :func:`canvas_to_image_xy`, width divided by the mean of the two scales (clamped to
    MIN_WIDTH..MAX_WIDTH). Points outside the image stay: the footprint is clipped when drawn."""
    xy = canvas_to_image_xy(canvas_points, scale, origin)
    width = float(canvas_width) / math.sqrt(float(scale[0]) * float(scale[1]))
    return Stroke(mode, min(MAX_WIDTH, max(MIN_WIDTH, width)),
                  tuple(map(tuple, _dedupe(xy).tolist())))


def _dedupe(xy: np.ndarray) -> np.ndarray:
    """Drop consecutive repeats; at most MAX_POINTS points (every k-th, the last kept)."""
    if len(xy) > 1:
        keep = np.ones(len(xy), dtype=bool)
        keep[1:] = np.any(np.abs(np.diff(xy, axis=0)) > 1e-6, axis=1)
        xy = xy[keep]
    if len(xy) > MAX_POINTS:
        idx = np.unique(np.r_[np.linspace(0, len(xy) - 1, MAX_POINTS - 1).astype(int),
                              len(xy) - 1])
        xy = xy[idx]
    return xy


# ---- rasterising -------------------------------------------------------------------------------


def _segments(stroke: Stroke) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """The path as segments (a, b) no longer than max(2 * width, 32) px (so each one's box stays
    small); a one-point path is one segment of length 0."""
    pts = np.asarray(stroke.points, dtype=np.float64)
    if len(pts) == 1:
        yield pts[0], pts[0]
        return
    step = max(2.0 * stroke.width, 32.0)
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        n = max(1, math.ceil(float(np.hypot(*(b - a))) / step))
        for k in range(n):
            yield a + (b - a) * (k / n), a + (b - a) * ((k + 1) / n)


def _segment_hits(a, b, radius: float, shape) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Pixels of the box around segment a-b (clipped to the image) whose centres lie within
    ``radius`` of it: ((rows, cols) slices, bool hits), None when the box misses the image."""
    height, width = shape
    x0 = max(0, math.ceil(min(a[0], b[0]) - radius))
    x1 = min(width - 1, math.floor(max(a[0], b[0]) + radius))
    y0 = max(0, math.ceil(min(a[1], b[1]) - radius))
    y1 = min(height - 1, math.floor(max(a[1], b[1]) + radius))
    if x0 > x1 or y0 > y1:
        return None
    px = np.arange(x0, x1 + 1, dtype=np.float64)[None, :] - a[0]
    py = np.arange(y0, y1 + 1, dtype=np.float64)[:, None] - a[1]
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    if length2 > 0:
        t = np.clip((px * dx + py * dy) / length2, 0.0, 1.0)
        px, py = px - t * dx, py - t * dy
    hits = px * px + py * py <= radius * radius + 1e-9
    return (slice(y0, y1 + 1), slice(x0, x1 + 1)), hits


def footprint(stroke: Stroke, shape: Sequence[int]) -> np.ndarray:
    """The pixels a stroke covers, bool (H, W) for ``shape`` = (H, W): every pixel whose centre
    lies within ``stroke.width / 2`` of its path (round caps and joins), clipped at the border."""
    out = np.zeros((int(shape[0]), int(shape[1])), dtype=bool)
    _draw(out, stroke, True)
    return out


def _draw(mask: np.ndarray, stroke: Stroke, value: bool) -> None:
    radius = stroke.width / 2.0
    for a, b in _segments(stroke):
        found = _segment_hits(a, b, radius, mask.shape)
        if found is not None:
            box, hits = found
            if value:
                mask[box] |= hits
            else:
                mask[box] &= ~hits


def apply_strokes(mask: np.ndarray | None, strokes: Sequence[Stroke],
                  shape: Sequence[int] | None = None) -> np.ndarray:
    """``mask`` (bool (H, W); None: an empty one of ``shape``) with ``strokes`` applied in order:
    paint sets each footprint, erase clears it. Returns a new bool (H, W) array (the input is
    not changed)."""
    if mask is None:
        if shape is None:
            raise ValueError("apply_strokes needs a mask or a shape (H, W)")
        out = np.zeros((int(shape[0]), int(shape[1])), dtype=bool)
    else:
        out = np.array(mask, dtype=bool, copy=True)
        if out.ndim != 2:
            raise ValueError(f"a mask is 2-D (H, W), got shape {out.shape}")
    for stroke in strokes:
        _draw(out, stroke, stroke.mode == "paint")
    return out


def strokes_from_docs(docs) -> list[Stroke]:
    """Stored stroke documents (see :meth:`Stroke.to_doc`) -> strokes; None or [] -> []."""
    return [Stroke.from_doc(d) for d in docs or ()]
