"""WADO-RS rendered and thumbnail resources (PS3.18 §10.4.1.1.3, §10.4.3.3.4; checklist REND).

Thin: check the UIDs, parse the rendering parameters (a 400 names the parameter), read the
Accept list (the ``accept`` query parameter wins, PS3.18 §8.3.3.1 — OHIF relies on it) and
write what ``services.render`` answers. Unknown parameters (``iccprofile``…) are ignored
(checklist REND-10); ``charset`` is accepted: burned-in text comes from UTF-8 metadata.

Default window (PS3.18 §8.3.5.1.2, checklist REND-04): the ``window`` parameter, else the
file's first Window Center/Width with its VOI LUT Function, else its first VOI LUT Sequence
item, else the frame's own min..max after the Modality LUT.

Extension (documented in the README): ``preset=lung|mediastinum|bone|brain|…`` picks a window.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from server.api.http import public_base
from server.api.multipart import closing, multipart_content_type, new_boundary, part_head
from server.dicom.media import MediaRange, accept_from_query, parse_accept
from server.dicom.uids import require_uid
from server.errors import LightboxError
from server.render.params import RenderParams, parse_render_params
from server.services.render import Renderer
from server.services.retrieve import Part, Payload, parse_frame_list

log = logging.getLogger(__name__)
router = APIRouter()


def renderer_of(request: Request) -> Renderer:
    renderer: Renderer = request.app.state.renderer
    return renderer


def _accept(request: Request) -> list[MediaRange]:
    query = accept_from_query(request.query_params.getlist("accept"))
    return parse_accept(query if query is not None else request.headers.get("accept"))


def _params(request: Request, thumbnail: bool) -> RenderParams:
    q = request.query_params
    return parse_render_params(
        window=q.get("window"),
        viewport=q.get("viewport"),
        quality=q.get("quality"),
        annotation=q.get("annotation"),
        preset="thumbnail" if thumbnail else q.get("preset"),
    )


def _uids(study: str, series: str | None = None, sop: str | None = None) -> None:
    require_uid(study, "StudyInstanceUID")
    if series is not None:
        require_uid(series, "SeriesInstanceUID")
    if sop is not None:
        require_uid(sop, "SOPInstanceUID")


async def _stream_parts(parts: list[Part], boundary: str) -> AsyncIterator[bytes]:
    """Parts as they render; one that fails once the answer has started is left out."""
    emitted = 0
    for part in parts:
        body = part.body
        if body is None and part.stream is not None:
            try:
                body = b"".join([chunk async for chunk in part.stream])
            except LightboxError as exc:
                log.warning("rendered part %s left out: %s", part.location, exc.message)
                continue
        head = part_head(boundary, part.content_type, part.location, part.headers or None)
        yield head if emitted == 0 else b"\r\n" + head
        emitted += 1
        yield body or b""
    yield closing(boundary)


def respond(payload: Payload) -> Response:
    """A service Payload as an HTTP response (single part, multipart/related or stream)."""
    headers = dict(payload.headers)
    if payload.status == 304:
        return Response(status_code=304, headers=headers)
    if payload.parts is not None:
        boundary = new_boundary()
        content_type = multipart_content_type(payload.part_type or "image/jpeg", boundary)
        return StreamingResponse(_stream_parts(payload.parts, boundary), payload.status, headers, content_type)
    if payload.stream is not None:
        return StreamingResponse(payload.stream, payload.status, headers, payload.content_type)
    return Response(payload.body or b"", payload.status, headers, payload.content_type)


async def _render(request: Request, study: str, series: str | None = None, sop: str | None = None,
                  frames: str | None = None, *, thumbnail: bool = False) -> Response:
    _uids(study, series, sop)
    numbers = parse_frame_list(frames) if frames is not None else None
    params = _params(request, thumbnail)
    payload = await renderer_of(request).render(
        study, series, sop, numbers, params, _accept(request),
        public_base(request, request.app.state.settings),
        thumbnail=thumbnail, if_none_match=request.headers.get("if-none-match"),
    )
    return respond(payload)


# ---------------------------------------------------------------- rendered (REND-01)


@router.get("/studies/{study}/rendered")
async def retrieve_rendered_study(request: Request, study: str) -> Response:
    return await _render(request, study)


@router.get("/studies/{study}/series/{series}/rendered")
async def retrieve_rendered_series(request: Request, study: str, series: str) -> Response:
    return await _render(request, study, series)


@router.get("/studies/{study}/series/{series}/instances/{sop}/rendered")
async def retrieve_rendered_instance(request: Request, study: str, series: str, sop: str) -> Response:
    return await _render(request, study, series, sop)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered")
async def retrieve_rendered_frames(request: Request, study: str, series: str, sop: str, frames: str) -> Response:
    return await _render(request, study, series, sop, frames)


# ---------------------------------------------------------------- thumbnails (REND-07)


@router.get("/studies/{study}/thumbnail")
async def retrieve_study_thumbnail(request: Request, study: str) -> Response:
    return await _render(request, study, thumbnail=True)


@router.get("/studies/{study}/series/{series}/thumbnail")
async def retrieve_series_thumbnail(request: Request, study: str, series: str) -> Response:
    return await _render(request, study, series, thumbnail=True)


@router.get("/studies/{study}/series/{series}/instances/{sop}/thumbnail")
async def retrieve_instance_thumbnail(request: Request, study: str, series: str, sop: str) -> Response:
    return await _render(request, study, series, sop, thumbnail=True)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/thumbnail")
async def retrieve_frame_thumbnail(request: Request, study: str, series: str, sop: str, frames: str) -> Response:
    return await _render(request, study, series, sop, frames, thumbnail=True)
