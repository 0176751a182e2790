"""Writing a service ``Payload`` as an HTTP response, shared by the WADO-RS routes: one body,
a stream, or multipart/related with the exact ``Content-Type:`` part header spelling
cornerstone needs (checklist WADO-11); plus the path and Accept checks every route makes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from functools import lru_cache

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from server.api.http import public_base
from server.api.multipart import closing, multipart_content_type, new_boundary, part_head
from server.config import Settings
from server.dicom.media import MediaRange, accept_from_query, parse_accept
from server.dicom.uids import require_uid
from server.services.retrieve import Part, Payload

log = logging.getLogger(__name__)


@lru_cache(maxsize=256)
def _parsed(header: str | None) -> tuple[MediaRange, ...]:
    return tuple(parse_accept(header))  # viewers repeat one Accept thousands of times


def accept_of(request: Request) -> tuple[MediaRange, ...]:
    # scope, not request.url: building the URL costs more than the rest of this
    query = accept_from_query(request.query_params.getlist("accept")) if request.scope.get("query_string") else None
    return _parsed(query if query is not None else request.headers.get("accept"))


_BASES: dict[tuple[object, ...], str] = {}
_BASE_HEADERS = (b"host", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-prefix")


def base_of(request: Request, settings: Settings) -> str:
    """public_base() memoised on what it reads: building request.url costs more than a frame read."""
    scope = request.scope
    seen: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:  # one pass; the first of repeated headers, as Headers.get
        if name in _BASE_HEADERS:
            seen.setdefault(name, value)
    key = (*(seen.get(n) for n in _BASE_HEADERS), scope.get("scheme"), scope.get("root_path"), scope.get("server"),
           id(settings))
    base = _BASES.get(key)
    if base is None:
        if len(_BASES) > 1024:
            _BASES.clear()
        base = _BASES[key] = public_base(request, settings)
    return base


def require_uids(study: str, series: str | None = None, sop: str | None = None) -> None:
    require_uid(study, "StudyInstanceUID")
    if series is not None:
        require_uid(series, "SeriesInstanceUID")
    if sop is not None:
        require_uid(sop, "SOPInstanceUID")


async def stream_parts(parts: list[Part], boundary: str) -> AsyncIterator[bytes]:
    """Write parts as they come; a part that fails before its first byte is left out."""
    emitted = 0
    for part in parts:
        first = part.body or b""
        rest: AsyncIterator[bytes] | None = None
        if part.stream is not None:
            rest = aiter(part.stream)
            try:
                first = await anext(rest)
            except StopAsyncIteration:
                rest = None
            except Exception as exc:  # the response has started: skip the part, keep the rest
                log.warning("part %s left out: %s", part.location, exc)
                continue
        head = part_head(boundary, part.content_type, part.location, part.headers or None)
        yield head if emitted == 0 else b"\r\n" + head
        emitted += 1
        yield first
        if rest is not None:
            async for chunk in rest:
                yield chunk
    yield closing(boundary)


_JOIN_LIMIT = 64 * 1024


class PiecesResponse(Response):
    """A body sent as the pieces it is made of (part head, frame, closing) under one exact
    Content-Length: joining them would copy a 512 KiB frame once more into a fresh buffer,
    which costs about as much as reading it (bench_wado). uvicorn's event loops set
    TCP_NODELAY, so the small pieces wait for no ACK."""

    def __init__(self, pieces: list[bytes], status: int, headers: dict[str, str], media_type: str) -> None:
        self.pieces = pieces
        # Content-Length where Response puts it for a body: after the payload's own headers.
        super().__init__(None, status, {**headers, "content-length": str(sum(len(p) for p in pieces))}, media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        for n, piece in enumerate(self.pieces, 1):
            await send({"type": "http.response.body", "body": piece, "more_body": n < len(self.pieces)})


def respond(payload: Payload, part_type: str = "application/octet-stream") -> Response:
    headers = dict(payload.headers)
    if payload.status == 304:
        return Response(status_code=304, headers=headers)
    if payload.parts is not None:
        boundary = new_boundary()
        content_type = multipart_content_type(payload.part_type or part_type, boundary)
        if all(p.body is not None for p in payload.parts):  # in memory: one body with an exact length
            chunks: list[bytes] = []
            for n, part in enumerate(payload.parts):
                head = part_head(boundary, part.content_type, part.location, part.headers or None)
                chunks.append(head if n == 0 else b"\r\n" + head)
                chunks.append(part.body or b"")
            chunks.append(closing(boundary))
            if len(chunks) == 3 and len(chunks[1]) > _JOIN_LIMIT:  # one large part (a viewer's frame)
                return PiecesResponse(chunks, payload.status, headers, content_type)
            # Several parts or small ones: one write. (Many small ASGI messages cost more than a copy.)
            return Response(b"".join(chunks), payload.status, headers, content_type)
        return StreamingResponse(stream_parts(payload.parts, boundary), payload.status, headers, content_type)
    if payload.stream is not None:
        return StreamingResponse(payload.stream, payload.status, headers, payload.content_type)
    return Response(payload.body or b"", payload.status, headers, payload.content_type)
