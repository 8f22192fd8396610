"""The leads' page: how far the team is, who did what, the finished masks, exports and resets.

Run through app.py's ``st.navigation``. Everyone may look and export; reopening or sending back
images, replacing an existing export and resets need the lead role (ui/roles.py, docs/roles.md).

Speed (100,000 images): each run asks the store for its ``summary()`` (kept up to date by the
store's own indexes, so it is cheap); when that changed, only the images named by the new events
are read again (:func:`snapshot`, shared by all sessions of the process). Objects per class come
from one full ``objects()`` read per process, then follow the store's events
(:func:`object_index`). The figures are drawn in a fragment that refreshes by itself every
:data:`REFRESH_S` seconds while people work; the gallery shows downscaled thumbnails cached per file
version (path + mtime), a page at a time, and is not redrawn by the refreshes.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import altair as alt
import cv2
import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image, ImageOps

from dextr_core.export import ExportError, run_export
from dextr_core.images import ImageReadError, load_image, to_rgb_uint8
from dextr_core.masks import MaskFileError, load_label_map, mask_path
from ui import roles, state
from ui.overlay import draw_overlay

#: Seconds between automatic refreshes of the figures.
REFRESH_S = 15
#: Thumbnails per gallery page, columns of the gallery grid, longest thumbnail side (pixels).
GALLERY_PAGE = 12
GALLERY_COLUMNS = 4
THUMB_PX = 240
#: Statuses in the order they are shown.
STATUSES = ("done", "in_progress", "todo", "skipped", "unreadable")
STATUS_NAMES = {"done": "Done", "in_progress": "In progress", "todo": "To do",
                "skipped": "Skipped", "unreadable": "Unreadable"}
IMAGE_COLUMNS = ("id", "status", "annotator", "updated_at", "completed_at", "n_objects")
#: Events shown under "Recent activity".
RECENT_EVENTS = 15


# --------------------------------------------------------------------------------------------
# One read of the store, turned into tables


@dataclass
class Snapshot:
    """What the page shows, read from the store at ``taken_at`` (epoch s).

    ``summary``: ``store.summary()``; ``finished``: the done and skipped images (columns
    :data:`IMAGE_COLUMNS`, times as UTC datetimes) made from ``rows`` (image id -> tuple of those
    columns); ``events``: the latest events; ``last_event``: the time (epoch s) of the newest
    event the rows reflect.
    """

    summary: dict
    finished: pd.DataFrame
    events: list
    taken_at: float
    version: tuple = ()
    rows: dict = field(default_factory=dict)
    last_event: float | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Images per status (missing images not counted)."""
        by_status = self.summary.get("by_status", {})
        return {status: int(by_status.get(status, 0)) for status in STATUSES}

    @property
    def total(self) -> int:
        """Images in the store (missing ones not counted)."""
        return int(self.summary.get("total", sum(self.counts.values())))


@dataclass
class ObjectIndex:
    """Accepted objects per label and per (image id, label), kept up to date from the store's
    events (``object_added`` / ``object_removed``) after one full read of ``store.objects()``.

    ``summary_objects`` is what ``summary()["objects"]`` should say when the index is right;
    ``last_event`` the time (epoch s) of the last event applied; ``read_at`` when the objects
    were last read in full.
    """

    counts: Counter
    pair_counts: Counter
    summary_objects: int
    last_event: float | None
    read_at: float

    def pairs(self) -> pd.DataFrame:
        """(image_id, label) rows, one per image and label it has at least one object of."""
        keys = [k for k, n in self.pair_counts.items() if n > 0]
        return pd.DataFrame(keys, columns=["image_id", "label"])


def _times(values: pd.Series) -> pd.Series:
    """Epoch seconds (None for absent) -> tz-aware UTC datetimes (NaT for absent)."""
    return pd.to_datetime(pd.to_numeric(values, errors="coerce"), unit="s", utc=True)


def _version(summary: dict) -> tuple:
    return (summary.get("last_event"), summary.get("total"), summary.get("objects"),
            tuple(sorted(summary.get("by_status", {}).items())))


