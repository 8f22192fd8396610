"""A classical segmenter for extreme clicks, used when no DEXTR weights are installed.

The method follows Papadopoulos et al. (ICCV 2017, "Extreme clicking for efficient object
annotation"): the four extreme points give the object's box and four points on its boundary.

1. Work on a crop around the box (a margin on every side), downscaled so its longer side is at most
   ``max_side`` pixels; the cost of everything below is then bounded whatever the photo's size.
2. Edge strength from colour gradients (Sobel on a smoothed CIE Lab image, strongest channel).
3. Boundary estimate: a least-cost path on ``exp(-edge_weight * edge)`` from each extreme point to the
   next (left -> top -> right -> bottom -> left), each kept inside the box. The closed loop of these
   four paths encloses an initial estimate of the object.
4. GrabCut, initialised from a trimap: outside the box (a ring of ``margin``) definite background;
   inside the box probable background; the enclosed region probable foreground; a core of that
   region (its skeleton) and small discs at the clicks definite foreground.
5. The GrabCut label map is cleaned (only parts connected to the clicks are kept), smoothed, scaled
   back to the crop's size and pasted into a full-image probability map.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.graph import MCP_Geometric
from skimage.morphology import skeletonize

from .images import to_rgb_uint8

#: A click may lie this far outside the image (as a fraction of its width/height) and is clipped.
OUTSIDE_TOLERANCE = 0.02


def _validate_points(points, image_shape) -> np.ndarray:
    """Check clicks against an image; return them as a (N, 2) float64 array of (x, y) pixels.

    Same contract as ``dextr_core.processing.validate_points``: N >= 4 points that are not all on one
    spot; a point at most 2 % of the image size outside it is clipped onto the border, one farther
    out raises ``ValueError`` naming the point and the image size.
    """
    try:
        p = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"points must be numbers, an (N, 2) array of (x, y); got {points!r}") from None
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must be an (N, 2) array of (x, y) pixels, got shape {p.shape}")
    if p.shape[0] < 4:
        raise ValueError(
            f"need at least 4 points (the object's left-most, right-most, top and bottom), "
            f"got {p.shape[0]}; click the missing extreme points"
        )
    if not np.isfinite(p).all():
        raise ValueError("points contain NaN or infinite values; click again inside the image")
    if np.ptp(p[:, 0]) == 0 and np.ptp(p[:, 1]) == 0:
        raise ValueError(
            f"all {p.shape[0]} points are on one spot ({p[0, 0]:g}, {p[0, 1]:g}); click the "
            "object's four extreme points (left-most, right-most, top, bottom)"
        )
    height, width = int(image_shape[0]), int(image_shape[1])
    tol_x, tol_y = OUTSIDE_TOLERANCE * width, OUTSIDE_TOLERANCE * height
    for i, (x, y) in enumerate(p):
        if x < -tol_x or x > width - 1 + tol_x or y < -tol_y or y > height - 1 + tol_y:
            raise ValueError(
                f"point {i + 1} at (x={x:g}, y={y:g}) lies outside the {width} x {height} image "
                f"(x must be in 0..{width - 1}, y in 0..{height - 1}); click inside the image"
            )
    p[:, 0] = np.clip(p[:, 0], 0, width - 1)
    p[:, 1] = np.clip(p[:, 1], 0, height - 1)
    return p


def _edge_strength(crop: np.ndarray) -> np.ndarray:
    """Edge strength in [0, 1], float32 (h, w), of an RGB uint8 crop (strongest Lab gradient)."""
    lab = cv2.cvtColor(cv2.GaussianBlur(crop, (0, 0), 1.0), cv2.COLOR_RGB2LAB).astype(np.float32)
    gx = cv2.Sobel(lab, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lab, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = np.sqrt(gx * gx + gy * gy).max(axis=2)
    scale = float(np.percentile(magnitude, 98)) + 1e-6
    return np.clip(magnitude / scale, 0.0, 1.0)


def _least_cost_path(cost: np.ndarray, start: tuple[int, int], end: tuple[int, int],
                     box: tuple[int, int, int, int]) -> np.ndarray:
    """Least-cost 8-connected path from ``start`` to ``end`` ((x, y) in crop pixels) that stays in
    ``box`` = (x0, y0, x1, y1) inclusive. Returns (K, 2) int (x, y) points, start first."""
    x0, y0, x1, y1 = box
    sub = cost[y0 : y1 + 1, x0 : x1 + 1]
    mcp = MCP_Geometric(sub, fully_connected=True)
    s = (start[1] - y0, start[0] - x0)
    e = (end[1] - y0, end[0] - x0)
    mcp.find_costs([s], [e])
    rows_cols = np.asarray(mcp.traceback(e), dtype=np.int64)
    return np.stack([rows_cols[:, 1] + x0, rows_cols[:, 0] + y0], axis=1)


class GrabCutSegmenter:
    """Extreme points -> mask with OpenCV GrabCut seeded from edge-following boundary paths.

    Follows the Segmenter protocol (``dextr_core.segmenters``). Needs no weights; thread-safe (no
    state is changed by a call). Parameters: ``max_side`` longest side in pixels of the working
    crop (larger crops are downscaled), ``iterations`` GrabCut iterations, ``margin`` the ring
    around the box as a fraction of the box's longer side, ``edge_weight`` how strongly boundary
    paths prefer edges, ``threshold`` the probability above which :meth:`segment` keeps a pixel.
    """

    name = "GrabCut fallback (no DEXTR weights)"
    is_fallback = True

    def __init__(self, max_side: int = 256, iterations: int = 4, margin: float = 0.15,
                 edge_weight: float = 6.0, threshold: float = 0.5):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold}")
        if max_side < 32 or iterations < 1 or margin < 0:
            raise ValueError("max_side must be >= 32, iterations >= 1 and margin >= 0")
        self.max_side = int(max_side)
        self.iterations = int(iterations)
        self.margin = float(margin)
        self.edge_weight = float(edge_weight)
        self.threshold = float(threshold)
        self.core_fraction = None
        self.path_label = None
        self.keep_clicked = True
        self.use_enclosed = True

    def segment(self, image, points) -> np.ndarray:
        """bool (H, W) mask of the object whose extreme points are ``points`` ((N, 2) of (x, y)
        in full-image pixels, N >= 4) in ``image`` (H x W x 3 uint8 RGB; other forms converted)."""
        return self.predict(image, points) > self.threshold

    def predict(self, image, points) -> np.ndarray:
        """float32 (H, W) map in [0, 1]: GrabCut's object mask, smoothed at its border by the
        rescaling from the working crop (values other than 0 and 1 only near the boundary). Zero
        outside the box of the points. Raises ``ValueError`` for invalid points."""
        img = np.asarray(image)
        if not (img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8):
            img = to_rgb_uint8(img)
        height, width = img.shape[:2]
        pts = _validate_points(points, img.shape)
        # Extreme points: the first point reaching each side of the box.
        left, right = pts[np.argmin(pts[:, 0])], pts[np.argmax(pts[:, 0])]
        top, bottom = pts[np.argmin(pts[:, 1])], pts[np.argmax(pts[:, 1])]
        bx0, by0 = int(np.floor(pts[:, 0].min())), int(np.floor(pts[:, 1].min()))
        bx1, by1 = int(np.ceil(pts[:, 0].max())), int(np.ceil(pts[:, 1].max()))
        pad = max(8, int(round(self.margin * max(bx1 - bx0 + 1, by1 - by0 + 1))))
        cx0, cy0 = max(0, bx0 - pad), max(0, by0 - pad)
        cx1, cy1 = min(width - 1, bx1 + pad), min(height - 1, by1 + pad)
        crop = img[cy0 : cy1 + 1, cx0 : cx1 + 1]
        ch, cw = crop.shape[:2]
        scale = min(1.0, self.max_side / max(ch, cw))
        if scale < 1.0:
            sw, sh = max(1, round(cw * scale)), max(1, round(ch * scale))
            small = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_AREA)
        else:
            sh, sw = ch, cw
            small = crop
        sx, sy = sw / cw, sh / ch

        def to_small(p) -> tuple[int, int]:
            x = int(np.clip(round((p[0] - cx0 + 0.5) * sx - 0.5), 0, sw - 1))
            y = int(np.clip(round((p[1] - cy0 + 0.5) * sy - 0.5), 0, sh - 1))
            return x, y

        box0 = to_small((bx0, by0))
        box1 = to_small((bx1, by1))
        labels = self._grabcut(small, [to_small(p) for p in (left, top, right, bottom)],
                               [to_small(p) for p in pts], box0, box1)
        soft = labels.astype(np.float32)
        if scale < 1.0:
            soft = cv2.resize(soft, (cw, ch), interpolation=cv2.INTER_LINEAR)
        soft = cv2.GaussianBlur(soft, (0, 0), 0.7) if scale >= 1.0 else soft
        prob = np.zeros((height, width), dtype=np.float32)
        prob[cy0 : cy1 + 1, cx0 : cx1 + 1] = np.clip(soft, 0.0, 1.0)
        # Nothing outside the box of the clicks belongs to the object.
        outside = np.ones((height, width), dtype=bool)
        outside[by0 : by1 + 1, bx0 : bx1 + 1] = False
        prob[outside] = 0.0
        return prob

    def _grabcut(self, small: np.ndarray, loop: list[tuple[int, int]],
                 clicks: list[tuple[int, int]], box0: tuple[int, int],
                 box1: tuple[int, int]) -> np.ndarray:
        """bool (h, w) object mask on the working crop. ``loop`` = left, top, right, bottom."""
        h, w = small.shape[:2]
        x0, y0 = box0
        x1, y1 = box1
        edge = _edge_strength(small)
        cost = np.exp(-self.edge_weight * edge) + 1e-3
        paths = []
        for a, b in zip(loop, loop[1:] + loop[:1], strict=True):
            sub_box = (min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1]))
            paths.append(_least_cost_path(cost, a, b, sub_box))
        contour = np.concatenate(paths, axis=0).astype(np.int32)
        enclosed = np.zeros((h, w), np.uint8)
        cv2.fillPoly(enclosed, [contour.reshape(-1, 1, 2)], 1)

        trimap = np.full((h, w), cv2.GC_BGD, np.uint8)
        trimap[y0 : y1 + 1, x0 : x1 + 1] = cv2.GC_PR_BGD
        if self.use_enclosed:
            trimap[enclosed > 0] = cv2.GC_PR_FGD
        if self.core_fraction == -1:
            core = np.zeros((h, w), bool)
        elif self.core_fraction is None:
            core = skeletonize(enclosed > 0)
        else:
            dist = cv2.distanceTransform(enclosed, cv2.DIST_L2, 3)
            core = dist > self.core_fraction * max(float(dist.max()), 1.0)
        trimap[core] = cv2.GC_FGD
        if self.path_label is not None:
            trimap[contour[:, 1], contour[:, 0]] = self.path_label
        radius = max(1, round(0.01 * max(h, w)))
        for x, y in clicks:
            cv2.circle(trimap, (x, y), radius, int(cv2.GC_FGD), -1)
        box_only = np.zeros_like(trimap, dtype=bool)
        box_only[y0 : y1 + 1, x0 : x1 + 1] = True
        trimap[~box_only] = cv2.GC_BGD
        bgd_model = np.zeros((1, 65), np.float64)
        fgd_model = np.zeros((1, 65), np.float64)
        bgr = np.ascontiguousarray(small[:, :, ::-1])
        # GrabCut seeds its GMMs with k-means from OpenCV's per-thread RNG: reseed it so that the
        # same input always gives the same mask, whichever thread runs it.
        cv2.setRNGSeed(12345)
        try:
            cv2.grabCut(bgr, trimap, None, bgd_model, fgd_model, self.iterations,
                        cv2.GC_INIT_WITH_MASK)
        except cv2.error:
            # GrabCut needs both labels present; a degenerate (e.g. 1-pixel) box has none.
            return enclosed > 0
        fg = (trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)
        if self.keep_clicked:
            fg = _keep_clicked_parts(fg, clicks)
        return fg


def _keep_clicked_parts(fg: np.ndarray, clicks: list[tuple[int, int]]) -> np.ndarray:
    """Keep the connected parts of ``fg`` (bool (h, w)) that contain or lie next to a click."""
    count, comp = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
    if count <= 2:
        return fg
    keep = np.zeros(count, dtype=bool)
    h, w = fg.shape
    for x, y in clicks:
        window = comp[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3]
        keep[np.unique(window)] = True
    keep[0] = False
    if not keep.any():
        return fg
    return keep[comp]
