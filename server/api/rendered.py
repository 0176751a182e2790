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
from collections.abc import Mapping

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.api.http import settings_of
from server.api.payload import accept_of, base_of, require_uids, respond
from server.config import Settings
from server.render.params import RenderParams, parse_render_params
from server.services.render import Renderer
from server.services.retrieve import parse_frame_list

log = logging.getLogger(__name__)
router = APIRouter()


def renderer_of(request: Request) -> Renderer:
    renderer: Renderer = request.app.state.renderer
    return renderer


def render_params(request: Request, thumbnail: bool = False) -> RenderParams:
    q: Mapping[str, str] = request.query_params if request.scope.get("query_string") else {}
    return parse_render_params(
        window=q.get("window"),
        viewport=q.get("viewport"),
        quality=q.get("quality"),
        annotation=q.get("annotation"),
        preset="thumbnail" if thumbnail else q.get("preset"),
    )


async def render_response(request: Request, renderer: Renderer, settings: Settings, study: str,
                          series: str | None = None, sop: str | None = None, frames: str | None = None, *,
                          thumbnail: bool = False) -> Response:
    """Every route below answers with this; so does the fast path (server.api.fastpath)."""
    require_uids(study, series, sop)
    numbers = parse_frame_list(frames) if frames is not None else None
    params = render_params(request, thumbnail)
    payload = await renderer.render(
        study, series, sop, numbers, params, list(accept_of(request)), base_of(request, settings),
        thumbnail=thumbnail, if_none_match=request.headers.get("if-none-match"),
    )
    return respond(payload, "image/jpeg")


async def _render(request: Request, study: str, series: str | None = None, sop: str | None = None,
                  frames: str | None = None, *, thumbnail: bool = False) -> Response:
    return await render_response(request, renderer_of(request), settings_of(request), study, series, sop, frames,
                                 thumbnail=thumbnail)


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
