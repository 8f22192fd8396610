"""The DEXTR-AnnoTool import (its ruamel.yaml progress file, its masks) and the folder scan rules
(masks beside the photos, unreadable headers)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from annotool import anno_prog_text, write_anno_prog
from pg_server import tinydb_only
from projects import POINTS, write_photos

from dextr_core.images import ImageReadError
from dextr_core.masks import mask_path, save_label_map
from dextr_core.store import LEGACY_ANNOTATOR, ProgressStore, maintenance, open_store
from dextr_core.store.records import StoreInputError, StoreWriteError

# DEXTR-AnnoTool's progress file for the source fixture below, written by ruamel.yaml the way the
# tool writes it (tests/annotool.py): True when it saved a mask, "skip" / "yes" edited in by hand.
SEED = {"a.jpg": True, "sub/b.jpg": "skip", "c d.jpg": False, "e.jpg": "yes"}
SEED_TEXT = anno_prog_text(SEED)
SEED_COUNTS = {"done": 2, "skipped": 1, "todo": 1}


@tinydb_only
def test_the_fixture_is_what_ruamel_yaml_writes_in_the_tools_shape():
    # required: is the config's section (its comments come along), not a list of images; PyYAML
    # (YAML 1.1) reads yes/no as booleans, which ruamel.yaml (YAML 1.2) leaves plain.
    assert SEED_TEXT == (
        "required:\n"
        "  source: ./images    # path to the dir containing images to be annotated\n"
        "  destination: ./images/segMasks    # path to the dir where the generated masks should "
        "be saved\n"
        "\n"
        "# Optional parameters\n"
        "annotated:\n"
        "  a.jpg: true\n"
        "  sub/b.jpg: skip\n"
        "  c d.jpg: false\n"
        "  e.jpg: yes\n")
    assert yaml.safe_load(SEED_TEXT)["required"] == {"source": "./images",
                                                     "destination": "./images/segMasks"}


@pytest.fixture
def source(tmp_path) -> Path:
    src = tmp_path / "images"
    write_photos(src, ["a.jpg", "sub/b.jpg", "c d.jpg", "e.jpg", "f.jpg"])
    return src


_PG_LOCATIONS: dict[Path, str] = {}


@pytest.fixture(autouse=True)
def _backend(store_backend, tmp_path, request):
    """Every test here runs on both backends; new_store() opens the test's one."""
    if store_backend == "postgresql":
        _PG_LOCATIONS[tmp_path] = request.getfixturevalue("pg_url")
    yield store_backend
    _PG_LOCATIONS.pop(tmp_path, None)


def new_store(tmp_path, source, clock, **kw) -> ProgressStore:
    location = _PG_LOCATIONS.get(tmp_path, tmp_path / "store" / "progress.json")
    return open_store(location, source, clock=clock, **kw)


def statuses(store: ProgressStore) -> dict[str, str]:
    return {r.id: r.status for r in store.images()}


def test_a_ruamel_progress_file_is_imported_and_never_written(tmp_path, source, clock):
    legacy = source / ".anno_prog"
    written = write_anno_prog(legacy, SEED)
    stat = legacy.stat()
    store = new_store(tmp_path, source, clock, legacy_base=tmp_path)
    report = store.sync()
    assert statuses(store) == {"a.jpg": "done", "sub/b.jpg": "skipped", "c d.jpg": "todo",
                               "e.jpg": "done", "f.jpg": "todo"}
    assert report.legacy_imported == SEED_COUNTS
    assert report.legacy_file == legacy
    assert any("Imported DEXTR-AnnoTool progress" in line for line in report.lines())
    assert not any("required." in line for line in report.lines())  # its paths are the config's
    assert store.get("a.jpg").annotator == LEGACY_ANNOTATOR
    assert legacy.read_bytes() == written
    assert (legacy.stat().st_mtime_ns, legacy.stat().st_ino) == (stat.st_mtime_ns, stat.st_ino)
    # imported once: a later change of the file is not imported again
    write_anno_prog(legacy, {**SEED, "c d.jpg": True})
    store.sync()
    assert store.get("c d.jpg").status == "todo"
    store.close()


