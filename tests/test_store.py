"""The progress store: records, claims, objects, events, sync, legacy import, reset, corruption,
reconcile, and the journaled TinyDB storage underneath."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from pg_server import tinydb_only
from projects import POINTS, write_photo, write_photos
from tinydb import Query

from dextr_core.masks import mask_path, save_label_map
from dextr_core.store import (
    ClaimError,
    ObjectRecord,
    ProgressStore,
    StoreCorruptError,
    StoreInputError,
    open_store,
)
from dextr_core.store.journal import JournaledStorage, open_journaled_db
from dextr_core.strokes import Stroke


@pytest.fixture
def source(tmp_path) -> Path:
    src = tmp_path / "images"
    write_photos(src, ["a.jpg", "b.PNG", "c.jpeg", "sub/d.JPG", "sub/deeper/e.tif", "f.webp"])
    write_photo(src / "wide.png", (64, 20))
    return src


@pytest.fixture
def store(store_location, source, clock) -> ProgressStore:
    s = open_store(store_location, source, claim_timeout_s=600, clock=clock)
    s.sync()
    yield s
    s.close()


def reopen(s: ProgressStore, **kwargs) -> ProgressStore:
    return open_store(getattr(s, "url", s.path), s.source_dir, claim_timeout_s=s.claim_timeout_s,
                      clock=s.clock, **kwargs)


# ---- sync ----------------------------------------------------------------------------------------


def test_sync_scans_recursively_any_case_and_ignores_hidden_and_other_files(tmp_path, store_location, source):
    write_photo(source / ".hidden.jpg")
    write_photo(source / ".drafts" / "x.png")
    (source / "notes.txt").write_text("not an image")
    (source / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    s = open_store(store_location, source)
    report = s.sync()
    expected = sorted(["a.jpg", "b.PNG", "c.jpeg", "sub/d.JPG", "sub/deeper/e.tif", "f.webp",
                       "wide.png", "broken.jpg"])
    assert sorted(report.added) == expected
    assert [r.id for r in s.images()] == expected == s.image_ids()
    assert s.image_ids("unreadable") == ["broken.jpg"] == [r.id for r in s.images("unreadable")]
    assert report.unreadable == ["broken.jpg"]
    broken = s.get("broken.jpg")
    assert broken.status == "unreadable" and "broken.jpg" in broken.error
    wide = s.get("wide.png")
    assert (wide.width, wide.height, wide.status) == (64, 20, "todo")
    assert s.sync().added == []  # nothing new the second time


def test_sync_excludes_destination_inside_source(tmp_path, store_location, source):
    write_photo(source / "masks" / "a_mask.png")
    s = open_store(store_location, source, exclude_dirs=[source / "masks"])
    assert not any(i.startswith("masks/") for i in s.sync().added)


def test_sync_picks_up_new_and_flags_vanished_images(store, source):
    write_photo(source / "new.jpg")
    rec = store.claim("c.jpeg", "ann")
    assert rec.status == "in_progress"
    (source / "c.jpeg").unlink()
    (source / "a.jpg").unlink()
    report = store.sync()
    assert report.added == ["new.jpg"]
    assert report.vanished == ["a.jpg", "c.jpeg"]
    assert any("vanished" in line for line in report.lines())
    gone = store.get("c.jpeg")
    assert gone.missing and gone.status == "in_progress"  # status kept
    assert store.summary()["missing"] == 2
    handed = {store.claim_next(f"w{i}").id for i in range(6)}
    assert "a.jpg" not in handed and "c.jpeg" not in handed and "new.jpg" in handed
    write_photo(source / "a.jpg")
    assert store.sync().reappeared == ["a.jpg"]
    assert not store.get("a.jpg").missing


def test_missing_source_folder_is_a_clear_error(tmp_path, store_location):
    s = open_store(store_location, tmp_path / "nowhere")
    with pytest.raises(StoreInputError, match="required.source"):
        s.sync()


# ---- claims --------------------------------------------------------------------------------------


def test_claim_next_hands_out_sorted_ids_own_image_first_and_none_at_the_end(store):
    ids = [r.id for r in store.images()]
    first = store.claim_next("ann")
    assert first.id == ids[0] and first.annotator == "ann" and first.status == "in_progress"
    assert store.claim_next("ann").id == first.id  # own in-progress image again
    second = store.claim_next("bob")
    assert second.id == ids[1]
    store.complete(first.id, "ann")
    assert store.claim_next("ann").id == ids[2]
    got = set()
    while (rec := store.claim_next("cem")) is not None:
        got.add(rec.id)
        store.complete(rec.id, "cem")
    assert got == set(ids[3:])


def test_claim_of_held_image_names_holder_and_time(store, clock):
    store.claim("b.PNG", "ann")
    with pytest.raises(ClaimError) as err:
        store.claim("b.PNG", "bob")
    assert "ann" in str(err.value) and "UTC" in str(err.value) and "b.PNG" in str(err.value)
    with pytest.raises(ClaimError):
        store.complete("b.PNG", "bob")


def test_claim_lapses_without_heartbeat_and_comes_back(store, clock):
    first = store.claim_next("ann")
    clock.advance(500)
    store.heartbeat(first.id, "ann")  # keeps it
    clock.advance(500)
    with pytest.raises(ClaimError):
        store.claim(first.id, "bob")
    clock.advance(200)  # 700 s since the heartbeat > 600 s timeout
    taken = store.claim_next("bob")
    assert taken.id == first.id and taken.annotator == "bob"
    with pytest.raises(ClaimError, match="do not hold"):
        store.heartbeat(first.id, "ann")
    with pytest.raises(ClaimError):
        store.add_object(first.id, "ann", ObjectRecord(points=POINTS))
    claimed = [e for e in store.events() if e.action == "claimed" and e.image_id == first.id]
    assert claimed[-1].detail == {"from": "ann"}


def test_add_remove_objects_and_complete_counts_them(store, clock):
    rec = store.claim_next("ann")
    for label in ("cat", "dog", "cup"):
        clock.advance(1)
        store.add_object(rec.id, "ann", ObjectRecord(label=label, points=POINTS, engine="DEXTR",
                                                     seconds=3.0))
    store.remove_object(rec.id, "ann", 2)
    objs = store.objects(rec.id)
    assert [(o.index, o.label) for o in objs] == [(1, "cat"), (2, "cup")]
    assert objs[0].points == [[1.0, 5.0], [30.0, 6.0], [15.0, 1.0], [16.0, 25.0]]
    assert objs[0].annotator == "ann" and objs[0].engine == "DEXTR" and objs[0].image_id == rec.id
    done = store.complete(rec.id, "ann", seconds=20.0)
    assert done.status == "done" and done.n_objects == 2 and done.seconds == 20.0
    assert done.completed_at == clock.t
    assert store.complete(rec.id, "ann").n_objects == 2  # double click: unchanged
    with pytest.raises(ClaimError):
        store.add_object(rec.id, "ann", ObjectRecord(points=POINTS))  # done: claim it first


def test_bad_object_input_is_refused_with_a_clear_message(store):
    rec = store.claim("wide.png", "ann")  # 64 x 20
    with pytest.raises(StoreInputError, match="outside"):
        store.add_object(rec.id, "ann", ObjectRecord(points=[[1, 1], [70, 5], [3, 3], [4, 4]]))
    with pytest.raises(StoreInputError, match="at least 4"):
        store.add_object(rec.id, "ann", ObjectRecord(points=[[1, 1], [2, 2]]))
    with pytest.raises(StoreInputError):
        store.add_object(rec.id, "ann", ObjectRecord(points=[[1, "x"], [2, 2], [3, 3], [4, 4]]))
    with pytest.raises(StoreInputError, match="no object 3"):
        store.remove_object(rec.id, "ann", 3)
    with pytest.raises(StoreInputError, match="No image"):
        store.claim("nope.jpg", "ann")
    with pytest.raises(StoreInputError, match="name is empty"):
        store.claim_next("  ")
    with pytest.raises(StoreInputError):
        store.complete(rec.id, "ann", seconds=-1)
    assert store.objects(rec.id) == []


def test_skip_release_and_reopen(store, clock):
    a = store.claim_next("ann")
    store.add_object(a.id, "ann", ObjectRecord(points=POINTS))
    store.release(a.id, "ann")
    assert store.get(a.id).status == "todo" and store.get(a.id).annotator is None
    assert len(store.objects(a.id)) == 1  # objects kept

    b = store.claim("c.jpeg", "bob")
    store.skip(b.id, "bob", reason="blurred")
    rec = store.get(b.id)
    assert rec.status == "skipped" and rec.annotator == "bob" and rec.note == "blurred"

    store.claim(a.id, "ann")
    store.complete(a.id, "ann", 10)
    store.reopen(a.id, "lead")
    store.reopen(b.id, "lead")
    ra, rb = store.get(a.id), store.get(b.id)
    assert (ra.status, rb.status) == ("todo", "todo")
    assert ra.annotator is None and ra.completed_at is None and "lead" in ra.note
    assert len(store.objects(a.id)) == 1  # a correction starts from the kept objects
    actions = [e.action for e in store.events()]
    for action in ("released", "skipped", "completed", "reopened"):
        assert action in actions


def test_claiming_a_done_image_to_correct_it_falls_back_to_done(store, clock):
    rec = store.claim_next("ann")
    store.add_object(rec.id, "ann", ObjectRecord(points=POINTS))
    store.complete(rec.id, "ann", 8)
    again = store.claim(rec.id, "bob")
    assert again.status == "in_progress" and again.annotator == "bob"
    store.release(rec.id, "bob")
    back = store.get(rec.id)
    assert back.status == "done" and back.annotator == "ann" and back.n_objects == 1
    store.claim(rec.id, "bob")
    clock.advance(601)  # bob leaves it: the claim lapses, it is done again, not handed out
    nxt = store.claim_next("cem")
    assert nxt.id != rec.id and store.get(rec.id).status == "done"


def test_unreadable_images_are_not_handed_out(store):
    store.mark_unreadable("a.jpg", "truncated JPEG")
    assert store.get("a.jpg").status == "unreadable"
    assert store.claim_next("ann").id != "a.jpg"
    with pytest.raises(StoreInputError, match="truncated JPEG"):
        store.claim("a.jpg", "ann")
    store.reopen("a.jpg", "lead")
    assert store.get("a.jpg").status == "todo" and store.get("a.jpg").error is None


# ---- events and summary --------------------------------------------------------------------------


def test_events_log_since_and_limit(store, clock):
    t0 = clock.t
    rec = store.claim_next("ann")
    clock.advance(10)
    store.add_object(rec.id, "ann", ObjectRecord(points=POINTS, label="cat"))
    clock.advance(10)
    store.complete(rec.id, "ann", 20)
    events = store.events(since=t0 - 1)
    assert [e.action for e in events][-3:] == ["claimed", "object_added", "completed"]
    assert events[-2].detail == {"index": 1, "label": "cat"} and events[-2].annotator == "ann"
    assert [e.action for e in store.events(since=t0 + 5)] == ["object_added", "completed"]
    assert [e.action for e in store.events(limit=1)] == ["completed"]
    assert [e.time for e in store.events(limit=2)] == [t0 + 10, t0 + 20]


def test_summary_counts_and_per_annotator_stats(store, clock):
    def do(who, n_objects, seconds):
        rec = store.claim_next(who)
        for _ in range(n_objects):
            store.add_object(rec.id, who, ObjectRecord(points=POINTS))
        clock.advance(1)
        store.complete(rec.id, who, seconds)

    do("ann", 2, 20.0)   # 10 s per object
    do("ann", 1, 30.0)   # 30
    do("ann", 4, 8.0)    # 2
    do("bob", 1, 5.0)
    skipped = store.claim_next("bob")
    store.skip(skipped.id, "bob")
    held = store.claim_next("cem")
    s = store.summary()
    assert s["by_status"] == {"todo": 1, "in_progress": 1, "done": 4, "skipped": 1,
                              "unreadable": 0}
    assert s["total"] == 7 and s["missing"] == 0
    assert s["objects"] == 8 and s["seconds"] == 63.0
    ann = s["annotators"]["ann"]
    assert (ann["done"], ann["objects"], ann["seconds"]) == (3, 7, 58.0)
    assert ann["median_seconds_per_object"] == 10.0
    assert ann["last_activity"] == max(e.time for e in store.events() if e.annotator == "ann")
    assert s["annotators"]["bob"]["skipped"] == 1
    assert s["claims"] == [{"image_id": held.id, "annotator": "cem",
                            "claimed_at": clock.t, "lapsed": False}]
    # the incremental figures equal the ones rebuilt from disk
    again = reopen(store)
    assert again.summary() == s


def test_everything_persists_across_reopen(store, clock):
    rec = store.claim_next("ann")
    store.add_object(rec.id, "ann", ObjectRecord(label="cat", points=POINTS))
    store.complete(rec.id, "ann", 5)
    other = store.claim_next("bob")
    again = reopen(store)
    assert again.images() == store.images()
    assert again.objects() == store.objects()
    assert again.events() == store.events()
    assert again.get(other.id).annotator == "bob"
    with pytest.raises(ClaimError):
        again.claim(other.id, "cem")


# ---- legacy import, reset ------------------------------------------------------------------------


def test_anno_prog_is_imported_once(tmp_path, store_location, source):
    (source / ".anno_prog").write_text(
        "a.jpg: yes\nb.PNG: no\nc.jpeg: skip\nd.JPG: True\nf.webp: False\nghost.jpg: yes\n"
        "wide.png: maybe\n"
    )
    s = open_store(store_location, source)
    report = s.sync()
    assert report.legacy_imported == {"done": 2, "skipped": 1, "todo": 2}
    assert report.legacy_file == source / ".anno_prog"
    text = " ".join(report.lines())
    assert "ghost.jpg" in text and "maybe" in text
    assert s.get("a.jpg").status == "done"
    assert s.get("sub/d.JPG").status == "done"  # matched by file name
    assert s.get("c.jpeg").status == "skipped"
    assert s.get("b.PNG").status == "todo" and s.get("f.webp").status == "todo"
    s.reopen("a.jpg", "lead")
    (source / ".anno_prog").write_text("a.jpg: yes\nb.PNG: yes\n")
    second = s.sync()
    assert second.legacy_imported is None
    assert s.get("a.jpg").status == "todo" and s.get("b.PNG").status == "todo"


def test_broken_anno_prog_is_reported_not_fatal(tmp_path, store_location, source):
    (source / ".anno_prog").write_text("a.jpg: [unclosed\n")
    s = open_store(store_location, source)
    report = s.sync()
    assert report.legacy_imported is None
    assert any(".anno_prog" in m and "not imported" in m for m in report.messages)
    (source / ".anno_prog").write_text("a.jpg: yes\n")
    assert s.sync().legacy_imported == {"done": 1}  # fixed file: imported on the next sync


@tinydb_only
def test_reset_backs_up_and_starts_over(store, source, clock):
    rec = store.claim_next("ann")
    store.complete(rec.id, "ann", 3)
    before = store.images()
    (source / ".anno_prog").write_text("b.PNG: yes\n")
    backup = store.reset()
    assert backup.exists() and backup.parent == store.path.parent
    assert backup.name.startswith("progress.json.backup-")
    assert len(store) == 0 and store.summary()["total"] == 0
    assert [e.action for e in store.events()] == ["reset"]
    report = store.sync()
    assert len(report.added) == len(before) and report.legacy_imported is None
    assert all(r.status == "todo" for r in store.images())
    old = ProgressStore(backup, source)
    assert old.images() == before
    assert reopen(store).images() == store.images()


# ---- corruption ----------------------------------------------------------------------------------


@tinydb_only
def test_corrupt_store_raises_with_path_and_leaves_the_file(store):
    store.claim_next("ann")
    store.close()
    store.backend._storage.close()
    bad = b'{"format": "dextr-progress-store", "tables": {trunc'
    store.path.write_bytes(bad)
    with pytest.raises(StoreCorruptError) as err:
        reopen(store)
    assert str(store.path) in str(err.value) and err.value.path == store.path
    assert store.path.read_bytes() == bad
    assert not list(store.path.parent.glob("*.corrupt-*"))
    fresh = reopen(store, recover_corrupt=True)
    assert fresh.recovered_from is not None and fresh.recovered_from.read_bytes() == bad
    assert len(fresh) == 0 and fresh.sync().added


def test_foreign_json_is_not_taken_for_a_store(tmp_path, source):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"_default": {"1": {"a": 1}}}))
    with pytest.raises(StoreCorruptError, match="not a DEXTR progress store"):
        ProgressStore(path, source)


@tinydb_only
def test_damaged_journal_middle_line_is_corrupt_but_torn_tail_is_dropped(store, clock):
    a = store.claim_next("ann")
    store.complete(a.id, "ann")
    b = store.claim_next("ann")
    store.complete(b.id, "ann")
    journal = store.backend._storage.journal_path
    store.close()
    good = journal.read_bytes()
    journal.write_bytes(good + b'{"c": [["images", "1", {"id": "a.j')  # torn last write
    again = reopen(store)
    assert again.get(b.id).status == "done"
    assert journal.read_bytes() == good  # the torn tail was cut off
    again.close()
    lines = good.split(b"\n")
    lines[2] = b"garbage"
    journal.write_bytes(b"\n".join(lines))
    with pytest.raises(StoreCorruptError) as err:
        reopen(store)
    assert str(journal) in str(err.value)


# ---- reconcile -----------------------------------------------------------------------------------


def _save_mask(dest: Path, image_id: str, n_objects: int, shape=(30, 40)) -> Path:
    labels = np.zeros(shape, np.uint8)
    for i in range(1, n_objects + 1):
        labels[i, :] = i
    path = mask_path(dest, image_id, "_mask", "png")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_label_map(path, labels)
    return path


def test_reconcile_repairs_records_after_a_crash(store, tmp_path, clock):
    dest = tmp_path / "masks"
    # done, but its mask file is gone -> todo, clicks kept
    a = store.claim("a.jpg", "ann")
    store.add_object(a.id, "ann", ObjectRecord(points=POINTS))
    painted = [Stroke("paint", 5, [(3, 3), (9, 9)])]  # painted by hand: no clicks, kept too
    store.add_object(a.id, "ann", ObjectRecord(points=[], strokes=painted))
    store.complete(a.id, "ann")
    # the app saved the mask and stopped before complete() -> done
    b = store.claim("b.PNG", "bob")
    store.add_object(b.id, "bob", ObjectRecord(points=POINTS, created_at=clock.t - 100))
    _save_mask(dest, b.id, 1)
    # a mask from before this store for a todo image -> done with its object count
    _save_mask(dest, "sub/d.JPG", 3)
    # done with no objects needs no mask; skipped stays skipped
    c = store.claim("c.jpeg", "cem")
    store.complete(c.id, "cem")
    store.skip("f.webp", "cem")
    _save_mask(dest, "f.webp", 1)

    lines = store.reconcile(dest, "_mask", "png")
    assert len(lines) == 3, lines
    assert store.get("a.jpg").status == "todo" and "missing" in store.get("a.jpg").note
    assert [o.strokes for o in store.objects("a.jpg")] == [[], painted]
    rb = store.get("b.PNG")
    assert (rb.status, rb.annotator, rb.n_objects) == ("done", "bob", 1)
    rd = store.get("sub/d.JPG")
    assert (rd.status, rd.n_objects) == ("done", 3)
    assert store.get("c.jpeg").status == "done" and store.get("f.webp").status == "skipped"
    assert any("a.jpg" in line and "todo" in line for line in lines)
    assert store.reconcile(dest, "_mask", "png") == []  # stable


def test_reconcile_after_reset_ignores_old_masks(store, tmp_path, clock):
    dest = tmp_path / "masks"
    old = _save_mask(dest, "a.jpg", 2)
    os.utime(old, (clock.t - 1000, clock.t - 1000))
    store.reset()
    store.sync()
    assert store.reconcile(dest, "_mask", "png") == []
    assert store.get("a.jpg").status == "todo"


def test_reconcile_counts_objects_of_imported_images(tmp_path, store_location, source):
    (source / ".anno_prog").write_text("a.jpg: yes\n")
    dest = tmp_path / "masks"
    _save_mask(dest, "a.jpg", 2)
    s = open_store(store_location, source)
    s.sync()
    assert s.get("a.jpg").n_objects == 0
    lines = s.reconcile(dest, "_mask", "png")
    assert s.get("a.jpg").n_objects == 2 and len(lines) == 1


# ---- storage layer -------------------------------------------------------------------------------


def test_two_instances_see_each_others_writes_across_compactions(tmp_path, source, clock):
    path = tmp_path / "p.json"
    one = ProgressStore(path, source, clock=clock, compact_bytes=2000)
    one.sync()
    two = ProgressStore(path, source, clock=clock, compact_bytes=2000)
    taken = set()
    for i in range(3):
        for s, who in ((one, f"one{i}"), (two, f"two{i}")):
            rec = s.claim_next(who)
            assert rec is not None and rec.id not in taken
            taken.add(rec.id)
            s.add_object(rec.id, who, ObjectRecord(points=POINTS))
            s.complete(rec.id, who, 1)
    assert one.images() == two.images() and one.events() == two.events()
    assert one.summary() == two.summary()
    assert one.backend._storage._generation > 0  # it did compact
    three = ProgressStore(path, source, clock=clock)
    assert three.images() == one.images()


def test_journaled_storage_as_plain_tinydb(tmp_path):
    path = tmp_path / "db.json"
    changes = []
    storage = JournaledStorage(path, listener=lambda *c: changes.append(c))
    db = open_journaled_db(storage)
    table = db.table("things")
    for i in range(5):
        table.insert({"n": i, "even": i % 2 == 0})
    table.update({"tag": "x"}, Query().even == True)  # noqa: E712
    table.remove(Query().n == 1)
    line = storage.journal_path.read_bytes().splitlines()[-2]  # the update's journal line
    assert len(json.loads(line)["c"]) == 3  # only the 3 even documents were journaled
    assert len(changes) == 5 + 3 + 1
    storage.close()
    again = open_journaled_db(JournaledStorage(path))
    things = again.table("things")
    assert sorted(d["n"] for d in things.search(Query().tag == "x")) == [0, 2, 4]
    assert len(things) == 4


def test_reset_and_compaction_by_one_instance_are_seen_by_another(tmp_path, source, clock):
    path = tmp_path / "p.json"
    one = ProgressStore(path, source, clock=clock)
    one.sync()
    two = ProgressStore(path, source, clock=clock)
    rec = two.claim_next("bob")
    two.backend._storage.compact()
    assert one.get(rec.id).annotator == "bob"  # caught up across the compaction
    loaded = []
    one.backend._storage.on_reload = lambda tables: loaded.append(True) or one.backend._rebuild_indexes(tables)
    two.complete(rec.id, "bob")
    two.backend._storage.compact()
    assert one.get(rec.id).status == "done" and not loaded  # adopted without a full reload
    backup = one.reset()
    assert len(two) == 0 and two.events()[-1].action == "reset"
    assert backup.exists()


@tinydb_only
def test_failed_write_is_reported_and_nothing_saved_is_lost(store, monkeypatch):
    from dextr_core.store import journal as store_storage

    first = store.claim_next("ann")
    store.complete(first.id, "ann", 4)

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_storage.os, "fsync", broken_fsync)
    with pytest.raises(store_storage.StoreWriteError, match="No space left") as err:
        store.claim_next("bob")
    assert str(store.path) in str(err.value)
    monkeypatch.undo()
    # memory was dropped and re-read from disk: the failed claim is gone, the saved work stays
    assert store.get(first.id).status == "done"
    assert store.summary()["by_status"]["in_progress"] == 0
    assert [e.action for e in store.events()][-1] == "completed"
    assert store.claim_next("bob") is not None  # and the store goes on working
    assert reopen(store).images() == store.images()


@tinydb_only
def test_lock_held_too_long_is_a_clear_error(store):
    from filelock import FileLock

    from dextr_core.store.journal import StoreBusyError

    store.backend._storage._file_lock.timeout = 0.2
    with FileLock(str(store.backend._storage.lock_path)), pytest.raises(StoreBusyError, match="locked"):
        store.claim_next("ann")


def test_empty_store_answers_calmly(tmp_path, store_location):
    (tmp_path / "empty").mkdir()
    s = open_store(store_location, tmp_path / "empty")
    assert s.claim_next("ann") is None
    assert s.summary()["total"] == 0 and s.summary()["annotators"] == {}
    assert s.images() == [] and s.objects() == [] and s.events() == [] and s.image_ids() == []
    assert s.sync().lines() == []
    assert s.reconcile(tmp_path / "masks", "_mask", "png") == []


@tinydb_only
def test_temp_files_of_a_killed_writer_are_cleaned_up(store):
    leftover = store.path.with_name(f".{store.path.name}.tmp-999-1")
    leftover.write_bytes(b'{"half": ')
    store.close()
    again = reopen(store)
    assert not leftover.exists() and len(again) == len(store)
