"""The Streamlit app driven headless with streamlit.testing.v1.AppTest.

Each test builds a config in tmp_path over a few small synthetic photos (a dark disc and a dark
square on a light, textured background) plus corrupt files, sets ANNO_CFG, and drives
``app.py``. Clicks are injected the way the canvas callback delivers them: full-image (x, y)
points in ``st.session_state["anno_clicks"]``. No DEXTR weights: the GrabCut fallback runs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dextr_core.masks import load_label_map, load_object_mask, mask_path, object_mask_path
from dextr_core.store import ProgressStore

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
TIMEOUT = 120

# The disc of every synthetic photo (centre x, centre y, radius) and its extreme points.
DISC = (60, 50, 28)
DISC_CLICKS = [[32, 50], [88, 50], [60, 22], [60, 78]]
SQUARE = (110, 20, 150, 60)  # x0, y0, x1, y1 (exclusive)
SQUARE_CLICKS = [[110, 40], [149, 40], [130, 20], [130, 59]]


def _photo(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = 100, 160
    img = rng.integers(190, 240, size=(h, w, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    cx, cy, r = DISC
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = (40, 30, 120)
    x0, y0, x1, y1 = SQUARE
    img[y0:y1, x0:x1] = (20, 90, 30)
    return img


def _disc_mask() -> np.ndarray:
    yy, xx = np.mgrid[:100, :160]
    cx, cy, r = DISC
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A config over src/ (a.png, b.png, c.jpg, one non-image .jpg, one truncated .jpg)."""
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(_photo(1)).save(src / "a.png")
    Image.fromarray(_photo(2)).save(src / "b.png")
    Image.fromarray(_photo(3)).save(src / "c.jpg", quality=95)
    (src / "broken.jpg").write_bytes(b"this is not a JPEG file")
    whole = (src / "c.jpg").read_bytes()
    (src / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    cfg = tmp_path / "anno_cfg.yml"
    cfg.write_text(
        "required:\n  source: src\n  destination: out\n"
        "optional:\n  labels: [disc, square]\n  save_format: png\n"
    )
    monkeypatch.setenv("ANNO_CFG", str(cfg))
    return tmp_path


def _app(name: str | None = "ana", *, tab: str | None = None, lead: bool = False,
         timeout: float = TIMEOUT):
    """The app as one browser tab: ``tab`` the session token of an earlier tab's address (a
    refresh of it), ``lead`` a configured lead password, given in this tab; ``timeout`` seconds
    per script run."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=timeout)
    if name:
        at.query_params["annotator"] = name
    if tab:
        at.query_params["tab"] = tab
    if lead:
        at.secrets["lead_password"] = "a-long-random-string"
        at.session_state["dextr_lead_role"] = True
    return at.run()


def _tab(at) -> str:
    value = at.query_params["tab"]
    return value[0] if isinstance(value, list) else value


def _button(at, label: str):
    found = [b for b in at.button if b.label == label]
    assert found, f"no button {label!r}; buttons: {[b.label for b in at.button]}"
    return found[0]


def _plain(text: str) -> str:
    """Markdown made by ui.messages.md() read back as the characters it shows."""
    return re.sub(r"\\(.)", r"\1", text)


def _texts(elements) -> str:
    return " ".join(_plain(e.value) for e in elements)


def _current_image(at) -> str:
    for md in at.markdown:
        if md.value.startswith("**") and " px" in md.value:
            return _plain(md.value.split("**")[1])
    raise AssertionError("no image shown")


def _store(project: Path) -> ProgressStore:
    return ProgressStore(project / "src" / ".dextr_progress.json", project / "src")


def _class_box(at):
    """The annotate page's Class box (its widget key changes each time it is emptied)."""
    return next(box for box in at.selectbox if box.label == "Class")


def _accept(at, clicks, label=None):
    at.session_state["anno_clicks"] = clicks
    at.run()
    assert not at.exception
    if label is not None:
        _class_box(at).select(label)
    _button(at, "Accept object").click().run()
    assert not at.exception


def test_broken_config_is_reported_not_raised(tmp_path, monkeypatch):
    cfg = tmp_path / "anno_cfg.yml"
    cfg.write_text("required:\n  source: nowhere\noptional:\n  save_format: tiff\n")
    monkeypatch.setenv("ANNO_CFG", str(cfg))
    at = _app(None)
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "required.source" in errors
    assert "required.destination" in errors
    assert "optional.save_format" in errors
    assert len(at.error) >= 4  # the headline plus one per problem
    assert not at.button  # the page did not run


def test_name_first_then_first_image(project):
    at = _app(None)
    assert not at.exception
    assert at.text_input(key="anno_name_input")
    assert not [b for b in at.button if b.label == "Image done"]
    at.text_input(key="anno_name_input").input("ana")
    at.button[0].click().run()
    assert not at.exception
    assert at.query_params["annotator"] == ["ana"] or at.query_params["annotator"] == "ana"
    assert _current_image(at) == "a.png"
    record = _store(project).get("a.png")
    assert record.status == "in_progress" and record.annotator == "ana"


def test_accept_delete_done_writes_mask_and_record(project):
    at = _app()
    assert _current_image(at) == "a.png"
    _accept(at, DISC_CLICKS, "disc")
    _accept(at, SQUARE_CLICKS, "square")
    assert [m.value for m in at.markdown if m.value.startswith("**Objects")] == ["**Objects (2)**"]
    for obj in _store(project).objects("a.png"):  # each object's mask is its own file
        assert object_mask_path(project / "out", "a.png", obj.object_id).is_file()

    # A third object, then delete it again.
    _accept(at, [[5, 90], [30, 90], [15, 80], [15, 99]], "disc")
    assert len(_store(project).objects("a.png")) == 3
    deletes = [b for b in at.button if b.label == "Delete"]
    assert len(deletes) == 3
    deletes[2].click().run()
    assert not at.exception
    assert [o.label for o in _store(project).objects("a.png")] == ["disc", "square"]

    _button(at, "Image done").click().run()
    assert not at.exception
    target = mask_path(project / "out", "a.png", "_mask", "png")
    labels = np.asarray(Image.open(target))
    assert Image.open(target).mode == "L"
    assert labels.shape == (100, 160)
    assert set(np.unique(labels)) == {0, 1, 2}
    disc = labels == 1
    iou = (disc & _disc_mask()).sum() / (disc | _disc_mask()).sum()
    assert iou > 0.8, iou
    x0, y0, x1, y1 = SQUARE
    assert (labels[y0 + 3:y1 - 3, x0 + 3:x1 - 3] == 2).mean() > 0.9
    record = _store(project).get("a.png")
    assert record.status == "done" and record.n_objects == 2 and record.annotator == "ana"
    objects = _store(project).objects("a.png")
    assert objects[0].points == DISC_CLICKS and objects[0].engine
    assert _current_image(at) == "b.png"  # moved on


def test_objects_survive_a_new_session(project):
    at = _app()
    _accept(at, DISC_CLICKS, "disc")
    # A browser refresh / server restart: a new session with the same address (name and tab).
    again = _app(tab=_tab(at))
    assert not again.exception
    assert _current_image(again) == "a.png"
    assert "**Objects (1)**" in [m.value for m in again.markdown]
    _button(again, "Image done").click().run()
    labels = load_label_map(mask_path(project / "out", "a.png", "_mask", "png"))
    assert set(np.unique(labels)) == {0, 1}


def test_two_annotators_get_different_images(project):
    ana, ben = _app("ana"), _app("ben")
    assert _current_image(ana) == "a.png"
    assert _current_image(ben) == "b.png"
    _button(ben, "Prev").click().run()  # a.png is held by ana: shown read-only, with why
    assert _current_image(ben) == "a.png"
    assert "a.png" in _texts(ben.warning) and "ana" in _texts(ben.warning)
    assert _button(ben, "Accept object").disabled and _button(ben, "Image done").disabled
    store = _store(project)
    assert store.get("a.png").annotator == "ana" and store.get("b.png").status == "todo"
    _button(ben, "Next").click().run()
    assert _current_image(ben) == "b.png" and _store(project).get("b.png").annotator == "ben"


def test_switching_annotator_gives_the_image_back(project):
    at = _app()
    _accept(at, DISC_CLICKS)
    _button(at, "Not you?").click().run()
    assert not at.exception
    assert at.text_input(key="anno_name_input")
    record = _store(project).get("a.png")
    assert record.status == "todo" and record.n_objects == 0
    assert len(_store(project).objects("a.png")) == 1  # the accepted object is kept
    at.text_input(key="anno_name_input").input("ben")
    at.button[-1].click().run()
    assert _current_image(at) == "a.png"
    assert "**Objects (1)**" in [m.value for m in at.markdown]
    assert _store(project).get("a.png").annotator == "ben"


def test_going_back_to_a_done_image_shows_its_objects(project, monkeypatch):
    at = _app()
    _accept(at, DISC_CLICKS, "disc")
    _accept(at, SQUARE_CLICKS, "square")
    _button(at, "Image done").click().run()
    assert _current_image(at) == "b.png"
    saved = load_label_map(mask_path(project / "out", "a.png", "_mask", "png"))

    import ui.resources as state

    class NoModel:  # the masks must come from the saved file, not from the model
        name, is_fallback, is_remote = "no model", False, False

        def segment(self, image, points):
            raise AssertionError("masks were recomputed")

    monkeypatch.setattr(state, "engine", lambda: state.Engine(NoModel(), None))
    _button(at, "Prev").click().run()
    assert not at.exception
    assert _current_image(at) == "a.png"
    assert "**Objects (2)**" in [m.value for m in at.markdown]
    assert "a.png is done by ana" in _texts(at.warning)  # its status, and what one may do
    assert _store(project).get("a.png").status == "done"  # looking does not reopen it
    assert _button(at, "Image done").disabled
    _button(at, "Edit this image").click().run()
    assert _store(project).get("a.png").status == "in_progress"
    _button(at, "Image done").click().run()
    again = load_label_map(mask_path(project / "out", "a.png", "_mask", "png"))
    np.testing.assert_array_equal(again, saved)
    assert _store(project).get("a.png").status == "done"


def test_skip_moves_on(project):
    at = _app()
    _button(at, "Skip").click().run()
    assert not at.exception
    assert _store(project).get("a.png").status == "skipped"
    assert _current_image(at) == "b.png"


def test_next_and_previous(project):
    at = _app()
    _button(at, "Next").click().run()
    assert _current_image(at) == "b.png"
    store = _store(project)
    assert store.get("a.png").status == "todo"
    assert store.get("b.png").status == "in_progress"
    _button(at, "Prev").click().run()
    assert _current_image(at) == "a.png"


def test_corrupt_images_are_passed_over_with_a_warning(project):
    # broken.jpg fails at the folder scan (header): named in a warning at the first page load.
    at = _app()
    assert "broken.jpg" in _texts(at.warning)
    # truncated.jpg has a good header and fails when opened: after a.png, b.png and c.jpg.
    for _ in range(3):
        _button(at, "Image done").click().run()
        if [b for b in at.button if b.label == "Yes, save empty"]:
            _button(at, "Yes, save empty").click().run()
    assert not at.exception
    assert "truncated.jpg" in _texts(at.warning)
    store = _store(project)
    assert store.get("broken.jpg").status == "unreadable"
    assert store.get("truncated.jpg").status == "unreadable"
    assert "truncated.jpg" in (store.get("truncated.jpg").error or "")
    assert any("All done" in s.value for s in at.success)


def test_empty_image_needs_confirmation(project):
    at = _app()
    _button(at, "Image done").click().run()
    assert _store(project).get("a.png").status == "in_progress"
    assert any("no object" in w.value for w in at.warning)
    _button(at, "Yes, save empty").click().run()
    assert not at.exception
    labels = load_label_map(mask_path(project / "out", "a.png", "_mask", "png"))
    assert labels.shape == (100, 160) and labels.max() == 0
    assert _store(project).get("a.png").status == "done"


def test_more_clicks_refine_and_undo_goes_back(project):
    at = _app()
    at.session_state["anno_clicks"] = DISC_CLICKS
    at.run()
    sess = at.session_state["anno_session"]
    first, first_background = sess.candidate.mask.copy(), at.session_state["anno_view"].background
    at.session_state["anno_clicks"] = [[110, 40]]  # a fifth click, on the square
    at.run()
    assert not at.exception
    assert any("5 clicks" in c.value for c in at.caption)
    sess = at.session_state["anno_session"]
    assert len(sess.candidate.points) == 5
    assert not np.array_equal(sess.candidate.mask, first)
    five_background = at.session_state["anno_view"].background
    assert five_background[1] != first_background[1]  # the canvas shows the refined mask
    _button(at, "Undo").click().run()
    assert any("4 clicks" in c.value for c in at.caption)
    again = at.session_state["anno_session"].candidate.mask
    assert (again & first).sum() / (again | first).sum() > 0.98
    assert at.session_state["anno_view"].background[1] != five_background[1]


def test_points_on_one_spot_warn_and_stay(project):
    at = _app()
    at.session_state["anno_clicks"] = [[50, 50]] * 4
    at.run()
    assert not at.exception
    assert "one spot" in _texts(at.warning)
    assert _button(at, "Accept object").disabled
    _button(at, "Undo").click().run()
    assert any("3 of 4" in i.value for i in at.info)


def test_a_failing_model_keeps_the_clicks(project, monkeypatch):
    import ui.resources as state

    class Broken:
        name, is_fallback, is_remote = "broken model", False, False

        def segment(self, image, points):
            raise RuntimeError("out of memory")

    monkeypatch.setattr(state, "engine", lambda: state.Engine(Broken(), None))
    at = _app()
    at.session_state["anno_clicks"] = DISC_CLICKS
    at.run()
    assert not at.exception
    assert "broken model failed" in _texts(at.warning)
    assert "out of memory" in _texts(at.warning)
    assert _button(at, "Accept object").disabled
    assert not _button(at, "Undo").disabled


def test_click_outside_the_image_is_refused(project):
    at = _app()
    at.session_state["anno_clicks"] = [[500, 20]]
    at.run()
    assert not at.exception
    assert "outside the image" in _texts(at.warning)
    assert any("0 of 4" in i.value for i in at.info)


def test_broken_weights_shown_and_fallback_used(project):
    weights = project / "bad.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n but not really")
    cfg = project / "anno_cfg.yml"
    cfg.write_text(cfg.read_text() + "  weights: bad.h5\n")
    at = _app()
    assert not at.exception
    assert "bad.h5" in _texts(at.error)
    assert any("Fallback segmenter" in w.value for w in at.warning)
    assert _current_image(at) == "a.png"


