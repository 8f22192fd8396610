"""The store's claim API with browser sessions: who may change an image, idempotent object adds
and removes, and complete(write=...) that writes the mask only under a checked claim."""

from __future__ import annotations

import errno
import uuid

import pytest
from pg_server import tinydb_only
from projects import POINTS, write_photos

from dextr_core.store import ClaimError, ObjectRecord, ProgressStore, StoreInputError, open_store

TAB1, TAB2, BEN = "a1" * 16, "a2" * 16, "b1" * 16


@pytest.fixture
def store(tmp_path, store_location, clock) -> ProgressStore:
    src = tmp_path / "images"
    write_photos(src, ["a.jpg", "b.jpg", "c.jpg"])
    s = open_store(store_location, src, claim_timeout_s=600, clock=clock)
    s.sync()
    yield s
    s.close()


def reopen(s: ProgressStore) -> ProgressStore:
    return open_store(getattr(s, "url", s.path), s.source_dir, claim_timeout_s=s.claim_timeout_s,
                      clock=s.clock)


def obj(**kw) -> ObjectRecord:
    return ObjectRecord(points=POINTS, label="cat", **kw)


# ---- a lapsed claim taken by someone else -------------------------------------------------------


def test_a_lapsed_claim_taken_by_ben_refuses_anas_complete_and_never_calls_her_write(store, clock):
    ana = store.claim("a.jpg", "ana", session=TAB1)
    store.add_object(ana.id, "ana", obj(), session=TAB1)
    clock.advance(601)  # ana's claim lapses
    assert store.claim("a.jpg", "ben", session=BEN).annotator == "ben"
    store.add_object("a.jpg", "ben", obj(), session=BEN)
    written = []
    store.complete("a.jpg", "ben", session=BEN, write=lambda objs: written.append(("ben", objs)))
    assert [who for who, _ in written] == ["ben"] and len(written[0][1]) == 2

    with pytest.raises(ClaimError, match="ben"):
        store.complete("a.jpg", "ana", session=TAB1, write=lambda objs: written.append(("ana", objs)))
    assert [who for who, _ in written] == ["ben"]  # ana's write was never called
    rec = store.get("a.jpg")
    assert (rec.status, rec.annotator, rec.n_objects) == ("done", "ben", 2)


def test_a_lapsed_claim_nobody_took_is_retaken_silently_by_its_holder(store, clock):
    store.claim("a.jpg", "ana", session=TAB1)
    clock.advance(601)
    added = store.add_object("a.jpg", "ana", obj(), session=TAB1)
    assert added.index == 1
    assert store.complete("a.jpg", "ana", session=TAB1).status == "done"


def test_every_mutating_call_refuses_a_session_whose_claim_moved_to_ben(store, clock):
    store.claim("a.jpg", "ana", session=TAB1)
    first = store.add_object("a.jpg", "ana", obj(), session=TAB1)
    clock.advance(601)
    store.claim("a.jpg", "ben", session=BEN)
    for call in (
        lambda: store.heartbeat("a.jpg", "ana", session=TAB1),
        lambda: store.add_object("a.jpg", "ana", obj(), session=TAB1),
        lambda: store.remove_object("a.jpg", "ana", first.object_id, session=TAB1),
        lambda: store.remove_object("a.jpg", "ana", 1, session=TAB1),
        lambda: store.skip("a.jpg", "ana", session=TAB1),
        lambda: store.release("a.jpg", "ana", session=TAB1),
        lambda: store.complete("a.jpg", "ana", session=TAB1),
    ):
        with pytest.raises(ClaimError, match="ben"):
            call()
    rec = store.get("a.jpg")
    assert (rec.status, rec.annotator, rec.session) == ("in_progress", "ben", BEN)
    assert len(store.objects("a.jpg")) == 1


# ---- two sessions, one name ---------------------------------------------------------------------


def test_two_sessions_with_one_name_never_get_the_same_image_from_claim_next(store):
    one = store.claim_next("ana", session=TAB1)
    two = store.claim_next("ana", session=TAB2)
    assert one.id != two.id
    assert (one.session, two.session) == (TAB1, TAB2)
    # each tab keeps getting its own image back
    assert store.claim_next("ana", session=TAB1).id == one.id
    assert store.claim_next("ana", session=TAB2).id == two.id


