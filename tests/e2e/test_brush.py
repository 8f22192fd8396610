"""Correcting masks by hand in a real browser (Debian's chromium, Playwright): Paint and Erase
strokes on the candidate, Edit of an accepted object, a stroke in the zoomed view, a refresh.

One server and one browser for the file. The photos are as wide as the page shows a photo, shown 1:1 (a canvas pixel is
an image pixel), each with a dark disc on a light, noisy background; each test works as another
annotator, so it gets the next photo. Strokes are dragged with mouse.down / move(steps=) / up.
What is checked is the saved mask file: the painted line is in it, the erased one is not, and
away from the strokes it equals the engine's mask for the same clicks (the fallback segmenter,
run here on the same photo).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_kit import (  # noqa: E402
    ARTIFACTS,
    MASK_AT,
    browser_page,
    canvas_box,
    chromium,
    click_extremes,
    missing_browser,
    streamlit_app,
    write_config,
)

from ui.layout import PHOTO_MAX, WINDOW  # noqa: E402

W, H = PHOTO_MAX[0], 500  # as wide as the page shows a photo: shown 1:1
CX, CY, R = 340, 250, 140
EXTREMES = [(CX - R, CY), (CX + R, CY), (CX, CY - R), (CX, CY + R)]
#: After Image done a test's annotator gets the next photo: five photos for three tests.
PHOTOS = tuple(f"{c}_disc.png" for c in "abcde")


def _disc() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (xx - CX) ** 2 + (yy - CY) ** 2 <= R * R


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A streamlit server over a temporary config with three disc photos; stopped afterwards."""
    if reason := missing_browser():
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("brush")
    (root / "src").mkdir()
    rng = np.random.default_rng(11)
    for name in PHOTOS:
        photo = rng.integers(190, 245, size=(H, W, 3)).astype(np.uint8)
        photo[_disc()] = (30, 28, 40)
        Image.fromarray(photo).save(root / "src" / name)
    with streamlit_app(write_config(root, ["disc"]), root) as url:
        yield url, root


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser):
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # a shared, busy machine: reruns can take seconds
    # the window the layout is made for: there the photo is shown at PHOTO_MAX (a larger one
    # would show it larger after a refresh, ui.layout.photo_max)
    with browser_page(browser, *WINDOW) as p:
        yield p


@pytest.fixture(scope="module")
def engine_mask(server):
    """The engine's mask for the four extreme clicks on each photo (the app's fallback)."""
    from dextr_core.segmenters import load_segmenter

    _, root = server
    seg = load_segmenter(root / "no-weights-here.h5")
    cache = {}

    def mask(name, points):
        key = (name, tuple(map(tuple, points)))
        if key not in cache:
            image = np.asarray(Image.open(root / "src" / name).convert("RGB"))
            cache[key] = np.asarray(seg.segment(image, np.asarray(points, float)), bool)
        return cache[key]

    return mask


def _drag(page, points) -> None:
    """One stroke through canvas positions (CSS px from the canvas's top-left corner)."""
    box = canvas_box(page)
    (x0, y0), rest = points[0], points[1:]
    page.mouse.move(box["x"] + x0, box["y"] + y0)
    page.mouse.down()
    for x, y in rest:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=12)
    page.mouse.up()


def _alpha_at(page, x: float, y: float):
    found = page.evaluate(MASK_AT, [x, y])
    return None if found is None else found[3]


def _wait_mask(page, x: float, y: float, shown: bool) -> None:
    """Until the mask layer shows (or no longer shows) the mask at canvas position (x, y)."""
    test = "a !== null && a[3] > 0" if shown else "a === null || a[3] === 0"
    at = [float(x), float(y)]
    page.wait_for_function(f"() => {{ const a = ({MASK_AT})({at}); return {test}; }}",
                           timeout=60_000)


def _start(page, url, root, name) -> str:
    """Open the annotate page as ``name``; returns the photo it was given."""
    from playwright.sync_api import expect

    page.goto(f"{url}/?annotator={name}")
    expect(page.get_by_text("Click the extreme points: 0 of 4.")).to_be_visible()
    box = canvas_box(page)
    assert abs(box["width"] - W) <= 1 and abs(box["height"] - H) <= 1, box  # shown 1:1
    (photo,) = [r.id for r in _store(root).images("in_progress") if r.annotator == name]
    page.get_by_text(photo).first.wait_for()
    return photo


