"""dextr_core.fileio: the one atomic-write helper (permissions, failures at each step)."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from dextr_core import fileio, masks
from dextr_core.fileio import atomic_write, fsync_dir


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device (simulated)")


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def test_a_written_file_gets_the_umask_permissions_not_0600(tmp_path: Path, umask_027):
    target = tmp_path / "file.bin"
    atomic_write(target, b"data")
    assert target.stat().st_mode & 0o777 == 0o666 & ~0o027
    # Replacing an existing file gives the new file the same rule.
    atomic_write(target, b"again")
    assert target.stat().st_mode & 0o777 == 0o640
    assert target.read_bytes() == b"again"


def test_masks_atomic_write_is_the_fileio_helper():
    assert masks.atomic_write is fileio.atomic_write


def test_the_store_engine_writes_through_the_fileio_helper():
    from dextr_core.store import journal as store_storage

    assert store_storage.atomic_write is fileio.atomic_write


def test_a_large_write_is_complete(tmp_path: Path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    atomic_write(tmp_path / "big.bin", data)
    assert (tmp_path / "big.bin").read_bytes() == data


@pytest.mark.parametrize("step", ["write", "fsync", "replace"])
def test_a_failure_before_the_rename_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path, monkeypatch, step):
    target = tmp_path / "file.bin"
    atomic_write(target, b"old")
    monkeypatch.setattr(os, step, _enospc)
    with pytest.raises(OSError) as info:
        atomic_write(target, b"new")
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


@pytest.mark.parametrize("step", ["write", "fsync", "replace"])
def test_a_failed_first_write_leaves_nothing_behind(tmp_path: Path, monkeypatch, step):
    monkeypatch.setattr(os, step, _enospc)
    with pytest.raises(OSError):
        atomic_write(tmp_path / "file.bin", b"new")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_a_failing_folder_fsync_after_the_rename_is_logged_not_raised(tmp_path: Path, monkeypatch, caplog):
    target = tmp_path / "file.bin"
    atomic_write(target, b"old")
    real_fsync = os.fsync

    def fsync_files_only(fd):
        if _is_dir_fd(fd):
            raise OSError(errno.EIO, "I/O error (simulated)")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_files_only)
    with caplog.at_level(logging.WARNING, logger="dextr_core.fileio"):
        atomic_write(target, b"new")
    # The rename happened: saying "nothing changed" would be false, so the call returns.
    assert target.read_bytes() == b"new"
    assert "may not survive a power cut" in caplog.text
    with pytest.raises(OSError):
        fsync_dir(tmp_path)


def _is_dir_fd(fd: int) -> bool:
    import stat

    return stat.S_ISDIR(os.fstat(fd).st_mode)


def test_fsync_dir_ignores_a_file_system_without_folder_fsync(tmp_path: Path, monkeypatch):
    def einval(fd):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "fsync", einval)
    fsync_dir(tmp_path)  # no error: not supported is not a failure
