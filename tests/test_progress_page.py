"""The leads' progress page, run headless with streamlit.testing.v1.AppTest on a small store."""

from __future__ import annotations

import importlib.util
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from markdown_it import MarkdownIt
from projects import synced_store, write_config, write_photos
from streamlit.testing.v1 import AppTest

from dextr_core.config import load_config
from dextr_core.leads import export_folder, export_target
from dextr_core.masks import label_map, mask_path, save_label_map
from dextr_core.store import STATUSES as STORE_STATUSES
from dextr_core.store import (
    ImageRecord,
    ObjectRecord,
    ProgressStore,
    StoreCorruptError,
    StoreWriteError,
)
from ui import progress_view as view
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


def make_project(tmp_path: Path, monkeypatch, plan: dict):
    """Images of ``plan`` (40x32), a config with labels car/person/dog, a store as planned."""
    write_photos(tmp_path / "images", plan, (40, 32), 90)
    cfg_path = write_config(tmp_path, labels=["car", "person", "dog"])
    cfg = load_config(cfg_path)
    store = synced_store(cfg, claim_timeout_s=600.0)
    for image_id, (who, status, objects) in plan.items():
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
    return cfg


@pytest.fixture()
def project(tmp_path: Path, monkeypatch):
    """Five 40x32 images, a config with labels car/person/dog, a store with 2 done, 1 skipped."""
    yield make_project(tmp_path, monkeypatch, PLAN)
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
                       "Unreadable": "0", "Waiting for review": "2", "Approved": "0",
                       "Sent back": "0"}
    bar_text = at.get("progress")[0].proto.text
    assert "3 of 5 images finished" in bar_text
    table = at.dataframe[0].value
    assert list(table.index) == ["ana", "bob"]
    assert table.loc["ana", "Images done"] == 1 and table.loc["ana", "Skipped"] == 1
    assert table.loc["ana", "Objects"] == 2 and table.loc["bob", "Objects"] == 1
    assert table.loc["ana", view.MEDIAN_COLUMN] == pytest.approx(6.0)  # 12 s / 2 objects
    assert table.loc["bob", view.MEDIAN_COLUMN] == pytest.approx(12.0)
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


def test_reopen_and_send_back_as_lead_ask_first_and_keep_the_tiles_in_place(project):
    at = become_lead(run_page(lead_password=PASSWORD))
    assert any("Lead role" in s.value for s in at.sidebar.success)
    reopen = button(at, "reopen::a.png")
    assert not reopen.disabled
    reopen.click().run()  # asks first: nothing changed yet
    assert not at.exception
    assert status_of(project, "a.png") == "done"
    button(at, "cancel::a.png").click().run()
    assert status_of(project, "a.png") == "done" and button(at, "reopen::a.png")
    button(at, "reopen::a.png").click().run()
    button(at, "confirm::a.png").click().run()
    assert not at.exception
    assert status_of(project, "a.png") == "todo"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Done"] == "1" and metrics["To do"] == "3"
    captions = " ".join(c.value for c in at.caption)
    assert "1 images match" in captions  # the count is fresh, the same run as the header
    # the reopened photo keeps its tile (with its new status), so sub/b.png did not move
    assert "To do" in captions and md("a.png") in captions
    assert not [b for b in at.button if b.key == "reopen::a.png"]
    assert any("a.png reopened" in s.value.replace("\\", "") for s in at.success)
    button(at, "sendback::sub/b.png").click().run()
    at.text_input(key="gallery_confirm::note").input("the mirror is missing").run()
    button(at, "confirm::sub/b.png").click().run()
    assert not at.exception, at.exception
    store = ProgressStore(project.progress_file, project.source)
    record = store.get("sub/b.png")
    store.close()
    assert (record.status, record.annotator) == ("in_progress", "bob")
    assert record.review["note"] == "the mirror is missing"
    # a page change forgets the kept tiles: the gallery shows what matches now
    at.multiselect(key="gallery_status").set_value(["skipped"]).run()
    at.multiselect(key="gallery_status").set_value(["done"]).run()
    captions = " ".join(c.value for c in at.caption)
    assert "0 images match" in captions and md("a.png") not in captions


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
    backups = [p for p in project.progress_file.parent.glob(
        project.progress_file.name + ".backup-*") if not p.name.endswith(".journal")]
    assert len(backups) == 1  # (with the store package its journal is kept beside it)
    assert any(md(backups[0]) in s.value for s in at.success)
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
    at.user = {"is_logged_in": True, "email": email, "email_verified": True}
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


