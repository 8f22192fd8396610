"""The annotate page's layout at the smallest window it is made for: 1280 x 900 CSS px with the
sidebar open, everything an object needs (the photo, the status line, the class and Accept) in
view without scrolling.

The numbers below are that budget; :data:`PHOTO_MAX` (the largest photo, ``ui.photos``) follows
from them. In a larger window the photo grows with the room it leaves (:func:`photo_max`, up to
:data:`PHOTO_LARGEST`): the browser keeps its window size in a cookie (:data:`WINDOW_COOKIE`,
written by :func:`apply`). Streamlit gives the server the cookies sent with the page load, so the
size counts from the next page load (a refresh, a new tab; on a first visit the photos open at
the 1280 x 900 size), and a photo keeps the size it opened with until another opens. :func:`apply` also tightens
Streamlit's page padding (its default leaves 96 px above the first line) and brings each newly
opened photo into view from the top.
"""

from __future__ import annotations

import json
import re

import streamlit as st

from ui import cookies

#: The smallest window the page is laid out for (CSS px).
WINDOW = (1280, 900)
#: Streamlit's sidebar, open (CSS px).
SIDEBAR_PX = 300
#: Padding of the page's content: top (under Streamlit's header), left/right, bottom (CSS px).
PAD_TOP_PX, PAD_SIDE_PX, PAD_BOTTOM_PX = 48, 24, 16
#: One compact row above the photo, kept for the drawing tools (Points / Paint / Erase / brush
#: size / Zoom) so that adding them does not push the controls out of view.
TOOL_ROW_PX = 48
#: streamlit-drawable-canvas's toolbar under the photo (undo, redo, reset).
CANVAS_TOOLBAR_PX = 40
#: The controls column beside the photo, and the gap between them (CSS px).
CONTROLS_WIDTH = 250
GAP_PX = 16

#: Largest (width, height) in CSS px a photo is shown at: what is left of :data:`WINDOW`
#: (a larger window: :func:`photo_max`).
PHOTO_MAX = (
    WINDOW[0] - SIDEBAR_PX - 2 * PAD_SIDE_PX - GAP_PX - CONTROLS_WIDTH,
    WINDOW[1] - PAD_TOP_PX - TOOL_ROW_PX - CANVAS_TOOLBAR_PX - PAD_BOTTOM_PX,
)

#: The largest a photo grows to in a large window (CSS px; the per-run drawing cost grows with it).
PHOTO_LARGEST = (1280, 1024)
#: The window's size is taken in steps of this many CSS px (a few px of resize change nothing).
GROW_STEP_PX = 80
#: Cookie with the browser window's inner size, ``"<width>x<height>"`` in CSS px.
WINDOW_COOKIE = "dextr_window"

_CSS = f"""<style>
[data-testid="stMainBlockContainer"] {{
  padding: {PAD_TOP_PX}px {PAD_SIDE_PX}px {PAD_BOTTOM_PX}px {PAD_SIDE_PX}px;
}}
</style>"""

#: Keeps the window's size in :data:`WINDOW_COOKIE` (now and on every resize) and scrolls the
#: page to the top when another photo opens (the page stays put for every other rerun, e.g. a
#: click on the photo).
_TO_TOP = """<script>
(() => {
  const id = %s;
  const keep = () => {
    document.cookie = '%s=' + window.innerWidth + 'x' + window.innerHeight
      + '; %s';
  };
  keep();
  if (!window.__dextrWindow) { window.__dextrWindow = true; window.addEventListener('resize', keep); }
  if (window.__dextrPhoto === id) return;
  window.__dextrPhoto = id;
  const main = document.querySelector('[data-testid="stMain"]');
  if (main) main.scrollTo(0, 0);
  window.scrollTo(0, 0);
})();
</script>"""


def window() -> tuple[int, int] | None:
    """The browser window's inner (width, height) in CSS px as its cookie last said; None when
    unknown (a first visit) or not readable."""
    found = re.fullmatch(r"(\d{2,5})x(\d{2,5})", cookies.read(WINDOW_COOKIE) or "")
    return (int(found[1]), int(found[2])) if found else None


def photo_max(window_size: tuple[int, int] | None) -> tuple[int, int]:
    """Largest (width, height) in CSS px a photo is shown at in a window of ``window_size``
    (CSS px; None: unknown): :data:`PHOTO_MAX` at 1280 x 900 or less (and when unknown), grown
    by the window's extra room in :data:`GROW_STEP_PX` steps, at most :data:`PHOTO_LARGEST`."""
    if window_size is None:
        return PHOTO_MAX
    grown = []
    for have, budget, base, largest in zip(window_size, WINDOW, PHOTO_MAX, PHOTO_LARGEST,
                                           strict=True):
        extra = max(0, have - budget) // GROW_STEP_PX * GROW_STEP_PX
        grown.append(min(largest, base + extra))
    return grown[0], grown[1]


def apply(image_id: str | None) -> None:
    """The page's padding; a photo other than the last one shown opens scrolled to the top; the
    window's size goes to its cookie (on load and on every resize)."""
    st.html(_CSS)
    st.html(_TO_TOP % (json.dumps(image_id), WINDOW_COOKIE, cookies.ATTRIBUTES),
            unsafe_allow_javascript=True, width=1)


def tool_row():
    """The reserved row above the photo (:data:`TOOL_ROW_PX` high) as a container, for the
    drawing tools; empty until they come."""
    return st.container(key="anno-tool-row", height=TOOL_ROW_PX, border=False,
                        horizontal=True, gap="small", vertical_alignment="center")
