"""The leads' page: how far the team is, who did what, the finished masks, exports and resets.

Run through app.py's ``st.navigation``. Everyone may look and export; reopening or sending back
images, replacing an existing export and resets need the lead role (ui/roles.py, docs/roles.md):
with no lead configured nobody can, and the page says how to configure one.

Widgets only: the tables come from ui/progress_view.py (pure pandas over the store's reading
API, one snapshot per process in :func:`_cache`). The figures are drawn in a fragment that
refreshes by itself every :data:`REFRESH_S` seconds; the gallery shows thumbnails cached per file
version (path + mtime), a page at a time, and is not redrawn by the refreshes. Every
user-supplied string (names, labels, file names, paths, exception texts) goes through
:func:`ui.messages.md` before it is shown as Markdown. An error of the store (a damaged record
makes it raise ``StoreCorruptError``) is shown with its message; the page keeps running.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import streamlit as st

from dextr_core.errors import DextrError
from dextr_core.export import run_export
from dextr_core.images import ImageReadError
from dextr_core.masks import MaskFileError, mask_path
from ui import messages, roles, state
from ui import progress_view as view
from ui.messages import md

#: Seconds between automatic refreshes of the figures.
REFRESH_S = 15
#: Thumbnails per gallery page, columns of the gallery grid.
GALLERY_PAGE = 12
GALLERY_COLUMNS = 4
#: What the page says where a lead is needed but no lead access is configured.
NO_LEAD_CONFIGURED = (
    "No lead access is configured, so nobody can do this. Set `lead_password` (or `[auth]` with "
    "`lead_emails`) in `.streamlit/secrets.toml` and restart the app; see docs/roles.md.")


@st.cache_resource(show_spinner=False)
def _cache() -> view.SnapshotCache:
    """The snapshot and object index shared by every session of this server process."""
    return view.SnapshotCache()


@st.cache_data(show_spinner=False, max_entries=512)
def thumbnail(image_path: str, image_mtime: float, mask_file: str, mask_mtime: float) -> bytes:
    """:func:`ui.progress_view.thumbnail_jpeg`, cached per (path, mtime) of photo and mask."""
    del image_mtime, mask_mtime
    return view.thumbnail_jpeg(image_path, mask_file)


def _store_failed(exc: Exception) -> None:
    st.error(f"The progress store cannot be read, so this part of the page is not shown: "
             f"{md(exc)}")


def _needs_lead(what: str) -> str:
    return (f"Only a lead can {what}: sign in with the lead role in the sidebar."
            if roles.is_configured() else NO_LEAD_CONFIGURED)


# --------------------------------------------------------------------------------------------
# Figures


@st.fragment(run_every=REFRESH_S)
def show_figures(labels: tuple[str, ...]) -> None:
    """Totals, progress bar, annotators, throughput, classes and recent activity."""
    store = state.store()
    try:
        snap = _cache().snapshot(store)
        classes = view.objects_per_class(_cache().object_index(store).counts, labels)
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
            "Median s / object": st.column_config.NumberColumn(format="%.1f"),
            "Last activity": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
        })

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
# Gallery


def show_gallery(store, cfg, lead: bool) -> None:
    """Filtered, paginated thumbnails of finished images with their masks; lead actions."""
    st.header("Gallery")
    try:
        snap = _cache().snapshot(store)
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
        pairs = _cache().object_index(store).pairs() if label else None
    except DextrError as exc:
        _store_failed(exc)
        return
    chosen = view.gallery_selection(snap, statuses, who, label, pairs)
    pages = max(1, -(-len(chosen) // GALLERY_PAGE))
    page = min(int(st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1,
                                   step=1, key="gallery_page")), pages)
    st.caption(f"{len(chosen):,} images match.")
    columns = st.columns(GALLERY_COLUMNS)
    rows = chosen.iloc[(page - 1) * GALLERY_PAGE: page * GALLERY_PAGE]
    for n, record in enumerate(rows.itertuples(index=False)):
        with columns[n % GALLERY_COLUMNS]:
            _gallery_tile(cfg, record, lead)


def _gallery_tile(cfg, record, lead: bool) -> None:
    image_id = str(record.id)
    image_file = Path(cfg.source, image_id)
    mask_file = mask_path(cfg.destination, image_id, cfg.mask_suffix, cfg.save_format)
    try:
        st.image(thumbnail(str(image_file), view.mtime(image_file),
                           str(mask_file) if mask_file.is_file() else "", view.mtime(mask_file)),
                 width="stretch")
    except (ImageReadError, MaskFileError, OSError, ValueError) as exc:
        st.warning(f"{md(image_id)}: {md(exc)}")
    who = md(record.annotator) if record.annotator else "nobody"
    st.caption(f"**{md(image_id)}**: {view.STATUS_NAMES.get(record.status, md(record.status))}, "
               f"{int(record.n_objects)} objects, {who}")
    st.button("Reopen", key=f"reopen::{image_id}", disabled=not lead, on_click=_reopen,
              args=(image_id, None), icon=":material/undo:", width="stretch",
              help="Back to the queue for anyone (lead only)")
    if record.annotator:
        st.button(f"Send back to {who}", key=f"sendback::{image_id}", disabled=not lead,
                  on_click=_reopen, args=(image_id, str(record.annotator)),
                  icon=":material/reply:", width="stretch",
                  help=f"Reopen it and hand it to {who}: it is the first image they get "
                       "(lead only)")


def _reopen(image_id: str, to: str | None) -> None:
    """Button callback: reopen ``image_id`` (lead only); with ``to``, hand it to them. Says
    exactly what took effect (:func:`ui.progress_view.reopen_image`)."""
    messages.clear()
    if not roles.is_lead():
        messages.say("error", _needs_lead("reopen images"))
        return
    done = view.reopen_image(state.store(), image_id, roles.lead_name(), to)
    name, where = md(image_id), _where(done)
    if done.reopen_failed:
        messages.say("error", f"Could not reopen {name}: {md(done.error)}{where}")
    elif done.error is not None:
        messages.say("warning", f"{name} was not sent back to {md(to)}: {md(done.error)}{where}")
    elif done.sent_to:
        messages.say("success", f"{name} reopened and sent back to {md(done.sent_to)}.")
    else:
        messages.say("success", f"{name} reopened.{where}")


def _where(done: view.ReopenResult) -> str:
    if done.status == "todo":
        return " It is back in the queue for anyone."
    if done.status == "in_progress" and done.holder:
        return f" {md(done.holder)} is annotating it."
    return ""


# --------------------------------------------------------------------------------------------
# Exports (anyone; overwriting: lead only) and reset (lead only)


def show_exports(store, cfg, lead: bool) -> None:
    """Format + status choice, an Export button with a progress bar, a download. Anyone can
    export; only a lead overwrites an existing export (:func:`ui.progress_view.export_target`)."""
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
            lead_now = roles.is_lead()  # checked again at the click, not only at render
            target = view.export_target(cfg, fmt, status, lead_now)
            result = run_export(cfg, store, fmt, target, status=status, as_zip=True,
                                overwrite=lead_now, progress=progress)
        except (DextrError, OSError) as exc:  # ExportError, StoreCorruptError, a full disk
            st.error(f"Export failed: {md(exc)}")
        else:
            bar.progress(1.0, text="Export written")
            st.session_state["export_result"] = result
    result = st.session_state.get("export_result")
    if result is not None and Path(result.path).is_file():
        path = Path(result.path)
        st.success(f"Wrote {md(path)}: {result.images:,} images, {result.objects:,} objects.")
        if getattr(result, "shared_pixels", 0):
            st.info(f"{result.shared_pixels:,} pixels are shared by overlapping objects in "
                    f"{result.overlapping_images:,} image(s): each object keeps them in COCO; "
                    "label maps give them to the later object.")
        for warning in result.warnings[:20]:
            st.warning(md(warning))
        if len(result.warnings) > 20:
            st.caption(f"... and {len(result.warnings) - 20} more warnings.")
        st.download_button(f"Download {md(path.name)}", data=path.read_bytes, file_name=path.name,
                           mime="application/zip", key="export_download", on_click="ignore")


def show_reset(cfg, lead: bool) -> None:
    """Reset progress: lead only, typed confirmation, the old progress file kept as a backup;
    a scan of the source folder (after a reset whose scan failed, or for new photos)."""
    pending = state.reset_pending()
    with st.expander("Reset progress", expanded=pending):
        if pending:
            st.warning("The config sets `admin.reset_progress: true`. A lead must confirm the "
                       "reset (or keep the progress); then set it back to false in "
                       f"{md(cfg.path)}.")
        st.write("Resetting forgets who did what and puts every image back in the queue. The "
                 "mask files stay; the progress file is backed up first.")
        if not lead:
            st.info(_needs_lead("reset progress"))
            return
        typed = st.text_input("Type RESET to confirm", key="reset_confirm_text")
        c1, c2, c3 = st.columns(3)
        if c1.button("Reset progress", key="reset_run", disabled=typed.strip() != "RESET",
                     type="primary"):
            messages.clear()
            if not roles.is_lead() or typed.strip() != "RESET":
                st.error("A reset needs the lead role and RESET typed above.")
            else:
                _reset(cfg, pending)
        if pending and c2.button("Keep the progress", key="reset_decline"):
            messages.clear()
            if roles.is_lead():
                state.decline_reset()
                st.success("Progress kept. Set admin.reset_progress back to false in the config.")
            else:
                st.error(_needs_lead("keep or reset the progress"))
        if c3.button("Scan the source folder", key="rescan_run",
                     help="Add new photos to the queue and check the mask files (lead only)"):
            messages.clear()
            if not roles.is_lead():
                st.error(_needs_lead("scan the source folder"))
                return
            try:
                lines = view.scan_source(state.store_handle(), cfg)
            except Exception as exc:  # StoreWriteError, an unreadable folder, ...
                st.error(f"The scan failed, the queue is as it was: {md(exc)}")
            else:
                st.success("Source folder scanned. " + " ".join(md(line) for line in lines))


def _reset(cfg, pending: bool) -> None:
    done = view.reset_progress(state.store_handle(), cfg)
    if done.backup is not None and pending:
        state.decline_reset()  # the reset the config asked for is done: not asked again
    if done.backup is None:
        st.error(f"Reset failed, progress unchanged: {md(done.error)}")
    elif done.error is not None:
        st.warning(f"Progress reset; the old progress is backed up in {md(done.backup)}. The "
                   f"source folder could not be scanned, so the queue is empty: {md(done.error)} "
                   "Fix that, then press Scan the source folder.")
    else:
        st.success(f"Progress reset. The old progress is backed up in {md(done.backup)}.")


# --------------------------------------------------------------------------------------------
# The page


def main() -> None:
    """Render the progress page."""
    state.run_through_app()
    cfg = state.config()
    messages.set_page("progress")
    st.title("Progress")
    store = state.store()  # a damaged store: its message, and a lead's offer of a new one
    lead = roles.lead_gate()
    messages.show()
    show_figures(tuple(cfg.labels))
    show_gallery(store, cfg, lead)
    show_exports(store, cfg, lead)
    show_reset(cfg, lead)


if __name__ == "__main__":  # Streamlit runs pages as __main__; tests import the helpers
    main()
