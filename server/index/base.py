"""The IndexStore protocol and the rows it hands to services."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from server.dicom.frames import FrameSpans
from server.dicom.header import InstanceRecord


@dataclass(frozen=True)
class StoredInstance:
    """What services need to retrieve or render an instance without opening it first."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    blob_key: str
    file_size: int
    sha256: str
    number_of_frames: int
    instance_number: int | None
    pixel_tag: int | None
    pixel_offset: int | None
    pixel_length: int | None
    frames: FrameSpans | None
    descriptor: dict[str, Any] | None


@dataclass(frozen=True)
class BlobFacts:
    """Where an instance's bytes are and what was computed from them at ingest."""

    blob_key: str
    sha256: str
    file_size: int
    pixel_offset: int | None
    pixel_length: int | None
    frames: FrameSpans | None
    descriptor: dict[str, Any] | None


@dataclass(frozen=True)
class CommitResult:
    created: bool  # a new instance (False: replaced an existing one, or ``unchanged``)
    replaced_blob: str | None  # the old blob key, now due for deletion
    unchanged: bool = False  # the instance was already stored with these very bytes


class IndexStore(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def healthy(self) -> bool: ...

    # ingest: the *_sync methods run in the caller's worker thread (ingest is one thread hop)
    def mark_pending_sync(self, blob_key: str) -> None: ...
    def commit_instance_sync(self, record: InstanceRecord, facts: BlobFacts, replace: bool = True,
                             before_commit: Callable[[], None] | None = None) -> CommitResult:
        """Raises Conflict (0x0111) for other bytes under a known SOP Instance UID unless
        ``replace``. ``before_commit`` runs inside the transaction, last: if it raises, nothing
        is committed."""
    def blob_in_use_sync(self, blob_key: str) -> bool: ...
    def drop_pending_sync(self, blob_key: str) -> None: ...
    async def drop_pending(self, blob_key: str) -> None: ...
    async def pending_blobs(self) -> list[str]: ...
    async def blob_in_use(self, blob_key: str) -> bool: ...
    async def commit_instance(self, record: InstanceRecord, facts: BlobFacts, replace: bool = True) -> CommitResult: ...

    # retrieve
    async def get_instance(self, study: str, series: str | None, sop: str) -> StoredInstance: ...
    async def list_instances(self, study: str, series: str | None = None) -> list[StoredInstance]: ...
    async def metadata_docs(self, study: str, series: str | None, sop: str | None) -> list[bytes]: ...
    async def level_version(self, study: str, series: str | None, sop: str | None) -> str: ...

    # delete: returns the blob keys that are no longer referenced
    async def delete(self, study: str, series: str | None, sop: str | None) -> list[str]: ...
