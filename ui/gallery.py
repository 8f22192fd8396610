"""The leads' gallery: finished photos with their masks, filtered by status, annotator and label,
a page of thumbnails at a time; Reopen and Send back (lead only), each confirmed in its own tile.

A fragment that redraws itself every :data:`ui.live_snapshot.REFRESH_S` seconds like the figures,
so its count is never older than theirs. The tiles themselves stay as they are (a photo acted on
keeps its place, with its new status) until the lead changes the page or the filters or asks
for the latest, so no other photo's button moves under the pointer; below them the page says
when they differ. Thumbnails are cached per file version (ui/thumbnails.py), so the refreshes
draw none again.
"""

from __future__ import annotations

import datetime as dt

import streamlit as st

from dextr_core.errors import DextrError
from dextr_core.leads import work_summary
from ui import messages, resources, roles, thumbnails
from ui import progress_view as view
from ui.live_snapshot import REFRESH_S, snapshot_cache, store_failed
from ui.messages import md

#: Thumbnails per gallery page, columns of the gallery grid.
GALLERY_PAGE = 12
GALLERY_COLUMNS = 4
#: Session keys: the action waiting for confirmation ((action, image id) or None), the tiles
#: shown (view, ids), a lead acted in the gallery (the whole page is drawn again).
CONFIRM_KEY = "gallery_confirm"
GALLERY_SHOWN_KEY = "gallery_shown"
GALLERY_ACTED_KEY = "gallery_acted"


@st.fragment(run_every=REFRESH_S)
def show_gallery(cfg, lead: bool) -> None:
    """The Gallery section: filters, page number, count, the tiles (``cfg``: the AnnoConfig's
    labels and folders; ``lead``: whether the actions are offered enabled)."""
    if st.session_state.pop(GALLERY_ACTED_KEY, False):
        st.rerun()  # a lead's action: the whole page (figures, its outcome) is drawn again
    leads = resources.lead_actions()
    st.header("Gallery")
    try:
        snap = snapshot_cache().snapshot(leads)
    except DextrError as exc:
        store_failed(exc)
        return
    f1, f2, f3 = st.columns(3)
    statuses = f1.multiselect("Status", ["done", "skipped"], default=["done"],
                              key="gallery_status", format_func=view.STATUS_NAMES.get)
    who = f2.selectbox("Annotator", ["", *view.annotator_names(snap)], key="gallery_annotator",
                       format_func=lambda n: n or "everyone")
    label = f3.selectbox("Label", ["", *cfg.labels], key="gallery_label",
                         format_func=lambda n: n or "any label")
    try:
        pairs = snapshot_cache().object_index(leads).pairs() if label else None
    except DextrError as exc:
        store_failed(exc)
        return
    chosen = view.gallery_selection(snap, statuses, who, label, pairs)
    pages = max(1, -(-len(chosen) // GALLERY_PAGE))
    page = min(int(st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1,
                                   step=1, key="gallery_page")), pages)
    done = snap.counts.get("done", 0)
    st.caption(f"{len(chosen):,} images match ({done:,} done in all; as of "
               f"{dt.datetime.now().strftime('%H:%M:%S')}).")
    latest = list(chosen["id"].iloc[(page - 1) * GALLERY_PAGE: page * GALLERY_PAGE])
    view_key = (tuple(statuses), who, label, page)
    before = st.session_state.get(GALLERY_SHOWN_KEY)
    shown = before[1] if before and before[0] == view_key else latest
    st.session_state[GALLERY_SHOWN_KEY] = (view_key, shown)
    records = {str(r.id): r for r in chosen.itertuples(index=False)}
    columns = st.columns(GALLERY_COLUMNS)
    clashing = thumbnails.clashing(leads, snap) if shown else frozenset()
    for n, image_id in enumerate(shown):
        with columns[n % GALLERY_COLUMNS]:
            try:
                record = records.get(image_id) or leads.image(image_id)
                objects = leads.objects(image_id)
            except DextrError as exc:
                st.warning(f"{md(image_id)}: {md(exc)}")
                continue
            if record is not None:
                _tile(cfg, record, objects, lead, clashing)
    if shown != latest:  # below the tiles: nothing above them moves
        st.caption("The photos that match changed since these tiles were drawn (a photo acted "
                   "on keeps its place, with its new status).")
        st.button("Show the latest", key="gallery_latest", icon=":material/refresh:",
                  on_click=st.session_state.pop, args=(GALLERY_SHOWN_KEY, None))


def _tile(cfg, record, objects, lead: bool, clashing) -> None:
    """One photo: thumbnail, caption, and Reopen / Send back or the confirmation asked for."""
    image_id = str(record.id)
    thumbnails.show_thumbnail(cfg, image_id, clashing)
    who = md(record.annotator) if record.annotator else "nobody"
    st.caption(f"**{md(image_id)}**: {view.STATUS_NAMES.get(record.status, md(record.status))}, "
               f"{who}; {md(work_summary(record, objects))}")
    if record.status not in ("done", "skipped"):
        return  # acted on: shown in place, nothing more to do here
    asked = st.session_state.get(CONFIRM_KEY)
    if asked and asked[1] == image_id:
        what = "Reopen it for anyone?" if asked[0] == "reopen" else f"Send it back to {who}?"
        st.markdown(f"**{what}** Its objects are kept.")
        if asked[0] == "send_back":
            st.text_input("Note for the annotator", key=f"{CONFIRM_KEY}::note")
        st.button("Cancel", key=f"cancel::{image_id}", on_click=_ask, args=(None, image_id),
                  width="stretch")
        st.button("Yes, reopen" if asked[0] == "reopen" else "Yes, send back",
                  key=f"confirm::{image_id}", type="primary", disabled=not lead,
                  on_click=_confirmed, args=(asked[0], image_id), width="stretch")
        return
    st.button("Reopen", key=f"reopen::{image_id}", disabled=not lead, on_click=_ask,
              args=("reopen", image_id), icon=":material/undo:", width="stretch",
              help="Back to the queue for anyone (lead only; asks first)")
    if record.annotator:
        st.button(f"Send back to {who}", key=f"sendback::{image_id}", disabled=not lead,
                  on_click=_ask, args=("send_back", image_id), icon=":material/reply:",
                  width="stretch", help=f"Reopen it with a note; it is the first image {who} "
                                        "gets (lead only; asks first)")


def _ask(action: str | None, image_id: str) -> None:
    """Button callback: ask to confirm ``action`` on ``image_id`` (None: cancel)."""
    messages.clear()
    if action is not None and not roles.is_lead():
        messages.say("error", md(roles.needs_lead("reopen or send back images")))
        return
    st.session_state[CONFIRM_KEY] = (action, image_id) if action else None


def _confirmed(action: str, image_id: str) -> None:
    """Button callback: the lead confirmed; the outcome says exactly what took effect."""
    messages.clear()
    st.session_state[CONFIRM_KEY] = None
    leads = resources.lead_actions()
    if action == "reopen":
        outcome = leads.reopen(image_id)
    else:
        outcome = leads.send_back(image_id, st.session_state.pop(f"{CONFIRM_KEY}::note", ""))
    st.session_state[GALLERY_ACTED_KEY] = True
    messages.say_outcome(outcome)
