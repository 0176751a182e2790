"""An in-memory BlobStore for unit tests."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from server.storage.base import check_key


class MemoryStore:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self._spool = Path(tempfile.mkdtemp(prefix="lightbox-mem-"))

    def spool_dir(self) -> Path:
        return self._spool

    def clear_spool(self) -> int:
        removed = 0
        for entry in self._spool.iterdir():
            entry.unlink(missing_ok=True)
            removed += 1
        return removed

    def local_path(self, key: str) -> Path | None:
        return None

    def put_file_sync(self, key: str, source: Path) -> None:
        self.blobs[check_key(key)] = source.read_bytes()
        source.unlink(missing_ok=True)

    def place_file_sync(self, key: str, source: Path) -> Callable[[], None]:
        self.put_file_sync(key, source)
        return lambda: None

    async def put_file(self, key: str, source: Path) -> None:
        self.put_file_sync(key, source)

    def read_range_sync(self, key: str, offset: int, length: int) -> bytes:
        try:
            return self.blobs[check_key(key)][offset : offset + length]
        except KeyError:
            raise FileNotFoundError(key) from None

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        return self.read_range_sync(key, offset, length)

    async def iter_range(
        self, key: str, offset: int = 0, length: int | None = None, chunk: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        data = self.blobs.get(check_key(key))
        if data is None:
            raise FileNotFoundError(key)
        end = len(data) if length is None else offset + length
        for pos in range(offset, end, chunk):
            yield data[pos : min(pos + chunk, end)]

    async def size(self, key: str) -> int:
        try:
            return len(self.blobs[check_key(key)])
        except KeyError:
            raise FileNotFoundError(key) from None

    async def exists(self, key: str) -> bool:
        return check_key(key) in self.blobs

    def delete_sync(self, key: str) -> None:
        self.blobs.pop(check_key(key), None)

    async def delete(self, key: str) -> None:
        self.delete_sync(key)
