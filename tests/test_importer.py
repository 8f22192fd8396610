"""The importer: COCO (RLE, compressed RLE, polygons) and label-map folders become objects to
check; Image done through AnnotationSession gives back the source masks; re-imports add nothing;
malformed files write nothing; the annotate page lists imported objects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from projects import linked_project, write_config, write_photo
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from dextr_core.config import load_config
from dextr_core.importer import ImportFileError, main, run_import
from dextr_core.masks import label_map, load_label_map, mask_path, save_label_map
from dextr_core.session import AnnotationSession, SessionPaths
from dextr_core.store import ProgressStore

# photo id -> (evaldata photo, [(category, evaldata mask), ...]); no two objects overlap
PHOTOS = {
    "planes/281693.jpg": ("coco_mval/images/airplane00_000000281693.jpg", [
        ("airplane", "coco_mval/masks/airplane00_000000281693.png"),
        ("airplane", "coco_mval/masks/airplane01_000000281693.png")]),
    "kitchen/66841.jpg": ("coco_mval/images/bottle00_000000066841.jpg", [
        ("bottle", "coco_mval/masks/bottle00_000000066841.png")]),
    "b/163014.png": ("berkeley/images/163014.png", [("object",
                                                      "berkeley/masks/163014.png")]),
}
LABELS = ["airplane", "bottle", "object"]


class NoModel:
    """Imported objects carry their masks: the session must never segment them again."""

    name = "no model"

    def segment(self, image, points):
        raise AssertionError("an imported object was segmented again")


def _config(tmp_path: Path, photos: dict, labels=LABELS):
    """A project over ``photos`` whose config has comments (they must survive --add-labels)."""
    return linked_project(tmp_path, photos, labels, header="# my team's config\n",
                          optional="  # classes\n")


def _coco_file(path: Path, evaldata: Path, kind: str) -> Path:
    """A COCO file of PHOTOS' objects: "rle" (compressed; the second airplane uncompressed) or
    "polygon" (outlines traced here with OpenCV's simple chain, not the exporter's code)."""
    import cv2

    images, anns, cats = [], [], {}
    for n, (image_id, (photo, objects)) in enumerate(PHOTOS.items(), start=1):
        w, h = Image.open(evaldata / photo).size
        images.append({"id": n * 10, "file_name": "./" + image_id if n == 1 else
                       Path(image_id).name if n == 2 else image_id, "width": w, "height": h})
        for k, (category, mask_file) in enumerate(objects):
            mask = np.asarray(Image.open(evaldata / mask_file).convert("L")) > 127
            cats.setdefault(category, len(cats) + 1)
            if kind == "rle":
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                seg = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
                if k == 1:  # uncompressed: run lengths in column-major order
                    flat = mask.ravel(order="F").astype(np.int8)
                    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])) != 0)
                    seg = {"size": [h, w], "counts": np.diff(np.concatenate([[0], edges]))
                           .astype(int).tolist()}
                    if flat[0]:  # RLE starts with a run of zeros
                        seg["counts"] = [0, *seg["counts"]]
                    assert isinstance(seg["counts"], list)
            else:
                contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                               cv2.CHAIN_APPROX_SIMPLE)
                seg = [c.ravel().astype(float).tolist() for c in contours if len(c) >= 3]
            anns.append({"id": 1000 + len(anns), "image_id": n * 10, "category_id": cats[category],
                         "segmentation": seg, "iscrowd": 0})
    images.append({"id": 99, "file_name": "elsewhere/unknown.jpg", "width": 10, "height": 10})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": i, "name": c} for c, i in cats.items()]}
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("kind", ["rle", "polygon"])
def test_coco_import_then_image_done_gives_the_source_masks(evaldata_dir, tmp_path, kind):
    cfg, store = _config(tmp_path, {i: evaldata_dir / p for i, (p, _) in PHOTOS.items()})
    coco_path = _coco_file(tmp_path / f"{kind}.json", evaldata_dir, kind)
    result = run_import(cfg, store, coco=coco_path)
    assert result.imported == {"planes/281693.jpg": 2, "kitchen/66841.jpg": 1,
                               "b/163014.png": 1}
    assert result.unknown == ["elsewhere/unknown.jpg"]
    coco = COCO(str(coco_path))
    names = {img["id"]: img["file_name"].removeprefix("./") for img in coco.dataset["images"]}
    session = AnnotationSession(store, NoModel(), SessionPaths.from_config(cfg), "ana")
    for image_id in PHOTOS:
        status = session.open(image_id)
        assert status.editable and status.status == "in_progress"
        objects = session.objects
        assert [o.label for o in objects] == [c for c, _ in PHOTOS[image_id][1]]
        assert all(o.points == [] for o in objects)
        coco_id = next(k for k, v in names.items() if image_id.endswith(v))
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=[coco_id])), key=lambda a: a["id"])
        want = [coco.annToMask(a).astype(bool) for a in anns]
        done = session.done()
        assert done.n_objects == len(want)
        saved = load_label_map(mask_path(cfg.destination, image_id, "_mask", "png"))
        np.testing.assert_array_equal(saved, label_map(want, want[0].shape))
    assert store.get("b/163014.png").status == "done"
    store.close()


@pytest.fixture()
def small(tmp_path):
    """Two made-up photos (a.png 40x30, sub/b.jpg 50x20) and a COCO file with one object on
    each (compressed RLE on a.png, a polygon on b.jpg) labelled car."""
    photos = {}
    for name, (w, h) in [("a.png", (40, 30)), ("sub/b.jpg", (50, 20))]:
        photos[name] = write_photo(tmp_path / "made" / name, (w, h), 90)
    cfg, store = _config(tmp_path, photos, labels=["car", "person"])
    mask = np.zeros((30, 40), np.uint8)
    mask[5:15, 10:30] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
                       {"id": 2, "file_name": "sub/b.jpg", "width": 50, "height": 20}],
            "annotations": [
                {"id": 7, "image_id": 1, "category_id": 3,
                 "segmentation": {"size": [30, 40], "counts": rle["counts"].decode()}},
                {"id": 8, "image_id": 2, "category_id": 3,
                 "segmentation": [[2, 2, 20, 2, 20, 15, 2, 15]]}],
            "categories": [{"id": 3, "name": "car"}]}
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    yield cfg, store, path, data
    store.close()


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) \
        if folder.exists() else []


def test_importing_the_same_file_again_adds_nothing(small):
    cfg, store, path, data = small
    data["annotations"].append({"id": 9, "image_id": 1, "category_id": 3,
                                "segmentation": [[-9, -9, -5, -9, -5, -5]]})  # outside: empty
    path.write_text(json.dumps(data))
    first = run_import(cfg, store, coco=path)
    assert first.imported == {"a.png": 1, "sub/b.jpg": 1}
    assert any("empty mask" in line and "9" in line for line in first.lines())
    ids = [o.object_id for o in store.objects()]
    assert ids == ["coco-7", "coco-8"]
    again = run_import(cfg, store, coco=path)
    assert again.imported == {} and sorted(again.already) == ["a.png", "sub/b.jpg"]
    assert [o.object_id for o in store.objects()] == ids
    assert store.get("a.png").status == "todo"


def test_photos_in_progress_or_done_are_left_alone_and_listed(small):
    cfg, store, path, _ = small
    store.claim("a.png", "bob")
    result = run_import(cfg, store, coco=path, status="done")
    assert result.imported == {"sub/b.jpg": 1}
    assert result.left_alone == ["a.png (in progress)"]
    assert store.objects("a.png") == []
    assert store.get("sub/b.jpg").status == "done"
    saved = load_label_map(mask_path(cfg.destination, "sub/b.jpg", "_mask", "png"))
    assert saved.max() == 1 and saved[2:15, 2:20].all()  # polygon edges at pixel borders
    assert any("left alone" in line and "a.png" in line for line in result.lines())
    again = run_import(cfg, store, coco=path, status="done")
    assert again.imported == {} and again.already == ["sub/b.jpg"]


def _broken(data, how):
    data = json.loads(json.dumps(data))
    if how == "not json":
        return "{not json"
    if how == "no annotations":
        del data["annotations"]
    elif how == "unknown image":
        data["annotations"][1]["image_id"] = 5
    elif how == "unknown category":
        data["annotations"][1]["category_id"] = 9
    elif how == "wrong size":
        data["annotations"][0]["segmentation"]["size"] = [31, 40]
    elif how == "short polygon":
        data["annotations"][1]["segmentation"] = [[1, 1, 5, 5]]
    elif how == "photo size":
        data["images"][0]["width"] = 41
    elif how == "duplicate id":
        data["annotations"][1]["id"] = 7
    return json.dumps(data)


@pytest.mark.parametrize("how", ["not json", "no annotations", "unknown image",
                                 "unknown category", "wrong size", "short polygon",
                                 "photo size", "duplicate id"])
def test_a_malformed_file_is_refused_with_the_reason_and_nothing_written(small, how):
    cfg, store, path, data = small
    path.write_text(_broken(data, how))
    before = store.events()
    with pytest.raises(ImportFileError, match="Nothing was written"):
        run_import(cfg, store, coco=path)
    assert store.objects() == [] and len(store.events()) == len(before)
    assert _files(cfg.destination) == []


def test_unknown_labels_are_refused_or_added_to_the_config_keeping_its_comments(small):
    cfg, store, path, data = small
    data["categories"][0]["name"] = "truck"
    path.write_text(json.dumps(data))
    with pytest.raises(ImportFileError, match="truck.*--add-labels"):
        run_import(cfg, store, coco=path)
    assert store.objects() == []
    result = run_import(cfg, store, coco=path, add_labels=True)
    assert result.labels_added == ["truck"]
    assert load_config(cfg.path).labels == ("car", "person", "truck")
    text = Path(cfg.path).read_text()
    assert "# my team's config" in text and "# classes" in text
    assert [o.label for o in store.objects()] == ["truck", "truck"]


def test_a_failure_halfway_keeps_the_photos_before_and_a_rerun_imports_the_rest(small,
                                                                                monkeypatch):
    import dextr_core.importer as importer

    cfg, store, path, _ = small
    real = importer.save_object_mask
    calls = []

    def failing(target, mask):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(target, mask)

    monkeypatch.setattr(importer, "save_object_mask", failing)
    assert main(["--config", str(cfg.path), "--coco", str(path)]) == 1
    store2 = ProgressStore(cfg.progress_file, cfg.source)
    assert [o.image_id for o in store2.objects()] == ["a.png"]
    store2.close()
    monkeypatch.setattr(importer, "save_object_mask", real)
    assert main(["--config", str(cfg.path), "--coco", str(path)]) == 0
    store3 = ProgressStore(cfg.progress_file, cfg.source)
    assert [o.object_id for o in store3.objects()] == ["coco-7", "coco-8"]
    store3.close()


def test_masks_folder_import(small, tmp_path, capsys):
    cfg, store, _, _ = small
    folder = tmp_path / "old-masks"
    lm = np.zeros((30, 40), np.uint8)
    lm[1:5, 1:5], lm[10:20, 10:20] = 1, 2
    save_label_map(mask_path(folder, "a.png", "_mask", "png"), lm)
    save_label_map(folder / "stray_mask.png", lm)
    result = run_import(cfg, store, masks=folder)
    assert result.imported == {"a.png": 2} and result.unknown == ["stray_mask.png"]
    assert [(o.object_id, o.label) for o in store.objects("a.png")] == [("mask-1", "car"),
                                                                         ("mask-2", "car")]
    assert run_import(cfg, store, masks=folder).imported == {}


def test_the_annotate_page_lists_imported_objects_with_delete(tmp_path, monkeypatch):
    from test_app import SQUARE, _app, _photo

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(_photo(1)).save(src / "a.png")
    cfg_path = write_config(tmp_path, "src", "out", ["disc", "square"])
    monkeypatch.setenv("ANNO_CFG", str(cfg_path))
    x0, y0, x1, y1 = SQUARE
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 160, "height": 100}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation":
                             [[x0, y0, x1, y0, x1, y1, x0, y1]]}],
            "categories": [{"id": 1, "name": "square"}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    assert main(["--config", str(cfg_path), "--coco", str(tmp_path / "coco.json")]) == 0
    at = _app()
    assert not at.exception
    assert [m.value for m in at.markdown if m.value.startswith("**Objects")] == ["**Objects (1)**"]
    assert len([b for b in at.button if b.label == "Delete"]) == 1
    [b for b in at.button if b.label == "Image done"][0].click().run()
    assert not at.exception
    saved = load_label_map(mask_path(tmp_path / "out", "a.png", "_mask", "png"))
    assert saved[y0:y1, x0:x1].all() and saved.sum() == (x1 - x0) * (y1 - y0)


def test_the_import_works_on_both_store_backends(small, store_location):
    from dextr_core.store import open_store

    cfg, _, path, _ = small
    store = open_store(store_location, cfg.source, claim_timeout_s=600.0)
    store.sync()
    store.claim("a.png", "bob")
    result = run_import(cfg, store, coco=path, status="done")
    assert result.imported == {"sub/b.jpg": 1} and result.left_alone == ["a.png (in progress)"]
    assert run_import(cfg, store, coco=path, status="done").imported == {}
    assert [(o.image_id, o.object_id, o.points) for o in store.objects()] == [
        ("sub/b.jpg", "coco-8", [])]
    assert store.get("sub/b.jpg").status == "done" and store.get("sub/b.jpg").n_objects == 1
    assert [e.image_id for e in store.events() if e.action == "imported"] == ["sub/b.jpg"]
    store.close()


def test_a_base_name_that_two_photos_share_matches_neither(tmp_path):
    photos = {}
    for name in ("a/x.png", "b/x.png"):
        photos[name] = write_photo(tmp_path / "made" / name, (12, 10), 90)
    cfg, store = _config(tmp_path, photos)
    square = [[1, 1, 6, 1, 6, 6, 1, 6]]
    data = {"images": [{"id": 1, "file_name": "x.png", "width": 12, "height": 10},
                       {"id": 2, "file_name": "b/x.png", "width": 12, "height": 10}],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "segmentation": square}
                            for i in (1, 2)],
            "categories": [{"id": 1, "name": "object"}]}
    (tmp_path / "c.json").write_text(json.dumps(data))
    result = run_import(cfg, store, coco=tmp_path / "c.json")
    assert result.imported == {"b/x.png": 1} and result.unknown == ["x.png"]
    store.close()
