"""Browser access: CORS (checklist §12) and the cross-origin isolation headers OHIF's MPR
and 3D views need (COOP/COEP need every resource to be CORP/CORS-clean)."""

from __future__ import annotations

import functools
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.config import Settings

ALLOWED_HEADERS = ["Authorization", "Accept", "Range", "Content-Type", "If-None-Match", "Cache-Control"]
EXPOSED_HEADERS = ["Warning", "Content-Location", "ETag", "Content-Range", "Content-Length", "Content-Type"]


def _isolation(isolate: bool) -> list[tuple[bytes, bytes]]:
    extra = [(b"cross-origin-resource-policy", b"cross-origin")]
    if isolate:
        extra += [
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cross-origin-embedder-policy", b"require-corp"),
        ]
    return extra


def _adding(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return sending


class IsolationHeaders:
    """Adds Cross-Origin-Resource-Policy to every answer and, when enabled, COOP/COEP."""

    def __init__(self, app: ASGIApp, isolate: bool) -> None:
        self.app = app
        self.extra = _isolation(isolate)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _adding(send, self.extra))


def _cors_options(settings: Settings) -> dict[str, Any] | None:
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if not origins:
        return None
    return {
        "allow_origins": origins,
        "allow_methods": ["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD"],
        "allow_headers": ALLOWED_HEADERS,
        "expose_headers": EXPOSED_HEADERS,
        "max_age": 3600,
    }


def add_browser_access(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(IsolationHeaders, isolate=settings.cross_origin_isolation)
    options = _cors_options(settings)
    if options:
        app.add_middleware(CORSMiddleware, **options)


async def _unused(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("BrowserHeaders only decorates answers")


class BrowserHeaders:
    """What the two middlewares of ``add_browser_access`` add to a GET's answer, for the fast
    path that skips them (server.api.fastpath): their own code, in their order."""

    def __init__(self, settings: Settings) -> None:
        options = _cors_options(settings)
        self.cors = CORSMiddleware(_unused, **options) if options else None
        self.extra = _isolation(settings.cross_origin_isolation)

    def wrap(self, send: Send, scope: Scope) -> Send:
        if self.cors is not None:  # CORSMiddleware.simple_response's wrapping, without its call
            send = functools.partial(self.cors.send, send=send, request_headers=Headers(scope=scope))
        return _adding(send, self.extra)
