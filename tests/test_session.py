"""AnnotationSession (dextr_core/session.py) against a real ProgressStore, without Streamlit.

Photos are small synthetic arrays loaded through an injected loader; the segmenter is a fake
whose mask is the clicks' bounding box (tests/projects.py; so every mask is known exactly); time
comes from an injected clock. Failures are injected by monkeypatching the one atomic-write helper
(``dextr_core.masks.atomic_write``) and the store's methods.
"""

from __future__ import annotations

import errno

import numpy as np
import pytest
from clocks import Clock
from PIL import Image
from projects import BoxSegmenter, box_mask, write_photo, write_photos

from dextr_core import masks
from dextr_core.session import (
    AnnotationSession,
    EmptyImageError,
    PhotoUnreadableError,
    PointError,
    ReadOnlyError,
    SessionError,
    SessionPaths,
    WriteError,
)
from dextr_core.store import ClaimError, ObjectRecord, ProgressStore
from dextr_core.strokes import Stroke

H, W = 60, 80
A = [[10, 20], [30, 20], [20, 10], [20, 30]]  # box x 10..30, y 10..30
B = [[40, 5], [70, 5], [55, 2], [55, 40]]  # box x 40..70, y 2..40


def _box(points) -> np.ndarray:
    return box_mask(points, (H, W))


@pytest.fixture
def project(tmp_path):
    src = write_photos(tmp_path / "src", ("a.png", "b.png", "c.png"), (W, H), 200)
    clock = Clock(1_000_000.0)
    store = ProgressStore(src / ".dextr_progress.json", src, claim_timeout_s=600, clock=clock)
    store.sync()
    paths = SessionPaths(src, tmp_path / "out", "_mask", "png")
    return store, paths, clock


def _session(project, name="ana", token=None, segmenter=None) -> AnnotationSession:
    store, paths, clock = project
    return AnnotationSession(store, segmenter or BoxSegmenter(), paths, name, session=token,
                             clock=clock, load=lambda p: np.full((H, W, 3), 200, np.uint8))


def _accept(s: AnnotationSession, points, label="thing"):
    s.set_points(points)
    return s.accept(label)


def _saved(paths, image_id="a.png") -> np.ndarray:
    return masks.load_label_map(masks.mask_path(paths.destination, image_id, "_mask", "png"))


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


# ---- the store is the truth -------------------------------------------------------------------


def test_accept_writes_the_objects_mask_file_then_the_store_record(project):
    store, paths, _ = project
    s = _session(project)
    assert s.open_next().image_id == "a.png"
    stored = _accept(s, A, "cat")
    assert stored.object_id and stored.label == "cat" and stored.engine == "box"
    (record,) = store.objects("a.png")
    assert record.object_id == stored.object_id and record.points == A
    file = masks.object_mask_path(paths.destination, "a.png", stored.object_id)
    np.testing.assert_array_equal(masks.load_object_mask(file), _box(A))
    assert Image.open(file).mode == "1"
    assert s.points == [] and s.candidate is None


def test_the_objects_shown_are_always_what_the_store_holds(project):
    store, _, _ = project
    s = _session(project)
    s.open_next()
    first = _accept(s, A)
    _accept(s, B)
    assert [o.object_id for o in s.objects] == [o.object_id for o in store.objects("a.png")]
    s.delete(first)
    assert [o.points for o in s.objects] == [B] == [o.points for o in store.objects("a.png")]
    s.delete(first.object_id)  # a retried delete of an object already gone changes nothing
    assert len(store.objects("a.png")) == 1


def test_done_builds_the_mask_file_from_the_stores_objects(project):
    store, paths, _ = project
    s = _session(project)
    s.open_next()
    _accept(s, A)
    _accept(s, B)
    result = s.done()
    assert result.image_id == "a.png" and result.n_objects == 2
    labels = _saved(paths)
    np.testing.assert_array_equal(labels == 1, _box(A) & ~_box(B))
    np.testing.assert_array_equal(labels == 2, _box(B))
    assert store.get("a.png").status == "done" and store.get("a.png").n_objects == 2
    assert s.image_id is None


def test_an_object_without_its_file_is_recomputed_from_its_clicks_at_done(project):
    store, paths, _ = project
    s = _session(project, token="t1")
    s.open_next()
    stored = _accept(s, A)
    masks.object_mask_path(paths.destination, "a.png", stored.object_id).unlink()
    fresh = _session(project, token="t1")  # the same browser session after a server restart
    fresh.open_next()
    fresh.done()
    np.testing.assert_array_equal(_saved(paths) == 1, _box(A))


