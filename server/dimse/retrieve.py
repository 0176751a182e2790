"""C-MOVE and C-GET SCP: resolve the identifier to stored instances, send them by C-STORE.

C-MOVE opens a new association to a destination from the known-AE table (PS3.4 C.4.2);
C-GET sends over the requestor's own association (PS3.4 C.4.3). Each instance is read from
its blob when its turn comes, so a large study is never held in memory at once.
"""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context

from server.dicom.uids import EXPLICIT_VR_LE, IMPLICIT_VR_LE
from server.dimse.assoclog import AssociationLog
from server.dimse.bridge import LoopBridge
from server.dimse.identifiers import (
    SERIES_UID,
    SOP_UID,
    STUDY_UID,
    DimseLevel,
    IdentifierMismatch,
    identifier_query,
    query_level,
    uid_list,
)
from server.dimse.peers import KnownAE
from server.dimse.status import CANCEL, PENDING
from server.errors import NotFound
from server.index.base import IndexStore, StoredInstance
from server.services.search import Query, SearchService
from server.services.transcode import instance_as
from server.storage.base import BlobStore

log = logging.getLogger(__name__)

# PS3.8 9.3.2.2: at most 128 presentation contexts in one association request
MAX_CONTEXTS = 128
# pynetdicom counts a non-Dataset "pending" yield as a failed sub-operation and goes on
UNREADABLE = "unreadable"
UNCOMPRESSED = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)


def store_contexts(instances: list[StoredInstance]) -> list[PresentationContext]:
    """Contexts for a C-MOVE destination: each (SOP Class, stored syntax) on its own, so the
    peer can take it as stored, and per SOP Class an uncompressed one to fall back to."""
    exact: dict[tuple[str, str], None] = {}
    for inst in instances:
        exact[(inst.sop_class_uid, inst.transfer_syntax)] = None
    contexts = [build_context(c, [ts]) for c, ts in exact if ts not in UNCOMPRESSED]
    for sop_class in dict.fromkeys(c for c, _ in exact):
        contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
    return contexts[:MAX_CONTEXTS]


def accepted_syntaxes(associations: list[Association], sop_class: str) -> set[str]:
    """Transfer syntaxes we may send ``sop_class`` in as Storage SCU on these associations."""
    return {
        str(cx.transfer_syntax[0])
        for assoc in associations
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == sop_class and cx.as_scu
    }


def dataset_for(path: Path, stored: str, accepted: set[str]) -> Dataset:
    """The instance as the peer can take it: as stored, else decompressed (or byte-swapped)
    to Explicit VR Little Endian; pynetdicom converts that to Implicit VR LE if need be."""
    if stored in accepted or not accepted & set(UNCOMPRESSED):
        return dcmread(path)
    return dcmread(io.BytesIO(instance_as(path, stored, EXPLICIT_VR_LE)))


