"""multipart/related in both directions (RFC 2387, PS3.18 §8.6).

Reading: a sans-IO parser (python-multipart) fed from the request stream; each part is
spooled to a temp file with its SHA-256 computed on the way, so memory stays flat
whatever the body size. Writing: part headers and the closing delimiter, with the
``Content-Type:`` spelling cornerstone expects (checklist WADO-11).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import MultipartParser


@dataclass
class SpooledPart:
    path: Path
    headers: dict[str, str]
    size: int = 0
    complete: bool = False
    error: str | None = None  # why the part is unusable (e.g. too large)
    sha256: str = ""
    _digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    _file: BinaryIO | None = None


class PartLimitExceeded(Exception):
    pass


class MultipartSpooler:
    """Feed body chunks; collect finished parts with ``take_finished()``."""

    def __init__(self, boundary: str, spool_dir: Path, max_part_bytes: int, max_parts: int) -> None:
        self.spool_dir = spool_dir
        self.max_part_bytes = max_part_bytes
        self.max_parts = max_parts
        self.count = 0
        self.ended = False
        self._current: SpooledPart | None = None
        self._finished: list[SpooledPart] = []
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[str, str] = {}
        self._parser = MultipartParser(
            boundary.encode("latin-1"),
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    # parser callbacks -----------------------------------------------------------
    def _on_part_begin(self) -> None:
        self.count += 1
        if self.count > self.max_parts:
            raise PartLimitExceeded(f"more than {self.max_parts} parts in one request")
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self._headers[name] = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def _on_headers_finished(self) -> None:
        fd, name = tempfile.mkstemp(prefix="stow-", suffix=".part", dir=self.spool_dir)
        self._current = SpooledPart(Path(name), dict(self._headers))
        self._current._file = os.fdopen(fd, "wb", buffering=1 << 20)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current
        if part is None or part.error:
            return
        size = end - start
        if part.size + size > self.max_part_bytes:
            part.error = f"part larger than the limit of {self.max_part_bytes} bytes"
            self._close_file(part)
            part.path.unlink(missing_ok=True)
            return
        chunk = memoryview(data)[start:end]  # no copy: the parser's buffer outlives this call
        assert part._file is not None
        part._file.write(chunk)
        part._digest.update(chunk)
        part.size += size

    def _on_part_end(self) -> None:
        part = self._current
        if part is None:
            return
        self._close_file(part)
        part.complete = True
        part.sha256 = part._digest.hexdigest()
        self._finished.append(part)
        self._current = None

    def _on_end(self) -> None:
        self.ended = True

    @staticmethod
    def _close_file(part: SpooledPart) -> None:
        if part._file is not None:
            part._file.close()
            part._file = None

    # driving -------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        self._parser.write(chunk)

    def take_finished(self) -> list[SpooledPart]:
        done, self._finished = self._finished, []
        return done

    def abandon(self) -> SpooledPart | None:
        """End of input: the part still open (if any) is truncated; returned for reporting."""
        part = self._current
        self._current = None
        if part is not None:
            self._close_file(part)
            part.path.unlink(missing_ok=True)
            part.error = part.error or "truncated part: the body ended inside it"
        return part


def new_boundary() -> str:
    return "lightbox-" + secrets.token_hex(16)


def part_head(boundary: str, content_type: str, location: str | None = None,
              extra: dict[str, str] | None = None) -> bytes:
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    if location:
        lines.append(f"Content-Location: {location}")
    for name, value in (extra or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("latin-1")


def multipart_content_type(inner: str, boundary: str) -> str:
    return f'multipart/related; type="{inner}"; boundary={boundary}'
