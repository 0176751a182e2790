"""Ingest in worker processes (server.services.ingest_pool): real spawned workers, a real
SQLite index and file store. A worker stores exactly what the server's own process would;
refusals keep their reason and DICOM code across the process boundary; a worker that dies
is replaced and costs no instance that was still spooled; workers die with the server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import sqlite3
import tempfile
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from pydicom.uid import generate_uid

from server.dicom.reading import configure_pydicom
from server.errors import BadRequest, Conflict, LightboxError
from server.index.sql import SqlIndex
from server.services.ingest import Ingestor
from server.services.ingest_pool import IngestPool
from server.storage.filestore import FileStore
from tests.conftest import SAMPLES, multipart_body, series_from, start_server, stow_headers

T = TypeVar("T")
CT = SAMPLES / "pydicom" / "CT_small.dcm"
# What the index keeps of an instance, without the moment it was stored.
ROW = ("sop_uid, sop_class_uid, instance_number, rows, columns, bits_allocated, number_of_frames, "
       "transfer_syntax, blob_key, file_size, sha256, pixel_tag, pixel_offset, pixel_length, frames, "
       "descriptor, instance_json, metadata")


def _in_thread(work: Coroutine[Any, Any, T]) -> T:
    """asyncio.run in a thread of its own (the e2e tests keep a loop running in the main one)."""
    with concurrent.futures.ThreadPoolExecutor(1) as runner:
        return runner.submit(asyncio.run, work).result()


class Store:
    def __init__(self, root: Path) -> None:
        configure_pydicom()
        self.data = root / "data"
        self.blobs = FileStore(self.data)
        self.url = f"sqlite+aiosqlite:///{self.data / 'index.sqlite'}"
        index = SqlIndex(self.url)

        async def migrate() -> None:
            await index.start()
            await index.close()

        _in_thread(migrate())
        self.index = SqlIndex(self.url)

    def spool(self, data: bytes) -> Path:
        path = self.blobs.spool_dir() / f"{generate_uid()}.dcm"
        path.write_bytes(data)
        return path

    def rows(self) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.data / "index.sqlite") as db:
            return db.execute(f"select {ROW} from instances order by sop_uid").fetchall()

    def pending(self) -> int:
        with sqlite3.connect(self.data / "index.sqlite") as db:
            return int(db.execute("select count(*) from pending_blobs").fetchone()[0])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Store, IngestPool]]:
    store = Store(tmp_path)
    pool = IngestPool(2, store.url, store.data, "replace")
    pool.start()
    try:
        yield store, pool
    finally:
        pool.close()
        store.index.sync_engine.dispose()


def _samples() -> list[Path]:
    return sorted(p for p in (SAMPLES / "pydicom").glob("*.dcm"))[:12]


def test_a_worker_stores_what_the_server_process_would(store: tuple[Store, IngestPool], tmp_path: Path) -> None:
    pooled, pool = store
    local = Store(tmp_path / "local")
    ingestor = Ingestor(local.index, local.blobs, "replace")
    outcomes_pooled, outcomes_local = [], []

    async def run_all() -> None:
        for sample in _samples():
            data = sample.read_bytes()
            for target, outcomes, ingest in ((pooled, outcomes_pooled, pool.ingest),
                                             (local, outcomes_local, ingestor.ingest)):
                try:
                    result = await ingest(target.spool(data))
                    outcomes.append(result.outcome)
                except LightboxError as exc:
                    outcomes.append(f"{type(exc).__name__} {exc.dicom_status:#06x} {exc.message}")

    _in_thread(run_all())
    local.index.sync_engine.dispose()
    assert outcomes_pooled == outcomes_local
    assert "stored" in outcomes_pooled
    assert pooled.rows() == local.rows() and len(pooled.rows()) >= 5
    assert pooled.pending() == 0


def test_refusals_keep_their_reason_and_code(store: tuple[Store, IngestPool]) -> None:
    st, pool = store

    async def refusals() -> list[LightboxError]:
        errors = []
        for path, study in ((st.spool(b"not dicom at all"), None), (st.spool(CT.read_bytes()), "1.2.3")):
            with pytest.raises(LightboxError) as caught:
                await pool.ingest(path, expected_study=study)
            errors.append(caught.value)
        return errors

    bad, mismatch = _in_thread(refusals())
    assert type(bad) is BadRequest and bad.dicom_status == 0xC000 and "DICM" in bad.message
    assert type(mismatch) is Conflict and mismatch.dicom_status == 0xA900 and "1.2.3" in mismatch.message
    assert st.rows() == [] and st.pending() == 0
    assert list(st.blobs.spool_dir().iterdir()) == []


def _worker_pids(pid: int) -> list[int]:
    """Children of ``pid`` that run an ingest worker (not multiprocessing's resource tracker)."""
    found = []
    children = " ".join(p.read_text() for p in Path(f"/proc/{pid}/task").glob("*/children"))
    for child in children.split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"spawn_main" in cmdline:
            found.append(int(child))
    return found


def _wait_for(condition: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_worker_killed_while_idle_costs_nothing(store: tuple[Store, IngestPool]) -> None:
    st, pool = store
    parts = series_from(CT, 6)
    _wait_for(lambda: len(_worker_pids(os.getpid())) == 2)
    before = _worker_pids(os.getpid())

    async def store_all() -> tuple[list[str], list[int]]:
        first = await pool.ingest(st.spool(parts[0]))
        os.kill(before[0], signal.SIGKILL)
        await asyncio.sleep(1)  # the pool notices at once; then every submit finds it broken
        rest = await asyncio.gather(*(pool.ingest(st.spool(p)) for p in parts[1:]))
        # The new workers, seen while this thread (which spawned them) lives.
        await asyncio.to_thread(_wait_for, lambda: len(_worker_pids(os.getpid())) == 2)
        return [first.outcome, *(r.outcome for r in rest)], _worker_pids(os.getpid())

    outcomes, after = _in_thread(store_all())
    assert outcomes == ["stored"] * 6
    assert len(st.rows()) == 6 and st.pending() == 0
    assert not set(before) & set(after)


def test_a_worker_killed_mid_ingest_fails_parts_cleanly(store: tuple[Store, IngestPool]) -> None:
    """The standard pool ends every worker when one dies: parts in flight either were stored or
    fail with a processing failure; sent again they are stored; recovery leaves no orphan."""
    st, pool = store
    parts = series_from(CT, 12)
    _wait_for(lambda: len(_worker_pids(os.getpid())) == 2)
    victim = _worker_pids(os.getpid())[0]

    async def attempt(data: bytes) -> str:
        try:
            return (await pool.ingest(st.spool(data))).outcome
        except LightboxError as exc:
            return f"{exc.dicom_status:#06x}"

    async def store_all() -> tuple[list[str], list[str]]:
        jobs = [asyncio.create_task(attempt(p)) for p in parts]
        await asyncio.sleep(0.01)
        os.kill(victim, signal.SIGKILL)
        first = await asyncio.gather(*jobs)
        again = [await attempt(p) for p, outcome in zip(parts, first) if outcome != "stored"]
        return first, again

    first, again = _in_thread(store_all())
    assert set(first) <= {"stored", "0x0110"}, first
    assert set(again) <= {"stored", "already-present"}, again
    assert len(st.rows()) == 12

    async def recover() -> int:
        try:
            return await Ingestor(st.index, st.blobs, "replace").recover()
        finally:
            await st.index.engine.dispose()

    _in_thread(recover())
    assert st.pending() == 0
    keys = {row[8] for row in st.rows()}
    assert {p.name for p in st.blobs.blobs.rglob("*") if p.is_file()} == keys


def test_workers_end_with_a_killed_server() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="lightbox-test-"))
    server = start_server(tmp / "data", env={"LIGHTBOX_INGEST_PROCESSES": "2"})
    try:
        study = generate_uid()
        body = multipart_body(series_from(CT, 4, study_uid=study))
        response = httpx.post(server.dicomweb + "/studies", content=body, headers=stow_headers(), timeout=60)
        assert response.status_code == 200, response.text
        workers = _worker_pids(server.process.pid)
        assert len(workers) == 2
    finally:
        server.stop(kill=True)
    _wait_for(lambda: not any(Path(f"/proc/{w}").exists() and b"spawn_main" in Path(f"/proc/{w}/cmdline")
                              .read_bytes() for w in workers), timeout=10)