class RetrieveSCP:
    def __init__(self, search: SearchService, index: IndexStore, blobs: BlobStore,
                 bridge: LoopBridge, assoc_log: AssociationLog,
                 known_aes: dict[str, KnownAE]) -> None:
        self.search = search
        self.index = index
        self.blobs = blobs
        self.bridge = bridge
        self.assoc_log = assoc_log
        self.known_aes = known_aes

    # ---------------------------------------------------------------- resolving

    async def _all(self, query: Query) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        while True:
            result = await self.search.search(replace(query, offset=len(docs)))
            docs += result.datasets
            if not result.truncated or not result.datasets:
                return docs

    async def resolve(self, identifier: Dataset, level: DimseLevel) -> list[StoredInstance]:
        """The stored instances a retrieve identifier names (its level's unique keys)."""
        keyword = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID",
                   "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}[level]
        keys = uid_list(identifier, keyword)
        if not keys:
            # PS3.4 C.4.2.2.1: the unique key of the retrieve level is required
            raise IdentifierMismatch(f"the identifier has no {keyword} for the {level} level")
        out: list[StoredInstance] = []
        if level in {"PATIENT", "STUDY"}:
            studies = keys
            if level == "PATIENT":
                patient = Dataset()
                patient.PatientID = keys[0]
                docs = await self._all(identifier_query(patient, "PATIENT"))
                studies = [_value(d, STUDY_UID) for d in docs]
            for study in studies:
                out += await self._listed(study, None)
            return out
        docs = await self._all(identifier_query(_unique_keys(identifier, level), level))
        for doc in docs:
            study, series = _value(doc, STUDY_UID), _value(doc, SERIES_UID)
            if level == "SERIES":
                out += await self._listed(study, series)
                continue
            try:
                out.append(await self.index.get_instance(study, series, _value(doc, SOP_UID)))
            except NotFound:  # deleted since the search
                continue
        return out

    async def _listed(self, study: str, series: str | None) -> list[StoredInstance]:
        try:
            return await self.index.list_instances(study, series)
        except NotFound:
            return []

    # ---------------------------------------------------------------- sending

    def _dataset(self, inst: StoredInstance, peers: Callable[[], list[Association]]) -> Any:
        try:
            accepted = accepted_syntaxes(peers(), inst.sop_class_uid)
            path = self.blobs.local_path(inst.blob_key)
            if path is not None:
                return dataset_for(path, inst.transfer_syntax, accepted)
            with tempfile.NamedTemporaryFile(dir=self.blobs.spool_dir(), suffix=".dcm") as f:
                f.write(self.bridge.run(self.blobs.read_range(inst.blob_key, 0, inst.file_size)))
                f.flush()
                return dataset_for(Path(f.name), inst.transfer_syntax, accepted)
        except Exception as exc:
            log.warning("cannot send instance %s: %s", inst.sop_uid, exc)
            return UNREADABLE

    def _sub_operations(self, event: Event, instances: list[StoredInstance],
                        peers: Callable[[], list[Association]]) -> Iterator[Any]:
        for inst in instances:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, self._dataset(inst, peers)

    def _instances(self, event: Event, what: str) -> list[StoredInstance]:
        identifier = event.identifier
        level = query_level(identifier, event.request.AffectedSOPClassUID)
        instances = self.bridge.run(self.resolve(identifier, level))
        self.assoc_log.count(event, f"{what} instances matched", len(instances))
        return instances

    def move(self, event: Event) -> Iterator[Any]:
        self.assoc_log.count(event, "C-MOVE")
        destination = self.known_aes.get(str(event.move_destination or "").strip())
        if destination is None:
            log.warning("C-MOVE to unknown destination %r", event.move_destination)
            self.assoc_log.count(event, "C-MOVE 0xA801")
            yield None, None  # pynetdicom answers 0xA801, move destination unknown
            return
        instances = self._instances(event, "C-MOVE")  # an error here: 0xC5xx, unable to process
        yield destination.host, destination.port, {"contexts": store_contexts(instances)}
        yield len(instances)

        def store_association() -> list[Association]:
            # pynetdicom opens it after our first yields and does not hand it to us: it is our
            # AE's requestor association to the destination
            return [a for a in event.assoc.ae.active_associations
                    if a.is_requestor and a.is_established
                    and a.acceptor.ae_title == destination.title]

        yield from self._sub_operations(event, instances, store_association)

    def get(self, event: Event) -> Iterator[Any]:
        self.assoc_log.count(event, "C-GET")
        instances = self._instances(event, "C-GET")
        yield len(instances)
        yield from self._sub_operations(event, instances, lambda: [event.assoc])


def _value(doc: dict[str, Any], tag: int) -> str:
    values = doc.get(f"{tag:08X}", {}).get("Value") or [""]
    return str(values[0])


def _unique_keys(identifier: Dataset, level: DimseLevel) -> Dataset:
    """Only the unique keys: a retrieve selects by UIDs, other attributes are ignored."""
    keep = {"SERIES": ("StudyInstanceUID", "SeriesInstanceUID"),
            "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}[level]
    out = Dataset()
    for keyword in keep:
        if keyword in identifier and identifier.get(keyword):
            setattr(out, keyword, identifier.get(keyword))
    return out
