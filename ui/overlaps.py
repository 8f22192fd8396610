"""What the annotate page says when the candidate overlaps accepted objects, and the choice
what Accept does with the shared pixels: keep them in both objects (the default; COCO and every
per-object export keep both, the label map gives them to the later object) or cut them from the
earlier object(s). The measuring and the cut are :class:`dextr_core.session.AnnotationSession`'s
(``overlaps()``, ``accept(label, cut_earlier=True)``)."""

from __future__ import annotations

import streamlit as st

from ui.messages import md

#: Widget key of the keep / cut choice (back to "keep" after every Accept).
CHOICE_KEY = "anno_overlap"
KEEP, CUT = "Keep both", "Cut from the earlier object(s)"


def describe(overlaps) -> str:
    """One line per overlapped object: its number, class, the shared pixels and their share."""
    return "  \n".join(
        f"Object {o.obj.index} ({md(o.obj.label)}): {o.pixels:,} px shared, "
        f"{o.of_object:.0%} of it, {o.of_candidate:.0%} of the new one"
        + ("" if o.can_cut else " (imported: cannot be cut)") for o in overlaps)


def choice(overlaps) -> bool:
    """The overlap notice and the keep / cut choice; True when Accept should cut."""
    if not overlaps:
        st.session_state.pop(CHOICE_KEY, None)
        return False
    st.warning("The new object overlaps:  \n" + describe(overlaps))
    picked = st.radio("Shared pixels", (KEEP, CUT), key=CHOICE_KEY, on_change="ignore",
                      help="Keep both: every object keeps its pixels (COCO); the label map "
                           "gives them to the later one. Cut: the earlier objects lose them.")
    return picked == CUT


def reset() -> None:
    """After an Accept: the next overlap starts again from "Keep both"."""
    st.session_state.pop(CHOICE_KEY, None)
