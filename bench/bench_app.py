"""Server time of the annotate page around a click, on a 4000 x 3000 photo (and 12000 x 9000).

Prints two tables:

1. the page's building blocks (decode + downscale once, the per-rerun work, the overlay made after
   the fourth click), each the median of ``--repeat`` runs;
2. whole script runs of app.py through ``streamlit.testing.v1.AppTest`` with the model replaced by
   a stub that returns a fixed mask at once (so "model aside" is literal): a rerun after a click
   (fewer than 4 points) and the rerun after the fourth click (mask -> overlay), then the time from
   the fourth click to the overlay split into the model's forward and the rest, with the real
   segmenter (DEXTR when ``--weights`` exists, else the GrabCut fallback).

The whole-run figures are measured inside the script (the annotate page records the time of each
of its runs in ``st.session_state["anno_run_ms"]``): the server's script time, without Streamlit's
own message handling, the websocket transfer and the browser's drawing. Run from the repository root::

    python bench/bench_app.py [--repeat 7] [--huge] [--weights models/dextr_pascal-sbd.h5]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _photo(width: int, height: int) -> np.ndarray:
    """A textured photo with a dark disc in the middle (the object clicked)."""
    rng = np.random.default_rng(0)
    small = rng.integers(150, 250, size=(height // 8 + 1, width // 8 + 1, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR)).copy()
    yy, xx = np.ogrid[:height, :width]
    cx, cy, r = width // 2, height // 2, min(width, height) // 4
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = (40, 35, 60)
    return img


def _extremes(width: int, height: int) -> list[list[float]]:
    cx, cy, r = width // 2, height // 2, min(width, height) // 4
    return [[cx - r, cy], [cx + r, cy], [cx, cy - r], [cx, cy + r]]


def _median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def _table(title: str, rows: list[tuple[str, str, float]]) -> None:
    print(f"\n{title}")
    print(f"| {'step':58s} | {'image':12s} | {'ms':>9s} |")
    print(f"|{'-' * 60}|{'-' * 14}|{'-' * 11}|")
    for step, size, ms in rows:
        print(f"| {step:58s} | {size:12s} | {ms:9.1f} |")


def bench_blocks(folder: Path, sizes: list[tuple[int, int]], repeat: int) -> None:
    import cv2

    from dextr_core.images import load_image
    from ui.canvas import canvas_points, canvas_to_image, image_to_canvas, points_drawing
    from ui.overlay import draw_overlay, encode_png, fit_mask, overlay_layer
    from ui.photos import display_size_for, encode_jpeg

    rows = []
    for width, height in sizes:
        label = f"{width}x{height}"
        path = folder / f"photo_{label}.jpg"
        full = load_image(path)
        disp = display_size_for((width, height))

        def prepare(full=full, disp=disp):
            small = cv2.resize(full, disp, interpolation=cv2.INTER_AREA)
            return encode_jpeg(small)

        rows.append(("decode JPEG (once per image, cached)", label,
                     _median_ms(lambda path=path: load_image(path), max(1, repeat // 3))))
        rows.append(("downscale + JPEG-encode display copy (once, cached)", label,
                     _median_ms(prepare, repeat)))
        small = cv2.resize(full, disp, interpolation=cv2.INTER_AREA)
        jpeg = encode_jpeg(small)
        pts = _extremes(width, height)

        def per_rerun(jpeg=jpeg, pts=pts, disp=disp, width=width, height=height):
            # What every rerun does besides Streamlit itself: the canvas's content hash and
            # data URL of the (cached) background, the drawing of the clicks and their mapping.
            digest = hashlib.md5(jpeg).hexdigest()
            url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
            drawing = points_drawing(image_to_canvas(pts[:3], disp, (width, height)))
            canvas_to_image(canvas_points(drawing), disp, (width, height))
            return digest, url

        rows.append(("per rerun: background hash + data URL + click mapping", label,
                     _median_ms(per_rerun, repeat)))
        yy, xx = np.ogrid[:height, :width]
        mask = (xx - width // 2) ** 2 + (yy - height // 2) ** 2 <= (min(width, height) // 4) ** 2
        rows.append(("4th click: full mask -> display size (fit_mask)", label,
                     _median_ms(lambda mask=mask, disp=disp: fit_mask(mask, (disp[1], disp[0])),
                                repeat)))
        small_mask = fit_mask(mask, (disp[1], disp[0]))
        rows.append(("4th click, before: draw_overlay on the display copy", label,
                     _median_ms(lambda small=small, m=small_mask: draw_overlay(small, [m]),
                                repeat)))
        over = draw_overlay(small, [small_mask])
        rows.append(("4th click, before: JPEG-encode the overlay background", label,
                     _median_ms(lambda over=over: encode_jpeg(over), repeat)))
        rows.append(("4th click, today: overlay_layer (the objects' box only)", label,
                     _median_ms(lambda small=small, m=small_mask: overlay_layer(small, [m]),
                                repeat)))
        layer = overlay_layer(small, [small_mask])[0]
        rows.append(("4th click, today: PNG-encode the layer", label,
                     _median_ms(lambda layer=layer: encode_png(layer), repeat)))
        rows.append(("accept: pack full mask to bits (kept per object)", label,
                     _median_ms(lambda mask=mask: np.packbits(mask.ravel()), repeat)))
        del full, mask
    _table("Building blocks (median ms)", rows)


class StubSegmenter:
    """Returns a fixed disc mask (made once per image size) at once: the page without the model."""

    name = "stub"
    is_fallback = is_remote = False

    def __init__(self):
        self._masks: dict[tuple[int, int], np.ndarray] = {}

    def segment(self, image, points):
        height, width = image.shape[:2]
        if (height, width) not in self._masks:
            yy, xx = np.ogrid[:height, :width]
            r = min(width, height) // 4
            self._masks[(height, width)] = (xx - width // 2) ** 2 + (yy - height // 2) ** 2 <= r * r
        return self._masks[(height, width)].copy()

    def predict(self, image, points):
        return self.segment(image, points).astype(np.float32)


def _project(folder: Path, photo: Path) -> Path:
    src = folder / "src"
    src.mkdir(parents=True, exist_ok=True)
    os.link(photo, src / photo.name) if not (src / photo.name).exists() else None
    cfg = folder / "anno_cfg.yml"
    cfg.write_text("required:\n  source: src\n  destination: out\n"
                   "optional:\n  weights: none.h5\n")
    return cfg


def bench_apptest(folder: Path, sizes: list[tuple[int, int]], repeat: int,
                  weights: Path | None) -> None:
    from streamlit.testing.v1 import AppTest

    import ui.photos as photos
    import ui.resources as resources
    from dextr_core.images import load_image

    rows = []
    split_rows = []
    for width, height in sizes:
        label = f"{width}x{height}"
        cfg = _project(folder / label, folder / f"photo_{label}.jpg")
        os.environ["ANNO_CFG"] = str(cfg)
        real_engine = resources.engine
        stub = StubSegmenter()
        resources.engine = lambda stub=stub: resources.Engine(stub, None)
        try:
            at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
            at.query_params["annotator"] = "bench"
            at.run()
            rows.append(("first page load (claim, decode, downscale)", label,
                         at.session_state["anno_run_ms"][-1]))
            assert not at.exception, at.exception
            pts = _extremes(width, height)
            click_ms, fourth_ms, idle_ms = [], [], []
            for _ in range(repeat):
                for i, p in enumerate(pts):
                    at.session_state["anno_clicks"] = [p]
                    at.run()
                    ms = at.session_state["anno_run_ms"][-1]
                    (fourth_ms if i == 3 else click_ms).append(ms)
                at.run()
                idle_ms.append(at.session_state["anno_run_ms"][-1])
                next(b for b in at.button if b.label == "Clear clicks").click().run()
            assert not at.exception, at.exception
            rows.append(("rerun after a click (1-3 points)", label, statistics.median(click_ms)))
            rows.append(("rerun after the 4th click, stub model (mask -> overlay)", label,
                         statistics.median(fourth_ms)))
            rows.append(("rerun with nothing new (4 points, cached overlay)", label,
                         statistics.median(idle_ms)))
        finally:
            resources.engine = real_engine

        # Fourth click -> overlay with the real segmenter, outside Streamlit.
        from dextr_core.segmenters import load_segmenter
        from ui.overlay import encode_png, fit_mask, overlay_layer

        seg = load_segmenter(weights if weights and weights.exists() else None)
        full = load_image(folder / f"photo_{label}.jpg")
        disp = photos.display_size_for((width, height))
        import cv2

        small = cv2.resize(full, disp, interpolation=cv2.INTER_AREA)
        model, rest = [], []
        for _ in range(max(1, repeat // 2)):
            t0 = time.perf_counter()
            mask = seg.segment(full, np.asarray(pts, dtype=np.float64))
            t1 = time.perf_counter()
            encode_png(overlay_layer(small, [fit_mask(mask, (disp[1], disp[0]))])[0])
            t2 = time.perf_counter()
            model.append((t1 - t0) * 1000)
            rest.append((t2 - t1) * 1000)
        split_rows.append((f"model: {seg.name}", label, statistics.median(model)))
        split_rows.append(("rest: mask -> display, mask layer, PNG", label, statistics.median(rest)))
        del full
    _table("Annotate page runs (AppTest), model stubbed, server script time (median ms)",
           rows)
    _table("Fourth click -> overlay, real segmenter (median ms)", split_rows)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per figure (median)")
    parser.add_argument("--huge", action="store_true", help="also 12000 x 9000 (slow, 2 GB RAM)")
    parser.add_argument("--weights", type=Path, default=REPO / "models" / "dextr_pascal-sbd.h5",
                        help="DEXTR weights for the real-model split (fallback if missing)")
    args = parser.parse_args(argv)
    sizes = [(4000, 3000)] + ([(12000, 9000)] if args.huge else [])
    print(f"bench_app.py  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
          f"{platform.node()}  {platform.processor() or platform.machine()}  "
          f"{os.cpu_count()} CPUs  Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for width, height in sizes:
            Image.fromarray(_photo(width, height)).save(folder / f"photo_{width}x{height}.jpg",
                                                        quality=92)
        bench_blocks(folder, sizes, args.repeat)
        bench_apptest(folder, sizes, args.repeat, args.weights)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
