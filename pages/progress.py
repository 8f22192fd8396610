"""The leads' page: how far the team is, who did what, review, the finished masks, exports and
resets.

Run through app.py's ``st.navigation``. Everyone may look and export; reviewing, reopening or
sending back images, replacing an existing export and resets need the lead role (ui/roles.py,
docs/roles.md): with no lead configured nobody can, and the page says how to configure one.

Widgets only: every action is a :class:`dextr_core.leads.LeadActions` call (it checks the role
at the call and returns an outcome in words); the tables come from ui/progress_view.py (pure
pandas over the store's reading API, one snapshot per process in :func:`_cache`). The figures are drawn in a fragment that
refreshes by itself every :data:`REFRESH_S` seconds; the gallery shows thumbnails cached per file
version (path + mtime), a page at a time, and is not redrawn by the refreshes. Every
user-supplied string (names, labels, file names, paths, exception texts) goes through
:func:`ui.messages.md` before it is shown as Markdown. An error of the store (a damaged record
makes it raise ``StoreCorruptError``) is shown with its message; the page keeps running.
"""

from __future__ import annotations

import datetime as dt

import streamlit as st

from dextr_core.errors import DextrError
from dextr_core.leads import LeadActions, Outcome
from ui import messages, resources, roles
from ui import progress_view as view
from ui.messages import md

#: Seconds between automatic refreshes of the figures.
REFRESH_S = 15
#: Thumbnails per gallery page, columns of the gallery grid.
GALLERY_PAGE = 12
GALLERY_COLUMNS = 4
#: Session keys: the gallery action waiting for confirmation ((action, image id) or None), the
#: tiles shown (view, ids), a lead acted in the gallery (the whole page is drawn again), photos
#: passed with Later, the review note, the photo just decided on (shown until Next photo).
CONFIRM_KEY = "gallery_confirm"
GALLERY_SHOWN_KEY = "gallery_shown"
GALLERY_ACTED_KEY = "gallery_acted"
REVIEW_LATER_KEY = "review_later_n"
REVIEW_NOTE_KEY = "review_note"
REVIEW_DECIDED_KEY = "review_decided"
@st.cache_resource(show_spinner=False)
def _cache() -> view.SnapshotCache:
    """The snapshot and object index shared by every session of this server process."""
    return view.SnapshotCache()


def actions() -> LeadActions:
    """This run's :class:`~dextr_core.leads.LeadActions` (:func:`ui.resources.lead_actions`)."""
    return resources.lead_actions()


def _say(outcome: Outcome) -> None:
    messages.say(outcome.level, md(outcome.message))


@st.cache_data(show_spinner=False, max_entries=512)
def thumbnail(image_path: str, image_mtime: float, mask_file: str, mask_mtime: float) -> bytes:
    """:func:`ui.progress_view.thumbnail_jpeg`, cached per (path, mtime) of photo and mask."""
    del image_mtime, mask_mtime
    return view.thumbnail_jpeg(image_path, mask_file)


def _store_failed(exc: Exception) -> None:
    st.error(f"The progress store cannot be read, so this part of the page is not shown: "
             f"{md(exc)}")


# --------------------------------------------------------------------------------------------
# Figures


