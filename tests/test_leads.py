"""LeadActions (dextr_core/leads.py) and the store's review block, without Streamlit.

A small real project (photos, a config, mask files) and a real store; time from the injected
clock. Failures are injected by monkeypatching the store's methods (a full disk) and its
primitives inside a transaction (a send back that fails halfway must change nothing). The
store-level review rules run on both backends (``store_location``: TinyDB file, PostgreSQL).
"""

from __future__ import annotations

import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from projects import write_config, write_photos

from dextr_core.config import load_config
from dextr_core.export import run_export
from dextr_core.leads import LeadActions
from dextr_core.masks import label_map, mask_path, save_label_map
from dextr_core.session import AnnotationSession, SessionPaths
from dextr_core.store import (
    ClaimError,
    ObjectRecord,
    StoreInputError,
    StoreWriteError,
    open_store,
    review_state,
)
from dextr_core.store.records import _document_problem

IDS = ("a.png", "b.png", "c.png", "d.png")
BOX = (2, 2, 20, 15)
POINTS = [[2, 3], [20, 14], [3, 2], [19, 15]]


def full_disk(*args, **kwargs):
    raise StoreWriteError("The progress could not be written (No space left on device); free "
                          "some space and try again.")


class Handle:
    """What ui.resources.StoreHandle holds."""

    def __init__(self, store):
        self.store, self.lock, self.sync_report, self.reconciled = store, threading.Lock(), None, []
        self.reset_pending = True


def finish(store, cfg, image_id: str, who: str, clock) -> None:
    """``who`` claims, adds one object and completes ``image_id`` (mask file written)."""
    store.claim(image_id, who)
    store.add_object(image_id, who, ObjectRecord(label="car", points=POINTS, annotator=who))
    mask = np.zeros((32, 40), bool)
    mask[BOX[1]:BOX[3] + 1, BOX[0]:BOX[2] + 1] = True
    store.complete(image_id, who, 10.0, write=lambda objects: save_label_map(
        mask_path(cfg.destination, image_id, cfg.mask_suffix, cfg.save_format),
        label_map([mask], (32, 40)), [o.object_id for o in objects]))
    clock.advance(60)


@pytest.fixture
def project(tmp_path, store_location, clock):
    """Four 40x32 photos; a.png done by ana, b.png done by bob (a minute later), c.png skipped by
    ana, d.png todo. Yields (cfg, store)."""
    write_photos(tmp_path / "images", IDS, (40, 32), 90)
    cfg = load_config(write_config(tmp_path, labels=["car", "person"]))
    store = open_store(store_location, cfg.source, claim_timeout_s=600.0, clock=clock,
                       exclude_dirs=(cfg.destination,))
    store.sync()
    finish(store, cfg, "a.png", "ana", clock)
    finish(store, cfg, "b.png", "bob", clock)
    store.claim("c.png", "ana")
    store.skip("c.png", "ana", "blurred")
    yield cfg, store
    store.close()


def leads_of(project, lead: str | None = "lea") -> LeadActions:
    cfg, store = project
    return LeadActions(Handle(store), cfg, lead=lambda: lead)


def state(store) -> list:
    return [(r.id, r.status, r.annotator, r.review) for r in store.images()]


# ---- the role ------------------------------------------------------------------------------


@pytest.mark.parametrize("store_backend", ["tinydb"], indirect=True)
def test_every_change_needs_the_lead_role_at_the_call(project):
    cfg, store = project
    role = {"name": "lea"}
    leads = LeadActions(Handle(store), cfg, lead=lambda: role["name"])
    assert leads.is_lead
    role["name"] = None  # signed out in another tab after the page was drawn
    before = state(store)
    for outcome in (leads.reopen("a.png"), leads.approve("a.png"),
                    leads.send_back("a.png", "why"), leads.reset(), leads.rescan(),
                    leads.keep_progress()):
        assert outcome.level == "error" and "Only a lead" in outcome.message
    assert state(store) == before and leads.handle.reset_pending


# ---- reopen --------------------------------------------------------------------------------


@pytest.mark.parametrize("store_backend", ["tinydb"], indirect=True)
def test_reopen_says_where_the_image_is_now_and_a_failure_changes_nothing(project,
                                                                         monkeypatch):
    cfg, store = project
    leads = leads_of(project)
    monkeypatch.setattr(type(store), "reopen", full_disk)
    outcome = leads.reopen("a.png")
    assert (outcome.level, outcome.status) == ("error", "done")
    assert "Could not reopen a.png" in outcome.message and "No space left" in outcome.message
    monkeypatch.undo()
    outcome = leads.reopen("a.png")
    assert outcome.ok and outcome.status == "todo"
    assert outcome.message == "a.png reopened. It is back in the queue for anyone."
    assert len(store.objects("a.png")) == 1  # nothing lost
    again = leads.reopen("a.png")  # another lead's click on the same tile
    assert again.level == "warning" and "already in the queue" in again.message
    store.claim("b.png", "bob")  # bob corrects b.png: reopening does not take it from him
    outcome = leads.reopen("b.png")
    assert (outcome.level, outcome.holder) == ("warning", "bob") and "stays with" in outcome.message
    assert store.get("b.png").status == "in_progress"