# --------------------------------------------------------------------------------------------
# User-supplied text is shown as plain characters

IMAGE_NAME = "![x](http://host/b.png)"
LINK_NAME = "[link](http://x)"
LINK_FILE = "[y](http:z).png"
ODD_PLAN = {
    "a.png": (IMAGE_NAME, "done", [("car", (2, 2, 20, 15))]),
    LINK_FILE: (LINK_NAME, "done", [("person", (0, 0, 12, 12))]),
    "c.png": (None, "todo", []),
}
_MARKDOWN = MarkdownIt("commonmark")


def assert_plain(text: str) -> None:
    """``text``, rendered as Markdown, holds no image and no link."""
    html = _MARKDOWN.render(text)
    assert "<img" not in html and "<a " not in html, f"{text!r} renders as {html!r}"


@pytest.fixture()
def odd_project(tmp_path: Path, monkeypatch):
    """Annotators named like Markdown images and links, an image file named like a link."""
    yield make_project(tmp_path, monkeypatch, ODD_PLAN)
    st.cache_resource.clear()
    st.cache_data.clear()


def test_markdown_in_names_and_file_names_shows_as_plain_text_in_the_gallery(odd_project):
    at = become_lead(run_page(lead_password=PASSWORD))
    assert not at.exception, at.exception
    captions = [c.value for c in at.caption]
    assert any(md("a.png") in c and md(IMAGE_NAME) in c for c in captions), captions
    assert any(md(LINK_FILE) in c and md(LINK_NAME) in c for c in captions), captions
    send_a, send_link = button(at, "sendback::a.png"), button(at, f"sendback::{LINK_FILE}")
    assert send_a.label == f"Send back to {md(IMAGE_NAME)}"
    assert send_link.label == f"Send back to {md(LINK_NAME)}"
    for text in [*captions, send_a.label, send_link.label, send_a.help, send_link.help]:
        assert_plain(text)
    # the tables show cells as plain text: the names are kept exactly as the store holds them
    assert set(at.dataframe[0].value.index) == {IMAGE_NAME, LINK_NAME}

    send_link.click().run()
    button(at, f"confirm::{LINK_FILE}").click().run()
    assert not at.exception, at.exception
    said = [s.value for s in at.success]
    assert any(md(LINK_FILE) in s and md(LINK_NAME) in s for s in said), said
    for text in said:
        assert_plain(text)
    assert status_of(odd_project, LINK_FILE) == "in_progress"


def test_an_error_quoting_a_markdown_name_shows_it_as_plain_text(odd_project):
    at = become_lead(run_page(lead_password=PASSWORD))
    button(at, "sendback::a.png").click().run()  # asks first
    # meanwhile another lead reopened a.png and LINK_NAME took it
    other = ProgressStore(odd_project.progress_file, odd_project.source, claim_timeout_s=600.0)
    other.reopen("a.png", "lead")
    other.claim("a.png", LINK_NAME)
    other.close()
    button(at, "confirm::a.png").click().run()  # refused: LINK_NAME holds it
    assert not at.exception, at.exception
    said = [m.value for m in (*at.warning, *at.error)]
    assert any("was not sent back" in m and md(LINK_NAME) in m for m in said), said
    for text in said:
        assert_plain(text)
    assert status_of(odd_project, "a.png") == "in_progress"  # still LINK_NAME's


