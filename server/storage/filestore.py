"""Blobs as files under ``<data>/blobs/ab/cd/<sha256>``.

Two levels of 256 shards keep directories small up to hundreds of millions of files.
Writes are atomic: the spooled temp file is fsynced, then renamed into place, then the
folder (and the folder holding a shard folder just made) is fsynced, so a crash leaves either
the whole blob or none.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from server.storage.base import check_key


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.blobs = self.root / "blobs"
        # One spool folder per process: a server starting beside a running import must not
        # sweep that import's uploads away.
        self.spool_root = self.root / "tmp"
        self.tmp = self.spool_root / str(os.getpid())
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        # Shard folders known to exist (never removed): saves a mkdir, its exception and a
        # stat per blob.
        self._shards: set[str] = set()
        self._blobs = str(self.blobs)

    def _file(self, key: str) -> str:
        """The blob's file as a string: pathlib costs more than a frame read from the page cache."""
        check_key(key)
        return f"{self._blobs}/{key[:2]}/{key[2:4]}/{key}"

    def _path(self, key: str) -> Path:
        return Path(self._file(key))

    def spool_dir(self) -> Path:
        return self.tmp

    def clear_spool(self) -> int:
        """Remove uploads that dead processes left behind (called at start, before serving)."""
        removed = 0
        for folder in self.spool_root.iterdir():
            if folder.is_file():
                folder.unlink(missing_ok=True)
                removed += 1
            elif folder != self.tmp and not _alive(folder.name):
                removed += sum(1 for _ in folder.iterdir())
                shutil.rmtree(folder, ignore_errors=True)
        return removed

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def put_file_sync(self, key: str, source: Path) -> None:
        self.place_file_sync(key, source)()

    def place_file_sync(self, key: str, source: Path) -> Callable[[], None]:
        target = self._path(key)
        new_entries = self._make_shard(key)
        fd = os.open(source, os.O_RDONLY)
        try:
            os.fdatasync(fd)  # the data (and its size), not the timestamps; ~25 µs if flushed
        finally:
            os.close(fd)
        try:
            os.replace(source, target)
        except OSError:  # another filesystem (or a shard folder removed behind our back): copy
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            shutil.copyfile(source, tmp)
            with open(tmp, "rb") as copied:  # the copy is what must be durable now
                os.fdatasync(copied.fileno())
            os.replace(tmp, target)
            source.unlink(missing_ok=True)
        return lambda: _flush_folders(target.parent, *new_entries)

    def _make_shard(self, key: str) -> list[str]:
        """Create the blob's shard folders where missing; the folders that gained an entry by
        it, whose flush makes the new folders durable too."""
        if key[:4] in self._shards:
            return []
        gained = []
        first = f"{self._blobs}/{key[:2]}"
        for folder, parent in ((first, self._blobs), (f"{first}/{key[2:4]}", first)):
            try:
                os.mkdir(folder)
                gained.append(parent)
            except FileExistsError:
                pass
        self._shards.add(key[:4])
        return gained

    async def put_file(self, key: str, source: Path) -> None:
        await asyncio.to_thread(self.put_file_sync, key, source)

    def read_range_sync(self, key: str, offset: int, length: int) -> bytes:
        fd = os.open(self._file(key), os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        # Small reads from the page cache are faster inline than through a thread hop.
        if length <= 1 << 20:
            return self.read_range_sync(key, offset, length)
        return await asyncio.to_thread(self.read_range_sync, key, offset, length)

    async def iter_range(
        self, key: str, offset: int = 0, length: int | None = None, chunk: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        path = self._path(key)
        fd = os.open(path, os.O_RDONLY)
        try:
            end = os.fstat(fd).st_size if length is None else offset + length
            pos = offset
            while pos < end:
                size = min(chunk, end - pos)
                data = await asyncio.to_thread(os.pread, fd, size, pos)
                if not data:
                    break
                pos += len(data)
                yield data
        finally:
            os.close(fd)

    async def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    async def exists(self, key: str) -> bool:
        return os.path.exists(self._file(key))

    def delete_sync(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    async def delete(self, key: str) -> None:
        self.delete_sync(key)


def _flush_folders(*folders: Path | str) -> None:
    """Make the entries added to ``folders`` (renamed blobs, new shard folders) durable."""
    for folder in folders:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
