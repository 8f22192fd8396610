"""DEXTR pre- and post-processing: image + extreme points -> network input -> full-image mask.

Exactly as ``../shared/dextr/SPEC.md`` describes the published pipeline:

* the points' bounding box is relaxed by :data:`RELAX_PX` on every side, NOT clipped to the image;
  the crop zero-fills whatever falls outside the image and is resized to 512 x 512 (OpenCV
  INTER_CUBIC on uint8, then float32);
* the points are moved into the crop, scaled to the 512 grid and truncated to integers; the fourth
  channel is the per-pixel maximum of one Gaussian per point (10 px full width at half maximum),
  min-max scaled to 0..255;
* the 512 x 512 probability map is resized (bicubic) to the relaxed box, pasted into the image
  (what falls outside is dropped), zeroed outside the tight box of the points and thresholded.

Only the box region of the image is read or written: at 4000 x 3000 pixels the whole image is never
copied or resized.

Coordinates: points are ``(x, y)`` in full-image pixels, pixel ``(i, j)`` covering
``[i, i + 1) x [j, j + 1)``; a fractional click is taken to the pixel it falls in (floor).
Boxes are ``(x_min, y_min, x_max, y_max)`` in whole pixels, both ends inclusive.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import cv2
import numpy as np

from .images import to_rgb_uint8

#: Margin added to the points' bounding box on every side, in full-image pixels.
RELAX_PX = 50
#: Side of the square network input, in pixels.
NET_SIZE = 512
#: Full width at half maximum of each point's Gaussian on the 512 grid, in pixels.
HEATMAP_FWHM = 10.0
#: Half-width of the window, in multiples of the FWHM, where each Gaussian is computed.
HEATMAP_WINDOW = 4.0
#: Points at most this fraction of the image size outside it (clicks on the border) are clipped in.
POINT_TOLERANCE = 0.02
#: Default probability threshold of the published pipeline (mask = probability > threshold).
DEFAULT_THRESHOLD = 0.8

Box = tuple[int, int, int, int]


def validate_points(points, image_shape) -> np.ndarray:
    """Check extreme points against an image and return them as an ``(N, 2)`` float64 array.

    ``points``: N >= 4 ``(x, y)`` pairs in full-image pixels. ``image_shape``: ``(H, W, ...)``.
    Points at most 2 % of the image width (x) or height (y) outside the image are clipped to the
    nearest pixel inside it (clicks on the border). Raises ``ValueError`` with a message saying what
    is wrong for: a shape other than (N, 2), fewer than four points, non-finite values, a point
    farther outside the image (the point and the image size are named), or all points on one spot.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    try:
        pts = np.array(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"points must be (x, y) number pairs, got {points!r}") from exc
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be an (N, 2) array of (x, y) pairs, got shape {pts.shape}")
    if len(pts) < 4:
        raise ValueError(
            f"DEXTR needs at least four extreme points (left, right, top, bottom), got {len(pts)}; "
            "click all four extremes of the object"
        )
    if not np.isfinite(pts).all():
        raise ValueError("points contain NaN or infinite coordinates")
    tol_x, tol_y = POINT_TOLERANCE * width, POINT_TOLERANCE * height
    for x, y in pts:
        if not (-tol_x <= x <= width - 1 + tol_x and -tol_y <= y <= height - 1 + tol_y):
            raise ValueError(
                f"point ({x:g}, {y:g}) lies outside the {width} x {height} image (x must be in "
                f"0..{width - 1}, y in 0..{height - 1}); click on the object inside the image"
            )
    pts[:, 0] = np.clip(pts[:, 0], 0, width - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, height - 1)
    pixels = np.floor(pts)
    if (pixels == pixels[0]).all():
        raise ValueError(
            f"all {len(pts)} points fall on one spot ({int(pixels[0, 0])}, {int(pixels[0, 1])}), "
            "which gives a box of zero area; click the object's four extremes"
        )
    return pts


def relaxed_box(pixel_points: np.ndarray, relax: int = RELAX_PX) -> Box:
    """Bounding box of integer ``(N, 2)`` points grown by ``relax`` px per side, not clipped."""
    x_min, y_min = pixel_points.min(axis=0)
    x_max, y_max = pixel_points.max(axis=0)
    return (int(x_min) - relax, int(y_min) - relax, int(x_max) + relax, int(y_max) + relax)


