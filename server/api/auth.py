"""Authentication, roles, scopes and the audit trail, as one ASGI middleware.

Every request below ``/dicomweb``, ``/wado`` and ``/admin`` (and anything that is not a
viewer file or ``/healthz``) needs an identity when authentication is on:

* ``Authorization: Bearer lbx_...`` (API token), ``Bearer <JWT>`` (OIDC), ``Basic ...``;
* ``?token=`` on GET/HEAD, for ``<img src>`` URLs (stripped before the route sees it).

Roles: GET needs reader; STOW (``POST /dicomweb/studies[/{s}]``) uploader; everything else
that changes state (DELETE, de-identify, token administration) admin. A token scoped to a
study or patient gets 404 for any other study, and its QIDO queries are narrowed to the
scope by rewriting the query (so OHIF's patient-level queries still answer 200).
PS3.18 §8.5 / checklist GEN-17: API calls get 401 with WWW-Authenticate, never a redirect.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.http import dicom_json, error_response
from server.config import Settings, is_loopback
from server.errors import BadRequest, Forbidden, LightboxError, NotFound, Unauthorized
from server.index.tokens import TokenStore
from server.services.audit import AuditLog, now_iso
from server.services.tokens import ANONYMOUS, BasicUsers, Identity, OidcVerifier, identity_from_token

log = logging.getLogger("lightbox.auth")

METHODS = frozenset({"token", "basic", "oidc"})
CHECK_PATH = "/auth/check"  # nginx auth_request target (see nginx/lightbox.conf)

# Viewer hardening: no inline script, no third-party origins, no referrer leaks of URLs
# that may carry ?token=.
STATIC_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; connect-src 'self'; "
     b"object-src 'none'; base-uri 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
API_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]

_STUDY_PATH = re.compile(r"^/dicomweb/studies/([^/]+)")
_STOW_PATH = re.compile(r"^/dicomweb/studies(/[^/]+)?/?$")
_QIDO_ROOT = re.compile(r"^/dicomweb/(studies|series|instances)/?$")
_STUDY_KEYS = {"studyinstanceuid", "0020000d"}
_PATIENT_KEYS = {"patientid", "00100020"}


def listen_problem(settings: Settings) -> str | None:
    """Why ``serve`` must refuse to start, or None. Unknown methods are always refused."""
    unknown = settings.auth_methods - METHODS
    if unknown:
        return f"unknown auth method(s) {', '.join(sorted(unknown))}; use token, basic, oidc"
    if is_loopback(settings.host) or settings.insecure:
        return None
    if not settings.auth_methods:
        return (
            f"refusing to listen on {settings.host} without authentication: "
            "set --auth token|basic|oidc (LIGHTBOX_AUTH), or --insecure on a trusted network"
        )
    if settings.dimse_port and not settings.dimse_allowed_aets.strip():
        # DIMSE has no credentials: its calling-AE allow-list is the only gate (issue 7, item 4).
        return (
            f"refusing to open DIMSE on {settings.host}:{settings.dimse_port} to any AE title: "
            "set --dimse-allowed-aets (LIGHTBOX_DIMSE_ALLOWED_AETS), or --insecure"
        )
    return None


def insecure_warning(settings: Settings) -> str | None:
    if not settings.auth_methods and not is_loopback(settings.host):
        return (
            f"WARNING: serving patient data on {settings.host} WITHOUT AUTHENTICATION (--insecure); "
            "anyone who can reach this address can read, upload and delete studies"
        )
    return None


def action_of(method: str, path: str) -> str:
    if path.startswith("/wado"):
        return "wado-uri"
    if path.startswith("/admin"):
        return "admin"
    if path.endswith("/deidentify"):
        return "deidentify"
    if method == "DELETE":
        return "delete"
    if method == "POST":
        return "store" if _STOW_PATH.match(path) else "admin"
    if method not in {"GET", "HEAD"}:
        return "admin"
    tail = path.rstrip("/").rsplit("/", 2)
    if tail[-1] in {"studies", "series", "instances"}:
        return "search"
    for key, name in (("rendered", "render"), ("thumbnail", "thumbnail"), ("metadata", "retrieve-metadata"),
                      ("frames", "retrieve-frames"), ("bulk", "retrieve-bulk")):
        if key in tail:
            return name
    return "retrieve"


def required_role(method: str, path: str) -> str:
    if path.startswith("/admin") or path.endswith("/deidentify"):
        return "admin"
    if method in {"GET", "HEAD"}:
        return "reader"
    if method == "POST" and _STOW_PATH.match(path):
        return "uploader"
    return "admin"


def _split_uids(value: str) -> list[str]:
    return [v.strip() for v in re.split(r"[,\\]", value) if v.strip()]


@dataclass
class Decision:
    identity: Identity
    query: bytes  # the query string the route will see
    empty_qido: bool = False  # a scoped QIDO that cannot match anything


class Authenticator:
    def __init__(self, settings: Settings, store: TokenStore) -> None:
        self.settings = settings
        self.methods = settings.auth_methods
        unknown = self.methods - METHODS
        if unknown:
            raise ValueError(f"unknown auth method(s): {', '.join(sorted(unknown))}")
        self.store = store
        self.basic: BasicUsers | None = None
        self.oidc: OidcVerifier | None = None
        if "basic" in self.methods:
            if not settings.auth_users_file:
                raise ValueError("auth basic needs auth_users_file (LIGHTBOX_AUTH_USERS_FILE)")
            self.basic = BasicUsers(Path(settings.auth_users_file))
        if "oidc" in self.methods:
            self.oidc = OidcVerifier(settings)

    @property
    def enabled(self) -> bool:
        return bool(self.methods)

    def challenges(self) -> list[tuple[bytes, bytes]]:
        out = [(b"www-authenticate", b'Bearer realm="lightbox"')]
        if self.basic:
            out.append((b"www-authenticate", b'Basic realm="lightbox", charset="UTF-8"'))
        return out

    async def _bearer(self, token: str) -> Identity:
        if self.oidc and OidcVerifier.looks_like_jwt(token):
            return await self.oidc.identify(token)
        if "token" in self.methods:
            return await identity_from_token(self.store, token)
        raise Unauthorized("unsupported bearer token")

    async def identify(self, headers: dict[str, str], query_token: str | None) -> Identity:
        if not self.enabled:
            return ANONYMOUS
        header = headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and value.strip():
            return await self._bearer(value.strip())
        if scheme == "basic" and self.basic:
            try:
                name, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise Unauthorized("malformed Basic credentials") from exc
            return await self.basic.identify(name, password)
        if query_token:
            return await self._bearer(query_token)
        raise Unauthorized("authentication required")

    async def _in_scope(self, who: Identity, study: str) -> bool:
        if who.study_uid is not None:
            return study == who.study_uid
        if who.patient_id is not None:
            return await self.store.patient_of_study(study) == who.patient_id
        return True

    async def authorize(self, who: Identity, method: str, path: str, query: bytes) -> Decision:
        """The (possibly narrowed) query for ``who``, or a LightboxError (403, 404)."""
        role = required_role(method, path)
        if not who.has(role):
            raise Forbidden(f"{who.user} has role {who.role}; this needs {role}")
        decision = Decision(who, query)
        if who.scoped:
            params = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            await self._narrow(who, method, path, params, decision)
        return decision

    async def _narrow(self, who: Identity, method: str, path: str, params: list[tuple[str, str]],
                      decision: Decision) -> None:
        m = _STUDY_PATH.match(path)
        if m:
            study = m.group(1)  # scope["path"] is already percent-decoded, as routes see it
            if method == "POST" and who.study_uid != study:
                raise Forbidden("a scoped token may store only into its own study")
            if not await self._in_scope(who, study):
                raise NotFound(f"study {study} not found")  # not 403: do not confirm it exists
            return
        if path.startswith("/wado"):
            # Every studyUID given must be in scope: a route may read the first or the last.
            studies = [v for k, v in params if k == "studyUID"]
            if not studies or not all([await self._in_scope(who, s) for s in studies]):
                raise NotFound("object not found")
            return
        if method in {"GET", "HEAD"} and _QIDO_ROOT.match(path):
            decision.query, decision.empty_qido = self._scoped_query(who, params)
            return
        if method == "POST" and _STOW_PATH.match(path):
            raise Forbidden("a scoped token must store to /dicomweb/studies/{its study}")
        raise NotFound("not found")

    @staticmethod
    def _scoped_query(who: Identity, params: list[tuple[str, str]]) -> tuple[bytes, bool]:
        """QIDO narrowed to the scope: the scope's key replaces any the client gave."""
        keys, value = (_STUDY_KEYS, who.study_uid) if who.study_uid is not None else (_PATIENT_KEYS, who.patient_id)
        assert value is not None
        asked = [v for k, v in params if k.lower() in keys]
        empty = False
        for v in asked:
            if who.study_uid is not None:
                empty |= value not in _split_uids(v)
            else:
                empty |= not fnmatch.fnmatchcase(value, v)
        out = [(k, v) for k, v in params if k.lower() not in keys]
        out.append(("0020000D" if who.study_uid is not None else "00100020", value))
        return urlencode(out).encode(), empty


