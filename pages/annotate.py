"""The annotate page: widgets wired to one :class:`dextr_core.session.AnnotationSession`.

The session (kept in ``st.session_state``) holds the open image, the clicks and the candidate
mask; the store holds the objects; this page only draws them and turns clicks and buttons into
session calls. Every message goes through ui/messages.py, every user-supplied string through
``md()``. Tests and scripts may write clicks to ``st.session_state["anno_clicks"]`` (a list of
``[x, y]`` full-image pixels, consumed once).

Layout (ui/layout.py): the canvas (the display copy's size, at most ``ui.photos.DISPLAY_MAX``,
what a 1280 x 900 window with the sidebar open leaves) under a reserved tool row, and a
fixed-width controls column beside it (ui/controls.py): status, class and Accept in view
without scrolling. The tool row is ui/tools.py; who is annotating sits in the sidebar.
"""

from __future__ import annotations

import time

import numpy as np
import streamlit as st

from dextr_core.errors import DextrError
from dextr_core.session import AnnotationSession, PhotoUnreadableError
from ui import controls, layout, photo_canvas, photos, prompts, resources, tools
from ui.messages import clear, md, say, set_page, show

CLICKS_KEY = "anno_clicks"
RUN_MS_KEY = "anno_run_ms"  # server time (ms) of this page's last 50 runs
_SESSION = "anno_session"


def _session(name: str) -> AnnotationSession:
    return resources.annotation_session(_SESSION, name, photos.full_image)


def _switch_annotator(sess):
    controls.act(sess.release)
    resources.set_annotator(None)


def _take_injected_clicks(sess) -> None:
    clicks = st.session_state.pop(CLICKS_KEY, None)
    if not clicks or not sess.editable:
        return
    clear()
    for x, y in np.asarray(clicks, dtype=np.float64).reshape(-1, 2):
        try:
            sess.add_point(x, y)
        except DextrError as exc:  # outside the image: that click is ignored
            say("warning", md(exc))
    photo_canvas.view().generation += 1


def _who(sess, name: str) -> None:
    """Who is annotating, in the sidebar (always in view, never under the canvas's toolbar)."""
    with st.sidebar:
        who, switch = st.columns([3, 2], vertical_alignment="center")
        who.caption(f"Annotating as **{md(name)}**")
        switch.button("Not you?", type="tertiary", on_click=_switch_annotator, args=(sess,),
                      help="Give this image back (its objects are kept) and enter another name")


def _page() -> None:
    set_page("annotate")
    cfg = resources.config()
    resources.store()  # a damaged store: its message here, before anything else
    if prompts.reset_prompt(on_reset=lambda: st.session_state.pop(_SESSION, None)):
        return
    name = prompts.ask_name()
    if not name:
        return
    sess = _session(name)
    _who(sess, name)
    try:
        try:
            opened = sess.refresh()
        except PhotoUnreadableError as exc:  # replaced on disk by a file it cannot read
            say("warning", md(exc))
            opened = None
        if opened is None:
            controls.moved(sess, sess.open_next(), "")
    except DextrError as exc:
        st.error(md(exc))
        return
    layout.apply(sess.image_id)
    prompts.unreadable_notice(sess)
    if sess.image_id is None:
        show()
        prompts.all_done(sess)
        controls.prev_next(sess, own=True)  # back to one's own finished photos
        return
    resources.prepare_photo(sess.segmenter, photos.full_image, sess.path)  # SAM: embedding now
    _take_injected_clicks(sess)
    row = st.container(horizontal=True, gap="small")
    left = row.container(width=photo_canvas.display_size(sess)[0])
    right = row.container(width=layout.CONTROLS_WIDTH)
    with right, st.spinner(f"Segmenting with {md(sess.segmenter.name)}..."):
        candidate = sess.candidate  # before the canvas, so its overlay shows in this run
    with left:
        bar = layout.tool_row()  # above the photo, filled once the canvas has the tool's mode
        photo_canvas.draw(sess, candidate)
    with bar:
        tools.row(sess, photo_canvas.whole_scale(sess), photo_canvas.redraw)
    with right:
        controls.column(sess, candidate, cfg)


def main() -> None:
    """Render the annotate page; its server time per run is kept in ``st.session_state``."""
    resources.run_through_app()
    started = time.perf_counter()
    try:
        _page()
    finally:
        log = st.session_state.setdefault(RUN_MS_KEY, [])
        log.append((time.perf_counter() - started) * 1000.0)
        del log[:-50]


main()