def crop_zero_padded(image: np.ndarray, box: Box, out: np.ndarray | None = None) -> np.ndarray:
    """``image[y_min:y_max+1, x_min:x_max+1]`` where the box may extend past the image.

    Returns a view when the box lies inside the image, else an array of the box size with the
    outside filled with zeros: ``out`` when given (any contents; it must have that shape and the
    image's dtype), else a new one. Shape ``(y_max - y_min + 1, x_max - x_min + 1) +
    image.shape[2:]``.
    """
    x_min, y_min, x_max, y_max = box
    height, width = image.shape[:2]
    if x_min >= 0 and y_min >= 0 and x_max < width and y_max < height:
        return image[y_min : y_max + 1, x_min : x_max + 1]
    shape = (y_max - y_min + 1, x_max - x_min + 1, *image.shape[2:])
    x0, y0 = max(x_min, 0), max(y_min, 0)
    x1, y1 = min(x_max, width - 1), min(y_max, height - 1)
    if out is None:
        crop = np.zeros(shape, dtype=image.dtype)
    elif out.shape != shape or out.dtype != image.dtype:
        raise ValueError(f"out must be {shape} {image.dtype}, got {out.shape} {out.dtype}")
    else:
        crop = out
    if not (x0 <= x1 and y0 <= y1):  # no overlap with the image
        crop[...] = 0
        return crop
    top, left = y0 - y_min, x0 - x_min
    bottom, right = y1 - y_min + 1, x1 - x_min + 1
    if out is not None:  # zero only the strips around the part that the image fills
        crop[:top] = 0
        crop[bottom:] = 0
        crop[top:bottom, :left] = 0
        crop[top:bottom, right:] = 0
    crop[top:bottom, left:right] = image[y0 : y1 + 1, x0 : x1 + 1]
    return crop


def points_in_crop(pixel_points: np.ndarray, box: Box, size: int = NET_SIZE) -> np.ndarray:
    """Integer ``(N, 2)`` points moved into the box crop and scaled to a ``size`` x ``size`` grid.

    ``(p - (x_min, y_min)) * size / (box width)`` in x (height in y), truncated to integers.
    """
    x_min, y_min, x_max, y_max = box
    crop_w, crop_h = x_max - x_min + 1, y_max - y_min + 1
    shifted = pixel_points.astype(np.float64) - (x_min, y_min)
    scaled = shifted * size / np.array([crop_w, crop_h], dtype=np.float64)
    return scaled.astype(np.int64)


def point_heatmap(
    points: np.ndarray, size: int = NET_SIZE, fwhm: float = HEATMAP_FWHM
) -> np.ndarray:
    """Extreme-point heatmap ``float32 (size, size)`` in 0..255.

    For each ``(x, y)`` point in grid pixels a Gaussian ``exp(-4 ln2 ((u - x)^2 + (v - y)^2) /
    fwhm^2)``; the per-pixel maximum over points, then min-max scaled to 0..255 (the maximum is
    255 at the points).
    """
    grid = np.arange(size, dtype=np.float64)
    a = 4.0 * np.log(2.0) / fwhm**2
    # Beyond HEATMAP_WINDOW * fwhm a Gaussian is below 1e-19: computing it only in that window
    # changes no float32 value that matters and is ~10x faster than the full grid.
    radius = int(np.ceil(HEATMAP_WINDOW * fwhm))
    heat = np.zeros((size, size), dtype=np.float32)
    for x, y in np.asarray(points, dtype=np.float64):
        x0, x1 = max(int(x) - radius, 0), min(int(x) + radius + 1, size)
        y0, y1 = max(int(y) - radius, 0), min(int(y) + radius + 1, size)
        if x0 >= x1 or y0 >= y1:
            continue
        gauss = np.outer(np.exp(-a * (grid[y0:y1] - y) ** 2), np.exp(-a * (grid[x0:x1] - x) ** 2))
        np.maximum(heat[y0:y1, x0:x1], gauss, out=heat[y0:y1, x0:x1])
    low, high = heat.min(), heat.max()
    if high > low:
        heat -= low
        heat *= np.float32(255.0 / (high - low))
    return heat