def test_reset_progress_asks_first(project):
    at = _app()
    _button(at, "Image done").click().run()
    _button(at, "Yes, save empty").click().run()
    assert _store(project).get("a.png").status == "done"
    cfg = project / "anno_cfg.yml"
    cfg.write_text(cfg.read_text() + "admin:\n  reset_progress: true\n")
    at = _app(lead=True)
    assert not at.exception
    assert _store(project).get("a.png").status == "done"  # nothing reset yet
    _button(at, "Reset the progress (keep a backup)").click().run()
    assert not at.exception
    backups = [p for p in (project / "src").glob(".dextr_progress.json.backup-*")
               if not p.name.endswith(".journal")]  # the store keeps its journal beside it
    assert len(backups) == 1
    assert _store(project).get("a.png").status in ("todo", "in_progress")


def test_npy_format(project):
    cfg = project / "anno_cfg.yml"
    cfg.write_text(cfg.read_text().replace("save_format: png", "save_format: npy"))
    at = _app()
    _accept(at, DISC_CLICKS)
    _button(at, "Image done").click().run()
    labels = np.load(project / "out" / "a_mask.npy")
    assert labels.dtype == np.uint8 and labels.shape == (100, 160)
    assert set(np.unique(labels)) == {0, 1}


def test_config_path_order(monkeypatch, tmp_path):
    from ui import resources

    monkeypatch.setattr("sys.argv", ["app.py", "--config", str(tmp_path / "x.yml")])
    monkeypatch.setenv("ANNO_CFG", str(tmp_path / "env.yml"))
    assert resources.config_path() == tmp_path / "x.yml"
    monkeypatch.setattr("sys.argv", ["app.py", "--config-file", "y", "--co"])
    assert resources.config_path() == tmp_path / "env.yml"
    monkeypatch.delenv("ANNO_CFG")
    assert resources.config_path() == REPO / "anno_cfg.yml"


