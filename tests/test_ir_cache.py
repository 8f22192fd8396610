"""The OpenVINO export cache: where it lives, its key, whole-or-nothing entries, and a cache that
cannot be written (a warning, nothing else). The round trip through DextrSegmenter is in
test_segmenters.py."""

from __future__ import annotations

import importlib.util

import pytest

from dextr_core import ir_cache


def test_cache_dir_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DEXTR_CACHE_DIR", str(tmp_path))
    assert ir_cache.cache_dir() == tmp_path / "openvino"
    monkeypatch.setenv("DEXTR_CACHE_DIR", "")
    assert ir_cache.cache_dir() is None  # turned off
    assert ir_cache.lookup("abc") is None and ir_cache.store("abc", tmp_path) is None
    monkeypatch.delenv("DEXTR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ir_cache.cache_dir() == tmp_path / "xdg" / "dextr-annotool" / "openvino"


def export_folder(tmp_path, text: str):
    folder = tmp_path / "export"
    folder.mkdir(exist_ok=True)
    for name in ir_cache.IR_FILES:
        (folder / name).write_text(f"{name} {text}")
    return folder


def test_store_then_lookup_and_discard(monkeypatch, tmp_path):
    monkeypatch.setenv("DEXTR_CACHE_DIR", str(tmp_path / "cache"))
    assert ir_cache.lookup("k1") is None
    entry = ir_cache.store("k1", export_folder(tmp_path, "one"))
    assert entry == tmp_path / "cache" / "openvino" / "k1"
    assert ir_cache.lookup("k1") == entry / "dextr.xml"
    assert (entry / "dextr.bin").read_text() == "dextr.bin one"
    # a second process that exported at the same time finds the entry there: the first stays
    assert ir_cache.store("k1", export_folder(tmp_path, "two")) == entry
    assert (entry / "dextr.xml").read_text() == "dextr.xml one"
    assert [p.name for p in entry.parent.iterdir()] == ["k1"]  # no temporary folder left
    # half an entry does not count, and the next store replaces it
    (entry / "dextr.bin").unlink()
    assert ir_cache.lookup("k1") is None
    assert ir_cache.store("k1", export_folder(tmp_path, "three")) == entry
    assert (entry / "dextr.bin").read_text() == "dextr.bin three"
    ir_cache.discard("k1")
    assert not entry.exists()


def test_a_cache_that_cannot_be_written_only_warns(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DEXTR_CACHE_DIR", str(blocker))
    with pytest.warns(RuntimeWarning, match="DEXTR_CACHE_DIR"):
        assert ir_cache.store("k1", export_folder(tmp_path, "one")) is None
    assert ir_cache.lookup("k1") is None


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
def test_key_follows_the_weights_bytes(tmp_path):
    a, b, c = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "c.h5"
    a.write_bytes(b"weights one")
    b.write_bytes(b"weights one")
    c.write_bytes(b"weights two")
    assert ir_cache.cache_key(a) == ir_cache.cache_key(b) != ir_cache.cache_key(c)
