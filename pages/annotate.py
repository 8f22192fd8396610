"""The annotate page: widgets wired to one :class:`dextr_core.session.AnnotationSession`.

The session (kept in ``st.session_state``) holds the open image, the clicks and the candidate
mask; the store holds the objects; this page only draws them and turns clicks and buttons into
session calls. Every message goes through ui/messages.py, every user-supplied string through
``md()``. Tests and scripts may write clicks to ``st.session_state["anno_clicks"]`` (a list of
``[x, y]`` full-image pixels, consumed once).

Layout: the canvas (exactly the display copy's size, at most ``ui.photos.DISPLAY_MAX``) and a
fixed-width controls column in one wrapping row: where the window leaves room the controls sit
beside the canvas, else below it, so nothing ever covers the photo (1280-1920 px windows).
"""

from __future__ import annotations

import re
import time
import uuid

import numpy as np
import streamlit as st

from dextr_core.errors import DextrError
from dextr_core.session import (
    AnnotationSession,
    EmptyImageError,
    PhotoUnreadableError,
    SessionPaths,
)
from ui import photo_canvas, photos, prompts, resources, tools
from ui.messages import clear, md, say, show
from ui.overlay import colour_hex

CLICKS_KEY = "anno_clicks"
RUN_MS_KEY = "anno_run_ms"  # server time (ms) of this page's last 50 runs
_SESSION, _TOKEN = "anno_session", "tab"
_LABEL, _CHOSEN = "anno_label", "anno_label_chosen"
CONTROLS_WIDTH = 300  # CSS px
SHORTCUTS = {"accept": "A", "undo": "U", "clear": "X", "done": "D", "skip": "S",
             "previous": "P", "next": "N"}
#: The tool row's keys (ui/tools.py), listed in the help.
TOOL_KEYS = {"points": "C", "paint brush": "B", "erase brush": "E", "smaller / larger brush":
             "[ ]", "zoom to the object and back": "Z"}


def _token() -> str:
    """This tab's session token, kept in the page address (``?tab=...``) so that a refresh of
    the tab keeps its claim, while a new tab (the address without it) is another session. A
    ``?tab=`` that is not 8-64 letters, digits, ``-`` or ``_`` (edited, cut off) gets a fresh one."""
    given = st.query_params.get(_TOKEN) or ""
    given = given if re.fullmatch(r"[0-9A-Za-z_-]{8,64}", given) else ""
    token = st.session_state.get(_TOKEN) or given or uuid.uuid4().hex
    st.session_state[_TOKEN] = token
    if st.query_params.get(_TOKEN) != token:
        st.query_params[_TOKEN] = token
    return token


def _session(name: str) -> AnnotationSession:
    token = _token()
    sess = st.session_state.get(_SESSION)
    if sess is None or sess.annotator != name:
        sess = AnnotationSession(resources.store(), resources.segmenter(),
                                 SessionPaths.from_config(resources.config()), name,
                                 session=token, load=photos.full_image)
        st.session_state[_SESSION] = sess
    sess.store, sess.segmenter = resources.store(), resources.segmenter()
    return sess


_FAILED = object()


def _act(action, *args):
    """Run one session action for a button: old messages go, a DextrError becomes a message
    (and the result is ``_FAILED``)."""
    clear()
    photo_canvas.view().confirm_empty = False
    try:
        return action(*args)
    except DextrError as exc:
        say("error", md(exc))
        return _FAILED


def _moved(sess: AnnotationSession, status, none_text: str) -> None:
    photo_canvas.view().generation += 1
    for text in sess.passed_over:
        say("warning", f"Skipped {md(text)}")
    if status is None and none_text:
        say("info", none_text)


def _next_image(sess):
    status = sess.open_next()
    _moved(sess, status, "No image is waiting.")


def _accept(sess):
    label = st.session_state.get(_LABEL) or resources.config().labels[0]
    stored = _act(sess.accept, label)
    if stored is not _FAILED:
        say("success", f"Object {stored.index} ({md(stored.label)}) accepted.")
        photo_canvas.view().generation += 1


def _delete(sess, obj):
    if _act(sess.delete, obj) is not _FAILED:
        say("info", f"Object {obj.index} ({md(obj.label)}) deleted.")