def test_claim_of_an_image_open_in_another_tab_of_the_same_name_says_so(store):
    store.claim("a.jpg", "ana", session=TAB1)
    with pytest.raises(ClaimError, match="open in another tab or browser of yours"):
        store.claim("a.jpg", "ana", session=TAB2)
    with pytest.raises(ClaimError, match="another tab or browser of yours"):
        store.add_object("a.jpg", "ana", obj(), session=TAB2)
    with pytest.raises(ClaimError, match="another tab or browser of yours"):
        store.complete("a.jpg", "ana", session=TAB2, write=lambda objs: pytest.fail("written"))
    assert store.get("a.jpg").session == TAB1


def test_a_second_tab_takes_over_its_own_lapsed_image_and_the_first_is_then_refused(store, clock):
    store.claim("a.jpg", "ana", session=TAB1)
    clock.advance(601)
    assert store.claim_next("ana", session=TAB2).id == "a.jpg"
    assert store.get("a.jpg").session == TAB2
    with pytest.raises(ClaimError, match="another tab or browser of yours"):
        store.add_object("a.jpg", "ana", obj(), session=TAB1)


def test_session_none_keeps_the_name_as_the_holder(store):
    rec = store.claim_next("ana")
    assert rec.session is None
    store.add_object(rec.id, "ana", obj())
    store.heartbeat(rec.id, "ana", session=TAB1)  # a claim made without a session: name decides
    assert store.claim_next("ana", session=TAB1).id == rec.id
    assert store.get(rec.id).session == TAB1  # adopted by the session that came back to it
    assert store.complete(rec.id, "ana").status == "done"


def test_the_holding_session_survives_a_reopen(store):
    store.claim("a.jpg", "ana", session=TAB1)
    again = reopen(store)
    assert again.get("a.jpg").session == TAB1
    with pytest.raises(ClaimError):
        again.claim("a.jpg", "ana", session=TAB2)
    again.close()


def test_a_bad_session_token_is_refused(store):
    with pytest.raises(StoreInputError, match="session token"):
        store.claim_next("ana", session="")
    with pytest.raises(StoreInputError, match="session token"):
        store.claim_next("ana", session=5)


# ---- idempotent objects -------------------------------------------------------------------------


def test_a_retried_add_with_the_same_object_id_stores_one_object(store, clock):
    store.claim("a.jpg", "ana", session=TAB1)
    oid = uuid.uuid4().hex
    first = store.add_object("a.jpg", "ana", obj(object_id=oid), session=TAB1)
    events = len(store.events())
    clock.advance(5)
    again = store.add_object("a.jpg", "ana", obj(object_id=oid), session=TAB1)
    assert again == first and (first.index, first.object_id, first.image_id) == (1, oid, "a.jpg")
    assert [o.object_id for o in store.objects("a.jpg")] == [oid]
    assert len(store.events()) == events  # nothing changed, nothing logged
    assert reopen(store).objects("a.jpg") == [first]


def test_the_store_makes_an_object_id_when_none_is_given(store):
    store.claim("a.jpg", "ana")
    a = store.add_object("a.jpg", "ana", obj())
    b = store.add_object("a.jpg", "ana", obj())
    assert a.object_id and b.object_id and a.object_id != b.object_id
    assert [o.object_id for o in store.objects("a.jpg")] == [a.object_id, b.object_id]


def test_a_bad_object_id_is_refused(store):
    store.claim("a.jpg", "ana")
    with pytest.raises(StoreInputError, match="Object id"):
        store.add_object("a.jpg", "ana", obj(object_id="../../etc/passwd"))
    assert store.objects("a.jpg") == []


def test_remove_by_object_id_is_idempotent_and_renumbers(store):
    store.claim("a.jpg", "ana", session=TAB1)
    a, b, c = (store.add_object("a.jpg", "ana", obj(), session=TAB1) for _ in range(3))
    store.remove_object("a.jpg", "ana", b.object_id, session=TAB1)
    store.remove_object("a.jpg", "ana", b.object_id, session=TAB1)  # the retry: no-op
    left = store.objects("a.jpg")
    assert [(o.index, o.object_id) for o in left] == [(1, a.object_id), (2, c.object_id)]
    store.remove_object("a.jpg", "ana", 1, session=TAB1)
    assert [o.object_id for o in store.objects("a.jpg")] == [c.object_id]
    with pytest.raises(StoreInputError, match="no object 5"):
        store.remove_object("a.jpg", "ana", 5, session=TAB1)
    with pytest.raises(StoreInputError):
        store.remove_object("a.jpg", "ana", True, session=TAB1)