def take_token(scope: Scope) -> str | None:
    """Remove ``token=`` from the query string, in place (so no log or route ever sees it);
    return its value when the method may carry one (GET/HEAD, for ``<img src>``)."""
    query: bytes = scope.get("query_string", b"")
    if b"token=" not in query:
        return None
    params = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    token = next((v for k, v in params if k == "token"), None)
    scope["query_string"] = urlencode([(k, v) for k, v in params if k != "token"]).encode()
    return token if scope["method"] in {"GET", "HEAD"} else None


def request_headers(scope: Scope) -> dict[str, str]:
    """Request headers as ``identify`` and the audit trail read them (lower-case names)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]], private: bool) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            # GEN-14: answers to an authenticated request are private to browsers.
            headers = [
                (k, v.replace(b"public", b"private") if private and k.lower() == b"cache-control" else v)
                for k, v in message.get("headers", [])
            ]
            names = {k.lower() for k, _ in headers}
            headers.extend((k, v) for k, v in extra if k not in names)
            message = {**message, "headers": headers}
        await send(message)

    return sending


class ApiGuard:
    """The audit trail and the headers of every API answer, shared by AuthMiddleware and the
    fast path (server.api.fastpath); both ask ``Authenticator`` who may do what."""

    def __init__(self, authenticator: Authenticator, audit: AuditLog | None) -> None:
        self.auth = authenticator
        self.audit = audit

    def audited(self, send: Send, scope: Scope, headers: dict[str, str], who: Identity, started: float,
                status: dict[str, int]) -> Send:
        """``send`` for an admitted request: adds the API headers and records the access as
        the answer starts (its status lands in ``status["code"]``)."""

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and not status["code"]:
                # Recorded before the client sees a byte (ms is time to first byte), so the
                # trail never misses an access whose body was cut short.
                status["code"] = message["status"]
                self.record(scope, headers, who, message["status"], started)
            await send(message)

        return _with_headers(sending, API_HEADERS, self.auth.enabled)

    def record(self, scope: Scope, headers: dict[str, str], who: Identity | None, status: int,
               started: float, reason: str | None = None, check: bool = False) -> None:
        if self.audit is None:
            return
        method: str = scope["method"]
        path: str = scope["path"]
        m = _STUDY_PATH.match(path)
        study = m.group(1) if m else None
        if study is None:
            params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            study = params.get("studyUID") or params.get("0020000D") or params.get("StudyInstanceUID")
        peer = str((scope.get("client") or ("",))[0])
        forwarded = headers.get("x-forwarded-for", "")
        # Only a local proxy (nginx) is believed, and only the address it appended itself:
        # earlier entries come from the client and can be forged.
        client = forwarded.split(",")[-1].strip() if forwarded and is_loopback(peer) else peer
        rec: dict[str, Any] = {
            "time": now_iso(),
            "user": who.user if who else None,
            "role": who.role if who else None,
            "auth": who.method if who else None,
            "action": action_of(method, path),
            "method": method,
            "path": path,
            "study": study,
            "status": status,
            "client": client,
            "ms": round((time.perf_counter() - started) * 1000, 1),
        }
        if reason:
            rec["reason"] = reason
        if check:
            rec["check"] = True
        try:
            self.audit.write(rec)
        except OSError as exc:  # never fail a request because the audit disk is full; say so loudly
            log.error("audit write failed: %s", exc)


class AuthMiddleware:
    def __init__(self, app: ASGIApp, *, settings: Settings, authenticator: Authenticator,
                 audit: AuditLog | None) -> None:
        self.app = app
        self.settings = settings
        self.auth = authenticator
        self.guard = ApiGuard(authenticator, audit)
        self.web_dir = settings.web_dir.resolve()

    def _is_open(self, method: str, path: str) -> bool:
        """/healthz, CORS preflights and viewer files (no patient data) need no identity."""
        if path == "/healthz" or method == "OPTIONS":
            return True
        if path.startswith(("/dicomweb", "/wado", "/admin", "/auth")):
            return False
        if path == "/" or path.endswith("/"):
            return (self.web_dir / path.strip("/") / "index.html").is_file()
        target = (self.web_dir / path.lstrip("/")).resolve()
        return target.is_relative_to(self.web_dir) and target.is_file()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        if path == CHECK_PATH:
            await self._check(scope, receive, send)
            return
        if path == "/ohif" or path.startswith("/ohif/"):
            # The OHIF build (app code, no patient data) needs inline script and wasm: no CSP.
            await self.app(scope, receive, _with_headers(send, API_HEADERS, False))
            return
        if self._is_open(method, path):
            await self.app(scope, receive, _with_headers(send, STATIC_HEADERS, False))
            return
        headers = request_headers(scope)
        started = time.perf_counter()
        query_token = take_token(scope)
        who: Identity | None = None
        try:
            who = await self.auth.identify(headers, query_token)
            decision = await self.auth.authorize(who, method, path, scope.get("query_string", b""))
        except LightboxError as exc:
            self.guard.record(scope, headers, who, exc.http_status, started, str(exc.message))
            await self._deny(exc, scope, receive, send)
            return
        scope["query_string"] = decision.query
        if decision.empty_qido:
            empty: Response = Response(status_code=204) if self.settings.qido_empty_204 else dicom_json([])
            self.guard.record(scope, headers, who, empty.status_code, started)
            await empty(scope, receive, send)
            return
        scope.setdefault("state", {})["identity"] = who
        status = {"code": 0}
        try:
            await self.app(scope, receive, self.guard.audited(send, scope, headers, who, started, status))
        finally:
            if not status["code"]:
                self.guard.record(scope, headers, who, 500, started, "no response")

    async def _deny(self, exc: LightboxError, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(exc)
        if exc.http_status == 401:
            del response.headers["www-authenticate"]
            response.raw_headers.extend(self.auth.challenges())
        await response(scope, receive, send)

    async def _check(self, scope: Scope, receive: Receive, send: Send) -> None:
        """nginx auth_request: may the request in X-Original-URI/-Method go ahead?"""
        headers = request_headers(scope)
        started = time.perf_counter()
        original = urlsplit(headers.get("x-original-uri", ""))
        method = headers.get("x-original-method", "GET").upper()
        path = unquote(original.path)
        fake = {**scope, "method": method, "path": path, "query_string": original.query.encode()}
        query_token = take_token(fake)
        who: Identity | None = None
        try:
            if not path.startswith("/"):
                raise BadRequest("X-Original-URI missing")
            who = await self.auth.identify(headers, query_token)
            await self.auth.authorize(who, method, path, fake["query_string"])
        except LightboxError as exc:
            # auth_request understands only 2xx, 401 and 403.
            code = exc.http_status if exc.http_status in (401, 403) else 403
            response = Response(status_code=code)
            if code == 401:
                response.raw_headers.extend(self.auth.challenges())
            self.guard.record(fake, headers, who, code, started, exc.message, check=True)
            await response(scope, receive, send)
            return
        self.guard.record(fake, headers, who, 204, started, check=True)
        await Response(status_code=204)(scope, receive, send)
