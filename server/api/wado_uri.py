"""WADO-URI: ``GET /wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…`` (PS3.18 §9.4).

The Accept header is ignored (checklist URI-06: OHIF sends a multipart one); ``contentType``
decides. Without it: a single-frame image renders as image/jpeg, anything else is the
Part-10 file (URI-02). ``transferSyntax`` absent or ``*`` means "as stored" (URI-03: OHIF
always sends ``*``); another UID is transcoded when we can, else 406. ``anonymize=yes``
answers a PS3.15 Basic Profile copy (Part-10) or a render without patient annotation, and
refuses (403) pixel data with burned-in annotation, which cannot be cleaned here.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.api.payload import respond
from server.api.rendered import renderer_of
from server.dicom.uids import require_uid
from server.errors import BadRequest, NotAcceptable
from server.render.params import MEDIA_TYPES, parse_wado_uri_params
from server.services.deid import load_secret
from server.services.render import has_image

router = APIRouter()

DICOM = "application/dicom"
_REQUIRED = (("studyUID", "StudyInstanceUID"), ("seriesUID", "SeriesInstanceUID"), ("objectUID", "SOPInstanceUID"))


def _content_type(value: str | None) -> str | None:
    """First supported type of a ``contentType`` list (PS3.18 §9.4.1.1.1 allows several)."""
    if value is None or not value.strip():
        return None
    for item in value.split(","):
        media = item.split(";")[0].strip().lower()
        if media == DICOM or media in MEDIA_TYPES:
            return media
        if media in ("image/*", "*/*"):
            return "image/jpeg"
    raise NotAcceptable(f"contentType: {value!r}; supported: {DICOM}, {', '.join(MEDIA_TYPES)}")


def _frame_number(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise BadRequest(f"frameNumber: {value!r} is not a frame number (1-based)")
    return int(value)


@router.get("/wado")
async def wado_uri(request: Request) -> Response:
    q = request.query_params
    request_type = q.get("requestType")
    if request_type != "WADO":
        raise BadRequest(f"requestType: must be WADO, got {request_type!r}" if request_type else
                         "requestType: required (WADO)")
    uids = []
    for name, what in _REQUIRED:
        value = q.get(name)
        if not value:
            raise BadRequest(f"{name}: required")
        require_uid(value, f"{name} ({what})")
        uids.append(value)
    anonymize = (q.get("anonymize") or "").strip().lower()
    if anonymize not in ("", "yes", "no"):
        raise BadRequest(f"anonymize: {anonymize!r} is not yes")
    content_type = _content_type(q.get("contentType"))
    frame = _frame_number(q.get("frameNumber"))
    renderer = renderer_of(request)
    row = await renderer.instance(*uids)
    if content_type is None:
        single_image = has_image(row) and max(row.number_of_frames, 1) == 1
        content_type = "image/jpeg" if single_image or (frame is not None and has_image(row)) else DICOM
    if content_type == DICOM:
        secret = None
        if anonymize == "yes":
            settings = request.app.state.settings
            secret = await asyncio.to_thread(load_secret, settings.data / "deid.key")
        return respond(await renderer.part10(row, q.get("transferSyntax"), secret))
    params = parse_wado_uri_params(
        window_center=q.get("windowCenter"),
        window_width=q.get("windowWidth"),
        rows=q.get("rows"),
        columns=q.get("columns"),
        region=q.get("region"),
        image_quality=q.get("imageQuality"),
        annotation=q.get("annotation"),
        media_type=content_type,
    )
    if anonymize == "yes":
        await renderer.refuse_burned_in(row)
        params = replace(params, annotation=params.annotation - {"patient"})
    payload = await renderer.uri_image(row, frame, params, request.headers.get("if-none-match"))
    return respond(payload)