def _row(record) -> tuple:
    return tuple(getattr(record, name, None) for name in IMAGE_COLUMNS)


def _finished_frame(rows: dict) -> pd.DataFrame:
    finished = pd.DataFrame(list(rows.values()), columns=list(IMAGE_COLUMNS))
    for name in ("updated_at", "completed_at"):
        finished[name] = _times(finished[name])
    finished["n_objects"] = pd.to_numeric(finished["n_objects"], errors="coerce").fillna(0)
    return finished


def _is_finished(record) -> bool:
    return (record is not None and record.status in ("done", "skipped")
            and not getattr(record, "missing", False))


def read_snapshot(store, summary: dict | None = None) -> Snapshot:
    """Read the summary, every finished image and the latest events (no Streamlit calls)."""
    summary = store.summary() if summary is None else summary
    rows = {r.id: _row(r) for status in ("done", "skipped") for r in store.images(status=status)
            if _is_finished(r)}
    events = store.events(limit=RECENT_EVENTS)
    return Snapshot(summary=summary, finished=_finished_frame(rows), events=events,
                    taken_at=time.time(), version=_version(summary), rows=rows,
                    last_event=summary.get("last_event"))


#: More changed images than this since the last snapshot: read all finished images again.
MAX_INCREMENTAL_IMAGES = 300


def update_snapshot(store, old: Snapshot, summary: dict) -> Snapshot:
    """The snapshot after the store's events since ``old.last_event``: only the images those
    events name are read again (``store.get``). Falls back to :func:`read_snapshot` after events
    without an image (sync, reconcile, reset, import), for many changes, or when the result
    disagrees with the summary's done and skipped counts."""
    events = store.events(since=old.last_event)
    changed = {e.image_id for e in events}
    if None in changed or len(changed) > MAX_INCREMENTAL_IMAGES:
        return read_snapshot(store, summary)
    rows = dict(old.rows)
    for image_id in changed:
        record = store.get(image_id)
        if _is_finished(record):
            rows[image_id] = _row(record)
        else:
            rows.pop(image_id, None)
    by_status = summary.get("by_status", {})
    expected = int(by_status.get("done", 0)) + int(by_status.get("skipped", 0))
    last_event = events[-1].time if events else old.last_event
    if len(rows) != expected or last_event != summary.get("last_event"):
        return read_snapshot(store)  # changes raced with this update, or a count is off
    return Snapshot(summary=summary, finished=_finished_frame(rows),
                    events=store.events(limit=RECENT_EVENTS), taken_at=time.time(),
                    version=_version(summary), rows=rows, last_event=last_event)


def read_object_index(store) -> ObjectIndex:
    """Read every accepted object's label once (``store.objects()``; no Streamlit calls)."""
    summary = store.summary()
    objects = store.objects()
    pair_counts = Counter((o.image_id, str(o.label)) for o in objects)
    counts: Counter = Counter()
    for (_, label), n in pair_counts.items():
        counts[label] += n
    return ObjectIndex(counts, pair_counts, int(summary.get("objects", 0)),
                       summary.get("last_event"), time.time())


def update_object_index(store, index: ObjectIndex) -> ObjectIndex:
    """Apply the events since ``index.last_event``; read everything again after a reset, or when
    the result disagrees with the store's own object count."""
    events = store.events(since=index.last_event)
    for event in events:
        if event.action == "reset":
            return read_object_index(store)
        sign = {"object_added": 1, "object_removed": -1}.get(event.action)
        if sign is None:
            continue
        label = str(event.detail.get("label"))
        index.counts[label] += sign
        index.pair_counts[(event.image_id, label)] += sign
        index.summary_objects += sign
    if events:
        index.last_event = events[-1].time
    summary = store.summary()
    if (summary.get("last_event") == index.last_event
            and int(summary.get("objects", 0)) != index.summary_objects):
        return read_object_index(store)  # something changed objects without an event
    return index


