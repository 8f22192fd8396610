"""What the leads' page reads and decides, without Streamlit: the photo the review queue shows
after Later (:meth:`LeadActions.review_next`), a photo's line of work (:func:`work_summary`) and
the progress bar's finished count (:attr:`ui.progress_view.Snapshot.closed_count`)."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from dextr_core.leads import LeadActions, work_summary
from ui.progress_view import Snapshot


class QueueStore:
    """A store whose review queue is ``ids`` (oldest first); records the limits asked for."""

    def __init__(self, ids):
        self.ids, self.limits = list(ids), []

    def review_queue(self, limit=None):
        self.limits.append(limit)
        return [SimpleNamespace(id=i) for i in self.ids[:limit]]


def leads_over(store) -> LeadActions:
    return LeadActions(SimpleNamespace(store=store), None, lead=lambda: None)


def test_review_next_passes_over_the_photos_put_off_with_later_and_starts_over_at_the_end():
    store = QueueStore(["a.png", "b.png", "c.png"])
    leads = leads_over(store)
    assert [(r.id, n) for r, n in map(leads.review_next, range(4))] == [
        ("a.png", 0), ("b.png", 1), ("c.png", 2), ("a.png", 0)]  # past the end: the oldest
    assert store.limits == [1, 2, 3, 4]  # never reads more of the queue than it shows


def test_review_next_with_nothing_waiting_says_so_and_the_count_starts_over():
    assert leads_over(QueueStore([])).review_next(3) == (None, 0)


def test_work_summary_counts_objects_by_label_most_first_with_clicks_and_time_open():
    objects = [SimpleNamespace(label="person", points=[[1, 2]] * 4),
               SimpleNamespace(label="car", points=[[1, 2]] * 4),
               SimpleNamespace(label="car", points=None)]
    record = SimpleNamespace(seconds=39.6)
    assert work_summary(record, objects) == "2 car, 1 person; 8 clicks; 40 s open"
    assert work_summary(SimpleNamespace(), []) == "no objects; 0 clicks; 0 s open"


def test_closed_counts_done_skipped_and_unreadable_not_open_or_waiting_images():
    summary = {"total": 10, "by_status": {"done": 3, "skipped": 2, "unreadable": 1,
                                          "in_progress": 1, "todo": 3}}
    snap = Snapshot(summary=summary, finished=pd.DataFrame(), events=[], taken_at=0.0)
    assert snap.closed_count == 6
    assert Snapshot(summary={}, finished=pd.DataFrame(), events=[], taken_at=0.0
                    ).closed_count == 0
