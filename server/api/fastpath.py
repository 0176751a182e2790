"""The two GETs a viewer sends by the thousand — one frame, one rendered frame — answered
without FastAPI's routing and middleware stack, which cost several times the work itself.

Same answer, same code: the route functions (``wado.frames_response``,
``rendered.render_response``), the Authenticator, the audit trail (``ApiGuard``), the CORS
and isolation headers (``BrowserHeaders``) and the access log (``AccessEntry``) are the ones
the normal path runs, applied in the middleware order ``create_app`` sets up. Nothing is
sent or recorded until an answer is in hand; anything else — another method or path, a
query other than ``token=``, a refused request, an error, a streamed answer — goes to the
normal app untouched, which then answers (or refuses) it the usual way. A frame it has
answered once is answered again from a replay (server.api.replay): the same start message and
part framing around the frame read afresh.
"""

from __future__ import annotations

import re
import time

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.accesslog import AccessEntry
from server.api.auth import ApiGuard, Authenticator, request_headers, take_token
from server.api.browser import BrowserHeaders
from server.api.payload import PiecesResponse, accept_of
from server.api.rendered import render_params, render_response
from server.api.replay import FileMaps, RenderReplay, Replay, Replays, replay_key
from server.api.wado import frames_response
from server.config import Settings
from server.errors import LightboxError
from server.services.audit import AuditLog
from server.services.render import Renderer
from server.services.retrieve import Retriever

# One frame number only: a frame list may be answered as a stream, which this path leaves alone.
_FRAME = re.compile(r"^/dicomweb/studies/([^/]+)/series/([^/]+)/instances/([^/]+)/frames/([0-9]+)(/rendered)?\Z")