def test_repo_config_points_at_the_samples():
    from dextr_core.config import load_config

    cfg = load_config(REPO / "anno_cfg.yml")
    assert cfg.source == REPO / "samples" / "images"
    assert cfg.destination == REPO / "samples" / "masks"
    images = sorted(p.name for p in cfg.source.glob("*.jpg"))
    assert len(images) >= 5
    assert sum(p.stat().st_size for p in cfg.source.glob("*.jpg")) < 2_000_000
    assert json.dumps(list(cfg.labels))
    assert os.path.isfile(REPO / ".streamlit" / "config.toml")


def _only(project: Path, keep: str) -> None:
    for path in (project / "src").iterdir():
        if path.name != keep:
            path.unlink()


def test_exif_rotated_photo_is_upright_and_so_is_its_mask(project):
    # Stored 100 wide x 160 high with EXIF orientation 6 (rotate 90 degrees clockwise to view):
    # shown upright it is 160 x 100 with the disc where the synthetic photos have it.
    upright = _photo(4)
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # undo a 90 degree clockwise turn
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(project / "src" / "a.jpg", exif=exif.tobytes(), quality=95)
    _only(project, "a.jpg")
    at = _app()
    assert _current_image(at) == "a.jpg"
    assert any("160 x 100 px" in m.value for m in at.markdown)
    _accept(at, DISC_CLICKS)
    _button(at, "Image done").click().run()
    labels = load_label_map(mask_path(project / "out", "a.jpg", "_mask", "png"))
    assert labels.shape == (100, 160)
    disc = labels == 1
    assert (disc & _disc_mask()).sum() / (disc | _disc_mask()).sum() > 0.8


