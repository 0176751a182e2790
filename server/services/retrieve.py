"""WADO-RS use cases: retrieve instances, metadata, bulk data and frames; delete (PS3.18 §10.4).

The rules that keep it fast (issue 8):
* instances stream from the store in 1 MiB chunks, never a whole study in memory;
* metadata is the JSON written at ingest, concatenated — never re-parsed from files —
  cached per (level, version, public base, encoding) with its gzip form;
* frames are ``pread``s of the byte spans the index keeps; pixel data is never gzipped;
* anything CPU-bound (transcoding, decoding) runs in a worker thread.

Returns ``Payload``s; the HTTP edge only copies them into responses.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import logging
import zipfile
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pydicom

from server.dicom.json_model import absolutize
from server.dicom.media import DICOM_JSON, DICOM_XML, OCTET, MediaRange
from server.dicom.negotiation import (
    ZIP,
    Choice,
    Offer,
    offers,
    resolve_bulk,
    resolve_frame,
    resolve_instance,
)
from server.dicom.uids import DEFLATED_LE, EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE, is_encapsulated
from server.dicom.xml_model import to_native_xml
from server.errors import BadRequest, NotFound, NotSupported
from server.index.base import IndexStore, StoredInstance
from server.services import transcode as T
from server.storage.base import BlobStore

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
# Frames and bulk data of a stored instance change only if the instance is replaced (new sha256).
FRAME_CACHE_CONTROL = "private, max-age=86400"
METADATA_CACHE_CONTROL = "private, no-cache"  # revalidate: new instances change it


@dataclass
class Part:
    """One part of a multipart/related answer; the HTTP edge writes the framing."""

    content_type: str
    location: str | None = None
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Payload:
    """A response, framework-free: a body, a stream, or parts to frame as multipart/related."""

    content_type: str | None = None
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    parts: list[Part] | None = None
    part_type: str | None = None  # the multipart ``type`` parameter
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int | None  # inclusive; None: to the end
    suffix: int | None = None  # bytes=-N

    def clamp(self, size: int) -> tuple[int, int] | None:
        """(start, end exclusive) within ``size`` bytes; None when unsatisfiable."""
        if self.suffix is not None:
            return (max(0, size - self.suffix), size) if self.suffix > 0 and size else None
        if self.start >= size:
            return None
        end = size if self.end is None else min(self.end + 1, size)
        return self.start, end


def parse_range(header: str | None) -> ByteRange | None:
    """One ``bytes=a-b`` range (RFC 9110 §14.1.2); several ranges or other units: ignored."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first:
            return ByteRange(0, None, int(last))
        start = int(first)
        end = int(last) if last else None
    except ValueError:
        return None
    if start < 0 or (end is not None and end < start):
        return None
    return ByteRange(start, end)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def parse_frame_list(text: str) -> list[int]:
    """``1,3,2`` → [1, 3, 2]; 1-based, no duplicates (PS3.18 §10.4.1.1.4)."""
    numbers: list[int] = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece.isdigit() or int(piece) < 1:
            raise BadRequest(f"frame list {text!r}: {piece!r} is not a frame number (1-based)")
        if int(piece) in numbers:
            raise BadRequest(f"frame list {text!r}: frame {int(piece)} appears twice")
        numbers.append(int(piece))
    if not numbers or len(numbers) > 10_000:
        raise BadRequest(f"frame list {text!r} is empty or too long")
    return numbers


def parse_tag_path(segments: str) -> list[int]:
    """``00540016/0/00181074`` → [tag, item, tag]: tags at even positions, item numbers between."""
    out: list[int] = []
    for n, piece in enumerate(p for p in segments.strip("/").split("/")):
        if n % 2 == 0:
            if len(piece) != 8:
                raise BadRequest(f"bulk data path {segments!r}: {piece!r} is not an 8-digit hex tag")
            try:
                out.append(int(piece, 16))
            except ValueError as exc:
                raise BadRequest(f"bulk data path {segments!r}: {piece!r} is not a hex tag") from exc
        else:
            if not piece.isdigit():
                raise BadRequest(f"bulk data path {segments!r}: {piece!r} is not an item number")
            out.append(int(piece))
    if not out or len(out) % 2 == 0:
        raise BadRequest(f"bulk data path {segments!r} must end with a tag")
    return out


