"""The journal engine's promises, with failures injected at each step of a write, and every
snapshot/journal combination on open: a call that raised changed nothing (memory == disk), a call
that returned is on disk, and nothing unexpected on open is overwritten."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import pytest
from projects import POINTS, write_photo

from dextr_core.store import ObjectRecord, ProgressStore, StoreCorruptError, StoreWriteError
from dextr_core.store import journal as store_storage
from dextr_core.store.journal import JournaledStorage, open_journaled_db


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device (simulated)")


@pytest.fixture
def source(tmp_path) -> Path:
    src = tmp_path / "images"
    for i in range(6):
        write_photo(src / f"img{i}.jpg")
    return src


def open_store(path: Path, source: Path, clock, **kw) -> ProgressStore:
    return ProgressStore(path, source, claim_timeout_s=600, clock=clock, **kw)


@pytest.fixture
def store(tmp_path, source, clock) -> ProgressStore:
    s = open_store(tmp_path / "progress.json", source, clock)
    s.sync()
    yield s
    s.close()


def files(s: ProgressStore) -> tuple[bytes, bytes]:
    return s.path.read_bytes(), s.backend._storage.journal_path.read_bytes()


def state(s: ProgressStore):
    return s.images(), s.objects(), [(e.action, e.image_id) for e in s.events()], s.summary()


def reopened_state(s: ProgressStore):
    again = open_store(s.path, s.source_dir, s.clock)
    try:
        return state(again)
    finally:
        again.close()


def do_one_image(s: ProgressStore, who: str = "ann") -> str:
    rec = s.claim_next(who)
    s.add_object(rec.id, who, ObjectRecord(points=POINTS))
    s.complete(rec.id, who, 1.0)
    return rec.id


# ---- a failing journal write: the call raises and nothing changed ------------------------------


@pytest.mark.parametrize("step", ["write", "fsync"])
def test_a_failing_journal_write_raises_and_leaves_memory_equal_to_disk(store, monkeypatch, step):
    done = do_one_image(store)
    before, disk = state(store), files(store)
    monkeypatch.setattr(os, step, enospc)
    with pytest.raises(StoreWriteError, match="No space left.*not saved") as err:
        store.claim_next("bob")
    monkeypatch.undo()
    assert str(store.path) in str(err.value)
    assert files(store) == disk  # nothing half-written
    assert state(store) == before  # memory == disk: the claim is not half-applied
    assert reopened_state(store) == before
    assert store.get(done).status == "done"
    assert store.claim_next("bob") is not None  # and the store goes on working


def test_a_journal_line_written_in_part_is_cut_off_again(store, monkeypatch):
    do_one_image(store)
    disk = files(store)
    real_write = os.write
    calls = []

    def half_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(StoreWriteError):
        store.claim_next("bob")
    monkeypatch.undo()
    assert len(calls) == 2 and files(store) == disk


def test_a_partial_line_that_cannot_be_cut_off_is_dropped_on_the_next_use(store, monkeypatch):
    first = do_one_image(store)
    real_write = os.write

    def half(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    monkeypatch.setattr(os, "write", half)
    monkeypatch.setattr(os, "ftruncate", enospc)
    with pytest.raises(StoreWriteError):
        store.claim_next("bob")
    monkeypatch.undo()
    # the next call reads the journal again and cuts the torn half line off before appending
    second = do_one_image(store, "bob")
    again = open_store(store.path, store.source_dir, store.clock)
    assert again.get(first).status == "done" and again.get(second).status == "done"
    assert again.summary()["by_status"]["in_progress"] == 0
    again.close()


def test_a_failing_bulk_snapshot_raises_and_changes_nothing(store, monkeypatch):
    before, disk = state(store), files(store)
    monkeypatch.setattr(os, "replace", enospc)
    with pytest.raises(StoreWriteError, match="No space left"):
        store.add_images((f"bulk/{i}.jpg", 10, 10) for i in range(store_storage.BULK_CHANGES + 5))
    monkeypatch.undo()
    assert files(store) == disk and state(store) == before and len(store) == 6
    assert not [p for p in store.path.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_transaction_that_raises_commits_nothing(tmp_path):
    storage = JournaledStorage(tmp_path / "db.json")
    db = open_journaled_db(storage)
    table = db.table("t", cache_size=0)
    table.insert({"a": 1})
    disk = (storage.path.read_bytes(), storage.journal_path.read_bytes())
    with pytest.raises(RuntimeError), storage.transaction():
        table.insert({"a": 2})
        raise RuntimeError("the caller's code failed halfway")
    assert [d["a"] for d in table.all()] == [1]  # dropped from memory
    assert (storage.path.read_bytes(), storage.journal_path.read_bytes()) == disk
    storage.close()


# ---- a failing compaction after the journal line: the call succeeds ------------------------------


def test_a_compaction_failing_after_the_fsynced_line_does_not_raise_and_is_retried(
    tmp_path, source, clock, monkeypatch, caplog
):
    s = open_store(tmp_path / "p.json", source, clock, compact_bytes=1)  # compact on every write
    s.sync()
    generation = s.backend._storage._generation
    monkeypatch.setattr(os, "replace", enospc)  # the snapshot's rename fails
    with caplog.at_level(logging.WARNING, logger="dextr_core.store.journal"):
        rec = s.claim_next("ann")  # the line is on disk: no error for the caller
    monkeypatch.undo()
    assert rec is not None and "compaction is tried again later" in caplog.text
    assert s.backend._storage._generation == generation  # not compacted
    assert open_store(s.path, source, clock).get(rec.id).annotator == "ann"  # persisted
    clock.advance(5)
    s.heartbeat(rec.id, "ann")  # the next write compacts
    assert s.backend._storage._generation == generation + 1
    assert open_store(s.path, source, clock).get(rec.id).status == "in_progress"
    s.close()


def test_a_compaction_whose_new_journal_fails_keeps_the_old_journal_valid(
    tmp_path, source, clock, monkeypatch, caplog
):
    s = open_store(tmp_path / "p.json", source, clock)
    s.sync()
    a = do_one_image(s)
    journal = s.backend._storage.journal_path
    real = store_storage.atomic_write

    def snapshot_only(path, data):
        if Path(path) == journal:
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        real(path, data)

    monkeypatch.setattr(store_storage, "atomic_write", snapshot_only)
    with caplog.at_level(logging.WARNING, logger="dextr_core.store.journal"):
        s.backend._storage.compact()  # the snapshot is renamed, the new journal fails
    monkeypatch.undo()
    assert "nothing is lost" in caplog.text
    b = do_one_image(s)  # appended to the old journal, after the part the snapshot covers
    snapshot = json.loads(s.path.read_bytes())
    header = json.loads(journal.read_bytes().split(b"\n")[0])
    assert header["generation"] == snapshot["generation"] - 1 == snapshot["covers"][0]
    assert journal.stat().st_size > snapshot["covers"][1]
    # another process sharing the store sees it all, and its own writes are kept too
    other = open_store(s.path, source, clock)
    assert {other.get(a).status, other.get(b).status} == {"done"}
    c = do_one_image(other, "bob")
    assert s.get(c).status == "done"
    expected = state(s)
    s.close()
    other.close()
    again = open_store(s.path, source, clock)
    assert state(again) == expected
    again.close()


def test_a_new_snapshot_written_by_another_process_is_noticed_before_appending(
    tmp_path, source, clock, monkeypatch
):
    one = open_store(tmp_path / "p.json", source, clock)
    one.sync()
    two = open_store(one.path, source, clock)
    journal = one.backend._storage.journal_path
    real = store_storage.atomic_write
    monkeypatch.setattr(store_storage, "atomic_write",
                        lambda p, d: enospc() if Path(p) == journal else real(p, d))
    big = [(f"bulk/{i}.jpg", 100, 100) for i in range(store_storage.BULK_CHANGES + 1)]
    two.add_images(big)  # a bulk write: a new snapshot only, the journal stays
    monkeypatch.undo()
    assert len(one) == len(two) == 6 + len(big)  # one re-read the new snapshot
    a = do_one_image(one)
    expected = state(one)
    one.close()
    two.close()
    again = open_store(one.path, source, clock)
    assert state(again) == expected and again.get(a).status == "done"
    again.close()


def test_a_compaction_interrupted_between_snapshot_and_journal_opens_with_everything(
    tmp_path, source, clock
):
    # The state a kill -9 between the two renames leaves: a new snapshot, the old journal.
    s = open_store(tmp_path / "p.json", source, clock)
    s.sync()
    a = do_one_image(s)
    with s.backend._storage.transaction():
        s.backend._storage._write_snapshot(s.backend._storage._store_id, s.backend._storage._generation + 1)
    b = do_one_image(s)  # appended to the old journal after the snapshot was written
    expected = state(s)
    s.close()
    again = open_store(s.path, source, clock)
    assert state(again) == expected
    assert again.get(a).status == again.get(b).status == "done"
    again.close()


# ---- every snapshot/journal combination on open ----------------------------------------------


def closed_store(tmp_path, source, clock) -> ProgressStore:
    s = open_store(tmp_path / "p.json", source, clock)
    s.sync()
    do_one_image(s)
    s.claim_next("bob")
    s.close()
    return s


def assert_refused_and_untouched(s: ProgressStore, damaged: Path, match: str) -> None:
    journal = s.backend._storage.journal_path
    before = {p: p.read_bytes() for p in (s.path, journal) if p.exists()}
    listing = sorted(p.name for p in s.path.parent.iterdir())
    with pytest.raises(StoreCorruptError, match=match) as err:
        open_store(s.path, s.source_dir, s.clock)
    message = str(err.value)
    assert err.value.path == damaged
    assert str(s.path) in message and str(journal) in message  # names both files
    assert "kept aside" in message  # and what recovery would do
    assert {p: p.read_bytes() for p in before} == before  # nothing overwritten
    assert sorted(p.name for p in s.path.parent.iterdir()) == listing  # nothing created/moved


def test_a_journal_without_its_snapshot_is_refused(tmp_path, source, clock):
    s = closed_store(tmp_path, source, clock)
    s.path.unlink()
    assert_refused_and_untouched(s, s.backend._storage.journal_path, "snapshot .* is missing")


def test_an_unreadable_journal_header_is_refused(tmp_path, source, clock):
    s = closed_store(tmp_path, source, clock)
    journal = s.backend._storage.journal_path
    lines = journal.read_bytes().split(b"\n")
    journal.write_bytes(b"\n".join([b"\x00\x00garbage"] + lines[1:]))
    assert_refused_and_untouched(s, journal, "header .* cannot be read")


def test_an_empty_journal_is_refused(tmp_path, source, clock):
    s = closed_store(tmp_path, source, clock)
    s.backend._storage.journal_path.write_bytes(b"")
    assert_refused_and_untouched(s, s.backend._storage.journal_path, "header .* cannot be read")


def test_a_journal_of_another_store_is_refused(tmp_path, source, clock):
    s = closed_store(tmp_path, source, clock)
    journal = s.backend._storage.journal_path
    lines = journal.read_bytes().split(b"\n")
    header = json.loads(lines[0])
    header["store"] = "0" * 32
    journal.write_bytes(b"\n".join([json.dumps(header).encode()] + lines[1:]))
    assert_refused_and_untouched(s, journal, "belongs to another store")


@pytest.mark.parametrize("journal_generation, covers, match", [
    (1, None, "continues generation 1"),  # journal ahead of the snapshot
    (0, None, "does not continue from"),  # snapshot ahead, not saying it covers this journal
    (0, [1, 60], "does not continue from"),  # covers another generation
    (1, [1, 10], "does not continue from"),  # two generations behind
])
def test_a_generation_mismatch_is_refused(tmp_path, source, clock, journal_generation, covers, match):
    s = closed_store(tmp_path, source, clock)
    journal = s.backend._storage.journal_path
    snapshot = json.loads(s.path.read_bytes())
    snapshot["generation"] = 0 if match.startswith("continues") else 3 - (covers == [1, 10])
    snapshot["covers"] = covers
    s.path.write_text(json.dumps(snapshot))
    lines = journal.read_bytes().split(b"\n")
    header = json.loads(lines[0])
    header["generation"] = journal_generation
    journal.write_bytes(b"\n".join([json.dumps(header).encode()] + lines[1:]))
    assert_refused_and_untouched(s, journal, match)


def test_a_journal_shorter_than_the_snapshot_covers_is_refused(tmp_path, source, clock):
    s = closed_store(tmp_path, source, clock)
    journal = s.backend._storage.journal_path
    snapshot = json.loads(s.path.read_bytes())
    snapshot["generation"] += 1
    snapshot["covers"] = [snapshot["generation"] - 1, journal.stat().st_size + 100]
    s.path.write_text(json.dumps(snapshot))
    assert_refused_and_untouched(s, journal, "shorter than")


def _edit_snapshot(s: ProgressStore, edit) -> None:
    compacting = open_store(s.path, s.source_dir, s.clock)
    compacting.backend._storage.compact()  # every record in the snapshot
    compacting.close()
    snapshot = json.loads(s.path.read_bytes())
    edit(snapshot["tables"])
    s.path.write_text(json.dumps(snapshot))


def test_an_image_record_without_status_in_the_snapshot_is_refused(tmp_path, source, clock):
    s = closed_store(tmp_path, source, clock)
    _edit_snapshot(s, lambda t: t["images"]["3"].pop("status"))
    assert_refused_and_untouched(s, s.path, "record 3 of table 'images' .* has status None")


def test_a_record_that_is_a_string_is_refused(tmp_path, source, clock):
    s = closed_store(tmp_path, source, clock)
    _edit_snapshot(s, lambda t: t["images"].__setitem__("2", "img1.jpg"))
    assert_refused_and_untouched(s, s.path, "record 2 of table 'images' is a str")


def test_an_event_without_a_time_is_refused(tmp_path, source, clock):
    s = closed_store(tmp_path, source, clock)
    _edit_snapshot(s, lambda t: t["events"]["1"].pop("time"))
    assert_refused_and_untouched(s, s.path, "event without a time")


def _append_journal(s: ProgressStore, *lines: bytes) -> None:
    journal = s.backend._storage.journal_path
    journal.write_bytes(journal.read_bytes() + b"".join(line + b"\n" for line in lines))


def _without(doc: dict, key: str) -> dict:
    return {k: v for k, v in doc.items() if k != key}


# Each rule of records._document_problem, on an image never worked on (doc 3: checked inline
# while the indexes are built), on a finished image (doc 1) and on an event.
MALFORMED = {
    "image without id": (lambda t: ("images", "3", _without(t["images"]["3"], "id")),
                         "without an 'id'"),
    "image with an empty id": (lambda t: ("images", "3", dict(t["images"]["3"], id="")),
                               "without an 'id'"),
    "image with a number as id": (lambda t: ("images", "3", dict(t["images"]["3"], id=7)),
                                  "without an 'id'"),
    "todo image with an unknown status": (
        lambda t: ("images", "3", dict(t["images"]["3"], status="finished")),
        "has status 'finished'"),
    "done image with an unknown status": (
        lambda t: ("images", "1", dict(t["images"]["1"], status="finished")),
        "has status 'finished'"),
    "image with a text id key": (lambda t: ("images", "x3", t["images"]["3"]),
                                 "has the id 'x3', not a number"),
    "image with objects not a list": (
        lambda t: ("images", "1", dict(t["images"]["1"], objects="img0.jpg")),
        "objects that are not a list"),
    "image with an object not a document": (
        lambda t: ("images", "1", dict(t["images"]["1"], objects=[5])),
        "objects that are not a list"),
    "todo image with objects not a list": (
        lambda t: ("images", "3", dict(t["images"]["3"], objects={})),
        "objects that are not a list"),
    "image with an object whose stroke has no width": (
        lambda t: ("images", "1", dict(t["images"]["1"], objects=[
            {"index": 1, "strokes": [{"mode": "paint", "points": [[1, 1]]}]}])),
        "bad stroke: stroke width None"),
    "image with an object whose strokes are not a list": (
        lambda t: ("images", "1", dict(t["images"]["1"], objects=[{"index": 1, "strokes": 7}])),
        "strokes are not a list"),
    "image with an object whose cut has no counts": (
        lambda t: ("images", "1", dict(t["images"]["1"], objects=[
            {"index": 1, "cuts": [{"by": "x", "after": 0, "size": [3, 4]}]}])),
        "bad cut: cut counts None"),
    "image with an object whose cuts are not a list": (
        lambda t: ("images", "1", dict(t["images"]["1"], objects=[{"index": 1, "cuts": "x"}])),
        "cuts are not a list"),
    "image with seconds as text": (lambda t: ("images", "1", dict(t["images"]["1"], seconds="9")),
                                   "seconds '9', not a number"),
    "image with a fraction of objects": (
        lambda t: ("images", "1", dict(t["images"]["1"], n_objects=1.5)),
        "n_objects 1.5, not a whole number"),
    "event without a time": (lambda t: ("events", "1", _without(t["events"]["1"], "time")),
                             "event without a time"),
    "event with true as time": (lambda t: ("events", "1", dict(t["events"]["1"], time=True)),
                                "event without a time"),
    "event without an action": (lambda t: ("events", "2", _without(t["events"]["2"], "action")),
                                "event without an action"),
    "event with a text id key": (lambda t: ("events", "e2", t["events"]["2"]),
                                 "has the id 'e2', not a number"),
    "record that is a list": (lambda t: ("images", "3", ["img2.jpg"]), "is a list"),
}


@pytest.mark.parametrize("where", ["snapshot", "journal line"])
@pytest.mark.parametrize("kind", MALFORMED)
def test_each_kind_of_malformed_record_is_refused_in_the_snapshot_and_in_a_journal_line(
    tmp_path, source, clock, kind, where
):
    s = closed_store(tmp_path, source, clock)
    make, match = MALFORMED[kind]
    if where == "snapshot":
        _edit_snapshot(s, lambda t: t[make(t)[0]].__setitem__(*make(t)[1:]))
        assert_refused_and_untouched(s, s.path, match)
    else:
        _edit_snapshot(s, lambda t: None)  # every record in the snapshot, to build the line from
        table, doc_id, doc = make(json.loads(s.path.read_bytes())["tables"])
        _append_journal(s, json.dumps({"c": [[table, doc_id, doc]]}).encode())
        assert_refused_and_untouched(s, s.backend._storage.journal_path, match)


def test_a_malformed_snapshot_record_is_refused_even_when_a_journal_line_replaces_it(
    tmp_path, source, clock
):
    s = closed_store(tmp_path, source, clock)
    _edit_snapshot(s, lambda t: t["images"]["3"].pop("status"))
    good = json.loads(s.path.read_bytes())["tables"]["images"]["3"]
    _append_journal(s, json.dumps({"c": [["images", "3", dict(good, status="todo")]]}).encode())
    assert_refused_and_untouched(s, s.path, "record 3 of table 'images' .* has status None")


def test_the_indexes_built_on_open_equal_the_ones_kept_up_to_date_call_by_call(
    tmp_path, source, clock
):
    s = open_store(tmp_path / "p.json", source, clock)
    s.sync()
    done = do_one_image(s)
    skipped = s.claim_next("bob").id
    s.skip(skipped, "bob", "blurred")
    reopened = do_one_image(s, "cem")
    s.mark_unreadable(s.claim_next("dia").id, "truncated file")
    held = s.claim_next("eve").id
    (source / held).unlink()
    s.sync()  # the held image is missing now
    s.claim_next("fay")
    s.reopen(reopened, "lead")  # todo again, with its objects, seconds and a note
    assert s.get(done).status == "done" and s.get(reopened).status == "todo"

    def indexes(store: ProgressStore):
        return (store.summary(), {st: store.image_ids(st) for st in (None, "todo", "done")},
                [(e.action, e.image_id) for e in store.events()], store.events(since=5.0))

    expected = indexes(s)
    again = open_store(s.path, source, clock)
    assert indexes(again) == expected
    assert [getattr(again.claim_next(who), "id", None) for who in ("gus", "hal")] == [reopened, None]
    again.close()
    s.close()



@pytest.mark.parametrize("line, match", [
    (b'{"c": 5}', 'has "c": 5, not a list'),
    (b'"just a string"', "is not a journal entry"),
    (b'{"c": [["images", "1", "img0.jpg"]]}', "is a str"),
    (b'{"c": [["images", "1", {"id": "img0.jpg"}]]}', "has status None"),
    (b'{"c": [["images", "1"]]}', "not \\[table, doc_id, document\\]"),
])
@pytest.mark.parametrize("last", [True, False], ids=["last-line", "middle-line"])
def test_a_malformed_journal_line_is_refused_even_as_the_last_line(
    tmp_path, source, clock, line, match, last
):
    s = closed_store(tmp_path, source, clock)
    good = b'{"c": [["images", "1", {"id": "img0.jpg", "status": "todo"}]]}'
    _append_journal(s, line) if last else _append_journal(s, line, good)
    assert_refused_and_untouched(s, s.backend._storage.journal_path, match)


def test_a_malformed_line_written_by_another_process_is_refused_not_applied(
    tmp_path, source, clock
):
    s = open_store(tmp_path / "p.json", source, clock)
    s.sync()
    _append_journal(s, b'{"c": [["images", "1", {"id": "img0.jpg"}]]}')
    with pytest.raises(StoreCorruptError, match="has status None"):
        s.claim_next("ann")
    with pytest.raises(StoreCorruptError):  # and stays refused: memory is not half caught up
        s.summary()
    s.close()


def test_a_snapshot_without_a_journal_opens_and_gets_a_new_journal(tmp_path, source, clock):
    s = closed_store(tmp_path, source, clock)
    with s.backend._storage.transaction():
        s.backend._storage.compact()
    expected = reopened_state(s)
    s.backend._storage.journal_path.unlink()
    again = open_store(s.path, source, clock)
    assert state(again) == expected and s.backend._storage.journal_path.exists()
    again.close()


def test_a_first_version_snapshot_one_generation_ahead_of_its_journal_opens(tmp_path, source, clock):
    # How the first version compacted: snapshot (no "covers") renamed, killed before the journal.
    s = closed_store(tmp_path, source, clock)
    expected = reopened_state(s)
    again = open_store(s.path, source, clock)
    with again.backend._storage.transaction():
        again.backend._storage.compact()
    again.close()
    snapshot = json.loads(s.path.read_bytes())
    del snapshot["covers"]
    s.path.write_text(json.dumps(snapshot))
    journal = s.backend._storage.journal_path
    lines = journal.read_bytes().split(b"\n")
    header = json.loads(lines[0])
    header["generation"] -= 1
    journal.write_bytes(json.dumps(header).encode() + b"\n")
    again = open_store(s.path, source, clock)
    assert state(again) == expected
    again.close()


# ---- recovery keeps every old byte ---------------------------------------------------------------


def test_recovery_keeps_the_snapshot_and_the_journal_aside_before_starting_fresh(
    tmp_path, source, clock
):
    s = closed_store(tmp_path, source, clock)
    journal = s.backend._storage.journal_path
    _append_journal(s, b'{"c": 5}')
    old = {s.path.name: s.path.read_bytes(), journal.name: journal.read_bytes()}
    fresh = open_store(s.path, source, clock, recover_corrupt=True)
    kept = {p.name.rsplit(".corrupt-", 1)[0]: p.read_bytes() for p in fresh.recovered_files}
    assert kept == old  # every old byte, both files
    assert fresh.recovered_from == fresh.recovered_files[0]
    assert len(fresh) == 0 and fresh.sync().added
    fresh.close()


def test_recovery_of_a_journal_without_its_snapshot_keeps_the_journal(tmp_path, source, clock):
    s = closed_store(tmp_path, source, clock)
    journal = s.backend._storage.journal_path
    s.path.unlink()
    old = journal.read_bytes()
    fresh = open_store(s.path, source, clock, recover_corrupt=True)
    assert [p.read_bytes() for p in fresh.recovered_files] == [old]
    assert fresh.recovered_from.name.startswith(journal.name + ".corrupt-")
    fresh.close()


# ---- reset ---------------------------------------------------------------------------------------


def test_a_reset_keeps_the_old_journal_too_and_the_backup_opens_by_itself(store, source, clock):
    do_one_image(store)
    expected = state(store)
    journal = store.backend._storage.journal_path
    backup = store.reset()
    assert [p.name for p in store.path.parent.glob(store.path.name + ".backup-*")] == [backup.name]
    kept = list(store.path.parent.glob(journal.name + ".backup-*"))
    assert len(kept) == 1 and json.loads(kept[0].read_bytes())["generation"] >= 1
    old = open_store(backup, source, clock)
    assert state(old) == expected
    old.close()
    assert len(store) == 0


# os.replace calls of a reset: 1 the compaction's snapshot, 2 its journal, 3 moving the journal
# aside, 4 moving the snapshot aside, 5 the new snapshot, 6 the new journal.
@pytest.mark.parametrize("fail_at, outcome", [
    (1, "Nothing was reset"), (2, None), (3, "Nothing was reset"), (4, "Nothing was reset"),
    (5, "The old store is kept as"), (6, "The old store is kept as"),
])
def test_a_reset_that_fails_says_what_is_on_disk_and_loses_nothing(store, source, clock,
                                                                    monkeypatch, fail_at, outcome):
    done = do_one_image(store)
    expected = state(store)
    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == fail_at:
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    if outcome is None:  # a compaction whose journal failed is no failure: the reset goes on
        backup = store.reset()
    else:
        with pytest.raises(StoreWriteError, match=f"Could not reset.*{outcome}"):
            store.reset()
    monkeypatch.undo()
    backups = list(store.path.parent.glob(store.path.name + ".backup-*"))
    if outcome == "Nothing was reset":
        assert state(store) == expected and reopened_state(store) == expected
    else:  # reset happened (perhaps without its meta): the old store opens from its backup
        assert len(store) == 0 and len(backups) == 1
        backup = backups[0]
        old = open_store(backup, source, clock)
        assert old.get(done).status == "done" and state(old) == expected
        old.close()
        assert reopened_state(store)[0] == []


def test_an_opened_store_reads_its_files_once_not_on_every_call(store, source, clock):
    again = open_store(store.path, source, clock)
    loads = []
    real = again.backend._storage._load
    again.backend._storage._load = lambda: (loads.append(1), real())[1]
    for _ in range(3):
        do_one_image(again)
    assert loads == []
    store.claim_next("bob")  # another instance's journal line: caught up, not reloaded
    assert again.summary()["by_status"]["in_progress"] == 1 and loads == []
    again.close()


KILLED_IN_COMPACTION = """
import os, signal, sys
from dextr_core.store import ObjectRecord, ProgressStore, journal
store = ProgressStore(sys.argv[1], sys.argv[1] + ".src", compact_bytes=int(sys.argv[2]))
real = journal.JournaledStorage._write_journal
def killed(self, store_id, generation, after):
    if after is not None:  # a compaction: its snapshot is renamed, the new journal never comes
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, store_id, generation, after)
journal.JournaledStorage._write_journal = killed
while (rec := store.claim_next("writer")) is not None:
    store.add_object(rec.id, "writer", ObjectRecord(points=[[1, 1], [9, 1], [5, 0], [5, 9]]))
    print(store.complete(rec.id, "writer", 1.0).id, flush=True)