def _expect_tool(page, tool: str) -> None:
    """The chosen tool is the one primary (filled) button of the tool row (drawn after the
    canvas got the tool's mode); with a brush the canvas toolbar's Edit (move) is hidden."""
    from playwright.sync_api import expect

    expect(page.locator(f".st-key-anno-tool-{tool} button").first).to_have_attribute(
        "data-testid", "stBaseButton-primary")
    # the canvas toolbar's move toggle (not an object's Edit button), as shown: a canvas being
    # replaced may still be in the page for a moment
    move = page.locator("button.dc-icon-button[title='Edit']:visible")
    expect(move).to_have_count(1 if tool == "points" else 0)


def _store(root):
    from dextr_core.store import ProgressStore

    return ProgressStore(root / "src" / ".dextr_progress.json", root / "src")


def _saved(root, photo) -> np.ndarray:
    return np.asarray(Image.open(root / "out" / photo.replace(".png", "_mask.png"))) == 1


def _check(saved, model, strokes) -> None:
    """The saved mask = the engine's mask with the strokes: each stroke's core (its footprint
    less 1.5 px at the edge) painted or erased, and everything 3 px away from every stroke
    unchanged."""
    import cv2

    from dextr_core.strokes import Stroke, footprint

    near = np.zeros_like(model)
    for s in strokes:
        band = footprint(s, model.shape)
        core = footprint(Stroke(s.mode, max(1.0, s.width - 3.0), s.points), model.shape)
        assert core.sum() > 50, s
        wanted = s.mode == "paint"
        assert (saved[core] == wanted).mean() > 0.999, (s.mode, (saved[core] == wanted).mean())
        near |= band
    away = ~cv2.dilate(near.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    assert (saved[away] == model[away]).all(), int((saved[away] != model[away]).sum())


def test_paint_and_erase_on_the_candidate_are_in_the_saved_mask(server, page, engine_mask):
    from playwright.sync_api import expect

    url, root = server
    ARTIFACTS.mkdir(exist_ok=True)
    photo = _start(page, url, root, "brush-candidate")
    click_extremes(page, EXTREMES, 1.0)  # shown 1:1
    page.keyboard.press("b")
    _expect_tool(page, "paint")
    _drag(page, [(60, 60), (200, 64), (260, 60)])  # on the background, far from the disc
    _wait_mask(page, 200, 62, shown=True)
    page.keyboard.press("e")
    _expect_tool(page, "erase")
    _drag(page, [(CX + 0.5, CY - 120), (CX + 0.5, CY + 120)])  # through the disc
    _wait_mask(page, CX + 0.5, CY, shown=False)
    page.screenshot(path=str(ARTIFACTS / "e2e_brush_candidate.png"))
    page.get_by_role("button", name="Accept object").click()
    expect(page.get_by_text("Objects (1)")).to_be_visible()
    page.get_by_role("button", name="Image done").click()
    expect(page.get_by_text("done: 1 object(s) saved")).to_be_visible()

    (record,) = _store(root).objects(photo)
    assert record.edited and [s.mode for s in record.strokes] == ["paint", "erase"]
    # shown 1:1: a click lands on the pixel under the pointer (the browser's mouse events are on
    # whole CSS px, so a click at a pixel's centre comes as its edge: within half a pixel)
    assert np.abs(np.asarray(record.points) - EXTREMES).max() <= 0.5, record.points
    assert record.strokes[0].width == 16.0  # the default brush on a photo shown 1:1
    saved = _saved(root, photo)
    assert saved[62, 200] and not saved[CY, CX]
    _check(saved, engine_mask(photo, record.points), record.strokes)


def test_an_accepted_object_is_edited_saved_at_once_and_kept_across_a_refresh(
        server, page, engine_mask):
    from playwright.sync_api import expect

    url, root = server
    photo = _start(page, url, root, "brush-edit")
    click_extremes(page, EXTREMES, 1.0)  # shown 1:1
    page.get_by_role("button", name="Accept object").click()
    expect(page.get_by_text("Objects (1)")).to_be_visible()
    page.locator("[class*='st-key-anno-edit-'] button").first.click()
    expect(page.get_by_text("Editing an accepted object")).to_be_visible()
    _expect_tool(page, "paint")
    _drag(page, [(CX - 100, CY + 0.5), (CX + 100, CY + 0.5)])  # paint tool: nothing visible
    page.keyboard.press("e")
    _expect_tool(page, "erase")
    _drag(page, [(CX - 120, CY - 60.5), (CX + 120, CY - 60.5)])
    _wait_mask(page, CX, CY - 60.5, shown=False)
    deadline = time.time() + 30
    while time.time() < deadline and len(_store(root).objects(photo)[0].strokes) < 2:
        time.sleep(0.2)
    (record,) = _store(root).objects(photo)  # saved at once, before any Accept or Done
    assert record.edited and [s.mode for s in record.strokes] == ["paint", "erase"]

    page.reload()  # a refresh shows the edited mask
    page.get_by_text(photo).first.wait_for()
    _wait_mask(page, CX, CY + 30, shown=True)
    assert _alpha_at(page, CX, CY - 60.5) in (None, 0)
    page.screenshot(path=str(ARTIFACTS / "e2e_brush_edit_refreshed.png"))
    page.get_by_role("button", name="Image done").click()
    expect(page.get_by_text("done: 1 object(s) saved")).to_be_visible()
    saved = _saved(root, photo)
    assert not saved[int(CY - 60), CX]
    _check(saved, engine_mask(photo, record.points), record.strokes)


def test_a_stroke_in_the_zoomed_view_lands_on_the_right_pixels(server, page, engine_mask):
    from playwright.sync_api import expect

    from ui import canvas as cv

    url, root = server
    photo = _start(page, url, root, "brush-zoom")
    first = EXTREMES[0]
    click_extremes(page, [first], 1.0)
    page.keyboard.press("z")
    view = cv.zoom_view((*first, *first), (W, H), (W, H))
    assert view.sx == 4.0
    expect(page.locator(".st-key-anno-tool-zoom button").first).to_have_attribute(
        "data-testid", "stBaseButton-primary")  # drawn after the zoomed canvas
    page.screenshot(path=str(ARTIFACTS / "e2e_brush_zoomed.png"))
    page.keyboard.press("b")
    _expect_tool(page, "paint")
    target = [(first[0] - 40.0, first[1] - 25.0), (first[0] - 10.0, first[1] - 25.0)]
    on_canvas = view.to_canvas(target)
    _drag(page, [tuple(p) for p in on_canvas])
    _wait_mask(page, *on_canvas.mean(axis=0), shown=True)
    page.keyboard.press("z")  # back to the whole photo
    page.keyboard.press("c")
    _expect_tool(page, "points")
    click_extremes(page, EXTREMES[1:], 1.0, already=1)
    page.get_by_role("button", name="Accept object").click()
    expect(page.get_by_text("Objects (1)")).to_be_visible()
    page.get_by_role("button", name="Image done").click()
    expect(page.get_by_text("done: 1 object(s) saved")).to_be_visible()

    (record,) = _store(root).objects(photo)
    (stroke,) = record.strokes
    assert stroke.width == 16.0  # 64 screen px at 4 screen px per image px
    ends = np.asarray([stroke.points[0], stroke.points[-1]])
    # within 3 screen px (under an image px): whole-px mouse events on a canvas at y = n + 0.8
    assert np.abs(ends - np.asarray(target)).max() <= 0.75, ends
    saved, model = _saved(root, photo), engine_mask(photo, record.points)
    (x0, y), (x1, _) = (int(v) for v in target[0]), (int(v) for v in target[1])
    assert saved[y, x0:x1 + 1].all()  # the line drawn in the zoomed view, on its image pixels
    for far in (y - 10, y + 10):  # 16 px wide: 8 px each side, not 10
        assert (saved[far, x0 + 8:x1 - 7] == model[far, x0 + 8:x1 - 7]).all()
    _check(saved, model, record.strokes)
