"""Every saved label matches its mask (issue 17): photos sharing a name stem, abandoned edits,
exports during a correction, empty masks.

Photos are small synthetic arrays; the segmenter is a fake whose mask is the clicks' bounding box,
so every mask is known exactly; time comes from the injected clock.
"""

from __future__ import annotations

import contextlib
import io
import zipfile

import numpy as np
import pytest
from PIL import Image
from projects import BoxSegmenter, box_mask, synced_store, write_config, write_photo, write_photos

from dextr_core import masks
from dextr_core.config import load_config
from dextr_core.export import coco_dataset, run_export
from dextr_core.session import AnnotationSession, SessionPaths
from dextr_core.store import ProgressStore, open_store

H, W = 40, 60
A = [[5, 10], [20, 10], [12, 5], [12, 20]]  # box x 5..20, y 5..20
B = [[30, 8], [50, 8], [40, 4], [40, 30]]  # box x 30..50, y 4..30
C = [[2, 25], [15, 25], [8, 22], [8, 38]]  # box x 2..15, y 22..38


def _box(points) -> np.ndarray:
    return box_mask(points, (H, W))


@pytest.fixture
def project(tmp_path, clock):
    """A config over a.jpg, a.png (same stem) and b.png; the store synced."""
    write_photos(tmp_path / "images", ("a.jpg", "a.png", "b.png"), (W, H), 150)
    cfg = load_config(write_config(tmp_path, labels=["thing"]))
    store = synced_store(cfg, claim_timeout_s=600, clock=clock)
    yield cfg, store
    store.close()


def _session(cfg, store, clock, name="ana") -> AnnotationSession:
    return AnnotationSession(store, BoxSegmenter(), SessionPaths.from_config(cfg), name,
                             clock=clock, load=lambda p: np.full((H, W, 3), 150, np.uint8))


def _annotate(s: AnnotationSession, image_id: str, *objects) -> None:
    s.open(image_id)
    for points in objects:
        s.set_points(points)
        s.accept("thing")
    s.done()


def _coco_masks(dataset) -> dict[str, list[np.ndarray]]:
    from pycocotools import mask as mask_utils

    names = {im["id"]: im["file_name"] for im in dataset["images"]}
    out: dict[str, list[np.ndarray]] = {}
    for ann in dataset["annotations"]:
        rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
        out.setdefault(names[ann["image_id"]], []).append(mask_utils.decode(rle).astype(bool))
    return out


# ---- 1. photos sharing a name stem ------------------------------------------------------------


def test_photos_sharing_a_stem_get_one_mask_file_each_and_others_keep_the_seeds_name(
        project, clock):
    cfg, store = project
    s = _session(cfg, store, clock)
    _annotate(s, "a.jpg", A)
    _annotate(s, "a.png", B)
    _annotate(s, "b.png", C)
    dest = cfg.destination
    assert sorted(p.name for p in dest.iterdir() if p.is_file()) == [
        "a.jpg_mask.png", "a.png_mask.png", "b_mask.png"]
    np.testing.assert_array_equal(masks.load_label_map(dest / "a.jpg_mask.png") == 1, _box(A))
    np.testing.assert_array_equal(masks.load_label_map(dest / "a.png_mask.png") == 1, _box(B))
    warnings: list[str] = []
    got = _coco_masks(coco_dataset(cfg, store, warnings=warnings))
    assert warnings == []
    np.testing.assert_array_equal(got["a.jpg"][0], _box(A))
    np.testing.assert_array_equal(got["a.png"][0], _box(B))
    # a correction opens each photo's own mask
    s.open("a.jpg")
    s.edit()
    np.testing.assert_array_equal(s.mask(s.objects[0]), _box(A))


