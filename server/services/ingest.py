"""Ingest: the one way an instance gets in — shared by STOW-RS, ``lightbox import`` and C-STORE.

Order (after microsoft/dicom-server): read the header → mark the blob *pending* in the index →
move it into the store (flushed, renamed, the folder flushed) → commit the index rows (with the
DICOM JSON) in one transaction, which forgets the pending mark. A failure at any step removes
what was written; a crash leaves at most a pending blob, which ``recover()`` removes at the next
start. The duplicate policy is applied inside the commit, against the row it would replace.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import mmap
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar, cast

import pydicom
from pydicom.errors import InvalidDicomError

from server.config import DuplicatePolicy
from server.dicom.attributes import keyword_of
from server.dicom.fast_reader import read_header
from server.dicom.frames import FrameLayoutError, locate_frames
from server.dicom.header import PIXEL_TAGS, InstanceRecord, record_from_header
from server.dicom.pixels import PixelDescriptor, describable_from_doc, descriptor_from_dataset, descriptor_from_doc
from server.dicom.uids import DEFLATED_LE, NATIVE_SYNTAXES
from server.errors import BadRequest, Conflict, LightboxError
from server.index.base import BlobFacts, IndexStore
from server.storage.base import BlobStore

log = logging.getLogger(__name__)
T = TypeVar("T")

# The flush of a spooled file to disk and its hash run beside the header parse.
_WORKERS = ThreadPoolExecutor(8, thread_name_prefix="ingest")

Outcome = Literal["stored", "replaced", "already-present"]
# Runs ``ingest_sync(path, expected_study=, sha256=)`` elsewhere (server.services.ingest_pool).
Offload = Callable[[Path, "str | None", "str | None"], Awaitable["IngestResult"]]


@dataclass(frozen=True)
class IngestResult:
    outcome: Outcome
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str


def sha256_fd(fd: int) -> str:
    """SHA-256 of an open file, through a map: one call that releases the GIL throughout."""
    if os.fstat(fd).st_size == 0:
        return hashlib.sha256().hexdigest()  # an empty file cannot be mapped
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as view:
        return hashlib.sha256(view).hexdigest()


def is_part10(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def inspect_file(path: Path) -> tuple[InstanceRecord, BlobFacts]:
    """Read the header only and compute everything the index keeps (the blob key and SHA-256
    are left empty for the caller). Runs in a worker thread."""
    with open(os.open(path, os.O_RDONLY), "rb") as f:
        return inspect_open(f)


def inspect_open(f: BinaryIO) -> tuple[InstanceRecord, BlobFacts]:
    """``inspect_file`` of a file opened by descriptor (``open(fd, "rb")``): it may be renamed
    meanwhile, as ingest moves it into the store while reading it."""
    head = f.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        raise BadRequest("not a DICOM Part 10 file (no 'DICM' after the 128-byte preamble)")
    fd = f.fileno()
    size = os.fstat(fd).st_size
    try:
        # Through a read-only map: pydicom's many small reads cost a third less than through
        # the file object (spooled files are ours: nobody truncates them under the map).
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as view:
            fast = read_header(view)  # explicit VR little endian: 3x pydicom's speed
            if fast is not None:
                ds, position = fast
            else:
                ds = pydicom.dcmread(cast(BinaryIO, view), stop_before_pixels=True)  # read, seek, tell
                position = view.tell()
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError, NotImplementedError) as exc:
        raise BadRequest(f"unreadable DICOM header: {exc}") from exc

    def read_at(offset: int, length: int) -> bytes:
        return os.pread(fd, length, offset)

    ts = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
    pixel_tag = None
    if ts == DEFLATED_LE:
        # The body is one deflate stream: no byte offsets; retrieval falls back to pydicom.
        f.seek(0)
        full = pydicom.dcmread(f)
        pixel_tag = next((t for t in PIXEL_TAGS if t in full), None)
    elif position + 8 <= size:
        group, elem = read_at(position, 4)[:2], read_at(position + 2, 2)
        big = ts == "1.2.840.10008.1.2.2"
        order: Literal["big", "little"] = "big" if big else "little"
        tag = (int.from_bytes(group, order) << 16) | int.from_bytes(elem, order)
        pixel_tag = tag if tag in PIXEL_TAGS else None
    record = record_from_header(ds, pixel_tag)
    frames = None
    pixel_offset = pixel_length = None
    descriptor = None
    if pixel_tag is not None:
        try:
            # The header was read without pixels; an empty stand-in lets the descriptor
            # see which pixel element (and VR) the file has.
            stand_in = "OB" if ts not in NATIVE_SYNTAXES or (record.bits_allocated or 16) <= 8 else "OW"
            if ts in NATIVE_SYNTAXES and ts not in (DEFLATED_LE, "1.2.840.10008.1.2"):
                stand_in = {b"OB": "OB", b"OW": "OW"}.get(read_at(position + 4, 2), stand_in)
            vr = {0x7FE00008: "OF", 0x7FE00009: "OD"}.get(pixel_tag, stand_in)
            desc: PixelDescriptor | None
            if describable_from_doc(record.doc):
                desc = descriptor_from_doc(record.doc, keyword_of(pixel_tag), vr, ts)
            else:
                ds.add_new(pixel_tag, vr, b"")
                desc = descriptor_from_dataset(ds)
            descriptor = desc.to_dict() if desc is not None else None
        except Exception as exc:  # a bad pixel description does not block storing
            log.warning("no pixel descriptor for %s: %s", record.sop_uid, exc)
        if ts != DEFLATED_LE and record.rows and record.columns:
            try:
                element, frames = locate_frames(
                    read_at, position, size, ts, record.rows, record.columns,
                    int(ds.get("SamplesPerPixel", 1) or 1), record.bits_allocated or 16,
                    record.number_of_frames, record.extended_offsets,
                    str(ds.get("PhotometricInterpretation", "") or ""),
                )
                pixel_offset, pixel_length = element.value_offset, (
                    element.length if element.length != 0xFFFFFFFF else size - element.value_offset
                )
            except FrameLayoutError as exc:
                log.warning("frames of %s not located: %s", record.sop_uid, exc)
    facts = BlobFacts(
        blob_key="", sha256="", file_size=size, pixel_offset=pixel_offset,
        pixel_length=pixel_length, frames=frames, descriptor=descriptor,
    )
    return record, facts


class Ingestor:
    def __init__(self, index: IndexStore, blobs: BlobStore, duplicate_policy: DuplicatePolicy,
                 offload: Offload | None = None) -> None:
        self.index = index
        self.blobs = blobs
        self.duplicate_policy = duplicate_policy
        self.offload = offload  # where ``ingest`` runs; None: a thread of this process

    async def recover(self) -> int:
        """Remove blobs a crash left pending (written but never committed, or replaced)."""
        removed = 0
        for key in await self.index.pending_blobs():
            if not await self.index.blob_in_use(key):
                await self.blobs.delete(key)
                removed += 1
            await self.index.drop_pending(key)
        return removed

    async def ingest(self, path: Path, *, expected_study: str | None = None,
                     sha256: str | None = None) -> IngestResult:
        """Store the Part-10 file at ``path`` (a spooled copy: it is consumed)."""
        if self.offload is not None:
            return await self.offload(path, expected_study, sha256)
        return await asyncio.to_thread(self.ingest_sync, path, expected_study=expected_study, sha256=sha256)

    def ingest_sync(self, path: Path, *, expected_study: str | None = None, sha256: str | None = None,
                    expected_sop: tuple[str, str] | None = None) -> IngestResult:
        """``ingest`` for a caller already in a worker thread (C-STORE): the whole ingest of one
        instance is one thread hop — hashing, fsync and SQLite release the GIL, so concurrent
        ingests overlap on the cores. ``expected_sop``: the (SOP Class, SOP Instance) UIDs a
        C-STORE request announced; the dataset must be that instance (PS3.4 B.2.3)."""
        try:
            return self._ingest(path, expected_study, sha256, expected_sop)
        finally:
            path.unlink(missing_ok=True)

    def _ingest(self, path: Path, expected_study: str | None, sha256: str | None,
                expected_sop: tuple[str, str] | None) -> IngestResult:
        with open(os.open(path, os.O_RDONLY), "rb") as f:  # by descriptor: the file moves away
            # The flush (fdatasync: the disk's longest wait) and the hash run in a worker beside
            # the parse. It is started before the parse takes the GIL for milliseconds: a thread
            # waiting to start would wait for it up to the 5 ms switch interval.
            preparing = _start(_flush_and_hash, f.fileno(), sha256 is None)
            try:
                record, facts = _inspect(f)
                _check_identity(record, expected_study, expected_sop)
            finally:  # always: the descriptor stays open until the worker is done with it
                failed = _outcome(preparing)
            if failed is not None:
                raise failed
            digest = sha256 or cast(str, preparing.result())
        self.index.mark_pending_sync(digest)  # before the blob is in the store, never after
        try:
            make_durable = self.blobs.place_file_sync(digest, path)  # its flush finds nothing left
        except BaseException:
            self._discard(digest)
            raise
        # The store's folder flush (a disk wait) runs while the commit is prepared; the
        # transaction commits only once it has ended.
        flushing = _start(make_durable)
        facts = dataclasses.replace(facts, blob_key=digest, sha256=digest)
        try:
            commit = self.index.commit_instance_sync(record, facts, replace=self.duplicate_policy != "reject",
                                                     before_commit=flushing.result)
        except BaseException:
            _outcome(flushing)  # ended before the blob is taken out again
            self._discard(digest)
            raise
        if commit.unchanged:
            return IngestResult("already-present", *_ids(record))
        if commit.replaced_blob:
            self._discard(commit.replaced_blob)
        return IngestResult("stored" if commit.created else "replaced", *_ids(record))

    def _discard(self, key: str) -> None:
        try:
            if not self.index.blob_in_use_sync(key):
                self.blobs.delete_sync(key)
            self.index.drop_pending_sync(key)
        except LightboxError:
            raise
        except Exception as exc:  # recover() retries at the next start
            log.warning("could not discard blob %s: %s", key, exc)


def _flush_and_hash(fd: int, hash_it: bool) -> str | None:
    """Two system calls that release the GIL, in one worker: each hand-off to a thread costs
    ~0.15 ms here, and together they still end before the parse does."""
    os.fdatasync(fd)  # the data (and its size), not the timestamps
    return sha256_fd(fd) if hash_it else None


def _start(work: Callable[..., T], *args: Any) -> Future[T]:
    """Run ``work(*args)`` in a worker; return once the worker is running it."""
    started = threading.Event()

    def run() -> T:
        started.set()
        return work(*args)

    future = _WORKERS.submit(run)
    started.wait()
    return future


def _outcome(future: Future[Any]) -> BaseException | None:
    try:
        future.result()
    except BaseException as exc:
        return exc
    return None


def _inspect(f: BinaryIO) -> tuple[InstanceRecord, BlobFacts]:
    try:
        return inspect_open(f)
    except LightboxError:
        raise
    except Exception as exc:  # whatever a malformed file trips over: its fault, not ours
        raise BadRequest(f"cannot read the DICOM header: {exc}") from exc


def _check_identity(record: InstanceRecord, expected_study: str | None,
                    expected_sop: tuple[str, str] | None) -> None:
    if expected_study is not None and record.study_uid != expected_study:
        raise Conflict(
            f"StudyInstanceUID {record.study_uid} does not match the target study {expected_study}",
            dicom_status=0xA900,
        )
    if expected_sop is not None and expected_sop != (record.sop_class_uid, record.sop_uid):
        raise Conflict(
            f"the dataset is {record.sop_class_uid}/{record.sop_uid}, "
            f"the request announced {expected_sop[0]}/{expected_sop[1]}",
            dicom_status=0xA900,
        )


def _ids(record: InstanceRecord) -> tuple[str, str, str, str]:
    return record.study_uid, record.series_uid, record.sop_uid, record.sop_class_uid
