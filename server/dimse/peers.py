"""Known peers: the C-MOVE destination table and the calling AE allow-list."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from server.errors import BadRequest


@dataclass(frozen=True)
class KnownAE:
    title: str
    host: str
    port: int


def _ae_title(raw: str) -> str:
    # PS3.5 Table 6.2-1 (AE): at most 16 characters, no backslash or control characters.
    title = raw.strip()
    if not title or len(title) > 16 or "\\" in title or not title.isprintable():
        raise BadRequest(f"invalid AE title {raw!r}")
    return title


def _entry(title: str, host: str, port: object) -> KnownAE:
    if not host or not isinstance(port, (int, str)) or not str(port).isdigit():
        raise BadRequest(f"known AE {title!r}: need a host and a numeric port")
    number = int(port)
    if not 0 < number < 65536:
        raise BadRequest(f"known AE {title!r}: port {number} out of range")
    return KnownAE(_ae_title(title), host.strip(), number)


def parse_known_aes(spec: str) -> dict[str, KnownAE]:
    """``AET@host:port,...`` or the path of a JSON file ``{"AET": {"host": h, "port": p}}``."""
    spec = spec.strip()
    if not spec:
        return {}
    table: dict[str, KnownAE] = {}
    if "@" not in spec and Path(spec).is_file():
        doc = json.loads(Path(spec).read_text(encoding="utf-8"))
        if not isinstance(doc, dict):
            raise BadRequest(f"{spec}: expected an object of AE title -> {{host, port}}")
        for title, where in doc.items():
            if not isinstance(where, dict):
                raise BadRequest(f"{spec}: {title!r} is not an object with host and port")
            ae = _entry(str(title), str(where.get("host", "")), where.get("port"))
            table[ae.title] = ae
        return table
    for item in filter(None, (part.strip() for part in spec.split(","))):
        title, at, address = item.partition("@")
        host, colon, port = address.rpartition(":")
        if not at or not colon:
            raise BadRequest(f"known AE {item!r}: expected AET@host:port")
        ae = _entry(title, host, port)
        table[ae.title] = ae
    return table


def parse_allowed_aets(spec: str) -> list[str]:
    """Comma-separated calling AE titles; empty means any peer may associate."""
    return [_ae_title(t) for t in spec.split(",") if t.strip()]