def test_the_first_versions_single_draft_is_still_read(project):
    store, paths, _ = project
    store.claim("a.png", "ana", session="t1")
    store.add_object("a.png", "ana", ObjectRecord(label="x", points=A), session="t1")
    old = np.zeros((H, W), np.uint8)
    old[0:5, 0:5] = 1  # differs from the clicks' box: the draft must win over recomputing
    masks.save_label_map(masks.draft_path(paths.destination, "a.png"), old)
    seg = BoxSegmenter()
    s = _session(project, token="t1", segmenter=seg)
    s.open("a.png")
    np.testing.assert_array_equal(s.mask(s.objects[0]), old == 1)
    s.done()
    np.testing.assert_array_equal(_saved(paths), old)
    assert seg.calls == 0
    assert not masks.draft_path(paths.destination, "a.png").exists()


# ---- claims -----------------------------------------------------------------------------------


def test_a_lapsed_claim_taken_by_another_cannot_overwrite_their_mask(project):
    store, paths, clock = project
    ana = _session(project, "ana")
    ana.open_next()
    _accept(ana, A)
    clock.t += 601  # ana left the image open past the claim timeout
    ben = _session(project, "ben")
    assert ben.open_next().image_id == "a.png"
    _accept(ben, B)
    ben.done()
    bens = _saved(paths).copy()
    assert set(np.unique(bens)) == {0, 1, 2}
    with pytest.raises(ClaimError):
        ana.done()
    np.testing.assert_array_equal(_saved(paths), bens)  # nothing written
    assert not ana.editable and "ben" in ana.status.reason
    assert store.get("a.png").annotator == "ben" and store.get("a.png").n_objects == 2


def test_a_claim_lapsing_mid_edit_refuses_the_next_accept_and_stores_nothing(project):
    store, _, clock = project
    ana = _session(project, "ana")
    ana.open_next()
    ana.set_points(A)
    clock.t += 601
    ben = _session(project, "ben")
    ben.open_next()
    with pytest.raises(ClaimError):
        ana.accept("thing")
    assert store.objects("a.png") == []
    assert ana.status.editable is False and "ben" in ana.status.reason
    with pytest.raises(ReadOnlyError):
        ana.accept("thing")


def test_a_lapsed_claim_nobody_took_goes_on_silently(project):
    store, paths, clock = project
    ana = _session(project, "ana")
    ana.open_next()
    clock.t += 601
    ana.refresh()
    assert ana.editable
    _accept(ana, A)
    ana.done()
    assert store.get("a.png").status == "done"


def test_a_refresh_shows_that_the_claim_moved(project):
    _, _, clock = project
    ana = _session(project, "ana")
    ana.open_next()
    clock.t += 601
    _session(project, "ben").open_next()
    status = ana.refresh()
    assert not status.editable and "ben" in status.reason


def test_two_sessions_with_one_name_never_share_an_image(project):
    store, paths, _ = project
    tab1, tab2 = _session(project, "ana", "tab1"), _session(project, "ana", "tab2")
    assert tab1.open_next().image_id == "a.png"
    assert tab2.open_next().image_id == "b.png"  # not a.png again
    status = tab2.open("a.png")
    assert not status.editable and "another tab" in status.reason
    assert store.get("b.png").status == "todo"  # tab2 gave b.png back when it moved
    with pytest.raises(ReadOnlyError):
        tab2.set_points(A)
    _accept(tab1, A)
    tab1.done()
    assert set(np.unique(_saved(paths))) == {0, 1}
    assert store.get("a.png").n_objects == 1


# ---- failures at each write step --------------------------------------------------------------


def test_a_full_disk_at_the_object_mask_stores_nothing_and_the_retry_stores_once(project,
                                                                                monkeypatch):
    store, paths, _ = project
    s = _session(project)
    s.open_next()
    s.set_points(A)
    monkeypatch.setattr(masks, "atomic_write", _enospc)
    with pytest.raises(WriteError, match="Accept again"):
        s.accept("thing")
    assert store.objects("a.png") == [] and s.points == A
    monkeypatch.undo()
    s.accept("thing")
    assert len(store.objects("a.png")) == 1


@pytest.mark.parametrize("stored_before_failing", [False, True])
def test_a_failing_store_add_keeps_the_object_id_and_the_retry_never_duplicates(
        project, monkeypatch, stored_before_failing):
    store, _, _ = project
    s = _session(project)
    s.open_next()
    s.set_points(A)
    real = store.add_object
    ids = []

    def failing(image_id, annotator, obj, **kw):
        ids.append(obj.object_id)
        if stored_before_failing:  # the worst case: the add reached the disk, the reply did not
            real(image_id, annotator, obj, **kw)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "add_object", failing)
    with pytest.raises(WriteError):
        s.accept("thing")
    assert s.points == A
    monkeypatch.setattr(store, "add_object", lambda *a, **kw: (ids.append(a[2].object_id),
                                                              real(*a, **kw))[1])
    s.accept("thing")
    assert ids[0] == ids[1]  # the same client-made id
    assert [o.object_id for o in store.objects("a.png")] == [ids[0]]