@st.fragment(run_every=REFRESH_S)
def show_figures(labels: tuple[str, ...]) -> None:
    """Totals, review counts, progress bar, annotators, throughput, classes, recent activity."""
    leads = actions()
    try:
        snap = _cache().snapshot(leads)
        classes = view.objects_per_class(_cache().object_index(leads).counts, labels)
        review = leads.review_counts()
    except DextrError as exc:
        _store_failed(exc)
        return
    total, counts = snap.total, snap.counts
    finished = counts.get("done", 0) + counts.get("skipped", 0) + counts.get("unreadable", 0)
    st.progress(min(1.0, finished / total) if total else 0.0,
                text=f"{finished:,} of {total:,} images finished ({view.pct(finished, total)}); "
                     f"{counts.get('done', 0):,} done with masks")
    for column, status in zip(st.columns(len(view.STATUSES)), view.STATUSES, strict=True):
        column.metric(view.STATUS_NAMES.get(status, status), f"{counts[status]:,}",
                      view.pct(counts[status], total), delta_color="off", delta_arrow="off")
    for column, (key, name) in zip(st.columns(3), view.REVIEW_NAMES.items(), strict=True):
        column.metric(name, f"{review[key]:,}")
    stamp = dt.datetime.now().strftime("%H:%M:%S")  # the snapshot was checked against the store
    missing = int(snap.summary.get("missing") or 0)
    st.caption(f"{int(snap.summary.get('objects') or 0):,} objects accepted"
               + (f"; {missing:,} images vanished from the source folder" if missing else "")
               + f". As of {stamp}; refreshes every {REFRESH_S} s.")

    st.subheader("Annotators")
    table = view.annotator_table(snap)
    if table.empty:
        st.info("Nobody has annotated anything yet.")
    else:  # a dataframe shows its cells as plain text: names need no escaping here
        st.dataframe(table, width="stretch", column_config={
            view.MEDIAN_COLUMN: st.column_config.NumberColumn(format="%.1f",
                                                              help=view.MEDIAN_HELP),
            "Last activity": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
        })

    holders = view.holders_table(snap)
    if not holders.empty:
        st.subheader("Open now")
        st.dataframe(holders, width="stretch", hide_index=True, column_config={
            "Since": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
            "Idle": st.column_config.CheckboxColumn(
                help="Left idle past the claim timeout: the next annotator who asks gets it")})

    left, right = st.columns(2)
    with left:
        rate, unit = view.throughput(snap)
        st.subheader(f"Images finished per {unit}")
        if rate.empty:
            st.caption("No finished images yet.")
        else:
            st.altair_chart(view.throughput_chart(rate, unit), width="stretch")
    with right:
        st.subheader("Objects per class")
        st.altair_chart(view.classes_chart(classes), width="stretch")

    st.subheader("Recent activity")
    recent = view.recent_activity(snap)
    if recent.empty:
        st.caption("No activity yet.")
    else:
        st.dataframe(recent, width="stretch", hide_index=True, column_config={
            "When": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")})


# --------------------------------------------------------------------------------------------
# Review (lead only): done photos not yet reviewed, oldest first


def show_review(leads: LeadActions, cfg, lead: bool) -> None:
    """The review queue: one photo with its objects, Approve or Send back with a note, Later.
    After a decision the photo stays, with a Next photo button where Approve was (a double
    click never decides on a photo the lead has not seen)."""
    st.header("Review")
    if not lead:
        st.info(roles.needs_lead("review done images"))
        return
    if not st.toggle("Open the review queue", key="review_open",
                     help="Done photos not yet reviewed, oldest first"):
        return
    later = st.session_state.get(REVIEW_LATER_KEY, 0)
    decided = st.session_state.get(REVIEW_DECIDED_KEY)
    try:
        queue = [leads.image(decided)] if decided else leads.review_queue(limit=later + 1)
        snap = _cache().snapshot(leads)
    except DextrError as exc:
        _store_failed(exc)
        return
    if not queue or queue[0] is None:
        st.success("Nothing is waiting for review.")
        return
    if later >= len(queue):
        later = st.session_state[REVIEW_LATER_KEY] = 0
    record = queue[0 if decided else later]
    try:
        objects = leads.objects(record.id)
    except DextrError as exc:
        _store_failed(exc)
        return
    photo, side = st.columns([3, 2])
    with photo:
        _thumbnail(cfg, record.id, view.clashing(leads, snap))
    with side:
        when = dt.datetime.fromtimestamp(record.completed_at).strftime("%Y-%m-%d %H:%M") \
            if record.completed_at else "?"
        st.markdown(f"**{md(record.id)}**  \ndone by {md(record.annotator or 'nobody')} at "
                    f"{when}  \n{md(view.work_caption(record, objects))}")
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
    leads = actions()
    if decision == "approve":
        outcome = leads.approve(image_id, completed_at=completed_at)
    else:
        note = st.session_state.get(REVIEW_NOTE_KEY, "")
        outcome = leads.send_back(image_id, note, completed_at=completed_at)
    if outcome.ok:
        st.session_state[REVIEW_NOTE_KEY] = ""
        st.session_state[REVIEW_DECIDED_KEY] = image_id
    _say(outcome)


def _review_later() -> None:
    st.session_state[REVIEW_LATER_KEY] = st.session_state.get(REVIEW_LATER_KEY, 0) + 1
    st.session_state[REVIEW_NOTE_KEY] = ""


# --------------------------------------------------------------------------------------------
# Gallery


@st.fragment(run_every=REFRESH_S)
def show_gallery(cfg, lead: bool) -> None:
    """Filtered, paginated thumbnails of finished images with their masks; Reopen and Send
    back, each confirmed in its own tile.

    Drawn again every :data:`REFRESH_S` seconds like the figures, so its count is never older
    than theirs. The tiles themselves stay as they are (a photo acted on keeps its place, with
    its new status) until the lead changes the page or the filters or asks for the latest, so no
    other photo's button moves under the pointer; below them the page says when they differ."""
    if st.session_state.pop(GALLERY_ACTED_KEY, False):
        st.rerun()  # a lead's action: the whole page (figures, its outcome) is drawn again
    leads = actions()
    st.header("Gallery")
    try:
        snap = _cache().snapshot(leads)
    except DextrError as exc:
        _store_failed(exc)
        return
    f1, f2, f3 = st.columns(3)
    statuses = f1.multiselect("Status", ["done", "skipped"], default=["done"],
                              key="gallery_status", format_func=view.STATUS_NAMES.get)
    who = f2.selectbox("Annotator", ["", *view.annotator_names(snap)], key="gallery_annotator",
                       format_func=lambda n: n or "everyone")
    label = f3.selectbox("Label", ["", *cfg.labels], key="gallery_label",
                         format_func=lambda n: n or "any label")
    try:
        pairs = _cache().object_index(leads).pairs() if label else None
    except DextrError as exc:
        _store_failed(exc)
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
    clashing = view.clashing(leads, snap) if shown else frozenset()
    for n, image_id in enumerate(shown):
        with columns[n % GALLERY_COLUMNS]:
            try:
                record = records.get(image_id) or leads.image(image_id)
                objects = leads.objects(image_id)
            except DextrError as exc:
                st.warning(f"{md(image_id)}: {md(exc)}")
                continue
            if record is not None:
                _gallery_tile(cfg, record, objects, lead, clashing)
    if shown != latest:  # below the tiles: nothing above them moves
        st.caption("The photos that match changed since these tiles were drawn (a photo acted "
                   "on keeps its place, with its new status).")
        st.button("Show the latest", key="gallery_latest", icon=":material/refresh:",
                  on_click=st.session_state.pop, args=(GALLERY_SHOWN_KEY, None))


def _thumbnail(cfg, image_id: str, clashing) -> None:
    try:
        st.image(thumbnail(*view.tile_key(cfg, image_id, clashing)), width="stretch")
    except view.THUMBNAIL_ERRORS as exc:
        st.warning(f"{md(image_id)}: {md(exc)}")


def _gallery_tile(cfg, record, objects, lead: bool, clashing) -> None:
    image_id = str(record.id)
    _thumbnail(cfg, image_id, clashing)
    who = md(record.annotator) if record.annotator else "nobody"
    st.caption(f"**{md(image_id)}**: {view.STATUS_NAMES.get(record.status, md(record.status))}, "
               f"{who}; {md(view.work_caption(record, objects))}")
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
    leads = actions()
    if action == "reopen":
        outcome = leads.reopen(image_id)
    else:
        outcome = leads.send_back(image_id, st.session_state.pop(f"{CONFIRM_KEY}::note", ""))
    st.session_state[GALLERY_ACTED_KEY] = True
    _say(outcome)


# --------------------------------------------------------------------------------------------
# Exports (anyone; overwriting: lead only) and reset (lead only)


def show_exports(leads: LeadActions, lead: bool) -> None:
    """Format + status choice, an Export button with a progress bar, a download. Anyone can
    export; only a lead overwrites an existing export (:func:`dextr_core.leads.export_target`)."""
    st.header("Export")
    c1, c2 = st.columns(2)
    fmt = c1.selectbox("Format", list(view.EXPORT_FORMATS), key="export_format",
                       format_func=view.EXPORT_FORMATS.get)
    status = c2.selectbox("Images", list(view.EXPORT_SCOPES), key="export_status",
                          format_func=view.EXPORT_SCOPES.get)
    if not lead:
        st.info("Your export is written next to any existing one, with the time in its name; "
                "replacing an export needs the lead role (sign in in the sidebar).")
    if st.button("Export", key="export_run", type="primary"):
        messages.clear()
        bar = st.progress(0.0, text="Exporting...")

        def progress(done: int, total: int) -> None:
            if done == total or done % 50 == 0:
                bar.progress(done / total if total else 1.0,
                             text=f"Exporting: {done:,} of {total:,} images")

        try:
            result = leads.export(fmt, status, progress)  # the role is checked at the click
        except (DextrError, OSError) as exc:  # ExportError, StoreCorruptError, a full disk
            st.error(f"Export failed: {md(exc)}")
        else:
            bar.progress(1.0, text="Export written")
            st.session_state["export_result"] = result
    result = st.session_state.get("export_result")
    download = leads.download(result) if result is not None else None
    if download is not None:
        name, data = download
        extra = "".join(f", {n:,} objects {what}" for what, n in result.counts.items() if n)
        st.success(f"Wrote {md(result.path)}: {result.images:,} images, {result.objects:,} "
                   f"objects{extra}.")
        if result.shared_pixels:
            st.info(f"{result.shared_pixels:,} pixels are shared by overlapping objects in "
                    f"{result.overlapping_images:,} image(s): each object keeps them in COCO; "
                    "label maps give them to the later object.")
        for warning in result.warnings[:20]:
            st.warning(md(warning))
        if len(result.warnings) > 20:
            st.caption(f"... and {len(result.warnings) - 20} more warnings.")
        st.download_button(f"Download {md(name)}", data=data, file_name=name,
                           mime="application/zip", key="export_download", on_click="ignore")


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
    a scan of the source folder (after a reset whose scan failed, or for new photos)."""
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
        typed = st.text_input("Type RESET to confirm", key="reset_confirm_text")
        c1, c2, c3 = st.columns(3)
        if c1.button("Reset progress", key="reset_run", disabled=typed.strip() != "RESET",
                     type="primary"):
            messages.clear()
            if typed.strip() != "RESET":
                st.error("A reset needs RESET typed above.")
            else:
                _show(leads.reset())
        if pending and c2.button("Keep the progress", key="reset_decline"):
            messages.clear()
            _show(leads.keep_progress())
        if c3.button("Scan the source folder", key="rescan_run",
                     help="Add new photos to the queue and check the mask files (lead only)"):
            messages.clear()
            _show(leads.rescan())


def _show(outcome: Outcome) -> None:
    """An outcome shown where the button is (not queued for the top of the page)."""
    getattr(st, outcome.level)(md(outcome.message))


# --------------------------------------------------------------------------------------------
# The page


def main() -> None:
    """Render the progress page."""
    resources.run_through_app()
    cfg = resources.config()
    messages.set_page("progress")
    st.title("Progress")
    leads = actions()  # a damaged store: its message, and a lead's offer of a new one
    lead = roles.lead_gate()
    messages.show()
    show_last_scan(leads)
    show_figures(tuple(cfg.labels))
    show_review(leads, cfg, lead)
    show_gallery(cfg, lead)
    show_exports(leads, lead)
    show_reset(leads, cfg, lead)


if __name__ == "__main__":  # Streamlit runs pages as __main__; tests import the helpers
    main()
