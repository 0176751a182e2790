"""The ingest flow in-process (SQLite index, file store): what is left behind after each
outcome — a stored instance has its blob, its rows and no pending mark; a refused or failed
one leaves no blob, no row and no pending mark."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io
import sqlite3
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pydicom
import pytest
from pydicom.uid import generate_uid

from server.dicom.reading import configure_pydicom
from server.errors import BadRequest, Conflict
from server.index.sql import SqlIndex
from server.services import ingest as ingest_module
from server.services.ingest import Ingestor
from server.storage.filestore import FileStore
from tests.conftest import SAMPLES

CT = SAMPLES / "pydicom" / "CT_small.dcm"
T = TypeVar("T")


def _run(index: SqlIndex, work: Coroutine[Any, Any, T]) -> T:
    """Run async index work in a loop of its own, leaving no connection bound to that loop. In
    a thread of its own: the e2e tests' session-wide Playwright (sync API) keeps an event loop
    running in the main thread for the rest of the test session."""
    async def run() -> T:
        try:
            return await work
        finally:
            await index.engine.dispose()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Ingestor, SqlIndex, FileStore]]:
    configure_pydicom()
    blobs = FileStore(tmp_path / "data")
    index = SqlIndex(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'index.sqlite'}")
    _run(index, index.start())
    try:
        yield Ingestor(index, blobs, "replace"), index, blobs
    finally:
        index.sync_engine.dispose()


def _spool(blobs: FileStore, data: bytes) -> Path:
    path = blobs.spool_dir() / f"{generate_uid()}.dcm"
    path.write_bytes(data)
    return path


def _variant(**changes: str) -> bytes:
    ds = pydicom.dcmread(CT)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _db(blobs: FileStore) -> sqlite3.Connection:
    return sqlite3.connect(blobs.root / "index.sqlite")


def _state(blobs: FileStore) -> tuple[int, int, list[str]]:
    """(instances, pending marks, blob files)."""
    with _db(blobs) as db:
        n = db.execute("select count(*) from instances").fetchone()[0]
        pending = db.execute("select count(*) from pending_blobs").fetchone()[0]
    files = sorted(p.name for p in blobs.blobs.rglob("*") if p.is_file())
    return n, pending, files


def test_stored_instance_has_blob_rows_and_no_pending_mark(store: tuple[Ingestor, SqlIndex, FileStore]) -> None:
    ingestor, _index, blobs = store
    data = CT.read_bytes()
    path = _spool(blobs, data)
    result = ingestor.ingest_sync(path)
    assert result.outcome == "stored"
    digest = hashlib.sha256(data).hexdigest()
    assert _state(blobs) == (1, 0, [digest])
    assert (blobs.blobs / digest[:2] / digest[2:4] / digest).read_bytes() == data
    assert not path.exists()
    with _db(blobs) as db:
        row = db.execute("select sop_uid, sha256, blob_key, file_size, metadata, frames, descriptor, created_at "
                         "from instances").fetchone()
    assert row[0] == result.sop_uid and row[1] == row[2] == digest and row[3] == len(data)
    assert isinstance(row[4], bytes) and row[4].startswith(b"{")  # stored as a BLOB, as SQLAlchemy would
    assert row[5] and row[6] and isinstance(row[7], float)


def test_known_sha256_is_used_as_given(store: tuple[Ingestor, SqlIndex, FileStore]) -> None:
    ingestor, _index, blobs = store
    data = CT.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    ingestor.ingest_sync(_spool(blobs, data), sha256=digest)
    assert _state(blobs) == (1, 0, [digest])


def test_a_series_counts_every_slice_and_repeats_change_nothing(store: tuple[Ingestor, SqlIndex, FileStore]) -> None:
    ingestor, _index, blobs = store
    study, series = generate_uid(), generate_uid()
    parts = [_variant(StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=generate_uid())
             for _ in range(4)]
    assert [ingestor.ingest_sync(_spool(blobs, p)).outcome for p in parts] == ["stored"] * 4
    assert ingestor.ingest_sync(_spool(blobs, parts[1])).outcome == "already-present"
    with _db(blobs) as db:
        assert db.execute("select num_instances from series").fetchall() == [(4,)]
        assert db.execute("select num_instances, num_series from studies").fetchall() == [(4, 1)]
        assert db.execute("select count(*) from patients").fetchone() == (1,)
    assert _state(blobs)[:2] == (4, 0)


def test_other_bytes_replace_the_instance_and_its_blob(store: tuple[Ingestor, SqlIndex, FileStore]) -> None:
    ingestor, _index, blobs = store
    sop = generate_uid()
    first, second = _variant(SOPInstanceUID=sop), _variant(SOPInstanceUID=sop, PatientName="Other^Name")
    assert ingestor.ingest_sync(_spool(blobs, first)).outcome == "stored"
    assert ingestor.ingest_sync(_spool(blobs, second)).outcome == "replaced"
    assert _state(blobs) == (1, 0, [hashlib.sha256(second).hexdigest()])
    with _db(blobs) as db:
        assert db.execute("select patient_name from patients").fetchall() == [("Other^Name",)]


def test_reject_policy_keeps_the_first_and_leaves_nothing(store: tuple[Ingestor, SqlIndex, FileStore]) -> None:
    _ingestor, index, blobs = store
    ingestor = Ingestor(index, blobs, "reject")
    sop = generate_uid()
    first = _variant(SOPInstanceUID=sop)
    ingestor.ingest_sync(_spool(blobs, first))
    with pytest.raises(Conflict):
        ingestor.ingest_sync(_spool(blobs, _variant(SOPInstanceUID=sop, PatientName="Other^Name")))
    assert _state(blobs) == (1, 0, [hashlib.sha256(first).hexdigest()])


def test_refused_files_leave_nothing_behind(store: tuple[Ingestor, SqlIndex, FileStore]) -> None:
    ingestor, _index, blobs = store
    with pytest.raises(BadRequest):
        ingestor.ingest_sync(_spool(blobs, b"\0" * 128 + b"DICM" + b"\xff" * 64))
    with pytest.raises(BadRequest):
        ingestor.ingest_sync(_spool(blobs, b"not dicom at all"))
    with pytest.raises(Conflict):
        ingestor.ingest_sync(_spool(blobs, CT.read_bytes()), expected_sop=("1.2.3", "4.5.6"))
    with pytest.raises(Conflict):
        ingestor.ingest_sync(_spool(blobs, CT.read_bytes()), expected_study="1.2.3")
    assert _state(blobs) == (0, 0, [])
    assert list(blobs.spool_dir().iterdir()) == []


def test_a_failed_flush_leaves_nothing(store: tuple[Ingestor, SqlIndex, FileStore],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ingestor, _index, blobs = store

    def broken(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(ingest_module.os, "fdatasync", broken)
    with pytest.raises(OSError):
        ingestor.ingest_sync(_spool(blobs, CT.read_bytes()))
    monkeypatch.undo()
    assert _state(blobs) == (0, 0, [])


@pytest.mark.parametrize("step", ["put", "folder flush", "commit"])
def test_a_failure_after_the_pending_mark_takes_the_blob_out(
    store: tuple[Ingestor, SqlIndex, FileStore], monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    ingestor, index, blobs = store
    place = blobs.place_file_sync

    def put_then_fail(key: str, source: Path) -> None:
        place(key, source)  # the blob went in, then something failed
        raise RuntimeError("put failed")

    def flush_fails(key: str, source: Path) -> Callable[[], None]:
        place(key, source)

        def fail_flush() -> None:
            raise OSError("folder flush failed")
        return fail_flush

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("commit failed")

    if step == "put":
        monkeypatch.setattr(blobs, "place_file_sync", put_then_fail)
    elif step == "folder flush":  # inside the commit's transaction: nothing may be committed
        monkeypatch.setattr(blobs, "place_file_sync", flush_fails)
    else:
        monkeypatch.setattr(index, "commit_instance_sync", fail)
    with pytest.raises(RuntimeError if step != "folder flush" else OSError):
        ingestor.ingest_sync(_spool(blobs, CT.read_bytes()))
    assert _state(blobs) == (0, 0, [])


def test_pending_marks_are_idempotent_and_recovery_removes_abandoned_blobs(
    store: tuple[Ingestor, SqlIndex, FileStore],
) -> None:
    ingestor, index, blobs = store
    key = "ab" * 32
    index.mark_pending_sync(key)
    index.mark_pending_sync(key)  # a second mark of the same blob is no error
    with _db(blobs) as db:
        assert db.execute("select count(*) from pending_blobs").fetchone() == (1,)
        # as a crashed process would have left it
        db.execute("update pending_blobs set owner = 'elsewhere:1', created_at = 0")
    source = _spool(blobs, b"orphan")
    blobs.put_file_sync(key, source)
    assert _run(index, ingestor.recover()) == 1
    assert _state(blobs) == (0, 0, [])