def test_an_export_warning_quoting_a_file_name_shows_it_as_plain_text(odd_project):
    at = run_page()
    mask_path(odd_project.destination, LINK_FILE, odd_project.mask_suffix,
              odd_project.save_format).unlink()  # the export then warns about the missing mask
    button(at, "export_run").click().run()
    assert not at.exception, at.exception
    texts = [m.value for m in (*at.success, *at.warning, *at.error)]
    assert any("Wrote" in t for t in texts), texts
    assert any(md(LINK_FILE) in w.value for w in at.warning), texts
    for text in texts:
        assert_plain(text)
    assert at.get("download_button")


# --------------------------------------------------------------------------------------------
# Roles: with no lead configured nobody resets, and the page says how to configure one


def test_with_no_lead_configured_the_reset_says_how_to_configure_one(project):
    project.path.write_text(project.path.read_text() + "admin:\n  reset_progress: true\n")
    at = run_page()  # no secrets at all: nobody is a lead
    assert not at.exception, at.exception
    assert not [b for b in at.button if b.key in ("reset_run", "reset_decline")]
    infos = " ".join(i.value for i in at.main.info)
    assert "lead_password" in infos and "docs/roles.md" in infos, infos
    assert button(at, "reopen::a.png").disabled
    at.run()
    assert status_of(project, "a.png") == "done", "nobody may reset"


@pytest.mark.skipif(importlib.util.find_spec("ui.resources") is None,
                    reason="the lead sign-in on a damaged store comes with ui/resources.py "
                           "(workflow branch)")
def test_a_lead_signs_in_on_a_damaged_store_and_replaces_it(project):
    damaged = b'{"format": "dextr-progress", "tables": 5'
    project.progress_file.write_bytes(damaged)
    at = run_page(lead_password=PASSWORD)
    assert not at.exception, at.exception
    assert any("damaged" in e.value for e in at.error)
    start_new = [b for b in at.button if b.label.startswith("Start a new progress store")]
    assert not start_new, "an annotator may not replace the store"
    # the sign-in is drawn although the store cannot be opened
    at.text_input(key="dextr_lead_password_input").input(PASSWORD).run()
    assert not at.exception, at.exception
    start_new = [b for b in at.button if b.label.startswith("Start a new progress store")]
    assert start_new, [b.label for b in at.button]
    start_new[0].click().run()
    assert not at.exception, at.exception
    kept = list(project.progress_file.parent.glob(project.progress_file.name + ".corrupt-*"))
    assert [p.read_bytes() for p in kept] == [damaged]
    assert {m.label for m in at.metric} >= {"Done", "To do"}


@pytest.mark.skipif(importlib.util.find_spec("ui.resources") is None,
                    reason="the lead rule for a new store comes with ui/resources.py "
                           "(workflow branch)")
def test_with_no_lead_configured_nobody_replaces_a_damaged_store(project):
    damaged = b'{"format": "dextr-progress", "tables": 5'
    project.progress_file.write_bytes(damaged)
    at = run_page()
    assert not at.exception, at.exception
    assert not [b for b in at.button if b.label.startswith("Start a new progress store")]
    assert any("lead_password" in i.value for i in at.info), [i.value for i in at.info]
    assert project.progress_file.read_bytes() == damaged


# --------------------------------------------------------------------------------------------
# Store errors while the page is open are shown, not raised


def test_a_store_that_turns_out_damaged_while_the_page_is_open_is_reported(project, monkeypatch):
    at = run_page(lead_password=PASSWORD)
    assert not at.exception
    message = f"The progress store file {project.progress_file} is damaged: an image record " \
              "without a status [see](http://x)."

    def damaged(*args, **kwargs):
        raise StoreCorruptError(message, project.progress_file)

    for name in ("summary", "images", "objects", "events", "get"):
        monkeypatch.setattr(ProgressStore, name, damaged)
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any(md(message) in e for e in errors), errors
    for text in errors:
        assert_plain(text)
    button(at, "export_run").click().run()
    assert not at.exception, at.exception
    assert any("Export failed" in e.value and md(message) in e.value for e in at.error)