def test_a_full_disk_at_the_mask_file_leaves_the_image_in_progress(project, monkeypatch):
    store, paths, _ = project
    s = _session(project)
    s.open_next()
    _accept(s, A)
    monkeypatch.setattr(masks, "atomic_write", _enospc)
    with pytest.raises(WriteError, match="Image done again"):
        s.done()
    assert store.get("a.png").status == "in_progress"
    assert not masks.mask_path(paths.destination, "a.png", "_mask", "png").exists()
    assert s.image_id == "a.png" and s.editable
    monkeypatch.undo()
    s.done()
    assert store.get("a.png").status == "done"
    assert set(np.unique(_saved(paths))) == {0, 1}


# ---- points, candidate, navigation ------------------------------------------------------------


def test_clicks_outside_the_image_are_refused(project):
    s = _session(project)
    s.open_next()
    s.add_point(1, 1)
    with pytest.raises(PointError, match="outside the image"):
        s.add_point(W + 5, 1)
    with pytest.raises(PointError):
        s.set_points([[1, 1], [-3, 2]])
    assert s.points == [[1.0, 1.0]]


def test_the_candidate_is_segmented_once_per_set_of_clicks(project):
    seg = BoxSegmenter()
    s = _session(project, segmenter=seg)
    s.open_next()
    for p in A[:3]:
        s.add_point(*p)
    assert s.candidate is None
    s.add_point(*A[3])
    first = s.candidate
    assert s.candidate is first and seg.calls == 1
    np.testing.assert_array_equal(first.mask, _box(A))
    s.undo()
    assert s.candidate is None and len(s.points) == 3


def test_a_refused_or_failing_segmentation_keeps_the_clicks(project):
    class Broken(BoxSegmenter):
        name = "broken model"

        def segment(self, image, points):
            raise RuntimeError("out of memory")

    s = _session(project)
    s.open_next()
    s.set_points([[5, 5]] * 4)
    assert "one spot" in s.candidate.error and s.candidate.mask is None
    with pytest.raises(Exception, match="four extreme points"):
        s.accept("thing")
    s.segmenter = Broken()
    s.set_points(A)
    assert "broken model failed" in s.candidate.error and "out of memory" in s.candidate.error
    assert s.points == A


def test_an_empty_image_needs_confirmation(project):
    store, paths, _ = project
    s = _session(project)
    s.open_next()
    with pytest.raises(EmptyImageError):
        s.done()
    assert store.get("a.png").status == "in_progress"
    s.done(allow_empty=True)
    assert _saved(paths).max() == 0 and store.get("a.png").status == "done"


def test_prev_to_a_done_image_shows_its_status_and_edit_claims_it(project):
    store, paths, _ = project
    s = _session(project)
    s.open_next()
    _accept(s, A)
    s.done()
    s.open_next()
    status = s.prev()
    assert status.image_id == "a.png" and status.status == "done" and not status.editable
    assert "done by ana" in status.reason
    assert store.get("a.png").status == "done"  # looking does not reopen it
    assert store.get("b.png").status == "todo"  # b.png was given back
    assert [o.points for o in s.objects] == [A]
    s.edit()
    assert s.editable and store.get("a.png").status == "in_progress"
    _accept(s, B)
    s.done()
    assert set(np.unique(_saved(paths))) == {0, 1, 2}


def test_next_past_the_last_image_says_none(project):
    s = _session(project)
    s.open("c.png")
    assert s.next() is None
    assert s.image_id == "c.png" and s.editable


def test_skip_and_release(project):
    store, _, _ = project
    s = _session(project)
    s.open_next()
    assert s.skip() == "a.png"
    assert store.get("a.png").status == "skipped"
    s.open_next()
    _accept(s, A)
    s.release()
    assert store.get("b.png").status == "todo" and len(store.objects("b.png")) == 1


def test_an_unreadable_photo_is_marked_and_passed_over(project):
    store, paths, _ = project

    def load(path):
        if path.name == "a.png":
            from dextr_core.images import ImageReadError

            raise ImageReadError(f"{path} is truncated; replace the file.")
        return np.full((H, W, 3), 200, np.uint8)

    s = AnnotationSession(store, BoxSegmenter(), paths, "ana", clock=project[2], load=load)
    assert s.open_next().image_id == "b.png"
    assert store.get("a.png").status == "unreadable"
    assert s.passed_over and "truncated" in s.passed_over[0]


def _refusing_oversized(path):
    """The loader's refusal of a file over the pixel budget (its header says so); else a photo."""
    from dextr_core.images import ImageReadError, load_image

    if path.read_bytes().startswith(b"HUGE"):
        raise ImageReadError(f"{path}: 40000 x 40000 px = 1600 MP is over the 200 MP limit "
                             "(optional.max_image_megapixels); scale it down.")
    return load_image(path)


