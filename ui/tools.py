"""The annotate page's tool row: Points / Paint / Erase, the brush size, Zoom to object, and the
Edit button of each accepted object.

One compact row above the photo. The chosen tool is a primary (filled) button; the brush size
is shown in image pixels (it stays on the same image pixels when zooming) and as the pointer's
size over the photo. Keys: ``C`` Points, ``B`` Paint, ``E`` Erase, ``[`` / ``]`` brush size,
``Z`` zoom. Streamlit reserves ``C`` and refuses ``[`` / ``]`` as button shortcuts, so those
three are bound through ui/keys.py, which presses the same buttons.

What a stroke does is :mod:`dextr_core.strokes` and :class:`dextr_core.session.
AnnotationSession`; the canvas side is ui/photo_canvas.py. Paint and Erase strokes are told
apart on the canvas by their colour (:func:`mode_of`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import streamlit as st

from dextr_core.errors import DextrError
from ui import keys
from ui.messages import clear, md, say

TOOLS = ("points", "paint", "erase")
KEYS = {"points": "C", "paint": "B", "erase": "E", "smaller": "[", "larger": "]", "zoom": "Z"}
#: Stroke colours on the canvas (what tells paint from erase in the canvas's drawing).
PAINT_COLOUR = "rgba(0, 230, 118, 0.55)"
ERASE_COLOUR = "rgba(255, 255, 255, 0.6)"
#: Default brush diameter on screen (CSS px) for a photo shown whole; the size is kept in image px.
DEFAULT_BRUSH_SCREEN_PX = 16
#: Brush sizes ``[`` / ``]`` step through (image px): about x1.25 a step.
MIN_BRUSH, MAX_BRUSH = 1, 2000
_STATE = "anno_tools"


@dataclass
class Tools:
    """This browser session's tool choice: ``tool`` one of TOOLS, ``brush`` the brush diameter
    in image px (None: the default for the open photo), ``zoom_box`` the box (x_min, y_min,
    x_max, y_max, image px) the zoomed view shows on ``zoom_image`` (None: the whole photo)."""

    tool: str = "points"
    brush: float | None = None
    zoom_box: tuple | None = None
    zoom_image: str | None = None


def state() -> Tools:
    """This browser session's :class:`Tools`."""
    return st.session_state.setdefault(_STATE, Tools())


def current(sess) -> str:
    """The tool in use: the chosen one, except that an accepted object being edited is
    corrected with the brushes (Points then means Paint)."""
    tool = state().tool
    return "paint" if tool == "points" and sess.editing is not None else tool


def mode_of(colour: str) -> str:
    """The brush mode of a canvas path by its stroke colour: "erase" or "paint"."""
    return "erase" if colour.replace(" ", "") == ERASE_COLOUR.replace(" ", "") else "paint"


def brush_px(sess, scale: float) -> float:
    """The brush diameter in image px: the chosen one, else DEFAULT_BRUSH_SCREEN_PX on a photo
    shown whole at ``scale`` canvas px per image px."""
    chosen = state().brush
    if chosen is not None:
        return chosen
    return float(max(MIN_BRUSH, round(DEFAULT_BRUSH_SCREEN_PX / scale)))


def zoomed(sess) -> tuple | None:
    """The box the zoomed view shows on the open photo, None for the whole photo."""
    t = state()
    return t.zoom_box if t.zoom_box is not None and t.zoom_image == sess.image_id else None


def _choose(tool: str) -> None:
    state().tool = tool


def _resize(sess, scale: float, step: int) -> None:
    size = brush_px(sess, scale)
    new = size * 1.25 if step > 0 else size / 1.25
    new = round(new) if abs(round(new) - size) >= 1 else size + step
    state().brush = float(min(MAX_BRUSH, max(MIN_BRUSH, new)))


def _object_box(sess) -> tuple | None:
    """The current object's box (image px): its clicks with its mask, else its mask."""
    cand = sess.candidate
    boxes = []
    if sess.points:
        pts = np.asarray(sess.points)
        boxes.append((*pts.min(axis=0), *pts.max(axis=0)))
    if cand is not None and cand.mask is not None and cand.mask.any():
        rows = np.flatnonzero(cand.mask.any(axis=1))
        cols = np.flatnonzero(cand.mask.any(axis=0))
        boxes.append((cols[0], rows[0], cols[-1], rows[-1]))
    if not boxes:
        return None
    b = np.asarray(boxes, dtype=float)
    return (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())


