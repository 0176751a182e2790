"""What the index records of one instance, read from its header (no pixel data)."""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydicom.dataset import Dataset

from server.dicom import attributes as A
from server.dicom.json_model import PIXEL_TAGS, dataset_to_json
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


def normalize_name(value: str) -> str:
    """Case- and accent-insensitive key for PN matching: upper case, no diacritics, and
    name components separated by single spaces with a leading space, so that a component
    prefix is ``LIKE '% PREFIX%'``."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    parts = [p for p in stripped.upper().replace("^", " ").replace("=", " ").split() if p]
    return " " + " ".join(parts)


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:
        return ""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _date(ds: Dataset, keyword: str) -> str:
    """A DA as YYYYMMDD for range matching (ACR-NEMA ``YYYY.MM.DD`` is still met)."""
    value = _text(ds, keyword)
    return value.replace(".", "") if len(value) == 10 and value[4] == value[7] == "." else value


def _time(ds: Dataset, keyword: str) -> str:
    """A TM as HHMMSS.FFFFFF for range matching (ACR-NEMA ``HH:MM:SS`` is still met)."""
    return _text(ds, keyword).replace(":", "")


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
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
    study = require_uid(_text(ds, "StudyInstanceUID"), "StudyInstanceUID")
    series = require_uid(_text(ds, "SeriesInstanceUID"), "SeriesInstanceUID")
    sop = require_uid(_text(ds, "SOPInstanceUID"), "SOPInstanceUID")
    sop_class = require_uid(_text(ds, "SOPClassUID"), "SOPClassUID")
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "")
    require_uid(ts, "TransferSyntaxUID")
    media_sop = str(getattr(meta, "MediaStorageSOPInstanceUID", "") or "")
    if media_sop and media_sop != sop:
        # Common in real archives; the dataset's own SOPInstanceUID is the identity we index.
        log.warning("MediaStorageSOPInstanceUID %s differs from SOPInstanceUID %s", media_sop, sop)
    path = instance_path(study, series, sop)
    metadata = dataset_to_json(ds, path, pixel_tag)
    doc = orjson.loads(metadata)
    frames = _int(ds, "NumberOfFrames") or 1
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
        patient_id=_text(ds, "PatientID"),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
        patient_name=_text(ds, "PatientName"),
        patient_birth_date=_date(ds, "PatientBirthDate"),
        patient_sex=_text(ds, "PatientSex"),
        study_date=_date(ds, "StudyDate"),
        study_time=_time(ds, "StudyTime"),
        accession_number=_text(ds, "AccessionNumber"),
        study_id=_text(ds, "StudyID"),
        study_description=_text(ds, "StudyDescription"),
        referring_physician_name=_text(ds, "ReferringPhysicianName"),
        modality=_text(ds, "Modality"),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"),
        series_date=_date(ds, "SeriesDate"),
        body_part=_text(ds, "BodyPartExamined"),
        instance_number=_int(ds, "InstanceNumber"),
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        bits_allocated=_int(ds, "BitsAllocated"),
        number_of_frames=frames,
        pixel_tag=pixel_tag,
        metadata_json=metadata,
        study_json=_level_json(doc, A.STUDY_TAGS, A.STUDY_REQUIRED),
        series_json=_level_json(doc, A.SERIES_TAGS, A.SERIES_REQUIRED),
        instance_json=_level_json(doc, A.INSTANCE_TAGS, A.INSTANCE_REQUIRED),
        extended_offsets=eot,
    )


__all__ = ["PIXEL_TAGS", "InstanceRecord", "instance_path", "normalize_name", "record_from_header"]
