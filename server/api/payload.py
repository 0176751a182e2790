"""Writing a service ``Payload`` as an HTTP response, shared by the WADO-RS routes: one body,
a stream, or multipart/related with the exact ``Content-Type:`` part header spelling
cornerstone needs (checklist WADO-11); plus the path and Accept checks every route makes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from functools import lru_cache

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from server.api.multipart import closing, multipart_content_type, new_boundary, part_head
from server.dicom.media import MediaRange, accept_from_query, parse_accept
from server.dicom.uids import require_uid
from server.services.retrieve import Part, Payload

log = logging.getLogger(__name__)


@lru_cache(maxsize=256)
def _parsed(header: str | None) -> tuple[MediaRange, ...]:
    return tuple(parse_accept(header))  # viewers repeat one Accept thousands of times


def accept_of(request: Request) -> tuple[MediaRange, ...]:
    query = accept_from_query(request.query_params.getlist("accept")) if request.url.query else None
    return _parsed(query if query is not None else request.headers.get("accept"))


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


def respond(payload: Payload, part_type: str = "application/octet-stream") -> Response:
    headers = dict(payload.headers)
    if payload.status == 304:
        return Response(status_code=304, headers=headers)
    if payload.parts is not None:
        boundary = new_boundary()
        content_type = multipart_content_type(payload.part_type or part_type, boundary)
        # In memory: one body with an exact length. (Sent as separate ASGI messages the small
        # part head and the frame met Nagle + delayed ACK: 4 ms per frame on one connection.)
        if all(p.body is not None for p in payload.parts):
            chunks: list[bytes] = []
            for n, part in enumerate(payload.parts):
                head = part_head(boundary, part.content_type, part.location, part.headers or None)
                chunks.append(head if n == 0 else b"\r\n" + head)
                chunks.append(part.body or b"")
            chunks.append(closing(boundary))
            return Response(b"".join(chunks), payload.status, headers, content_type)
        return StreamingResponse(stream_parts(payload.parts, boundary), payload.status, headers, content_type)
    if payload.stream is not None:
        return StreamingResponse(payload.stream, payload.status, headers, payload.content_type)
    return Response(payload.body or b"", payload.status, headers, payload.content_type)
