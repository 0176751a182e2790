"""Ingest in worker processes, so STOW-RS uses every core.

Storing one instance is ~5 ms of Python (header parse, DICOM JSON, index commit) that holds
its process's GIL; in the server's own process it competes with the event loop's HTTP and
multipart work, and one process never uses more than one core. Here each instance's whole
``Ingestor.ingest_sync`` runs in a worker process with its own index connection and file
store: only the spooled file's path goes in and an ``IngestResult`` (or the error) comes out.
The database serialises writers across processes as it does across threads (SQLite: WAL,
``BEGIN IMMEDIATE``, busy timeout), and the crash order of ingest is unchanged.

Workers are spawned (never forked from a process running threads) from the thread that
owns the pool (the event loop's), ignore a terminal's Ctrl-C (the server stops them after
in-flight work), and are killed by the kernel when that thread ends, so a restart's recovery
never races a leftover worker. When a worker dies, the standard pool ends the others too:
an instance still spooled is sent to new workers; one a worker had begun to store fails
with a processing failure (0x0110), sending it again stores it, and what it left pending is
removed at the next start, as after any crash.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from server.config import DuplicatePolicy, Settings
from server.errors import LightboxError
from server.services.ingest import Ingestor, IngestResult

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_WORKER: Ingestor | None = None  # set in worker processes only


class IngestPool:
    """``ingest(path, …)`` like ``Ingestor.ingest``, run in ``workers`` processes."""

    def __init__(self, workers: int, database: str, data: Path, duplicate_policy: DuplicatePolicy) -> None:
        self.workers = workers
        self._initargs = (os.getpid(), database, str(data), duplicate_policy)
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=self._initargs,
        )

    def start(self) -> None:
        """Spawn every worker now (from the calling thread) so the first upload does not wait
        for their imports; returns at once."""
        for _ in range(self.workers):  # each submit finds no idle worker yet, so spawns one
            self._pool.submit(_ready)

    async def ingest(self, path: Path, expected_study: str | None = None,
                     sha256: str | None = None) -> IngestResult:
        job = functools.partial(_ingest_in_worker, str(path), expected_study, sha256)
        for attempt in (1, 2):
            pool = self._pool
            try:
                return await asyncio.get_running_loop().run_in_executor(pool, job)
            except BrokenProcessPool as exc:
                self._replace(pool)
                # Still spooled: the worker died before it moved the file in, so new workers can
                # store it (ingest's crash order makes a second try safe). Else it is lost.
                if attempt == 1 and path.exists():
                    continue
                path.unlink(missing_ok=True)
                raise LightboxError(f"processing failure: the ingest worker process ended ({exc})") from exc
        raise AssertionError("unreachable")

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                log.error("an ingest worker process died; starting new ones")
                self._pool = self._new_pool()
                self.start()
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Let in-flight ingests finish, then stop the workers."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def pool_for(settings: Settings) -> IngestPool | None:
    """The pool ``settings`` ask for, its workers started; None: ingest in this process."""
    count = settings.ingest_process_count
    if not count:
        return None
    try:
        pool = IngestPool(count, settings.database, settings.data, settings.duplicate_policy)
        pool.start()
    except OSError as exc:  # e.g. no /dev/shm for the pool's semaphores in a tight container
        log.warning("ingest worker processes unavailable (%s): storing in the server's process", exc)
        return None
    return pool


def _init_worker(server_pid: int, database: str, data: str, duplicate_policy: DuplicatePolicy) -> None:
    global _WORKER
    _die_with_parent(server_pid)
    # A terminal's Ctrl-C reaches the whole process group: the server shuts the pool down
    # after in-flight requests, so a worker must not stop in the middle. SIGTERM still ends
    # it: the pool terminates the other workers that way when one dies.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from server.dicom.reading import configure_pydicom
    from server.index.sql import SqlIndex
    from server.storage.filestore import FileStore

    configure_pydicom()
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    _WORKER = Ingestor(SqlIndex(database), FileStore(Path(data)), duplicate_policy)


def _die_with_parent(server_pid: int) -> None:
    """Ask the kernel to kill this worker when the thread that spawned it ends (Linux)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # The server died before the request took effect (not ``== 1``: in a container the server
    # itself may be process 1).
    if os.getppid() != server_pid:
        os._exit(1)


def _ready() -> int:
    return os.getpid()


def _ingest_in_worker(path: str, expected_study: str | None, sha256: str | None) -> IngestResult:
    if _WORKER is None:
        raise RuntimeError("not an ingest worker process")
    return _WORKER.ingest_sync(Path(path), expected_study=expected_study, sha256=sha256)
