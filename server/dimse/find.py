"""C-FIND SCP: Patient Root and Study Root, on the same search service as QIDO-RS."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from server.dimse.assoclog import AssociationLog
from server.dimse.bridge import LoopBridge
from server.dimse.identifiers import (
    DimseLevel,
    identifier_query,
    patient_docs,
    query_level,
    response_identifier,
)
from server.dimse.status import CANCEL, PENDING, query_status
from server.services.search import SearchService

log = logging.getLogger(__name__)

Reply = tuple[int | Dataset, Dataset | None]


def failure(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]  # LO
    return ds


class FindSCP:
    def __init__(self, search: SearchService, bridge: LoopBridge, assoc_log: AssociationLog,
                 aet: str) -> None:
        self.search = search
        self.bridge = bridge
        self.assoc_log = assoc_log
        self.aet = aet

    def pages(self, identifier: Dataset, level: DimseLevel) -> Iterator[list[dict[str, Any]]]:
        """Result pages (each at most the search's max_results) until nothing more matches."""
        offset = 0
        while True:
            query = identifier_query(identifier, level, offset=offset)
            result = self.bridge.run(self.search.search(query))
            if result.datasets:
                yield result.datasets
            offset += len(result.datasets)
            if not result.truncated or not result.datasets:
                return

    def __call__(self, event: Event) -> Iterator[Reply]:
        count, status = 0, ""
        try:
            identifier = event.identifier
            level = query_level(identifier, event.request.AffectedSOPClassUID)
            pages = self.pages(identifier, level)
            if level == "PATIENT":  # one patient's studies may span pages
                pages = iter([patient_docs([d for page in pages for d in page])])
            for page in pages:
                for doc in page:
                    if event.is_cancelled:
                        status = " cancelled"
                        yield CANCEL, None
                        return
                    count += 1
                    yield PENDING, response_identifier(identifier, doc, level, self.aet)
        except Exception as exc:
            code = query_status(exc)
            status = f" 0x{code:04X}"
            log.warning("C-FIND failed (0x%04X): %s", code, exc)
            yield failure(code, getattr(exc, "message", str(exc))), None
        finally:
            self.assoc_log.count(event, f"C-FIND{status}")
            self.assoc_log.count(event, "C-FIND matches", count)