class FastPath:
    """ASGI app in front of the FastAPI app ``app``: answers what it can, passes the rest."""

    def __init__(self, app: ASGIApp, *, settings: Settings, authenticator: Authenticator, audit: AuditLog | None,
                 retriever: Retriever, renderer: Renderer) -> None:
        self.app = app
        self.settings = settings
        self.auth = authenticator
        self.guard = ApiGuard(authenticator, audit)
        self.browser = BrowserHeaders(settings)
        self.retriever = retriever
        self.renderer = renderer
        self.replays = Replays()
        self.maps = FileMaps()
        self.replayed = 0  # answers sent from a replay (tests read it)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            match = _FRAME.match(scope["path"])
            if match is not None:
                key = replay_key(scope)
                replay = self.replays.get(key) if key is not None else None
                if key is not None and replay is not None and await self._replay(replay, key, scope, send):
                    return
                if await self._answer(match, scope, receive, send, key):
                    return
        await self.app(scope, receive, send)

    async def _replay(self, replay: Replay | RenderReplay, key: tuple[object, ...], scope: Scope,
                      send: Send) -> bool:
        """Send a kept answer with the frame read or drawn again, or return False having sent nothing."""
        entry = AccessEntry() if self.settings.access_log else None
        headers = request_headers(scope)
        started = time.perf_counter()
        try:
            who = await self.auth.identify(headers, None)
            await self.auth.authorize(who, "GET", scope["path"], b"")
        except Exception:  # the usual way answers the refusal
            return False
        try:
            if isinstance(replay, Replay):
                start = replay.start()
                pieces = [p for p in (replay.head, replay.frame(self.maps), replay.tail) if p]
            else:
                replay.check()
                image = await self.renderer.image(replay.row, replay.frame, replay.params)
                start, pieces = replay.start(len(image)), [image]
        except (OSError, LightboxError):  # replaced or deleted: the usual way finds out which
            self.replays.drop(key)
            return False
        self.guard.record(scope, headers, who, start["status"], started)
        body = entry.watch(send) if entry else send
        await body(start)
        for n, piece in enumerate(pieces, 1):
            await body({"type": "http.response.body", "body": piece, "more_body": n < len(pieces)})
        if entry:
            entry.write(scope)
        self.replayed += 1
        return True

    async def _answer(self, match: re.Match[str], scope: Scope, receive: Receive, send: Send,
                      key: tuple[object, ...] | None) -> bool:
        """Answer and return True, or return False having sent and recorded nothing."""
        entry = AccessEntry() if self.settings.access_log else None
        query_token = None
        if scope.get("query_string"):
            scope = {**scope}  # take the token as AuthMiddleware does, but from a copy: we may yet pass
            query_token = take_token(scope)
            if scope["query_string"]:
                return False
        headers = request_headers(scope)
        started = time.perf_counter()
        try:
            who = await self.auth.identify(headers, query_token)
            await self.auth.authorize(who, "GET", scope["path"], b"")
            study, series, sop, frame, rendered = match.groups()
            request = Request(scope)
            if rendered:
                response = await render_response(request, self.renderer, self.settings, study, series, sop, frame)
            else:
                response = await frames_response(request, self.retriever, self.settings, study, series, sop, frame)
        except Exception:  # the normal path answers it, refusals and errors included
            return False
        if isinstance(response, StreamingResponse):
            return False
        # The middlewares' send wrappers, outermost first: access log, CORS, isolation, auth. All
        # but the access log change the start message only, so the body goes around them.
        sent: list[Message] = []
        body = entry.watch(send) if entry else send
        status = {"code": 0}
        start = self.guard.audited(self.browser.wrap(_keeping(sent, body), scope), scope, headers, who, started,
                                   status)

        async def sending(message: Message) -> None:
            await (start if message["type"] == "http.response.start" else body)(message)

        try:
            await response(scope, receive, sending)
        finally:
            if not status["code"]:
                self.guard.record(scope, headers, who, 500, started, "no response")
            if entry:
                entry.write(scope)
        if key is not None and sent and sent[0]["status"] == 200:
            if rendered:
                await self._keep_rendered(key, sent[0], request, response, study, series, sop, int(frame))
            else:
                await self._keep(key, sent[0], response, study, series, sop, int(frame))
        return True

    async def _keep_rendered(self, key: tuple[object, ...], start: Message, request: Request, response: Response,
                             study: str, series: str, sop: str, number: int) -> None:
        """Keep a rendered frame answered as one image (a multipart answer is not replayed)."""
        if response.headers["content-type"].startswith("multipart/"):
            return
        try:
            drawn = await self.renderer.single_image(study, series, sop, number, render_params(request),
                                                     accept_of(request))
        except LightboxError:  # deleted meanwhile: nothing to keep
            return
        path = self.renderer.blobs.local_path(drawn[0].blob_key) if drawn is not None else None
        if drawn is not None and path is not None:
            self.replays.keep(key, RenderReplay(list(start["headers"]), drawn[0], number, drawn[1], str(path)))

    async def _keep(self, key: tuple[object, ...], start: Message, response: Response, study: str, series: str,
                    sop: str, number: int) -> None:
        """Keep a 200 whose body is one frame as stored (checked against the file), framed or not."""
        body = b"".join(response.pieces) if isinstance(response, PiecesResponse) else bytes(response.body)
        try:
            span = await self.retriever.frame_file_span(study, series, sop, number)
            if span is None:
                return
            # a multipart body is its one part's head, the frame, and the closing boundary
            at = body.find(b"\r\n\r\n") + 4 if response.headers["content-type"].startswith("multipart/") else 0
            replay = Replay(list(start["headers"]), body[:at], body[at + span[2]:], *span)
            if replay.frame(self.maps).tobytes() != body[at : at + span[2]]:  # transcoded, or another span
                return
        except (LightboxError, OSError):  # deleted meanwhile: nothing to keep
            return
        self.replays.keep(key, replay)


def _keeping(sent: list[Message], send: Send) -> Send:
    """``send`` that keeps the start message as it leaves (every header added by then)."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            sent.append(message)
        await send(message)

    return sending
