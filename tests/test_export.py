"""Exports: COCO JSON read back with pycocotools, label maps, palette previews, zip, CLI."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from projects import synced_store, write_config, write_photo
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from dextr_core.config import load_config
from dextr_core.export import ExportError, main, palette_colors, run_export
from dextr_core.masks import label_map, load_label_map, mask_path, save_label_map
from dextr_core.store import ObjectRecord

LABELS = ("car", "person")
# image id -> (width, height, [(label, (x0, y0, x1, y1) box of the object), ...])
IMAGES = {
    "a.png": (64, 48, [("car", (5, 5, 30, 20)), ("person", (20, 10, 50, 40))]),
    "sub/b.jpg": (40, 30, [("person", (0, 0, 10, 29))]),
    "sub/deeper/c.png": (50, 50, []),
}


def _masks_for(width, height, objects):
    masks = []
    for _, (x0, y0, x1, y1) in objects:
        m = np.zeros((height, width), bool)
        m[y0:y1 + 1, x0:x1 + 1] = True
        masks.append(m)
    return masks


def _points(box):
    x0, y0, x1, y1 = box
    return [[x0, (y0 + y1) // 2], [x1, (y0 + y1) // 2], [(x0 + x1) // 2, y0],
            [(x0 + x1) // 2, y1]]


def _real_store(cfg, done_ids):
    store = synced_store(cfg, claim_timeout_s=600.0)
    for image_id in done_ids:
        width, height, objects = IMAGES[image_id]
        store.claim(image_id, "ana")
        for i, (label, box) in enumerate(objects, start=1):
            store.add_object(image_id, "ana", ObjectRecord(
                image_id=image_id, index=i, label=label, points=_points(box),
                engine="GrabCut fallback", annotator="ana", created_at=0.0, seconds=3.0))
        store.complete(image_id, "ana", seconds=10.0)
    return store


@pytest.fixture()
def project(tmp_path: Path):
    """A config over three small images; a.png and sub/b.jpg are done with saved masks."""
    for image_id, (width, height, _) in IMAGES.items():
        write_photo(tmp_path / "images" / image_id, (width, height), 120)
    cfg = load_config(write_config(tmp_path, labels=LABELS))
    done = ["a.png", "sub/b.jpg"]
    for image_id in done:
        width, height, objects = IMAGES[image_id]
        save_label_map(mask_path(cfg.destination, image_id, cfg.mask_suffix, cfg.save_format),
                       label_map(_masks_for(width, height, objects), (height, width)))
    store = _real_store(cfg, done)
    yield cfg, store
    store.close()


def test_coco_round_trip(project, tmp_path: Path):
    cfg, store = project
    calls = []
    out = tmp_path / "export" / "instances.json"
    result = run_export(cfg, store, "coco", out, progress=lambda d, t: calls.append((d, t)))
    assert result.images == 2 and result.objects == 3
    assert calls[-1] == (2, 2)
    coco = COCO(str(out))
    cats = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert cats == {1: "car", 2: "person"}
    by_name = {img["file_name"]: img for img in coco.loadImgs(coco.getImgIds())}
    assert set(by_name) == {"a.png", "sub/b.jpg"}
    for file_name, img in by_name.items():
        width, height, objects = IMAGES[file_name]
        assert (img["width"], img["height"]) == (width, height)
        stored = load_label_map(mask_path(cfg.destination, file_name, "_mask", "png"))
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]])), key=lambda a: a["id"])
        assert len(anns) == len(objects)
        for index, (ann, (label, box)) in enumerate(zip(anns, objects, strict=True), start=1):
            decoded = coco.annToMask(ann).astype(bool)
            np.testing.assert_array_equal(decoded, stored == index)
            assert cats[ann["category_id"]] == label
            assert ann["area"] == decoded.sum()
            ys, xs = np.nonzero(decoded)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                   ys.max() - ys.min() + 1]
            assert ann["iscrowd"] == 0
            assert ann["annotator"] == "ana" and ann["engine"] == "GrabCut fallback"
            assert ann["points"] == _points(box)
            assert isinstance(ann["segmentation"]["counts"], str)
    # the overlap of a.png's two objects belongs to the later one
    a_anns = coco.loadAnns(coco.getAnnIds(imgIds=[by_name["a.png"]["id"]]))
    car = next(a for a in a_anns if a["category_id"] == 1)
    assert mask_utils.area(car["segmentation"]) < 26 * 16


def test_coco_zip(project, tmp_path: Path):
    cfg, store = project
    out = tmp_path / "coco.zip"
    run_export(cfg, store, "coco", out, as_zip=True)
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == ["annotations.json"]
        data = json.loads(zf.read("annotations.json"))
    assert len(data["annotations"]) == 3


@pytest.mark.parametrize("fmt", ["png", "npy"])
def test_masks_export(project, tmp_path: Path, fmt: str):
    cfg, store = project
    out = tmp_path / "labelmaps"
    result = run_export(cfg, store, "masks", out, save_format=fmt)
    assert result.images == 2
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [".dextr-export", f"a_mask.{fmt}", "legend.csv", f"sub/b_mask.{fmt}"]
    legend = (out / "legend.csv").read_text().splitlines()
    assert legend[0] == "mask_file,id,class"
    for image_id in ("a.png", "sub/b.jpg"):
        original = load_label_map(mask_path(cfg.destination, image_id, "_mask", "png"))
        copied = load_label_map(mask_path(out, image_id, "_mask", fmt))
        np.testing.assert_array_equal(copied, original)
        name = mask_path(Path("."), image_id, "_mask", fmt).as_posix()
        rows = [line for line in legend if line.startswith(name + ",")]
        labels = [o.label for o in store.objects(image_id)]
        assert rows == [f"{name},{i},{label}" for i, label in enumerate(labels, start=1)]
        assert len(rows) == original.max() > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".labelmaps")]


def test_palette_export_zip(project, tmp_path: Path):
    cfg, store = project
    out = tmp_path / "palette.zip"
    run_export(cfg, store, "palette", out, as_zip=True)
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["a.png", "sub/b.png"]
        img = Image.open(io.BytesIO(zf.read("a.png")))
        assert img.mode == "P"
        indices = np.asarray(img)
    original = load_label_map(mask_path(cfg.destination, "a.png", "_mask", "png"))
    np.testing.assert_array_equal(indices, original)
    palette = np.array(img.getpalette()[: 3 * 3]).reshape(3, 3)
    assert palette[0].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in palette}) == 3


def test_palette_colours_are_distinct():
    colors = palette_colors(256)
    assert colors[0].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in colors[1:]}) == 255
    assert (colors[1:].sum(axis=1) > 0).all()


def test_refuses_to_overwrite_without_flag(project, tmp_path: Path):
    cfg, store = project
    out = tmp_path / "x.json"
    out.write_text("keep me")
    with pytest.raises(ExportError, match="already exists"):
        run_export(cfg, store, "coco", out)
    assert out.read_text() == "keep me"
    run_export(cfg, store, "coco", out, overwrite=True)
    assert json.loads(out.read_text())["categories"]


def test_overwriting_a_folder_export_replaces_it_whole(project, tmp_path: Path):
    cfg, store = project
    out = tmp_path / "pal"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    (out / ".dextr-export").write_text("an earlier export")
    run_export(cfg, store, "palette", out, overwrite=True)
    assert sorted(p.name for p in out.rglob("*.png")) == ["a.png", "b.png"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pal")] == []


def test_refuses_export_inside_managed_folders(project):
    cfg, store = project
    with pytest.raises(ExportError, match="required.destination"):
        run_export(cfg, store, "coco", cfg.destination / "coco.json")
    with pytest.raises(ExportError, match="required.source"):
        run_export(cfg, store, "palette", cfg.source / "pal")


def test_missing_mask_file_is_a_warning(project, tmp_path: Path):
    cfg, store = project
    mask_path(cfg.destination, "sub/b.jpg", "_mask", "png").unlink()
    result = run_export(cfg, store, "coco", tmp_path / "c.json")
    assert result.images == 1
    assert any("sub/b.jpg" in w and "no mask file" in w for w in result.warnings)


def test_cli(project, tmp_path: Path, capsys):
    cfg, _ = project
    out = tmp_path / "cli.json"
    assert main(["--config", str(cfg.path), "--format", "coco", "--out", str(out)]) == 0
    assert "2 images, 3 objects" in capsys.readouterr().out
    assert len(COCO(str(out)).getAnnIds()) == 3
    assert main(["--config", str(cfg.path), "--format", "coco", "--out", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "nope.yml"), "--format", "coco",
                 "--out", str(out)]) == 2


def test_palette_png_of_uint16_map_wraps_ids():
    from dextr_core.export import palette_png

    labels = np.array([[0, 1, 255], [256, 300, 510]], np.uint16)
    img = Image.open(io.BytesIO(palette_png(labels)))
    assert img.mode == "P"
    np.testing.assert_array_equal(np.asarray(img), [[0, 1, 255], [1, 45, 255]])


# --- exports cannot destroy inputs; an overwrite never loses the old export --------------------


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_masks_export_over_the_folder_holding_the_source_is_refused(project, tmp_path: Path):
    cfg, store = project
    before = _snapshot(tmp_path)
    assert "images/a.png" in before and "anno_cfg.yml" in before
    for target in (tmp_path, cfg.source, cfg.destination, cfg.source.parent):
        with pytest.raises(ExportError, match="is or contains"):
            run_export(cfg, store, "masks", target, overwrite=True)
    assert _snapshot(tmp_path) == before, "photos, masks, progress and config are all kept"


def test_the_cli_refuses_an_overwrite_of_the_folder_holding_the_photos(project, tmp_path: Path,
                                                                     capsys):
    cfg, _ = project
    code = main(["--config", str(cfg.path), "--format", "masks", "--out", str(tmp_path),
                 "--overwrite"])
    assert code == 1
    assert "is or contains required.source" in capsys.readouterr().err
    assert (cfg.source / "a.png").is_file() and cfg.path.is_file()


def test_the_progress_files_folder_and_its_files_are_refused(tmp_path: Path, project):
    from dataclasses import replace

    cfg, store = project
    state = tmp_path / "state"
    state.mkdir()
    moved = replace(cfg, progress_file=state / "p.json")
    with pytest.raises(ExportError, match="is or contains the progress file's folder"):
        run_export(moved, store, "palette", state, overwrite=True)
    with pytest.raises(ExportError, match="is inside the progress file's folder"):
        run_export(moved, store, "palette", state / "pal", overwrite=True)
    with pytest.raises(ExportError, match="the progress file"):
        run_export(moved, store, "coco", state / "p.json.journal", overwrite=True)
    with pytest.raises(ExportError, match="the config file"):
        run_export(cfg, store, "coco", cfg.path, overwrite=True)
    # next to the config (the app's own exports/ folder) is fine
    run_export(cfg, store, "coco", tmp_path / "exports" / "c.json")


def test_overwrite_replaces_only_folders_that_are_exports(project, tmp_path: Path):
    cfg, store = project
    mine = tmp_path / "holiday"
    mine.mkdir()
    (mine / "photo.jpg").write_bytes(b"not an export")
    with pytest.raises(ExportError, match=r"not written by an export.*\.dextr-export"):
        run_export(cfg, store, "masks", mine, overwrite=True)
    assert (mine / "photo.jpg").read_bytes() == b"not an export"
    empty = tmp_path / "empty"
    empty.mkdir()
    run_export(cfg, store, "masks", empty, overwrite=True)
    run_export(cfg, store, "masks", empty, overwrite=True)  # its own export: replaced
    assert (empty / "a_mask.png").is_file()


def _failing_after(n: int):
    import errno

    real = Path.write_bytes
    calls = {"n": 0}

    def write_bytes(self, data):
        calls["n"] += 1
        if calls["n"] > n:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    return write_bytes


def test_a_failure_mid_export_keeps_the_old_export_and_leaves_no_half_folder(
        project, tmp_path: Path, monkeypatch):
    cfg, store = project
    out = tmp_path / "labelmaps"
    run_export(cfg, store, "masks", out)
    old = _snapshot(out)
    monkeypatch.setattr(Path, "write_bytes", _failing_after(1))
    with pytest.raises(OSError, match="No space"):
        run_export(cfg, store, "masks", out, overwrite=True)
    monkeypatch.undo()
    assert _snapshot(out) == old
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".labelmaps")) == []


def test_a_failure_while_the_new_export_is_renamed_into_place_puts_the_old_one_back(
        project, tmp_path: Path, monkeypatch):
    import errno
    import os

    cfg, store = project
    out = tmp_path / "labelmaps"
    run_export(cfg, store, "masks", out)
    old = _snapshot(out)
    real = os.replace

    def replace(src, dst):
        if Path(src).name.endswith(".tmp") and Path(dst) == out:
            raise OSError(errno.EIO, "I/O error")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="I/O error"):
        run_export(cfg, store, "masks", out, overwrite=True)
    monkeypatch.undo()
    assert _snapshot(out) == old
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".labelmaps")] == []


def test_the_old_export_is_moved_aside_only_after_the_new_one_is_complete(
        project, tmp_path: Path, monkeypatch):
    import os

    cfg, store = project
    out = tmp_path / "pal.zip"
    run_export(cfg, store, "palette", out, as_zip=True)
    events = []
    real = os.replace

    def replace(src, dst):
        events.append((Path(src).name, Path(dst).name, zipfile.is_zipfile(src)))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    run_export(cfg, store, "palette", out, as_zip=True, overwrite=True)
    first_src, first_dst, _ = events[0]
    assert first_src == "pal.zip" and first_dst.startswith(".pal.zip.old-")
    assert events[1][1] == "pal.zip" and events[1][2], "the new zip was complete when moved in"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pal")] == []


def test_a_failure_mid_zip_keeps_the_old_zip(project, tmp_path: Path, monkeypatch):
    cfg, store = project
    out = tmp_path / "pal.zip"
    run_export(cfg, store, "palette", out, as_zip=True)
    old = out.read_bytes()
    from dextr_core import export

    def broken(labels):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "palette_png", broken)
    with pytest.raises(OSError):
        run_export(cfg, store, "palette", out, as_zip=True, overwrite=True)
    assert out.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pal")] == []


def test_exported_folders_and_zips_get_the_process_umask(project, tmp_path: Path):
    import os

    cfg, store = project
    old = os.umask(0o022)
    try:
        run_export(cfg, store, "masks", tmp_path / "m")
        run_export(cfg, store, "palette", tmp_path / "p.zip", as_zip=True)
    finally:
        os.umask(old)
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "m" / "sub").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "m" / "a_mask.png").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "p.zip").stat().st_mode & 0o777 == 0o644


# ---- a DEXTR-AnnoTool folder exported as it is (no store yet) ----------------------------------


def _seed_folder(tmp_path: Path, seed_source: str) -> tuple[Path, dict]:
    """DEXTR-AnnoTool's folder: anno_cfg.yml, images/ (a.png done with a 2-object mask in
    images/segMasks, sub/b.jpg skipped, sub/deeper/c.png to do, gone.png done but not in the
    folder) and its .anno_prog made for ``seed_source``; returns the config and the seed's files
    with their bytes and times."""
    from annotool import seed_config_text, write_anno_prog

    source = tmp_path / "images"
    for image_id, (width, height, _) in IMAGES.items():
        write_photo(source / image_id, (width, height), 120)
    width, height, objects = IMAGES["a.png"]
    mask = mask_path(source / "segMasks", "a.png", "_mask", "png")
    save_label_map(mask, label_map(_masks_for(width, height, objects), (height, width)))
    cfg = tmp_path / "anno_cfg.yml"
    cfg.write_text(seed_config_text("./images", "./images/segMasks"))
    legacy = source / ".anno_prog"
    write_anno_prog(legacy, {"a.png": True, "sub/b.jpg": "skip", "sub/deeper/c.png": False,
                             "gone.png": "yes"},
                    source=seed_source, destination=f"{seed_source}/segMasks")
    return cfg, {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (legacy, mask)}


@pytest.mark.parametrize("seed_source", ["./images", "./ims"])
def test_a_dextr_annotool_folder_exports_as_it_is(tmp_path: Path, capsys, seed_source):
    cfg, seed_files = _seed_folder(tmp_path, seed_source)
    out = tmp_path / "export" / "instances.json"
    assert main(["--config", str(cfg), "--format", "coco", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    coco = COCO(str(out))
    assert [img["file_name"] for img in coco.loadImgs(coco.getImgIds())] == ["a.png"]
    assert len(coco.getAnnIds()) == 2  # the two objects of its mask file
    assert "Imported DEXTR-AnnoTool progress" in err and "gone.png" in err
    differs = f"made for the photos in {tmp_path / 'ims'}" in err
    assert differs == (seed_source == "./ims")
    assert (f"masks were saved to {tmp_path / 'ims' / 'segMasks'}" in err) == differs
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in seed_files} == seed_files
    # nothing was written beside the photos: the app makes its store when it first runs
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        ".anno_prog", "a.png", "segMasks", "sub"]


def test_overlapping_objects_both_keep_their_pixels_in_coco_and_the_summary_counts_them(
        project, tmp_path: Path):
    """Objects accepted through the annotate page have their own mask files: the COCO export
    takes each object's own mask (both keep the shared pixels), the label map gives them to the
    later one, and the result counts the shared pixels."""
    from dextr_core.masks import object_mask_path, save_object_mask

    cfg, store = project
    width, height, objects = IMAGES["a.png"]
    own = _masks_for(width, height, objects)
    store.reopen("a.png", "lead")
    store.claim("a.png", "ana")
    while store.objects("a.png"):
        store.remove_object("a.png", "ana", 1)
    for i, ((label, box), mask) in enumerate(zip(objects, own, strict=True)):
        object_id = f"obj{i}"
        save_object_mask(object_mask_path(cfg.destination, "a.png", object_id), mask)
        store.add_object("a.png", "ana", ObjectRecord(
            label=label, points=_points(box), engine="box", annotator="ana", object_id=object_id))
    store.complete("a.png", "ana", seconds=5.0)
    out = tmp_path / "export" / "instances.json"
    result = run_export(cfg, store, "coco", out)
    shared = int((own[0] & own[1]).sum())
    assert shared > 0
    assert result.shared_pixels == shared and result.overlapping_images == 1
    coco = COCO(str(out))
    (img,) = [i for i in coco.loadImgs(coco.getImgIds()) if i["file_name"] == "a.png"]
    anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]])), key=lambda a: a["id"])
    for ann, mask in zip(anns, own, strict=True):
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), mask)
    labels = load_label_map(mask_path(cfg.destination, "a.png", "_mask", "png"))
    assert (labels[own[0] & own[1]] == 2).all()  # the label map: one label per pixel