@pytest.mark.parametrize("replacement, why", [
    (b"this is not a photo", "cannot identify image file"),  # the real loader refuses it
    (b"HUGE" + bytes(100), "1600 MP is over the 200 MP limit"),
])
def test_a_held_photo_replaced_by_an_unreadable_file_is_marked_released_and_named(
        project, replacement, why):
    store, paths, clock = project
    s = AnnotationSession(store, BoxSegmenter(), paths, "ana", clock=clock,
                          load=_refusing_oversized)
    assert s.open_next().image_id == "a.png"
    _accept(s, A)
    clock.advance(90)
    assert s.refresh().editable  # unchanged file: nothing read again
    (paths.source / "a.png").write_bytes(replacement)
    clock.advance(30)
    with pytest.raises(PhotoUnreadableError) as err:
        s.refresh()
    message = str(err.value)
    assert str(paths.source / "a.png") in message and why in message
    assert "marked unreadable" in message and "no longer held by you" in message
    record = store.get("a.png")
    assert (record.status, record.annotator, record.updated_at) == ("unreadable", None, clock())
    assert why in record.error and len(store.objects("a.png")) == 1  # the object is kept
    last = store.events()[-1]
    assert (last.action, last.image_id, last.annotator, last.time) == (
        "unreadable", "a.png", "ana", clock())
    assert s.image_id is None and s.refresh() is None
    assert s.open_next().image_id == "b.png"  # moved on; nobody is handed a.png again
    assert _session(project, "bob").open_next().image_id == "c.png"
    assert store.claim_next("cem") is None


def test_a_photo_shown_read_only_that_turns_unreadable_is_closed_not_marked(project):
    store, paths, clock = project
    owner = _session(project, "ana", token="t1")
    owner.open_next()
    viewer = AnnotationSession(store, BoxSegmenter(), paths, "bob", clock=clock,
                               load=_refusing_oversized)
    assert not viewer.open("a.png").editable  # held by ana
    (paths.source / "a.png").write_bytes(b"not a photo any more")
    with pytest.raises(PhotoUnreadableError, match="It was closed"):
        viewer.refresh()
    assert viewer.image_id is None and store.get("a.png").status == "in_progress"


def test_a_photo_replaced_by_a_readable_one_is_read_again(project):
    store, paths, clock = project
    loads = []

    def load(path):
        loads.append(path.name)
        return np.full((H, W, 3), 200, np.uint8)

    s = AnnotationSession(store, BoxSegmenter(), paths, "ana", clock=clock, load=load)
    s.open_next()
    s.set_points(A)
    assert s.candidate.mask is not None
    before = len(loads)
    s.refresh()
    assert len(loads) == before  # one stat, no read, while the file is unchanged
    write_photo(paths.source / "a.png", (W, H), 90)
    assert s.refresh().editable and len(loads) == before + 1
    assert s.points == A and store.get("a.png").status == "in_progress"


def test_a_store_that_fails_after_the_mask_was_written_leaves_the_image_open_for_a_retry(
        project, monkeypatch):
    from dextr_core.store import StoreWriteError

    store, paths, _ = project
    s = _session(project)
    s.open_next()
    _accept(s, A)
    real = store.complete

    def fails_after_writing(image_id, annotator, seconds=0.0, *, session=None, write=None):
        write(store.objects(image_id))  # the mask file is written...
        raise StoreWriteError("The last action was not saved: disk full. Free space, retry.")

    monkeypatch.setattr(store, "complete", fails_after_writing)
    with pytest.raises(StoreWriteError):
        s.done()
    assert store.get("a.png").status == "in_progress" and s.editable and s.image_id == "a.png"
    monkeypatch.setattr(store, "complete", real)
    s.done()
    assert store.get("a.png").status == "done" and set(np.unique(_saved(paths))) == {0, 1}


def test_next_to_a_skipped_image_says_so_and_edit_takes_it(project):
    store, _, _ = project
    s = _session(project)
    s.open_next()
    s.skip()
    s.open_next()
    status = s.prev()
    assert status.status == "skipped" and "was skipped by ana" in status.reason
    with pytest.raises(ReadOnlyError):
        s.add_point(1, 1)
    s.edit()
    assert s.editable and store.get("a.png").status == "in_progress"


def test_a_candidate_that_failed_is_made_again_once_another_engine_runs(project):
    class DownService:
        name = "DEXTR (model service http://gpu1:8000/dextr)"
        is_fallback = False

        def segment(self, image, points):
            raise ConnectionError("the model service does not answer")

    s = _session(project, segmenter=DownService())
    s.open_next()
    s.set_points(A)
    assert s.candidate.error and "does not answer" in s.candidate.error
    s.segmenter = BoxSegmenter()  # the page hands the session the local engine
    assert s.candidate.error is None and s.candidate.mask.any()


# ---- strokes: paint and erase on the current object, edits of accepted objects -----------------

PAINT = Stroke("paint", 3, [(50, 50), (70, 50)])  # rows 49..51, x 49..71 (round caps)
ERASE = Stroke("erase", 1, [(20, 5), (20, 40)])  # column 20 from y 5 to 40


