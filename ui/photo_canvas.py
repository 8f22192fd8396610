"""The photo on the annotate page: a drawing canvas over the display copy (or, zoomed, over a
part of the photo enlarged), the accepted objects and the current object's mask as a
transparent layer over it, its clicks and brush strokes handed to the session.

The canvas's mode follows the tool row (ui/tools.py): ``point`` for Points, ``freedraw`` for
Paint and Erase (the same key, so markers and strokes stay). Strokes drawn since the canvas
was mounted are read back from its drawing on every change and replace the session's strokes
after those it had at mounting (``View.drawing``), so the canvas's own undo is followed too.

Only Streamlit drawing lives here; the clicks' truth is the :class:`~dextr_core.session.
AnnotationSession` (full-image pixels), the objects' truth the store. Geometry is ui/canvas.py.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

import numpy as np
import streamlit as st

from dextr_core.errors import DextrError
from ui import canvas as cv
from ui import labels, layout, photos, tools
from ui.messages import clear, md, say
from ui.overlay import encode_png, fit_mask, overlay_layer

_VIEW = "anno_view"


@dataclass
class View:
    """What the page keeps for drawing (no annotation state): the canvas generation (bumped
    when the page changes the clicks, strokes or view, which mounts a fresh canvas), its
    ``drawing`` (key, initial drawing, the session's stroke count at mounting, view),
    canvas-size masks, the zoomed background (key, jpeg, rgb) and the last mask layer
    (``background``: (key, layer dict), see ``_mask_layer``)."""

    generation: int = 0
    drawing: tuple | None = None
    small: dict = field(default_factory=dict)
    background: tuple | None = None
    confirm_empty: bool = False
    zoomed_photo: tuple | None = None
    photo_max: tuple | None = None  # (image id, (w, h) CSS px): the size chosen when it opened


def view() -> View:
    """This browser session's :class:`View`."""
    return st.session_state.setdefault(_VIEW, View())


def _on_canvas(sess, key: str) -> None:
    """Canvas callback: its markers become the current clicks, its paths the strokes."""
    value = st.session_state.get(key) or {}
    raw = (value.get("drawing") or {}).get("raw") if hasattr(value, "get") else None
    current = view().drawing
    if raw is None or not sess.editable or current is None or current[0] != key:
        return  # a canvas already replaced (its last send came late): not this object's
    take_drawing(sess, raw)


def take_drawing(sess, raw) -> bool:
    """The canvas's drawing (its ``json_data``) -> the session's clicks and strokes; True when
    either changed. Messages go only when something changed (a fresh canvas resends its
    drawing, which is no new action)."""
    state = view()
    if state.drawing is None:
        return False
    _, _, base, box = state.drawing
    shown = cv.canvas_points(raw)
    strokes = [*sess.strokes[:base], *(box.stroke(tools.mode_of(colour), pts, width)
                                       for colour, width, pts in cv.canvas_paths(raw))]
    changed = False
    if sess.editing is None and len(shown) != len(sess.points):
        clear()
        changed = True
        w, h = sess.size
        full = np.clip(box.to_image(shown), 0.0, [w - 1.0, h - 1.0])
        try:
            sess.set_points([[float(x), float(y)] for x, y in full])
        except DextrError as exc:
            say("warning", md(exc))
    if strokes != sess.strokes:
        if not changed:
            clear()
        changed = True
        try:
            sess.set_strokes(strokes)
        except DextrError as exc:
            say("error", md(exc))
    return changed


def photo_max(sess) -> tuple[int, int]:
    """The largest (width, height) CSS px the open photo may be shown at: chosen from the
    window's size (ui.layout.photo_max) when the photo opened and kept until another opens."""
    state = view()
    if state.photo_max is None or state.photo_max[0] != sess.image_id:
        state.photo_max = (sess.image_id, layout.photo_max(layout.window()))
    return state.photo_max[1]


def display_size(sess) -> tuple[int, int]:
    """(width, height) in CSS px the open photo is shown at (see ui.photos.display_size_for)."""
    return photos.display_size_for(sess.size, photo_max(sess))


def whole_scale(sess) -> float:
    """Canvas px per image px of the open photo shown whole."""
    return cv.whole_view(display_size(sess), sess.size).sx


def current_view(sess) -> cv.ViewBox:
    """The view the canvas shows: the whole photo, or the zoomed object (ui/tools.py)."""
    size, box = display_size(sess), tools.zoomed(sess)
    if box is None:
        return cv.whole_view(size, sess.size)
    return cv.zoom_view(box, size, sess.size)


def _photo(sess, box: cv.ViewBox) -> tuple[bytes, np.ndarray]:
    """The canvas's background (JPEG bytes) and its pixels (h, w, 3): the display copy, or the
    zoomed part of the photo (nearest pixels, made once per view)."""
    shown = photos.display_image(sess.path, photo_max(sess))
    if not box.zoomed:
        return shown.jpeg, shown.image
    state, key = view(), (sess.image_id, box)
    if state.zoomed_photo is None or state.zoomed_photo[0] != key:
        rgb = cv.view_pixels(photos.full_image(sess.path), box, display_size(sess), fill=96)
        state.zoomed_photo = (key, photos.encode_jpeg(rgb), rgb)
    return state.zoomed_photo[1], state.zoomed_photo[2]


def _on_canvas_mask(mask: np.ndarray, box: cv.ViewBox, size) -> np.ndarray:
    if box.zoomed:
        return cv.view_pixels(mask, box, size, fill=False)
    return fit_mask(mask, (size[1], size[0]))


def _mask_layer(sess, candidate, box: cv.ViewBox) -> dict:
    """The accepted objects and the current object as a transparent layer
    (ui.overlay.overlay_layer) laid over the unchanged photo in the browser, so a new mask
    costs a small PNG instead of a re-encoded photo: ``{"src": PNG data URL, "left", "top",
    "width", "height": its box in % of the canvas}``, ``{}`` when there is nothing to show.
    Made once per (image, objects and their strokes, current object, view); an object being
    edited is drawn as the current object."""
    state, size = view(), display_size(sess)
    objects = [o for o in sess.objects if not (sess.editing and o.object_id == sess.editing)]
    revision = getattr(sess, "masks_revision", 0)  # a cut changed stored masks in place
    keys = [(sess.image_id, o.object_id or f"#{o.index}", tuple(o.strokes), box, revision)
            for o in objects]
    current = None if candidate is None else (candidate.points, candidate.strokes,
                                              sess.editing)
    key = (sess.image_id, tuple(keys), current, box, revision)
    if state.background is not None and state.background[0] == key:
        return state.background[1]
    state.small = {k: v for k, v in state.small.items() if k in keys}
    small = []
    for k, obj in zip(keys, objects, strict=True):
        if k not in state.small:
            state.small[k] = _on_canvas_mask(sess.mask(obj), box, size)
        small.append(state.small[k])
    if candidate is not None and candidate.mask is not None:
        small.append(_on_canvas_mask(candidate.mask, box, size))
    layer = {}
    if small:
        rgba, (x, y) = overlay_layer(_photo(sess, box)[1], small)
        if rgba.size:
            rgba = np.ascontiguousarray(rgba)
            labels.tag_layer(rgba, (x, y), small[:len(objects)],
                             [f"{o.index} {o.label}" for o in objects])
            png = base64.b64encode(encode_png(rgba)).decode("ascii")
            layer = {"src": "data:image/png;base64," + png,
                     "left": 100.0 * x / size[0], "top": 100.0 * y / size[1],
                     "width": 100.0 * rgba.shape[1] / size[0],
                     "height": 100.0 * rgba.shape[0] / size[1]}
    state.background = (key, layer)
    return layer


#: Lays the mask layer (see _mask_layer) over the photo canvas (the one whose widget key is
#: given; no other canvas on the page): an <img> between the canvas's photo
#: (streamlit-drawable-canvas 0.13's ``dc-background-canvas``) and its drawing canvas (markers
#: and strokes), the pointer passing through it; and the brush's pointer (a circle of the
#: brush's size) over the drawing canvas. Re-applied when a canvas is mounted (a new image or
#: generation) until the next layer comes.
_MASK_LAYER = """<script>
(() => {
  const apply = () => {
    const state = window.__dextrMask;
    const host = document.querySelector(".st-key-" + state.key);
    if (!host) return;
    const roots = [host];
    host.querySelectorAll("*").forEach((d) => { if (d.shadowRoot) roots.push(d.shadowRoot); });
    roots.forEach((root) => root.querySelectorAll("canvas.dc-background-canvas").forEach((bg) => {
      const box = bg.parentElement;  // the canvas's own box: photo, this layer, drawing canvas
      let img = box.querySelector(":scope > img.dextr-mask");
      const layer = state.layer;
      let style = root.querySelector("style.dextr-cursor");
      if (!style && root !== host) {
        style = document.createElement("style");
        style.className = "dextr-cursor";
        root.appendChild(style);
      }
      if (style && style.textContent !== state.cursor) style.textContent = state.cursor;
      if (!layer.src) { if (img) img.remove(); return; }
      if (!img) {
        img = document.createElement("img");
        img.className = "dextr-mask";
        img.alt = "";
        img.style.cssText = "position:absolute;z-index:0;pointer-events:none;user-select:none";
        bg.after(img);  // over the photo, under the click markers
      }
      if (img.getAttribute("src") !== layer.src) {
        ["left", "top", "width", "height"].forEach((k) => { img.style[k] = layer[k] + "%%"; });
        img.setAttribute("src", layer.src);
      }
    }));
  };
  window.__dextrMask = %s;
  window.__dextrMaskApply = apply;
  if (!window.__dextrMaskTimer) {
    window.__dextrMaskTimer = setInterval(() => window.__dextrMaskApply(), 250);
    new MutationObserver(() => window.__dextrMaskApply()).observe(
      document.body, {childList: true, subtree: true});
  }
  apply();
})();
</script>"""


#: Canvas toolbar buttons that do nothing useful here: the page already follows every click
#: (realtime), and click markers have no stacking order. Undo, redo, edit (drag a click),
#: delete selected and reset all change the clicks and stay; with a brush, edit goes too (it
#: would move a stroke).
SEND_TOOL = "Update the app with this drawing"
UNUSED_TOOLS = (SEND_TOOL, "Bring forward", "Send backward")
BRUSH_UNUSED_TOOLS = (*UNUSED_TOOLS, "Edit")

_PRUNE_TOOLBAR = """<script>
window.__dextrUnused = new Set(%s);
if (!window.__dextrToolbar) {
  window.__dextrToolbar = true;
  const prune = () => document.querySelectorAll("div").forEach((host) => {
    if (!host.shadowRoot) return;
    host.shadowRoot.querySelectorAll(".dc-icon-button").forEach((button) => {
      const hide = window.__dextrUnused.has(button.getAttribute("aria-label"));
      if (hide && button.getAttribute("aria-pressed") === "true") button.click();  // edit off
      button.style.display = hide ? "none" : "";
    });
  });
  window.__dextrPrune = prune;
  new MutationObserver(prune).observe(document.body, {childList: true, subtree: true});
  setInterval(prune, 1000);
  // The canvas sends its drawing 200 ms after the last change; a finished click, stroke or
  // toolbar press is sent at once instead, through the canvas's own (hidden) send button.
  window.addEventListener("pointerup", (event) => {
    const root = event.composedPath().find((n) => n instanceof ShadowRoot);
    if (!root || !root.querySelector(".dc-container")) return;
    setTimeout(() => {
      const bar = root.querySelector(".dc-toolbar");
      const send = root.querySelector('button[aria-label="%s"]');
      if (send && bar && bar.style.display !== "none" && !send.disabled) send.click();
    }, 0);
  }, true);
}
window.__dextrPrune();
</script>"""


def _cursor_css(diameter: int | None) -> str:
    """CSS giving the drawing canvas a pointer the brush's size (a ring), '' for the default."""
    if diameter is None:
        return ""
    r = diameter / 2.0
    svg = (f"<svg xmlns='http://www.w3.org/2000/svg' width='{diameter + 2}' "
           f"height='{diameter + 2}'><circle cx='{r + 1}' cy='{r + 1}' r='{max(r - 0.5, 0.5)}' "
           "fill='none' stroke='white' stroke-width='1.5'/><circle cx='"
           f"{r + 1}' cy='{r + 1}' r='{max(r - 0.5, 0.5)}' fill='none' stroke='black' "
           "stroke-width='0.75'/></svg>")
    url = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")
    hot = round(r + 1)
    return f'.upper-canvas {{ cursor: url("{url}") {hot} {hot}, crosshair !important; }}'


def redraw() -> None:
    """Mount a fresh canvas in the next run (a new view, or clicks/strokes the page changed)."""
    view().generation += 1


def draw(sess, candidate) -> None:
    """The canvas of the open image in the current tool's mode (read-only images: a disabled
    canvas, no toolbar)."""
    from streamlit_drawable_canvas import st_canvas

    state, size = view(), display_size(sess)
    box = current_view(sess)
    key = cv.canvas_key(sess.image_id, state.generation)
    if state.drawing is None or state.drawing[0] != key or state.drawing[3] != box:
        xy = box.to_canvas(sess.points) if sess.editing is None else np.zeros((0, 2))
        state.drawing = (key, cv.points_drawing(xy), len(sess.strokes), box)
    tool = tools.current(sess)
    brush = tools.brush_px(sess, whole_scale(sess))
    if tool == "points":
        mode, width, colour = "point", cv.POINT_STROKE, cv.POINT_STROKE_COLOUR
    else:
        mode = "freedraw"
        width = max(1, round(brush * box.sx))
        colour = tools.PAINT_COLOUR if tool == "paint" else tools.ERASE_COLOUR
    result = st_canvas(
        drawing_mode=mode, background_image=_photo(sess, box)[0], width=size[0],
        height=size[1], initial_drawing=state.drawing[1], point_display_radius=cv.POINT_RADIUS,
        stroke_width=width, stroke_color=colour,
        fill_color=cv.POINT_FILL, key=key, on_change=lambda: _on_canvas(sess, key),
        disabled=not sess.editable,  # a read-only image: no drawing, no toolbar
    )
    cursor = _cursor_css(tools.cursor_px(brush, box.sx)) if mode == "freedraw" else ""
    layer = {"key": key, "layer": _mask_layer(sess, candidate, box), "cursor": cursor}
    st.html(_MASK_LAYER % json.dumps(layer), unsafe_allow_javascript=True, width=1)
    unused = BRUSH_UNUSED_TOOLS if mode == "freedraw" else UNUSED_TOOLS
    st.html(_PRUNE_TOOLBAR % (json.dumps(list(unused)), SEND_TOOL), unsafe_allow_javascript=True,
            width=1)
    if sess.editable and take_drawing(sess, result.json_data):  # a value the callback missed
        st.rerun()
