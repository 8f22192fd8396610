"""The leads' review queue (lead only): one done photo with its objects, Approve or Send back
with a note, or Later; the photos come from :meth:`dextr_core.leads.LeadActions.review_next`.

After a decision the photo stays, with a Next photo button where Approve was, so a double click
never decides on a photo the lead has not seen. Decisions name the version the lead looked at
(``completed_at``): a photo finished again meanwhile is refused, not approved unseen.
"""

from __future__ import annotations

import datetime as dt

import streamlit as st

from dextr_core.errors import DextrError
from dextr_core.leads import LeadActions, work_summary
from ui import messages, resources, roles, thumbnails
from ui.live_snapshot import snapshot_cache, store_failed
from ui.messages import md

#: Session keys: photos passed with Later, the review note, the photo just decided on (shown
#: until Next photo).
REVIEW_LATER_KEY = "review_later_n"
REVIEW_NOTE_KEY = "review_note"
REVIEW_DECIDED_KEY = "review_decided"


def show_review(leads: LeadActions, cfg, lead: bool) -> None:
    """The Review section: for a lead who opens the queue, the photo to decide on (``cfg``: the
    AnnoConfig, for its thumbnail); anyone else is told the role it needs."""
    st.header("Review")
    if not lead:
        st.info(roles.needs_lead("review done images"))
        return
    if not st.toggle("Open the review queue", key="review_open",
                     help="Done photos not yet reviewed, oldest first"):
        return
    decided = st.session_state.get(REVIEW_DECIDED_KEY)
    try:
        if decided:
            record, later = leads.image(decided), 0
        else:
            record, later = leads.review_next(st.session_state.get(REVIEW_LATER_KEY, 0))
        snap = snapshot_cache().snapshot(leads)
    except DextrError as exc:
        store_failed(exc)
        return
    if record is None:
        st.success("Nothing is waiting for review.")
        return
    st.session_state[REVIEW_LATER_KEY] = later
    try:
        objects = leads.objects(record.id)
    except DextrError as exc:
        store_failed(exc)
        return
    photo, side = st.columns([3, 2])
    with photo:
        thumbnails.show_thumbnail(cfg, record.id, thumbnails.clashing(leads, snap))
    with side:
        when = dt.datetime.fromtimestamp(record.completed_at).strftime("%Y-%m-%d %H:%M") \
            if record.completed_at else "?"
        st.markdown(f"**{md(record.id)}**  \ndone by {md(record.annotator or 'nobody')} at "
                    f"{when}  \n{md(work_summary(record, objects))}")
        for obj in objects:
            st.caption(f"{obj.index}. {md(obj.label)}")
        if decided:
            st.button("Next photo", key="review_next", type="primary", width="stretch",
                      on_click=st.session_state.pop, args=(REVIEW_DECIDED_KEY, None),
                      icon=":material/arrow_forward:")
            return
        st.button("Approve", key="review_approve", type="primary", width="stretch",
                  on_click=_review, args=("approve", record.id, record.completed_at),
                  icon=":material/check:")
        st.text_area("Note for the annotator (sent with Send back)", key=REVIEW_NOTE_KEY,
                     placeholder="e.g. the second car misses its mirror")
        st.button("Send back", key="review_send_back", width="stretch",
                  on_click=_review, args=("send_back", record.id, record.completed_at),
                  icon=":material/reply:",
                  help="Back to to do, offered first to who did it, with the note")
        st.button("Later", key="review_later", width="stretch", on_click=_review_later,
                  help="Leave it waiting and show the next one")


def _review(decision: str, image_id: str, completed_at: float | None) -> None:
    """Button callback: approve or send back the photo the lead looked at (that version)."""
    messages.clear()
    leads = resources.lead_actions()
    if decision == "approve":
        outcome = leads.approve(image_id, completed_at=completed_at)
    else:
        note = st.session_state.get(REVIEW_NOTE_KEY, "")
        outcome = leads.send_back(image_id, note, completed_at=completed_at)
    if outcome.ok:
        st.session_state[REVIEW_NOTE_KEY] = ""
        st.session_state[REVIEW_DECIDED_KEY] = image_id
    messages.say_outcome(outcome)


def _review_later() -> None:
    """Button callback: pass over this photo (it keeps waiting); the note is cleared."""
    st.session_state[REVIEW_LATER_KEY] = st.session_state.get(REVIEW_LATER_KEY, 0) + 1
    st.session_state[REVIEW_NOTE_KEY] = ""
