"""An annotator's day in a 1280 x 900 window: Debian's chromium driven by Playwright.

One server and ONE browser for the whole file (each test has its own browser context, so its own
cookies, and its own annotator name, so its own image). Every photo is the same 800 x 600
synthetic scene: three separate dark discs in the top row and two overlapping discs of one colour
below (the fallback segmenter runs; no weights). What is checked: classes chosen in the box and
by number keys reach the store with ``A`` alone; at 1280 x 900 the photo, the status line, the
class and Accept are in view without scrolling; the name survives page changes and a refresh;
clicks survive a refresh; overlapping objects keep their pixels in COCO, the page names the
overlap and the cut option cuts. Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_kit import (  # noqa: E402
    ARTIFACTS,
    browser_page,
    canvas_box,
    chromium,
    click_extremes,
    missing_browser,
    streamlit_app,
    write_config,
)
from browser_kit import settle_canvas as _settled  # noqa: E402  (the photo canvas drawn and still)

WINDOW = {"width": 1280, "height": 900}
WIDTH, HEIGHT = 800, 600
LABELS = ["disc", "cat", "dog", "car"]
# (centre x, centre y, radius): three apart, then two overlapping ones of one colour
SEPARATE = [(140, 140, 80), (400, 140, 80), (660, 140, 80)]
OVERLAPPING = [(300, 430, 110), (470, 430, 110)]
N_IMAGES = 12  # one or two per test, each test its own annotator


def _disc(cx, cy, r) -> np.ndarray:
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _extremes(cx, cy, r):
    return [(cx - r, cy), (cx + r, cy), (cx, cy - r), (cx, cy + r)]


def _scene(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    photo = rng.integers(200, 245, size=(HEIGHT, WIDTH, 3)).astype(np.uint8)
    for colour, disc in zip([(30, 30, 120), (30, 110, 40), (130, 30, 30)], SEPARATE, strict=True):
        photo[_disc(*disc)] = colour
    for disc in OVERLAPPING:
        photo[_disc(*disc)] = (40, 35, 45)
    return photo


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(url, root, browser): a streamlit server over a temporary config and one chromium."""
    if reason := missing_browser():
        pytest.skip(reason)
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # a run with the fallback model on a busy machine
    root = tmp_path_factory.mktemp("day")
    src = root / "src"
    src.mkdir()
    for i in range(N_IMAGES):
        Image.fromarray(_scene(i)).save(src / f"img{i}.png")
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_app(write_config(root, LABELS), root) as url, chromium() as browser:
        yield url, root, browser


def _page(browser, window=WINDOW):
    """A page of its own (own cookies) in a ``window`` (1280 x 900 unless told)."""
    return browser_page(browser, window["width"], window["height"])


def _start(page, url: str, name: str) -> str:
    """Open the annotate page as ``name`` (typed in, as a person does); returns the image id."""
    page.goto(url)
    page.get_by_role("textbox", name="Your name").fill(name)
    page.get_by_role("button", name="Start annotating").click()
    _settled(page)
    return page.get_by_text(re.compile(r"^img\d+\.png$")).first.inner_text()


def _clicks(page, points, already: int = 0) -> None:
    """Click ``points`` (full-image px) after ``already`` clicks, each seen by the page
    (browser_kit.click_extremes at the scale the photo is shown)."""
    click_extremes(page, points, canvas_box(page)["width"] / WIDTH, already)


def _choose_in_box(page, label: str) -> None:
    """Choose ``label`` in the Class box by typing part of it and picking the one option left."""
    from playwright.sync_api import expect

    box = page.get_by_role("combobox", name="Class")
    box.click()
    page.keyboard.type(label)
    options = page.get_by_role("option")
    expect(options).to_have_count(1)  # the box filters as you type
    options.first.click()
    expect(box).to_have_value(re.compile(rf"{label}$"))
    page.wait_for_function(
        "() => document.activeElement.getAttribute('aria-label') !== 'Class'")


def _store(root: Path):
    from dextr_core.store import ProgressStore

    return ProgressStore(root / "src" / ".dextr_progress.json", root / "src")


def _in_view(box: dict, window=WINDOW) -> bool:
    return (box is not None and box["x"] >= 0 and box["y"] >= 0
            and box["x"] + box["width"] <= window["width"]
            and box["y"] + box["height"] <= window["height"])


def test_three_objects_each_with_a_class_chosen_in_the_box_are_accepted_with_a_alone(app):
    from playwright.sync_api import expect

    url, root, browser = app
    with _page(browser) as page:
        image = _start(page, url, "three-classes")
        for n, (disc, label) in enumerate(zip(SEPARATE, ["cat", "dog", "cat"], strict=True),
                                          start=1):
            _clicks(page, _extremes(*disc))
            _choose_in_box(page, label)  # the third one: the same class chosen again
            page.keyboard.press("a")
            expect(page.get_by_text(f"Objects ({n})")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "day_three_classes.png"))
    assert [o.label for o in _store(root).objects(image)] == ["cat", "dog", "cat"]