# ---- review: the store's rules on both backends --------------------------------------------


def test_the_queue_is_done_photos_not_reviewed_oldest_first_and_approval_counts(project):
    cfg, store = project
    assert [r.id for r in store.review_queue()] == ["a.png", "b.png"]  # a was done first
    assert store.review_counts() == {"approved": 0, "sent_back": 0, "waiting": 2}
    a = store.get("a.png")
    record = store.approve("a.png", "lea", completed_at=a.completed_at)
    assert review_state(record) == "approved" and record.review["by"] == "lea"
    assert store.approve("a.png", "lea", completed_at=a.completed_at) == record  # a retry
    assert [e.action for e in store.events()].count("approved") == 1
    assert [r.id for r in store.review_queue()] == ["b.png"]
    assert store.review_counts() == {"approved": 1, "sent_back": 0, "waiting": 1}


def test_an_image_done_again_after_a_correction_needs_a_new_review(project, clock):
    cfg, store = project
    store.approve("a.png", "lea")
    store.claim("a.png", "bob")  # a correction: while it is open the approval cannot change
    with pytest.raises(ClaimError, match="bob has it open"):
        store.approve("a.png", "lea")
    store.release("a.png", "bob")  # left without Image done: back to done, still approved
    assert review_state(store.get("a.png")) == "approved"
    store.claim("a.png", "bob")
    clock.advance(5)
    store.complete("a.png", "bob", 3.0)
    assert review_state(store.get("a.png")) == "waiting"
    assert [r.id for r in store.review_queue()] == ["b.png", "a.png"]


def test_a_review_of_a_version_the_lead_did_not_see_is_refused(project, clock):
    cfg, store = project
    seen = store.get("b.png").completed_at
    store.claim("b.png", "bob")  # bob corrects it meanwhile
    clock.advance(5)
    store.complete("b.png", "bob", 2.0)
    before = state(store)
    with pytest.raises(ClaimError, match="finished again by bob"):
        store.approve("b.png", "lea", completed_at=seen)
    with pytest.raises(ClaimError, match="finished again by bob"):
        store.send_back("b.png", "lea", "no", completed_at=seen, to="bob")
    assert state(store) == before


def test_sent_back_the_photo_is_todo_again_offered_first_to_who_did_it(project, clock):
    cfg, store = project
    record = store.send_back("b.png", "lea", "the mirror is missing", to="bob")
    assert (record.status, record.annotator) == ("in_progress", "bob")
    assert record.review["note"] == "the mirror is missing" and record.n_objects == 1
    assert review_state(record) == "sent_back"
    assert store.review_counts() == {"approved": 0, "sent_back": 1, "waiting": 1}
    assert store.claim_next("cleo").id == "d.png"  # someone else gets another photo
    assert store.claim_next("bob").id == "b.png"  # bob gets it first, its object kept
    assert len(store.objects("b.png")) == 1
    clock.advance(5)
    store.complete("b.png", "bob", 4.0)
    assert review_state(store.get("b.png")) == "waiting"  # reviewed again
    assert store.review_counts() == {"approved": 0, "sent_back": 0, "waiting": 2}


def test_a_send_back_that_fails_halfway_changes_nothing_and_a_retry_does_not_duplicate(
        project, monkeypatch):
    cfg, store = project
    before = state(store)
    monkeypatch.setattr(type(store), "_take", full_disk)  # after the review and todo are set
    with pytest.raises(StoreWriteError):
        store.send_back("b.png", "lea", "again", to="bob")
    assert state(store) == before
    monkeypatch.undo()
    store.send_back("b.png", "lea", "again", to="bob")
    store.send_back("b.png", "lea", "again", to="bob")  # a double click
    assert [e.action for e in store.events()].count("sent_back") == 1
    assert store.get("b.png").status == "in_progress"


def test_review_input_is_checked(project):
    cfg, store = project
    with pytest.raises(ClaimError, match="is todo"):
        store.approve("d.png", "lea")
    with pytest.raises(ClaimError, match="is skipped"):
        store.approve("c.png", "lea")
    with pytest.raises(StoreInputError, match="control characters"):
        store.send_back("a.png", "lea", "bad\x00note")
    with pytest.raises(StoreInputError, match="lead name is empty"):
        store.approve("a.png", " ")
    store.send_back("a.png", "lea", "line one\nline two")  # line breaks are kept
    assert store.get("a.png").review["note"] == "line one\nline two"


