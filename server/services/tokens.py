"""Who is asking: API tokens, HTTP Basic users and OIDC/JWT bearer tokens → an Identity.

Roles are ordered: ``reader`` < ``uploader`` < ``admin`` (each includes the ones before).
A scope (one study or one patient) narrows what an identity may see, never its role.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.config import Settings
from server.errors import BadRequest, Forbidden, Unauthorized
from server.index.tokens import TokenRow, TokenStore

ROLES = ("reader", "uploader", "admin")
TOKEN_PREFIX = "lbx_"  # noqa: S105 (a marker, not a secret)


def role_rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else -1


def require_role(role: str) -> str:
    if role not in ROLES:
        raise BadRequest(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    return role


@dataclass(frozen=True)
class Identity:
    user: str
    role: str
    method: str  # token | basic | oidc | none
    study_uid: str | None = None
    patient_id: str | None = None

    @property
    def scoped(self) -> bool:
        return self.study_uid is not None or self.patient_id is not None

    def has(self, role: str) -> bool:
        return role_rank(self.role) >= role_rank(role)


ANONYMOUS = Identity("anonymous", "admin", "none")

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``30m``, ``12h``, ``7d``, ``2w`` → seconds."""
    m = _DURATION.match(text)
    if not m:
        raise BadRequest(f"bad duration {text!r}; use e.g. 30m, 12h, 7d, 2w")
    return int(m.group(1)) * _UNITS[m.group(2)]


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits: a plain SHA-256 is enough (no brute force possible).
    return hashlib.sha256(token.encode()).hexdigest()


# --------------------------------------------------------------------------- API tokens


@dataclass(frozen=True)
class NewToken:
    token: str  # shown once, never stored
    row: TokenRow


async def create_token(
    store: TokenStore, role: str, *, study_uid: str | None = None, patient_id: str | None = None,
    expires_in: float | None = None, label: str = "",
) -> NewToken:
    require_role(role)
    token_id = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    now = time.time()
    row = TokenRow(token_id, role, study_uid, patient_id, label, now, now + expires_in if expires_in else None, None)
    await store.add(row, hash_token(token))
    return NewToken(token, row)


async def identity_from_token(store: TokenStore, token: str) -> Identity:
    row = await store.by_hash(hash_token(token))
    if row is None:
        raise Unauthorized("unknown token")
    if row.revoked_at is not None:
        raise Unauthorized("token revoked")
    if row.expires_at is not None and row.expires_at <= time.time():
        raise Unauthorized("token expired")
    return Identity(f"token:{row.token_id}", row.role, "token", row.study_uid, row.patient_id)


# --------------------------------------------------------------------------- HTTP Basic

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
        return hmac.compare_digest(got, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


def add_user(path: Path, name: str, role: str, password: str) -> None:
    """Add or replace ``name`` in a users file (``name:role:scrypt$...`` lines)."""
    require_role(role)
    if not name or ":" in name:
        raise BadRequest("user name must be non-empty and contain no ':'")
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [ln for ln in lines if ln.split(":", 1)[0] != name]
    kept.append(f"{name}:{role}:{hash_password(password)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(kept) + "\n")
    path.chmod(0o600)


class BasicUsers:
    """Users file, re-read when it changes; verified passwords cached (scrypt costs ~50 ms)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._users: dict[str, tuple[str, str]] = {}
        self._ok: OrderedDict[str, tuple[float, Identity]] = OrderedDict()

    def _load(self) -> None:
        mtime = self.path.stat().st_mtime
        if mtime != self._mtime:
            users: dict[str, tuple[str, str]] = {}
            for line in self.path.read_text().splitlines():
                parts = line.strip().split(":", 2)
                if len(parts) == 3 and not line.startswith("#"):
                    users[parts[0]] = (parts[1], parts[2])
            self._users, self._mtime = users, mtime
            self._ok.clear()  # a changed file drops every cached verification

    async def identify(self, name: str, password: str) -> Identity:
        self._load()
        key = hashlib.sha256(f"{name}\0{password}".encode()).hexdigest()
        hit = self._ok.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        entry = self._users.get(name)
        if entry is None or not await asyncio.to_thread(verify_password, password, entry[1]):
            raise Unauthorized("bad user name or password")
        identity = Identity(name, entry[0], "basic")
        self._ok[key] = (time.monotonic() + 300, identity)
        while len(self._ok) > 1000:
            self._ok.popitem(last=False)
        return identity


# --------------------------------------------------------------------------- OIDC / JWT


class OidcVerifier:
    """Bearer JWTs signed by a key from a JWKS (file or URL), with ``iss`` and ``aud`` checked."""

    def __init__(self, settings: Settings) -> None:
        import jwt

        if not (settings.oidc_issuer and settings.oidc_audience and settings.oidc_jwks):
            raise ValueError("oidc needs oidc_issuer, oidc_audience and oidc_jwks")
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.claim = settings.oidc_roles_claim
        self.role_map = {r: r for r in ROLES}
        for pair in filter(None, (p.strip() for p in settings.oidc_role_map.split(","))):
            value, _, role = pair.partition("=")
            self.role_map[value.strip()] = require_role(role.strip())
        source = settings.oidc_jwks
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        if source.startswith(("https://", "http://")):
            self._client = jwt.PyJWKClient(source, cache_keys=True, lifespan=600)
        else:
            self._keys = jwt.PyJWKSet.from_dict(json.loads(Path(source).read_text()))

    @staticmethod
    def looks_like_jwt(token: str) -> bool:
        return token.count(".") == 2 and not token.startswith(TOKEN_PREFIX)

    def _key(self, token: str) -> Any:
        import jwt

        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        assert self._keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        for k in self._keys.keys:
            if kid is None or k.key_id == kid:
                return k.key
        raise jwt.InvalidTokenError("no key for kid")

    def _roles(self, claims: dict[str, Any]) -> list[str]:
        value: Any = claims
        for part in self.claim.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values = [value] if isinstance(value, str) else list(value or [])
        return [self.role_map[v] for v in values if isinstance(v, str) and v in self.role_map]

    async def identify(self, token: str) -> Identity:
        import jwt

        try:
            key = await asyncio.to_thread(self._key, token)
            claims = jwt.decode(
                token, key, algorithms=["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"],
                audience=self.audience, issuer=self.issuer, options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired") from exc
        except (jwt.PyJWTError, ValueError) as exc:
            raise Unauthorized(f"invalid bearer token: {exc}") from exc
        roles = self._roles(claims)
        if not roles:
            raise Forbidden("token carries no Lightbox role")
        role = max(roles, key=role_rank)
        user = str(claims.get("preferred_username") or claims.get("email") or claims.get("sub") or "?")
        study = claims.get("lightbox_study")
        return Identity(f"oidc:{user}", role, "oidc", study if isinstance(study, str) else None)
