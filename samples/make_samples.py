"""Write the sample photos shipped in samples/images/ from scikit-image's bundled data.

Run once (the JPEGs are committed, nothing is downloaded when the app starts)::

    python samples/make_samples.py

Each photo has clear, separate objects to click: an astronaut, a coffee cup, a cat, a rocket on
its launch pad, coins (a grayscale photo, to check the overlay on gray), a motorcycle.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

OUT_DIR = Path(__file__).resolve().parent / "images"

# Run as a script from anywhere: make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: file name -> (scikit-image loader, what is in the photo)
SAMPLES = {
    "astronaut.jpg": (lambda: skimage.data.astronaut(), "Eileen Collins, a flag, a helmet"),
    "coffee.jpg": (lambda: skimage.data.coffee(), "a cup of coffee on a saucer, a spoon"),
    "chelsea.jpg": (lambda: skimage.data.chelsea(), "a cat"),
    "rocket.jpg": (lambda: skimage.data.rocket(), "a rocket on its launch pad"),
    "coins.jpg": (lambda: skimage.data.coins(), "24 coins (grayscale)"),
    "motorcycle.jpg": (lambda: skimage.data.stereo_motorcycle()[0], "a motorcycle"),
}


def jpeg_bytes(array: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a (H, W) gray or (H, W, 3) uint8 RGB array."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="JPEG",
                                                             quality=quality, optimize=True)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Write every sample to ``--out`` (default samples/images/); prints name, size, bytes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder to write the JPEGs to")
    args = parser.parse_args(argv)
    from dextr_core.masks import atomic_write  # after the sys.path line above

    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, (load, content) in SAMPLES.items():
        array = load()
        data = jpeg_bytes(array)
        atomic_write(args.out / name, data)
        total += len(data)
        print(f"{name:16s} {array.shape[1]:5d} x {array.shape[0]:<5d} {len(data):8d} B  {content}")
    print(f"{'total':16s} {'':13s} {total:8d} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
