"""What the leads' page's figures show: a snapshot of the progress store and the plain pandas
tables and charts made from it (no st calls). Thumbnails are ui/thumbnails.py's, export choices
ui/export_panel.py's, a photo's line of work :func:`dextr_core.leads.work_summary`.

Speed (100,000 images): each page run asks the store for its ``summary()`` (kept up to date by
the store's own indexes, so it is cheap); when that changed, only the images named by the new
events are read again (:func:`update_snapshot`). Objects per class come from one full
``objects()`` read per process, then follow the store's events (:func:`update_object_index`).
:class:`SnapshotCache` holds the last of both for every session of a process
(ui/live_snapshot.py keeps one in ``st.cache_resource``).

Everything here is unit-testable without Streamlit: the functions take a store (anything with the
:class:`~dextr_core.store.ProgressStore` reading API) or a :class:`Snapshot` and return data.
Errors of the store (``StoreCorruptError`` and the other ``DextrError``) propagate to the page,
which shows their message.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import altair as alt
import pandas as pd

from dextr_core.leads import LeadActions
from dextr_core.store import STATUSES as STORE_STATUSES

_SHOWN_ORDER = ("done", "in_progress", "todo", "skipped", "unreadable")
#: The store's statuses in the order the page shows them (any status the page does not know
#: yet comes last, so a new one is shown rather than dropped).
STATUSES = tuple(s for s in _SHOWN_ORDER if s in STORE_STATUSES) + tuple(
    s for s in STORE_STATUSES if s not in _SHOWN_ORDER)
STATUS_NAMES = {"done": "Done", "in_progress": "In progress", "todo": "To do",
                "skipped": "Skipped", "unreadable": "Unreadable"}
#: Columns of :attr:`Snapshot.finished` (one row per done or skipped image).
IMAGE_COLUMNS = ("id", "status", "annotator", "updated_at", "completed_at", "n_objects")
#: Events shown under "Recent activity".
RECENT_EVENTS = 15
#: More changed images than this since the last snapshot: read all finished images again.
MAX_INCREMENTAL_IMAGES = 300
#: Statuses nobody has to open again: what the progress bar counts as finished (unlike
#: :attr:`Snapshot.finished`, unreadable images too).
CLOSED_STATUSES = ("done", "skipped", "unreadable")


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
        by_status = self.summary.get("by_status") or {}
        return {status: _int(by_status.get(status)) for status in STATUSES}

    @property
    def closed_count(self) -> int:
        """Images nobody has to open again (:data:`CLOSED_STATUSES`: done, skipped or
        unreadable)."""
        counts = self.counts
        return sum(counts.get(status, 0) for status in CLOSED_STATUSES)

    @property
    def total(self) -> int:
        """Images in the store (missing ones not counted)."""
        total = self.summary.get("total")
        return _int(total) if total is not None else sum(self.counts.values())


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


def _int(value) -> int:
    """A count from the store as an int (0 for None or anything that is not a number)."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _times(values: pd.Series) -> pd.Series:
    """Epoch seconds (None for absent) -> tz-aware UTC datetimes (NaT for absent)."""
    return pd.to_datetime(pd.to_numeric(values, errors="coerce"), unit="s", utc=True)


def _version(summary: dict) -> tuple:
    return (summary.get("last_event"), summary.get("total"), summary.get("objects"),
            tuple(sorted((summary.get("by_status") or {}).items())))


def _row(record) -> tuple:
    return tuple(getattr(record, name, None) for name in IMAGE_COLUMNS)


def _finished_frame(rows: dict) -> pd.DataFrame:
    finished = pd.DataFrame(list(rows.values()), columns=list(IMAGE_COLUMNS))
    for name in ("updated_at", "completed_at"):
        finished[name] = _times(finished[name])
    finished["n_objects"] = pd.to_numeric(finished["n_objects"], errors="coerce").fillna(0)
    return finished


def _is_finished(record) -> bool:
    return (record is not None and getattr(record, "status", None) in ("done", "skipped")
            and not getattr(record, "missing", False))


def read_snapshot(store, summary: dict | None = None) -> Snapshot:
    """Read the summary, every finished image and the latest events."""
    summary = store.summary() if summary is None else summary
    rows = {r.id: _row(r) for status in ("done", "skipped") for r in store.images(status=status)
            if _is_finished(r)}
    events = store.events(limit=RECENT_EVENTS)
    return Snapshot(summary=summary, finished=_finished_frame(rows), events=events,
                    taken_at=time.time(), version=_version(summary), rows=rows,
                    last_event=summary.get("last_event"))


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
    by_status = summary.get("by_status") or {}
    expected = _int(by_status.get("done")) + _int(by_status.get("skipped"))
    last_event = events[-1].time if events else old.last_event
    if len(rows) != expected or last_event != summary.get("last_event"):
        return read_snapshot(store)  # changes raced with this update, or a count is off
    return Snapshot(summary=summary, finished=_finished_frame(rows),
                    events=store.events(limit=RECENT_EVENTS), taken_at=time.time(),
                    version=_version(summary), rows=rows, last_event=last_event)