@pytest.mark.parametrize("done, todo", [
    (True, False), ("yes", "no"), ("'yes'", "'no'"), ("true", "false"), ('"Yes"', '"No"'),
])
def test_yes_and_no_are_read_as_booleans_or_strings(tmp_path, source, clock, done, todo):
    if isinstance(done, bool):  # what the tool itself writes: ruamel.yaml's true / false
        write_anno_prog(source / ".anno_prog", {"a.jpg": done, "e.jpg": todo})
    else:  # edited by hand, quoted or not
        (source / ".anno_prog").write_text(
            "required:\n  source: ./images\n  destination: ./images/segMasks\n"
            f"annotated:\n  a.jpg: {done}\n  e.jpg: {todo}\n")
    store = new_store(tmp_path, source, clock)
    store.sync()
    assert (store.get("a.jpg").status, store.get("e.jpg").status) == ("done", "todo")
    store.close()


def test_the_first_versions_flat_mapping_is_still_read(tmp_path, source, clock):
    (source / ".anno_prog").write_text("a.jpg: yes\nb.jpg: skip\n")  # b.jpg: by its unique name
    store = new_store(tmp_path, source, clock, legacy_base=tmp_path)
    report = store.sync()
    assert store.get("a.jpg").status == "done" and store.get("sub/b.jpg").status == "skipped"
    assert report.legacy_imported == {"done": 1, "skipped": 1}
    store.close()


@pytest.mark.parametrize("text, problem", [
    ("required: [a.jpg\nannotated: {", "could not be read"),
    ("annotated:\n- a.jpg\n- e.jpg\n", "'annotated:' holding a list"),
    ("required: a.jpg\nannotated:\n  a.jpg: yes\n", "'required:' holding a str"),
    ("required:\n- a.jpg\nannotated:\n  a.jpg: yes\n", "'required:' holding a list"),
    ("- a.jpg\n", "is not a mapping"),
    (anno_prog_text({"x.jpg": True, "y.jpg": "skip"}), "None of the 2 images"),
])
def test_a_progress_file_that_cannot_be_parsed_is_reported_and_tried_again(
    tmp_path, source, clock, text, problem
):
    legacy = source / ".anno_prog"
    legacy.write_bytes(text.encode())
    store = new_store(tmp_path, source, clock)
    report = store.sync()
    assert report.legacy_imported is None
    assert any(problem in line and "the next sync tries again" in line for line in report.lines())
    assert set(statuses(store).values()) == {"todo"}
    assert legacy.read_bytes() == text.encode()  # left as it is
    write_anno_prog(legacy, SEED)  # fixed: the next sync imports it
    assert store.sync().legacy_imported == SEED_COUNTS
    store.close()


def test_a_progress_file_that_is_not_utf8_is_reported_not_imported(tmp_path, source, clock):
    (source / ".anno_prog").write_bytes(b"annotated:\n  a.jpg: yes\n  \xff\xfe: no\n")
    store = new_store(tmp_path, source, clock)
    report = store.sync()
    assert report.legacy_imported is None and any("could not be read" in m for m in report.messages)
    store.close()


def test_a_legacy_file_named_by_the_config_is_used_and_a_missing_one_is_reported(
    tmp_path, source, clock
):
    named = source / "progress.yml"
    store = new_store(tmp_path, source, clock, legacy_file=named)
    report = store.sync()
    assert report.legacy_imported is None
    assert any(str(named) in m and "not found" in m for m in report.messages)
    (source / ".anno_prog").write_text("a.jpg: yes\n")  # the default name is not used then
    write_anno_prog(named, SEED)
    assert store.sync().legacy_imported == SEED_COUNTS
    store.close()