def instance_url(base: str, r: StoredInstance) -> str:
    return f"{base}/studies/{r.study_uid}/series/{r.series_uid}/instances/{r.sop_uid}"


class _ByteCache:
    """A small LRU of response bodies bounded by total bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._items: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: tuple[Any, ...], value: bytes) -> None:
        if len(value) > self.limit // 4:
            return
        old = self._items.pop(key, None)
        self.size -= len(old) if old else 0
        self._items[key] = value
        self.size += len(value)
        while self.size > self.limit and self._items:
            _, dropped = self._items.popitem(last=False)
            self.size -= len(dropped)


class _ZipSink(io.RawIOBase):
    """A write-only, unseekable file that hands out what zipfile wrote so far."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buf += data
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


class Retriever:
    def __init__(self, index: IndexStore, blobs: BlobStore, metadata_cache_bytes: int = 128 * 1024**2) -> None:
        self.index = index
        self.blobs = blobs
        self._metadata = _ByteCache(metadata_cache_bytes)
        # (study, series, sop) → row: frame requests skip the index (rows change only by
        # replace, whose old blob then vanishes → re-read, or by delete → cleared).
        self._rows: OrderedDict[tuple[str, str, str], StoredInstance] = OrderedDict()

    # ------------------------------------------------------------ rows

    async def _instance(self, study: str, series: str, sop: str, fresh: bool = False) -> StoredInstance:
        key = (study, series, sop)
        row = None if fresh else self._rows.get(key)
        if row is None:
            row = await self.index.get_instance(study, series, sop)
            self._rows[key] = row
            if len(self._rows) > 20_000:
                self._rows.popitem(last=False)
        return row

    def _can(self, row: StoredInstance) -> Any:
        return lambda stored, target: T.can_transcode(stored, target, row.descriptor, row.pixel_tag is not None)

    def _path(self, row: StoredInstance) -> Path:
        path = self.blobs.local_path(row.blob_key)
        if path is None:
            raise NotSupported("this blob store has no local files to transcode from")
        return path

    # ------------------------------------------------------------ instances

    async def retrieve_instances(
        self, study: str, series: str | None, sop: str | None, ranges: Sequence[MediaRange], base: str
    ) -> Payload:
        """Study, series or instance as multipart/related application/dicom (or zip)."""
        if sop is not None and series is not None:
            rows = [await self.index.get_instance(study, series, sop)]
        else:
            rows = await self.index.list_instances(study, series)
        options = offers(ranges, "instances", single_part=sop is not None)
        first = resolve_instance(options, rows[0].transfer_syntax, self._can(rows[0]))
        same = [o for o in options if o.media_type == first.media_type and o.multipart == first.multipart]
        choices = [first] + [resolve_instance(same, r.transfer_syntax, self._can(r)) for r in rows[1:]]
        if first.media_type == ZIP:
            name = f"{study}.zip" if series is None else f"{series}.zip"
            return Payload(ZIP, stream=self._zip(rows, choices),
                           headers={"Content-Disposition": f'attachment; filename="{name}"'})
        if len(rows) == 1 and first.transfer_syntax != rows[0].transfer_syntax:
            # one instance to transcode: do it before answering, so a failure gets a status
            data = b"".join([c async for c in self._instance_bytes(rows[0], first.transfer_syntax)])
            if not first.multipart:
                return Payload(first.content_type, body=data)
            return Payload(parts=[Part(first.content_type, instance_url(base, rows[0]), body=data)],
                           part_type=first.media_type)
        if not first.multipart:
            return Payload(first.content_type, stream=self._instance_bytes(rows[0], first.transfer_syntax))
        parts = [
            Part(c.content_type, instance_url(base, r), stream=self._instance_bytes(r, c.transfer_syntax))
            for r, c in zip(rows, choices, strict=True)
        ]
        return Payload(parts=parts, part_type=first.media_type)

    async def _instance_bytes(self, row: StoredInstance, target: str) -> AsyncIterator[bytes]:
        """The instance as a Part-10 file in ``target``: streamed as stored, or transcoded."""
        if target == row.transfer_syntax:
            if row.file_size <= CHUNK:  # one page-cache read beats a thread hop
                yield await self.blobs.read_range(row.blob_key, 0, row.file_size)
                return
            async for chunk in self.blobs.iter_range(row.blob_key, 0, None, CHUNK):
                yield chunk
            return
        data = await asyncio.to_thread(T.instance_as, self._path(row), row.transfer_syntax, target)
        for start in range(0, len(data), CHUNK):
            yield data[start : start + CHUNK]

    async def _zip(self, rows: Sequence[StoredInstance], choices: Sequence[Choice]) -> AsyncIterator[bytes]:
        sink = _ZipSink()
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for row, choice in zip(rows, choices, strict=True):
                name = f"{row.study_uid}/{row.series_uid}/{row.sop_uid}.dcm"
                try:
                    with archive.open(name, "w", force_zip64=True) as entry:
                        async for chunk in self._instance_bytes(row, choice.transfer_syntax):
                            entry.write(chunk)
                            if out := sink.take():
                                yield out
                except (FileNotFoundError, NotSupported) as exc:
                    log.warning("zip: %s skipped: %s", row.sop_uid, exc)
                yield sink.take()
        yield sink.take()

    # ------------------------------------------------------------ metadata

    async def retrieve_metadata(
        self, study: str, series: str | None, sop: str | None, ranges: Sequence[MediaRange], base: str,
        *, gzip_ok: bool = False, if_none_match: str | None = None,
    ) -> Payload:
        """The stored JSON of every instance below the level, as one array (PS3.18 §10.4.1.2)."""
        fmt = offers(ranges, "metadata", single_part=True)[0].media_type
        version = await self.index.level_version(study, series, sop)
        encoding = "gzip" if gzip_ok and fmt == DICOM_JSON else None
        tag = hashlib.sha256(f"{study}|{series}|{sop}|{version}|{base}|{fmt}".encode()).hexdigest()[:32]
        etag = f'"{tag}{"-gz" if encoding else ""}"'
        headers = {"ETag": etag, "Cache-Control": METADATA_CACHE_CONTROL, "Vary": "Accept, Accept-Encoding"}
        if etag_matches(if_none_match, etag):
            return Payload(status=304, headers=headers)
        if encoding:
            headers["Content-Encoding"] = encoding
        key = (study, series, sop, version, base, fmt, encoding)
        body = self._metadata.get(key)
        if fmt == DICOM_XML:
            docs = await self.index.metadata_docs(study, series, sop)
            parts = [Part(DICOM_XML, body=_xml(absolutize(d, base))) for d in docs]
            return Payload(parts=parts, part_type=DICOM_XML, headers=headers)
        if body is None:
            docs = await self.index.metadata_docs(study, series, sop)
            body = absolutize(b"[" + b",".join(docs) + b"]", base)
            if encoding:
                body = await asyncio.to_thread(gzip.compress, body, 1, mtime=0)  # cached: speed over ratio
            self._metadata.put(key, body)
        return Payload(DICOM_JSON, body=body, headers=headers)

    # ------------------------------------------------------------ frames

    async def _stored_frame(self, row: StoredInstance, number: int) -> tuple[bytes, str]:
        """(bytes, their syntax) of frame ``number`` (1-based): spans by pread, else pydicom."""
        if row.frames is not None and number <= len(row.frames):
            spans = row.frames[number - 1]
            if len(spans) == 1:
                data = await self.blobs.read_range(row.blob_key, spans[0][0], spans[0][1])
            else:
                data = b"".join([await self.blobs.read_range(row.blob_key, o, n) for o, n in spans])
            return data, row.transfer_syntax
        return await asyncio.to_thread(T.frame_from_file, self._path(row), number - 1, row.descriptor)

    async def frame_file_span(self, study: str, series: str, sop: str, number: int) -> tuple[str, int, int] | None:
        """Where frame ``number`` (1-based) lies as one span of a local file: (path, offset,
        length); None when it is fragmented, not located or not in a local file."""
        row = await self._instance(study, series, sop)
        if row.frames is None or not 1 <= number <= len(row.frames) or len(row.frames[number - 1]) != 1:
            return None
        path = self.blobs.local_path(row.blob_key)
        if path is None:
            return None
        offset, length = row.frames[number - 1][0]
        return str(path), offset, length

    async def _frame_out(self, row: StoredInstance, number: int, choice: Choice) -> bytes:
        data, ts = await self._stored_frame(row, number)
        target = choice.transfer_syntax
        if target == ts or (target == EXPLICIT_VR_LE and ts in (IMPLICIT_VR_LE, DEFLATED_LE)):
            return data
        if row.descriptor is None:  # nothing to decode a lone frame with: let pydicom read the file
            data, _ = await asyncio.to_thread(T.frame_from_file, self._path(row), number - 1, None, decode=True)
            return data
        if target == EXPLICIT_VR_LE and ts == EXPLICIT_VR_BE:
            if len(data) % 2 and row.frames:  # OW swaps in words: the pad byte holds the last sample
                (offset, length), *_ = row.frames[number - 1]
                data = await self.blobs.read_range(row.blob_key, offset, length + 1)
                return T.frame_to_native(data, ts, row.descriptor)[:length]
            return T.frame_to_native(data, ts, row.descriptor)
        return await asyncio.to_thread(_convert_frame, data, ts, target, row.descriptor)

    async def retrieve_frames(
        self, study: str, series: str, sop: str, numbers: list[int], ranges: Sequence[MediaRange],
        base: str, *, byte_range: ByteRange | None = None, if_none_match: str | None = None,
    ) -> Payload:
        """Frames by number (PS3.18 §10.4.1.1.4): one part each, in the order asked."""
        return await self._from_row(study, series, sop,
                                    lambda row: self._frames(row, numbers, ranges, base, byte_range, if_none_match))

    async def _frames(self, row: StoredInstance, numbers: list[int], ranges: Sequence[MediaRange], base: str,
                      byte_range: ByteRange | None, if_none_match: str | None) -> Payload:
        if row.pixel_tag is None:
            raise NotFound(f"instance {row.sop_uid} has no pixel data, so no frames")
        for n in numbers:
            if n > row.number_of_frames:
                raise NotFound(f"frame {n} is outside 1..{row.number_of_frames} of instance {row.sop_uid}")
        options = offers(ranges, "frames", single_part=len(numbers) == 1)
        choice = resolve_frame(options, row.transfer_syntax, self._can(row))  # one syntax fits all frames
        return await self._frames_payload(row, numbers, choice, base, byte_range, if_none_match)

    async def _frames_payload(self, row: StoredInstance, numbers: list[int], choice: Choice, base: str,
                              byte_range: ByteRange | None, if_none_match: str | None,
                              *, serve_range: bool = True) -> Payload:
        """The frames in ``choice``'s syntax with their ETag, or a 304 when that still matches."""
        etag = _frame_etag(row, numbers, choice, byte_range)
        headers = {"ETag": etag, "Cache-Control": FRAME_CACHE_CONTROL, "Vary": "Accept"}
        if etag_matches(if_none_match, etag):
            return await self._not_modified(row, headers)
        bodies = [await self._frame_out(row, n, choice) for n in numbers]
        return _framed(bodies, choice, f"{instance_url(base, row)}/frames", numbers,
                       byte_range if serve_range else None, headers)

    async def _from_row(self, study: str, series: str, sop: str,
                        answer: Callable[[StoredInstance], Awaitable[Payload]]) -> Payload:
        """``answer`` from the cached row, and once more from the index if that row's blob is
        gone: the instance was replaced or deleted since (the next row read says which)."""
        try:
            return await answer(await self._instance(study, series, sop))
        except FileNotFoundError:
            return await answer(await self._instance(study, series, sop, fresh=True))

    async def _not_modified(self, row: StoredInstance, headers: dict[str, str]) -> Payload:
        if not await self.blobs.exists(row.blob_key):  # the cached row may be stale: never a stale 304
            raise FileNotFoundError(row.blob_key)
        return Payload(status=304, headers=headers)

    # ------------------------------------------------------------ bulk data

    async def retrieve_bulk(
        self, study: str, series: str, sop: str, tag_path: str, ranges: Sequence[MediaRange], base: str,
        *, byte_range: ByteRange | None = None, if_none_match: str | None = None,
    ) -> Payload:
        """The value a BulkDataURI points at (PS3.18 §10.4.1.1.5)."""
        path = parse_tag_path(tag_path)
        return await self._from_row(study, series, sop, lambda row: self._bulk(
            row, path, tag_path, ranges, base, byte_range, if_none_match))

    async def _bulk(self, row: StoredInstance, path: list[int], tag_path: str, ranges: Sequence[MediaRange],
                    base: str, byte_range: ByteRange | None, if_none_match: str | None) -> Payload:
        url = f"{instance_url(base, row)}/bulk/{tag_path.strip('/')}"
        if path == [row.pixel_tag] and is_encapsulated(row.transfer_syntax):  # every frame, one part each
            numbers = list(range(1, row.number_of_frames + 1))
            options = offers(ranges, "frames", single_part=False)
            choice = resolve_frame(options, row.transfer_syntax, self._can(row), multipart=True)
            return await self._frames_payload(row, numbers, choice, base, byte_range, if_none_match,
                                              serve_range=False)
        option = resolve_bulk(offers(ranges, "bulk", single_part=True))
        etag = f'"{row.sha256[:32]}-{hashlib.sha256(tag_path.encode()).hexdigest()[:8]}"'
        headers = {"ETag": etag, "Cache-Control": FRAME_CACHE_CONTROL, "Accept-Ranges": "bytes"}
        if etag_matches(if_none_match, etag):
            return await self._not_modified(row, headers)
        value = await self._bulk_value(row, path)
        return _framed_value(value, option, url, byte_range, headers)

    async def _bulk_value(self, row: StoredInstance, path: list[int]) -> bytes:
        if (len(path) == 1 and path[0] == row.pixel_tag and row.pixel_offset is not None
                and row.pixel_length is not None and row.transfer_syntax in (EXPLICIT_VR_LE, IMPLICIT_VR_LE)):
            return await self.blobs.read_range(row.blob_key, row.pixel_offset, row.pixel_length)
        return await asyncio.to_thread(_value_from_file, self._path(row), path, row.transfer_syntax)

    # ------------------------------------------------------------ delete

    async def delete(self, study: str, series: str | None, sop: str | None) -> int:
        """Remove instances (rows and blobs together); returns how many blobs went."""
        keys = await self.index.delete(study, series, sop)
        self._rows.clear()
        removed = 0
        for key in keys:
            if await self.index.blob_in_use(key):
                continue
            await self.blobs.delete(key)
            await self.index.drop_pending(key)
            removed += 1
        return removed


