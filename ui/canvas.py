"""Clicks on the drawing canvas <-> exact pixels of the full-resolution photo.

The annotate page shows a photo on ``streamlit_drawable_canvas.st_canvas`` (``drawing_mode=
"point"``) with the canvas exactly as large as the display-size copy of the photo, so the only
geometry between a click and the photo is (1) how the canvas stores a point and (2) the fit scale.

(1) In streamlit-drawable-canvas 0.13.0 (``frontend/build/index-*.js``, the ``point`` tool) a click
at scene point (x, y) adds a Fabric circle with ``originX="left"``, ``originY="center"``,
``left = x - (radius + strokeWidth / 2)``, ``top = y``. So ``left``/``top`` are the *left-middle*
of the circle's box, not its top-left. :func:`object_centre` reads the origin fields of each object
and works for any origin (older releases stored other origins), giving the click position back.

(2) Canvas (CSS) pixel coordinates are continuous: pixel column ``i`` of the display image covers
``[i, i + 1)``. A canvas position ``c`` maps to the continuous full-image position
``c * W / w``; the pixel index is that minus 0.5 (pixel ``j`` has its centre at ``j + 0.5``),
clipped to ``[0, W - 1]``. :func:`image_to_canvas` is the exact inverse (before clipping).

(3) Views: :class:`ViewBox` generalises (2) to a part of the photo (the zoomed view,
:func:`zoom_view`): ``image = origin + canvas / scale - 0.5`` both ways, the rule brush strokes
use too (:mod:`dextr_core.strokes`); :func:`view_pixels` samples a photo or a mask for a view.
(4) Freehand paths (the Paint and Erase brushes): :func:`canvas_paths`.

All functions are pure (no Streamlit) and unit-tested in tests/test_canvas.py.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dextr_core.strokes import Stroke, canvas_stroke, canvas_to_image_xy, image_to_canvas_xy

#: Fraction of an object's width/height between its box's left/top edge and its origin point.
ORIGIN_OFFSET = {"left": 0.0, "top": 0.0, "center": 0.5, "right": 1.0, "bottom": 1.0}

#: How the page draws click markers (CSS pixels): circle radius and stroke width.
POINT_RADIUS = 4
POINT_STROKE = 2
POINT_FILL = "#ffeb3b"
POINT_STROKE_COLOUR = "#000000"


def object_centre(obj: Mapping[str, Any]) -> tuple[float, float]:
    """Centre (x, y) in canvas pixels of one Fabric circle object from ``json_data["objects"]``.

    Uses ``left``, ``top``, ``originX``, ``originY``, ``radius``, ``strokeWidth``, ``scaleX``,
    ``scaleY`` (Fabric's defaults when absent: origin left/top, stroke 1, scale 1). The box of a
    circle is ``(2 * radius + strokeWidth) * scale`` wide and high.
    """
    radius = float(obj.get("radius", 0.0) or 0.0)
    stroke = float(obj.get("strokeWidth", 1.0) if obj.get("strokeWidth") is not None else 1.0)
    box_w = (2.0 * radius + stroke) * float(obj.get("scaleX", 1.0) or 1.0)
    box_h = (2.0 * radius + stroke) * float(obj.get("scaleY", 1.0) or 1.0)
    origin_x = ORIGIN_OFFSET.get(str(obj.get("originX", "left")), 0.0)
    origin_y = ORIGIN_OFFSET.get(str(obj.get("originY", "top")), 0.0)
    cx = float(obj.get("left", 0.0)) + (0.5 - origin_x) * box_w
    cy = float(obj.get("top", 0.0)) + (0.5 - origin_y) * box_h
    return cx, cy


def canvas_points(json_data: Mapping[str, Any] | None) -> np.ndarray:
    """The clicked points in a canvas result, in click order: float (N, 2) ``(x, y)`` canvas px.

    Only ``circle`` objects count (the point tool's markers); anything else is ignored.
    ``None`` or an empty drawing gives an empty (0, 2) array.
    """
    if not json_data:
        return np.zeros((0, 2), dtype=np.float64)
    centres = [
        object_centre(obj)
        for obj in json_data.get("objects", []) or []
        if str(obj.get("type", "")).lower() == "circle"
    ]
    return np.asarray(centres, dtype=np.float64).reshape(-1, 2)


def _sizes(display_size: Sequence[int], full_size: Sequence[int]) -> tuple[float, float, float, float]:
    w, h = float(display_size[0]), float(display_size[1])
    big_w, big_h = float(full_size[0]), float(full_size[1])
    if min(w, h, big_w, big_h) <= 0:
        raise ValueError(f"sizes must be positive, got display {display_size}, full {full_size}")
    return w, h, big_w, big_h


def canvas_to_image(
    points: np.ndarray | Sequence[Sequence[float]],
    display_size: Sequence[int],
    full_size: Sequence[int],
    clip: bool = True,
) -> np.ndarray:
    """Map canvas positions to full-image pixel coordinates.

    ``points``: (N, 2) ``(x, y)`` in canvas pixels (continuous). ``display_size``: (width, height)
    of the canvas = the display image; ``full_size``: (width, height) of the upright photo.
    Returns float (N, 2) ``(x, y)`` full-image pixel coordinates (pixel ``j`` centred on ``j``),
    clipped to ``[0, W - 1] x [0, H - 1]`` unless ``clip`` is False.
    """
    w, h, big_w, big_h = _sizes(display_size, full_size)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = np.empty_like(pts)
    out[:, 0] = pts[:, 0] * (big_w / w) - 0.5
    out[:, 1] = pts[:, 1] * (big_h / h) - 0.5
    if clip:
        out[:, 0] = np.clip(out[:, 0], 0.0, big_w - 1.0)
        out[:, 1] = np.clip(out[:, 1], 0.0, big_h - 1.0)
    return out


def image_to_canvas(
    points: np.ndarray | Sequence[Sequence[float]],
    display_size: Sequence[int],
    full_size: Sequence[int],
) -> np.ndarray:
    """Inverse of :func:`canvas_to_image` (without clipping): full-image pixels -> canvas pixels.

    Also maps full-image points onto the display image (for drawing markers with
    :func:`ui.overlay.draw_overlay`, subtract 0.5 to get display pixel indices).
    """
    w, h, big_w, big_h = _sizes(display_size, full_size)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = np.empty_like(pts)
    out[:, 0] = (pts[:, 0] + 0.5) * (w / big_w)
    out[:, 1] = (pts[:, 1] + 0.5) * (h / big_h)
    return out


def point_object(x: float, y: float, radius: int = POINT_RADIUS, stroke_width: int = POINT_STROKE,
                 fill: str = POINT_FILL, stroke: str = POINT_STROKE_COLOUR) -> dict[str, Any]:
    """A Fabric circle marker centred on canvas position (x, y), laid out as the point tool does.

    ``originX="left"``, ``originY="center"``, ``left = x - (radius + stroke_width / 2)``,
    ``top = y``; :func:`object_centre` of the result gives (x, y) back.
    """
    return {
        "type": "circle",
        "originX": "left",
        "originY": "center",
        "left": float(x) - (radius + stroke_width / 2.0),
        "top": float(y),
        "radius": radius,
        "strokeWidth": stroke_width,
        "stroke": stroke,
        "fill": fill,
        "scaleX": 1,
        "scaleY": 1,
        "angle": 0,
        "selectable": False,
        "evented": False,
    }


def points_drawing(canvas_xy: np.ndarray | Sequence[Sequence[float]], **style: Any) -> dict:
    """An ``initial_drawing`` for ``st_canvas`` holding one marker per (x, y) canvas position."""
    pts = np.asarray(canvas_xy, dtype=np.float64).reshape(-1, 2)
    return {"version": "6.0.0", "objects": [point_object(x, y, **style) for x, y in pts]}


def canvas_key(image_id: str, generation: int) -> str:
    """Widget key of the canvas for one image and one generation of its point list.

    The page bumps the generation whenever it changes the points itself (undo, clear, accept,
    another image): a new key mounts a fresh canvas that starts from ``initial_drawing``.
    """
    digest = zlib.crc32(image_id.encode("utf-8"))
    return f"canvas-{digest}-{int(generation)}"


# ---- views: the whole photo or a zoomed part of it --------------------------------------------

#: Most screen (CSS) px per image px the zoomed view enlarges to.
MAX_ZOOM = 4.0
#: Margin around the object's box in the zoomed view: this fraction of the box's larger side,
#: at least ZOOM_MARGIN_PX image px.
ZOOM_MARGIN, ZOOM_MARGIN_PX = 0.15, 8.0


@dataclass(frozen=True)
class ViewBox:
    """What part of the photo a canvas shows and how large: ``x0, y0`` the image position of the
    canvas's left/top edge (edge coordinates: the image spans [0, W) x [0, H), pixel j spans
    [j, j + 1)), ``sx, sy`` canvas px per image px. Clicks and strokes map both ways exactly
    (:func:`dextr_core.strokes.canvas_to_image_xy`: ``image = origin + canvas / scale - 0.5``).
    """

    x0: float
    y0: float
    sx: float
    sy: float
    #: True for a part of the photo (:func:`zoom_view`), False for the whole photo.
    zoomed: bool = False

    def to_image(self, points) -> np.ndarray:
        """Canvas px (N, 2) -> full-image (x, y) float (N, 2), not clipped."""
        return canvas_to_image_xy(points, (self.sx, self.sy), (self.x0, self.y0))

    def to_canvas(self, points) -> np.ndarray:
        """Full-image (x, y) (N, 2) -> canvas px float (N, 2) (the exact inverse)."""
        return image_to_canvas_xy(points, (self.sx, self.sy), (self.x0, self.y0))

    def stroke(self, mode: str, canvas_points, canvas_width: float) -> Stroke:
        """A brush stroke drawn on this view, in image pixels (:func:`canvas_stroke`)."""
        return canvas_stroke(mode, canvas_points, canvas_width, (self.sx, self.sy),
                             (self.x0, self.y0))

    def pixel_index(self, canvas_size: Sequence[int], full_size: Sequence[int]
                    ) -> tuple[np.ndarray, np.ndarray]:
        """For each canvas pixel column and row, the image pixel under its centre: int arrays
        (cols (w,), rows (h,)); -1 where the canvas shows no image (a view past the border)."""
        w, h = int(canvas_size[0]), int(canvas_size[1])
        cols = np.floor(self.x0 + (np.arange(w) + 0.5) / self.sx).astype(np.int64)
        rows = np.floor(self.y0 + (np.arange(h) + 0.5) / self.sy).astype(np.int64)
        cols[(cols < 0) | (cols >= int(full_size[0]))] = -1
        rows[(rows < 0) | (rows >= int(full_size[1]))] = -1
        return cols, rows


def whole_view(display_size: Sequence[int], full_size: Sequence[int]) -> ViewBox:
    """The whole photo on a canvas of ``display_size``: the mapping of :func:`canvas_to_image`."""
    w, h, big_w, big_h = _sizes(display_size, full_size)
    return ViewBox(0.0, 0.0, w / big_w, h / big_h)


def zoom_view(box: Sequence[float], canvas_size: Sequence[int], full_size: Sequence[int],
              max_zoom: float = MAX_ZOOM) -> ViewBox:
    """The view that shows ``box`` = (x_min, y_min, x_max, y_max) (image pixel indices,
    inclusive) with a margin as large as the canvas allows, at most ``max_zoom`` canvas px per
    image px and never smaller than the whole photo. The box is centred; the view is moved
    inside the photo where the photo is larger than the view."""
    cw, ch, big_w, big_h = _sizes(canvas_size, full_size)
    x_min, y_min, x_max, y_max = (float(v) for v in box)
    bw, bh = x_max - x_min + 1.0, y_max - y_min + 1.0
    margin = max(ZOOM_MARGIN * max(bw, bh), ZOOM_MARGIN_PX)
    bw, bh = bw + 2 * margin, bh + 2 * margin
    whole = min(cw / big_w, ch / big_h)
    scale = max(whole, min(max_zoom, cw / bw, ch / bh))
    vw, vh = cw / scale, ch / scale
    cx, cy = (x_min + x_max + 1.0) / 2.0, (y_min + y_max + 1.0) / 2.0

    def place(centre, size, full):
        if size >= full:
            return (full - size) / 2.0
        return min(max(centre - size / 2.0, 0.0), full - size)

    return ViewBox(place(cx, vw, big_w), place(cy, vh, big_h), scale, scale, zoomed=True)


def view_pixels(array: np.ndarray, view: ViewBox, canvas_size: Sequence[int],
                fill=0) -> np.ndarray:
    """What a canvas of ``canvas_size`` shows of ``array`` (H x W [x C], an image or a mask)
    through ``view``: the image pixel under each canvas pixel's centre (nearest), ``fill``
    past the border. Returns (h, w [, C]) of the array's dtype."""
    a = np.asarray(array)
    cols, rows = view.pixel_index(canvas_size, (a.shape[1], a.shape[0]))
    out = a[np.clip(rows, 0, None)][:, np.clip(cols, 0, None)]
    out[rows < 0] = fill
    out[:, cols < 0] = fill
    return out


# ---- brush strokes on the canvas ----------------------------------------------------------------


def _path_points(commands) -> list[tuple[float, float]]:
    """The points of a Fabric path (``[["M", x, y], ["Q", cx, cy, x, y], ["L", x, y], ...]``):
    every coordinate pair in order (a Q's control point, then its end)."""
    out = []
    for command in commands or ():
        values = [float(v) for v in command[1:] if isinstance(v, int | float)]
        out.extend(zip(values[0::2], values[1::2], strict=False))
    return out


def canvas_paths(json_data: Mapping[str, Any] | None) -> list[tuple[str, float, np.ndarray]]:
    """The freehand paths in a canvas result, in drawing order: ``(stroke colour, stroke width,
    points float (N, 2) canvas px)``.

    A Fabric path keeps its points as drawn and its position in ``left``/``top``; a path moved
    with the toolbar's edit toggle is moved back onto its box (centre minus ``pathOffset``, the
    centre it was drawn at). Only ``path`` objects count.
    """
    out = []
    for obj in (json_data or {}).get("objects", []) or []:
        if str(obj.get("type", "")).lower() != "path":
            continue
        pts = np.asarray(_path_points(obj.get("path")), dtype=np.float64).reshape(-1, 2)
        if not len(pts):
            continue
        offset = obj.get("pathOffset") or {}
        if "x" in offset and "y" in offset:
            stroke = float(obj.get("strokeWidth", 1.0) or 0.0)
            sx, sy = float(obj.get("scaleX", 1.0) or 1.0), float(obj.get("scaleY", 1.0) or 1.0)
            box_w = (float(obj.get("width", 0.0) or 0.0) + stroke) * sx
            box_h = (float(obj.get("height", 0.0) or 0.0) + stroke) * sy
            cx = float(obj.get("left", 0.0)) + (0.5 - ORIGIN_OFFSET.get(
                str(obj.get("originX", "left")), 0.0)) * box_w
            cy = float(obj.get("top", 0.0)) + (0.5 - ORIGIN_OFFSET.get(
                str(obj.get("originY", "top")), 0.0)) * box_h
            pts = np.column_stack([cx + (pts[:, 0] - float(offset["x"])) * sx,
                                   cy + (pts[:, 1] - float(offset["y"])) * sy])
        out.append((str(obj.get("stroke", "")), float(obj.get("strokeWidth", 1.0) or 1.0), pts))
    return out