def _line(x0, x1, y0, y1) -> np.ndarray:
    out = np.zeros((H, W), bool)
    out[y0:y1 + 1, x0:x1 + 1] = True
    return out


PAINTED = _line(49, 71, 49, 51)  # 3 px wide; the caps reach 1 px past the ends (corners: 1.41)
ERASED = _line(20, 20, 5, 40)


def test_the_candidate_is_the_models_mask_with_paint_added_and_erase_removed(project):
    store, paths, _ = project
    s = _session(project)
    s.open_next()
    s.set_points(A)
    s.add_stroke(PAINT)
    s.add_stroke(ERASE)
    expected = (_box(A) | PAINTED) & ~ERASED
    np.testing.assert_array_equal(s.candidate.mask, expected)
    assert s.candidate.strokes == (PAINT, ERASE)
    stored = s.accept("thing")
    assert stored.strokes == [PAINT, ERASE] and stored.edited and stored.points == A
    assert s.strokes == [] and s.candidate is None
    file = masks.object_mask_path(paths.destination, "a.png", stored.object_id)
    np.testing.assert_array_equal(masks.load_object_mask(file), expected)
    s.done()
    np.testing.assert_array_equal(_saved(paths) == 1, expected)


def test_more_clicks_rerun_the_model_and_the_strokes_apply_again_on_top(project):
    s = _session(project)
    s.open_next()
    s.set_points(A)
    s.add_stroke(ERASE)
    s.add_point(35, 20)  # the box grows to x 35
    np.testing.assert_array_equal(s.candidate.mask,
                                  _box([*A, [35, 20]]) & ~ERASED)


def test_undo_takes_back_the_last_action_click_or_stroke(project):
    s = _session(project)
    s.open_next()
    s.set_points(A[:3])
    s.add_stroke(PAINT)
    s.add_point(*A[3])
    s.add_stroke(ERASE)
    s.undo()
    assert s.strokes == [PAINT] and s.points == A
    s.undo()
    assert s.strokes == [PAINT] and s.points == A[:3]
    s.undo()
    assert s.strokes == [] and s.points == A[:3]
    s.set_points(A)  # the canvas's own undo removed a stroke it showed: the history follows
    s.set_strokes([PAINT, ERASE])
    s.set_strokes([PAINT])
    s.undo()
    assert s.strokes == [] and s.points == A
    s.undo()
    assert s.points == A[:3]
    s.clear()
    assert s.points == [] and s.strokes == [] and s.candidate is None
    s.undo()  # nothing left: no error


def test_an_object_painted_from_nothing_is_accepted_and_rebuilt_from_its_strokes(project):
    store, paths, _ = project
    s = _session(project, token="t1")
    s.open_next()
    s.add_stroke(PAINT)
    np.testing.assert_array_equal(s.candidate.mask, PAINTED)
    stored = s.accept("wire")
    assert stored.points == [] and stored.strokes == [PAINT] and stored.engine == "painted by hand"
    masks.object_mask_path(paths.destination, "a.png", stored.object_id).unlink()
    fresh = _session(project, token="t1")  # the file is gone: the record rebuilds the mask
    fresh.open_next()
    np.testing.assert_array_equal(fresh.mask(fresh.objects[0]), PAINTED)


def test_an_object_without_its_file_is_rebuilt_from_clicks_and_strokes(project):
    store, paths, _ = project
    s = _session(project, token="t1")
    s.open_next()
    s.set_points(A)
    s.add_stroke(ERASE)
    stored = s.accept("thing")
    masks.object_mask_path(paths.destination, "a.png", stored.object_id).unlink()
    fresh = _session(project, token="t1")
    fresh.open_next()
    fresh.done()
    np.testing.assert_array_equal(_saved(paths) == 1, _box(A) & ~ERASED)


def test_one_to_three_clicks_with_strokes_cannot_be_accepted(project):
    s = _session(project)
    s.open_next()
    s.set_points(A[:2])
    s.add_stroke(PAINT)
    with pytest.raises(SessionError, match="four extreme points"):
        s.accept("thing")
    s.set_points([])
    s.set_strokes([ERASE])  # erasing nothing leaves an empty mask
    with pytest.raises(SessionError, match="empty"):
        s.accept("thing")


