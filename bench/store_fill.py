"""Bulk set-up shared by bench_store.py and bench_progress_page.py: a large store, filled fast.

Adding 100,000 images goes through the public ``add_images``. Finishing tens of thousands of them
one ``complete`` at a time (each fsync'd) would take most of an hour, so :func:`mark_done` writes
the finished work through the store's internal bulk path in one transaction: the same image
fields and activity events that ``claim_next`` / ``add_object`` / ``complete`` record.
"""

from __future__ import annotations

from collections.abc import Iterable

from tinydb.table import Document

from dextr_core.store import ProgressStore


def fake_id(i: int) -> str:
    """Image id ``i`` of a benchmark store: 1,000 images per folder, no file behind it."""
    return f"batch{i // 1000:03d}/img_{i:06d}.jpg"


def mark_done(
    store: ProgressStore, finished: Iterable[tuple[str, str, float, list[dict], float]]
) -> None:
    """Mark images done in one transaction (one snapshot write).

    ``finished``: ``(image_id, annotator, time, objects, seconds)`` per image; ``time`` in epoch
    seconds, ``objects`` as the store keeps them (``index``, ``label``, ``points``, ``engine``,
    ``annotator``, ``created_at``, ``seconds``), ``seconds`` the time spent on the image.
    """

    def event(t: float, action: str, image_id: str, who: str, **detail) -> dict:
        doc = {"time": t, "action": action, "image_id": image_id, "annotator": who}
        return {**doc, "detail": detail} if detail else doc

    backend = store.backend  # the file backend's own engine: this is a bulk path for benchmarks
    with backend._storage.transaction():
        raw = backend._storage.read()["images"]
        events = []
        for image_id, who, t, objects, seconds in finished:
            key = str(backend._doc_of[image_id])
            old = dict(raw[key])
            raw[key].update(status="done", annotator=who, claimed_at=None, completed_at=t,
                            updated_at=t, n_objects=len(objects), seconds=seconds,
                            objects=objects)
            backend._storage.record("images", key, old, raw[key])
            events.append(event(t, "claimed", image_id, who))
            events += [event(t, "object_added", image_id, who, index=o["index"], label=o["label"])
                       for o in objects]
            events.append(event(t, "completed", image_id, who, n_objects=len(objects),
                                seconds=seconds))
        base = backend._max_event_id
        backend._events.insert_multiple(
            Document(e, doc_id=base + k) for k, e in enumerate(events, start=1)
        )