@pytest.mark.slow
def test_huge_photo_is_shown_small_and_saved_full_size(project):
    width, height = 12000, 9000
    yy, xx = np.ogrid[:height, :width]
    big = np.full((height, width, 3), 215, np.uint8)
    big[(xx - 6000) ** 2 + (yy - 4500) ** 2 <= 2000 ** 2] = (30, 30, 60)
    Image.fromarray(big).save(project / "src" / "huge.png", compress_level=1)
    del big
    _only(project, "huge.png")
    at = _app()
    assert _current_image(at) == "huge.png"
    assert any("12000 x 9000 px" in m.value for m in at.markdown)
    from ui.photos import display_size_for

    assert display_size_for(at.session_state["anno_session"].size) == (666, 500)  # ui/layout.py
    _accept(at, [[4000, 4500], [7999, 4500], [6000, 2500], [6000, 6499]])
    _button(at, "Image done").click().run()
    assert not at.exception
    labels = load_label_map(mask_path(project / "out", "huge.png", "_mask", "png"))
    assert labels.shape == (height, width)
    inside = labels[4500 - 1400:4500 + 1400, 6000 - 1400:6000 + 1400]
    assert (inside == 1).mean() > 0.95
    assert labels[100, 100] == 0 and labels[8900, 11900] == 0


def test_full_image_cache_stays_within_its_budget(tmp_path):
    from ui.photos import _ImageLRU

    paths = []
    for i in range(3):
        path = tmp_path / f"p{i}.png"
        Image.fromarray(_photo(i)).save(path)
        paths.append(str(path))
    one = 100 * 160 * 3
    lru = _ImageLRU(budget_bytes=2.5 * one)
    first = lru.get(paths[0], 1.0)
    assert lru.get(paths[0], 1.0) is first  # decoded once
    assert not first.flags.writeable
    lru.get(paths[1], 1.0)
    lru.get(paths[0], 1.0)  # p0 is now the most recent
    lru.get(paths[2], 1.0)  # over budget: the least recently used (p1) goes
    assert [k[0] for k in lru.items] == [paths[0], paths[2]]
    assert lru.get(paths[0], 2.0) is not first  # a new mtime is a new version of the file
    tiny = _ImageLRU(budget_bytes=1)
    tiny.get(paths[0], 1.0)
    assert len(tiny.items) == 1  # the newest photo is always kept


def test_damaged_progress_file_is_reported_and_can_be_replaced(project):
    progress = project / "src" / ".dextr_progress.json"
    progress.write_text('{"images": {"1": {"id": "a.png", "status": "do')  # cut short
    at = _app(lead=True)
    assert not at.exception
    errors = _texts(at.error)
    assert str(progress) in errors and "damaged" in errors
    assert progress.read_text().endswith('"do')  # left exactly as it was

    _button(at, "Start a new progress store (the damaged file is kept aside)").click().run()
    assert not at.exception
    kept = list(progress.parent.glob(progress.name + ".corrupt-*"))
    assert kept and kept[0].read_text().endswith('"do')
    assert _current_image(at) in {"a.png", "b.png", "c.jpg"}  # annotation goes on
    assert len(_store(project).image_ids()) == 5


