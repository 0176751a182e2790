"""One JSON line per request: method, path, status, bytes, milliseconds."""

from __future__ import annotations

import logging
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("lightbox.access")


class AccessEntry:
    """One request's line: ``watch`` its answer, then ``write`` (shared with server.api.fastpath)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.status = 0
        self.bytes = 0

    def watch(self, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body":
                self.bytes += len(message.get("body", b""))
            await send(message)

        return sending

    def write(self, scope: Scope) -> None:
        client = scope.get("client")
        log.info(orjson.dumps({
            "method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1")[:300],
            "status": self.status,
            "bytes": self.bytes,
            "ms": round((time.perf_counter() - self.start) * 1000, 2),
            "client": client[0] if client else None,
        }).decode())


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry = AccessEntry()
        try:
            await self.app(scope, receive, entry.watch(send))
        finally:
            entry.write(scope)
