"""The annotate page's controls column beside the photo, wired to one
:class:`dextr_core.session.AnnotationSession`: the status line, the class (ui/labels.py), the
overlap choice (ui/overlaps.py), Accept / Undo / Clear, the objects list with Edit and Delete,
Image done / Skip / Prev / Next, and the help with the keyboard shortcuts.

Each button calls one session action (:func:`act`): old messages go, a
:class:`~dextr_core.errors.DextrError` becomes the message that says what to do. Everything is
in view beside the photo at 1280 x 900 (ui/layout.py).
"""

from __future__ import annotations

import streamlit as st

from dextr_core.errors import DextrError
from dextr_core.session import AnnotationSession, EmptyImageError
from ui import labels, overlaps, photo_canvas, resources, tools
from ui.messages import clear, md, say, show
from ui.overlay import colour_hex

SHORTCUTS = {"accept": "A", "undo": "U", "clear": "X", "done": "D", "skip": "S",
             "previous": "P", "next": "N", "class 1-9": "1-9"}
#: The tool row's keys (ui/tools.py), listed in the help.
TOOL_KEYS = {"points": "C", "paint brush": "B", "erase brush": "E", "smaller / larger brush":
             "[ ]", "zoom to the object and back": "Z"}

_FAILED = object()


def act(action, *args):
    """Run one session action for a button: old messages go, a DextrError becomes a message
    (and the result is ``_FAILED``)."""
    clear()
    photo_canvas.view().confirm_empty = False
    try:
        return action(*args)
    except DextrError as exc:
        say("error", md(exc))
        return _FAILED


def moved(sess: AnnotationSession, status, none_text: str) -> None:
    """After the session moved to another photo (``status`` None: none): a fresh canvas, the
    photos passed over on the way, and ``none_text`` when there was none."""
    photo_canvas.view().generation += 1
    for text in sess.passed_over:
        say("warning", f"Skipped {md(text)}")
    if status is None and none_text:
        say("info", none_text)


def _next_image(sess):
    status = sess.open_next()
    moved(sess, status, "No image is waiting.")


def _accept(sess):
    classes = resources.config().labels
    label = labels.current(classes)
    if label is None:
        clear()
        say("warning", "Choose this object's class first (keys 1-9, or the Class box), then "
            "accept.")
        return
    cut = st.session_state.get(overlaps.CHOICE_KEY) == overlaps.CUT
    over = sess.overlaps() if cut else []
    stored = act(sess.accept, label, cut)
    if stored is not _FAILED:
        labels.accepted(classes)
        cut_from = ", ".join(str(o.obj.index) for o in over if o.can_cut)
        say("success", f"Object {stored.index} ({md(stored.label)}) accepted"
            + (f"; cut from object(s) {cut_from}." if cut_from else "."))
        overlaps.reset()
        photo_canvas.view().generation += 1


def _delete(sess, obj):
    if act(sess.delete, obj) is not _FAILED:
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
    skipped = act(sess.skip)
    if skipped is not _FAILED:
        say("info", f"**{md(skipped)}** skipped.")
        _next_image(sess)


def _go(sess, step, own=False):
    status = act(sess.next if step > 0 else sess.prev, own)
    if status is not _FAILED:
        moved(sess, status, "No later image." if step > 0 else "No earlier image.")


def prev_next(sess, own=False) -> None:
    """Prev / Next (``P`` / ``N``); with ``own`` through this annotator's finished photos."""
    back, forward = st.columns(2)
    mine = " of yours" if own else ""
    back.button("Prev", help=f"Previous image{mine}", on_click=_go, args=(sess, -1, own),
                shortcut=SHORTCUTS["previous"], width="stretch")
    forward.button("Next", help=f"Next image{mine}", on_click=_go, args=(sess, 1, own),
                   shortcut=SHORTCUTS["next"], width="stretch")


def _edit(sess):
    if act(sess.edit) is not _FAILED:
        photo_canvas.view().generation += 1


def _points(sess, do):
    act(do)  # undo / clear: while editing an object the change is saved (or fails) at once
    photo_canvas.view().generation += 1


def column(sess, candidate, cfg) -> None:
    """The controls beside the photo: the photo's name and status, the class, Accept, Undo /
    Clear, the messages, the objects list, Image done / Skip / Prev / Next and the help."""
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
    labels.class_box(cfg.labels)
    ready = (candidate is not None and candidate.mask is not None and status.editable
             and sess.editing is None and n not in (1, 2, 3))
    overlaps.choice(sess.overlaps() if ready else [])
    st.button("Accept object", type="primary", on_click=_accept, args=(sess,), disabled=not ready,
              shortcut=SHORTCUTS["accept"], width="stretch")
    undo, clear_all = st.columns(2)
    undo.button("Undo", on_click=_points, args=(sess, sess.undo),
                help="Undo the last click or stroke", disabled=not (sess.points or sess.strokes),
                shortcut=SHORTCUTS["undo"], width="stretch")
    clear_all.button("Clear", on_click=_points, args=(sess, sess.clear),
                     help="Clear the clicks and strokes",
                     disabled=not (sess.points or sess.strokes), shortcut=SHORTCUTS["clear"],
                     width="stretch")
    show()  # beside the photo, under Accept: neither the canvas nor Accept moves
    if sess.clicks_warning:
        st.caption(md(sess.clicks_warning))
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
    prev_next(sess)
    with st.expander("How to annotate, keyboard shortcuts"):
        st.markdown(
            "1. Click the object's **four extreme points**: left-most, right-most, top and "
            "bottom (any order); more clicks on its border refine the mask.\n"
            "2. Correct the mask with **Paint** and **Erase** (the brush size is in image "
            "pixels; **Zoom** enlarges the object), or paint a thin object from nothing.\n"
            "3. Pick the class (type to filter, or keys `1`-`9`) and **Accept**; repeat for "
            "every object. Where a new object overlaps earlier ones, choose to keep both or "
            "to cut it from them. **Edit** beside an accepted object corrects it (saved at "
            "once).\n"
            "4. **Image done** saves the mask file and opens the next image.\n\n"
            + "\n".join(f"- `{key}`: {what}" for what, key in {**SHORTCUTS, **TOOL_KEYS}.items()))