"""


def test_a_process_killed_between_the_compactions_two_writes_loses_nothing(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "p.json"
    s = ProgressStore(path, tmp_path / "none")
    s.add_images((f"img{i:03d}.jpg", 10, 10) for i in range(60))
    s.backend._storage.compact()  # an empty journal: the writer compacts after a few images
    s.close()
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", KILLED_IN_COMPACTION, str(path), "3000"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == -9
    acknowledged = out.stdout.split()
    assert acknowledged  # it got some work done before the compaction
    snapshot = json.loads(path.read_bytes())
    header = json.loads(Path(str(path) + ".journal").read_bytes().split(b"\n")[0])
    assert header["generation"] == snapshot["covers"][0] == snapshot["generation"] - 1
    again = ProgressStore(path, tmp_path / "none")  # opens: no corruption
    assert {again.get(i).status for i in acknowledged} == {"done"}
    # and goes on: the next compaction brings snapshot and journal together again
    again.compact_bytes = 1
    again.backend._storage._compact_at = 1
    rec = again.claim_next("next")
    again.complete(rec.id, "next")
    header = json.loads(Path(str(path) + ".journal").read_bytes().split(b"\n")[0])
    assert header["generation"] == json.loads(path.read_bytes())["generation"]
    again.close()
    final = ProgressStore(path, tmp_path / "none")
    assert {final.get(i).status for i in [*acknowledged, rec.id]} == {"done"}
    final.close()