def test_number_keys_choose_the_classes_shown_beside_the_names(app):
    from playwright.sync_api import expect

    url, root, browser = app
    with _page(browser) as page:
        image = _start(page, url, "number-keys")
        box = page.get_by_role("combobox", name="Class")
        expect(box).to_have_value("1 · disc")
        for n, (disc, key) in enumerate(zip(SEPARATE[:2], ["4", "3"], strict=True), start=1):
            _clicks(page, _extremes(*disc))
            page.keyboard.press(key)
            expect(box).to_have_value(f"{key} · {LABELS[int(key) - 1]}")
            page.keyboard.press("a")
            expect(page.get_by_text(f"Objects ({n})")).to_be_visible()
        _clicks(page, _extremes(*SEPARATE[2]))  # the class stays for the next object
        page.keyboard.press("a")
        expect(page.get_by_text("Objects (3)")).to_be_visible()
    assert [o.label for o in _store(root).objects(image)] == ["car", "dog", "dog"]


def test_at_1280_by_900_the_photo_status_class_and_accept_are_in_view_without_scrolling(app):
    from playwright.sync_api import expect

    url, _, browser = app
    with _page(browser) as page:
        _start(page, url, "in-view")
        _clicks(page, _extremes(*SEPARATE[0]))
        page.screenshot(path=str(ARTIFACTS / "day_1280x900.png"))
        assert page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]')"
                             ".scrollTop") == 0
        assert _in_view(page.locator("canvas.upper-canvas").bounding_box())
        for control in (page.get_by_text("4 clicks. Check the mask"),
                        page.get_by_role("combobox", name="Class"),
                        page.get_by_role("button", name="Accept object"),
                        page.get_by_test_id("stSidebar").get_by_role("button", name="Not you?")):
            assert _in_view(control.bounding_box()), control
        # the reserved row for the drawing tools lies above the photo
        row = page.locator(".st-key-anno-tool-row").bounding_box()
        assert row["height"] >= 40 and row["y"] + row["height"] <= page.locator(
            "canvas.upper-canvas").bounding_box()["y"] + 1
        # the next photo opens scrolled to the top
        page.keyboard.press("a")
        expect(page.get_by_text("Objects (1)")).to_be_visible()
        page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]')"
                      ".scrollTo(0, 10000)")
        page.get_by_role("button", name="Image done").click()
        expect(page.get_by_text("done: 1 object(s) saved")).to_be_visible()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=\"stMain\"]').scrollTop === 0")


def test_the_name_survives_going_to_progress_and_back_and_a_refresh(app):
    from playwright.sync_api import expect

    url, _, browser = app
    with _page(browser) as page:
        image = _start(page, url, "stays-me")
        sidebar = page.get_by_test_id("stSidebar")
        sidebar.get_by_role("link", name="Progress").click()
        page.get_by_role("heading", name="Progress").first.wait_for()
        page.reload()  # a refresh on the Progress page
        page.get_by_role("heading", name="Progress").first.wait_for()
        sidebar.get_by_role("link", name="Annotate").click()
        expect(sidebar.get_by_text("Annotating as stays-me")).to_be_visible()
        expect(page.get_by_role("textbox", name="Your name")).to_have_count(0)
        expect(page.get_by_text(image, exact=True).first).to_be_visible()
        page.goto(url)  # the bare address in the same browser: the cookie
        expect(sidebar.get_by_text("Annotating as stays-me")).to_be_visible()
        sidebar.get_by_role("button", name="Not you?").click()  # the one way to change it
        expect(page.get_by_role("textbox", name="Your name")).to_be_visible()
        page.goto(url)
        expect(page.get_by_role("textbox", name="Your name")).to_be_visible()


def test_two_clicks_and_a_refresh_keep_two_of_four(app):
    from playwright.sync_api import expect

    url, _, browser = app
    with _page(browser) as page:
        _start(page, url, "refresher")
        _clicks(page, _extremes(*SEPARATE[1])[:2])
        page.reload()
        expect(page.get_by_text("Click the extreme points: 2 of 4.")).to_be_visible()
        _settled(page)
        _clicks(page, _extremes(*SEPARATE[1])[2:], already=2)  # goes on from the two kept clicks


