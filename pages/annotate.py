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

import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import streamlit as st

from dextr_core.errors import DextrError
from dextr_core.session import AnnotationSession, EmptyImageError, SessionPaths
from ui import canvas as cv
from ui import photos, resources, roles
from ui.messages import clear, md, say, show
from ui.overlay import colour_hex, draw_overlay, fit_mask

CLICKS_KEY = "anno_clicks"
RUN_MS_KEY = "anno_run_ms"  # server time (ms) of this page's last 50 runs
_SESSION, _VIEW, _TOKEN = "anno_session", "anno_view", "tab"
_LABEL, _NAME_INPUT, _CHOSEN = "anno_label", "anno_name_input", "anno_label_chosen"
CONTROLS_WIDTH = 300  # CSS px
SHORTCUTS = {"accept": "A", "undo": "U", "clear": "X", "done": "D", "skip": "S",
             "previous": "P", "next": "N"}


@dataclass
class View:
    """What the page keeps for drawing (no annotation state): the canvas generation (bumped
    when the page changes the clicks, which mounts a fresh canvas), display-size masks and the
    last background."""

    generation: int = 0
    drawing: tuple | None = None
    small: dict = field(default_factory=dict)
    background: tuple | None = None
    confirm_empty: bool = False


def _view() -> View:
    return st.session_state.setdefault(_VIEW, View())


def _token() -> str:
    """This tab's session token, kept in the page address (``?tab=...``) so that a refresh of
    the tab keeps its claim, while a new tab (the address without it) is another session."""
    token = st.session_state.get(_TOKEN) or st.query_params.get(_TOKEN) or uuid.uuid4().hex
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
    _view().confirm_empty = False
    try:
        return action(*args)
    except DextrError as exc:
        say("error", md(exc))
        return _FAILED


def _moved(sess: AnnotationSession, status, none_text: str) -> None:
    _view().generation += 1
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
        _view().generation += 1


def _delete(sess, obj):
    if _act(sess.delete, obj) is not _FAILED:
        say("info", f"Object {obj.index} ({md(obj.label)}) deleted.")


def _done(sess, confirmed=False):
    clear()
    try:
        result = sess.done(allow_empty=confirmed)
    except EmptyImageError:
        _view().confirm_empty = True
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
        _view().generation += 1


def _points(sess, do):
    clear()
    do()
    _view().generation += 1


def _switch_annotator(sess):
    _act(sess.release)
    resources.set_annotator(None)


def _on_canvas(key: str) -> None:
    """Canvas callback: the canvas's point markers become the current clicks."""
    sess = st.session_state[_SESSION]
    value = st.session_state.get(key) or {}
    raw = (value.get("drawing") or {}).get("raw") if hasattr(value, "get") else None
    if raw is None or not sess.editable:
        return
    _canvas_points(sess, cv.canvas_points(raw))


def _canvas_points(sess, shown: np.ndarray) -> None:
    """Canvas px (N, 2) -> the session's clicks; messages go only when the clicks changed (a
    fresh canvas resends its drawing, which is no new action)."""
    full = cv.canvas_to_image(shown, _display_size(sess), sess.size)
    if len(full) != len(sess.points):
        clear()
    try:
        sess.set_points([[float(x), float(y)] for x, y in full])
    except DextrError as exc:
        say("warning", md(exc))


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
    _view().generation += 1


def _display_size(sess) -> tuple[int, int]:
    return photos.display_size_for(sess.size)


def _background(sess, candidate) -> bytes:
    view, size = _view(), _display_size(sess)
    objects = sess.objects
    keys = [(sess.image_id, o.object_id or f"#{o.index}") for o in objects]
    key = (sess.image_id, tuple(keys), candidate.points if candidate is not None else None)
    if view.background is not None and view.background[0] == key:
        return view.background[1]
    view.small = {k: v for k, v in view.small.items() if k in keys}
    small = []
    for k, obj in zip(keys, objects, strict=True):
        if k not in view.small:
            view.small[k] = fit_mask(sess.mask(obj), (size[1], size[0]))
        small.append(view.small[k])
    if candidate is not None and candidate.mask is not None:
        small.append(fit_mask(candidate.mask, (size[1], size[0])))
    shown = photos.display_image(sess.path)
    data = photos.encode_jpeg(draw_overlay(shown.image, small)) if small else shown.jpeg
    view.background = (key, data)
    return data


