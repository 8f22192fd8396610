"""The photo on the annotate page: a point-mode drawing canvas over the display copy, the
accepted objects and the candidate mask as a transparent layer over it, its clicks handed to the
session.

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
from ui import labels, photos
from ui.messages import clear, md, say
from ui.overlay import encode_png, fit_mask, overlay_layer

_VIEW = "anno_view"


@dataclass
class View:
    """What the page keeps for drawing (no annotation state): the canvas generation (bumped
    when the page changes the clicks, which mounts a fresh canvas), display-size masks and the
    last mask layer (``background``: (key, layer dict), see ``_mask_layer``)."""

    generation: int = 0
    drawing: tuple | None = None
    small: dict = field(default_factory=dict)
    background: tuple | None = None
    confirm_empty: bool = False


def view() -> View:
    """This browser session's :class:`View`."""
    return st.session_state.setdefault(_VIEW, View())


def _on_canvas(sess, key: str) -> None:
    """Canvas callback: the canvas's point markers become the current clicks."""
    drawn = view().drawing
    if drawn is not None and drawn[0] != key:  # a late value of a canvas no longer shown
        return
    value = st.session_state.get(key) or {}
    raw = (value.get("drawing") or {}).get("raw") if hasattr(value, "get") else None
    if raw is None or not sess.editable:
        return
    set_clicks(sess, cv.canvas_points(raw))


def set_clicks(sess, shown: np.ndarray) -> None:
    """Canvas px (N, 2) -> the session's clicks; messages go only when the clicks changed (a
    fresh canvas resends its drawing, which is no new action)."""
    full = cv.canvas_to_image(shown, display_size(sess), sess.size)
    if len(full) != len(sess.points):
        clear()
    try:
        sess.set_points([[float(x), float(y)] for x, y in full])
    except DextrError as exc:
        say("warning", md(exc))


def display_size(sess) -> tuple[int, int]:
    """(width, height) in CSS px the open photo is shown at (see ui.photos.display_size_for)."""
    return photos.display_size_for(sess.size)


def _mask_layer(sess, candidate) -> dict:
    """The accepted objects and the candidate as a transparent layer (ui.overlay.overlay_layer)
    laid over the unchanged photo in the browser, so a new mask costs a small PNG instead of a
    re-encoded photo: ``{"src": PNG data URL, "left", "top", "width", "height": its box in % of
    the canvas}``, ``{}`` when there is nothing to show. Made once per (image, objects,
    candidate clicks)."""
    state, size = view(), display_size(sess)
    objects = sess.objects
    keys = [(sess.image_id, o.object_id or f"#{o.index}") for o in objects]
    revision = getattr(sess, "masks_revision", 0)  # a cut changed stored masks in place
    key = (sess.image_id, tuple(keys), candidate.points if candidate is not None else None,
           revision)
    if state.background is not None and state.background[0] == key:
        return state.background[1]
    if state.background is not None and state.background[0][3] != revision:
        state.small = {}
    state.small = {k: v for k, v in state.small.items() if k in keys}
    small = []
    for k, obj in zip(keys, objects, strict=True):
        if k not in state.small:
            state.small[k] = fit_mask(sess.mask(obj), (size[1], size[0]))
        small.append(state.small[k])
    if candidate is not None and candidate.mask is not None:
        small.append(fit_mask(candidate.mask, (size[1], size[0])))
    layer = {}
    if small:
        rgba, (x, y) = overlay_layer(photos.display_image(sess.path).image, small)
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


#: Lays the mask layer (see _mask_layer) over every photo canvas on the page: an <img>
#: between the canvas's photo (streamlit-drawable-canvas 0.13's ``dc-background-canvas``) and its
#: drawing canvas (the click markers), clicks passing through it. Re-applied when a
#: canvas is mounted (a new image or generation) until the next layer comes.
_MASK_LAYER = """<script>
(() => {
  const src = %s;
  const apply = () => {
    const hosts = [document];
    document.querySelectorAll("div").forEach((d) => { if (d.shadowRoot) hosts.push(d.shadowRoot); });
    hosts.forEach((root) => root.querySelectorAll("canvas.dc-background-canvas").forEach((bg) => {
      const box = bg.parentElement;  // the canvas's own box: photo, this layer, drawing canvas
      let img = box.querySelector(":scope > img.dextr-mask");
      const layer = window.__dextrMask;
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
  window.__dextrMask = src;
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
#: delete selected and reset all change the clicks and stay.
SEND_TOOL = "Update the app with this drawing"
UNUSED_TOOLS = (SEND_TOOL, "Bring forward", "Send backward")

_PRUNE_TOOLBAR = """<script>
if (!window.__dextrToolbar) {
  window.__dextrToolbar = true;
  const unused = new Set(%s);
  const prune = () => document.querySelectorAll("div").forEach((host) => {
    if (!host.shadowRoot) return;
    host.shadowRoot.querySelectorAll(".dc-icon-button").forEach((button) => {
      if (unused.has(button.getAttribute("aria-label"))) button.style.display = "none";
    });
  });
  new MutationObserver(prune).observe(document.body, {childList: true, subtree: true});
  setInterval(prune, 1000);
  prune();
  // The canvas sends its drawing 200 ms after the last change; a finished click or toolbar
  // press is sent at once instead, through the canvas's own (hidden) send button.
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
</script>"""


def draw(sess, candidate) -> None:
    """The canvas of the open image (read-only images: a disabled canvas, no toolbar)."""
    from streamlit_drawable_canvas import st_canvas

    state, size = view(), display_size(sess)
    key = cv.canvas_key(sess.image_id, state.generation)
    if state.drawing is None or state.drawing[0] != key:  # fixed for a generation
        xy = cv.image_to_canvas(sess.points, size, sess.size)
        state.drawing = (key, cv.points_drawing(xy))
    result = st_canvas(
        drawing_mode="point", background_image=photos.display_image(sess.path).jpeg, width=size[0],
        height=size[1], initial_drawing=state.drawing[1], point_display_radius=cv.POINT_RADIUS,
        stroke_width=cv.POINT_STROKE, stroke_color=cv.POINT_STROKE_COLOUR,
        fill_color=cv.POINT_FILL, key=key, on_change=lambda: _on_canvas(sess, key),
        disabled=not sess.editable,  # a read-only image: no drawing, no toolbar
    )
    st.html(_MASK_LAYER % json.dumps(_mask_layer(sess, candidate)), unsafe_allow_javascript=True,
            width=1)
    st.html(_PRUNE_TOOLBAR % (json.dumps(list(UNUSED_TOOLS)), SEND_TOOL), unsafe_allow_javascript=True,
            width=1)
    shown = cv.canvas_points(result.json_data)
    if sess.editable and len(shown) != len(sess.points):  # a value the callback did not see
        set_clicks(sess, shown)
        st.rerun()
