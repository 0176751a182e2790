"""Bare ASGI apps that set the floor the benchmarks compare against."""

from __future__ import annotations

from typing import Any

from starlette.types import Receive, Scope, Send

_BLOB = bytes(512 * 1024)


async def drain(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole request body and answers 200: the STOW floor."""
    if scope["type"] != "http":
        return
    total = 0
    more = True
    while more:
        message: dict[str, Any] = await receive()
        total += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(total).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]}
    )
    await send({"type": "http.response.body", "body": body})


async def blob(scope: Scope, receive: Receive, send: Send) -> None:
    """Returns 512 KiB from memory: the frame-retrieval floor."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", b"524288")],
        }
    )
    await send({"type": "http.response.body", "body": _BLOB})
