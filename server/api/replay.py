"""Replayed frame answers: the fast path's second and later answers to the same frame request.

A rendered frame is replayed likewise, but drawn again each time (``Renderer.image``, with
its caches): what is kept is the start message and the row and parameters it was drawn with.

A viewer asks for each frame of a series with the same Accept and the same headers, and a
frame stored as one span of its file gives the same answer every time. So once the fast path
has answered such a request the usual way, it keeps that answer — the start message as the
client got it, the multipart head and closing around the frame, and where the frame lies in
its file — and the next time sends the frame straight from a memory map of the file: the
kernel copies it once, from the page cache into the socket (a read into a buffer first cost
a fifth of the server's CPU per frame). A blob is named by its SHA-256 and never rewritten,
so a mapped file's bytes stay what they were; whether the blob is still there is checked on
every replay.

Authentication, authorization, the audit trail and the access log run for every request as
before (server.api.fastpath). A replay is keyed on everything its answer depends on (the
path, Accept, Origin and what the public base URL is built from); a request with Range or
If-None-Match is never replayed. A replaced or deleted instance's blob is gone from the store,
so its replay fails to read and is dropped: the request then goes the usual way, which finds
the new row (as the row cache does, server.services.retrieve).
"""

from __future__ import annotations

import mmap
import os
from collections import OrderedDict
from dataclasses import dataclass

from starlette.types import Message, Scope

from server.index.base import StoredInstance
from server.render.params import RenderParams

# Request headers the answer depends on (the Accept, CORS, the public base URL).
KEY_HEADERS = (b"accept", b"origin", b"host", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-prefix")
# Request headers that make the answer depend on more than the frame.
CONDITIONAL = (b"range", b"if-none-match", b"if-range", b"if-match")
MAX_REPLAYS = 20_000  # ~2 KiB each (headers, part head, key)
MAX_MAPS = 1024  # mapped blob files (one memory area each; the kernel allows ~65,000)
MAX_MAPPED_BYTES = 1 << 30  # what deleted but still mapped blobs can hold on disk, at most


@dataclass(frozen=True)
class Replay:
    headers: list[tuple[bytes, bytes]]  # the 200's start message's, after every middleware's additions
    head: bytes  # before the frame: the multipart part head, or nothing
    tail: bytes  # after it: the closing boundary, or nothing
    path: str  # the blob's file
    offset: int
    length: int

    def start(self) -> Message:
        return {"type": "http.response.start", "status": 200, "headers": self.headers}

    def frame(self, maps: FileMaps) -> memoryview:
        """The frame's bytes in the mapped file; OSError when the blob is gone (replaced or
        deleted), so that the request goes the usual way."""
        view = maps.view(self.path)
        if self.offset + self.length > len(view):
            raise OSError(f"{self.path}: shorter than the frame")
        return view[self.offset : self.offset + self.length]


class FileMaps:
    """Read-only maps of recently replayed blob files, least recently used dropped first.

    A mapped file keeps its disk space after it is deleted, until it is unmapped: so the maps
    are bounded in bytes as well as in number, and a map whose blob is found gone is dropped at
    once. A dropped map is unmapped once no answer still being written holds a view of it."""

    def __init__(self, limit: int = MAX_MAPS, max_bytes: int = MAX_MAPPED_BYTES) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.mapped_bytes = 0
        self._maps: OrderedDict[str, mmap.mmap] = OrderedDict()

    def view(self, path: str) -> memoryview:
        try:
            os.stat(path)  # FileNotFoundError once the blob is gone, even while it is still mapped
        except OSError:
            self._drop(path)
            raise
        mapped = self._maps.get(path)
        if mapped is None:
            fd = os.open(path, os.O_RDONLY)
            try:
                mapped = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
            except ValueError as exc:  # an empty file
                raise OSError(f"{path}: {exc}") from exc
            finally:
                os.close(fd)
            self._maps[path] = mapped
            self.mapped_bytes += len(mapped)
            while len(self._maps) > 1 and (len(self._maps) > self.limit or self.mapped_bytes > self.max_bytes):
                self._drop(next(iter(self._maps)))
        else:
            self._maps.move_to_end(path)
        return memoryview(mapped)

    def _drop(self, path: str) -> None:
        mapped = self._maps.pop(path, None)
        if mapped is not None:
            self.mapped_bytes -= len(mapped)


@dataclass(frozen=True)
class RenderReplay:
    headers: list[tuple[bytes, bytes]]  # the start message's, Content-Length set per answer
    row: StoredInstance
    frame: int  # 1-based
    params: RenderParams
    path: str  # the blob's file: gone once the instance is replaced or deleted

    def check(self) -> None:
        """OSError when the blob is gone, so that the request goes the usual way."""
        os.stat(self.path)

    def start(self, length: int) -> Message:
        headers = [(k, str(length).encode() if k == b"content-length" else v) for k, v in self.headers]
        return {"type": "http.response.start", "status": 200, "headers": headers}


def replay_key(scope: Scope) -> tuple[object, ...] | None:
    """The key of this request's answer, or None when it must not be replayed."""
    if scope.get("query_string"):
        return None
    seen: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in CONDITIONAL:
            return None
        if name in KEY_HEADERS:
            seen.setdefault(name, value)
    return (scope["path"], *(seen.get(n) for n in KEY_HEADERS), scope.get("scheme"), scope.get("server"))


class Replays:
    """The kept answers, by ``replay_key``."""

    def __init__(self) -> None:
        self._kept: dict[tuple[object, ...], Replay | RenderReplay] = {}

    def get(self, key: tuple[object, ...]) -> Replay | RenderReplay | None:
        return self._kept.get(key)

    def keep(self, key: tuple[object, ...], replay: Replay | RenderReplay) -> None:
        if len(self._kept) >= MAX_REPLAYS:
            self._kept.clear()
        self._kept[key] = replay

    def drop(self, key: tuple[object, ...]) -> None:
        self._kept.pop(key, None)

    def __len__(self) -> int:
        return len(self._kept)