def read_object_index(store) -> ObjectIndex:
    """Read every accepted object's label once (``store.objects()``)."""
    summary = store.summary()
    objects = store.objects()
    pair_counts = Counter((o.image_id, str(o.label)) for o in objects)
    counts: Counter = Counter()
    for (_, label), n in pair_counts.items():
        counts[label] += n
    return ObjectIndex(counts, pair_counts, _int(summary.get("objects")),
                       summary.get("last_event"), time.time())


def update_object_index(store, index: ObjectIndex) -> ObjectIndex:
    """Apply the events since ``index.last_event``; read everything again after a reset, or when
    the result disagrees with the store's own object count."""
    events = store.events(since=index.last_event)
    for event in events:
        if event.action == "reset" or (event.detail or {}).get("restored"):
            return read_object_index(store)  # a correction left undone: its objects came back
        sign = {"object_added": 1, "object_removed": -1}.get(event.action)
        if sign is None:
            continue
        label = str((event.detail or {}).get("label"))
        index.counts[label] += sign
        index.pair_counts[(event.image_id, label)] += sign
        index.summary_objects += sign
    if events:
        index.last_event = events[-1].time
    summary = store.summary()
    if (summary.get("last_event") == index.last_event
            and _int(summary.get("objects")) != index.summary_objects):
        return read_object_index(store)  # something changed objects without an event
    return index


def store_of(source):
    """The progress store of ``source``: a :class:`~dextr_core.leads.LeadActions` (what the
    page holds) or a store."""
    return source.store if isinstance(source, LeadActions) else source


class SnapshotCache:
    """The last snapshot and object index of one store, shared by every session of a process.

    Keyed on the store object: a store opened anew (after a reset of the page's resources, a
    changed config) is read in full again.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value: Snapshot | None = None
        self.objects: ObjectIndex | None = None
        self.store_id: int | None = None

    def snapshot(self, store) -> Snapshot:
        """The store's (or a :class:`~dextr_core.leads.LeadActions`' store's) snapshot: the cached one while the store's summary (last event, totals,
        status counts) is unchanged, else updated from the events (:func:`update_snapshot`);
        read in full the first time. Store errors propagate and leave the cache as it was."""
        store = store_of(store)
        with self.lock:
            summary = store.summary()
            value = self.value if self.store_id == id(store) else None
            if value is None:
                value = read_snapshot(store, summary)
            elif value.version != _version(summary):
                value = update_snapshot(store, value, summary)
            if self.store_id != id(store):
                self.objects = None
            self.value, self.store_id = value, id(store)
            return value

    def object_index(self, store) -> ObjectIndex:
        """The store's :class:`ObjectIndex`: read in full once (``store.objects()`` copies every
        object: about 0.8 s for 25,000 objects), then kept up to date from the store's events;
        read in full again after a reset or when it disagrees with ``summary()["objects"]``."""
        store = store_of(store)
        with self.lock:
            index = self.objects if self.store_id == id(store) else None
            index = read_object_index(store) if index is None else update_object_index(store, index)
            if self.store_id != id(store):
                self.value = None
            self.objects, self.store_id = index, id(store)
            return index


# --------------------------------------------------------------------------------------------
# Tables for the figures


def local_times(values: pd.Series) -> pd.Series:
    """UTC datetimes -> naive datetimes in the server's local time (for display)."""
    values = pd.to_datetime(values, utc=True)
    tz = dt.datetime.now().astimezone().tzinfo
    return values.dt.tz_convert(tz).dt.tz_localize(None)


def pct(part: int, total: int) -> str:
    """``part`` of ``total`` as "12.3 %" ("0 %" when ``total`` is 0)."""
    return f"{100.0 * part / total:.1f} %" if total else "0 %"


#: The annotator table's time column: it says what it counts.
MEDIAN_COLUMN = "Median s / object (photo open)"
#: What that column counts, in words (the page's column help).
MEDIAN_HELP = ("Over their done photos: the time each photo was open until Image done (breaks "
               "included, so it is more than the clicking), divided by its objects; the median.")


def annotator_table(snap: Snapshot) -> pd.DataFrame:
    """One row per annotator (index "Annotator", names as the store holds them): images done and
    skipped, objects, median seconds per object (:data:`MEDIAN_COLUMN`: over their done images,
    the time the photo was open until Image done, breaks included, / its objects), last
    activity (local time); most images done first. A name with no image, object or claim (a
    lead who only reopened or reviewed) is not a row."""
    holders = {c.get("annotator") for c in snap.summary.get("claims") or ()}
    rows = {str(name): (s if isinstance(s, dict) else {})
            for name, s in (snap.summary.get("annotators") or {}).items()}
    # a name with no image, object or claim only acted as a lead (reopen, review): not a row
    rows = {name: s for name, s in rows.items()
            if _int(s.get("done")) or _int(s.get("skipped")) or _int(s.get("objects"))
            or name in holders}
    table = pd.DataFrame(
        {
            "Images done": [_int(s.get("done")) for s in rows.values()],
            "Skipped": [_int(s.get("skipped")) for s in rows.values()],
            "Objects": [_int(s.get("objects")) for s in rows.values()],
            MEDIAN_COLUMN: [s.get("median_seconds_per_object") for s in rows.values()],
            "Last activity": local_times(_times(pd.Series(
                [s.get("last_activity") for s in rows.values()], dtype=object))).to_numpy(),
        },
        index=pd.Index(list(rows), name="Annotator"),
    )
    table[MEDIAN_COLUMN] = pd.to_numeric(table[MEDIAN_COLUMN], errors="coerce")
    return table.sort_values(["Images done", "Objects"], ascending=False)


