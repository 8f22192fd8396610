"""The annotate page's prompts around the work itself: who is annotating, a pending progress
reset (a lead's decision), nothing left to do, unreadable images. Streamlit widgets only; every
user-supplied string goes through ``md()``."""

from __future__ import annotations

import streamlit as st

from ui import resources, roles
from ui.messages import md, say_outcome

#: Widget key of the name field.
NAME_INPUT = "anno_name_input"


def ask_name() -> str | None:
    name = resources.annotator()
    if name:
        if st.query_params.get(resources.ANNOTATOR_KEY) != name:
            resources.set_annotator(name)  # back in the URL after a page switch
        return name
    st.subheader("Who is annotating?")
    with st.form("annotator-form", border=False):
        typed = st.text_input("Your name", key=NAME_INPUT, placeholder="e.g. ana",
                              help="Kept in the page address, so a refresh remembers it.")
        if st.form_submit_button("Start annotating", type="primary"):
            if typed.strip():
                resources.set_annotator(typed)
                st.rerun()
            st.warning("Type your name first: the progress page counts work per annotator.")
    return None


def reset_prompt(on_reset) -> bool:
    """``admin.reset_progress: true`` asks a lead first; True while annotation must wait.

    With no lead configured nobody can reset: the page says how to configure one and annotation
    goes on. ``on_reset()`` runs after a reset (the page forgets its open image).
    """
    if not resources.reset_pending():
        return False
    cfg = resources.config()
    st.warning(f"The config **{md(cfg.path)}** sets `admin.reset_progress: true`. Resetting "
               f"starts the progress over: the progress file {md(cfg.progress_file)} is backed "
               "up next to it and mask files are kept. Only a lead can reset.")
    if not roles.is_configured():
        roles.lead_gate(st.container())  # says how to configure a lead
        st.caption("Annotation goes on with the current progress meanwhile.")
        return False
    if not roles.lead_gate(st.container()):
        st.info("Annotation is paused until a lead resets or keeps the progress (here or on "
                "the Progress page). Reload this page afterwards.")
        return True
    left, right = st.columns(2)
    if left.button("Reset the progress (keep a backup)", type="primary"):
        outcome = resources.lead_actions().reset(only_if_pending=True)
        if outcome.level == "warning" and outcome.backup is None:  # answered meanwhile
            st.rerun()
        if outcome.backup is None:
            st.error(md(outcome.message))
            return True
        on_reset()
        say_outcome(outcome)
        st.rerun()
    if right.button("Keep the current progress"):
        outcome = resources.lead_actions().keep_progress()
        if not outcome.ok:
            st.error(md(outcome.message))
            return True
        st.rerun()
    return True


def all_done(sess) -> None:
    """The queue is empty: what the folder holds (``sess``: the AnnotationSession)."""
    counts = sess.progress_counts()
    held = counts.get("in_progress", 0)
    st.success(f"All done: no image is waiting. {counts.get('done', 0)} done, "
               f"{counts.get('skipped', 0)} skipped, {counts.get('unreadable', 0)} unreadable"
               + (f", {held} still open by other annotators" if held else "") + ".")
    st.caption("New photos in the source folder are picked up when the server restarts "
               "(optional.update: true). A lead can reopen images on the Progress page.")


def unreadable_notice(sess) -> None:
    """The photos that cannot be read, once per browser session (``sess``: the
    AnnotationSession)."""
    if st.session_state.get("anno_unreadable_shown"):
        return
    st.session_state["anno_unreadable_shown"] = True
    bad = sess.unreadable_images()
    if bad:
        listed = "\n".join(f"- **{md(r.id)}**: {md(r.error)}" for r in bad[:10])
        more = f"\n- and {len(bad) - 10} more (see the Progress page)" if len(bad) > 10 else ""
        st.warning(f"{len(bad)} image(s) cannot be read and are passed over. Replace or remove "
                   f"them; a lead can then reopen them.\n{listed}{more}")
