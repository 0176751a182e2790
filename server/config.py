"""Settings: frozen, documented, and the only reader of the environment.

Every option of ``lightbox serve`` is also read from ``LIGHTBOX_<NAME>`` (upper case,
dashes as underscores), e.g. ``LIGHTBOX_DATA``, ``LIGHTBOX_PORT``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

DuplicatePolicy = Literal["replace", "reject"]


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data: Path = Path("./data")
    #: DIMSE (C-STORE/C-FIND/...) port; 0 turns the DIMSE service off.
    dimse_port: int = 0
    aet: str = "LIGHTBOX"
    #: Calling AE titles allowed to associate, comma-separated; empty allows any.
    dimse_allowed_aets: str = ""
    #: Concurrent DIMSE associations; more are rejected (A-ASSOCIATE-RJ, local limit).
    dimse_max_associations: int = 10
    #: C-MOVE destinations: ``AET@host:port,...`` or the path of a JSON file
    #: ``{"AET": {"host": "...", "port": 104}, ...}``.
    dimse_known_aes: str = ""
    #: Public root of the DICOMweb service (e.g. ``https://host/pacs/dicomweb``). Empty: derive
    #: it per request from Host and X-Forwarded-Proto/-Host/-Prefix.
    base_url: str = ""
    #: What a STOW or C-STORE of an existing SOP Instance UID with different bytes does.
    duplicate_policy: DuplicatePolicy = "replace"
    #: STOW-RS limits: bytes per part and parts per request.
    max_part_bytes: int = 8 * 1024**3
    max_parts: int = 10_000
    #: QIDO answers at most this many matches when the request sets no smaller limit.
    qido_max_results: int = 1000
    #: Answer an empty QIDO result with 204 instead of ``200 []`` (older editions).
    qido_empty_204: bool = False
    #: Memory bound (bytes) of the decoded-frame and rendered-output caches.
    render_cache_bytes: int = 256 * 1024**2
    #: Where rendering CPU work runs: ``thread`` (a private pool; measured fastest),
    #: ``process`` or ``inline`` (on the event loop; for benchmarks).
    render_executor: str = "thread"
    #: Workers of that pool; 0 = min(4, CPU count).
    render_workers: int = 0
    #: Worker processes that store uploaded instances (STOW-RS): -1 = one per CPU
    #: (at most 4) when there are two or more; 0 = in the server's own process.
    ingest_processes: int = -1
    #: Directory with the viewer's static files.
    web_dir: Path = field(default_factory=lambda: Path(__file__).resolve().parent.parent / "web")
    #: Index database URL; empty means SQLite at ``<data>/index.sqlite``.
    database_url: str = ""
    #: Folder with the OHIF build to serve at /ohif/ (``make ohif``); empty: OHIF off.
    ohif_dir: str = ""
    #: Origins allowed to call the API from a browser (comma list; "*" any; empty: no CORS).
    cors_origins: str = "*"
    #: Send COOP/COEP so browsers isolate the page (OHIF's MPR/3D need SharedArrayBuffer).
    cross_origin_isolation: bool = False
    #: Log each request as one JSON line.
    access_log: bool = True
    #: Listen on a non-loopback address without authentication.
    insecure: bool = False
    #: Authentication methods, comma-separated from ``token``, ``basic``, ``oidc``; empty or
    #: ``none``: no authentication (then only a loopback address may be used).
    auth: str = ""
    #: HTTP Basic users file (``lightbox user add``): ``name:role:scrypt$...`` lines.
    auth_users_file: str = ""
    #: OIDC / JWT bearer: expected ``iss``, ``aud``, and the JWKS (a file path or https URL).
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_jwks: str = ""
    #: Claim holding the user's roles (dotted path, e.g. ``realm_access.roles``).
    oidc_roles_claim: str = "roles"
    #: Claim values to roles, e.g. ``radiology=reader,pacs-admins=admin``; role names map to
    #: themselves.
    oidc_role_map: str = ""
    #: Append one JSON line per access to patient data to ``<data>/audit.jsonl``.
    audit_log: bool = True
    #: PEM certificate chain and key: ``lightbox serve`` then terminates TLS itself.
    tls_cert: str = ""
    tls_key: str = ""

    @property
    def database(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data / 'index.sqlite').resolve()}"

    @property
    def ingest_process_count(self) -> int:
        if self.ingest_processes >= 0:
            return self.ingest_processes
        cpus = os.cpu_count() or 1
        return min(cpus, 4) if cpus > 1 else 0  # more: the event loop's HTTP work is the limit

    @property
    def auth_methods(self) -> frozenset[str]:
        return frozenset(m.strip().lower() for m in self.auth.split(",") if m.strip()) - {"none"}

    @property
    def audit_path(self) -> Path:
        return self.data / "audit.jsonl"

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def is_loopback(host: str) -> bool:
    """Whether a listen address only reaches this machine (auth and DIMSE checks use it)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _coerce(kind: Any, raw: str) -> Any:
    text = str(kind)
    if kind is bool or text == "bool":
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if kind is int or text == "int":
        return int(raw)
    if kind is Path or text == "Path":
        return Path(raw)
    return raw


def settings_from_env(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``LIGHTBOX_*`` variables, then explicit overrides (e.g. CLI flags)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = env.get(f"LIGHTBOX_{f.name.upper()}")
        if raw is not None:
            values[f.name] = _coerce(f.type, raw)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)