def test_clashing_ids_keeps_names_unique_case_blind_and_per_folder():
    ids = ["a.jpg", "A.png", "b.png", "sub/a.jpg", "c.jpg", "c.png", "c.jpg.png", "d.png"]
    clashing = masks.clashing_ids(ids)
    assert clashing == {"a.jpg", "A.png", "c.jpg", "c.png", "c.jpg.png"}
    names = [masks.mask_path("m", i, "_mask", "png", clashing).as_posix().casefold()
             for i in ids]
    assert len(set(names)) == len(ids)
    assert masks.mask_path("m", "sub/a.jpg", "_mask", "png", clashing).name == "a_mask.png"


def test_zip_exports_of_photos_sharing_a_stem_have_one_entry_per_photo(project, clock, tmp_path):
    cfg, store = project
    s = _session(cfg, store, clock)
    _annotate(s, "a.jpg", A)
    _annotate(s, "a.png", B, C)
    for fmt in ("masks", "palette"):
        out = tmp_path / f"{fmt}.zip"
        result = run_export(cfg, store, fmt, out, as_zip=True)
        with zipfile.ZipFile(out) as zf:
            names = [n for n in zf.namelist() if n != "legend.csv"]  # masks: ids -> classes
            assert len(names) == len(set(names)) == 2, names
            if fmt == "masks":
                got = {n: np.asarray(Image.open(io.BytesIO(zf.read(n)))) for n in names}
                assert sorted(int(a.max()) for a in got.values()) == [1, 2]
        assert result.images == 2 and result.warnings == []


def test_a_mask_saved_under_a_stem_a_new_photo_now_shares_moves_to_its_owner(tmp_path, clock):
    src = write_photos(tmp_path / "images", ["a.jpg"], (W, H), 150)
    cfg = load_config(write_config(tmp_path))
    store = synced_store(cfg, claim_timeout_s=600, clock=clock)
    _annotate(_session(cfg, store, clock), "a.jpg", A)
    assert (cfg.destination / "a_mask.png").is_file()  # alone: the seed's name
    write_photo(src / "a.png", (W, H), 150)
    store.sync()
    lines = store.reconcile(cfg.destination, cfg.mask_suffix, cfg.save_format)
    assert any("a_mask.png is now a.jpg_mask.png" in line for line in lines), lines
    assert store.get("a.jpg").status == "done" and store.get("a.png").status == "todo"
    got = _coco_masks(coco_dataset(cfg, store))
    np.testing.assert_array_equal(got["a.jpg"][0], _box(A))
    assert store.reconcile(cfg.destination, cfg.mask_suffix, cfg.save_format) == []
    store.close()


def test_a_seed_folder_with_one_of_two_same_stem_photos_done_keeps_its_mask(tmp_path, clock):
    src = write_photos(tmp_path / "images", ("a.jpg", "a.png"), (W, H), 150)
    dest = tmp_path / "masks"
    dest.mkdir()
    masks.save_label_map(dest / "a_mask.png", masks.label_map([_box(A), _box(B)], (H, W)))
    (src / ".anno_prog").write_text(
        "required:\n  source: ./images\n  destination: ./masks\n"
        "annotated:\n  a.jpg: yes\n  a.png: no\n")
    store = ProgressStore(src / ".dextr_progress.json", src, clock=clock, destination=dest,
                          mask_suffix="_mask", save_format="png")
    store.sync()
    lines = store.reconcile(dest, "_mask", "png")
    assert any("a.jpg" in line and "a.jpg_mask.png" in line for line in lines), lines
    assert store.get("a.jpg").status == "done" and store.get("a.jpg").n_objects == 2
    assert len(store.objects("a.jpg")) == 2 and store.get("a.png").status == "todo"
    assert (dest / "a.jpg_mask.png").is_file() and not (dest / "a_mask.png").exists()
    store.close()


