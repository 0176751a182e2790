"""Audit trail: one JSON line per access to patient data (who, which study, what, result).

Lines are appended with a single ``write`` on an ``O_APPEND`` file, so concurrent writers
(server processes, ``lightbox`` commands) never interleave within a line.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from server.errors import BadRequest


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def write(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(self._fd, orjson.dumps(record) + b"\n")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_RELATIVE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str) -> datetime:
    """``2026-11-26``, ``2026-11-26T10:00``, or relative ``30m``/``12h``/``7d`` → UTC time."""
    m = _RELATIVE.match(text.strip())
    if m:
        return datetime.fromtimestamp(time.time() - int(m.group(1)) * _UNITS[m.group(2)], UTC)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(f"bad time {text!r}; use an ISO date/time or e.g. 12h, 7d") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def query(
    path: Path, *, study: str | None = None, user: str | None = None, since: datetime | None = None,
    action: str | None = None, denied: bool = False,
) -> Iterator[dict[str, Any]]:
    """Records matching every given filter, oldest first."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        for line in f:
            try:
                rec: dict[str, Any] = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a torn last line after a crash
            if study and rec.get("study") != study:
                continue
            if user and rec.get("user") != user:
                continue
            if action and rec.get("action") != action:
                continue
            if denied and int(rec.get("status", 0)) < 400:
                continue
            if since and datetime.fromisoformat(str(rec.get("time", "")).replace("Z", "+00:00")) < since:
                continue
            yield rec
