"""How well the exported outlines give the masks back, per polygon tolerance, on real masks.

For every hole-free ground-truth mask of ../shared/evaldata (COCO MVal, Berkeley, GrabCut), the
outline polygons of :func:`dextr_core.formats.polygons.mask_polygons` are rasterised again by
pycocotools (as a COCO reader does) and compared with the mask. Prints one row per set and
tolerance: objects, min and median IoU, objects under 0.95, mean vertices per object, and the
milliseconds per object (median). Run from the repository root::

    python bench/bench_polygons.py [--tolerance 0 0.5 1 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dextr_core.formats.polygons import mask_polygons  # noqa: E402

EVALDATA = REPO.parent / "shared" / "evaldata"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tolerance", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    args = parser.parse_args()
    print(f"# {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print("| set | tolerance px | objects | holes (left out) | min IoU | median IoU | < 0.95 "
          "| vertices | ms / object |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in ("coco_mval", "berkeley", "grabcut"):
        masks = [np.asarray(Image.open(p).convert("L")) > 200
                 for p in sorted((EVALDATA / name / "masks").iterdir())]
        for tol in args.tolerance:
            ious, vertices, times, holes = [], [], [], 0
            for mask in masks:
                t0 = time.perf_counter()
                outline = mask_polygons(mask, tol)
                times.append((time.perf_counter() - t0) * 1000)
                if outline.holes:
                    holes += 1
                    continue
                h, w = mask.shape
                polys = [p.ravel().tolist() for p in outline.polygons]
                back = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, h, w)))
                back = back.astype(bool)
                ious.append((back & mask).sum() / (back | mask).sum())
                vertices.append(sum(len(p) for p in outline.polygons))
            print(f"| {name} | {tol:g} | {len(masks)} | {holes} | {min(ious):.3f} | "
                  f"{statistics.median(ious):.4f} | {sum(i < 0.95 for i in ious)} | "
                  f"{statistics.mean(vertices):.0f} | {statistics.median(times):.2f} |")


if __name__ == "__main__":
    main()