# ---------------------------------------------------------------- helpers


def _xml(doc: bytes) -> bytes:
    out = to_native_xml(orjson.loads(doc))
    return out.encode("utf-8") if isinstance(out, str) else bytes(out)


def _convert_frame(data: bytes, stored: str, target: str, desc: dict[str, Any]) -> bytes:
    """Any stored frame → ``target`` (ELE native or an encoded codestream). Worker thread."""
    photometric = None
    if is_encapsulated(stored):
        arr, photometric = T.decode_frame(data, stored, desc)
        native = T.le_bytes(arr)
    else:
        native = T.frame_to_native(data, stored, desc)
    if target == EXPLICIT_VR_LE:
        return native
    return T.encode_frame(native, desc, target, photometric)


def _frame_etag(row: StoredInstance, numbers: list[int], choice: Choice, byte_range: ByteRange | None) -> str:
    key = f"{numbers}|{choice.content_type}|{choice.multipart}|{byte_range}"
    return f'"{row.sha256[:32]}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"'


def _content_range(data: bytes, byte_range: ByteRange) -> tuple[bytes, str]:
    span = byte_range.clamp(len(data))
    if span is None:
        raise _Unsatisfiable(len(data))
    start, end = span
    return data[start:end], f"bytes {start}-{end - 1}/{len(data)}"