def _canvas(sess, candidate) -> None:
    from streamlit_drawable_canvas import st_canvas

    view, size = _view(), _display_size(sess)
    key = cv.canvas_key(sess.image_id, view.generation)
    if view.drawing is None or view.drawing[0] != key:  # fixed for a generation
        xy = cv.image_to_canvas(sess.points, size, sess.size)
        view.drawing = (key, cv.points_drawing(xy))
    result = st_canvas(
        drawing_mode="point", background_image=_background(sess, candidate), width=size[0],
        height=size[1], initial_drawing=view.drawing[1], point_display_radius=cv.POINT_RADIUS,
        stroke_width=cv.POINT_STROKE, stroke_color=cv.POINT_STROKE_COLOUR,
        fill_color=cv.POINT_FILL, key=key, on_change=lambda: _on_canvas(key),
        disabled=not sess.editable,  # a read-only image: no drawing, no toolbar
    )
    shown = cv.canvas_points(result.json_data)
    if sess.editable and len(shown) != len(sess.points):  # a value the callback did not see
        _canvas_points(sess, shown)
        st.rerun()


def _controls(sess, candidate, cfg) -> None:
    width, height = sess.size
    st.markdown(f"**{md(sess.image_id)}**  \n{width} x {height} px")
    status = sess.status
    if not status.editable:
        st.warning(md(status.reason))
        st.button("Edit this image", type="primary", on_click=_edit, args=(sess,),
                  width="stretch", help="Claim it to correct it")
    n = len(sess.points)
    if candidate is not None and candidate.error:
        st.warning(f"No mask for these clicks: {md(candidate.error)} Undo the last click or "
                   "clear the clicks.")
    elif status.editable and n < 4:
        st.info(f"Click the extreme points: {n} of 4.")
    elif status.editable:
        st.caption(f"{n} clicks. Check the mask, then accept. Model {candidate.model_ms:.0f} ms.")
    st.selectbox("Class", cfg.labels, key=_LABEL, filter_mode=None, on_change=_chosen)
    _release_focus()
    ready = candidate is not None and candidate.mask is not None and status.editable
    st.button("Accept object", type="primary", on_click=_accept, args=(sess,), disabled=not ready,
              shortcut=SHORTCUTS["accept"], width="stretch")
    st.button("Undo click", on_click=_points, args=(sess, sess.undo), disabled=not sess.points,
              shortcut=SHORTCUTS["undo"], width="stretch")
    st.button("Clear clicks", on_click=_points, args=(sess, sess.clear),
              disabled=not sess.points, shortcut=SHORTCUTS["clear"], width="stretch")
    objects = sess.objects
    st.markdown(f"**Objects ({len(objects)})**")
    for i, obj in enumerate(objects, start=1):
        swatch, text, delete = st.columns([1, 4, 3], vertical_alignment="center")
        swatch.markdown(f"<div style='width:1.2em;height:1.2em;border-radius:3px;background:"
                        f"{colour_hex(i - 1)}'></div>", unsafe_allow_html=True)
        text.markdown(f"{i}\\. {md(obj.label)}")
        delete.button("Delete", key=f"anno-del-{sess.image_id}-{obj.object_id or i}",
                      on_click=_delete, args=(sess, obj), type="tertiary",
                      icon=":material/delete:", help=f"Delete object {i}",
                      disabled=not status.editable)
    st.divider()
    if _view().confirm_empty:
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
            "2. Pick the class and **Accept**; repeat for every object.\n"
            "3. **Image done** saves the mask file and opens the next image.\n\n"
            + "\n".join(f"- `{key}`: {what}" for what, key in SHORTCUTS.items()))


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


