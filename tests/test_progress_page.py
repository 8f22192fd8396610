"""The leads' progress page, run headless with streamlit.testing.v1.AppTest on a small store."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from dextr_core.config import load_config
from dextr_core.masks import label_map, mask_path, save_label_map
from dextr_core.store import ObjectRecord, ProgressStore
from ui.messages import md

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "pages" / "progress.py")
PASSWORD = "correct horse battery staple"
# image id -> (annotator, final status, [(label, box x0, y0, x1, y1)])
PLAN = {
    "a.png": ("ana", "done", [("car", (2, 2, 20, 15)), ("person", (10, 10, 30, 28))]),
    "sub/b.png": ("bob", "done", [("person", (0, 0, 12, 12))]),
    "c.png": ("ana", "skipped", []),
    "d.png": (None, "todo", []),
    "e.png": (None, "todo", []),
}


def _points(box):
    x0, y0, x1, y1 = box
    return [[x0, y0 + 1], [x1, y1 - 1], [x0 + 1, y0], [x1 - 1, y1]]


@pytest.fixture()
def project(tmp_path: Path, monkeypatch):
    """Five 40x32 images, a config with labels car/person, a store with 2 done, 1 skipped."""
    source = tmp_path / "images"
    for image_id in PLAN:
        path = source / image_id
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 40, 3), 90, np.uint8)).save(path)
    cfg_path = tmp_path / "anno_cfg.yml"
    cfg_path.write_text("required:\n  source: images\n  destination: masks\n"
                        "optional:\n  labels: [car, person, dog]\n")
    cfg = load_config(cfg_path)
    store = ProgressStore(cfg.progress_file, cfg.source, claim_timeout_s=600.0)
    store.sync()
    for image_id, (who, status, objects) in PLAN.items():
        if status == "skipped":
            store.claim(image_id, who)
            store.skip(image_id, who, "blurred")
        elif status == "done":
            store.claim(image_id, who)
            masks = []
            for i, (label, box) in enumerate(objects, start=1):
                store.add_object(image_id, who, ObjectRecord(
                    image_id=image_id, index=i, label=label, points=_points(box),
                    engine="GrabCut fallback", annotator=who, seconds=4.0 * i))
                m = np.zeros((32, 40), bool)
                m[box[1]:box[3] + 1, box[0]:box[2] + 1] = True
                masks.append(m)
            save_label_map(mask_path(cfg.destination, image_id, cfg.mask_suffix,
                                     cfg.save_format), label_map(masks, (32, 40)))
            store.complete(image_id, who, seconds=12.0)
    store.close()
    monkeypatch.setenv("ANNO_CFG", str(cfg_path))
    monkeypatch.syspath_prepend(str(REPO))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield cfg
    st.cache_resource.clear()
    st.cache_data.clear()


def run_page(lead_password: str | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    if lead_password is not None:
        at.secrets["lead_password"] = lead_password
    return at.run()


def become_lead(at: AppTest) -> AppTest:
    at.sidebar.text_input(key="dextr_lead_password_input").input(PASSWORD).run()
    assert not at.exception
    return at


def status_of(cfg, image_id: str) -> str:
    store = ProgressStore(cfg.progress_file, cfg.source)
    try:
        return store.get(image_id).status
    finally:
        store.close()


def button(at: AppTest, key: str):
    matches = [b for b in at.button if b.key == key]
    assert matches, f"no button {key}; have {[b.key for b in at.button]}"
    return matches[0]


def test_figures_for_a_small_dataset(project):
    at = run_page()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Done": "2", "In progress": "0", "To do": "2", "Skipped": "1",
                       "Unreadable": "0"}
    bar_text = at.get("progress")[0].proto.text
    assert "3 of 5 images finished" in bar_text
    table = at.dataframe[0].value
    assert list(table.index) == ["ana", "bob"]
    assert table.loc["ana", "Images done"] == 1 and table.loc["ana", "Skipped"] == 1
    assert table.loc["ana", "Objects"] == 2 and table.loc["bob", "Objects"] == 1
    assert table.loc["ana", "Median s / object"] == pytest.approx(6.0)  # 12 s / 2 objects
    assert table.loc["bob", "Median s / object"] == pytest.approx(12.0)
    recent = at.dataframe[1].value
    assert "finished" in set(recent["What"]) and "sub/b.png" in set(recent["Image"])
    charts = at.get("vega_lite_chart")
    assert len(charts) == 2
    captions = " ".join(c.value for c in at.caption)
    assert "3 objects accepted" in captions
    # the gallery lists the two done images, newest first, with a thumbnail each
    assert "2 images match" in captions
    assert len(at.get("image")) == 2
    # nobody is a lead: no secrets -> the sidebar says how to configure it
    assert any("lead_password" in i.value for i in at.sidebar.info)


def test_gallery_filters(project):
    at = run_page()
    at.selectbox(key="gallery_annotator").set_value("bob").run()
    assert "1 images match" in " ".join(c.value for c in at.caption)
    at.selectbox(key="gallery_annotator").set_value("").run()
    at.selectbox(key="gallery_label").set_value("car").run()
    captions = " ".join(c.value for c in at.caption)
    assert "1 images match" in captions and md("a.png") in captions
    at.selectbox(key="gallery_label").set_value("").run()
    at.multiselect(key="gallery_status").set_value(["skipped"]).run()
    captions = " ".join(c.value for c in at.caption)
    assert "1 images match" in captions and md("c.png") in captions


def test_reopen_refused_without_lead_role(project):
    at = run_page(lead_password=PASSWORD)
    assert button(at, "reopen::a.png").disabled  # a browser cannot click it
    assert button(at, "sendback::a.png").disabled
    # role dropped after the page was drawn (e.g. in another tab): the click is refused server-side
    at = become_lead(at)
    reopen = button(at, "reopen::a.png")
    assert not reopen.disabled
    at.session_state["dextr_lead_role"] = False
    reopen.click().run()
    assert any("Only a lead" in e.value for e in at.error)
    assert status_of(project, "a.png") == "done"
    assert button(at, "reopen::a.png").disabled


def test_wrong_password_is_not_lead(project):
    at = run_page(lead_password=PASSWORD)
    at.sidebar.text_input(key="dextr_lead_password_input").input("guess").run()
    assert any("Wrong lead password" in w.value for w in at.sidebar.warning)
    assert button(at, "reopen::a.png").disabled


def test_reopen_and_send_back_as_lead(project):
    at = become_lead(run_page(lead_password=PASSWORD))
    assert any("Lead role" in s.value for s in at.sidebar.success)
    reopen = button(at, "reopen::a.png")
    assert not reopen.disabled
    reopen.click().run()
    assert not at.exception
    assert status_of(project, "a.png") == "todo"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Done"] == "1" and metrics["To do"] == "3"
    button(at, "sendback::sub/b.png").click().run()
    store = ProgressStore(project.progress_file, project.source)
    record = store.get("sub/b.png")
    store.close()
    assert (record.status, record.annotator) == ("in_progress", "bob")


def test_anyone_exports_but_only_a_lead_overwrites(project, tmp_path: Path):
    exports = tmp_path / "exports"
    at = run_page(lead_password=PASSWORD)
    assert any("replacing an export needs the lead role" in i.value for i in at.info)
    button(at, "export_run").click().run()  # an annotator: no export yet, so the plain name
    assert not at.exception
    assert [p.name for p in exports.glob("*.zip")] == ["anno_cfg-coco-done.zip"]
    with zipfile.ZipFile(exports / "anno_cfg-coco-done.zip") as zf:
        assert zf.namelist() == ["annotations.json"]
    assert any("Wrote" in s.value for s in at.success)
    assert at.get("download_button"), "a download button for the zip"

    (exports / "anno_cfg-coco-done.zip").write_bytes(b"a training job reads this")
    button(at, "export_run").click().run()  # again: written beside it, the first one untouched
    assert not at.exception
    assert (exports / "anno_cfg-coco-done.zip").read_bytes() == b"a training job reads this"
    beside = sorted(p.name for p in exports.glob("anno_cfg-coco-done-*.zip"))
    assert len(beside) == 1 and any(md(beside[0]) in s.value for s in at.success)

    at = become_lead(at)
    assert not any("needs the lead role" in i.value for i in at.info)
    button(at, "export_run").click().run()  # a lead replaces it in place
    assert not at.exception
    with zipfile.ZipFile(exports / "anno_cfg-coco-done.zip") as zf:
        assert zf.namelist() == ["annotations.json"]
    assert len(list(exports.glob("*.zip"))) == 2


def test_reset_needs_lead_and_confirmation(project):
    at = run_page(lead_password=PASSWORD)
    assert not [b for b in at.button if b.key == "reset_run"]
    at = become_lead(at)
    assert button(at, "reset_run").disabled  # until RESET is typed
    at.text_input(key="reset_confirm_text").input("reset please").run()
    assert button(at, "reset_run").disabled
    assert status_of(project, "a.png") == "done"
    at.text_input(key="reset_confirm_text").input("RESET").run()
    button(at, "reset_run").click().run()
    assert not at.exception
    assert any("backed up" in s.value for s in at.success)
    backups = list(project.progress_file.parent.glob(project.progress_file.name + ".backup-*"))
    assert len(backups) == 1
    assert status_of(project, "a.png") != "done"


def test_broken_config_shows_problems(project, monkeypatch, tmp_path: Path):
    bad = tmp_path / "bad.yml"
    bad.write_text("required:\n  source: images\noptional:\n  save_format: gif\n")
    monkeypatch.setenv("ANNO_CFG", str(bad))
    at = run_page()
    errors = " ".join(e.value for e in at.error)
    assert "optional.save_format" in errors and "required.destination" in errors
    assert not at.exception


def test_object_index_follows_events(project):
    from ui import progress_view as progress

    store = ProgressStore(project.progress_file, project.source, claim_timeout_s=600.0)
    try:
        index = progress.read_object_index(store)
        assert dict(index.counts) == {"car": 1, "person": 2}
        assert sorted(map(tuple, index.pairs().to_numpy())) == [
            ("a.png", "car"), ("a.png", "person"), ("sub/b.png", "person")]
        store.claim("d.png", "cem")
        for i, label in enumerate(["dog", "dog", "car"], start=1):
            store.add_object("d.png", "cem", ObjectRecord(
                image_id="d.png", index=i, label=label, points=_points((1, 1, 9, 9)),
                engine="GrabCut fallback", annotator="cem"))
        store.remove_object("d.png", "cem", 1)
        index = progress.update_object_index(store, index)
        assert dict(+index.counts) == {"car": 2, "person": 2, "dog": 1}
        assert ("d.png", "dog") in set(map(tuple, index.pairs().to_numpy()))
        # a count that disagrees with the store's own total is read again in full
        index.counts["car"] += 5
        index.summary_objects += 5
        index = progress.update_object_index(store, index)
        assert dict(+index.counts) == {"car": 2, "person": 2, "dog": 1}
        table = progress.objects_per_class(index.counts, ("car", "person", "cat"))
        assert list(table["label"]) == ["car", "person", "cat", "dog"]
        assert list(table["objects"]) == [2, 2, 0, 1]
    finally:
        store.close()


AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "c00kie",
        "client_id": "id", "client_secret": "secret",
        "server_metadata_url": "https://idp.example.org/.well-known/openid-configuration"}


@pytest.mark.parametrize(("email", "is_lead"), [("Ana.Lead@Example.org", True),
                                                 ("someone@example.org", False)])
def test_oidc_login_with_allow_list(project, email: str, is_lead: bool):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.secrets["auth"] = AUTH
    at.secrets["lead_emails"] = ["ana.lead@example.org"]
    at.user = {"is_logged_in": True, "email": email}
    at.run()
    assert not at.exception
    assert button(at, "reopen::a.png").disabled is (not is_lead)
    if not is_lead:
        assert any("not in `lead_emails`" in w.value for w in at.sidebar.warning)


def test_oidc_login_button_when_signed_out(project):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.secrets["auth"] = AUTH
    at.secrets["lead_emails"] = ["ana.lead@example.org"]
    at.user = {"is_logged_in": False}
    at.run()
    assert any(b.label == "Lead login" for b in at.sidebar.button)
    assert button(at, "reopen::a.png").disabled


def test_reset_asked_by_the_config_waits_for_a_lead(project):
    text = project.path.read_text() + "admin:\n  reset_progress: true\n"
    project.path.write_text(text)
    at = run_page(lead_password=PASSWORD)
    assert any("admin.reset_progress: true" in w.value for w in at.warning)
    assert status_of(project, "a.png") == "done", "never reset without a confirmation"
    at = become_lead(at)
    at.text_input(key="reset_confirm_text").input("RESET").run()
    button(at, "reset_run").click().run()
    assert not at.exception
    assert any("backed up" in s.value for s in at.success)
    assert status_of(project, "a.png") != "done"
    at.run()
    assert not any("admin.reset_progress: true" in w.value for w in at.warning)


def test_keeping_the_progress_when_the_config_asks_for_a_reset(project):
    project.path.write_text(project.path.read_text() + "admin:\n  reset_progress: true\n")
    at = become_lead(run_page(lead_password=PASSWORD))
    button(at, "reset_decline").click().run()
    assert any("Progress kept" in s.value for s in at.success)
    assert status_of(project, "a.png") == "done"
    at.run()
    assert not any("admin.reset_progress: true" in w.value for w in at.warning)


def test_snapshot_follows_events(project):
    from ui import progress_view as progress

    store = ProgressStore(project.progress_file, project.source, claim_timeout_s=600.0)
    try:
        snap = progress.read_snapshot(store)
        assert sorted(snap.rows) == ["a.png", "c.png", "sub/b.png"]
        store.reopen("a.png", "lead")                      # done -> todo
        store.claim("d.png", "cem")
        store.complete("d.png", "cem", seconds=3.0)        # todo -> done
        store.claim("e.png", "cem")                        # in progress: not finished
        store.claim("sub/b.png", "dia")                    # correction of a done image
        summary = store.summary()
        updated = progress.update_snapshot(store, snap, summary)
        fresh = progress.read_snapshot(store)
        assert updated.rows == fresh.rows
        assert sorted(updated.rows) == ["c.png", "d.png"]
        assert updated.last_event == summary["last_event"]
        assert list(updated.finished.columns) == list(progress.IMAGE_COLUMNS)
        # a sync (an event without an image) makes it read everything again
        (project.source / "f.png").write_bytes((project.source / "d.png").read_bytes())
        store.sync()
        again = progress.update_snapshot(store, updated, store.summary())
        assert again.rows == progress.read_snapshot(store).rows
    finally:
        store.close()
