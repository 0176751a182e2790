"""What the index records of one instance, read from its header (no pixel data)."""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydicom.dataset import Dataset

from server.dicom import attributes as A
from server.dicom.json_model import PIXEL_TAGS, dataset_to_doc
from server.dicom.uids import require_uid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceRecord:
    """Everything the index stores about one instance, ready to insert."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    # patient
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    # study
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician_name: str
    # series
    modality: str
    series_number: int | None
    series_description: str
    series_date: str
    body_part: str
    # instance
    instance_number: int | None
    rows: int | None
    columns: int | None
    bits_allocated: int | None
    number_of_frames: int
    pixel_tag: int | None
    metadata_json: bytes
    study_json: bytes
    series_json: bytes
    instance_json: bytes
    extended_offsets: list[int] | None = field(default=None)
    # The DICOM JSON as a document (metadata_json's source): read it, never change it.
    doc: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def normalize_name(value: str) -> str:
    """Case- and accent-insensitive key for PN matching: upper case, no diacritics, and
    name components separated by single spaces with a leading space, so that a component
    prefix is ``LIKE '% PREFIX%'``."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    parts = [p for p in stripped.upper().replace("^", " ").replace("=", " ").split() if p]
    return " " + " ".join(parts)


# The record's values come from the DICOM JSON just built, not from pydicom again: reading
# ~25 attributes through Dataset.get costs more than the JSON conversion of all of them.
_KEYS = {kw: A.json_key(kw) for kw in (
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "PatientID",
    "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "AccessionNumber", "StudyID", "StudyDescription", "ReferringPhysicianName", "Modality",
    "SeriesNumber", "SeriesDescription", "SeriesDate", "BodyPartExamined", "InstanceNumber", "Rows",
    "Columns", "BitsAllocated", "NumberOfFrames",
)}


def _uid(ds: Dataset, keyword: str) -> str:
    """The four identifying UIDs are read (and validated) before the JSON, which needs them."""
    try:
        return str(ds.get(keyword) or "").strip()
    except Exception:  # a malformed value: require_uid names it
        return ""


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):  # PN: its component groups, as in the DICOM string form
        groups = (value.get("Alphabetic", ""), value.get("Ideographic", ""), value.get("Phonetic", ""))
        return "=".join(groups).rstrip("=")
    return str(value)


def _text(doc: dict[str, Any], keyword: str) -> str:
    values = (doc.get(_KEYS[keyword]) or {}).get("Value") or []
    if len(values) == 1:
        return _as_text(values[0]).strip()
    return "\\".join(_as_text(v) for v in values)


def _date(doc: dict[str, Any], keyword: str) -> str:
    """A DA as YYYYMMDD for range matching (ACR-NEMA ``YYYY.MM.DD`` is still met)."""
    value = _text(doc, keyword)
    return value.replace(".", "") if len(value) == 10 and value[4] == value[7] == "." else value


def _time(doc: dict[str, Any], keyword: str) -> str:
    """A TM as HHMMSS.FFFFFF for range matching (ACR-NEMA ``HH:MM:SS`` is still met)."""
    return _text(doc, keyword).replace(":", "")


def _int(doc: dict[str, Any], keyword: str) -> int | None:
    values = (doc.get(_KEYS[keyword]) or {}).get("Value") or []
    try:
        return int(values[0]) if len(values) == 1 and values[0] not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _level_json(doc: dict[str, Any], tags: tuple[int, ...], required: tuple[int, ...]) -> bytes:
    out = A.pick(doc, tags)
    for tag in required:
        key = f"{tag:08X}"
        if key not in out:
            vr = A.vr_of(tag) or "UN"
            out[key] = {"vr": vr}
    return orjson.dumps(dict(sorted(out.items())))


def instance_path(study: str, series: str, sop: str) -> str:
    return f"/studies/{study}/series/{series}/instances/{sop}"


def record_from_header(ds: Dataset, pixel_tag: int | None) -> InstanceRecord:
    """Validate the identifying UIDs and build the record. ``ds`` is read without pixels."""
    meta = getattr(ds, "file_meta", None)
    study = require_uid(_uid(ds, "StudyInstanceUID"), "StudyInstanceUID")
    series = require_uid(_uid(ds, "SeriesInstanceUID"), "SeriesInstanceUID")
    sop = require_uid(_uid(ds, "SOPInstanceUID"), "SOPInstanceUID")
    sop_class = require_uid(_uid(ds, "SOPClassUID"), "SOPClassUID")
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "")
    require_uid(ts, "TransferSyntaxUID")
    media_sop = str(getattr(meta, "MediaStorageSOPInstanceUID", "") or "")
    if media_sop and media_sop != sop:
        # Common in real archives; the dataset's own SOPInstanceUID is the identity we index.
        log.warning("MediaStorageSOPInstanceUID %s differs from SOPInstanceUID %s", media_sop, sop)
    path = instance_path(study, series, sop)
    doc = dataset_to_doc(ds, path, pixel_tag)  # read as it is: no JSON round trip
    metadata = orjson.dumps(doc)
    frames = _int(doc, "NumberOfFrames") or 1
    eot = None
    if "ExtendedOffsetTable" in ds:
        raw = bytes(ds.ExtendedOffsetTable)
        eot = [int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), 8)]
    return InstanceRecord(
        study_uid=study,
        series_uid=series,
        sop_uid=sop,
        sop_class_uid=sop_class,
        transfer_syntax=ts,
        patient_id=_text(doc, "PatientID"),
        issuer_of_patient_id=_text(doc, "IssuerOfPatientID"),
        patient_name=_text(doc, "PatientName"),
        patient_birth_date=_date(doc, "PatientBirthDate"),
        patient_sex=_text(doc, "PatientSex"),
        study_date=_date(doc, "StudyDate"),
        study_time=_time(doc, "StudyTime"),
        accession_number=_text(doc, "AccessionNumber"),
        study_id=_text(doc, "StudyID"),
        study_description=_text(doc, "StudyDescription"),
        referring_physician_name=_text(doc, "ReferringPhysicianName"),
        modality=_text(doc, "Modality"),
        series_number=_int(doc, "SeriesNumber"),
        series_description=_text(doc, "SeriesDescription"),
        series_date=_date(doc, "SeriesDate"),
        body_part=_text(doc, "BodyPartExamined"),
        instance_number=_int(doc, "InstanceNumber"),
        rows=_int(doc, "Rows"),
        columns=_int(doc, "Columns"),
        bits_allocated=_int(doc, "BitsAllocated"),
        number_of_frames=frames,
        pixel_tag=pixel_tag,
        metadata_json=metadata,
        study_json=_level_json(doc, A.STUDY_TAGS, A.STUDY_REQUIRED),
        series_json=_level_json(doc, A.SERIES_TAGS, A.SERIES_REQUIRED),
        instance_json=_level_json(doc, A.INSTANCE_TAGS, A.INSTANCE_REQUIRED),
        extended_offsets=eot,
        doc=doc,
    )


__all__ = ["PIXEL_TAGS", "InstanceRecord", "instance_path", "normalize_name", "record_from_header"]
