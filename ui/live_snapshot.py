"""The leads' page's live view of the store: one :class:`ui.progress_view.SnapshotCache` per
server process, read by each part of the page (figures, review, gallery), and what a part says
when the store cannot be read.

The figures and the gallery are fragments that redraw themselves every :data:`REFRESH_S`
seconds; each redraw asks the cache, which reads only what changed (ui/progress_view.py).
"""

from __future__ import annotations

import streamlit as st

from ui import progress_view as view
from ui.messages import md

#: Seconds between automatic refreshes of the figures and the gallery.
REFRESH_S = 15


@st.cache_resource(show_spinner=False)
def snapshot_cache() -> view.SnapshotCache:
    """The snapshot and object index shared by every session of this server process."""
    return view.SnapshotCache()


def store_failed(exc: Exception) -> None:
    """Say, in place of a part of the page, that the store could not be read and why (a damaged
    record makes the store raise ``StoreCorruptError``; its message says what to do)."""
    st.error(f"The progress store cannot be read, so this part of the page is not shown: "
             f"{md(exc)}")
