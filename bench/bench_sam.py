"""Benchmark the SAM-family segmenters (dextr_core.sam) on this machine; prints a Markdown table.

For each model (``mobile_sam``, ``vit_b``, ...) and runtime (``torch``, ``openvino``), in its own
process (so peak memory is that configuration's alone):

* load: seconds to build :class:`~dextr_core.sam.SamSegmenter` (OpenVINO: the conversion and its
  check on the first start, the cached IR on later starts: both are shown);
* encoder: seconds per photo (``prepare``: resize, normalise, image encoder), median over photos;
* decoder: milliseconds per object once the photo's embedding is there (prompt encoder, mask
  decoder, upscaling to the photo), median over objects;
* first / next object: the first object on a photo (encoder + decoder) against each further one
  (decoder only), and their ratio (the issue asks for <= 1/5);
* peak RSS: the process's peak resident memory (MB) at the end.

Photos: ``--photos`` images of ``../shared/evaldata/coco_mval`` (read in place), each with the
extreme points of its object and ``--objects`` - 1 shifted copies as further objects.
Weights: ``--weights FILE`` (a real checkpoint), else a seeded model built with
``dextr_core.sam.build_model`` and saved as a state dict: seeded weights prove the pipeline and
measure speed and memory (which do not depend on the values), never mask quality.

    python bench/bench_sam.py                                 # mobile_sam and vit_b, torch + openvino
    python bench/bench_sam.py --models mobile_sam --runtimes openvino --photos 5
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
EVALDATA = REPO.parent / "shared" / "evaldata" / "coco_mval"


def seeded_checkpoint(variant: str, folder: Path) -> Path:
    """A seeded ``variant`` saved as a state dict in the published layout."""
    import torch

    from dextr_core.sam import build_model

    torch.manual_seed(0)
    path = folder / f"seeded_{variant}.pth"
    torch.save(build_model(variant).state_dict(), path)
    return path


def photos_and_objects(count: int, objects: int) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    from PIL import Image

    from dextr_core.points import extreme_points

    found = []
    for image_path in sorted((EVALDATA / "images").glob("*.jpg"))[:count]:
        image = np.asarray(Image.open(image_path).convert("RGB"))
        truth = np.asarray(Image.open(EVALDATA / "masks" / f"{image_path.stem}.png")) > 128
        points = extreme_points(truth).astype(np.float64)
        shifts = [points + 4 * i for i in range(objects)]
        height, width = image.shape[:2]
        found.append((image, [np.clip(s, 0, [width - 1, height - 1]) for s in shifts]))
    return found


def run_one(weights: Path, runtime: str, photos: int, objects: int) -> dict:
    """Measure one configuration in this process; returns the figures."""
    from dextr_core.sam import SamSegmenter

    started = time.perf_counter()
    segmenter = SamSegmenter(weights, runtime=runtime, warm_up=True)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    SamSegmenter(weights, runtime=runtime, warm_up=False)  # a second start: the IR cache
    reload_s = time.perf_counter() - started
    encoder_s, decoder_ms, first_s, next_s = [], [], [], []
    for image, object_points in photos_and_objects(photos, objects):
        started = time.perf_counter()
        segmenter.segment(image, object_points[0])  # first object: encoder + decoder
        first_s.append(time.perf_counter() - started)
        for points in object_points[1:]:
            started = time.perf_counter()
            segmenter.segment(image, points)
            next_s.append(time.perf_counter() - started)
            decoder_ms.append(next_s[-1] * 1000)
        segmenter.forget_photos()
        started = time.perf_counter()
        segmenter.prepare(image)
        encoder_s.append(time.perf_counter() - started)
    return {
        "model": segmenter.name.split(" (")[0],
        "runtime": segmenter.runtime_info.split(",")[0],
        "load_s": load_s,
        "reload_s": reload_s,
        "encoder_s": statistics.median(encoder_s),
        "decoder_ms": statistics.median(decoder_ms) if decoder_ms else float("nan"),
        "first_s": statistics.median(first_s),
        "next_s": statistics.median(next_s) if next_s else float("nan"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "photos": len(first_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["mobile_sam", "vit_b"])
    parser.add_argument("--runtimes", nargs="+", default=["torch", "openvino"])
    parser.add_argument("--photos", type=int, default=3)
    parser.add_argument("--objects", type=int, default=3, help="objects per photo (>= 2)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="a real checkpoint instead of seeded ones (then --models is ignored)")
    parser.add_argument("--one", nargs=2, metavar=("WEIGHTS", "RUNTIME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(Path(args.one[0]), args.one[1], args.photos, args.objects)))
        return
    load = os.getloadavg()
    print(f"# SAM benchmark, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
          f"{platform.node()}, {os.cpu_count()} CPUs, load average {load[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="bench_sam_") as folder:
        os.environ.setdefault("DEXTR_CACHE_DIR", str(Path(folder) / "cache"))
        files = [args.weights] if args.weights else \
            [seeded_checkpoint(m, Path(folder)) for m in args.models]
        rows = []
        for weights in files:
            for runtime in args.runtimes:
                done = subprocess.run(
                    [sys.executable, __file__, "--one", str(weights), runtime, "--photos",
                     str(args.photos), "--objects", str(args.objects)],
                    capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(f"{weights.name} {runtime}: failed\n{done.stderr[-2000:]}")
                    continue
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"load average at the end {os.getloadavg()[0]:.1f}; weights: "
          f"{'real: ' + str(args.weights) if args.weights else 'seeded (speed only)'}\n")
    print("| model | runtime | load s (first / cached) | encoder s per photo | decoder ms per "
          "object | first object s | next object s | next / first | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['runtime']} | {r['load_s']:.1f} / {r['reload_s']:.1f} | "
              f"{r['encoder_s']:.2f} | {r['decoder_ms']:.0f} | {r['first_s']:.2f} | "
              f"{r['next_s']:.3f} | {r['next_s'] / r['first_s']:.2f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
