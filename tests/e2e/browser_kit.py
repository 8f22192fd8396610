"""The browser side shared by the browser tests (tests/e2e/) and the browser benchmarks
(bench/bench_browser.py, bench/bench_annotator.py): the app on a free port, headless Debian
chromium, and the photo canvas as a person uses it (clicks on image pixels, waiting out a rerun).

It lives beside the browser tests and is imported the way they import each other: the folder on
``sys.path`` (``sys.path.insert(0, <tests/e2e>)``, then ``from browser_kit import ...``); the bench
scripts put this folder on their path the same way. It imports neither pytest nor anything of the
app, so a benchmark runs it as it is: a failure raises (a fixture error in a test, a traceback in a
benchmark), a missing browser is a reason string (``missing_browser``) that a test skips with and a
benchmark prints. Playwright is imported inside the functions that drive a page.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
#: Screenshots of the browser tests (git-ignored).
ARTIFACTS = REPO / "test-artifacts"
#: The photo canvas (the one that takes the clicks); a rerun may briefly show two.
CANVAS = "canvas.upper-canvas"

#: JS ``([x, y]) => [r, g, b, a] | null``: the mask layer <img> over the photo canvas at canvas
#: position (x, y) (CSS px from the canvas's top-left corner), as the page shows it; null while
#: there is no decoded layer. Use ``page.evaluate(MASK_AT, [x, y])`` or inline it in a function.
MASK_AT = """([x, y]) => {
    for (const host of document.querySelectorAll('div')) {
        const root = host.shadowRoot;
        const bg = root && root.querySelector('canvas.dc-background-canvas');
        if (!bg) continue;
        const img = bg.parentElement.querySelector('img.dextr-mask');
        if (!img || !img.complete || !img.naturalWidth) return null;
        const c = bg.getBoundingClientRect(), r = img.getBoundingClientRect();
        const probe = document.createElement('canvas');
        probe.width = probe.height = 1;
        const ctx = probe.getContext('2d');
        ctx.drawImage(img, Math.floor((x + c.left - r.left) * img.naturalWidth / r.width),
                      Math.floor((y + c.top - r.top) * img.naturalHeight / r.height), 1, 1,
                      0, 0, 1, 1);
        return Array.from(ctx.getImageData(0, 0, 1, 1).data);
    }
    return null;
}"""


def missing_browser() -> str | None:
    """Why a browser run cannot happen here (no /usr/bin/chromium, no Playwright), or None."""
    if not CHROMIUM.exists():
        return ("Debian's chromium is not installed at /usr/bin/chromium "
                "(bash scripts/setup_tests.sh installs it)")
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (pip install -r requirements-dev.txt)"
    return None


def write_config(folder: Path, labels) -> Path:
    """``folder/anno_cfg.yml``: photos in ``folder/src``, masks to ``folder/out``, the class
    names ``labels``, weights that are not there (the app runs its fallback segmenter)."""
    cfg = folder / "anno_cfg.yml"
    cfg.write_text("required:\n  source: src\n  destination: out\n"
                   f"optional:\n  labels: [{', '.join(labels)}]\n"
                   "  weights: no-weights-here.h5\n")
    return cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_app(cfg: Path, folder: Path, script: str = "app.py", repo: Path = REPO):
    """``streamlit run <script> -- --config cfg`` in checkout ``repo`` on a free loopback port:
    yields its URL once it answers; stopped afterwards. Its output goes to ``folder/server.log``;
    RuntimeError with that log when it does not answer within 90 s."""
    port = _free_port()
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", script, "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--", "--config", str(cfg)],
        cwd=repo, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    break
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                raise RuntimeError("streamlit did not start:\n"
                                   + (folder / "server.log").read_text())
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@contextlib.contextmanager
def chromium():
    """Headless Debian chromium (a Playwright Browser); closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def browser_page(browser, width: int, height: int):
    """A page of its own context (own cookies) in ``browser``, a ``width`` x ``height`` CSS px
    window, 90 s default timeout; the context closes afterwards."""
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        page.set_default_timeout(90_000)
        yield page
    finally:
        context.close()


@contextlib.contextmanager
def chromium_page(width: int, height: int):
    """A ``browser_page`` in a chromium of its own; the browser closes afterwards."""
    with chromium() as browser, browser_page(browser, width, height) as page:
        yield page


def _on_the_canvas(page, act):
    """``act(locator)`` on the one photo canvas: while a rerun briefly shows two (the old one
    going), wait until one is left."""
    from playwright.sync_api import Error

    for _ in range(100):
        try:
            return act(page.locator(CANVAS))
        except Error as exc:
            if "strict mode violation" not in str(exc):
                raise
            page.wait_for_timeout(50)
    raise RuntimeError("two photo canvases stayed on the page")


def canvas_box(page) -> dict:
    """The photo canvas's box on the page: {x, y, width, height} in CSS px."""
    return _on_the_canvas(page, lambda canvas: canvas.bounding_box())


def click_canvas(page, x: float, y: float) -> None:
    """Click the photo canvas at (x, y) CSS px from its top-left corner."""
    _on_the_canvas(page, lambda canvas: canvas.click(position={"x": x, "y": y}))


def click_photo(page, x: int, y: int, scale: float) -> None:
    """Click the centre of full-image pixel (x, y) on a photo shown at ``scale`` CSS px per
    image px (``canvas_box(page)["width"] / image width``, or 1.0 for a photo shown 1:1)."""
    click_canvas(page, (x + 0.5) * scale, (y + 0.5) * scale)


def click_extremes(page, points, scale: float, already: int = 0) -> None:
    """Click ``points`` (full-image (x, y) px) after ``already`` clicks, each seen by the page
    ("Click the extreme points: k of 4."); after a fourth, until the mask's note is shown and
    the run that enables Accept is over (a class chosen or a key pressed then is not lost)."""
    from playwright.sync_api import expect

    for k, (x, y) in enumerate(points, start=already + 1):
        click_photo(page, x, y, scale)
        if k < 4:
            expect(page.get_by_text(f"Click the extreme points: {k} of 4.")).to_be_visible()
    if already + len(points) >= 4:
        expect(page.get_by_text(f"{already + len(points)} clicks. Check the mask")
               ).to_be_visible()
        expect(page.get_by_role("button", name="Accept object")).to_be_enabled()


def settle_canvas(page) -> None:
    """Wait until the photo canvas and its toolbar are drawn and the canvas stays where it is
    (three equal boxes 250 ms apart; the page may still be laying out around it). Gives up
    quietly after about 12 s of movement: what follows then finds the canvas where it is."""
    page.locator(CANVAS).first.wait_for()
    page.get_by_role("button", name="Reset canvas & history").first.wait_for(state="attached")
    seen = []
    for _ in range(50):
        seen.append(canvas_box(page))
        if len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]:
            return
        page.wait_for_timeout(250)