def test_a_fresh_store_does_not_give_one_shared_mask_file_to_both_photos(tmp_path, clock):
    src = write_photos(tmp_path / "images", ("a.jpg", "a.png"), (W, H), 150)
    dest = tmp_path / "masks"
    dest.mkdir()
    masks.save_label_map(dest / "a_mask.png", masks.label_map([_box(A)], (H, W)))
    store = ProgressStore(src / ".dextr_progress.json", src, clock=clock)
    store.sync()
    lines = store.reconcile(dest, "_mask", "png")
    assert [store.get(i).status for i in ("a.jpg", "a.png")] == ["todo", "todo"]
    assert any("cannot be told" in line and "a.jpg, a.png" in line for line in lines), lines
    assert (dest / "a_mask.png").is_file()
    store.close()


# ---- 2. a correction left without Image done --------------------------------------------------


@pytest.fixture
def any_store(tmp_path, clock, store_location):
    """A config over a.png and b.png with its store on each backend (file, PostgreSQL)."""
    src = write_photos(tmp_path / "images", ("a.png", "b.png"), (W, H), 150)
    cfg = load_config(write_config(tmp_path, labels=["thing"]))
    store = open_store(str(store_location), src, claim_timeout_s=600, clock=clock)
    store.sync()
    yield cfg, store
    store.close()


@pytest.mark.parametrize("ending", ["next", "lapse"])
def test_a_correction_left_without_image_done_gives_back_the_objects_its_mask_file_holds(
        any_store, clock, ending):
    cfg, store = any_store
    ana = _session(cfg, store, clock)
    _annotate(ana, "a.png", A, B)
    saved = (cfg.destination / "a_mask.png").read_bytes()
    before = [(o.object_id, o.points) for o in store.objects("a.png")]
    bob = _session(cfg, store, clock, "bob")
    bob.open("a.png")
    bob.edit()
    bob.delete(bob.objects[0])
    bob.set_points(C)
    bob.accept("thing")
    if ending == "next":
        bob.next()
    else:
        clock.advance(601)
        _session(cfg, store, clock, "cid").open_next()  # the lapsed correction is given back
    record = store.get("a.png")
    assert (record.status, record.annotator, record.n_objects) == ("done", "ana", 2)
    assert [(o.object_id, o.points) for o in store.objects("a.png")] == before
    assert (cfg.destination / "a_mask.png").read_bytes() == saved
    warnings: list[str] = []
    got = _coco_masks(coco_dataset(cfg, store, warnings=warnings))
    assert warnings == []
    np.testing.assert_array_equal(got["a.png"][0], _box(A))
    np.testing.assert_array_equal(got["a.png"][1], _box(B))
    ana.open("a.png")  # its masks as they were, though the correction removed A's object file
    ana.edit()
    np.testing.assert_array_equal(ana.mask(ana.objects[0]), _box(A))


def test_brush_edits_of_a_correction_left_without_image_done_show_up_nowhere(any_store, clock):
    """Edits of an accepted object are saved at once to its own file; when the correction ends
    without Image done the store gives the objects back, and that file must not resurface: not
    in the COCO export (built from the objects' own files), not on the read-only page, not in
    the next correction's Image done."""
    from dextr_core.strokes import Stroke

    cfg, store = any_store
    ana = _session(cfg, store, clock)
    _annotate(ana, "a.png", A, B)
    saved = (cfg.destination / "a_mask.png").read_bytes()
    bob = _session(cfg, store, clock, "bob")
    bob.open("a.png")
    bob.edit()
    bob.edit_object(bob.objects[0])
    bob.set_strokes([Stroke("paint", 3, [(30, 35), (55, 35)])])  # saved at once (save_edit)
    assert store.objects("a.png")[0].edited
    bob.next()  # the correction is left: the store gives the objects back
    assert not store.objects("a.png")[0].edited
    assert (cfg.destination / "a_mask.png").read_bytes() == saved
    warnings: list[str] = []
    got = _coco_masks(coco_dataset(cfg, store, warnings=warnings))
    np.testing.assert_array_equal(got["a.png"][0], _box(A))
    assert any("changed after the image was finished" in w for w in warnings), warnings
    ana.open("a.png")  # read-only: the saved masks
    np.testing.assert_array_equal(ana.mask(ana.objects[0]), _box(A))
    ana.edit()  # a new correction starts from the saved file
    ana.done()
    assert masks.load_label_map(cfg.destination / "a_mask.png").tolist() == \
        masks.label_map([_box(A), _box(B)], (H, W)).tolist()
    got = _coco_masks(coco_dataset(cfg, store, warnings=(after := [])))
    np.testing.assert_array_equal(got["a.png"][0], _box(A))
    assert after == []