def test_a_malformed_journal_line_written_while_the_page_is_open_is_reported(project):
    at = run_page(lead_password=PASSWORD)
    assert not at.exception
    other = ProgressStore(project.progress_file, project.source, claim_timeout_s=600.0)
    other.claim("d.png", "cem")
    other.close()
    journal = project.progress_file.with_name(project.progress_file.name + ".journal")
    with journal.open("a") as fh:
        fh.write('{"c": 5}\n')
    try:  # what the store itself makes of it
        ProgressStore(project.progress_file, project.source).close()
    except StoreCorruptError:
        pass
    except Exception as exc:  # the store before the store branch: TypeError
        pytest.skip(f"this store raises {type(exc).__name__} for a malformed journal line, not "
                    "StoreCorruptError (comes with the store branch)")
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("cannot be read" in e for e in errors), errors
    for text in errors:
        assert_plain(text)


# --------------------------------------------------------------------------------------------
# ui/progress_view.py without Streamlit


class FakeStore:
    """The reading API of a store over fixed records (no files)."""

    def __init__(self, records, events=(), summary=None):
        self.records = {r.id: r for r in records}
        self._events = list(events)
        self._summary = summary or {}

    def summary(self):
        return dict(self._summary)

    def images(self, status=None):
        return [r for r in self.records.values() if status is None or r.status == status]

    def get(self, image_id):
        return self.records.get(image_id)

    def events(self, since=None, limit=None):
        out = [e for e in self._events if since is None or e.time > since]
        return out[-limit:] if limit else out

    def objects(self, image_id=None):
        return []


def _done(image_id, who, completed_at, status="done"):
    return ImageRecord(id=image_id, width=40, height=32, status=status, annotator=who,
                       updated_at=completed_at, completed_at=completed_at, n_objects=1)


def test_the_page_shows_every_status_the_store_knows_done_first():
    assert set(view.STATUSES) == set(STORE_STATUSES) and len(view.STATUSES) == len(STORE_STATUSES)
    assert view.STATUSES[0] == "done"


def test_throughput_is_per_hour_within_two_days_and_per_day_beyond():
    t0 = 1_700_000_000.0
    records = [_done("a", "ana", t0), _done("b", "ana", t0 + 60), _done("c", 7, t0 + 3 * 3600),
               _done("s", "ana", t0, status="skipped")]
    snap = view.read_snapshot(FakeStore(records))
    table, unit = view.throughput(snap)
    assert unit == "hour"
    assert sorted(zip(table["annotator"], table["images"], strict=True)) == [("7", 1), ("ana", 2)]
    later = view.read_snapshot(FakeStore([*records, _done("d", "bob", t0 + 3 * 86400)]))
    table, unit = view.throughput(later)
    assert unit == "day" and int(table["images"].sum()) == 4


def test_the_gallery_selection_filters_and_puts_the_newest_first():
    t0 = 1_700_000_000.0
    snap = view.read_snapshot(FakeStore([_done("a", "ana", t0), _done("b", "bob", t0 + 5),
                                         _done("c", "ana", t0 + 9),
                                         _done("s", "ana", t0 + 20, status="skipped")]))
    assert list(view.gallery_selection(snap, ["done"], "", "")["id"]) == ["c", "b", "a"]
    assert list(view.gallery_selection(snap, ["done"], "ana", "")["id"]) == ["c", "a"]
    pairs = pd.DataFrame([("a", "car"), ("b", "dog")], columns=["image_id", "label"])
    assert list(view.gallery_selection(snap, ["done", "skipped"], "", "car", pairs)["id"]) == ["a"]
    assert view.annotator_names(snap) == ["ana", "bob"]


def test_a_snapshot_cache_reads_another_store_in_full():
    first = FakeStore([_done("a", "ana", 1.0)], summary={"last_event": 1.0})
    second = FakeStore([_done("z", "zoe", 2.0)], summary={"last_event": 1.0})
    cache = view.SnapshotCache()
    assert sorted(cache.snapshot(first).rows) == ["a"]
    cache.object_index(second)  # a new store object (the store was opened again)
    assert sorted(cache.snapshot(second).rows) == ["z"]