def _zoom(sess, redraw) -> None:
    t = state()
    clear()
    if zoomed(sess) is not None:
        t.zoom_box = t.zoom_image = None
    else:
        box = _object_box(sess)
        if box is None:
            say("info", "Zoom shows the current object: click one of its points or paint it "
                "first, then press Zoom (`Z`).")
            return
        t.zoom_box, t.zoom_image = tuple(float(v) for v in box), sess.image_id
    redraw()


def _act(action, redraw) -> None:
    clear()
    try:
        action()
    except DextrError as exc:
        say("error", md(exc))
    redraw()


def row(sess, scale: float, redraw) -> None:
    """The tool row (one line, above the photo). ``scale``: canvas px per image px of the photo
    shown whole; ``redraw``: called when the canvas must be mounted afresh (a new view)."""
    editing = sess.editing is not None
    chosen = current(sess)
    bar = st.container(horizontal=True, gap="small", vertical_alignment="center",
                       key="anno-tools")
    labels = {"points": "Points", "paint": "Paint", "erase": "Erase"}
    icons = {"points": ":material/ads_click:", "paint": ":material/brush:",
             "erase": ":material/ink_eraser:"}
    for tool in TOOLS:
        bar.button(labels[tool], key=f"anno-tool-{tool}", icon=icons[tool],
                   type="primary" if chosen == tool else "secondary",
                   on_click=_choose, args=(tool,),
                   disabled=(tool == "points" and editing) or not sess.editable,
                   help=f"{labels[tool]} (`{KEYS[tool]}`)",
                   shortcut=None if tool == "points" else KEYS[tool])
    size = brush_px(sess, scale)
    bar.button("", key="anno-brush-smaller", icon=":material/remove:", on_click=_resize,
               args=(sess, scale, -1), help="Smaller brush (`[`)", type="tertiary")
    bar.markdown(f"Brush **{size:g}** px", width="content")
    bar.button("", key="anno-brush-larger", icon=":material/add:", on_click=_resize,
               args=(sess, scale, +1), help="Larger brush (`]`)", type="tertiary")
    bar.button("Zoom", key="anno-tool-zoom",
               icon=":material/zoom_out:" if zoomed(sess) else ":material/zoom_in:",
               type="primary" if zoomed(sess) else "secondary", on_click=_zoom,
               args=(sess, redraw), shortcut=KEYS["zoom"],
               help="Zoom to the current object, or back to the whole photo (`Z`)")
    if editing:
        index = next((o.index for o in sess.objects if o.object_id == sess.editing), "?")
        if not sess.edit_saved:
            bar.button("Save edit", key="anno-edit-save", type="primary", icon=":material/save:",
                       on_click=_act, args=(sess.save_edit, redraw),
                       help="Try saving the last change again")
        bar.button(f"Done editing {index}", key="anno-edit-done", icon=":material/check:",
                   on_click=_act, args=(sess.stop_editing, redraw))
    keys.bind({KEYS["points"]: "anno-tool-points", KEYS["smaller"]: "anno-brush-smaller",
               KEYS["larger"]: "anno-brush-larger"})


def edit_button(where, sess, obj, index: int, redraw) -> None:
    """The Edit button of one accepted object in the objects list (Done while it is edited)."""
    current = sess.editing is not None and sess.editing == obj.object_id
    where.button("Done" if current else "Edit", key=f"anno-edit-{sess.image_id}-{obj.object_id}",
                 type="tertiary", icon=":material/check:" if current else ":material/edit:",
                 on_click=_act, args=(sess.stop_editing if current else
                                      (lambda: sess.edit_object(obj)), redraw),
                 help=("Stop editing" if current else
                       f"Correct object {index} with Paint and Erase (saved at once)"),
                 disabled=not sess.editable or not obj.object_id)


def cursor_px(brush: float, scale: float) -> int | None:
    """The brush's diameter on screen (CSS px) for the pointer, None when a pointer image
    cannot show it (browsers draw pointer images up to 128 px)."""
    d = math.ceil(brush * scale)
    return d if 2 <= d <= 126 else None