class _SnapshotCache:
    """The last snapshot and object index of one store, shared by every session of a process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value: Snapshot | None = None
        self.objects: ObjectIndex | None = None
        self.store_id: int | None = None


@st.cache_resource(show_spinner=False)
def _snapshot_cache() -> _SnapshotCache:
    return _SnapshotCache()


def snapshot(store) -> Snapshot:
    """The store's snapshot: the cached one while the store's summary (last event, totals, status
    counts) is unchanged, else updated from the events (:func:`update_snapshot`); read in full
    the first time in a process."""
    cache = _snapshot_cache()
    with cache.lock:
        summary = store.summary()
        value = cache.value
        if cache.store_id != id(store):
            cache.objects = None
            value = None
        if value is None:
            value = read_snapshot(store, summary)
        elif value.version != _version(summary):
            value = update_snapshot(store, value, summary)
        cache.value, cache.store_id = value, id(store)
        return value


def object_index(store) -> ObjectIndex:
    """The store's :class:`ObjectIndex`: read in full once per process (``store.objects()`` copies
    every object: about 0.8 s for 25,000 objects), then kept up to date from the store's events;
    read in full again after a reset or when it disagrees with ``summary()["objects"]``."""
    cache = _snapshot_cache()
    with cache.lock:
        index = cache.objects if cache.store_id == id(store) else None
        index = read_object_index(store) if index is None else update_object_index(store, index)
        cache.objects, cache.store_id = index, id(store)
        return index


# --------------------------------------------------------------------------------------------
# Figures


def _local(values: pd.Series) -> pd.Series:
    """UTC datetimes -> naive datetimes in the server's local time (for display)."""
    values = pd.to_datetime(values, utc=True)
    tz = dt.datetime.now().astimezone().tzinfo
    return values.dt.tz_convert(tz).dt.tz_localize(None)


def annotator_table(snap: Snapshot) -> pd.DataFrame:
    """One row per annotator: images done and skipped, objects, median seconds per object (over
    their done images: image time / objects), last activity (local time)."""
    rows = snap.summary.get("annotators", {})
    table = pd.DataFrame(
        {
            "Images done": [int(s.get("done", 0)) for s in rows.values()],
            "Skipped": [int(s.get("skipped", 0)) for s in rows.values()],
            "Objects": [int(s.get("objects", 0)) for s in rows.values()],
            "Median s / object": [s.get("median_seconds_per_object") for s in rows.values()],
            "Last activity": _local(_times(pd.Series(
                [s.get("last_activity") for s in rows.values()], dtype=object))).to_numpy(),
        },
        index=pd.Index(list(rows), name="Annotator"),
    )
    table["Median s / object"] = pd.to_numeric(table["Median s / object"], errors="coerce")
    return table.sort_values(["Images done", "Objects"], ascending=False)


def throughput(snap: Snapshot) -> tuple[pd.DataFrame, str]:
    """Finished (done) images per hour (when they span up to two days) or per day, by annotator."""
    done = snap.finished[(snap.finished["status"] == "done")
                         & snap.finished["completed_at"].notna()]
    if done.empty:
        return pd.DataFrame(columns=["time", "annotator", "images"]), "hour"
    when = _local(done["completed_at"])
    unit = "hour" if when.max() - when.min() <= pd.Timedelta(days=2) else "day"
    bucket = when.dt.floor("h" if unit == "hour" else "D")
    table = (pd.DataFrame({"time": bucket, "annotator": done["annotator"].fillna("?")})
             .groupby(["time", "annotator"]).size().rename("images").reset_index())
    return table, unit


def objects_per_class(counts: dict[str, int], labels: tuple[str, ...]) -> pd.DataFrame:
    """Objects per label: the config's labels first (zero counts kept), then any others."""
    order = list(labels) + sorted(n for n, c in counts.items() if c > 0 and n not in labels)
    return pd.DataFrame({"label": order, "objects": [counts.get(n, 0) for n in order]})


