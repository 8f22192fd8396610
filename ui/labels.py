"""The class of the next object, one keystroke away: the Class box (type to filter, the first
nine classes numbered) and keys ``1``-``9``; the class stays chosen for the next object.

After a choice in the box the focus is handed back to the page, so that ``A`` accepts at once
(Streamlit ignores shortcuts while a text field has the focus); the choice itself starts no
rerun of its own (``on_change="ignore"``): it reaches the server with the next action, Accept,
so a key pressed right after the choice is never lost in a rerun still under way.
"""

from __future__ import annotations

import cv2
import numpy as np
import streamlit as st

from ui.messages import md

#: Widget key of the Class box.
LABEL_KEY = "class"
#: Classes with a number key (1-9).
MAX_KEYED = 9

#: Installed once per page: hands the focus back to the page after every choice in the Class
#: box (also when the same class is chosen again), by mouse or by Enter / Tab / Escape in the
#: box, and after a click on a switch or a radio button (Streamlit ignores shortcuts while any
#: input has the focus); never from a field someone types in.
_RELEASE_FOCUS = """<script>
if (!window.__dextrClassKeys) {
  window.__dextrClassKeys = true;
  const release = () => setTimeout(() => {
    const e = document.activeElement;
    if (e && (e.getAttribute('aria-label') === 'Class'
              || (e.tagName === 'INPUT' && ['radio', 'checkbox'].includes(e.type)))) e.blur();
  }, 0);
  document.addEventListener('click', (event) => {
    const t = event.target;
    if (t.closest && (t.closest('[role="option"]') || t.closest('[data-testid="stRadio"]')
                      || t.closest('[data-testid="stCheckbox"]'))) release();
  }, true);
  document.addEventListener('keydown', (event) => {
    const e = document.activeElement;
    if (['Enter', 'Tab', 'Escape'].includes(event.key) && e
        && e.getAttribute('aria-label') === 'Class') release();
  }, true);
}
</script>"""

_HIDE_KEYS = "<style>.st-key-anno-class-keys { display: none; }</style>"


def numbered(labels, label: str) -> str:
    """``label`` as shown in the box: with its number key for the first nine classes."""
    index = list(labels).index(label)
    return f"{index + 1} · {label}" if index < MAX_KEYED else label


def current(labels) -> str:
    """The class the next Accept gives (the first class until one is chosen)."""
    chosen = st.session_state.get(LABEL_KEY)
    return chosen if chosen in labels else labels[0]


def _choose(label: str) -> None:
    st.session_state[LABEL_KEY] = label


def class_box(labels) -> str:
    """The Class box and the number keys; returns the chosen class."""
    labels = list(labels)
    if st.session_state.get(LABEL_KEY) not in labels:  # none yet, or a class no longer listed
        st.session_state[LABEL_KEY] = labels[0]
    st.selectbox("Class", labels, key=LABEL_KEY, format_func=lambda x: numbered(labels, x),
                 filter_mode="contains", on_change="ignore",
                 help="Type to filter; keys 1-9 choose the first nine classes.")
    with st.container(key="anno-class-keys"):  # hidden: the keys work, the box shows numbers
        for i, label in enumerate(labels[:MAX_KEYED], start=1):
            st.button(f"Class {i}: {md(label)}", key=f"anno-class-key-{i}", on_click=_choose,
                      args=(label,), shortcut=str(i))
    st.html(_HIDE_KEYS)
    st.html(_RELEASE_FOCUS, unsafe_allow_javascript=True, width=1)
    return current(labels)


def tag_layer(layer: np.ndarray, origin: tuple[int, int], masks, texts) -> None:
    """Write each object's number and class on the mask layer, in place: ``layer`` h x w x 4 uint8
    RGBA whose top-left corner is display pixel ``origin`` (x, y) (ui.overlay.overlay_layer);
    ``masks``: display-size bool (H, W) per object; ``texts``: one short text per mask, drawn
    white on a dark rim at the top-left corner of the mask's box (clipped to the layer)."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    for mask, text in zip(masks, texts, strict=True):
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(mask.any(axis=0))
        (_, height), _ = cv2.getTextSize(text, font, scale, 1)
        at = (int(cols[0]) - origin[0] + 3, int(rows[0]) - origin[1] + height + 3)
        for colour, thick in (((20, 20, 20, 255), 3), ((255, 255, 255, 255), 1)):
            cv2.putText(layer, text, at, font, scale, colour, thick, cv2.LINE_AA)
