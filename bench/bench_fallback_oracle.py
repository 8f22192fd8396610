"""Where the classical fallback loses its IoU: the same energy given facts it cannot have.

Usage (from the repository root; ../shared/evaldata must be present)::

    python bench/bench_fallback_oracle.py                 # all three sets (about 4 minutes)
    python bench/bench_fallback_oracle.py --sets grabcut --every 3

Prints one table: per set, the mIoU from the four extreme points of

- ``fallback``: :class:`dextr_core.fallback.GrabCutSegmenter` as shipped (colour models first fitted
  on the region enclosed by the edge-following boundary paths, then refitted after each cut);
- ``truth colour models, 1 cut``: the same graph cut (same seeds, edges, smoothness, box), but its
  two colour models fitted once on the ground truth inside the working crop and not refitted;
- ``truth start, 6 rounds``: the shipped iteration, started from the ground truth in place of the
  enclosed region (how far the refits drift from a perfect start).

Nothing here is a segmenter anyone can use (it reads the answer); it measures which part of the
method the error comes from. The hooks are private methods of ``GrabCutSegmenter``, on purpose:
this script is the only other user.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dextr_core.evaluate import find_pairs, iou, load_mask  # noqa: E402
from dextr_core.fallback import GrabCutSegmenter  # noqa: E402
from dextr_core.images import load_image  # noqa: E402
from dextr_core.points import extreme_points  # noqa: E402
from dextr_core.processing import validate_points  # noqa: E402
from dextr_core.runtime import cpu_name  # noqa: E402

SETS = {"grabcut": 128, "berkeley": None, "coco_mval": None}  # set name -> ignore value


class TruthFallback(GrabCutSegmenter):
    """The fallback with the ground truth standing in for its estimated starting region.

    ``one_cut=True``: colour models fitted on the truth, one graph cut, no refit. ``False``: the
    shipped number of rounds, started from the truth. Call :meth:`set_truth` before each object.
    """

    def __init__(self, one_cut: bool):
        super().__init__()
        self.one_cut = one_cut
        self.name = "truth colour models, 1 cut" if one_cut else "truth start, 6 rounds"
        self._truth = None  # bool (H, W), the current object's ground truth
        self._truth_crop = None  # bool (h, w) of the crop before scaling

    def set_truth(self, truth: np.ndarray) -> None:
        """The ground truth (bool (H, W)) of the object segmented next."""
        self._truth = truth

    def _predict_crop(self, image, points):
        h, w = self._truth.shape
        (cx0, cy0, cx1, cy1), _ = self._crop_box(validate_points(points, (h, w, 3)), h, w)
        self._truth_crop = self._truth[cy0 : cy1 + 1, cx0 : cx1 + 1]
        return super()._predict_crop(image, points)

    def _graph_cut(self, small, edge, initial, sure_fg, box, sure_bg=None):
        sh, sw = small.shape[:2]
        truth = cv2.resize(self._truth_crop.astype(np.float32), (sw, sh),
                           interpolation=cv2.INTER_AREA) > 0.5
        rounds = self.iterations
        if self.one_cut:
            self.iterations = 1
        try:
            return super()._graph_cut(small, edge, truth, sure_fg, box, sure_bg)
        finally:
            self.iterations = rounds


def miou(dataset: Path, ignore: int | None, segmenter, every: int) -> tuple[int, float]:
    """(objects, mIoU) of ``segmenter`` from each object's four extreme points."""
    ious = []
    for pair in find_pairs(dataset)[0][::every]:
        gt, image = load_mask(pair.mask), load_image(pair.image)
        valid = None if ignore is None else gt != ignore
        truth = gt > 127 if valid is None else (gt > 127) & valid
        if not truth.any() or gt.shape != image.shape[:2]:
            continue
        if isinstance(segmenter, TruthFallback):
            segmenter.set_truth(truth)
        ious.append(iou(segmenter.segment(image, extreme_points(truth)), truth, valid))
    return len(ious), float(np.mean(ious))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaldata", type=Path, default=REPO.parent / "shared" / "evaldata")
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=list(SETS))
    parser.add_argument("--every", type=int, default=1, help="every N-th object only (quick look)")
    args = parser.parse_args(argv)
    if not (args.evaldata / "grabcut").is_dir():
        print(f"evaluation data not found at {args.evaldata}; pass --evaldata", file=sys.stderr)
        return 2
    methods = [GrabCutSegmenter(), TruthFallback(one_cut=True), TruthFallback(one_cut=False)]
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_name()}")
    header = f"{'set':<10} {'method':<28} {'objects':>7} {'mIoU':>7}"
    print(header)
    print("-" * len(header))
    for name in args.sets:
        for method in methods:
            label = "fallback" if type(method) is GrabCutSegmenter else method.name
            count, value = miou(args.evaldata / name, SETS[name], method, args.every)
            print(f"{name:<10} {label:<28} {count:>7} {value:>7.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