def test_an_edit_of_an_accepted_object_is_saved_at_once_and_a_reload_shows_it(project):
    store, paths, _ = project
    s = _session(project, token="t1")
    s.open_next()
    stored = _accept(s, A)
    s.edit_object(stored)
    assert s.editing == stored.object_id
    with pytest.raises(SessionError, match="Done editing"):
        s.add_point(5, 5)
    s.add_stroke(ERASE)
    file = masks.object_mask_path(paths.destination, "a.png", stored.object_id)
    np.testing.assert_array_equal(masks.load_object_mask(file), _box(A) & ~ERASED)
    (record,) = store.objects("a.png")
    assert record.strokes == [ERASE] and record.edited
    s.add_stroke(PAINT)
    s.undo()  # the undo is saved too
    assert store.objects("a.png")[0].strokes == [ERASE]
    s.stop_editing()
    s.edit_object(stored.object_id)  # a second edit keeps the first one's strokes
    s.add_stroke(PAINT)
    assert store.objects("a.png")[0].strokes == [ERASE, PAINT]
    fresh = _session(project, token="t1")  # a refresh of the page (the same tab)
    fresh.open_next()
    np.testing.assert_array_equal(fresh.mask(fresh.objects[0]), (_box(A) & ~ERASED) | PAINTED)
    fresh.done()
    np.testing.assert_array_equal(_saved(paths) == 1, (_box(A) & ~ERASED) | PAINTED)


def test_an_edit_after_the_claim_lapsed_and_moved_writes_nothing_and_says_so(project):
    store, paths, clock = project
    ana = _session(project, "ana")
    ana.open_next()
    stored = _accept(ana, A)
    file = masks.object_mask_path(paths.destination, "a.png", stored.object_id)
    before = file.read_bytes()
    ana.edit_object(stored)
    clock.t += 601
    _session(project, "ben").open_next()
    with pytest.raises(ClaimError):
        ana.add_stroke(ERASE)
    assert file.read_bytes() == before and store.objects("a.png")[0].strokes == []
    assert not ana.editable and "ben" in ana.status.reason


def test_a_full_disk_at_an_edit_saves_nothing_and_the_retry_saves_once(project, monkeypatch):
    store, paths, _ = project
    s = _session(project)
    s.open_next()
    stored = _accept(s, A)
    file = masks.object_mask_path(paths.destination, "a.png", stored.object_id)
    before = file.read_bytes()
    s.edit_object(stored)
    monkeypatch.setattr(masks, "atomic_write", _enospc)
    with pytest.raises(WriteError, match="edit was not saved.*Save edit"):
        s.add_stroke(ERASE)
    assert file.read_bytes() == before and store.objects("a.png")[0].strokes == []
    assert s.strokes == [ERASE] and not s.edit_saved  # kept for the retry
    with pytest.raises(SessionError, match="not saved"):
        s.stop_editing()
    with pytest.raises(SessionError, match="not saved"):
        s.done()
    monkeypatch.undo()
    s.save_edit()
    s.save_edit()  # pressed twice: nothing new stored
    assert store.objects("a.png")[0].strokes == [ERASE] and s.edit_saved
    assert [e.action for e in store.events()].count("object_edited") == 1
    np.testing.assert_array_equal(masks.load_object_mask(file), _box(A) & ~ERASED)


def test_a_store_failing_after_the_edits_file_puts_the_saved_mask_back(project, monkeypatch):
    from dextr_core.store import StoreWriteError

    store, paths, _ = project
    s = _session(project)
    s.open_next()
    stored = _accept(s, A)
    file = masks.object_mask_path(paths.destination, "a.png", stored.object_id)
    real = store.edit_object

    def fails_after_writing(*args, write=None, **kw):
        write()
        raise StoreWriteError("Progress could not be written (simulated).")

    s.edit_object(stored)
    monkeypatch.setattr(store, "edit_object", fails_after_writing)
    with pytest.raises(WriteError, match="edit was not saved"):
        s.add_stroke(ERASE)
    np.testing.assert_array_equal(masks.load_object_mask(file), _box(A))  # the saved mask
    monkeypatch.setattr(store, "edit_object", real)
    s.save_edit()
    np.testing.assert_array_equal(masks.load_object_mask(file), _box(A) & ~ERASED)
    assert store.objects("a.png")[0].strokes == [ERASE]


# ---- overlapping objects ----------------------------------------------------------------------

C = [[25, 20], [45, 20], [35, 15], [35, 25]]  # box x 25..45, y 15..25: overlaps A (x 25..30)


def test_a_candidate_over_an_accepted_object_says_how_many_pixels_they_share(project):
    s = _session(project)
    s.open_next()
    first = _accept(s, A)
    s.set_points(C)
    (found,) = s.overlaps()
    shared = int((_box(A) & _box(C)).sum())
    assert found.obj.object_id == first.object_id and found.pixels == shared == 6 * 11
    assert found.of_object == pytest.approx(shared / _box(A).sum())
    assert found.of_candidate == pytest.approx(shared / _box(C).sum())
    assert found.can_cut
    s.set_points(B)  # away from A
    assert s.overlaps() == []


def test_keep_both_leaves_the_earlier_object_whole_and_done_gives_the_later_one_the_pixels(
        project):
    _, paths, _ = project
    s = _session(project)
    s.open_next()
    first = _accept(s, A)
    _accept(s, C)
    file = masks.object_mask_path(paths.destination, "a.png", first.object_id)
    np.testing.assert_array_equal(masks.load_object_mask(file), _box(A))
    s.done()
    saved = _saved(paths)
    assert (saved[_box(A) & _box(C)] == 2).all()  # one label per pixel: the later on top
    assert ((saved == 1) == (_box(A) & ~_box(C))).all()


