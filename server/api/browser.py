"""Browser access: CORS (checklist §12) and the cross-origin isolation headers OHIF's MPR
and 3D views need (COOP/COEP need every resource to be CORP/CORS-clean)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.config import Settings

ALLOWED_HEADERS = ["Authorization", "Accept", "Range", "Content-Type", "If-None-Match", "Cache-Control"]
EXPOSED_HEADERS = ["Warning", "Content-Location", "ETag", "Content-Range", "Content-Length", "Content-Type"]


class IsolationHeaders:
    """Adds Cross-Origin-Resource-Policy to every answer and, when enabled, COOP/COEP."""

    def __init__(self, app: ASGIApp, isolate: bool) -> None:
        self.app = app
        extra = [(b"cross-origin-resource-policy", b"cross-origin")]
        if isolate:
            extra += [
                (b"cross-origin-opener-policy", b"same-origin"),
                (b"cross-origin-embedder-policy", b"require-corp"),
            ]
        self.extra = extra

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.extra]
            await send(message)

        await self.app(scope, receive, sending)


def add_browser_access(app: FastAPI, settings: Settings) -> None:
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    app.add_middleware(IsolationHeaders, isolate=settings.cross_origin_isolation)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD"],
            allow_headers=ALLOWED_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            max_age=3600,
        )
