"""One log line per association: peer, AE titles, what was done, and how it ended."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import evt
from pynetdicom.events import Event

log = logging.getLogger("server.dimse")


@dataclass
class _Record:
    peer: str
    calling: str = "?"
    called: str = "?"
    result: str = "closed"
    done: Counter[str] = field(default_factory=Counter)


def called_title(event: Event) -> str:
    """The AE title the peer asked for (ours is ``assoc.acceptor.ae_title``)."""
    request = getattr(event.assoc.requestor, "primitive", None)
    return str(getattr(request, "called_ae_title", "") or "").strip()


class AssociationLog:
    """Tracks each association from request to connection close, then logs it once."""

    def __init__(self, reject_reason: Callable[[Event], str] | None = None) -> None:
        self._reject_reason = reject_reason
        self._lock = threading.Lock()
        self._records: dict[int, _Record] = {}

    def _record(self, event: Event) -> _Record:
        key = id(event.assoc)
        with self._lock:
            rec = self._records.get(key)
            if rec is None:
                peer = event.assoc.requestor
                rec = _Record(peer=f"{peer.address}:{peer.port}")
                self._records[key] = rec
            return rec

    def count(self, event: Event, what: str, n: int = 1) -> None:
        """Note an operation, e.g. ``C-STORE ok`` or ``C-STORE 0xA900``."""
        self._record(event).done[what] += n

    def _titles(self, event: Event, rec: _Record) -> None:
        # set once the A-ASSOCIATE-RQ is decoded, after EVT_REQUESTED
        rec.calling = event.assoc.requestor.ae_title or rec.calling
        rec.called = called_title(event) or rec.called

    def _ended(self, result: str) -> Any:
        def handler(event: Event) -> None:
            rec = self._record(event)
            self._titles(event, rec)
            # a rejection is followed by no release; keep the first ending we see
            if rec.result in {"closed", "established"}:
                rec.result = result
                if result == "rejected" and self._reject_reason is not None:
                    rec.result = f"rejected ({self._reject_reason(event)})"

        return handler

    def _on_close(self, event: Event) -> None:
        with self._lock:
            rec = self._records.pop(id(event.assoc), None)
        if rec is None:
            return
        done = ", ".join(f"{n} {what}" for what, n in sorted(rec.done.items())) or "nothing"
        if rec.result == "established":
            rec.result = "connection closed without release"
        log.info("dimse association peer=%s calling=%s called=%s did: %s; %s",
                 rec.peer, rec.calling, rec.called, done, rec.result)

    def handlers(self) -> list[Any]:
        return [
            (evt.EVT_ESTABLISHED, self._ended("established")),
            (evt.EVT_REJECTED, self._ended("rejected")),
            (evt.EVT_RELEASED, self._ended("released")),
            (evt.EVT_ABORTED, self._ended("aborted")),
            (evt.EVT_CONN_CLOSE, self._on_close),
        ]