class _ScratchBuffers:
    """A few large byte buffers reused by all threads for the box-sized intermediates.

    At 4000 x 3000 the zero-padded crop (~38 MB) and the box-sized probability map (~51 MB) cost
    more in first-touch page faults than in arithmetic when allocated afresh for every object;
    reusing them took make_input + paste_mask at 4000 x 3000 from 11-18 ms to 7-9 ms for a
    quarter-frame object and from 28-37 ms to 26-27 ms for a full-frame one
    (docs/benchmarks-dextr.md). Arrays under ``min_bytes`` are not pooled; at most ``keep``
    buffers are kept, the largest ones (about 90 MB in all after a 12 MP image).
    """

    def __init__(self, min_bytes: int = 8 << 20, keep: int = 2):
        self.min_bytes, self.keep = min_bytes, keep
        self._lock = threading.Lock()
        self._free: list[np.ndarray] = []

    @contextlib.contextmanager
    def array(self, shape: tuple[int, ...], dtype) -> Iterator[np.ndarray]:
        """An uninitialised array of ``shape`` and ``dtype``, valid inside the ``with`` only."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if nbytes < self.min_bytes:
            yield np.empty(shape, dtype=dtype)
            return
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if b.nbytes >= nbytes]
            buffer = self._free.pop(min(fits, key=lambda i: self._free[i].nbytes)) if fits else None
        if buffer is None:
            buffer = np.empty(nbytes, dtype=np.uint8)
        try:
            yield buffer[:nbytes].view(dtype).reshape(shape)
        finally:
            with self._lock:
                self._free.append(buffer)
                self._free.sort(key=lambda b: b.nbytes)
                del self._free[: -self.keep]


_SCRATCH = _ScratchBuffers()


def make_input(image, points) -> tuple[np.ndarray, Box]:
    """Network input for one object.

    ``image``: anything :func:`dextr_core.images.to_rgb_uint8` accepts (gray, RGB, RGBA, 16-bit,
    float), ``(H, W[, C])``. ``points``: N >= 4 ``(x, y)`` full-image pixels (checked with
    :func:`validate_points`). Returns ``x`` float32 ``(512, 512, 4)`` (RGB crop 0..255 resized
    bicubically, then the point heatmap 0..255) and the relaxed box ``(x_min, y_min, x_max, y_max)``
    in full-image pixels (not clipped; may extend past the image).
    """
    rgb = to_rgb_uint8(image)
    pixel_points = np.floor(validate_points(points, rgb.shape)).astype(np.int64)
    box = relaxed_box(pixel_points)
    crop_shape = (box[3] - box[1] + 1, box[2] - box[0] + 1, 3)
    with _SCRATCH.array(crop_shape, np.uint8) as scratch:
        crop = crop_zero_padded(rgb, box, out=scratch)
        resized = cv2.resize(crop, (NET_SIZE, NET_SIZE), interpolation=cv2.INTER_CUBIC)
    x = np.empty((NET_SIZE, NET_SIZE, 4), dtype=np.float32)
    x[:, :, :3] = resized
    x[:, :, 3] = point_heatmap(points_in_crop(pixel_points, box))
    return x, box


@contextlib.contextmanager
def _box_probability(prob, box: Box, image_shape) -> Iterator[tuple[np.ndarray, Box]]:
    """Resize ``prob`` to the relaxed box and cut out the part inside the tight box and the image.

    Yields the cut-out float32 map (valid inside the ``with`` only: it lives in a scratch buffer)
    and where it goes in the image, ``(x0, y0, x1, y1)`` inclusive (empty when ``x1 < x0`` or
    ``y1 < y0``).
    """
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim == 3 and prob.shape[2] == 1:
        prob = prob[:, :, 0]
    if prob.ndim != 2:
        raise ValueError(f"expected a (h, w) or (h, w, 1) probability map, got shape {prob.shape}")
    x_min, y_min, x_max, y_max = (int(v) for v in box)
    height, width = int(image_shape[0]), int(image_shape[1])
    x0, y0 = max(x_min + RELAX_PX, 0), max(y_min + RELAX_PX, 0)
    x1, y1 = min(x_max - RELAX_PX, width - 1), min(y_max - RELAX_PX, height - 1)
    if x1 < x0 or y1 < y0:
        yield np.zeros((0, 0), dtype=np.float32), (x0, y0, x1, y1)
        return
    box_h, box_w = y_max - y_min + 1, x_max - x_min + 1
    with _SCRATCH.array((box_h, box_w), np.float32) as resized:
        cv2.resize(prob, (box_w, box_h), dst=resized, interpolation=cv2.INTER_CUBIC)
        yield resized[y0 - y_min : y1 - y_min + 1, x0 - x_min : x1 - x_min + 1], (x0, y0, x1, y1)


def paste_probability(prob, box: Box, image_shape) -> np.ndarray:
    """Full-image probability map ``float32 (H, W)`` in [0, 1] from a network output.

    ``prob``: ``(512, 512)`` or ``(512, 512, 1)`` network output; ``box``: the relaxed box from
    :func:`make_input`; ``image_shape``: ``(H, W, ...)``. The map is resized bicubically to the box,
    pasted (parts outside the image dropped), zeroed outside the tight box (the relaxed box shrunk
    by :data:`RELAX_PX`) and clipped to [0, 1] (bicubic overshoot).
    """
    out = np.zeros((int(image_shape[0]), int(image_shape[1])), dtype=np.float32)
    with _box_probability(prob, box, image_shape) as (part, (x0, y0, x1, y1)):
        if part.size:
            np.clip(part, 0.0, 1.0, out=out[y0 : y1 + 1, x0 : x1 + 1])
    return out


def paste_mask(prob, box: Box, image_shape, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Full-image mask ``bool (H, W)``: :func:`paste_probability` ``> threshold``.

    Computed on the box only (no full-image float map is made).
    """
    out = np.zeros((int(image_shape[0]), int(image_shape[1])), dtype=bool)
    with _box_probability(prob, box, image_shape) as (part, (x0, y0, x1, y1)):
        if part.size:
            np.greater(part, threshold, out=out[y0 : y1 + 1, x0 : x1 + 1])
    return out
