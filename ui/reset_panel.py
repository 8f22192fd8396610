"""The leads' page's care of the source folder and the progress: what the last scan of the
source folder found, and the Reset progress expander (lead only: a typed confirmation, the old
progress kept as a backup; keeping the progress when the config asks for a reset; a new scan).
Each action is a :class:`dextr_core.leads.LeadActions` call whose outcome is shown where its
button is.
"""

from __future__ import annotations

import streamlit as st

from dextr_core.leads import LeadActions
from ui import messages, roles
from ui.messages import md

#: What a lead types to confirm a reset.
CONFIRM_WORD = "RESET"


def show_last_scan(leads: LeadActions) -> None:
    """What the last scan of the source folder found (new photos, DEXTR-AnnoTool's import and
    what it said, repairs); open when it has something to fix."""
    lines, problems = leads.last_scan()
    if lines:
        with st.expander("Last scan of the source folder", expanded=bool(problems)):
            for line in lines:
                (st.warning if line in problems else st.info)(md(line))


def show_reset(leads: LeadActions, cfg, lead: bool) -> None:
    """Reset progress: lead only, typed confirmation, the old progress file kept as a backup;
    a scan of the source folder (after a reset whose scan failed, or for new photos).
    ``cfg``: the AnnoConfig (its path, named when the config asks for a reset)."""
    pending = bool(leads.handle.reset_pending)
    with st.expander("Reset progress", expanded=pending):
        if pending:
            st.warning("The config sets `admin.reset_progress: true`. A lead must confirm the "
                       "reset (or keep the progress); then set it back to false in "
                       f"{md(cfg.path)}.")
        st.write("Resetting forgets who did what and puts every image back in the queue. The "
                 "mask files stay; the progress file is backed up first.")
        if not lead:
            st.info(roles.needs_lead("reset progress"))
            return
        typed = st.text_input(f"Type {CONFIRM_WORD} to confirm", key="reset_confirm_text")
        confirmed = typed.strip() == CONFIRM_WORD
        c1, c2, c3 = st.columns(3)
        if c1.button("Reset progress", key="reset_run", disabled=not confirmed,
                     type="primary"):
            messages.clear()
            if not confirmed:
                st.error(f"A reset needs {CONFIRM_WORD} typed above.")
            else:
                messages.show_outcome(leads.reset())
        if pending and c2.button("Keep the progress", key="reset_decline"):
            messages.clear()
            messages.show_outcome(leads.keep_progress())
        if c3.button("Scan the source folder", key="rescan_run",
                     help="Add new photos to the queue and check the mask files (lead only)"):
            messages.clear()
            messages.show_outcome(leads.rescan())