def test_a_stored_review_that_is_not_a_decision_is_refused_as_damage():
    assert _document_problem("images", "1", {"id": "a.png", "status": "done",
                                             "review": {"decision": "maybe"}})
    assert _document_problem("images", "1", {"id": "a.png", "status": "todo", "review": "ok"})
    assert _document_problem("images", "1", {"id": "a.png", "status": "done", "review": {
        "decision": "approved", "by": "lea", "completed_at": 1.0}}) is None


# ---- review through LeadActions, the annotator's side, approved-only export -------------------


@pytest.mark.parametrize("store_backend", ["tinydb"], indirect=True)
def test_send_back_through_lead_actions_reaches_the_annotator_with_the_note(project, clock,
                                                                           monkeypatch):
    cfg, store = project
    leads = leads_of(project)
    seen = store.get("a.png").completed_at
    monkeypatch.setattr(type(store), "send_back", full_disk)
    outcome = leads.send_back("a.png", "the car's mirror is missing", completed_at=seen)
    assert outcome.level == "error" and outcome.status == "done"
    assert "a.png was not sent back" in outcome.message
    monkeypatch.undo()
    outcome = leads.send_back("a.png", "the car's mirror is missing", completed_at=seen)
    assert outcome.ok and (outcome.status, outcome.holder) == ("in_progress", "ana")
    assert "first image ana gets" in outcome.message and "mirror" in outcome.message
    sess = AnnotationSession(store, None, SessionPaths.from_config(cfg), "ana", clock=clock)
    assert sess.open_next().image_id == "a.png"
    assert "lea sent a.png back" in sess.review_note
    assert "the car's mirror is missing" in sess.review_note
    sess.done()
    assert sess.review_note is None  # closed; and the photo waits for review again
    assert leads.review_counts() == {"approved": 0, "sent_back": 0, "waiting": 2}


@pytest.mark.parametrize("store_backend", ["tinydb"], indirect=True)
def test_approve_through_lead_actions_and_the_approved_only_export(project, tmp_path,
                                                                   monkeypatch):
    cfg, store = project
    leads = leads_of(project)
    monkeypatch.setattr(type(store), "approve", full_disk)
    outcome = leads.approve("b.png")
    assert outcome.level == "error" and "b.png was not approved" in outcome.message
    monkeypatch.undo()
    outcome = leads.approve("b.png", completed_at=store.get("b.png").completed_at)
    assert outcome.ok and outcome.message == "b.png approved (bob's work)."
    result = run_export(cfg, store, "coco", tmp_path / "approved.json", status="approved",
                        as_zip=False, overwrite=False, save_format=None, progress=None)
    coco = json.loads(Path(result.path).read_text())
    assert [i["file_name"] for i in coco["images"]] == ["b.png"]
    assert len(coco["annotations"]) == 1
    result = leads.export("coco", "approved")  # the page's way: a zip beside the config
    with zipfile.ZipFile(result.path) as zf:
        names = [i["file_name"] for i in json.loads(zf.read("annotations.json"))["images"]]
    assert names == ["b.png"]
    assert leads.download(result)[0] == Path(result.path).name


# ---- reset and rescan ------------------------------------------------------------------------


@pytest.mark.parametrize("store_backend", ["tinydb"], indirect=True)
def test_a_reset_says_which_step_failed_and_the_rescan_runs_again(project, monkeypatch):
    cfg, store = project
    leads = leads_of(project)
    monkeypatch.setattr(type(store), "reset", full_disk)
    outcome = leads.reset()
    assert outcome.level == "error" and "progress unchanged" in outcome.message
    assert store.get("a.png").status == "done" and leads.handle.reset_pending
    monkeypatch.undo()
    real_sync = type(store).sync
    monkeypatch.setattr(type(store), "sync", full_disk)
    outcome = leads.reset()
    assert outcome.level == "warning" and outcome.backup is not None
    assert "could not be scanned" in outcome.message and str(outcome.backup) in outcome.message
    assert not leads.handle.reset_pending  # the reset the config asked for is done
    again = leads.reset(only_if_pending=True)  # a second lead's answer to the same question
    assert again.level == "warning" and again.backup is None and "meanwhile" in again.message
    outcome = leads.rescan()
    assert outcome.level == "error" and "the queue is as it was" in outcome.message
    monkeypatch.setattr(type(store), "sync", real_sync)
    outcome = leads.rescan()
    assert outcome.ok and "4 new image(s) added" in outcome.lines
    assert outcome.message.startswith("Source folder scanned.")
    assert store.summary()["total"] == 4
    assert not leads.handle.lock.locked()
    assert leads.last_scan()[0] == outcome.lines