def _done(sess, confirmed=False):
    clear()
    try:
        result = sess.done(allow_empty=confirmed)
    except EmptyImageError:
        photo_canvas.view().confirm_empty = True
        return
    except DextrError as exc:
        say("error", md(exc))
        return
    say("success", f"**{md(result.image_id)}** done: {result.n_objects} object(s) saved to "
        f"{md(result.path)}.")
    _next_image(sess)


def _skip(sess):
    skipped = _act(sess.skip)
    if skipped is not _FAILED:
        say("info", f"**{md(skipped)}** skipped.")
        _next_image(sess)


def _go(sess, step):
    status = _act(sess.next if step > 0 else sess.prev)
    if status is not _FAILED:
        _moved(sess, status, "No later image." if step > 0 else "No earlier image.")


def _edit(sess):
    if _act(sess.edit) is not _FAILED:
        photo_canvas.view().generation += 1


def _points(sess, do):
    _act(do)  # undo / clear: while editing an object the change is saved (or fails) at once
    photo_canvas.view().generation += 1


def _switch_annotator(sess):
    _act(sess.release)
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


def _controls(sess, candidate, cfg) -> None:
    width, height = sess.size
    st.markdown(f"**{md(sess.image_id)}**  \n{width} x {height} px")
    status = sess.status
    if note := sess.review_note:  # a lead sent it back with this note
        st.warning(md(note))
    if not status.editable:
        st.warning(md(status.reason))
        st.button("Edit this image", type="primary", on_click=_edit, args=(sess,),
                  width="stretch", help="Claim it to correct it")
    n = len(sess.points)
    if candidate is not None and candidate.error:
        st.warning(f"No mask for these clicks: {md(candidate.error)} Undo the last click or "
                   "clear the clicks.")
        if sess.segmenter.is_remote:  # the model service stopped answering
            st.button("Use the local engine", on_click=resources.use_local_engine,
                      width="stretch", help="Run the model in this server until the service "
                      "answers again (the sidebar can ask it again)")
    elif sess.editing is not None:
        st.info("Editing an accepted object: Paint and Erase change it, each change is saved.")
    elif status.editable and n == 0 and candidate is not None:
        st.caption("Painted by hand. Check the mask, then accept.")
    elif status.editable and n < 4:
        st.info(f"Click the extreme points: {n} of 4.")
    elif status.editable:
        st.caption(f"{n} clicks. Check the mask, then accept. Model {candidate.model_ms:.0f} ms.")
    st.selectbox("Class", cfg.labels, key=_LABEL, filter_mode=None, on_change=_chosen)
    _release_focus()
    ready = (candidate is not None and candidate.mask is not None and status.editable
             and sess.editing is None and n not in (1, 2, 3))
    st.button("Accept object", type="primary", on_click=_accept, args=(sess,), disabled=not ready,
              shortcut=SHORTCUTS["accept"], width="stretch")
    st.button("Undo", on_click=_points, args=(sess, sess.undo), help="Undo the last click or stroke",
              disabled=not (sess.points or sess.strokes), shortcut=SHORTCUTS["undo"],
              width="stretch")
    st.button("Clear", on_click=_points, args=(sess, sess.clear), help="Clear the clicks and strokes",
              disabled=not (sess.points or sess.strokes), shortcut=SHORTCUTS["clear"],
              width="stretch")
    objects = sess.objects
    st.markdown(f"**Objects ({len(objects)})**")
    for i, obj in enumerate(objects, start=1):
        swatch, text, edit, delete = st.columns([1, 3, 3, 3], vertical_alignment="center")
        swatch.markdown(f"<div style='width:1.2em;height:1.2em;border-radius:3px;background:"
                        f"{colour_hex(i - 1)}'></div>", unsafe_allow_html=True)
        text.markdown(f"{i}\\. {md(obj.label)}" + (" ✎" if obj.edited else ""))
        tools.edit_button(edit, sess, obj, i, photo_canvas.redraw)
        delete.button("Delete", key=f"anno-del-{sess.image_id}-{obj.object_id or i}",
                      on_click=_delete, args=(sess, obj), type="tertiary",
                      icon=":material/delete:", help=f"Delete object {i}",
                      disabled=not status.editable)
    st.divider()
    if photo_canvas.view().confirm_empty:
        st.warning("This image has no object. Save it as done with an empty mask?")
        yes, no = st.columns(2)
        yes.button("Yes, save empty", type="primary", on_click=_done, args=(sess, True))
        no.button("Cancel", on_click=clear)
    st.button("Image done", type="primary", on_click=_done, args=(sess,),
              disabled=not status.editable, shortcut=SHORTCUTS["done"], width="stretch")
    st.button("Skip", on_click=_skip, args=(sess,), disabled=not status.editable,
              shortcut=SHORTCUTS["skip"], width="stretch")
    back, forward = st.columns(2)
    back.button("Prev", help="Previous image", on_click=_go, args=(sess, -1),
                shortcut=SHORTCUTS["previous"], width="stretch")
    forward.button("Next", help="Next image", on_click=_go, args=(sess, 1),
                   shortcut=SHORTCUTS["next"], width="stretch")
    with st.expander("How to annotate, keyboard shortcuts"):
        st.markdown(
            "1. Click the object's **four extreme points**: left-most, right-most, top and "
            "bottom (any order); more clicks on its border refine the mask.\n"
            "2. Correct the mask with **Paint** and **Erase** (the brush size is in image "
            "pixels; **Zoom** enlarges the object), or paint a thin object from nothing.\n"
            "3. Pick the class and **Accept**; repeat for every object. **Edit** beside an "
            "accepted object corrects it (saved at once).\n"
            "4. **Image done** saves the mask file and opens the next image.\n\n"
            + "\n".join(f"- `{key}`: {what}" for what, key in {**SHORTCUTS, **TOOL_KEYS}.items()))


