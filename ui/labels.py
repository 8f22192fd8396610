"""The class of the next object, one keystroke away: the Class box (type to filter, the first
nine classes numbered), keys ``1``-``9``, and the choice whether the class carries over.

- **Keys.** After a choice in the box the focus is handed back to the page (ui/keys.py), so that
  ``A`` accepts at once (Streamlit ignores shortcuts while a text field has the focus); the choice
  itself starts no rerun of its own (``on_change="ignore"``): it reaches the server with the next
  action, Accept, so a key pressed right after the choice is never lost in a rerun still under
  way. ``1``-``9`` press hidden buttons that choose the class.
- **Carry-over** (the check box "Keep the class for the next object", on by default): on, the
  class stays chosen for the next object and photo; off, the box empties after every Accept and
  the next Accept asks for a class (:func:`current` is None). Both the choice and the class last
  chosen are kept in this browser's cookies (ui/cookies.py), so a refresh keeps them. Emptying
  the box mounts a new box (its widget key counts the emptyings): a fresh widget reaches the
  browser reliably, where a value set from the server could lose to the box's deferred choice.
"""

from __future__ import annotations

import cv2
import numpy as np
import streamlit as st

from ui import cookies
from ui.messages import md

#: Label of the Class box (also what ui/keys.py hands the focus back from).
BOX_LABEL = "Class"
#: Widget key of the Class box: this prefix and how many times it was emptied.
LABEL_KEY = "class"
#: Widget key of the carry-over check box.
CARRY_KEY = "anno-class-carry"
#: Cookies keeping the carry-over choice ("1" / "0") and the class last chosen.
CARRY_COOKIE, CLASS_COOKIE = "dextr_class_carry", "dextr_class"
#: Classes with a number key (1-9).
MAX_KEYED = 9
_EMPTIED = "anno-class-emptied"
#: The carry-over choice and the class last chosen, as plain session values: they outlive the
#: widgets (Streamlit forgets a widget's value on a page that does not show it, e.g. Progress).
_KEPT = "anno-class-kept"

_HIDE_KEYS = "<style>.st-key-anno-class-keys { display: none; }</style>"


def numbered(labels, label: str) -> str:
    """``label`` as shown in the box: with its number key for the first nine classes."""
    index = list(labels).index(label)
    return f"{index + 1} · {label}" if index < MAX_KEYED else label


def _box_key() -> str:
    return f"{LABEL_KEY}-{st.session_state.get(_EMPTIED, 0)}"


def _kept() -> dict:
    """{"carry": bool, "class": str | None} of this browser session; at its start from the
    cookies (Streamlit reads them once per browser session)."""
    if _KEPT not in st.session_state:
        st.session_state[_KEPT] = {"carry": cookies.read(CARRY_COOKIE) != "0",
                                   "class": cookies.read(CLASS_COOKIE)}
    return st.session_state[_KEPT]


def carries() -> bool:
    """Whether the class stays chosen for the next object (this browser's choice, on at first)."""
    return bool(_kept()["carry"])


def _carry_changed() -> None:
    _kept()["carry"] = bool(st.session_state[CARRY_KEY])


def current(labels) -> str | None:
    """The class the next Accept gives; None when none is chosen (the box emptied after an
    Accept with carry-over off). A project with one class always gives it."""
    labels = list(labels)
    chosen = st.session_state.get(_box_key())
    if chosen in labels:
        return chosen
    return labels[0] if len(labels) == 1 else None


def accepted(labels) -> None:
    """Call after an object is accepted: without carry-over the box empties for the next one."""
    if len(list(labels)) > 1 and not carries():
        st.session_state[_EMPTIED] = st.session_state.get(_EMPTIED, 0) + 1


def _choose(label: str) -> None:
    st.session_state[_box_key()] = label


def class_box(labels) -> str | None:
    """The Class box, the number keys and the carry-over check box; returns the chosen class
    (None: none chosen yet)."""
    labels = list(labels)
    key, kept = _box_key(), _kept()
    carry = carries()
    if key not in st.session_state or (st.session_state[key] is not None
                                       and st.session_state[key] not in labels):
        last = kept["class"] if kept["class"] in labels else labels[0]
        st.session_state[key] = last if carry else None
    st.selectbox(BOX_LABEL, labels, key=key, format_func=lambda x: numbered(labels, x),
                 filter_mode="contains", on_change="ignore",
                 placeholder="Choose the class: 1-9 or type",
                 help="Type to filter; keys 1-9 choose the first nine classes.")
    if len(labels) > 1:
        if CARRY_KEY not in st.session_state:
            st.session_state[CARRY_KEY] = carry
        st.checkbox("Keep the class for the next object", key=CARRY_KEY, on_change=_carry_changed,
                    help="Off: the box empties after each Accept, so every object gets its "
                    "class chosen. Kept in this browser.")
    chosen = current(labels)
    if chosen is not None:
        kept["class"] = chosen
    # hidden (so it takes no room): the number keys' buttons, the box shows the numbers
    with st.container(key="anno-class-keys"):
        for i, label in enumerate(labels[:MAX_KEYED], start=1):
            st.button(f"Class {i}: {md(label)}", key=f"anno-class-key-{i}", on_click=_choose,
                      args=(label,), shortcut=str(i))
        st.html(_HIDE_KEYS)
        cookies.keep({CARRY_COOKIE: "1" if carry else "0",
                      **({CLASS_COOKIE: kept["class"]} if kept["class"] else {})})
    return chosen


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