@pytest.mark.slow  # builds the 49 M-parameter network
def test_dextr_engine_end_to_end(project, seeded_dextr):
    """With a weights file the app runs DEXTR: the sidebar names it, the object records it, and
    the saved mask is the network's output for the full-resolution photo and clicks."""
    from dextr_core.processing import make_input, paste_mask

    model, weights = seeded_dextr
    photo = _photo(1)  # a.png
    x, box = make_input(photo, DISC_CLICKS)
    prob = np.asarray(model(x[None], training=False))[0, :, :, 0]
    # seeded weights segment nothing in particular: a threshold that selects part of the box
    # makes the comparison below meaningful
    threshold = round(float(np.quantile(prob, 0.6)), 4)
    expected = paste_mask(prob, box, photo.shape, threshold)
    assert 0.02 < expected.mean() < 0.6  # hundreds of pixels: a comparison that means something
    cfg = project / "anno_cfg.yml"
    cfg.write_text(cfg.read_text() + f"  weights: {weights}\n  threshold: {threshold}\n")

    at = _app(timeout=900)  # the first run builds the network and its OpenVINO export
    assert not at.exception
    assert "DEXTR (seeded_dextr.h5)" in _texts(at.success)
    assert not any("Fallback" in w.value for w in at.warning)
    _accept(at, DISC_CLICKS, "disc")
    (obj,) = _store(project).objects("a.png")
    saved = np.asarray(Image.open(object_mask_path(project / "out", "a.png", obj.object_id)))
    # OpenVINO or the TensorFlow graph against eager Keras: pixels at the threshold may differ
    assert (saved != expected).mean() < 0.002
    assert [o.engine for o in _store(project).objects("a.png")] == ["DEXTR (seeded_dextr.h5)"]


# ---- issue 11: the store is the truth, one tab one claim, truthful writes, escaping, roles ----


def test_a_stale_tab_cannot_overwrite_the_mask_of_whoever_took_the_image_over(project):
    import time

    from dextr_core.store import ObjectRecord

    at = _app("ana")
    assert _current_image(at) == "a.png"
    _accept(at, DISC_CLICKS, "disc")
    # ana's claim lapses (an hour later, 30 min timeout); ben takes a.png, adds two objects and
    # finishes it with his own two-object mask file.
    later = ProgressStore(project / "src" / ".dextr_progress.json", project / "src",
                          clock=lambda: time.time() + 3600)
    assert later.claim_next("ben", session="ben-tab").id == "a.png"
    target = mask_path(project / "out", "a.png", "_mask", "png")
    bens = np.zeros((100, 160), np.uint8)
    bens[:10, :10], bens[-10:, -10:] = 1, 2
    for clicks in (DISC_CLICKS, SQUARE_CLICKS):
        later.add_object("a.png", "ben", ObjectRecord(label="disc", points=clicks),
                         session="ben-tab")
    later.complete("a.png", "ben", session="ben-tab",
                   write=lambda objects: Image.fromarray(bens).save(target))
    later.close()
    _button(at, "Image done").click().run()  # ana's stale tab
    assert not at.exception
    assert "ben" in _texts(at.error)
    np.testing.assert_array_equal(load_label_map(target), bens)  # ben's mask, untouched
    record = _store(project).get("a.png")
    # ana's object stays on the image (objects are never dropped), ben's two are added
    assert record.status == "done" and record.annotator == "ben" and record.n_objects == 3


def test_two_tabs_with_one_name_get_different_images_and_the_mask_is_the_stores(project):
    tab1, tab2 = _app("ana"), _app("ana")
    assert _current_image(tab1) == "a.png"
    assert _current_image(tab2) == "b.png"  # not the image the other tab holds
    _accept(tab1, DISC_CLICKS, "disc")
    _button(tab2, "Prev").click().run()
    assert _current_image(tab2) == "a.png"
    assert "another tab" in _texts(tab2.warning)
    assert _button(tab2, "Accept object").disabled
    assert "**Objects (1)**" in [m.value for m in tab2.markdown]  # what the store holds
    _accept(tab1, SQUARE_CLICKS, "square")
    _button(tab1, "Image done").click().run()
    labels = load_label_map(mask_path(project / "out", "a.png", "_mask", "png"))
    assert set(np.unique(labels)) == {0, 1, 2}
    assert _store(project).get("a.png").n_objects == 2


def test_a_full_disk_at_accept_stores_nothing_and_the_retry_stores_once(project, monkeypatch):
    import errno

    from dextr_core import masks

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    at = _app()
    at.session_state["anno_clicks"] = DISC_CLICKS
    at.run()
    with monkeypatch.context() as patch:
        patch.setattr(masks, "atomic_write", full)
        _button(at, "Accept object").click().run()
    assert not at.exception
    assert "No space left" in _texts(at.error) and "Accept again" in _texts(at.error)
    assert _store(project).objects("a.png") == []  # the page says not saved: nothing is
    assert not _button(at, "Accept object").disabled  # the clicks are kept for the retry
    _button(at, "Accept object").click().run()
    assert len(_store(project).objects("a.png")) == 1
    assert _button(at, "Accept object").disabled  # accepted: the clicks are gone
    assert "**Objects (1)**" in [m.value for m in at.markdown]


def test_a_name_and_a_label_with_markdown_are_shown_as_typed(project):
    cfg = project / "anno_cfg.yml"
    cfg.write_text(cfg.read_text().replace("labels: [disc, square]",
                                           "labels: ['[link](http://host/x)', square]"))
    name = "![x](http://host/b.png)"
    at = _app(name)
    assert not at.exception
    shown = [c.value for c in at.caption if "Annotating as" in c.value]
    assert shown and "](" not in shown[0] and name in _plain(shown[0])
    _accept(at, DISC_CLICKS, "[link](http://host/x)")
    for element in list(at.success) + list(at.markdown):
        assert "](http" not in element.value, element.value
    assert "Object 1 ([link](http://host/x)) accepted." in _texts(at.success)


