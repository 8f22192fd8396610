"""The whole app in a real browser: Debian's chromium driven by Playwright.

A temporary source folder holds a synthetic 1600 x 1200 photo with one clear object (a dark disc on
a light, noisy background) and a sample photo. The test starts ``streamlit run app.py -- --config
<tmp>/anno_cfg.yml`` on a free port, types an annotator name, clicks the disc's four extreme points
on the canvas (the photo is shown smaller, ui/layout.py, so the clicks go through the fit scale), accepts,
finishes the image, and checks the saved mask file and the progress record. Screenshots go to
test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_kit import (  # noqa: E402
    ARTIFACTS,
    MASK_AT,
    REPO,
    canvas_box,
    chromium_page,
    click_extremes,
    missing_browser,
    streamlit_app,
    write_config,
)

WIDTH, HEIGHT = 1600, 1200
CX, CY, R = 820, 560, 300
# The disc's extreme pixels (left-most, right-most, top, bottom), full-image (x, y).
EXTREMES = [(CX - R, CY), (CX + R, CY), (CX, CY - R), (CX, CY + R)]
NAME = "e2e-annotator"


def _disc() -> np.ndarray:
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    return (xx - CX) ** 2 + (yy - CY) ** 2 <= R * R


@pytest.fixture
def server(tmp_path):
    """A streamlit server on 127.0.0.1:<free port> over a temporary config; stopped afterwards."""
    if reason := missing_browser():
        pytest.skip(reason)
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(7)
    photo = rng.integers(190, 245, size=(HEIGHT, WIDTH, 3)).astype(np.uint8)
    photo[_disc()] = (30, 28, 40)
    Image.fromarray(photo).save(src / "a_disc.png")
    sample = REPO / "samples" / "images" / "chelsea.jpg"
    if sample.exists():
        shutil.copy(sample, src / "b_chelsea.jpg")
    with streamlit_app(write_config(tmp_path, ["disc", "cat"]), tmp_path) as url:
        yield url, tmp_path


def test_annotate_one_object_in_chromium(server):
    from playwright.sync_api import expect

    url, root = server
    ARTIFACTS.mkdir(exist_ok=True)
    from ui.photos import display_size_for

    # Shown at most ui.photos.DISPLAY_MAX, aspect kept: 1600 x 1200 -> 800 x 600.
    scale = display_size_for((WIDTH, HEIGHT))[0] / WIDTH
    with chromium_page(1700, 1100) as page:
        page.goto(url)
        page.get_by_role("textbox", name="Your name").fill(NAME)
        page.get_by_role("button", name="Start annotating").click()
        page.get_by_text("a_disc.png").first.wait_for()
        box = canvas_box(page)
        assert abs(box["width"] - round(WIDTH * scale)) <= 1, box
        assert abs(box["height"] - round(HEIGHT * scale)) <= 1, box
        click_extremes(page, EXTREMES, scale)
        page.screenshot(path=str(ARTIFACTS / "e2e_mask_shown.png"))
        page.get_by_role("button", name="Accept object").click()
        expect(page.get_by_text("Objects (1)")).to_be_visible()
        page.get_by_role("button", name="Image done").click()
        expect(page.get_by_text("done: 1 object(s) saved")).to_be_visible()
        page.get_by_text("b_chelsea.jpg").first.wait_for()
        page.screenshot(path=str(ARTIFACTS / "e2e_after_done.png"))

    labels = np.asarray(Image.open(root / "out" / "a_disc_mask.png"))
    assert labels.shape == (HEIGHT, WIDTH)
    assert set(np.unique(labels)) == {0, 1}
    obj, disc = labels == 1, _disc()
    iou = (obj & disc).sum() / (obj | disc).sum()
    assert iou > 0.8, f"IoU {iou:.3f}"

    from dextr_core.store import ProgressStore

    store = ProgressStore(root / "src" / ".dextr_progress.json", root / "src")
    record = store.get("a_disc.png")
    assert record.status == "done"
    assert record.n_objects == 1
    assert record.annotator == NAME
    (obj_record,) = store.objects("a_disc.png")
    clicks = np.asarray(obj_record.points)
    assert np.abs(clicks - np.asarray(EXTREMES)).max() <= 2.0, clicks  # mapped back to full px


def test_a_page_address_on_a_fresh_server_goes_through_the_app(server):
    """A lead's bookmark of /progress as the first request of a fresh server: the page comes with
    app.py's sidebar and navigation, not Streamlit's automatic pages/ list (ui.resources.run_through_app)."""
    url, _ = server
    with chromium_page(1400, 900) as page:
        page.goto(f"{url}/progress")
        page.get_by_role("heading", name="Progress").first.wait_for()
        page.get_by_test_id("stSidebar").get_by_text("Fallback segmenter").wait_for()  # app.py's
        nav = page.get_by_test_id("stSidebarNav").inner_text().split()
        assert "Annotate" in nav and "Progress" in nav and "app" not in nav, nav
        assert page.url.endswith("/progress")


def test_the_canvas_toolbar_shows_only_the_tools_that_change_the_clicks(server):
    from playwright.sync_api import expect

    url, _ = server
    with chromium_page(1700, 1100) as page:
        page.goto(f"{url}/?annotator={NAME}")
        canvas = page.locator("canvas.upper-canvas")
        canvas.wait_for()
        canvas.hover()
        for name in ("Undo", "Redo", "Edit", "Reset canvas & history"):
            expect(page.get_by_role("button", name=name, exact=True)).to_be_visible()
        for name in ("Update the app with this drawing", "Bring forward", "Send backward"):
            expect(page.get_by_role("button", name=name, exact=True)).to_be_hidden()
        page.screenshot(path=str(ARTIFACTS / "e2e_canvas_toolbar.png"))


def test_the_accept_shortcut_works_right_after_choosing_a_class(server):
    """After a class is picked in the select box (the focus stays there), pressing A accepts
    the object with that class instead of typing into the box."""
    from playwright.sync_api import expect

    from ui.photos import display_size_for

    url, root = server
    scale = display_size_for((WIDTH, HEIGHT))[0] / WIDTH
    with chromium_page(1700, 1100) as page:
        page.goto(f"{url}/?annotator={NAME}")
        page.get_by_text("a_disc.png").first.wait_for()
        click_extremes(page, EXTREMES, scale)
        page.keyboard.press("u")  # right after a click on the photo: the shortcut works too
        expect(page.get_by_text("Click the extreme points: 3 of 4.")).to_be_visible()
        # after the undo's remount; then until the run that enables Accept is over (the class
        # choice sends nothing by itself)
        click_extremes(page, EXTREMES[3:], scale, already=3)
        page.get_by_test_id("stSelectbox").click()
        page.get_by_role("option", name="cat").click()
        expect(page.get_by_role("combobox", name="Class")).to_have_value("2 · cat")  # numbered
        # the page hands the focus back after the choice (ui/labels.py)
        page.wait_for_function(
            "() => document.activeElement.getAttribute('aria-label') !== 'Class'")
        page.keyboard.press("a")
        expect(page.get_by_text("Objects (1)")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "e2e_shortcut_after_class.png"))

    from dextr_core.store import ProgressStore

    store = ProgressStore(root / "src" / ".dextr_progress.json", root / "src")
    assert [o.label for o in store.objects("a_disc.png")] == ["cat"]


_CONTENT_RIGHT = """() => {
    const m = document.querySelector('[data-testid="stMainBlockContainer"]');
    const r = m.getBoundingClientRect();
    return r.right - parseFloat(getComputedStyle(m).paddingRight);
}"""


def _overlap(a: dict, b: dict) -> bool:
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


@pytest.mark.parametrize("width", [1280, 1366, 1600, 1920])
def test_the_whole_photo_is_visible_beside_or_above_the_controls(server, width):
    """At common window widths the canvas lies inside the page's content column, shown at its
    full display size, and no control covers it (controls beside it, or below when narrow)."""
    from ui.photos import display_size_for

    url, _ = server
    ARTIFACTS.mkdir(exist_ok=True)
    shown = display_size_for((WIDTH, HEIGHT))
    with chromium_page(width, 900) as page:
        page.goto(f"{url}/?annotator=fit-{width}")
        page.get_by_text("a_disc.png").first.wait_for()
        canvas = page.locator("canvas.upper-canvas")
        canvas.wait_for()
        page.get_by_role("button", name="Accept object").wait_for()
        box = canvas.bounding_box()
        page.screenshot(path=str(ARTIFACTS / f"e2e_canvas_fit_{width}.png"), full_page=True)
        assert abs(box["width"] - shown[0]) <= 1 and abs(box["height"] - shown[1]) <= 1, box
        assert box["x"] + box["width"] <= page.evaluate(_CONTENT_RIGHT) + 0.5, (box, width)
        for name in ("Accept object", "Image done", "Undo Shortcut", "Prev", "Next"):
            control = page.get_by_role("button", name=re.compile(f"^{name}")).bounding_box()
            assert not _overlap(box, control), (name, box, control, width)
        select = page.get_by_test_id("stSelectbox").bounding_box()
        assert not _overlap(box, select), (select, box, width)


def test_the_mask_comes_as_a_layer_over_the_photo_and_goes_with_the_clicks(server):
    """After the fourth click the candidate lies over the unchanged photo as a translucent
    <img> layer in the canvas's box (clicks pass through it); clearing the clicks removes it."""
    from playwright.sync_api import expect

    from ui.overlay import colour_for
    from ui.photos import display_size_for

    url, _ = server
    scale = display_size_for((WIDTH, HEIGHT))[0] / WIDTH
    with chromium_page(1700, 1100) as page:
        page.goto(f"{url}/?annotator={NAME}")
        page.get_by_text("a_disc.png").first.wait_for()
        click_extremes(page, EXTREMES, scale)
        centre = [CX * scale, CY * scale]
        page.wait_for_function(f"() => ({MASK_AT})({centre}) !== null", timeout=30_000)
        r, g, b, a = page.evaluate(MASK_AT, centre)
        # the browser reads pixels back premultiplied: a level or two off
        assert max(abs(v - w) for v, w in zip((r, g, b), colour_for(0), strict=True)) <= 3, (r, g, b)
        assert abs(a - round(0.45 * 255)) <= 1, a
        corner = page.evaluate(MASK_AT, [5, 5])
        assert corner is None or corner[3] == 0, corner  # outside the objects' box: nothing
        page.screenshot(path=str(ARTIFACTS / "e2e_mask_layer.png"))
        page.get_by_role("button", name="Clear Shortcut").click()
        expect(page.get_by_text("Click the extreme points: 0 of 4.")).to_be_visible()
        page.wait_for_function(f"() => ({MASK_AT})({centre}) === null")