# ---- 3. an export taken while someone finishes a correction -----------------------------------


def test_an_export_during_a_finished_correction_pairs_each_mask_with_its_own_objects(
        project, clock):
    cfg, store = project
    ana = _session(cfg, store, clock)
    _annotate(ana, "a.png", A)
    _annotate(ana, "b.png", A, B)
    bob = _session(cfg, store, clock, "bob")

    def finish_the_correction(done: int, total: int) -> None:  # after a.png, before b.png
        if done == 1:
            bob.open("b.png")
            bob.edit()
            bob.delete(bob.objects[0])
            bob.set_points(C)
            bob.accept("thing")
            bob.done()

    warnings: list[str] = []
    dataset = coco_dataset(cfg, store, progress=finish_the_correction, warnings=warnings)
    assert warnings == []
    got = _coco_masks(dataset)
    np.testing.assert_array_equal(got["b.png"][0], _box(B))
    np.testing.assert_array_equal(got["b.png"][1], _box(C))
    points = [a["points"] for a in dataset["annotations"] if a["image_id"] == 2]
    assert points == [[[float(x), float(y)] for x, y in p] for p in (B, C)]


def test_a_mask_file_naming_other_objects_than_the_store_is_left_out_with_a_warning(
        project, clock):
    cfg, store = project
    _annotate(_session(cfg, store, clock), "b.png", A, B)
    path = cfg.destination / "b_mask.png"
    masks.save_label_map(path, masks.load_label_map(path), ["someone", "else"])
    warnings: list[str] = []
    dataset = coco_dataset(cfg, store, warnings=warnings)
    assert dataset["images"] == []
    assert len(warnings) == 1 and "b.png" in warnings[0] and "different saves" in warnings[0]


# ---- 4. TIFF photos with EXIF orientation 5-8 -------------------------------------------------


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG", "PNG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_recorded_size_is_the_size_of_the_pixels_as_shown(tmp_path, fmt, orientation):
    from dextr_core.images import image_size, load_image

    path = tmp_path / f"photo.{fmt.lower()}"
    pixels = Image.fromarray(np.full((30, 50, 3), 90, np.uint8))
    if fmt == "TIFF":
        pixels.save(path, format=fmt, tiffinfo={0x0112: orientation})
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        pixels.save(path, format=fmt, exif=exif.tobytes())
    shown = load_image(path)
    assert image_size(path) == (shown.shape[1], shown.shape[0])
    assert image_size(path) == ((30, 50) if orientation >= 5 else (50, 30))


def test_a_turned_tiff_is_annotated_to_its_far_side_and_exported(tmp_path, clock):
    write_photo(tmp_path / "images" / "t.tif", (H, W), 90, tiffinfo={0x0112: 6})  # turned
    cfg = load_config(write_config(tmp_path))
    store = synced_store(cfg, clock=clock)
    assert (store.get("t.tif").width, store.get("t.tif").height) == (W, H)
    s = AnnotationSession(store, BoxSegmenter(), SessionPaths.from_config(cfg), "ana",
                          clock=clock)
    _annotate(s, "t.tif", B)  # x up to 50: outside a 40 px wide photo if the sides were swapped
    dataset = coco_dataset(cfg, store)
    assert [im["file_name"] for im in dataset["images"]] == ["t.tif"]
    store.close()