def test_an_annotators_export_goes_beside_an_existing_one_with_the_time_in_its_name(
        project, tmp_path: Path):
    now = 1_700_000_000.0
    plain = export_target(project, "coco", "done", lead=False, now=now)
    assert plain == tmp_path / "exports" / "anno_cfg-coco-done.zip"
    plain.parent.mkdir()
    plain.write_bytes(b"in use")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    beside = export_target(project, "coco", "done", lead=False, now=now)
    assert beside.name == f"anno_cfg-coco-done-{stamp}.zip"
    beside.write_bytes(b"also in use")
    assert export_target(project, "coco", "done", lead=False, now=now).name == \
        f"anno_cfg-coco-done-{stamp}-2.zip"
    assert export_target(project, "coco", "done", lead=True, now=now) == plain


def test_exports_go_to_the_temp_folder_when_the_config_lies_in_the_progress_files_folder(
        tmp_path: Path):
    class Cfg:
        path = tmp_path / "project" / "cfg" / "anno_cfg.yml"
        source = tmp_path / "photos"
        destination = tmp_path / "masks"
        progress_file = tmp_path / "project" / "progress.json"

    assert export_folder(Cfg) == Path(tempfile.gettempdir()) / "dextr-exports"
    Cfg.progress_file = tmp_path / "project" / "cfg" / "progress.json"  # the config's own folder
    assert export_folder(Cfg) == tmp_path / "project" / "cfg" / "exports"
    Cfg.source = tmp_path / "project"  # the config inside the photos folder
    assert export_folder(Cfg) == Path(tempfile.gettempdir()) / "dextr-exports"


def test_a_send_back_that_fails_changes_nothing_and_says_so(project, monkeypatch):
    at = become_lead(run_page(lead_password=PASSWORD))

    def full_disk(*args, **kwargs):
        raise StoreWriteError("The progress could not be written (No space left on device); "
                              "free some space and try again.")

    monkeypatch.setattr(ProgressStore, "send_back", full_disk)
    button(at, "sendback::sub/b.png").click().run()
    button(at, "confirm::sub/b.png").click().run()
    assert not at.exception, at.exception
    assert status_of(project, "sub/b.png") == "done"
    said = " ".join(m.value for m in (*at.warning, *at.error, *at.success))
    assert "was not sent back" in said and "No space left" in said, said


def test_a_reset_whose_scan_fails_says_the_reset_happened_and_the_scan_runs_again(project,
                                                                                 monkeypatch):
    at = become_lead(run_page(lead_password=PASSWORD))
    at.text_input(key="reset_confirm_text").input("RESET").run()
    real_sync = ProgressStore.sync

    def unreadable_folder(*args, **kwargs):
        raise StoreWriteError("The progress could not be written (No space left on device); "
                              "free some space and try again.")

    monkeypatch.setattr(ProgressStore, "sync", unreadable_folder)
    button(at, "reset_run").click().run()
    assert not at.exception, at.exception
    said = " ".join(m.value for m in (*at.warning, *at.error, *at.success))
    assert "Progress reset" in said and "could not be scanned" in said, said
    assert "progress unchanged" not in said
    backups = [p for p in project.progress_file.parent.glob(
        project.progress_file.name + ".backup-*") if not p.name.endswith(".journal")]
    assert len(backups) == 1 and md(backups[0]) in said

    monkeypatch.setattr(ProgressStore, "sync", real_sync)
    button(at, "rescan_run").click().run()
    assert not at.exception, at.exception
    assert any("Source folder scanned" in s.value for s in at.success)
    store = ProgressStore(project.progress_file, project.source)
    try:
        assert store.summary()["total"] == len(PLAN)
    finally:
        store.close()