def test_cut_removes_the_new_objects_pixels_from_the_earlier_ones_file(project):
    _, paths, _ = project
    s = _session(project)
    s.open_next()
    first = _accept(s, A)
    revision = s.masks_revision
    s.set_points(C)
    second = s.accept("thing", cut_earlier=True)
    assert s.masks_revision > revision  # drawings of the earlier object are made again
    file = masks.object_mask_path(paths.destination, "a.png", first.object_id)
    np.testing.assert_array_equal(masks.load_object_mask(file), _box(A) & ~_box(C))
    np.testing.assert_array_equal(s.mask(s.objects[0]), _box(A) & ~_box(C))
    np.testing.assert_array_equal(s.mask(s.objects[1]), _box(C))
    assert second.index == 2


def test_a_cut_with_a_lapsed_claim_taken_by_another_writes_nothing(project):
    store, paths, clock = project
    s = _session(project)
    s.open_next()
    first = _accept(s, A)
    s.set_points(C)
    clock.advance(601)
    store.claim("a.png", "ben")
    with pytest.raises(ClaimError):
        s.accept("thing", cut_earlier=True)
    file = masks.object_mask_path(paths.destination, "a.png", first.object_id)
    np.testing.assert_array_equal(masks.load_object_mask(file), _box(A))
    assert len(store.objects("a.png")) == 1 and not s.editable


def test_a_full_disk_during_a_cut_stores_no_new_object_and_the_retry_stores_it_once(
        project, monkeypatch):
    store, paths, _ = project
    s = _session(project)
    s.open_next()
    first = _accept(s, A)
    s.set_points(C)
    with monkeypatch.context() as m:
        m.setattr(masks, "atomic_write", _enospc)
        with pytest.raises(WriteError, match="not saved"):
            s.accept("thing", cut_earlier=True)
    assert len(store.objects("a.png")) == 1 and s.points == C
    s.accept("thing", cut_earlier=True)
    assert len(store.objects("a.png")) == 2
    file = masks.object_mask_path(paths.destination, "a.png", first.object_id)
    np.testing.assert_array_equal(masks.load_object_mask(file), _box(A) & ~_box(C))


D = [[5, 30], [15, 30], [10, 25], [10, 35]]  # box x 5..15, y 25..35: overlaps A, not C
BACK = Stroke("paint", 3, [(26, 20), (29, 20)])  # paints some of A's pixels C cut back


def test_a_cut_is_in_the_earlier_objects_record_so_a_rebuild_without_its_file_equals_the_file(
        project):
    from dextr_core.strokes import apply_strokes

    store, paths, _ = project
    s = _session(project, token="t1")
    s.open_next()
    first = _accept(s, A)
    s.set_points(C)
    cutter = s.accept("thing", cut_earlier=True)
    s.edit_object(first)
    s.add_stroke(BACK)  # after the first cut: a rebuild must not cut these pixels again
    s.stop_editing()
    s.set_points(D)
    second = s.accept("thing", cut_earlier=True)
    s.delete(cutter)  # deleting the cutting object gives nothing back
    file = masks.object_mask_path(paths.destination, "a.png", first.object_id)
    on_disk = masks.load_object_mask(file)
    np.testing.assert_array_equal(
        on_disk, apply_strokes(_box(A) & ~_box(C), [BACK]) & ~_box(D))
    record = store.objects("a.png")[0]
    assert [(c.by, c.after) for c in record.cuts] == [(cutter.object_id, 0),
                                                      (second.object_id, 1)]
    assert not np.array_equal(apply_strokes(_box(A), record.strokes), on_disk)  # cuts matter
    file.unlink()
    fresh = _session(project, token="t1")  # a refresh: nothing cached
    fresh.open_next()
    np.testing.assert_array_equal(fresh.mask(fresh.objects[0]), on_disk)
    fresh.done()  # the label map, from the record too
    np.testing.assert_array_equal(_saved(paths) == 1, on_disk & ~_box(D))


def _failing_from(call: int, until: int | None = None):
    """An atomic_write whose ``call``-th call (1-based) and those after it, up to ``until``,
    fail with a full disk; the others write."""
    real, calls = masks.atomic_write, []

    def write(path, data):
        calls.append(path)
        if call <= len(calls) and (until is None or len(calls) <= until):
            _enospc()
        return real(path, data)

    return write


def _two_objects_and_c(project):
    """A session with A and B accepted (object files read back) and C, which overlaps both,
    clicked."""
    _, paths, _ = project
    s = _session(project, token="t1")
    s.open_next()
    files = [masks.object_mask_path(paths.destination, "a.png", _accept(s, p).object_id)
             for p in (A, B)]
    s.set_points(C)
    return s, files