def test_names_not_in_the_source_and_values_not_yes_no_skip_are_reported(
    tmp_path, source, clock
):
    (source / "e.jpg").unlink()  # an image of the seed's list gone from the folder
    write_anno_prog(source / ".anno_prog", {"a.jpg": True, "e.jpg": True, "other.jpg": "yes",
                                            "c d.jpg": "maybe"})
    store = new_store(tmp_path, source, clock)
    report = store.sync()
    lines = " | ".join(report.lines())
    assert "2 entr(y/ies)" in lines and "e.jpg" in lines and "other.jpg" in lines
    assert "c d.jpg: 'maybe'" in lines
    assert store.get("a.jpg").status == "done" and store.get("c d.jpg").status == "todo"
    assert store.get("e.jpg") is None and report.legacy_imported == {"done": 1}
    store.close()


@pytest.mark.parametrize("paths, differ", [
    ({"source": "./images", "destination": "./images/segMasks"}, []),
    ({"source": "images/", "destination": "{tmp}/images/segMasks"}, []),
    ({"source": "./ims", "destination": "./images/segMasks"}, ["source"]),
    ({"source": "./images", "destination": "./ims/segMasks"}, ["destination"]),
    ({"source": "/elsewhere/ims", "destination": "/elsewhere/ims/segMasks"},
     ["source", "destination"]),
])
def test_required_paths_that_are_not_the_configs_are_reported_and_the_file_still_imported(
    tmp_path, source, clock, paths, differ
):
    dest = tmp_path / "images" / "segMasks"
    _seed_mask(dest, "a.jpg", 2)
    paths = {k: v.format(tmp=tmp_path) for k, v in paths.items()}
    write_anno_prog(source / ".anno_prog", SEED, **paths)
    store = new_store(tmp_path, source, clock, legacy_base=tmp_path, destination=dest,
                      exclude_dirs=(dest,), mask_suffix="_mask", save_format="png")
    report = store.sync()
    assert report.legacy_imported == SEED_COUNTS  # a message, not a refusal
    lines = [line for line in report.lines() if "its required." in line]
    assert [line.split("its required.")[1].split(":")[0] for line in lines] == differ
    if "source" in differ:
        line = lines[0]
        assert str(source) in line and repr(paths["source"]) in line and str(tmp_path) in line
    if "destination" in differ:
        line = lines[-1]
        assert str(dest) in line and repr(paths["destination"]) in line
        assert "found for 1 of the 2 images it marked done" in line
    store.close()


def test_required_paths_are_not_compared_without_the_configs_folder(tmp_path, source, clock):
    write_anno_prog(source / ".anno_prog", SEED, source="./ims", destination="./ims/segMasks")
    store = new_store(tmp_path, source, clock, destination=tmp_path / "masks")
    report = store.sync()
    assert report.legacy_imported == SEED_COUNTS
    assert not any("its required." in line for line in report.lines())
    store.close()


# ---- the seed's masks become the imported images' objects ---------------------------------------


def _seed_mask(dest: Path, image_id: str, n: int, fmt: str = "png") -> Path:
    labels = np.zeros((30, 40), np.uint8)
    for i in range(1, n + 1):
        labels[2 * i : 2 * i + 2, 5:20] = i
    path = mask_path(dest, image_id, "_mask", fmt)
    save_label_map(path, labels)
    return path