def test_a_tiff_size_recorded_turned_twice_is_corrected_by_the_next_scan(
        tmp_path, clock, monkeypatch):
    from dextr_core.store import maintenance

    src = tmp_path / "images"
    write_photo(src / "t.tif", (H, W), 90, tiffinfo={0x0112: 6})
    store = ProgressStore(src / ".dextr_progress.json", src, clock=clock)
    with monkeypatch.context() as m:  # a store of the old version: what its image_size recorded
        m.setattr(maintenance, "image_size", lambda path, *a: (H, W))
        store.sync()
    with store.backend.transaction():
        store.backend.update_meta({maintenance._TIFF_SIZES_CHECKED: False})
    assert (store.get("t.tif").width, store.get("t.tif").height) == (H, W)
    report = store.sync()
    assert (store.get("t.tif").width, store.get("t.tif").height) == (W, H)
    assert any("t.tif: size corrected" in line for line in report.lines())
    with monkeypatch.context() as m:  # checked once: later scans read no known TIFF again
        m.setattr(maintenance, "image_size", lambda path, *a: pytest.fail("read again"))
        store.sync()
    store.close()


# ---- 5. an empty mask is never accepted -------------------------------------------------------


class EmptySegmenter(BoxSegmenter):
    name = "empty"

    def segment(self, image, points):
        return np.zeros((H, W), bool)


def test_accept_refuses_an_empty_mask_and_keeps_the_clicks(project, clock):
    from dextr_core.session import SessionError

    cfg, store = project
    s = AnnotationSession(store, EmptySegmenter(), SessionPaths.from_config(cfg), "ana",
                          clock=clock, load=lambda p: np.full((H, W, 3), 150, np.uint8))
    s.open("b.png")
    s.set_points(A)
    with pytest.raises(SessionError, match="empty"):
        s.accept("thing")
    assert store.objects("b.png") == [] and s.points == A
    assert not (cfg.destination / ".drafts" / "b.png").exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1.5])
def test_a_model_service_answer_that_is_not_probabilities_is_refused(bad):
    from dextr_core.remote import NET_SIZE, decode_probability

    prob = np.full((NET_SIZE, NET_SIZE), 0.9, np.float32)
    prob[3, 4] = bad
    body = io.BytesIO()
    np.save(body, prob, allow_pickle=False)
    with pytest.raises(ValueError, match="NaN or infinite|not probabilities"):
        decode_probability(body.getvalue())
    prob[3, 4] = 1.0
    body = io.BytesIO()
    np.save(body, prob, allow_pickle=False)
    assert decode_probability(body.getvalue()).shape == (NET_SIZE, NET_SIZE)


# ---- 6. a slow or oversized model-service answer ----------------------------------------------


class _Service:
    """A local HTTP server acting as a broken model service: ``mode`` says how it answers."""

    def __init__(self, mode: str):
        import http.server
        import threading

        self.mode = mode
        self.stop = threading.Event()
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._answer()

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._answer()

            def _answer(self):
                import time

                if service.mode == "stall":  # accepts, never answers
                    service.stop.wait(30)
                    return
                self.send_response(200)
                if service.mode == "trickle":  # a complete answer, one byte every 0.1 s
                    body = b"x" * 200
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    for byte in body:
                        if service.stop.wait(0.1):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                else:  # "huge": 64 MB, announced or not
                    if service.mode == "huge":
                        self.send_header("Content-Length", str(64 << 20))
                    self.end_headers()
                    block = b"\0" * (1 << 20)
                    with contextlib.suppress(OSError):
                        for _ in range(64):
                            self.wfile.write(block)
                time.sleep(0)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dextr"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service(request):
    made = []

    def make(mode):
        made.append(_Service(mode))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_a_trickling_answer_ends_at_the_total_timeout(service):
    import time

    from dextr_core.remote import ModelServiceError, RemoteSegmenter

    remote = RemoteSegmenter(service("trickle").url, timeout=1.0, retries=0, check=False)
    t0 = time.monotonic()
    with pytest.raises(ModelServiceError, match="no answer in time"):
        remote.predict_network(np.zeros((512, 512, 3), np.uint8), np.array([[1, 1]] * 4))
    assert time.monotonic() - t0 < 3.0