def test_a_reset_without_a_configured_lead_is_refused_and_says_how_to_configure_one(project):
    at = _app()
    _accept(at, DISC_CLICKS)
    cfg = project / "anno_cfg.yml"
    cfg.write_text(cfg.read_text() + "admin:\n  reset_progress: true\n")
    at.run()  # the changed config is read at the next page load
    assert not at.exception
    assert not [b for b in at.button if "Reset" in b.label]
    assert "lead_password" in _texts(at.info) and "docs/roles.md" in _texts(at.info)
    assert len(_store(project).objects("a.png")) == 1  # nothing reset
    assert _current_image(at) == "a.png"  # annotation goes on with the current progress
    assert not list((project / "src").glob(".dextr_progress.json.backup-*"))


def test_a_damaged_store_cannot_be_replaced_without_a_lead(project):
    progress = project / "src" / ".dextr_progress.json"
    progress.write_text('{"images": {"1": {"id": "a.png", "status": "do')
    at = _app()
    assert not at.exception
    assert not [b for b in at.button if "new progress store" in b.label]
    assert "docs/roles.md" in _texts(at.info)
    assert progress.read_text().endswith('"do')


def test_the_sidebar_gives_the_exact_install_command_when_the_fallback_runs(project, monkeypatch):
    from dextr_core import download

    monkeypatch.setattr(download, "install_command",
                        lambda path: f"python -m dextr_core.download pascal-sbd --to '{path}'",
                        raising=False)
    at = _app()
    assert not at.exception
    cfg_weights = str(project / "models" / "dextr_pascal-sbd.h5")
    codes = [c.value for c in at.sidebar.code]
    assert codes and codes[0].startswith("python -m dextr_core.download pascal-sbd --to ")
    assert "Fallback segmenter" in _texts(at.sidebar.warning)
    assert cfg_weights.rsplit("/", 1)[-1] in codes[0]


def test_the_sidebar_shows_the_engines_runtime_info(project, monkeypatch):
    import ui.resources as resources

    class Engine:
        name, is_fallback, is_remote = "DEXTR (test.h5)", False, False
        runtime_info = "OpenVINO on CPU, bfloat16 (checked: min IoU 0.998)"

        def segment(self, image, points):
            return np.zeros(image.shape[:2], bool)

    monkeypatch.setattr(resources, "engine", lambda: resources.Engine(Engine(), None))
    at = _app()
    assert not at.exception
    assert "OpenVINO on CPU, bfloat16 (checked: min IoU 0.998)" in _texts(at.sidebar.caption)


def test_a_model_service_that_does_not_answer_is_said_and_the_local_engine_runs(project):
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = project / "anno_cfg.yml"
    cfg.write_text(cfg.read_text() + f"  model_server: http://127.0.0.1:{port}/dextr\n")
    at = _app()
    assert not at.exception
    assert "model service does not answer" in _texts(at.error)
    _button(at, "Ask the model service again")
    _accept(at, DISC_CLICKS, "disc")
    (obj,) = _store(project).objects("a.png")
    assert obj.engine.startswith("GrabCut fallback")


def test_when_the_service_stops_answering_mid_session_the_page_offers_the_local_engine(
        project, monkeypatch):
    from dextr_core.remote import RemoteSegmenter
    from ui import resources

    class DownService(RemoteSegmenter):
        def __init__(self):  # no connection at construction
            self.name, self.is_fallback = "DEXTR (model service http://gpu1:8000/dextr)", False

        def segment(self, image, points):
            raise ConnectionError("the model service does not answer")

    local = resources.Engine(__import__("dextr_core.fallback").fallback.GrabCutSegmenter(), None)
    service = resources.Engine(DownService(), None)
    monkeypatch.setattr(resources, "_load_engine",
                        lambda weights, threshold, server="", *_: service if server else local)
    cfg = project / "anno_cfg.yml"
    cfg.write_text(cfg.read_text() + "  model_server: http://gpu1:8000/dextr\n")
    at = _app()
    at.session_state["anno_clicks"] = DISC_CLICKS
    at.run()
    assert "does not answer" in _texts(at.warning)
    _button(at, "Use the local engine").click().run()
    assert not at.exception
    _button(at, "Accept object").click().run()
    (obj,) = _store(project).objects("a.png")
    assert obj.engine.startswith("GrabCut fallback")


def test_a_new_mask_leaves_the_canvas_photo_alone_and_comes_as_a_layer_over_it(
        project, monkeypatch):
    """The canvas's background stays the photo's display JPEG (the browser keeps its decoded
    image); the mask comes as a small PNG layer that, laid over that photo, shows the overlay."""
    import base64
    import io

    import streamlit_drawable_canvas as sdc

    from ui import photos
    from ui.overlay import draw_overlay, fit_mask

    backgrounds = []
    real = sdc.st_canvas

    def recording(*args, **kwargs):
        backgrounds.append(kwargs["background_image"])
        return real(*args, **kwargs)

    monkeypatch.setattr(sdc, "st_canvas", recording)
    at = _app()
    at.session_state["anno_clicks"] = DISC_CLICKS
    at.run()
    assert not at.exception
    shown = photos.display_image(project / "src" / "a.png")
    assert len(backgrounds) >= 2 and all(b == shown.jpeg for b in backgrounds)
    layer = at.session_state["anno_view"].background[1]
    head, data = layer["src"].split(",", 1)
    assert head == "data:image/png;base64"
    rgba = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGBA"))
    width, height = shown.display_size
    x, y = round(layer["left"] * width / 100), round(layer["top"] * height / 100)
    assert rgba.shape[1] == round(layer["width"] * width / 100)
    image = shown.image.astype(np.float64)
    a = rgba[..., 3:4] / 255.0
    h, w = rgba.shape[:2]
    image[y:y + h, x:x + w] = image[y:y + h, x:x + w] * (1 - a) + rgba[..., :3] * a
    mask = at.session_state["anno_session"].candidate.mask
    expected = draw_overlay(shown.image, [fit_mask(mask, (height, width))])
    assert np.abs(image - expected).max() <= 1.0


