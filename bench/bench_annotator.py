"""Seconds per object of a scripted annotator in a 1280 x 900 chromium window, model aside.

Starts ``streamlit run bench/stub_app.py`` (the real app, its segmenter replaced by a stub that
returns a fixed disc at once) from ``--repo`` (default: this checkout; pass a checkout of another
version, e.g. ``git worktree add /tmp/before main``, to compare) over a temporary folder of
1600 x 1200 photos, and annotates as a person would: per object four clicks on the photo (each
waited for), a class chosen in the Class box with the mouse (a different one each object), then
the key ``A``; when ``A`` has not accepted the object within 3 s and Accept is still enabled,
the annotator clicks the Accept button instead (scrolling to it if it is below the window). ``D`` after the last object of a
photo. Times are wall-clock from the first click of an object to the page listing it, and from
``D`` to the next photo's canvas. Run from the repository root::

    python3 bench/bench_annotator.py [--repo PATH] [--photos 3] [--objects 3]
"""

from __future__ import annotations

import argparse
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
    canvas_box,
    chromium_page,
    click_extremes,
    missing_browser,
    settle_canvas,
    streamlit_app,
    write_config,
)

from bench.bench_app import _extremes  # noqa: E402
from bench.bench_browser import _photo  # noqa: E402

LABELS = ["disc", "cat", "dog", "car"]
WIDTH, HEIGHT = 1600, 1200
A_WAIT_MS = 3000


def annotate(repo: Path, photos: int, objects: int) -> dict:
    """Per-object and per-photo seconds, and how often ``A`` did not accept."""
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    clicks = _extremes(WIDTH, HEIGHT)
    per_object, per_photo, waits, a_missed, below = [], [], [], 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "src").mkdir()
        for i in range(photos):
            _photo(folder / "src" / f"photo{i}.jpg", WIDTH, HEIGHT)
        cfg = write_config(folder, LABELS)
        with streamlit_app(cfg, folder, script="bench/stub_app.py", repo=repo) as url, \
                chromium_page(1280, 900) as page:
            page.goto(f"{url}/?annotator=bench")
            settle_canvas(page)
            for p in range(photos):
                for n in range(1, objects + 1):
                    t0 = time.perf_counter()
                    click_extremes(page, clicks, canvas_box(page)["width"] / WIDTH)
                    accept = page.get_by_role("button", name="Accept object")
                    label = LABELS[n % len(LABELS)]
                    option = page.get_by_role("option", name=re.compile(rf"{label}$"))
                    for _ in range(3):  # a box that kept the focus closes on a click: again
                        page.get_by_role("combobox", name="Class").click()
                        try:
                            option.wait_for(timeout=1000)
                            break
                        except Exception:  # noqa: BLE001  (playwright's TimeoutError)
                            continue
                    option.click()
                    box = accept.bounding_box()
                    below += int(box["y"] + box["height"] > 900)
                    page.keyboard.press("a")
                    listed = page.get_by_text(f"Objects ({n})")
                    waited = 0.0
                    try:
                        expect(listed).to_be_visible(timeout=A_WAIT_MS)
                    except AssertionError:
                        if accept.is_enabled():  # A did nothing: click Accept
                            a_missed += 1
                            waited = A_WAIT_MS / 1000
                            accept.click()  # scrolls to it when it is below the window
                        expect(listed).to_be_visible()
                    per_object.append(time.perf_counter() - t0)
                    waits.append(waited)
                t0 = time.perf_counter()
                page.keyboard.press("d")
                if p + 1 < photos:
                    expect(page.get_by_text(f"photo{p + 1}.jpg").first).to_be_visible()
                    expect(page.get_by_text("Click the extreme points: 0 of 4.")).to_be_visible()
                    expect(page.locator("canvas.upper-canvas")).to_have_count(1)
                    per_photo.append(time.perf_counter() - t0)
    return {"object": per_object, "photo": per_photo, "a_missed": a_missed,
            "accept_below": below,
            "object_no_wait": [t - w for t, w in zip(per_object, waits, strict=True)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose app is run")
    parser.add_argument("--photos", type=int, default=3)
    parser.add_argument("--objects", type=int, default=3, help="objects per photo")
    args = parser.parse_args(argv)
    if reason := missing_browser():
        print(reason)
        return 2
    load = os.getloadavg()
    print(f"bench_annotator.py  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
          f"{platform.machine()}  {os.cpu_count()} CPUs  load {load[0]:.2f} {load[1]:.2f}  "
          f"app from {args.repo}")
    found = annotate(args.repo.resolve(), args.photos, args.objects)
    obj, photo = found["object"], found["photo"]
    print(f"1280 x 900 window, stub model, {args.photos} photos x {args.objects} objects "
          "(median, min, max s):")
    for name, values in (("first click -> object listed (4 clicks, class, A)", obj),
                         ("  the same without the waits for A that did nothing",
                          found["object_no_wait"]),
                         ("D -> next photo ready", photo)):
        if values:
            print(f"| {name:52s} | {statistics.median(values):5.2f} | {min(values):5.2f} | "
                  f"{max(values):5.2f} |")
    print(f"A did not accept (Accept clicked after {A_WAIT_MS / 1000:.0f} s): "
          f"{found['a_missed']} of {len(obj)}; Accept below the window: "
          f"{found['accept_below']} of {len(obj)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