@pytest.mark.parametrize("mode", ["huge", "huge-unannounced"])
def test_an_answer_over_the_size_cap_is_refused_without_reading_it(service, mode):
    from dextr_core.remote import MAX_ANSWER_BYTES, ModelServiceError, RemoteSegmenter

    remote = RemoteSegmenter(service(mode).url, timeout=20.0, retries=0, check=False)
    with pytest.raises(ModelServiceError, match=f"more than the {MAX_ANSWER_BYTES:,}"):
        remote.predict_network(np.zeros((512, 512, 3), np.uint8), np.array([[1, 1]] * 4))


def test_the_apps_start_waits_on_a_stalled_service_only_briefly(service):
    import time

    from dextr_core.remote import load_remote_or_fallback

    t0 = time.monotonic()
    choice = load_remote_or_fallback(service("stall").url, lambda: "local engine",
                                     start_timeout=0.5, sleep=lambda s: None)
    assert time.monotonic() - t0 < 2.0
    assert choice.segmenter == "local engine" and "no answer in time" in str(choice.error)


# ---- 8. a photo renamed or removed while open -------------------------------------------------


def test_a_photo_removed_while_open_is_closed_with_a_message_and_its_objects_kept(
        project, clock):
    cfg, store = project
    s = AnnotationSession(store, BoxSegmenter(), SessionPaths.from_config(cfg), "ana",
                          clock=clock)
    assert s.open_next().image_id == "a.jpg"
    s.set_points(A)
    s.accept("thing")
    (cfg.source / "a.jpg").rename(cfg.source / "renamed.jpg")
    assert s.refresh() is None and s.image_id is None
    assert store.get("a.jpg").status != "in_progress" and len(store.objects("a.jpg")) == 1
    assert s.open_next().image_id == "a.png"
    assert any(n.startswith("a.jpg: the photo is no longer in the source folder")
               for n in s.passed_over), s.passed_over


def test_the_annotate_page_moves_on_from_a_photo_removed_while_open(tmp_path, monkeypatch):
    from test_app import _app, _current_image, _photo, _texts

    src = tmp_path / "src"
    src.mkdir()
    for i, name in enumerate(("a.png", "b.png")):
        Image.fromarray(_photo(i)).save(src / name)
    cfg = write_config(tmp_path, "src", "out")
    monkeypatch.setenv("ANNO_CFG", str(cfg))
    at = _app()
    assert _current_image(at) == "a.png"
    (src / "a.png").unlink()
    at.run()
    assert not at.exception
    assert _current_image(at) == "b.png"
    assert "a.png: the photo is no longer in the source folder" in _texts(at.warning)
    at.run()
    assert not at.exception and _current_image(at) == "b.png"


# ---- 9. PostgreSQL addresses, connection failures, NUL bytes ----------------------------------


@pytest.mark.parametrize("url", ["postgresql://ana:secret@localhost:abc/annotations",
                                 "postgresql://ana:secret@db host/annotations",
                                 "postgresql://ana:secret@localhost:5432/annotations?colour=1"])
def test_a_malformed_postgresql_address_is_a_clear_message_without_the_password(tmp_path, url):
    from dextr_core.store import StoreInputError

    with pytest.raises(StoreInputError, match="not a valid PostgreSQL address") as caught:
        open_store(url, tmp_path)
    assert "secret" not in str(caught.value) and "postgresql://USER:PASSWORD@" in str(caught.value)