# ---- a DEXTR-AnnoTool folder, moved over as it is ----------------------------------------------


@pytest.fixture
def seed(tmp_path, monkeypatch):
    """DEXTR-AnnoTool's folder: its anno_cfg.yml, photos in images/, masks in images/segMasks,
    and the .anno_prog it wrote (a.png done with a mask, b.png skipped, c.jpg to do, gone.png
    done but no longer in the folder)."""
    from annotool import seed_config_text

    src = tmp_path / "images"
    src.mkdir()
    for seed_no, name in enumerate(["a.png", "b.png", "c.jpg"], start=1):
        Image.fromarray(_photo(seed_no)).save(src / name)
    mask = mask_path(src / "segMasks", "a.png", "_mask", "png")
    mask.parent.mkdir()
    Image.fromarray(_disc_mask().astype(np.uint8), mode="L").save(mask)
    cfg = tmp_path / "anno_cfg.yml"
    cfg.write_text(seed_config_text("./images", "./images/segMasks"))
    monkeypatch.setenv("ANNO_CFG", str(cfg))
    return tmp_path


def _seed_files(folder: Path) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in
            [folder / "images" / ".anno_prog", folder / "images" / "segMasks" / "a_mask.png"]}


def _progress_page(at):
    at.switch_page("pages/progress.py")
    at.run()
    assert not at.exception
    return at


SEED_MARKS = {"a.png": True, "b.png": "skip", "c.jpg": False, "gone.png": "yes"}


def test_a_dextr_annotool_folder_hands_out_only_what_it_left_to_do(seed):
    from annotool import write_anno_prog

    write_anno_prog(seed / "images" / ".anno_prog", SEED_MARKS, source="./images",
                    destination="./images/segMasks")
    before = _seed_files(seed)
    at = _app()
    assert not at.exception
    assert _current_image(at) == "c.jpg"  # a.png (done) and b.png (skipped) are not handed out
    store = ProgressStore(seed / "images" / ".dextr_progress.json", seed / "images")
    assert [store.get(i).status for i in ("a.png", "b.png")] == ["done", "skipped"]
    assert store.get("a.png").n_objects == 1  # its mask file's one object
    at = _progress_page(at)
    shown = _texts(at.info) + " " + _texts(at.warning)
    assert "Imported DEXTR-AnnoTool progress" in shown and "1 done" in shown
    assert "gone.png" in shown  # the image missing from the folder is named
    assert "its required." not in shown  # the seed's paths are this config's
    assert _seed_files(seed) == before  # its progress file and mask: not a byte changed


def test_a_dextr_annotool_file_made_for_other_folders_is_imported_with_a_warning(seed):
    from annotool import write_anno_prog

    # the seed ran with its photos in ims/ (since renamed images/), masks in ims/segMasks
    write_anno_prog(seed / "images" / ".anno_prog", SEED_MARKS, source="./ims",
                    destination="./ims/segMasks")
    before = _seed_files(seed)
    at = _progress_page(_app())
    warned = _texts(at.warning)
    assert f"made for the photos in {seed / 'ims'}" in warned
    assert f"this config's source is {seed / 'images'}" in warned
    assert f"masks were saved to {seed / 'ims' / 'segMasks'}" in warned
    assert "found for 1 of the 1 images it marked done" in warned
    store = ProgressStore(seed / "images" / ".dextr_progress.json", seed / "images")
    assert store.get("a.png").status == "done" and store.get("c.jpg").status == "in_progress"
    assert _seed_files(seed) == before


def test_a_held_photo_replaced_by_an_unreadable_file_is_named_and_given_up(project):
    at = _app()
    assert _current_image(at) == "a.png"
    photo = project / "src" / "a.png"
    photo.write_bytes(b"a text file saved over the photo")
    at.run()
    assert not at.exception
    warned = _texts(at.warning)
    assert f"The photo a.png changed on disk and can no longer be read: Cannot read image {photo}" \
        in warned and "marked unreadable" in warned
    assert _current_image(at) == "b.png"  # moved on
    record = _store(project).get("a.png")
    assert (record.status, record.annotator) == ("unreadable", None)
    assert "cannot identify image file" in record.error


def test_the_tool_row_chooses_a_brush_and_edit_makes_an_object_current(project):
    at = _app()
    _accept(at, DISC_CLICKS, "disc")
    assert _button(at, "Points").proto.type == "primary"
    _button(at, "Paint").click().run()
    assert not at.exception
    assert _button(at, "Paint").proto.type == "primary"
    assert _button(at, "Points").proto.type == "secondary"
    assert any("Brush" in m.value and "px" in m.value for m in at.markdown)
    _button(at, "Edit").click().run()
    assert not at.exception
    assert "Editing an accepted object" in _texts(at.info)
    assert _button(at, "Points").disabled  # an accepted object is corrected with the brushes
    _button(at, "Done editing 1").click().run()
    assert not at.exception and not [b for b in at.button if b.label.startswith("Done editing")]
    assert not _button(at, "Points").disabled