def test_imported_done_images_with_a_mask_file_get_its_labels_as_objects(tmp_path, source, clock):
    dest = tmp_path / "masks"
    write_anno_prog(source / ".anno_prog", SEED)
    a = _seed_mask(dest, "a.jpg", 3)
    e = _seed_mask(dest, "e.jpg", 2)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (a, e)}
    store = new_store(tmp_path, source, clock, destination=dest, mask_suffix="_mask",
                      save_format="png", labels=["cat", "dog"])
    report = store.sync()
    objs = store.objects("a.jpg")
    assert [(o.index, o.label, o.points, o.engine, o.annotator) for o in objs] == [
        (i, "cat", [], "DEXTR-AnnoTool", LEGACY_ANNOTATOR) for i in (1, 2, 3)]
    assert len({o.object_id for o in objs}) == 3 and all(objs[0].object_id for o in objs)
    assert store.get("a.jpg").n_objects == 3 and store.get("e.jpg").n_objects == 2
    assert store.objects("c d.jpg") == [] and store.objects("sub/b.jpg") == []
    assert store.summary()["objects"] == 5
    assert any("2 image(s) imported as done had mask files" in line for line in report.lines())
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (a, e)} == before  # untouched
    # they survive a reopen, and reconcile has nothing left to fix for them
    again = open_store(getattr(store, "url", store.path), source, clock=clock)
    assert again.objects("a.jpg") == objs
    assert again.reconcile(dest, "_mask", "png") == []
    again.close()
    store.close()


@pytest.mark.parametrize("save_format, found", [("npy", 1), (None, 1), ("png", 0)])
def test_the_seed_masks_are_read_in_the_configured_format(tmp_path, source, clock, save_format,
                                                         found):
    dest = tmp_path / "masks"
    (source / ".anno_prog").write_text("a.jpg: yes\n")
    _seed_mask(dest, "a.jpg", 1, fmt="npy")
    store = new_store(tmp_path, source, clock, destination=dest, mask_suffix="_mask",
                      save_format=save_format)
    store.sync()
    assert len(store.objects("a.jpg")) == found
    store.close()


def test_imported_objects_default_to_the_label_object_without_configured_labels(
    tmp_path, source, clock
):
    dest = tmp_path / "masks"
    (source / ".anno_prog").write_text("a.jpg: yes\n")
    _seed_mask(dest, "a.jpg", 1)
    store = new_store(tmp_path, source, clock, destination=dest, mask_suffix="_mask")
    store.sync()
    assert [o.label for o in store.objects("a.jpg")] == ["object"]
    store.close()


def test_an_imported_image_with_objects_can_be_reopened_and_extended(tmp_path, source, clock):
    from dextr_core.store import ObjectRecord

    dest = tmp_path / "masks"
    (source / ".anno_prog").write_text("a.jpg: yes\n")
    _seed_mask(dest, "a.jpg", 2)
    store = new_store(tmp_path, source, clock, destination=dest, mask_suffix="_mask")
    store.sync()
    store.claim("a.jpg", "ana", session="s1")
    added = store.add_object("a.jpg", "ana", ObjectRecord(points=POINTS), session="s1")
    assert added.index == 3
    seen = []
    rec = store.complete("a.jpg", "ana", session="s1", write=lambda objs: seen.append(objs))
    assert rec.n_objects == 3 and [o.engine for o in seen[0]][:2] == ["DEXTR-AnnoTool"] * 2
    store.close()


# ---- scan rules --------------------------------------------------------------------------------


@tinydb_only
def test_masks_beside_the_photos_are_not_queued_when_source_is_destination(tmp_path, clock):
    src = tmp_path / "photos"
    write_photos(src, ["a.jpg", "a_mask.png", "sub/b.png", "sub/b_mask.png", "masked.jpg"])
    store = ProgressStore(tmp_path / "p.json", src, clock=clock, destination=src,
                          mask_suffix="_mask", save_format="png")
    store.sync()
    assert store.image_ids() == ["a.jpg", "masked.jpg", "sub/b.png"]
    store.close()
    # elsewhere, a photo whose name ends like the suffix is a photo
    other = ProgressStore(tmp_path / "q.json", src, clock=clock, destination=tmp_path / "out",
                          mask_suffix="_mask")
    other.sync()
    assert "a_mask.png" in other.image_ids()
    other.close()