def test_the_pages_show_a_malformed_address_instead_of_crashing(tmp_path, monkeypatch):
    from test_app import _app, _texts

    (tmp_path / "src").mkdir()
    cfg = tmp_path / "anno_cfg.yml"
    cfg.write_text("required:\n  source: src\n  destination: out\n"
                   "admin:\n  database: postgresql://ana:secret@localhost:abc/annotations\n")
    monkeypatch.setenv("ANNO_CFG", str(cfg))
    at = _app()
    assert not at.exception
    text = _texts(at.error)
    assert "not a valid PostgreSQL address" in text and "progress file" not in text


def test_a_connection_refusal_says_the_servers_reason_and_what_to_do(pg_server, tmp_path):
    from dextr_core.store import StoreWriteError

    for url, reason, fix in [
            (pg_server.url_of("no_such_db"), 'database "no_such_db" does not exist', "createdb"),
            (pg_server.url_of("postgres").replace("postgres@", "nobody@"),
             'role "nobody" does not exist', "that user does not exist")]:
        with pytest.raises(StoreWriteError) as caught:
            open_store(url, tmp_path, connect_timeout_s=5)
        text = str(caught.value)
        assert reason in text and fix in text and "pool" not in text, text


def test_a_wrong_password_is_named_as_such():
    from dextr_core.store.postgres import _connect_failure

    text = _connect_failure(Exception('connection failed: FATAL:  password authentication '
                                      'failed for user "ana"'))
    assert 'password authentication failed for user "ana"' in text
    assert "user name or password is wrong" in text


def test_a_name_with_a_nul_byte_is_refused_alike_on_every_backend(any_store):
    from dextr_core.store import ObjectRecord, StoreInputError

    _, store = any_store
    with pytest.raises(StoreInputError, match="control characters"):
        store.claim("a.png", "ana\x00")
    store.claim("a.png", "ana")
    with pytest.raises(StoreInputError, match="control characters"):
        store.add_object("a.png", "ana", ObjectRecord(label="cat\x00", points=A))
    assert store.objects("a.png") == [] and store.get("a.png").status == "in_progress"


# ---- 10. the tab token in the address; exports of photos gone from disk -----------------------


def test_an_overlong_or_odd_tab_token_in_the_address_is_replaced_by_a_fresh_one(
        tmp_path, monkeypatch):
    from test_app import _app, _current_image, _photo, _tab

    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.png", "b.png", "c.png", "d.png"):
        Image.fromarray(_photo(1)).save(src / name)
    cfg = write_config(tmp_path, "src", "out")
    monkeypatch.setenv("ANNO_CFG", str(cfg))
    for name, given in (("ana", "f" * 500), ("ben", "a b<script>"), ("cy", "short")):
        at = _app(name, tab=given)
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert _current_image(at).endswith(".png")
        assert _tab(at) != given and len(_tab(at)) == 32
    kept = _app("dan", tab="0123456789abcdef")  # a well-formed token is the tab's own (a refresh)
    assert _tab(kept) == "0123456789abcdef"


def test_an_export_warns_about_photos_gone_from_the_source_folder(project, clock, tmp_path):
    cfg, store = project
    s = _session(cfg, store, clock)
    _annotate(s, "a.png", A)
    _annotate(s, "b.png", B)
    (cfg.source / "b.png").unlink()
    for fmt in ("coco", "masks"):
        result = run_export(cfg, store, fmt, tmp_path / f"out-{fmt}.zip", as_zip=True)
        assert result.images == 2
        (warning,) = result.warnings
        assert "1 exported image(s) are no longer in the source folder" in warning
        assert "b.png" in warning and "a.png" not in warning


def test_clashing_ids_near_one_image_agrees_with_the_whole_store():
    ids = ["a.jpg", "A.png", "a.jpg.png", "a.jpg.png.tif", "ab.png", "b.png", "sub/a.jpg",
           "sub/a.png", "sub/ab.png", "c.d.png", "c.d.jpg", "c.png"]
    everything = masks.clashing_ids(ids)
    for image_id in ids:
        assert (image_id in masks.clashing_ids(ids, near=image_id)) == (image_id in everything)