ACTION_NAMES = {
    "claimed": "opened", "object_added": "added an object", "object_removed": "removed an object",
    "completed": "finished", "skipped": "skipped", "released": "released",
    "reopened": "reopened", "unreadable": "could not read", "synced": "synced the folder",
    "legacy_import": "imported DEXTR-AnnoTool progress", "reconciled": "repaired",
    "reset": "reset the progress",
}


def recent_activity(snap: Snapshot) -> pd.DataFrame:
    """The latest events, newest first: when (local time), who, what, which image."""
    events = list(reversed(snap.events))
    return pd.DataFrame({
        "When": _local(_times(pd.Series([e.time for e in events], dtype=object))).to_numpy(),
        "Who": [e.annotator or "" for e in events],
        "What": [ACTION_NAMES.get(e.action, e.action) for e in events],
        "Image": [e.image_id or "" for e in events],
    })


@st.fragment(run_every=REFRESH_S)
def show_figures(labels: tuple[str, ...]) -> None:
    """Totals, progress bar, annotators, throughput, classes and recent activity (a fragment
    that reruns by itself every :data:`REFRESH_S` seconds)."""
    store = state.store()
    snap = snapshot(store)
    total, counts = snap.total, snap.counts
    finished = counts["done"] + counts["skipped"] + counts["unreadable"]
    st.progress(finished / total if total else 0.0,
                text=f"{finished:,} of {total:,} images finished ({_pct(finished, total)}); "
                     f"{counts['done']:,} done with masks")
    columns = st.columns(len(STATUSES))
    for column, status in zip(columns, STATUSES, strict=True):
        column.metric(STATUS_NAMES[status], f"{counts[status]:,}", _pct(counts[status], total),
                      delta_color="off", delta_arrow="off")
    stamp = dt.datetime.now().strftime("%H:%M:%S")  # the snapshot was checked against the store
    missing = int(snap.summary.get("missing", 0))
    st.caption(f"{int(snap.summary.get('objects', 0)):,} objects accepted"
               + (f"; {missing:,} images vanished from the source folder" if missing else "")
               + f". As of {stamp}; refreshes every {REFRESH_S} s.")

    st.subheader("Annotators")
    table = annotator_table(snap)
    if table.empty:
        st.info("Nobody has annotated anything yet.")
    else:
        st.dataframe(table, width="stretch", column_config={
            "Median s / object": st.column_config.NumberColumn(format="%.1f"),
            "Last activity": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
        })

    left, right = st.columns(2)
    with left:
        rate, unit = throughput(snap)
        st.subheader(f"Images finished per {unit}")
        if rate.empty:
            st.caption("No finished images yet.")
        else:
            fmt = "%Y-%m-%d %H:00" if unit == "hour" else "%Y-%m-%d"
            rate["when"] = rate["time"].dt.strftime(fmt)
            chart = alt.Chart(rate).mark_bar().encode(
                x=alt.X("when:O", title=None, sort="ascending"),
                y=alt.Y("sum(images):Q", title="images"),
                color=alt.Color("annotator:N", title="annotator"),
                tooltip=["when:O", "annotator:N", "images:Q"],
            )
            st.altair_chart(chart, width="stretch")
    with right:
        st.subheader("Objects per class")
        classes = objects_per_class(object_index(store).counts, labels)
        chart = alt.Chart(classes).mark_bar().encode(
            x=alt.X("objects:Q", axis=alt.Axis(format="d", tickMinStep=1)),
            y=alt.Y("label:N", sort=list(classes["label"]), title=None),
            tooltip=["label:N", "objects:Q"],
        )
        st.altair_chart(chart, width="stretch")

    st.subheader("Recent activity")
    recent = recent_activity(snap)
    if recent.empty:
        st.caption("No activity yet.")
    else:
        st.dataframe(recent, width="stretch", hide_index=True, column_config={
            "When": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")})


def _pct(part: int, total: int) -> str:
    return f"{100.0 * part / total:.1f} %" if total else "0 %"


# --------------------------------------------------------------------------------------------
# Gallery


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0


def _small_image(path: str) -> np.ndarray:
    """The photo downscaled to fit THUMB_PX (JPEG files decoded at reduced size), upright RGB."""
    try:
        with Image.open(path) as img:
            if img.mode in ("RGB", "L", "RGBA", "P", "CMYK", "YCbCr", "LA"):
                img.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))
                img = ImageOps.exif_transpose(img)
                img.thumbnail((THUMB_PX, THUMB_PX))
                if img.mode in ("RGBA", "LA", "P"):
                    img = img.convert("RGBA")
                return to_rgb_uint8(np.asarray(img.convert("RGB") if img.mode != "RGBA" else img))
    except Exception as exc:  # fall back to the full loader for its clear message
        raise ImageReadError(f"Cannot read image {path}: {exc}") from exc
    full = load_image(path)
    scale = THUMB_PX / max(full.shape[:2])
    if scale >= 1:
        return full
    size = (max(1, round(full.shape[1] * scale)), max(1, round(full.shape[0] * scale)))
    return cv2.resize(full, size, interpolation=cv2.INTER_AREA)