def throughput(snap: Snapshot) -> tuple[pd.DataFrame, str]:
    """Finished (done) images per hour (when they span up to two days) or per day, by annotator:
    columns time (local, start of the hour/day), annotator, images; and the unit."""
    done = snap.finished[(snap.finished["status"] == "done")
                         & snap.finished["completed_at"].notna()]
    if done.empty:
        return pd.DataFrame(columns=["time", "annotator", "images"]), "hour"
    when = local_times(done["completed_at"])
    unit = "hour" if when.max() - when.min() <= pd.Timedelta(days=2) else "day"
    bucket = when.dt.floor("h" if unit == "hour" else "D")
    names = done["annotator"].map(lambda n: "?" if n is None or pd.isna(n) else str(n))
    table = (pd.DataFrame({"time": bucket, "annotator": names})
             .groupby(["time", "annotator"]).size().rename("images").reset_index())
    return table, unit


def objects_per_class(counts: dict[str, int], labels: tuple[str, ...]) -> pd.DataFrame:
    """Objects per label: the config's labels first (zero counts kept), then any others."""
    order = list(labels) + sorted(n for n, c in counts.items() if c > 0 and n not in labels)
    return pd.DataFrame({"label": order, "objects": [counts.get(n, 0) for n in order]})


def throughput_chart(rate: pd.DataFrame, unit: str) -> alt.Chart:
    """Stacked bars of :func:`throughput`'s table: images per hour or day, coloured by annotator
    (names are data, shown as plain text)."""
    rate = rate.assign(when=rate["time"].dt.strftime("%Y-%m-%d %H:00" if unit == "hour"
                                                     else "%Y-%m-%d"))
    return alt.Chart(rate).mark_bar().encode(
        x=alt.X("when:O", title=None, sort="ascending"),
        y=alt.Y("sum(images):Q", title="images"),
        color=alt.Color("annotator:N", title="annotator"),
        tooltip=["when:O", "annotator:N", "images:Q"])


def classes_chart(classes: pd.DataFrame) -> alt.Chart:
    """Horizontal bars of :func:`objects_per_class`, labels in its order, whole-number axis."""
    return alt.Chart(classes).mark_bar().encode(
        x=alt.X("objects:Q", axis=alt.Axis(format="d", tickMinStep=1)),
        y=alt.Y("label:N", sort=list(classes["label"]), title=None),
        tooltip=["label:N", "objects:Q"])


ACTION_NAMES = {
    "claimed": "opened", "object_added": "added an object", "object_removed": "removed an object",
    "completed": "finished", "skipped": "skipped", "released": "released",
    "reopened": "reopened", "unreadable": "could not read", "synced": "synced the folder",
    "legacy_import": "imported DEXTR-AnnoTool progress", "reconciled": "repaired",
    "reset": "reset the progress", "imported": "imported annotations",
}


def recent_activity(snap: Snapshot) -> pd.DataFrame:
    """The latest events, newest first: When (local time), Who, What, Image."""
    events = list(reversed(snap.events))
    return pd.DataFrame({
        "When": local_times(_times(pd.Series([e.time for e in events], dtype=object))).to_numpy(),
        "Who": [str(e.annotator or "") for e in events],
        "What": [ACTION_NAMES.get(e.action, str(e.action)) for e in events],
        "Image": [str(e.image_id or "") for e in events],
    })


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


def annotator_names(snap: Snapshot) -> list[str]:
    """The names of everyone who finished an image in ``snap``, sorted."""
    return sorted({str(n) for n in snap.finished["annotator"].dropna()})


# --------------------------------------------------------------------------------------------
# Review counts and who holds what


#: Review counts (LeadActions.review_counts keys) and what the page calls them.
REVIEW_NAMES = {"waiting": "Waiting for review", "approved": "Approved", "sent_back": "Sent back"}


def holders_table(snap: Snapshot) -> pd.DataFrame:
    """Who holds which image now (the store's claims): Image, Annotator, Since (local time),
    Idle (True when the claim lapsed: anyone asking gets the image)."""
    claims = list(snap.summary.get("claims") or ())
    return pd.DataFrame({
        "Image": [str(c.get("image_id")) for c in claims],
        "Annotator": [str(c.get("annotator") or "") for c in claims],
        "Since": local_times(_times(pd.Series([c.get("claimed_at") for c in claims],
                                              dtype=object))).to_numpy(),
        "Idle": [bool(c.get("lapsed")) for c in claims],
    })

