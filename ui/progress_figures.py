"""The leads' page's figures: totals per status, review counts, the progress bar, annotators, who
holds what now, throughput, objects per class and recent activity.

A fragment that redraws itself every :data:`ui.live_snapshot.REFRESH_S` seconds from the live
snapshot; the tables and charts come from ui/progress_view.py (a dataframe shows its cells as
plain text, so names need no escaping there).
"""

from __future__ import annotations

import datetime as dt

import streamlit as st

from dextr_core.errors import DextrError
from ui import progress_view as view
from ui import resources
from ui.live_snapshot import REFRESH_S, snapshot_cache, store_failed


@st.fragment(run_every=REFRESH_S)
def show_figures(labels: tuple[str, ...]) -> None:
    """Totals, review counts, progress bar, annotators, throughput, classes, recent activity;
    ``labels``: the config's labels (shown first in objects per class, zero counts kept)."""
    leads = resources.lead_actions()
    try:
        snap = snapshot_cache().snapshot(leads)
        classes = view.objects_per_class(snapshot_cache().object_index(leads).counts, labels)
        review = leads.review_counts()
    except DextrError as exc:
        store_failed(exc)
        return
    total, counts, finished = snap.total, snap.counts, snap.closed_count
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
    else:
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