@tinydb_only
def test_masks_queued_by_an_earlier_scan_are_flagged_missing_not_handed_out(tmp_path, clock):
    src = tmp_path / "photos"
    write_photos(src, ["a.jpg", "a_mask.png"])
    first = ProgressStore(tmp_path / "p.json", src, clock=clock)
    first.sync()
    first.close()
    store = ProgressStore(tmp_path / "p.json", src, clock=clock, destination=src,
                          mask_suffix="_mask")
    report = store.sync()
    assert report.vanished == ["a_mask.png"]
    assert store.claim_next("ana").id == "a.jpg" and store.claim_next("bob") is None
    store.close()


def test_an_unreadable_header_marks_the_image_unreadable_names_it_and_the_scan_goes_on(
    tmp_path, source, clock, monkeypatch
):
    (source / "broken.jpg").write_bytes(b"not a jpeg at all")
    real = maintenance.image_size

    def budget(path, *args, **kwargs):
        if Path(path).name == "e.jpg":
            raise ImageReadError("e.jpg: 40000 x 40000 px = 1600 MP is over the 200 MP limit")
        if Path(path).name == "f.jpg":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(maintenance, "image_size", budget)
    store = new_store(tmp_path, source, clock)
    report = store.sync()
    assert sorted(report.unreadable) == ["broken.jpg", "e.jpg", "f.jpg"]
    assert "over the 200 MP limit" in report.unreadable_reasons["e.jpg"]
    assert "Permission denied" in report.unreadable_reasons["f.jpg"]
    assert any("3 image(s) cannot be read" in line and "broken.jpg" in line
               for line in report.lines())
    assert store.get("e.jpg").status == "unreadable" and "1600 MP" in store.get("e.jpg").error
    assert len(report.added) == 6  # the others were scanned as usual
    handed = [store.claim_next(n) for n in ("x", "y", "z", "w")]
    assert [r and r.id for r in handed] == ["a.jpg", "c d.jpg", "sub/b.jpg", None]
    store.close()


# ---- open_store ----------------------------------------------------------------------------------


@tinydb_only
def test_open_store_opens_a_file_store(tmp_path, source, clock):
    store = open_store(tmp_path / "p.json", source, clock=clock, mask_suffix="_mask")
    assert isinstance(store, ProgressStore) and store.mask_suffix == "_mask"
    store.sync()
    assert len(store) == 5
    store.close()
    again = open_store(str(tmp_path / "p.json"), source)
    assert len(again) == 5
    again.close()


@tinydb_only
@pytest.mark.parametrize("url", ["postgresql://team:secret@127.0.0.1:1/annotations",
                                 "postgres://127.0.0.1:1/x", "postgresql+psycopg://127.0.0.1:1/x"])
def test_open_store_with_an_unreachable_postgresql_url_says_so_without_the_password(
        tmp_path, source, url):
    pytest.importorskip("psycopg")
    with pytest.raises(StoreWriteError, match="Could not connect to the progress database") as err:
        open_store(url, source, connect_timeout_s=1)
    assert "secret" not in str(err.value) and "127.0.0.1:1" in str(err.value)
    assert not os.path.exists("postgresql:")


@tinydb_only
def test_open_store_with_another_url_asks_for_a_path(tmp_path, source):
    with pytest.raises(StoreInputError, match="file path"):
        open_store("mysql://db/x", source)


def test_a_deleted_seed_mask_takes_its_imported_objects_with_it_on_reconcile(
    tmp_path, source, clock
):
    dest = tmp_path / "masks"
    (source / ".anno_prog").write_text("a.jpg: yes\n")
    path = _seed_mask(dest, "a.jpg", 2)
    store = new_store(tmp_path, source, clock, destination=dest, mask_suffix="_mask",
                      save_format="png")
    store.sync()
    path.unlink()
    lines = store.reconcile(dest, "_mask", "png")
    assert len(lines) == 1 and "imported from that DEXTR-AnnoTool mask are gone" in lines[0]
    rec = store.get("a.jpg")
    assert (rec.status, rec.n_objects) == ("todo", 0) and store.objects("a.jpg") == []
    assert store.summary()["objects"] == 0
    store.close()