def _ask_name() -> str | None:
    name = resources.annotator()
    if name:
        if st.query_params.get(resources.ANNOTATOR_KEY) != name:
            resources.set_annotator(name)  # back in the URL after a page switch
        return name
    st.subheader("Who is annotating?")
    with st.form("annotator-form", border=False):
        typed = st.text_input("Your name", key=_NAME_INPUT, placeholder="e.g. ana",
                              help="Kept in the page address, so a refresh remembers it.")
        if st.form_submit_button("Start annotating", type="primary"):
            if typed.strip():
                resources.set_annotator(typed)
                st.rerun()
            st.warning("Type your name first: the progress page counts work per annotator.")
    return None


def _reset_prompt() -> bool:
    """``admin.reset_progress: true`` asks a lead first; True while annotation must wait."""
    if not resources.reset_pending():
        return False
    cfg = resources.config()
    st.warning(f"The config **{md(cfg.path)}** sets `admin.reset_progress: true`. Resetting "
               f"starts the progress over: the progress file {md(cfg.progress_file)} is backed "
               "up next to it and mask files are kept. Only a lead can reset.")
    if not roles.is_configured():
        roles.lead_gate(st.container())  # says how to configure a lead
        st.caption("Annotation goes on with the current progress meanwhile.")
        return False
    if not roles.lead_gate(st.container()):
        st.info("Annotation is paused until a lead resets or keeps the progress (here or on "
                "the Progress page). Reload this page afterwards.")
        return True
    left, right = st.columns(2)
    if left.button("Reset the progress (keep a backup)", type="primary"):
        try:
            backup = resources.confirm_reset()
        except RuntimeError:  # someone else answered meanwhile
            st.rerun()
        except DextrError as exc:
            st.error(f"Reset failed, progress unchanged: {md(exc)}")
            return True
        st.session_state.pop(_SESSION, None)
        say("success", f"Progress reset; the old progress is in {md(backup)}.")
        st.rerun()
    if right.button("Keep the current progress"):
        resources.decline_reset()
        st.rerun()
    return True


def _all_done(store) -> None:
    counts = store.summary()["by_status"]
    held = counts.get("in_progress", 0)
    st.success(f"All done: no image is waiting. {counts.get('done', 0)} done, "
               f"{counts.get('skipped', 0)} skipped, {counts.get('unreadable', 0)} unreadable"
               + (f", {held} still open by other annotators" if held else "") + ".")
    st.caption("New photos in the source folder are picked up when the server restarts "
               "(optional.update: true). A lead can reopen images on the Progress page.")


def _unreadable_notice(store) -> None:
    if st.session_state.get("anno_unreadable_shown"):
        return
    st.session_state["anno_unreadable_shown"] = True
    bad = [r for r in store.images("unreadable") if not r.missing]
    if bad:
        listed = "\n".join(f"- **{md(r.id)}**: {md(r.error)}" for r in bad[:10])
        more = f"\n- and {len(bad) - 10} more (see the Progress page)" if len(bad) > 10 else ""
        st.warning(f"{len(bad)} image(s) cannot be read and are passed over. Replace or remove "
                   f"them; a lead can then reopen them.\n{listed}{more}")


def _page() -> None:
    cfg = resources.config()
    store = resources.store()
    st.title("Annotate")
    if _reset_prompt():
        return
    name = _ask_name()
    if not name:
        return
    sess = _session(name)
    who, switch = st.columns([6, 1], vertical_alignment="center")
    who.caption(f"Annotating as **{md(name)}**")
    switch.button("Not you?", type="tertiary", on_click=_switch_annotator, args=(sess,),
                  help="Give this image back (its objects are kept) and enter another name")
    try:
        if sess.refresh() is None:
            _moved(sess, sess.open_next(), "")
    except DextrError as exc:
        st.error(md(exc))
        return
    _unreadable_notice(store)
    if sess.image_id is None:
        show()
        _all_done(store)
        return
    _take_injected_clicks(sess)
    row = st.container(horizontal=True, gap="medium")  # wraps: controls below when narrow
    left = row.container(width=_display_size(sess)[0])
    right = row.container(width=CONTROLS_WIDTH)
    with right, st.spinner(f"Segmenting with {md(sess.segmenter.name)}..."):
        candidate = sess.candidate  # before the canvas, so its overlay shows in this run
    with right:
        show()  # beside (or below) the photo: the canvas never moves under the pointer
    with left:
        _canvas(sess, candidate)
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
