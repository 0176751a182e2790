"""FileStore: a blob's move into the store is durable only once its folder is flushed, and a
new shard folder only once the folder holding it is flushed too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.storage.filestore import FileStore


def _flushed_folders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    flushed: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return flushed


def _spooled(store: FileStore, data: bytes) -> Path:
    path = store.spool_dir() / f"part-{len(data)}"
    path.write_bytes(data)
    return path


def test_placing_into_a_new_shard_flushes_the_folders_that_gained_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path / "data")
    flushed = _flushed_folders(monkeypatch)
    blobs = str(store.blobs)

    make_durable = store.place_file_sync("ab" * 32, _spooled(store, b"one"))
    assert (store.blobs / "ab" / "ab" / ("ab" * 32)).read_bytes() == b"one"  # moved in at once
    assert flushed == []  # ...durable only when the caller runs the returned step
    make_durable()
    assert sorted(flushed) == sorted([f"{blobs}/ab/ab", f"{blobs}/ab", blobs])

    flushed.clear()
    store.place_file_sync("abab" + "cd" * 30, _spooled(store, b"second"))()  # the same shard
    assert flushed == [f"{blobs}/ab/ab"]

    flushed.clear()
    store.put_file_sync("abcd" + "ef" * 30, _spooled(store, b"third"))  # a new leaf only
    assert sorted(flushed) == sorted([f"{blobs}/ab/cd", f"{blobs}/ab"])
    assert not list(store.spool_dir().iterdir())