def test_overlapping_objects_keep_their_pixels_in_coco_and_the_cut_option_cuts(app):
    from playwright.sync_api import expect

    from dextr_core.config import load_config
    from dextr_core.export import run_export
    from dextr_core.masks import load_object_mask, object_mask_path

    url, root, browser = app
    cfg = load_config(root / "anno_cfg.yml")
    with _page(browser) as page:
        first = _start(page, url, "overlapper")
        _clicks(page, _extremes(*OVERLAPPING[0]))
        page.keyboard.press("a")
        expect(page.get_by_text("Objects (1)")).to_be_visible()
        _clicks(page, _extremes(*OVERLAPPING[1]))
        notice = page.get_by_text("The new object overlaps")
        expect(notice).to_be_visible()
        assert re.search(r"Object 1 \(disc\): [\d,]+ px shared", notice.inner_text())
        expect(page.get_by_role("radio", name="Keep both")).to_be_checked()
        page.screenshot(path=str(ARTIFACTS / "day_overlap.png"))
        page.keyboard.press("a")  # keep both (the default)
        expect(page.get_by_text("Objects (2)")).to_be_visible()
        page.keyboard.press("d")
        expect(page.get_by_text("done: 2 object(s) saved")).to_be_visible()
        # the next image: the same two objects, now cut
        second = page.get_by_text(re.compile(r"^img\d+\.png$")).first
        expect(second).not_to_have_text(first)
        second = second.inner_text()
        _clicks(page, _extremes(*OVERLAPPING[0]))
        page.keyboard.press("a")
        expect(page.get_by_text("Objects (1)")).to_be_visible()
        _clicks(page, _extremes(*OVERLAPPING[1]))
        page.get_by_text("Cut from the earlier object(s)").click()
        expect(page.get_by_role("radio", name="Cut from the earlier object(s)")).to_be_checked()
        # the page hands the focus back right after the click (a person is never that quick)
        page.wait_for_function("() => document.activeElement.tagName !== 'INPUT'")
        page.keyboard.press("a")
        expect(page.get_by_text("cut from object(s) 1")).to_be_visible()
        expect(page.get_by_text("The new object overlaps")).to_have_count(0)

    store = _store(root)
    kept = [load_object_mask(object_mask_path(cfg.destination, first, o.object_id))
            for o in store.objects(first)]
    shared = kept[0] & kept[1]
    assert shared.sum() > 100, shared.sum()
    out = root / "export.json"
    result = run_export(cfg, store, "coco", out)
    assert result.shared_pixels >= shared.sum()
    from pycocotools import mask as mask_utils

    data = json.loads(out.read_text())
    (image,) = [i for i in data["images"] if i["file_name"] == first]
    anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
    assert len(anns) == 2
    for ann, own in zip(anns, kept, strict=True):  # each keeps its own pixels, shared ones too
        np.testing.assert_array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), own)
    cut = [load_object_mask(object_mask_path(cfg.destination, second, o.object_id))
           for o in store.objects(second)]
    assert not (cut[0] & cut[1]).any()
    assert cut[0].sum() > 1000


def test_the_carry_over_choice_is_shown_and_kept_across_a_refresh_with_the_class(app):
    from playwright.sync_api import expect

    url, root, browser = app
    with _page(browser) as page:
        image = _start(page, url, "carry-over")
        keep = page.get_by_role("checkbox", name="Keep the class for the next object")
        box = page.get_by_role("combobox", name="Class")
        expect(keep).to_be_checked()  # on at first: the class stays for the next object
        page.keyboard.press("3")
        expect(box).to_have_value("3 · dog")
        _clicks(page, _extremes(*SEPARATE[0]))
        page.keyboard.press("a")
        expect(page.get_by_text("Objects (1)")).to_be_visible()
        page.reload()
        _settled(page)
        expect(box).to_have_value("3 · dog")  # the class survives the refresh
        page.get_by_text("Keep the class for the next object").click()
        expect(keep).not_to_be_checked()
        _clicks(page, _extremes(*SEPARATE[1]))
        page.keyboard.press("a")  # still dog: the box empties after this Accept
        expect(page.get_by_text("Objects (2)")).to_be_visible()
        expect(box).to_have_value("")
        page.reload()
        _settled(page)
        expect(keep).not_to_be_checked()  # the choice survives the refresh
        expect(box).to_have_value("")
        _clicks(page, _extremes(*SEPARATE[2]))
        page.keyboard.press("a")
        expect(page.get_by_text("Choose this object's class first")).to_be_visible()
        page.keyboard.press("4")
        expect(box).to_have_value("4 · car")
        page.keyboard.press("a")
        expect(page.get_by_text("Objects (3)")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "day_carry_over.png"))
    assert [o.label for o in _store(root).objects(image)] == ["dog", "dog", "car"]


def test_in_a_1920_by_1080_window_the_photo_grows_and_accept_stays_in_view(app):
    from playwright.sync_api import expect

    from ui.layout import photo_max
    from ui.photos import display_size_for

    url, _, browser = app
    big = {"width": 1920, "height": 1080}
    with _page(browser, big) as page:
        _start(page, url, "big-window")
        # the first photo ever opens at the 1280 x 900 size: the window's size was not known yet
        assert round(page.locator("canvas.upper-canvas").bounding_box()["width"]) == 666
        page.reload()  # the photo opens again, now with the window's size known
        _settled(page)
        grown = display_size_for((WIDTH, HEIGHT), photo_max((big["width"], big["height"])))
        box = page.locator("canvas.upper-canvas").bounding_box()
        assert (round(box["width"]), round(box["height"])) == grown and grown[0] > 1000
        _clicks(page, _extremes(*SEPARATE[0]))
        page.screenshot(path=str(ARTIFACTS / "day_1920x1080.png"))
        for element in (page.locator("canvas.upper-canvas"),
                        page.get_by_role("combobox", name="Class"),
                        page.get_by_role("button", name="Accept object")):
            assert _in_view(element.bounding_box(), big)
        page.keyboard.press("a")
        expect(page.get_by_text("Objects (1)")).to_be_visible()
