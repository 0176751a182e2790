"""C-FIND/C-MOVE/C-GET identifiers ↔ the search service's Query and DICOM JSON results.

Pure translation, no I/O, so the matching rules are the QIDO-RS ones (PS3.4 C.2.2.2,
C.4.1) and stay testable without a network peer.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from server.dimse.contexts import PATIENT_ROOT
from server.errors import LightboxError
from server.services.search import Level, Query

QR_LEVEL = 0x00080052
SPECIFIC_CHARSET = 0x00080005
RETRIEVE_AET = 0x00080054
INSTANCE_AVAILABILITY = 0x00080056
PATIENT_ID = 0x00100020
ISSUER_OF_PATIENT_ID = 0x00100021
PATIENT_RELATED_STUDIES = 0x00201200
PATIENT_RELATED_SERIES = 0x00201202
PATIENT_RELATED_INSTANCES = 0x00201204
STUDY_UID = 0x0020000D
SERIES_UID = 0x0020000E
SOP_UID = 0x00080018

DimseLevel = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]
SEARCH_LEVEL: dict[str, Level] = {"STUDY": "study", "SERIES": "series", "IMAGE": "instance"}
# Keys not matched: bookkeeping of the identifier itself, or answered by us
_NOT_MATCHED = frozenset({QR_LEVEL, SPECIFIC_CHARSET, RETRIEVE_AET, INSTANCE_AVAILABILITY})
_PATIENT_COUNTS = frozenset({PATIENT_RELATED_STUDIES, PATIENT_RELATED_SERIES,
                             PATIENT_RELATED_INSTANCES})


class IdentifierMismatch(LightboxError):
    """The identifier does not fit the information model (PS3.4 C.4.1.1.4: 0xA900)."""

    http_status = 400
    dicom_status = 0xA900


def query_level(identifier: Dataset, sop_class: object) -> DimseLevel:
    """The identifier's QueryRetrieveLevel, checked against the information model."""
    raw = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if raw not in {"PATIENT", "STUDY", "SERIES", "IMAGE"}:
        raise IdentifierMismatch(f"QueryRetrieveLevel {raw!r} is not PATIENT, STUDY, SERIES or IMAGE")
    if raw == "PATIENT" and str(sop_class) not in PATIENT_ROOT:
        raise IdentifierMismatch("the PATIENT level needs the Patient Root information model")
    return raw  # type: ignore[return-value]


def match_value(elem: DataElement) -> str | None:
    """An element's value as a DICOM match string; None for what cannot be matched."""
    value = elem.value
    if elem.VR in {"OB", "OW", "OD", "OF", "OL", "OV", "UN", "SQ"}:
        return None
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return None
    return str(value)


def _add_sequence(elem: DataElement, matches: dict[int, str],
                  seq_matches: dict[tuple[int, int], str]) -> None:
    matches[int(elem.tag)] = ""  # an empty sequence key asks for the sequence back
    if elem.value:
        for item_elem in elem.value[0]:
            value = match_value(item_elem)
            if value:
                seq_matches[(int(elem.tag), int(item_elem.tag))] = value


def identifier_query(identifier: Dataset, level: DimseLevel, *, offset: int = 0,
                     limit: int | None = None) -> Query:
    """The search Query for a C-FIND identifier (the PATIENT level searches studies).

    Every key in the identifier is a return key; those with a value are also matching keys
    (PS3.4 C.2.2.1). Keys at levels below the query level are ignored by the search."""
    matches: dict[int, str] = {}
    seq_matches: dict[tuple[int, int], str] = {}
    for elem in identifier:
        tag = int(elem.tag)
        if tag in _NOT_MATCHED or tag in _PATIENT_COUNTS or elem.tag.is_private:
            continue
        if level == "PATIENT" and elem.tag.group != 0x0010:
            continue  # only patient attributes select patients
        if elem.VR == "SQ":
            _add_sequence(elem, matches, seq_matches)
            continue
        value = match_value(elem)
        if value is not None:
            matches[tag] = value
    search_level: Level = "study" if level == "PATIENT" else SEARCH_LEVEL[level]
    return Query(level=search_level, matches=matches, seq_matches=seq_matches,
                 include=frozenset(matches), offset=offset, limit=limit)


def _return_keys(identifier: Dataset) -> list[DataElement]:
    return [e for e in identifier if int(e.tag) not in {QR_LEVEL, SPECIFIC_CHARSET}]


def response_identifier(identifier: Dataset, doc: dict[str, Any], level: DimseLevel,
                        aet: str) -> Dataset:
    """A C-FIND response: the requested keys, valued from the result (PS3.4 C.4.1.1.3.2)."""
    subset: dict[str, Any] = {}
    for elem in _return_keys(identifier):
        found = doc.get(f"{int(elem.tag):08X}")
        if found is not None and "BulkDataURI" not in found and "InlineBinary" not in found:
            subset[f"{int(elem.tag):08X}"] = found
    raw = orjson.dumps(subset)
    answer = Dataset.from_json(raw.decode()) if subset else Dataset()
    for elem in _return_keys(identifier):
        if elem.tag not in answer:
            answer.add(DataElement(elem.tag, elem.VR, [] if elem.VR == "SQ" else None))
    if INSTANCE_AVAILABILITY in identifier:
        answer.InstanceAvailability = "ONLINE"
    answer.QueryRetrieveLevel = level
    answer.RetrieveAETitle = aet
    if not raw.isascii():
        answer.SpecificCharacterSet = "ISO_IR 192"  # results are Unicode (UTF-8 on the wire)
    return answer


def patient_docs(study_docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Study results grouped into patients, with the patient-level counts (PS3.4 C.6.1.1.2)."""
    patients: dict[tuple[str, str], dict[str, Any]] = {}
    counts: dict[tuple[str, str], list[int]] = {}
    for doc in study_docs:
        key = (_first(doc, PATIENT_ID), _first(doc, ISSUER_OF_PATIENT_ID))
        if key not in patients:
            patients[key] = {k: v for k, v in doc.items() if k.startswith("0010")}
            counts[key] = [0, 0, 0]
        tally = counts[key]
        tally[0] += 1
        tally[1] += int(_first(doc, 0x00201206) or 0)
        tally[2] += int(_first(doc, 0x00201208) or 0)
    for key, patient in patients.items():
        for tag, n in zip((PATIENT_RELATED_STUDIES, PATIENT_RELATED_SERIES,
                           PATIENT_RELATED_INSTANCES), counts[key], strict=True):
            patient[f"{tag:08X}"] = {"vr": "IS", "Value": [n]}
    return list(patients.values())


def _first(doc: dict[str, Any], tag: int) -> str:
    values = doc.get(f"{tag:08X}", {}).get("Value") or [""]
    return str(values[0])


def uid_list(identifier: Dataset, keyword: str) -> list[str]:
    """The UIDs a retrieve identifier lists for its level's unique key."""
    value = identifier.get(keyword)
    if value is None or value == "":
        return []
    values = value if isinstance(value, MultiValue) else [value]
    return [str(v).strip() for v in values if str(v).strip()]
