"""Drawing accepted masks over a photo: a translucent fill, an outline and a halo per object.

Everything here works on the *display-size* image (the page shows photos scaled to fit), so the
cost per rerun does not grow with the photo's resolution. Masks at full resolution are reduced to
the display size first (:func:`fit_mask`). No Streamlit import: these are pure NumPy/OpenCV
functions, also used by the leads' page.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

#: Saturated, mutually distinct colours (RGB), one per object in acceptance order (cycled).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),    # red
    (60, 180, 75),    # green
    (0, 130, 200),    # blue
    (255, 140, 0),    # orange
    (145, 30, 180),   # purple
    (0, 200, 200),    # cyan
    (240, 50, 230),   # magenta
    (210, 245, 60),   # lime
    (255, 215, 0),    # yellow
    (0, 128, 128),    # teal
    (170, 110, 40),   # brown
    (0, 0, 128),      # navy
)

#: Colour of the markers drawn at clicked points (RGB) and of their dark rim.
POINT_COLOUR = (255, 255, 0)
POINT_RIM = (0, 0, 0)


def _checked_image(image, alpha: float) -> np.ndarray:
    """``image`` as an H x W x 3 uint8 RGB array; ValueError for any other form or for an
    ``alpha`` outside 0..1."""
    base = np.asarray(image)
    if base.ndim != 3 or base.shape[2] != 3 or base.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 uint8 RGB, got {base.shape} {base.dtype}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in 0..1, got {alpha}")
    return base


def colour_for(index: int) -> tuple[int, int, int]:
    """The RGB palette colour of the object at 0-based position ``index`` (cycles after 12)."""
    return PALETTE[int(index) % len(PALETTE)]


def colour_hex(index: int) -> str:
    """The palette colour of object ``index`` (0-based) as ``#rrggbb`` for HTML/markdown."""
    r, g, b = colour_for(index)
    return f"#{r:02x}{g:02x}{b:02x}"