@tinydb_only
def test_objects_stored_before_object_ids_get_ids_when_the_list_next_changes(store):
    store.claim("a.jpg", "ana")
    store.add_object("a.jpg", "ana", obj())
    # an object as the first version stored it: no object_id key
    doc_id = store.backend._doc_of["a.jpg"]

    def strip(doc):
        doc["objects"] = [{k: v for k, v in o.items() if k != "object_id"} for o in doc["objects"]]

    store.backend._images.update(strip, doc_ids=[doc_id])
    assert store.objects("a.jpg")[0].object_id == ""
    store.add_object("a.jpg", "ana", obj())
    ids = [o.object_id for o in store.objects("a.jpg")]
    assert all(ids) and len(set(ids)) == 2


# ---- complete(write=...) -------------------------------------------------------------------------


def test_complete_calls_write_with_the_stored_objects_then_marks_done(store):
    store.claim("a.jpg", "ana", session=TAB1)
    a = store.add_object("a.jpg", "ana", obj(), session=TAB1)
    b = store.add_object("a.jpg", "ana", obj(), session=TAB1)
    seen = []

    def write(objects):
        seen.append([o.object_id for o in objects])
        assert store.get("a.jpg").status == "in_progress"  # not done before the write returned

    rec = store.complete("a.jpg", "ana", 3.0, session=TAB1, write=write)
    assert seen == [[a.object_id, b.object_id]]
    assert (rec.status, rec.n_objects, rec.session) == ("done", 2, None)
    # a double click: unchanged, no second write
    store.complete("a.jpg", "ana", session=TAB1, write=write)
    assert len(seen) == 1


@tinydb_only
def test_a_write_callback_that_raises_leaves_the_store_unchanged(store):
    store.claim("a.jpg", "ana", session=TAB1)
    store.add_object("a.jpg", "ana", obj(), session=TAB1)
    before = (store.images(), store.objects(), store.events(), store.summary())
    disk_before = (store.path.read_bytes(), store.backend._storage.journal_path.read_bytes())

    def full_disk(objects):
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    with pytest.raises(OSError, match="No space left"):
        store.complete("a.jpg", "ana", 9.0, session=TAB1, write=full_disk)
    assert (store.images(), store.objects(), store.events(), store.summary()) == before
    assert (store.path.read_bytes(), store.backend._storage.journal_path.read_bytes()) == disk_before
    again = reopen(store)
    assert again.get("a.jpg").status == "in_progress" and again.images() == before[0]
    again.close()
    # and the same session can finish once the disk has room
    assert store.complete("a.jpg", "ana", session=TAB1, write=lambda objs: None).status == "done"


# ---- retries after a failed write ---------------------------------------------------------------


@tinydb_only  # PostgreSQL: the same in test_store_backends.py
def test_an_add_that_failed_on_a_full_disk_and_is_retried_stores_one_object(store, monkeypatch):
    import os

    from dextr_core.store import StoreWriteError

    store.claim("a.jpg", "ana", session=TAB1)
    oid = uuid.uuid4().hex

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StoreWriteError, match="not saved"):
        store.add_object("a.jpg", "ana", obj(object_id=oid), session=TAB1)
    monkeypatch.undo()
    assert store.objects("a.jpg") == []  # the failed add is not in memory either
    stored = store.add_object("a.jpg", "ana", obj(object_id=oid), session=TAB1)
    store.add_object("a.jpg", "ana", obj(object_id=oid), session=TAB1)  # a second retry
    assert [o.object_id for o in store.objects("a.jpg")] == [oid] and stored.index == 1
    assert [o.object_id for o in reopen(store).objects("a.jpg")] == [oid]


@tinydb_only  # PostgreSQL: the same in test_store_backends.py
def test_a_complete_whose_record_fails_after_the_write_is_not_done_and_can_be_retried(
    store, monkeypatch
):
    import os

    from dextr_core.store import StoreWriteError

    store.claim("a.jpg", "ana", session=TAB1)
    store.add_object("a.jpg", "ana", obj(), session=TAB1)
    writes = []
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    def write(objects):  # the mask file is written, then the disk fills up
        writes.append(len(objects))
        monkeypatch.setattr(os, "fsync", full)

    with pytest.raises(StoreWriteError):
        store.complete("a.jpg", "ana", session=TAB1, write=write)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert store.get("a.jpg").status == "in_progress"  # not done: the caller was told so
    assert reopen(store).get("a.jpg").status == "in_progress"
    rec = store.complete("a.jpg", "ana", session=TAB1, write=lambda objs: writes.append(len(objs)))
    assert rec.status == "done" and writes == [1, 1]  # the mask is written again from the store
