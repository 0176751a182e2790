"""WADO-RS: retrieve instances, metadata, bulk data and frames; DELETE (PS3.18 §10.4).

Thin: validate the path, read Accept (the ``accept`` query parameter wins, PS3.18
§8.3.3.1), call ``services.retrieve`` and write its payload — multipart framing included,
with the exact ``Content-Type:`` part header spelling cornerstone needs (checklist WADO-11).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from functools import lru_cache

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from server.api.http import public_base
from server.api.multipart import closing, multipart_content_type, new_boundary, part_head
from server.dicom.media import MediaRange, accept_from_query, parse_accept
from server.dicom.uids import require_uid
from server.services.retrieve import Part, Payload, Retriever, parse_frame_list, parse_range

log = logging.getLogger(__name__)
router = APIRouter()


def _retriever(request: Request) -> Retriever:
    """One Retriever per app, built on first use from the app's index and blob store."""
    state = request.app.state
    retriever: Retriever | None = getattr(state, "retriever", None)
    if retriever is None:
        retriever = state.retriever = Retriever(state.index, state.blobs)
    return retriever


@lru_cache(maxsize=256)
def _parsed(header: str | None) -> tuple[MediaRange, ...]:
    return tuple(parse_accept(header))  # viewers repeat one Accept thousands of times


def _accept(request: Request) -> tuple[MediaRange, ...]:
    query = accept_from_query(request.query_params.getlist("accept")) if request.url.query else None
    return _parsed(query if query is not None else request.headers.get("accept"))


_BASES: dict[tuple[object, ...], str] = {}


def _base(request: Request) -> str:
    """public_base() memoised on what it reads: building request.url costs more than a frame read."""
    h = request.headers
    scope = request.scope
    key = (h.get("host"), h.get("x-forwarded-proto"), h.get("x-forwarded-host"), h.get("x-forwarded-prefix"),
           scope.get("scheme"), scope.get("root_path"), scope.get("server"), id(request.app))
    base = _BASES.get(key)
    if base is None:
        if len(_BASES) > 1024:
            _BASES.clear()
        base = _BASES[key] = public_base(request, request.app.state.settings)
    return base


def _uids(study: str, series: str | None = None, sop: str | None = None) -> None:
    require_uid(study, "StudyInstanceUID")
    if series is not None:
        require_uid(series, "SeriesInstanceUID")
    if sop is not None:
        require_uid(sop, "SOPInstanceUID")


def _gzip_ok(request: Request) -> bool:
    for item in request.headers.get("accept-encoding", "").split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "*") and params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00"):
            return True
    return False


async def _stream_parts(parts: list[Part], boundary: str) -> AsyncIterator[bytes]:
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


def _respond(payload: Payload) -> Response:
    headers = dict(payload.headers)
    if payload.status == 304:
        return Response(status_code=304, headers=headers)
    if payload.parts is not None:
        boundary = new_boundary()
        content_type = multipart_content_type(payload.part_type or "application/octet-stream", boundary)
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
        return StreamingResponse(_stream_parts(payload.parts, boundary), payload.status, headers, content_type)
    if payload.stream is not None:
        return StreamingResponse(payload.stream, payload.status, headers, payload.content_type)
    return Response(payload.body or b"", payload.status, headers, payload.content_type)


# ---------------------------------------------------------------- retrieve instances


@router.get("/studies/{study}")
async def retrieve_study(request: Request, study: str) -> Response:
    _uids(study)
    return _respond(await _retriever(request).retrieve_instances(study, None, None, _accept(request),
                                                                  _base(request)))


@router.get("/studies/{study}/series/{series}")
async def retrieve_series(request: Request, study: str, series: str) -> Response:
    _uids(study, series)
    return _respond(await _retriever(request).retrieve_instances(study, series, None, _accept(request),
                                                                  _base(request)))


@router.get("/studies/{study}/series/{series}/instances/{sop}")
async def retrieve_instance(request: Request, study: str, series: str, sop: str) -> Response:
    _uids(study, series, sop)
    return _respond(await _retriever(request).retrieve_instances(study, series, sop, _accept(request),
                                                                  _base(request)))


# ---------------------------------------------------------------- metadata


async def _metadata(request: Request, study: str, series: str | None, sop: str | None) -> Response:
    _uids(study, series, sop)
    payload = await _retriever(request).retrieve_metadata(
        study, series, sop, _accept(request), _base(request),
        gzip_ok=_gzip_ok(request), if_none_match=request.headers.get("if-none-match"),
    )
    return _respond(payload)


@router.get("/studies/{study}/metadata")
async def retrieve_study_metadata(request: Request, study: str) -> Response:
    return await _metadata(request, study, None, None)


@router.get("/studies/{study}/series/{series}/metadata")
async def retrieve_series_metadata(request: Request, study: str, series: str) -> Response:
    return await _metadata(request, study, series, None)


@router.get("/studies/{study}/series/{series}/instances/{sop}/metadata")
async def retrieve_instance_metadata(request: Request, study: str, series: str, sop: str) -> Response:
    return await _metadata(request, study, series, sop)


# ---------------------------------------------------------------- frames and bulk data


async def retrieve_frames(request: Request) -> Response:
    """Frames (PS3.18 §10.4.1.1.4). A plain Starlette route: OHIF asks once per frame, and
    FastAPI's parameter machinery would cost more than reading the frame."""
    p = request.path_params
    study, series, sop = p["study"], p["series"], p["sop"]
    _uids(study, series, sop)
    numbers = parse_frame_list(p["frames"])
    payload = await _retriever(request).retrieve_frames(
        study, series, sop, numbers, _accept(request), _base(request),
        byte_range=parse_range(request.headers.get("range")),
        if_none_match=request.headers.get("if-none-match"),
    )
    return _respond(payload)


router.add_route("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}", retrieve_frames, ["GET"])


@router.get("/studies/{study}/series/{series}/instances/{sop}/bulk/{tag_path:path}")
async def retrieve_bulk(request: Request, study: str, series: str, sop: str, tag_path: str) -> Response:
    _uids(study, series, sop)
    payload = await _retriever(request).retrieve_bulk(
        study, series, sop, tag_path, _accept(request), _base(request),
        byte_range=parse_range(request.headers.get("range")),
        if_none_match=request.headers.get("if-none-match"),
    )
    return _respond(payload)


# ---------------------------------------------------------------- delete (not in PS3.18)


async def _delete(request: Request, study: str, series: str | None, sop: str | None) -> Response:
    _uids(study, series, sop)
    await _retriever(request).delete(study, series, sop)
    return Response(status_code=204)


@router.delete("/studies/{study}")
async def delete_study(request: Request, study: str) -> Response:
    return await _delete(request, study, None, None)


@router.delete("/studies/{study}/series/{series}")
async def delete_series(request: Request, study: str, series: str) -> Response:
    return await _delete(request, study, series, None)


@router.delete("/studies/{study}/series/{series}/instances/{sop}")
async def delete_instance(request: Request, study: str, series: str, sop: str) -> Response:
    return await _delete(request, study, series, sop)
