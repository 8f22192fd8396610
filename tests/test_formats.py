"""Export formats (COCO polygons, YOLO segmentation, Pascal VOC) read back by other readers:
pycocotools, supervision's YOLO loader, Pillow. Real photos from ../shared/evaldata, read in place
(linked into a temporary source folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from projects import linked_project, write_photo
from pycocotools.coco import COCO
from scipy import ndimage

from dextr_core.export import ExportError, main, run_export
from dextr_core.formats import unique_stems
from dextr_core.masks import label_map, mask_path, save_label_map
from dextr_core.points import extreme_points
from dextr_core.store import ObjectRecord

LABELS = ("airplane", "bottle", "spoon", "toaster", "object")
# image id -> (photo in evaldata, [(label, mask in evaldata), ...]); two photos share the stem x
PHOTOS = {
    "planes/281693.jpg": ("coco_mval/images/airplane00_000000281693.jpg", [
        ("airplane", "coco_mval/masks/airplane00_000000281693.png"),
        ("airplane", "coco_mval/masks/airplane01_000000281693.png")]),
    "kitchen/66841.jpg": ("coco_mval/images/bottle00_000000066841.jpg", [  # spoon on the toaster
        ("toaster", "coco_mval/masks/toaster00_000000066841.png"),
        ("bottle", "coco_mval/masks/bottle00_000000066841.png"),
        ("spoon", "coco_mval/masks/spoon01_000000066841.png")]),
    "a/x.jpg": ("berkeley/images/101087.jpg", [("object", "berkeley/masks/101087.png")]),
    "b/x.png": ("berkeley/images/163014.png", [("object", "berkeley/masks/163014.png")]),
}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def has_holes(mask: np.ndarray) -> bool:
    return bool((ndimage.binary_fill_holes(mask) != mask).any())


def make_project(tmp_path: Path, photos: dict, masks_of) -> tuple:
    """A config over ``photos`` (id -> photo file, linked), done with the masks ``masks_of(id)``
    as label maps and store objects (labels from ``photos``)."""
    cfg, store = linked_project(tmp_path, {i: photo for i, (photo, _) in photos.items()}, LABELS)
    for image_id, (_, objects) in photos.items():
        masks = masks_of(image_id)
        save_label_map(mask_path(cfg.destination, image_id, cfg.mask_suffix, cfg.save_format),
                       label_map(masks, masks[0].shape))
        store.claim(image_id, "ana")
        for (label, _), mask in zip(objects, masks, strict=True):
            store.add_object(image_id, "ana", ObjectRecord(
                label=label, points=extreme_points(mask).tolist(), engine="test",
                annotator="ana"))
        store.complete(image_id, "ana", seconds=5.0)
    return cfg, store


@pytest.fixture(scope="module")
def real(evaldata_dir, tmp_path_factory):
    """(config, store, {image id: [bool masks]}) over four real photos, all done; the masks are
    the objects as saved (where two overlap, the later one wins, as in the label map)."""
    masks = {i: [np.asarray(Image.open(evaldata_dir / m).convert("L")) > 127 for _, m in objs]
             for i, (_, objs) in PHOTOS.items()}
    photos = {i: (evaldata_dir / p, objs) for i, (p, objs) in PHOTOS.items()}
    cfg, store = make_project(tmp_path_factory.mktemp("real"), photos, masks.__getitem__)
    visible = {}
    for image_id, objects in masks.items():
        labels = label_map(objects, objects[0].shape)
        visible[image_id] = [labels == i for i in range(1, len(objects) + 1)]
    yield cfg, store, visible
    store.close()


def test_coco_polygons_give_back_every_object_without_holes(real, tmp_path):
    cfg, store, masks = real
    out = tmp_path / "polygons.json"
    result = run_export(cfg, store, "coco", out, segmentation="polygon")
    coco = COCO(str(out))
    by_name = {img["file_name"]: img["id"] for img in coco.dataset["images"]}
    holes = 0
    for image_id, objects in masks.items():
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=[by_name[image_id]])),
                      key=lambda a: a["id"])
        assert len(anns) == len(objects)
        for ann, mask in zip(anns, objects, strict=True):
            decoded = coco.annToMask(ann).astype(bool)
            if has_holes(mask):
                holes += 1
                assert isinstance(ann["segmentation"], dict)  # kept RLE
                np.testing.assert_array_equal(decoded, mask)
            else:
                assert isinstance(ann["segmentation"], list)
                assert iou(decoded, mask) >= 0.95, (image_id, iou(decoded, mask))
                parts = ndimage.label(mask, structure=np.ones((3, 3)))[1]
                assert len(ann["segmentation"]) == parts  # one polygon per part
    assert holes >= 1 and result.counts == {"kept RLE (holes)": holes}
    assert f"{holes} objects kept RLE (holes)" in result.summary()


def test_yolo_is_read_back_by_supervision_with_the_class_names(real, tmp_path):
    import supervision as sv

    cfg, store, masks = real
    out = tmp_path / "yolo"
    result = run_export(cfg, store, "yolo", out)
    assert (result.images, result.objects) == (4, 7)
    holes = sum(has_holes(m) for objects in masks.values() for m in objects)
    assert result.counts == {"with holes filled": holes}
    stems = {"planes/281693.jpg": "planes__281693", "kitchen/66841.jpg": "kitchen__66841",
             "a/x.jpg": "a__x", "b/x.png": "b__x"}
    assert sorted(p.name for p in (out / "labels").iterdir()) == sorted(
        f"{s}.txt" for s in stems.values())
    ds = sv.DetectionDataset.from_yolo(images_directory_path=str(out / "images"),
                                       annotations_directory_path=str(out / "labels"),
                                       data_yaml_path=str(out / "data.yaml"), force_masks=True)
    assert ds.classes == list(LABELS)
    assert yaml.safe_load((out / "data.yaml").read_text())["path"] == str(out)
    assert len(ds) == 4
    for path, image, detections in ds:
        image_id = next(i for i, s in stems.items() if Path(path).stem == s)
        objects = masks[image_id]
        assert image.shape[:2] == objects[0].shape
        names = [ds.classes[c] for c in detections.class_id]
        assert names == [label for label, _ in PHOTOS[image_id][1]]
        for got, mask in zip(detections.mask, objects, strict=True):
            want = ndimage.binary_fill_holes(mask)  # YOLO polygons cannot hold holes
            assert iou(got, want) >= 0.85, (image_id, iou(got, want))


def test_voc_palette_pngs_read_back_with_pillow(real, tmp_path):
    cfg, store, masks = real
    out = tmp_path / "voc"
    result = run_export(cfg, store, "voc", out)
    assert (result.images, result.objects) == (4, 7)
    stems = (out / "ImageSets/Segmentation/train.txt").read_text().split()
    assert sorted(stems) == ["a__x", "b__x", "kitchen__66841", "planes__281693"]
    assert (out / "labels.txt").read_text().split() == ["background", *LABELS]
    for image_id, stem in [("planes/281693.jpg", "planes__281693"),
                           ("kitchen/66841.jpg", "kitchen__66841"), ("a/x.jpg", "a__x"),
                           ("b/x.png", "b__x")]:
        objects = masks[image_id]
        with Image.open(out / "SegmentationObject" / f"{stem}.png") as img:
            assert img.mode == "P"
            np.testing.assert_array_equal(np.asarray(img), label_map(objects, objects[0].shape))
            assert np.asarray(img).max() == len(objects)
        with Image.open(out / "SegmentationClass" / f"{stem}.png") as img:
            assert img.mode == "P"
            want = np.zeros(objects[0].shape, np.uint8)
            for (label, _), mask in zip(PHOTOS[image_id][1], objects, strict=True):
                want[mask] = LABELS.index(label) + 1
            np.testing.assert_array_equal(np.asarray(img), want)
        with Image.open(out / "JPEGImages" / f"{stem}.jpg") as img:
            assert img.format == "JPEG"  # b/x.png was encoded as JPEG
            assert (img.height, img.width) == objects[0].shape


# ---- the same code on small made-up photos (no shared data needed) -----------------------------


@pytest.fixture()
def small(tmp_path):
    photos = {}
    for name, size in [("p.png", (40, 30)), ("q.jpg", (50, 20))]:
        photos[name] = (write_photo(tmp_path / "made" / name, size, 90), [("object", None)])

    def masks_of(image_id):
        w, h = Image.open(photos[image_id][0]).size
        m = np.zeros((h, w), bool)
        m[3:12, 4:15] = True
        return [m]

    cfg, store = make_project(tmp_path, photos, masks_of)
    yield cfg, store
    store.close()


def test_link_makes_the_photos_links_to_the_source(small, tmp_path):
    cfg, store = small
    run_export(cfg, store, "yolo", tmp_path / "linked", link=True)
    image = tmp_path / "linked" / "images" / "p.png"
    assert image.is_symlink() and image.resolve() == (cfg.source / "p.png").resolve()
    with pytest.raises(ExportError, match="--link"):
        run_export(cfg, store, "yolo", tmp_path / "y.zip", as_zip=True, link=True)


@pytest.mark.parametrize("fmt", ["yolo", "voc"])
def test_a_failure_halfway_leaves_the_old_export_and_no_half_written_one(small, tmp_path,
                                                                         monkeypatch, fmt):
    import dextr_core.formats.voc as voc
    import dextr_core.formats.yolo as yolo

    cfg, store = small
    out = tmp_path / "export"
    run_export(cfg, store, fmt, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_call(*args, **kwargs)

    module, name = (yolo, "label_lines") if fmt == "yolo" else (voc, "palette_png")
    real_call = getattr(module, name)
    monkeypatch.setattr(module, name, failing)
    with pytest.raises(OSError, match="No space"):
        run_export(cfg, store, fmt, out, overwrite=True)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["export", "anno_cfg.yml",
                                                                 "images", "made", "masks"])
    calls.clear()
    with pytest.raises(OSError):
        run_export(cfg, store, fmt, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def test_every_format_keeps_the_guards(small):
    cfg, store = small
    for fmt in ("yolo", "voc"):
        with pytest.raises(ExportError, match="required.source"):
            run_export(cfg, store, fmt, cfg.source / "out")


def test_cli_prints_one_summary_line_with_counts(small, tmp_path, capsys):
    cfg, _ = small
    assert main(["--config", str(cfg.path), "--format", "voc", "--out",
                 str(tmp_path / "v.zip"), "--zip"]) == 0
    assert capsys.readouterr().out.strip().endswith("2 images, 2 objects (0 warnings)")
    assert main(["--config", str(cfg.path), "--format", "coco", "--segmentation", "polygon",
                 "--polygon-tolerance", "1", "--out", str(tmp_path / "c.json")]) == 0
    assert main(["--config", str(cfg.path), "--format", "coco", "--polygon-tolerance", "-1",
                 "--out", str(tmp_path / "d.json")]) == 1
    assert "tolerance" in capsys.readouterr().err


def test_unique_stems_keep_photos_sharing_a_stem_apart():
    stems = unique_stems(["x.jpg", "x.png", "a/x.jpg", "a__x.jpg", "x_png.jpg"])
    assert len(set(stems.values())) == 5
    assert stems["x.jpg"] == "x" and stems["a/x.jpg"] == "a__x"
    assert stems == unique_stems(reversed(list(stems)))


def test_a_photo_turned_by_its_exif_tag_is_exported_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: 20 x 40 upright
    photo = write_photo(tmp_path / "made" / "turned.jpg", (40, 20), 90, exif=exif)
    photos = {"turned.jpg": (photo, [("object", None)])}
    mask = np.zeros((40, 20), bool)
    mask[2:30, 3:9] = True
    cfg, store = make_project(tmp_path, photos, lambda _: [mask])
    run_export(cfg, store, "yolo", tmp_path / "yolo")
    run_export(cfg, store, "voc", tmp_path / "voc")
    store.close()
    with Image.open(tmp_path / "yolo" / "images" / "turned.png") as img:
        assert img.size == (20, 40)
    with Image.open(tmp_path / "voc" / "JPEGImages" / "turned.jpg") as img:
        assert img.size == (20, 40) and img.getexif().get(0x0112, 1) == 1
