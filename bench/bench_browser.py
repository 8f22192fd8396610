"""Fourth click -> overlay, and brush stroke -> mask, in a real browser, model aside: 4000 x 3000
photo, stub segmenter.

Starts ``streamlit run bench/stub_app.py`` (app.py with a segmenter that returns a fixed disc mask
at once) over a temporary folder with one 4000 x 3000 JPEG, opens it in headless Debian chromium
(Playwright, /usr/bin/chromium; server, browser and clicks through tests/e2e/browser_kit.py, as
the browser tests do), clicks the disc's extreme points and times, inside the page, from the
fourth click's ``pointerdown`` to the first animation frame where the page shows the mask at the
disc's centre, far from every click marker: that pixel of the canvas changes colour (a mask drawn
into the canvas's photo), or a mask layer <img> over the canvas is decoded and covers it. That span is everything but the model: the canvas's message to the server, the
rerun, the overlay, its encoding, the transfer and the browser's drawing. Each repeat clears the
clicks first.

The stroke figure: with the four clicks in place and the Paint tool chosen, each round drags one
stroke across the background (mouse down, 10 moves, up) and times, inside the page, from its
``pointerup`` to the first animation frame where the mask layer <img> is opaque at a point on the
stroke, far from the disc: the canvas's send, the rerun (the strokes rasterised at full
resolution on the model's mask, the layer made and encoded), the transfer and the drawing; no
model call. Run from the repository root::

    python3 bench/bench_browser.py [--repeat 7] [--size 4000x3000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "e2e"))  # browser_kit: shared with the browser tests

from browser_kit import (  # noqa: E402
    MASK_AT,
    canvas_box,
    chromium_page,
    click_extremes,
    click_photo,
    missing_browser,
    settle_canvas,
    streamlit_app,
    write_config,
)

from bench.bench_app import _extremes  # noqa: E402

# Installed once per page: pointerdown time, then a per-frame watch of one canvas pixel.
_WATCH = """([x, y]) => {
  const maskAt = MASK_AT;
  const find = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'CANVAS' && el.classList.contains('lower-canvas')) return el;  // the photo's
      if (el.shadowRoot) { const c = find(el.shadowRoot); if (c) return c; }
    }
    return null;
  };
  const pixel = () => {  // what the page shows there: the canvas, a mask layer <img> over it
    const c = find(document);
    if (!c || !c.width) return null;
    const sx = c.width / c.getBoundingClientRect().width;
    const d = c.getContext('2d').getImageData(Math.round(x * sx), Math.round(y * sx), 1, 1).data;
    const m = maskAt([x, y]);
    return [d[0], d[1], d[2] + (m ? m[3] : 0)];
  };
  window.__bench = {t0: null, t1: null, tText: null, text: null, base: pixel()};
  window.addEventListener('pointerdown', () => { window.__bench.t0 = performance.now(); }, true);
  const tick = () => {
    const b = window.__bench, p = pixel();
    if (b.t0 !== null && b.tText === null && b.text && document.body.innerText.includes(b.text))
      b.tText = performance.now();
    if (b.t0 !== null && b.t1 === null && p && b.base &&
        Math.abs(p[0] - b.base[0]) + Math.abs(p[1] - b.base[1]) + Math.abs(p[2] - b.base[2]) > 30)
      b.t1 = performance.now();
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}""".replace("MASK_AT", MASK_AT)


# Per stroke: pointerup time, then a per-frame watch of the mask layer's alpha at one point.
_STROKE_WATCH = """([x, y]) => {
  const maskAt = MASK_AT;
  const alpha = () => { const m = maskAt([x, y]); return m ? m[3] : 0; };
  window.__stroke = {t0: null, t1: null, base: alpha()};
  window.addEventListener('pointerup', () => {
    if (window.__stroke.t0 === null) window.__stroke.t0 = performance.now();
  }, {capture: true, once: true});
  const tick = () => {
    const b = window.__stroke;
    if (b.t0 !== null && b.t1 === null && alpha() > 0) b.t1 = performance.now();
    if (b.t1 === null) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}""".replace("MASK_AT", MASK_AT)


def _photo(path: Path, width: int, height: int) -> None:
    from PIL import Image

    from bench.bench_app import _photo as textured

    Image.fromarray(textured(width, height)).save(path, quality=90)


@contextlib.contextmanager
def _bench_page(width: int, height: int):
    """stub_app.py over a temporary folder with one ``width`` x ``height`` photo of a disc, open
    as annotator "bench" in a 1700 x 1100 chromium window, its canvas settled; yields (page,
    scale): the page and the CSS px per image px the photo is shown at."""
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "src").mkdir()
        _photo(folder / "src" / "photo.jpg", width, height)
        cfg = write_config(folder, ["disc"])
        with streamlit_app(cfg, folder, script="bench/stub_app.py") as url, \
                chromium_page(1700, 1100) as page:
            page.goto(f"{url}/?annotator=bench")
            page.get_by_text("photo.jpg").first.wait_for()
            settle_canvas(page)
            yield page, canvas_box(page)["width"] / width


def measure(width: int, height: int, repeat: int, screenshot: Path | None = None) -> list[float]:
    """ms from the 4th click's pointerdown to the mask on the page, the stub model's own ms as
    the page reports it (the session's "Model N ms"), and ms from the 3rd click's pointerdown to
    its rerun's text on the page (a rerun with no new mask), one list each, a figure per repeat."""
    from playwright.sync_api import expect

    extremes = _extremes(width, height)
    times, models, thirds = [], [], []
    with _bench_page(width, height) as (page, scale):
        centre = [width // 2 * scale, height // 2 * scale]
        for _ in range(repeat + 1):  # the first round warms caches up and is dropped
            expect(page.locator("canvas.upper-canvas")).to_have_count(1)  # the last round's gone
            expect(page.get_by_text("Click the extreme points: 0 of 4.")).to_be_visible()
            click_extremes(page, extremes[:2], scale)
            # the third click, without a mask: the rerun's round trip alone
            page.evaluate(_WATCH, centre)
            page.evaluate("() => { window.__bench.text = '3 of 4.'; }")
            click_extremes(page, extremes[2:3], scale, already=2)
            page.wait_for_function("() => window.__bench.tText !== null", timeout=30_000)
            thirds.append(page.evaluate("() => window.__bench.tText - window.__bench.t0"))
            page.wait_for_timeout(300)  # the third click's canvas is drawn
            page.evaluate(_WATCH, centre)
            click_photo(page, *extremes[3], scale)
            page.wait_for_function("() => window.__bench.t1 !== null", timeout=30_000)
            times.append(page.evaluate("() => window.__bench.t1 - window.__bench.t0"))
            note = page.get_by_text("4 clicks. Check the mask")
            expect(note).to_be_visible()
            found = re.search(r"Model (\d+) ms", note.inner_text())
            models.append(float(found.group(1)) if found else 0.0)
            if screenshot is not None:
                page.screenshot(path=str(screenshot))
            page.get_by_role("button", name="Clear Shortcut").click()
    return times[1:], models[1:], thirds[1:]


def measure_strokes(width: int, height: int, repeat: int) -> list[float]:
    """ms from a Paint stroke's pointerup to its mask on the page, one figure per round (the
    first round, a warm-up, dropped)."""
    from playwright.sync_api import expect

    extremes = _extremes(width, height)
    times = []
    with _bench_page(width, height) as (page, scale):
        left = extremes[0][0] * scale  # strokes stay left of the disc
        click_extremes(page, extremes, scale)
        page.keyboard.press("b")
        expect(page.locator(".st-key-anno-tool-paint button").first).to_have_attribute(
            "data-testid", "stBaseButton-primary")
        box = canvas_box(page)
        for i in range(repeat + 1):
            y = 30.0 + i * (height * scale - 60.0) / max(1, repeat)
            page.evaluate(_STROKE_WATCH, [left * 0.5, y])
            page.mouse.move(box["x"] + 10, box["y"] + y)
            page.mouse.down()
            page.mouse.move(box["x"] + left - 20, box["y"] + y + 3, steps=10)
            page.mouse.up()
            page.wait_for_function("() => window.__stroke.t1 !== null", timeout=60_000)
            times.append(page.evaluate("() => window.__stroke.t1 - window.__stroke.t0"))
            page.wait_for_timeout(300)
    return times[1:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="measured rounds (median)")
    parser.add_argument("--screenshot", type=Path, help="save the page with the mask (PNG)")
    parser.add_argument("--size", default="4000x3000", help="photo WIDTHxHEIGHT")
    parser.add_argument("--only", choices=("clicks", "strokes"), help="run one of the two")
    args = parser.parse_args(argv)
    if reason := missing_browser():
        print(reason)
        return 2
    width, height = (int(v) for v in args.size.lower().split("x"))
    load = os.getloadavg()
    print(f"bench_browser.py  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
          f"{platform.machine()}  {os.cpu_count()} CPUs  load {load[0]:.2f} {load[1]:.2f}")
    rows = []
    if args.only != "strokes":
        times, models, thirds = measure(width, height, args.repeat, args.screenshot)
        rest = [t - m for t, m in zip(times, models, strict=True)]
        rows += [("4th click -> mask shown (browser)", times),
                 ("  of which the stub model (page's 'Model N ms')", models),
                 ("  the rest: rerun, overlay, encoding, transfer, drawing", rest),
                 ("3rd click -> its rerun shown (no mask: the round trip)", thirds)]
    if args.only != "clicks":
        strokes = measure_strokes(width, height, args.repeat)
        rows.append(("Paint stroke (pointerup) -> mask shown (no model)", strokes))
    print(f"{width}x{height}, stub model, {args.repeat} rounds (median, min, max ms):")
    for name, values in rows:
        print(f"| {name:56s} | {statistics.median(values):6.0f} | {min(values):6.0f} | "
              f"{max(values):6.0f} |")
    for name, values in rows:
        if not name.startswith(" "):
            print(f"rounds ({name.split(' ->')[0]}):", ", ".join(f"{t:.0f}" for t in values))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
