"""WADO-RS: retrieve instances, metadata, bulk data and frames; DELETE (PS3.18 §10.4).

Thin: validate the path, read Accept (the ``accept`` query parameter wins, PS3.18
§8.3.3.1), call ``services.retrieve`` and write its payload — multipart framing included,
with the exact ``Content-Type:`` part header spelling cornerstone needs (checklist WADO-11).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.api.http import settings_of
from server.api.payload import accept_of, base_of, require_uids, respond
from server.config import Settings
from server.services.retrieve import Retriever, parse_frame_list, parse_range

log = logging.getLogger(__name__)
router = APIRouter()


def _retriever(request: Request) -> Retriever:
    """The app's one Retriever (create_app makes it: the fast path shares its row cache)."""
    retriever: Retriever = request.app.state.retriever
    return retriever


def _base(request: Request) -> str:
    return base_of(request, settings_of(request))


def _gzip_ok(request: Request) -> bool:
    for item in request.headers.get("accept-encoding", "").split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "*") and params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00"):
            return True
    return False


# ---------------------------------------------------------------- retrieve instances


@router.get("/studies/{study}")
async def retrieve_study(request: Request, study: str) -> Response:
    require_uids(study)
    return respond(await _retriever(request).retrieve_instances(study, None, None, accept_of(request),
                                                                  _base(request)))


@router.get("/studies/{study}/series/{series}")
async def retrieve_series(request: Request, study: str, series: str) -> Response:
    require_uids(study, series)
    return respond(await _retriever(request).retrieve_instances(study, series, None, accept_of(request),
                                                                  _base(request)))


@router.get("/studies/{study}/series/{series}/instances/{sop}")
async def retrieve_instance(request: Request, study: str, series: str, sop: str) -> Response:
    require_uids(study, series, sop)
    return respond(await _retriever(request).retrieve_instances(study, series, sop, accept_of(request),
                                                                  _base(request)))


# ---------------------------------------------------------------- metadata


async def _metadata(request: Request, study: str, series: str | None, sop: str | None) -> Response:
    require_uids(study, series, sop)
    payload = await _retriever(request).retrieve_metadata(
        study, series, sop, accept_of(request), _base(request),
        gzip_ok=_gzip_ok(request), if_none_match=request.headers.get("if-none-match"),
    )
    return respond(payload)


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


async def frames_response(request: Request, retriever: Retriever, settings: Settings,
                          study: str, series: str, sop: str, frames: str) -> Response:
    """GET …/frames/{frames}: the route below and the fast path (server.api.fastpath) both answer with it."""
    require_uids(study, series, sop)
    numbers = parse_frame_list(frames)
    headers = request.headers
    payload = await retriever.retrieve_frames(
        study, series, sop, numbers, accept_of(request), base_of(request, settings),
        byte_range=parse_range(headers.get("range")),
        if_none_match=headers.get("if-none-match"),
    )
    return respond(payload)


async def retrieve_frames(request: Request) -> Response:
    """Frames (PS3.18 §10.4.1.1.4). A plain Starlette route: OHIF asks once per frame, and
    FastAPI's parameter machinery would cost more than reading the frame."""
    p = request.path_params
    return await frames_response(request, _retriever(request), settings_of(request),
                                 p["study"], p["series"], p["sop"], p["frames"])


router.add_route("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}", retrieve_frames, ["GET"])


@router.get("/studies/{study}/series/{series}/instances/{sop}/bulk/{tag_path:path}")
async def retrieve_bulk(request: Request, study: str, series: str, sop: str, tag_path: str) -> Response:
    require_uids(study, series, sop)
    payload = await _retriever(request).retrieve_bulk(
        study, series, sop, tag_path, accept_of(request), _base(request),
        byte_range=parse_range(request.headers.get("range")),
        if_none_match=request.headers.get("if-none-match"),
    )
    return respond(payload)


# ---------------------------------------------------------------- delete (not in PS3.18)


async def _delete(request: Request, study: str, series: str | None, sop: str | None) -> Response:
    require_uids(study, series, sop)
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