class _Unsatisfiable(BadRequest):
    http_status = 416

    def __init__(self, size: int) -> None:
        super().__init__(f"the range is outside the {size} bytes of the value")
        self.size = size


def _framed(bodies: list[bytes], choice: Choice, location: str, numbers: list[int],
            byte_range: ByteRange | None, headers: dict[str, str]) -> Payload:
    status = 200
    extra: dict[str, str] = {}
    if byte_range is not None and len(bodies) == 1:  # checklist FRM-08
        bodies[0], extra["Content-Range"] = _content_range(bodies[0], byte_range)
        status = 206
        headers = {**headers, "Accept-Ranges": "bytes"}
    if not choice.multipart:
        return Payload(choice.content_type, body=bodies[0], status=status, headers={**headers, **extra})
    parts = [Part(choice.content_type, f"{location}/{n}", body=b, headers=extra) for n, b in zip(numbers, bodies,
                                                                                               strict=True)]
    return Payload(parts=parts, part_type=choice.media_type, status=status, headers=headers)


def _framed_value(value: bytes, option: Offer, location: str, byte_range: ByteRange | None,
                  headers: dict[str, str]) -> Payload:
    status = 200
    extra: dict[str, str] = {}
    if byte_range is not None:  # checklist BULK-02
        value, extra["Content-Range"] = _content_range(value, byte_range)
        status = 206
    if not option.multipart:
        return Payload(OCTET, body=value, status=status, headers={**headers, **extra})
    return Payload(parts=[Part(OCTET, location, body=value, headers=extra)], part_type=OCTET,
                   status=status, headers=headers)


def _value_from_file(path: Path, tag_path: list[int], transfer_syntax: str) -> bytes:
    """A (possibly nested) binary value read with pydicom, little endian."""
    ds: Any = pydicom.dcmread(path)
    elem = None
    for n, step in enumerate(tag_path):
        if n % 2 == 0:
            if step not in ds:
                raise NotFound(f"no element {step:08X} in this instance")
            elem = ds[step]
        else:
            assert elem is not None
            if elem.VR != "SQ" or step >= len(elem.value):
                raise NotFound(f"no item {step} in {int(elem.tag):08X}")
            ds = elem.value[step]
    assert elem is not None
    value = elem.value
    if int(elem.tag) in _PIXEL_TAGS and is_encapsulated(transfer_syntax):
        raise NotFound("encapsulated pixel data is served per frame")
    if not isinstance(value, bytes | bytearray):
        raise NotFound(f"element {int(elem.tag):08X} holds no binary value")
    width = _SWAP_WIDTH.get(str(elem.VR))
    if transfer_syntax == EXPLICIT_VR_BE and width and len(value) % width == 0:
        import numpy as np

        return np.frombuffer(value, f">u{width}").astype(f"<u{width}").tobytes()
    return bytes(value)
