"""The annotate page's layout at the smallest window it is made for: 1280 x 900 CSS px with the
sidebar open, everything an object needs (the photo, the status line, the class and Accept) in
view without scrolling.

The numbers below are that budget; :data:`PHOTO_MAX` (the largest photo, ``ui.photos``) follows
from them. :func:`apply` tightens Streamlit's page padding (its default leaves 96 px above the
first line) and brings each newly opened photo into view from the top.
"""

from __future__ import annotations

import json

import streamlit as st

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

#: Largest (width, height) in CSS px a photo is shown at: what is left of :data:`WINDOW`.
PHOTO_MAX = (
    WINDOW[0] - SIDEBAR_PX - 2 * PAD_SIDE_PX - GAP_PX - CONTROLS_WIDTH,
    WINDOW[1] - PAD_TOP_PX - TOOL_ROW_PX - CANVAS_TOOLBAR_PX - PAD_BOTTOM_PX,
)

_CSS = f"""<style>
[data-testid="stMainBlockContainer"] {{
  padding: {PAD_TOP_PX}px {PAD_SIDE_PX}px {PAD_BOTTOM_PX}px {PAD_SIDE_PX}px;
}}
</style>"""

#: Scrolls the page to the top when another photo opens (the page stays put for every other
#: rerun, e.g. a click on the photo).
_TO_TOP = """<script>
(() => {
  const id = %s;
  if (window.__dextrPhoto === id) return;
  window.__dextrPhoto = id;
  const main = document.querySelector('[data-testid="stMain"]');
  if (main) main.scrollTo(0, 0);
  window.scrollTo(0, 0);
})();
</script>"""


def apply(image_id: str | None) -> None:
    """The page's padding; a photo other than the last one shown opens scrolled to the top."""
    st.html(_CSS)
    st.html(_TO_TOP % json.dumps(image_id), unsafe_allow_javascript=True, width=1)


def tool_row():
    """The reserved row above the photo (:data:`TOOL_ROW_PX` high) as a container, for the
    drawing tools; empty until they come."""
    return st.container(key="anno-tool-row", height=TOOL_ROW_PX, border=False,
                        horizontal=True, gap="small", vertical_alignment="center")
