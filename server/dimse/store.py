"""C-STORE SCP: the received dataset is already a Part-10 file; hand it to the shared ingest.

pynetdicom's chunked mode (``STORE_RECV_CHUNKED_DATASET``) writes the preamble, the File
Meta Information and then each P-DATA fragment straight to a file in the store's spool folder
(``tuning.install``), so pixels are never decoded nor held in memory, and ingest renames it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from server.dimse.assoclog import AssociationLog
from server.dimse.status import SUCCESS, store_status
from server.services.ingest import Ingestor

log = logging.getLogger(__name__)


class StoreSCP:
    def __init__(self, ingestor: Ingestor, assoc_log: AssociationLog) -> None:
        self.ingestor = ingestor
        self.assoc_log = assoc_log

    def __call__(self, event: Event) -> int:
        status = self._store(event)
        self.assoc_log.count(event, "C-STORE ok" if status == SUCCESS else f"C-STORE 0x{status:04X}")
        return status

    def _store(self, event: Event) -> int:
        request = cast(C_STORE, event.request)
        try:
            path = Path(event.dataset_path)  # in the store's spool folder (tuning.install)
            # pynetdicom already runs this in the association's own thread: ingest right here.
            # PS3.4 B.2.3: the dataset must be the instance the command announces (else 0xA900).
            self.ingestor.ingest_sync(
                path, expected_sop=(str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID))
            )
            return SUCCESS
        except Exception as exc:
            status = store_status(exc)
            log.warning("C-STORE of %s failed (0x%04X): %s",
                        request.AffectedSOPInstanceUID, status, exc)
            return status
