"""The BlobStore protocol: where instance files live.

Keys are made by the server, never taken from a request: the hex SHA-256 of the content.
A store validates every key it is given, so no path can come from outside.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

KEY = re.compile(r"^[0-9a-f]{64}$")


class InvalidKey(ValueError):
    pass


def check_key(key: str) -> str:
    if not KEY.match(key):
        raise InvalidKey(f"invalid blob key {key!r}")
    return key


class BlobStore(Protocol):
    async def put_file(self, key: str, source: Path) -> None:
        """Atomically store the file at ``source`` under ``key`` (consumes ``source``)."""

    def put_file_sync(self, key: str, source: Path) -> None:
        """The same, for code already running in a worker thread."""

    def place_file_sync(self, key: str, source: Path) -> Callable[[], None]:
        """``put_file_sync`` in two steps: move the file in now, and return the step that makes
        the move durable (a folder flush: a disk wait) for the caller to run beside other work,
        and to finish before anything relies on the blob (ingest's commit)."""

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer at the end of the blob)."""

    def read_range_sync(self, key: str, offset: int, length: int) -> bytes:
        """The same, for code already running in a worker thread."""

    def iter_range(
        self, key: str, offset: int = 0, length: int | None = None, chunk: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """Stream a blob (or part of it) in chunks."""

    async def size(self, key: str) -> int:
        """Size in bytes; raises FileNotFoundError if absent."""

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove a blob; absent blobs are not an error."""

    def delete_sync(self, key: str) -> None:
        """The same, from a worker thread."""

    def local_path(self, key: str) -> Path | None:
        """A filesystem path to the blob when the backend has one (for pydicom fallbacks)."""

    def spool_dir(self) -> Path:
        """Where to spool uploads so ``put_file`` can rename rather than copy."""
