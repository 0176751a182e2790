"""C-STORE SCP: the received dataset is already a Part-10 file; hand it to the shared ingest.

pynetdicom's chunked mode (``STORE_RECV_CHUNKED_DATASET``) writes the preamble, the File
Meta Information and then each P-DATA fragment straight to a temp file, so pixels are never
decoded and never held in memory.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import cast

from pydicom.filereader import read_partial
from pydicom.tag import BaseTag
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from server.dimse.assoclog import AssociationLog
from server.dimse.bridge import LoopBridge
from server.dimse.status import IDENTIFIER_MISMATCH, SUCCESS, store_status
from server.errors import BadRequest
from server.services.ingest import Ingestor

log = logging.getLogger(__name__)

_SOP_INSTANCE_UID = 0x00080018


def _past_sop_uids(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return int(tag) > _SOP_INSTANCE_UID


def dataset_identifiers(path: Path) -> tuple[str, str]:
    """(SOPClassUID, SOPInstanceUID) of a Part-10 file, reading only up to (0008,0018)."""
    try:
        with open(path, "rb") as f:
            ds = read_partial(f, stop_when=_past_sop_uids)
    except Exception as exc:  # whatever a malformed dataset trips over
        raise BadRequest(f"cannot read the dataset: {exc}") from exc
    return str(ds.get("SOPClassUID", "") or ""), str(ds.get("SOPInstanceUID", "") or "")


def _take(source: Path, spool: Path) -> Path:
    """Move pynetdicom's temp file into the store's spool dir so ingest can rename it."""
    target = spool / f"dimse-{uuid.uuid4().hex}.dcm"
    try:
        os.replace(source, target)
    except OSError:  # another filesystem
        shutil.move(source, target)
    return target


class StoreSCP:
    def __init__(self, ingestor: Ingestor, spool: Path, bridge: LoopBridge,
                 assoc_log: AssociationLog) -> None:
        self.ingestor = ingestor
        self.spool = spool
        self.bridge = bridge
        self.assoc_log = assoc_log

    def __call__(self, event: Event) -> int:
        status = self._store(event)
        self.assoc_log.count(event, "C-STORE ok" if status == SUCCESS else f"C-STORE 0x{status:04X}")
        return status

    def _store(self, event: Event) -> int:
        request = cast(C_STORE, event.request)
        path: Path | None = None
        try:
            path = _take(event.dataset_path, self.spool)
            sop_class, sop = dataset_identifiers(path)
            # PS3.4 B.2.3: the dataset must be the instance the command announces
            if sop != request.AffectedSOPInstanceUID or sop_class != request.AffectedSOPClassUID:
                log.warning("C-STORE identifier mismatch: command %s/%s, dataset %s/%s",
                            request.AffectedSOPClassUID, request.AffectedSOPInstanceUID,
                            sop_class, sop)
                return IDENTIFIER_MISMATCH
            self.bridge.run(self.ingestor.ingest(path))
            path = None  # ingest consumed it
            return SUCCESS
        except Exception as exc:
            status = store_status(exc)
            log.warning("C-STORE of %s failed (0x%04X): %s",
                        request.AffectedSOPInstanceUID, status, exc)
            return status
        finally:
            if path is not None:
                path.unlink(missing_ok=True)
