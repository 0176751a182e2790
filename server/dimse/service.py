"""The DIMSE service: one pynetdicom AE beside the HTTP server, sharing its services.

pynetdicom runs its own listener thread and one thread per association; every handler hands
its work to the app's event loop through ``LoopBridge``, so C-STORE and STOW-RS use the same
``Ingestor`` and C-FIND and QIDO-RS the same search service.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from server.config import Settings, is_loopback
from server.dimse import tuning
from server.dimse.assoclog import AssociationLog, called_title
from server.dimse.bridge import LoopBridge
from server.dimse.contexts import add_supported
from server.dimse.find import FindSCP
from server.dimse.peers import parse_allowed_aets, parse_known_aes
from server.dimse.retrieve import RetrieveSCP
from server.dimse.status import SUCCESS
from server.dimse.store import StoreSCP
from server.index.base import IndexStore
from server.services.ingest import Ingestor
from server.services.search import SearchService
from server.storage.base import BlobStore

log = logging.getLogger(__name__)

# Our maximum receive PDU: bigger PDUs mean fewer Python-level reads per instance.
MAX_PDU = 1 << 20


class DimseService:
    def __init__(self, settings: Settings, *, ingestor: Ingestor, index: IndexStore,
                 blobs: BlobStore, search: SearchService,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.ingestor = ingestor
        self.index = index
        self.blobs = blobs
        self.search = search
        self.bridge = LoopBridge(loop)
        self.allowed = parse_allowed_aets(settings.dimse_allowed_aets)
        self.known_aes = parse_known_aes(settings.dimse_known_aes)
        self.assoc_log = AssociationLog(self._reject_reason)
        self._server: ThreadedAssociationServer | None = None

    def _reject_reason(self, event: Event) -> str:
        calling = event.assoc.requestor.ae_title
        if self.allowed and calling not in self.allowed:
            return "calling AE title not allowed"
        if called_title(event) != self.settings.aet:
            return "called AE title mismatch"
        acceptors = [a for a in event.assoc.ae.active_associations if a.is_acceptor]
        if len(acceptors) > self.settings.dimse_max_associations:
            return "association limit reached"
        return "rejected"

    def _echo(self, event: Event) -> int:
        self.assoc_log.count(event, "C-ECHO")
        return SUCCESS

    def _handlers(self) -> list[Any]:
        store = StoreSCP(self.ingestor, self.assoc_log)
        find = FindSCP(self.search, self.bridge, self.assoc_log, self.settings.aet)
        retrieve = RetrieveSCP(self.search, self.index, self.blobs, self.bridge, self.assoc_log,
                               self.known_aes)
        return [
            (evt.EVT_C_ECHO, self._echo),
            (evt.EVT_C_STORE, store),
            (evt.EVT_C_FIND, find),
            (evt.EVT_C_MOVE, retrieve.move),
            (evt.EVT_C_GET, retrieve.get),
            *self.assoc_log.handlers(),
            (evt.EVT_CONN_OPEN, tuning.on_open),
            (evt.EVT_CONN_CLOSE, tuning.on_close),
        ]

    def start(self) -> None:
        # Process-wide pynetdicom switch: stream each received dataset to a file.
        _config.STORE_RECV_CHUNKED_DATASET = True
        tuning.install(self.blobs.spool_dir())
        # pynetdicom logs every message at INFO; our association line says what matters. Its
        # standard handlers would still format every PDU and message for that log (~0.3 ms per
        # C-STORE): they are not bound at all.
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        _config.LOG_HANDLER_LEVEL = "none"
        ae = AE(self.settings.aet)
        add_supported(ae)
        ae.maximum_pdu_size = MAX_PDU
        ae.maximum_associations = self.settings.dimse_max_associations
        ae.require_calling_aet = self.allowed
        ae.require_called_aet = True
        self._server = ae.start_server(
            (self.settings.host, self.settings.dimse_port), block=False,
            evt_handlers=self._handlers(),
        )
        log.info("DIMSE service %s listening on %s:%d", self.settings.aet, self.settings.host,
                 self.settings.dimse_port)
        if not self.allowed and not is_loopback(self.settings.host):
            # DICOM has no authentication of its own: AE titles and the network are the guard
            log.warning("WARNING: DIMSE on %s accepts any calling AE title; set "
                        "--dimse-allowed-aets (LIGHTBOX_DIMSE_ALLOWED_AETS)", self.settings.host)

    def stop(self) -> None:
        """Blocks until the associations end: call it from a worker thread, not the loop."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None


async def start_dimse(settings: Settings, state: Any) -> DimseService | None:
    """Start the DIMSE service when ``settings.dimse_port`` > 0 (``state``: the app's state)."""
    if settings.dimse_port <= 0:
        return None
    service = DimseService(
        settings, ingestor=state.ingestor, index=state.index, blobs=state.blobs,
        search=state.search, loop=asyncio.get_running_loop(),
    )
    service.start()
    return service


async def stop_dimse(service: DimseService | None) -> None:
    if service is not None:
        # in a thread: association threads may be waiting on this loop to finish a request
        await asyncio.to_thread(service.stop)