def test_a_photo_sent_back_opens_first_for_who_did_it_with_the_leads_note(project):
    at = _app("bob")  # creates the store; bob finishes b.png (the first he gets: a.png)
    store = _store(project)
    try:
        store.release(_current_image(at), "bob")
        store.claim("b.png", "bob")
        store.complete("b.png", "bob", 5.0)
        store.send_back("b.png", "lea", "the disc's edge is off", to="bob")
    finally:
        store.close()
    at = _app("bob")
    assert not at.exception, at.exception
    assert _current_image(at) == "b.png"
    assert "lea sent b.png back for correction: the disc's edge is off" in _texts(at.warning)
    other = _app("cleo")
    assert _current_image(other) != "b.png" and "sent b.png back" not in _texts(other.warning)


# ---- class keys and overlaps (ui/labels.py, ui/overlaps.py) ------------------------------------

# a box over the disc's right half: it overlaps the disc object
HALF_CLICKS = [[60, 50], [100, 50], [80, 20], [80, 80]]


def _accept_clicks(at, clicks):
    at.session_state["anno_clicks"] = clicks
    at.run()
    _button(at, "Accept object").click().run()
    assert not at.exception


def test_number_keys_choose_the_class_and_it_stays_for_the_next_object(project):
    at = _app()
    assert [o for o in _class_box(at).options] == ["1 · disc", "2 · square"]
    _button(at, "Class 2: square").click().run()  # the hidden button behind the key 2
    assert _class_box(at).value == "square"
    _accept_clicks(at, DISC_CLICKS)
    assert [o.label for o in _store(project).objects("a.png")] == ["square"]
    assert _class_box(at).value == "square"  # kept for the next object


def test_without_carry_over_the_box_empties_after_accept_and_the_next_accept_asks_for_a_class(
        project):
    at = _app()
    at.checkbox(key="anno-class-carry").uncheck().run()
    _button(at, "Class 2: square").click().run()
    _accept_clicks(at, SQUARE_CLICKS)
    assert _class_box(at).value is None  # emptied for the next object
    _accept_clicks(at, DISC_CLICKS)
    assert "Choose this object's class first" in _texts(at.warning)
    assert [o.label for o in _store(project).objects("a.png")] == ["square"]  # nothing guessed
    _button(at, "Class 1: disc").click().run()
    _button(at, "Accept object").click().run()
    assert [o.label for o in _store(project).objects("a.png")] == ["square", "disc"]


def test_the_carry_over_choice_and_class_outlive_a_visit_to_the_progress_page(project):
    at = _app()
    _button(at, "Class 2: square").click().run()
    at.checkbox(key="anno-class-carry").uncheck().run()
    at.switch_page("pages/progress.py").run()
    at.switch_page("pages/annotate.py").run()
    assert not at.exception
    assert not at.checkbox(key="anno-class-carry").value
    assert _class_box(at).value is None  # off: a box shown anew is empty
    at.checkbox(key="anno-class-carry").check().run()
    at.switch_page("pages/progress.py").run()
    at.switch_page("pages/annotate.py").run()
    assert at.checkbox(key="anno-class-carry").value and _class_box(at).value == "square"


def test_a_new_browser_session_takes_the_carry_over_choice_and_class_from_its_cookies(
        project, monkeypatch):
    from ui import cookies

    kept = {"dextr_class_carry": "1", "dextr_class": "square"}
    monkeypatch.setattr(cookies, "read", kept.get)
    at = _app()
    assert _class_box(at).value == "square" and at.checkbox(key="anno-class-carry").value
    kept["dextr_class_carry"] = "0"
    other = _app("ben")
    assert _class_box(other).value is None and not other.checkbox(key="anno-class-carry").value


@pytest.mark.parametrize("cut", [False, True])
def test_an_overlap_is_named_and_cut_only_when_chosen(project, cut):
    at = _app()
    _accept_clicks(at, DISC_CLICKS)
    at.session_state["anno_clicks"] = HALF_CLICKS
    at.run()
    notice = " ".join(w.value for w in at.warning)
    assert "The new object overlaps" in notice and "Object 1 (disc)" in notice.replace("\\", "")
    if cut:
        at.radio(key="anno_overlap").set_value("Cut from the earlier object(s)")
    _button(at, "Accept object").click().run()
    assert not at.exception
    first, second = _store(project).objects("a.png")
    out = project / "out"
    disc = load_object_mask(object_mask_path(out, "a.png", first.object_id))
    half = load_object_mask(object_mask_path(out, "a.png", second.object_id))
    assert (disc & half).any() != cut
    texts = " ".join(s.value for s in at.success)
    assert ("cut from object(s) 1" in texts) == cut
    assert np.count_nonzero(disc) > 500


def test_once_the_queue_is_empty_prev_and_next_reach_ones_own_finished_images(project):
    at = _app()
    _button(at, "Skip").click().run()  # a.png; b.png opens
    other = _app("ben")  # ben takes c.jpg and skips it; truncated.jpg is passed over
    _button(other, "Skip").click().run()
    _button(at, "Skip").click().run()  # b.png: nothing is left for ana
    assert not at.exception
    assert "All done" in _texts(at.success)
    _button(at, "Prev").click().run()
    assert _current_image(at) == "b.png"  # c.jpg, the last image, is ben's
    assert "b.png was skipped by ana" in _texts(at.warning)


def test_messages_of_the_annotate_page_stay_on_it(project):
    at = _app()
    _accept(at, DISC_CLICKS, "disc")
    assert "accepted" in _texts(at.success)
    at.switch_page("pages/progress.py").run()
    assert not at.exception
    assert "accepted" not in _texts(at.success)