def _chosen() -> None:
    st.session_state[_CHOSEN] = st.session_state.get(_CHOSEN, 0) + 1


def _release_focus() -> None:
    """After a class choice the focus stays in the select box, a text field, where Streamlit
    ignores shortcuts: hand the focus back to the page (only from that box, never from a field
    someone is typing in) so that ``A`` accepts right away."""
    n = st.session_state.get(_CHOSEN, 0)
    if n:
        st.html(f"<script>/* {n} */ const e = document.activeElement; if (e && e.getAttribute("
                "'aria-label') === 'Class') e.blur();</script>", unsafe_allow_javascript=True,
                width=1)


def _page() -> None:
    cfg = resources.config()
    store = resources.store()
    st.title("Annotate")
    if prompts.reset_prompt(on_reset=lambda: st.session_state.pop(_SESSION, None)):
        return
    name = prompts.ask_name()
    if not name:
        return
    sess = _session(name)
    who, switch = st.columns([6, 1], vertical_alignment="center")
    who.caption(f"Annotating as **{md(name)}**")
    switch.button("Not you?", type="tertiary", on_click=_switch_annotator, args=(sess,),
                  help="Give this image back (its objects are kept) and enter another name")
    try:
        try:
            opened = sess.refresh()
        except PhotoUnreadableError as exc:  # replaced on disk by a file it cannot read
            say("warning", md(exc))
            opened = None
        if opened is None:
            _moved(sess, sess.open_next(), "")
    except DextrError as exc:
        st.error(md(exc))
        return
    prompts.unreadable_notice(store)
    if sess.image_id is None:
        show()
        prompts.all_done(store)
        return
    resources.prepare_photo(sess.segmenter, photos.full_image, sess.path)  # SAM: embedding now
    _take_injected_clicks(sess)
    row = st.container(horizontal=True, gap="medium")  # wraps: controls below when narrow
    left = row.container(width=photo_canvas.display_size(sess)[0])
    right = row.container(width=CONTROLS_WIDTH)
    with right, st.spinner(f"Segmenting with {md(sess.segmenter.name)}..."):
        candidate = sess.candidate  # before the canvas, so its overlay shows in this run
    with right:
        show()  # beside (or below) the photo: the canvas never moves under the pointer
    with left:
        bar = st.container()  # above the photo, filled once the canvas has the tool's mode
        photo_canvas.draw(sess, candidate)
    with bar:
        tools.row(sess, photo_canvas.whole_scale(sess), photo_canvas.redraw)
    with right:
        _controls(sess, candidate, cfg)


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