@pytest.mark.parametrize("choice, names", [
    ("yolo", {"data.yaml", "images/a.png", "labels/a.txt", "images/sub__b.png",
              "labels/sub__b.txt"}),
    ("voc", {"JPEGImages/a.jpg", "SegmentationObject/a.png", "SegmentationClass/sub__b.png",
             "ImageSets/Segmentation/train.txt", "labels.txt"}),
    ("coco-polygon", {"annotations.json"}),
])
def test_the_page_exports_yolo_voc_and_coco_polygons_with_the_cli_code(project, tmp_path,
                                                                       choice, names):
    at = run_page()
    at.selectbox(key="export_format").set_value(choice).run()
    button(at, "export_run").click().run()
    assert not at.exception
    with zipfile.ZipFile(tmp_path / "exports" / f"anno_cfg-{choice}-done.zip") as zf:
        assert names <= set(zf.namelist())
        if choice == "coco-polygon":
            import json

            anns = json.loads(zf.read("annotations.json"))["annotations"]
            assert anns and all(isinstance(a["segmentation"], list) for a in anns)
    assert any("2 images, 3 objects" in s.value for s in at.success)


def test_a_lead_reviews_the_queue_oldest_first_and_the_page_counts_it(project):
    at = run_page(lead_password=PASSWORD)
    assert any("Only a lead can review" in i.value for i in at.info)  # not a lead: no queue
    at = become_lead(at)
    at.toggle(key="review_open").set_value(True).run()
    assert not at.exception, at.exception
    markdown = " ".join(m.value for m in at.markdown)
    assert md("a.png") in markdown and "done by ana" in markdown  # a.png was done first
    assert "1 car, 1 person; 8 clicks" in markdown
    button(at, "review_approve").click().run()
    assert not at.exception, at.exception
    assert any("a.png approved" in s.value.replace("\\", "") for s in at.success)
    # the decided photo stays, Next photo where Approve was: a double click decides nothing
    assert not [b for b in at.button if b.key == "review_approve"]
    assert md("a.png") in " ".join(m.value for m in at.markdown)
    button(at, "review_next").click().run()
    markdown = " ".join(m.value for m in at.markdown)
    assert md("sub/b.png") in markdown and "done by bob" in markdown
    at.text_area(key="review_note").input("the person's arm is cut off").run()
    button(at, "review_send_back").click().run()
    assert not at.exception, at.exception
    said = " ".join(s.value for s in at.success).replace("\\", "")
    assert "sub/b.png sent back with the note" in said and "first image bob gets" in said
    button(at, "review_next").click().run()
    assert any("Nothing is waiting for review" in s.value for s in at.success)
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Approved"], metrics["Sent back"], metrics["Waiting for review"]) == \
        ("1", "1", "0")
    # who holds what now: bob has sub/b.png; the lead is no row among the annotators
    holders = at.dataframe[1].value
    assert list(holders["Image"]) == ["sub/b.png"] and list(holders["Annotator"]) == ["bob"]
    assert "lead" not in set(at.dataframe[0].value.index)
    store = ProgressStore(project.progress_file, project.source)
    try:
        assert store.get("sub/b.png").review["note"] == "the person's arm is cut off"
        assert store.get("a.png").review["decision"] == "approved"
    finally:
        store.close()
    at.selectbox(key="export_status").set_value("approved").run()
    button(at, "export_run").click().run()
    assert not at.exception, at.exception
    assert any("1 images, 2 objects" in s.value for s in at.success)


def test_the_gallery_count_follows_the_store_and_its_tiles_stay_until_asked(project):
    at = run_page()
    assert "2 images match (2 done in all" in " ".join(c.value for c in at.caption)
    other = ProgressStore(project.progress_file, project.source, claim_timeout_s=600.0)
    other.claim("d.png", "cleo")  # someone finishes a photo while the page is open
    other.complete("d.png", "cleo", 3.0)
    other.close()
    at.run()  # what the refresh every REFRESH_S seconds draws
    assert not at.exception, at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "3 images match (3 done in all" in captions
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Done"] == "3"
    assert len(at.get("image")) == 2 and "changed since these tiles were drawn" in captions
    button(at, "gallery_latest").click().run()
    assert len(at.get("image")) == 3 and not [b for b in at.button if b.key == "gallery_latest"]