def test_a_cut_failing_halfway_puts_the_cut_file_back_stores_nothing_and_the_retry_cuts_once(
        project, monkeypatch):
    store, _, _ = project
    s, files = _two_objects_and_c(project)
    before = [f.read_bytes() for f in files]
    # writes: the new object's file, A's cut, B's cut (fails), A put back
    monkeypatch.setattr(masks, "atomic_write", _failing_from(3, until=3))
    with pytest.raises(WriteError, match="not saved and nothing was cut.*Accept again"):
        s.accept("thing", cut_earlier=True)
    assert [f.read_bytes() for f in files] == before
    assert [o.cuts for o in store.objects("a.png")] == [[], []] and s.points == C
    monkeypatch.undo()
    s.accept("thing", cut_earlier=True)
    objects = store.objects("a.png")
    assert [len(o.cuts) for o in objects] == [1, 1, 0]
    assert [e.action for e in store.events()].count("object_added") == 3
    for file, points in zip(files, (A, B), strict=True):
        np.testing.assert_array_equal(masks.load_object_mask(file), _box(points) & ~_box(C))


def test_a_cut_file_that_cannot_be_put_back_is_named_and_the_retry_records_its_cut(
        project, monkeypatch):
    store, paths, _ = project
    s, files = _two_objects_and_c(project)
    monkeypatch.setattr(masks, "atomic_write", _failing_from(3))  # the disk stays full
    with pytest.raises(WriteError, match=r"object\(s\) 1 already lost .* Accept again"):
        s.accept("thing", cut_earlier=True)
    np.testing.assert_array_equal(masks.load_object_mask(files[0]), _box(A) & ~_box(C))
    assert [o.cuts for o in store.objects("a.png")] == [[], []]
    monkeypatch.undo()
    s.accept("thing", cut_earlier=True)  # the same cut, though object 1's file has it already
    first, second, third = store.objects("a.png")
    assert [c.by for c in first.cuts] == [c.by for c in second.cuts] == [third.object_id]
    for file in files:
        file.unlink()
    fresh = _session(project, token="t1")
    fresh.open_next()
    np.testing.assert_array_equal(fresh.mask(fresh.objects[0]), _box(A) & ~_box(C))
    np.testing.assert_array_equal(fresh.mask(fresh.objects[1]), _box(B) & ~_box(C))


def test_a_store_failing_after_the_cut_files_puts_them_back(project, monkeypatch):
    from dextr_core.store import StoreWriteError

    store, _, _ = project
    s, files = _two_objects_and_c(project)
    before = [f.read_bytes() for f in files]
    real = store.add_object

    def fails_after_writing(*args, write=None, **kw):
        write()
        raise StoreWriteError("Progress could not be written (simulated).")

    monkeypatch.setattr(store, "add_object", fails_after_writing)
    with pytest.raises(WriteError, match="nothing was cut: Progress could not be written"):
        s.accept("thing", cut_earlier=True)
    assert [f.read_bytes() for f in files] == before
    monkeypatch.setattr(store, "add_object", real)
    s.accept("thing", cut_earlier=True)
    assert [len(o.cuts) for o in store.objects("a.png")] == [1, 1, 0]


# ---- the clicks of the object being made survive a refresh ------------------------------------


def test_the_clicks_of_an_unfinished_object_come_back_in_a_new_session_of_the_same_person(
        project):
    s = _session(project, token="tab1")
    s.open_next()
    s.add_point(*A[0])
    s.add_point(*A[1])
    again = _session(project, token="tab1")  # a refresh: a new session, same tab token
    assert again.open_next().image_id == "a.png"
    assert again.points == A[:2]
    again.add_point(*A[2])
    again.add_point(*A[3])
    again.accept("thing")
    third = _session(project, token="tab1")
    third.open_next()
    assert third.points == []  # accepted: nothing left over


def test_kept_clicks_are_not_given_to_another_annotator_and_go_with_skip(project):
    store, paths, clock = project
    s = _session(project)
    s.open_next()
    s.add_point(*A[0])
    s.release()  # "Not you?": the image goes back, its clicks with it
    assert not masks.clicks_path(paths.destination, "a.png").exists()
    s.open_next()
    s.add_point(*A[0])
    ben = _session(project, name="ben")
    clock.advance(601)
    assert ben.open("a.png").editable and ben.points == []
    s2 = _session(project)
    assert s2.open_next().image_id == "b.png"
    s2.add_point(*B[0])
    assert masks.clicks_path(paths.destination, "b.png").exists()
    s2.skip()
    assert not masks.clicks_path(paths.destination, "b.png").exists()


def test_clicks_that_cannot_be_kept_stay_in_the_session_and_say_so(project, monkeypatch):
    s = _session(project)
    s.open_next()
    monkeypatch.setattr(masks, "atomic_write", _enospc)
    s.add_point(*A[0])
    assert s.points == [A[0]] and "could not be kept" in s.clicks_warning
