"""Administrative extensions (admin role; see server/api/auth.py): de-identification and tokens.

``POST /dicomweb/studies/{study}/deidentify`` — a Lightbox extension, not part of PS3.18:
stores a de-identified copy of the study (PS3.15 Annex E Basic Profile + Retain Longitudinal
Temporal Information with Modified Dates + Clean Descriptors) as a new study and answers
``{"StudyInstanceUID", "SourceStudyInstanceUID", "instances", "burnedInAnnotation",
"RetrieveURL"}``. The original is kept. The same study de-identifies to the same UIDs.

``GET /dicomweb/studies/{study}/deidentify`` — the same de-identified study as a ZIP
(``<study>/<series>/<sop>.dcm``, new UIDs), stored nowhere.

``GET|POST /admin/tokens``, ``DELETE /admin/tokens/{id}`` — the ``lightbox token`` commands
over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.background import BackgroundTask

from server.api.http import public_base, settings_of
from server.dicom.uids import require_uid
from server.errors import BadRequest, NotFound
from server.index.tokens import TokenRow, TokenStore
from server.services.deid import deidentified_zip, deidentify_study, load_secret
from server.services.tokens import create_token, parse_duration

router = APIRouter()
admin_router = APIRouter()


async def _deid_secret(request: Request, study: str) -> bytes:
    """Check the study UID, then load (or create) the site's de-identification key."""
    require_uid(study, "study")
    return await asyncio.to_thread(load_secret, settings_of(request).data / "deid.key")


@router.post("/studies/{study}/deidentify")
async def deidentify(request: Request, study: str) -> Response:
    secret = await _deid_secret(request, study)
    settings = settings_of(request)
    state = request.app.state
    result = await deidentify_study(state.index, state.blobs, state.ingestor, secret, study)
    return JSONResponse({
        "StudyInstanceUID": result.study_uid,
        "SourceStudyInstanceUID": result.source_study_uid,
        "instances": result.instances,
        "burnedInAnnotation": result.burned_in,
        "RetrieveURL": f"{public_base(request, settings)}/studies/{result.study_uid}",
    })


@router.get("/studies/{study}/deidentify")
async def deidentified_download(request: Request, study: str) -> Response:
    secret = await _deid_secret(request, study)
    state = request.app.state
    fd, name = tempfile.mkstemp(prefix="deid-", suffix=".zip", dir=state.blobs.spool_dir())
    os.close(fd)
    target = Path(name)
    try:
        new_study = await deidentified_zip(state.index, state.blobs, secret, study, target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return FileResponse(target, media_type="application/zip", filename=f"{new_study}.zip",
                        background=BackgroundTask(target.unlink, missing_ok=True))


def _public(row: TokenRow) -> dict[str, Any]:
    return {
        "id": row.token_id, "role": row.role, "study": row.study_uid, "patient": row.patient_id,
        "label": row.label, "created": row.created_at, "expires": row.expires_at, "revoked": row.revoked_at,
    }


def _store(request: Request) -> TokenStore:
    store: TokenStore = request.app.state.tokens
    return store


@admin_router.get("/admin/tokens")
async def list_tokens(request: Request) -> JSONResponse:
    return JSONResponse([_public(r) for r in await _store(request).all()])


@admin_router.post("/admin/tokens")
async def new_token(request: Request) -> JSONResponse:
    try:
        body = await request.json()
    except ValueError as exc:
        raise BadRequest("expected a JSON object") from exc
    if not isinstance(body, dict) or not isinstance(body.get("role"), str):
        raise BadRequest('expected {"role": "reader|uploader|admin", "study"?, "patient"?, "expires"?, "label"?}')
    expires = body.get("expires")
    study = body.get("study")
    new = await create_token(
        _store(request), body["role"], study_uid=require_uid(str(study), "study") if study else None,
        patient_id=body.get("patient") or None, label=str(body.get("label") or ""),
        expires_in=parse_duration(str(expires)) if expires else None,
    )
    return JSONResponse({"token": new.token, **_public(new.row)}, status_code=201)


@admin_router.delete("/admin/tokens/{token_id}")
async def revoke_token(request: Request, token_id: str) -> Response:
    if not await _store(request).revoke(token_id):
        raise NotFound(f"no active token {token_id}")
    return Response(status_code=204)