@st.cache_data(show_spinner=False, max_entries=512)
def thumbnail(image_path: str, image_mtime: float, mask_file: str, mask_mtime: float) -> bytes:
    """JPEG bytes of a thumbnail (longest side THUMB_PX) with the masks drawn over it.

    Cached per (path, mtime) of the photo and of its mask file, so a re-annotated image gets a new
    thumbnail. Raises ImageReadError / MaskFileError for unreadable files.
    """
    del image_mtime, mask_mtime
    small = _small_image(image_path)
    masks: list[np.ndarray] = []
    if mask_file:
        labels = load_label_map(mask_file)
        size = (small.shape[1], small.shape[0])
        if labels.shape != small.shape[:2]:
            labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
        masks = [labels == i for i in range(1, int(labels.max()) + 1)]
    drawn = draw_overlay(small, masks)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(drawn[:, :, ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def gallery_selection(snap: Snapshot, statuses: list[str], annotator: str, label: str,
                      pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Finished images with one of ``statuses`` (done, skipped), by ``annotator`` ("" = anyone),
    holding an object with ``label`` ("" = any; ``pairs`` then gives (image_id, label) rows);
    most recently changed first."""
    images = snap.finished[snap.finished["status"].isin(statuses)]
    if annotator:
        images = images[images["annotator"] == annotator]
    if label:
        with_label = pairs.loc[pairs["label"] == label, "image_id"]
        images = images[images["id"].isin(with_label)]
    return images.sort_values(["updated_at", "id"], ascending=[False, True], na_position="last")


def show_gallery(store, cfg, lead: bool) -> None:
    """Filtered, paginated thumbnails of finished images with their masks; lead actions."""
    st.header("Gallery")
    snap = snapshot(store)
    names = sorted(str(n) for n in snap.finished["annotator"].dropna().unique())
    f1, f2, f3 = st.columns(3)
    statuses = f1.multiselect("Status", ["done", "skipped"], default=["done"],
                              key="gallery_status", format_func=STATUS_NAMES.get)
    who = f2.selectbox("Annotator", ["", *names], key="gallery_annotator",
                       format_func=lambda n: n or "everyone")
    label = f3.selectbox("Label", ["", *cfg.labels], key="gallery_label",
                         format_func=lambda n: n or "any label")
    pairs = object_index(store).pairs() if label else None
    chosen = gallery_selection(snap, statuses, who, label, pairs)
    pages = max(1, -(-len(chosen) // GALLERY_PAGE))
    page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, step=1,
                           key="gallery_page")
    page = min(int(page), pages)
    st.caption(f"{len(chosen):,} images match.")
    rows = chosen.iloc[(page - 1) * GALLERY_PAGE: page * GALLERY_PAGE]
    columns = st.columns(GALLERY_COLUMNS)
    for n, record in enumerate(rows.itertuples(index=False)):
        with columns[n % GALLERY_COLUMNS]:
            _gallery_tile(cfg, record, lead)


def _gallery_tile(cfg, record, lead: bool) -> None:
    image_id = str(record.id)
    image_file = Path(cfg.source, image_id)
    mask_file = mask_path(cfg.destination, image_id, cfg.mask_suffix, cfg.save_format)
    mask_arg = str(mask_file) if mask_file.is_file() else ""
    try:
        st.image(thumbnail(str(image_file), _mtime(image_file), mask_arg, _mtime(mask_file)),
                 width="stretch")
    except (ImageReadError, MaskFileError, OSError, ValueError) as exc:
        st.warning(f"{image_id}: {exc}")
    who = record.annotator or "nobody"
    st.caption(f"**{image_id}**: {STATUS_NAMES.get(record.status, record.status)}, "
               f"{int(record.n_objects)} objects, {who}")
    if record.status in ("done", "skipped"):
        st.button("Reopen", key=f"reopen::{image_id}", disabled=not lead, on_click=_reopen,
                  args=(image_id, None), icon=":material/undo:", width="stretch",
                  help="Back to the queue for anyone (lead only)")
        if record.annotator:
            st.button(f"Send back to {who}", key=f"sendback::{image_id}", disabled=not lead,
                      on_click=_reopen, args=(image_id, str(record.annotator)),
                      icon=":material/reply:", width="stretch",
                      help=f"Reopen it and hand it to {who}: it is the first image they get "
                           "(lead only)")


def _say(kind: str, text: str) -> None:
    """Queue a message for the top of the page (button callbacks run before the page draws)."""
    st.session_state.setdefault("progress_messages", []).append((kind, text))


def _reopen(image_id: str, to: str | None) -> None:
    """Button callback: reopen ``image_id`` (lead only); with ``to``, claim it for them."""
    if not roles.is_lead():
        _say("error", "Only a lead can reopen images: sign in with the lead role in the sidebar.")
        return
    store = state.store()
    try:
        store.reopen(image_id, by=roles.lead_name())
        if to:
            store.claim(image_id, to)
    except Exception as exc:  # ClaimError, StoreWriteError, ...: say what happened, keep the page
        _say("error", f"Could not reopen {image_id}: {exc}")
        return
    _say("success", f"{image_id} reopened" + (f" and sent back to {to}." if to else "."))


# --------------------------------------------------------------------------------------------
# Exports (anyone; overwriting: lead only) and reset (lead only)


def export_folder(cfg) -> Path:
    """Where exports are written: ``exports/`` next to the config file, unless that lies in the
    source or destination folder (then the system temp folder)."""
    folder = Path(cfg.path).parent / "exports"
    for managed in (Path(cfg.source), Path(cfg.destination)):
        if folder == managed or managed in folder.parents:
            return Path(tempfile.gettempdir()) / "dextr-exports"
    return folder


def export_target(cfg, fmt: str, status: str, lead: bool) -> Path:
    """The zip an export writes: ``<config stem>-<format>-<status>.zip`` in :func:`export_folder`.

    Only a lead replaces an existing one; anyone else's export goes next to it with the time in
    its name, so nobody but a lead overwrites an export others may be using.
    """
    target = export_folder(cfg) / f"{Path(cfg.path).stem}-{fmt}-{status}.zip"
    if lead or not target.exists():
        return target
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        candidate = target.with_name(f"{target.stem}-{stamp}{f'-{n}' if n > 1 else ''}.zip")
        if not candidate.exists():
            return candidate
    raise ExportError(f"Too many exports named {target.stem}-{stamp}* in {target.parent}")


def show_exports(store, cfg, lead: bool) -> None:
    """Format + status choice, an Export button with a progress bar, a download. Anyone can
    export; only a lead overwrites an existing export (:func:`export_target`)."""
    st.header("Export")
    formats = {"coco": "COCO instances JSON", "masks": "Label maps (DEXTR-AnnoTool layout)",
               "palette": "Colour previews (palette PNG)"}
    c1, c2 = st.columns(2)
    fmt = c1.selectbox("Format", list(formats), format_func=formats.get, key="export_format")
    status = c2.selectbox("Images", ["done", "all"], key="export_status",
                          format_func={"done": "finished (done)",
                                       "all": "every image with a mask file"}.get)
    if not lead:
        st.info("Your export is written next to any existing one, with the time in its name; "
                "replacing an export needs the lead role (sign in in the sidebar).")
    if st.button("Export", key="export_run", type="primary"):
        bar = st.progress(0.0, text="Exporting...")

        def progress(done: int, total: int) -> None:
            if done == total or done % 50 == 0:
                bar.progress(done / total if total else 1.0,
                             text=f"Exporting: {done:,} of {total:,} images")

        try:
            lead_now = roles.is_lead()  # checked again at the click, not only at render
            target = export_target(cfg, fmt, status, lead_now)
            result = run_export(cfg, store, fmt, target, status=status, as_zip=True,
                                overwrite=lead_now, progress=progress)
        except (ExportError, OSError) as exc:
            st.error(f"Export failed: {exc}")
        else:
            bar.progress(1.0, text="Export written")
            st.session_state["export_result"] = result
    result = st.session_state.get("export_result")
    if result is not None and Path(result.path).is_file():
        st.success(f"Wrote {result.path}: {result.images:,} images, {result.objects:,} objects.")
        for warning in result.warnings[:20]:
            st.warning(warning)
        if len(result.warnings) > 20:
            st.caption(f"... and {len(result.warnings) - 20} more warnings.")
        path = Path(result.path)
        st.download_button(f"Download {path.name}", data=path.read_bytes, file_name=path.name,
                           mime="application/zip", key="export_download", on_click="ignore")


def _reset_store(cfg) -> Path:
    """Back the store up and start it afresh (sync + reconcile again); returns the backup path."""
    if state.reset_pending():
        return state.confirm_reset()
    handle = state.store_handle()
    with handle.lock:
        backup = handle.store.reset()
        handle.sync_report = handle.store.sync()
        handle.reconciled = list(
            handle.store.reconcile(cfg.destination, cfg.mask_suffix, cfg.save_format) or [])
    return Path(backup)


def show_reset(cfg, lead: bool) -> None:
    """Reset progress: lead only, typed confirmation, the old progress file kept as a backup."""
    pending = state.reset_pending()
    with st.expander("Reset progress", expanded=pending):
        if pending:
            st.warning("The config sets `admin.reset_progress: true`. A lead must confirm the "
                       "reset (or keep the progress); then set it back to false in "
                       f"{cfg.path}.")
        st.write("Resetting forgets who did what and puts every image back in the queue. The "
                 "mask files stay; the progress file is backed up first.")
        if not lead:
            st.info("Only a lead can reset progress.")
            return
        typed = st.text_input("Type RESET to confirm", key="reset_confirm_text")
        c1, c2 = st.columns(2)
        if c1.button("Reset progress", key="reset_run", disabled=typed.strip() != "RESET",
                     type="primary"):
            if not roles.is_lead() or typed.strip() != "RESET":
                st.error("A reset needs the lead role and RESET typed above.")
            else:
                try:
                    backup = _reset_store(cfg)
                except Exception as exc:  # StoreWriteError and the like: nothing was lost
                    st.error(f"Reset failed, progress unchanged: {exc}")
                else:
                    st.success(f"Progress reset. The old progress is backed up in {backup}.")
        if pending and c2.button("Keep the progress", key="reset_decline"):
            state.decline_reset()
            st.success("Progress kept. Set admin.reset_progress back to false in the config.")


# --------------------------------------------------------------------------------------------
# The page


def main() -> None:
    """Render the progress page."""
    state.run_through_app()
    cfg = state.config()
    store = state.store()
    st.title("Progress")
    lead = roles.lead_gate()
    for kind, text in st.session_state.pop("progress_messages", []):
        getattr(st, kind)(text)
    show_figures(tuple(cfg.labels))
    show_gallery(store, cfg, lead)
    show_exports(store, cfg, lead)
    show_reset(cfg, lead)


if __name__ == "__main__":  # Streamlit runs pages as __main__; tests import the helpers
    main()