def fit_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resize a bool (h, w) mask to ``shape`` (H, W[, ...]) and return bool (H, W).

    Shrinking uses area averaging (a display pixel is "in" when at least half of the pixels it
    covers are), enlarging uses nearest neighbour; a mask already at the size is returned as bool.
    When shrinking, only the mask's bounding box (widened to whole display pixels) is resampled:
    an object mask of a 12000 x 9000 photo is mostly empty.
    """
    target_h, target_w = int(shape[0]), int(shape[1])
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"a mask is 2-D (H, W), got shape {m.shape}")
    if m.shape == (target_h, target_w):
        return m.astype(bool, copy=False)
    m = m.astype(bool, copy=False)
    height, width = m.shape
    if target_h * target_w >= height * width:
        return cv2.resize(m.view(np.uint8), (target_w, target_h),
                          interpolation=cv2.INTER_NEAREST).astype(bool)
    out = np.zeros((target_h, target_w), dtype=bool)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return out
    cols = np.flatnonzero(m[rows[0]:rows[-1] + 1].any(axis=0))
    sy, sx = height / target_h, width / target_w
    j0, j1 = int(rows[0] // sy), min(target_h, int(np.ceil((rows[-1] + 1) / sy)))
    i0, i1 = int(cols[0] // sx), min(target_w, int(np.ceil((cols[-1] + 1) / sx)))
    y0, y1 = int(round(j0 * sy)), min(height, int(round(j1 * sy)))
    x0, x1 = int(round(i0 * sx)), min(width, int(round(i1 * sx)))
    crop = m[y0:y1, x0:x1].view(np.uint8) * np.uint8(255)
    out[j0:j1, i0:i1] = cv2.resize(crop, (i1 - i0, j1 - j0), interpolation=cv2.INTER_AREA) >= 128
    return out


def draw_overlay(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    points: np.ndarray | Sequence[Sequence[float]] | None = None,
    alpha: float = 0.45,
) -> np.ndarray:
    """Draw object masks (and optionally clicked points) over an image.

    ``image``: H x W x 3 uint8 RGB (normally the display-size copy of the photo).
    ``masks``: bool arrays, one per object in acceptance order; any that is not (H, W) is resized
    to it (area / nearest), so full-resolution masks may be passed. Object ``i`` (0-based) gets
    :func:`colour_for` ``(i)``: a fill blended with weight ``alpha`` (0..1), a 2 px outline in the
    same colour and a 1 px halo (dark on light pixels, white on dark ones) just outside the
    outline so it reads on grayscale photos.
    ``points``: optional (N, 2) ``(x, y)`` in *this image's* pixels, drawn as small yellow dots
    with a dark rim.
    Returns a new H x W x 3 uint8 RGB array; the input is not modified.
    """
    base = _checked_image(image, alpha)
    height, width = base.shape[:2]
    out = base.copy()
    kernel = np.ones((3, 3), np.uint8)
    for index, mask in enumerate(masks):
        m = fit_mask(mask, (height, width))
        if not m.any():
            continue
        colour = np.array(colour_for(index), dtype=np.float32)
        region = out[m].astype(np.float32)
        out[m] = (region * (1.0 - alpha) + colour * alpha + 0.5).astype(np.uint8)
        m8 = m.astype(np.uint8)
        inner = cv2.erode(m8, kernel, iterations=2)
        outline = (m8 - inner).astype(bool)            # 2 px band along the inside edge
        halo = (cv2.dilate(m8, kernel, iterations=1) - m8).astype(bool)  # 1 px outside
        if halo.any():
            luminance = base[halo].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            out[halo] = np.where((luminance < 96)[:, None], 255, 20).astype(np.uint8)
        out[outline] = colour.astype(np.uint8)
    if points is not None:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        radius = max(3, int(round(min(height, width) / 150)))
        for x, y in pts:
            centre = (int(round(x)), int(round(y)))
            cv2.circle(out, centre, radius + 1, POINT_RIM, -1, lineType=cv2.LINE_AA)
            cv2.circle(out, centre, radius, POINT_COLOUR, -1, lineType=cv2.LINE_AA)
    return out


def overlay_layer(image: np.ndarray, masks: Sequence[np.ndarray], alpha: float = 0.45
                  ) -> tuple[np.ndarray, tuple[int, int]]:
    """The drawing of :func:`draw_overlay` as a transparent layer, to lay over an unchanged photo.

    ``image``: the H x W x 3 uint8 RGB photo the layer goes over (only the halo's colour depends
    on it); ``masks`` and ``alpha`` as for :func:`draw_overlay`. Returns ``(layer, (x, y))``:
    ``layer`` h x w x 4 uint8 RGBA, the part of the H x W layer that holds drawing (the box around
    all objects with their halos; 0 x 0 when no mask has a pixel), whose top-left corner lies at
    pixel (x, y) of the image. Fills have opacity ``alpha``, outlines and halos are opaque, the
    rest is fully transparent. Laid over ``image`` there (source-over) it gives
    :func:`draw_overlay` ``(image, masks)`` within one grey level per channel.
    """
    base = _checked_image(image, alpha)
    height, width = base.shape[:2]
    boxes = []
    for index, mask in enumerate(masks):
        m = fit_mask(mask, (height, width))
        rows = np.flatnonzero(m.any(axis=1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(m.any(axis=0))
        boxes.append((index, m, max(0, rows[0] - 2), min(height, rows[-1] + 3),  # halo in
                      max(0, cols[0] - 2), min(width, cols[-1] + 3)))
    if not boxes:
        return np.zeros((0, 0, 4), dtype=np.uint8), (0, 0)
    uy0, uy1 = min(b[2] for b in boxes), max(b[3] for b in boxes)
    ux0, ux1 = min(b[4] for b in boxes), max(b[5] for b in boxes)
    premul = np.zeros((uy1 - uy0, ux1 - ux0, 4), dtype=np.float32)  # RGB premultiplied, A
    kernel = np.ones((3, 3), np.uint8)
    for index, m, y0, y1, x0, x1 in boxes:
        box = m[y0:y1, x0:x1]
        m8 = box.astype(np.uint8)
        outline = (m8 - cv2.erode(m8, kernel, iterations=2)).astype(bool)
        halo = (cv2.dilate(m8, kernel, iterations=1) - m8).astype(bool)
        colour = np.array(colour_for(index), np.float32) / 255.0
        layer = np.zeros(box.shape + (4,), dtype=np.float32)  # this object alone, straight
        layer[box] = (*colour, alpha)
        if halo.any():
            shown = base[y0:y1, x0:x1][halo].astype(np.float32)
            luminance = shown @ np.array([0.299, 0.587, 0.114], np.float32)
            grey = np.where(luminance < 96, 1.0, 20 / 255).astype(np.float32)
            layer[halo] = np.stack([grey, grey, grey, np.ones_like(grey)], axis=1)
        layer[outline] = (*colour, 1.0)
        a = layer[..., 3:4]
        dst = premul[y0 - uy0:y1 - uy0, x0 - ux0:x1 - ux0]
        dst *= 1.0 - a  # source-over: this object over the earlier ones
        dst[..., :3] += layer[..., :3] * a
        dst[..., 3:4] += a
    out = np.zeros(premul.shape, dtype=np.uint8)
    a = premul[..., 3]
    seen = a > 0
    out[seen, :3] = np.clip(premul[seen, :3] / a[seen, None] * 255.0 + 0.5, 0, 255)
    out[..., 3] = np.clip(a * 255.0 + 0.5, 0, 255)
    return out, (int(ux0), int(uy0))


def encode_png(layer: np.ndarray) -> bytes:
    """PNG bytes of an h x w x 4 uint8 RGBA layer (fast compression level 1)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(layer[:, :, [2, 1, 0, 3]]),
                           [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
