"""What every HTTP route shares: the public base URL, error bodies, DICOM JSON responses."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from server.config import Settings
from server.dicom.media import DICOM_JSON
from server.errors import LightboxError

log = logging.getLogger(__name__)

DICOMWEB_ROOT = "/dicomweb"


def public_root(request: Request, settings: Settings) -> str:
    """The client-visible origin + path prefix (honours X-Forwarded-*; checklist GEN-16)."""
    if settings.base_url:
        base = settings.base_url.rstrip("/")
        return base[: -len(DICOMWEB_ROOT)] if base.endswith(DICOMWEB_ROOT) else base
    headers = request.headers
    proto = (headers.get("x-forwarded-proto") or request.url.scheme).split(",")[0].strip()
    host = (headers.get("x-forwarded-host") or headers.get("host") or request.url.netloc).split(",")[0]
    prefix = (headers.get("x-forwarded-prefix") or "").split(",")[0].strip().rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    root_path = request.scope.get("root_path", "").rstrip("/")
    return f"{proto}://{host.strip()}{prefix}{root_path}"


def public_base(request: Request, settings: Settings) -> str:
    """The public DICOMweb root, e.g. ``https://host/pacs/dicomweb``."""
    if settings.base_url:
        base = settings.base_url.rstrip("/")
        return base if base.endswith(DICOMWEB_ROOT) else base + DICOMWEB_ROOT
    return public_root(request, settings) + DICOMWEB_ROOT


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def dicom_json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return Response(body, status_code=status, media_type=DICOM_JSON, headers=headers)


def error_response(exc: LightboxError) -> Response:
    """A precise 4xx/5xx: the reason as JSON and in a Warning header (PS3.18 §8.5)."""
    status = exc.http_status
    body = {
        "error": exc.message,
        "status": status,
        "dicomStatus": f"{exc.dicom_status:04X}",
    }
    text = exc.message.replace("\r", " ").replace("\n", " ")
    warning = f"299 lightbox: {exc.dicom_status:04X} {text}"[:500]
    headers = {"Warning": warning.encode("latin-1", "replace").decode("latin-1")}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="lightbox"'
    if status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.message)
    return JSONResponse(body, status_code=status, headers=headers)
