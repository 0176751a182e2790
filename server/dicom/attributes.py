"""Attributes QIDO-RS matches and returns at each level (PS3.18 Table 10.6.3-3/-4/-5)."""

from __future__ import annotations

from functools import cache

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

# Returned by default (plus what OHIF reads: checklist §13). Computed ones are added by
# the query layer: ModalitiesInStudy, NumberOfStudyRelated*, NumberOfSeriesRelatedInstances,
# RetrieveURL.
PATIENT_TAGS = (
    0x00100010,  # PatientName
    0x00100020,  # PatientID
    0x00100021,  # IssuerOfPatientID
    0x00100030,  # PatientBirthDate
    0x00100040,  # PatientSex
)
STUDY_TAGS = (
    0x00080005,  # SpecificCharacterSet
    0x00080020,  # StudyDate
    0x00080030,  # StudyTime
    0x00080050,  # AccessionNumber
    0x00080056,  # InstanceAvailability
    0x00080090,  # ReferringPhysicianName
    0x00080201,  # TimezoneOffsetFromUTC
    0x00081030,  # StudyDescription
    0x0020000D,  # StudyInstanceUID
    0x00200010,  # StudyID
    *PATIENT_TAGS,
)
SERIES_TAGS = (
    0x00080005,  # SpecificCharacterSet
    0x00080021,  # SeriesDate
    0x00080031,  # SeriesTime
    0x00080060,  # Modality
    0x00080201,  # TimezoneOffsetFromUTC
    0x0008103E,  # SeriesDescription
    0x00180015,  # BodyPartExamined
    0x0020000D,  # StudyInstanceUID (OHIF needs it in series results)
    0x0020000E,  # SeriesInstanceUID
    0x00200011,  # SeriesNumber
    0x00200060,  # Laterality
    0x00400244,  # PerformedProcedureStepStartDate
    0x00400245,  # PerformedProcedureStepStartTime
    0x00400275,  # RequestAttributeSequence
)
INSTANCE_TAGS = (
    0x00080005,  # SpecificCharacterSet
    0x00080016,  # SOPClassUID
    0x00080018,  # SOPInstanceUID
    0x00080023,  # ContentDate
    0x00080033,  # ContentTime
    0x00080201,  # TimezoneOffsetFromUTC
    0x0020000D,  # StudyInstanceUID
    0x0020000E,  # SeriesInstanceUID
    0x00200013,  # InstanceNumber
    0x00280008,  # NumberOfFrames
    0x00280010,  # Rows
    0x00280011,  # Columns
    0x00280100,  # BitsAllocated
)

# Type 2 keys that appear even when absent from the file (QIDO-13).
STUDY_REQUIRED = (0x00080020, 0x00080030, 0x00080050, 0x00080090, 0x00100010, 0x00100020,
                  0x00100030, 0x00100040, 0x00200010)
SERIES_REQUIRED = (0x00080060, 0x00200011)
INSTANCE_REQUIRED = (0x00200013,)

MODALITIES_IN_STUDY = 0x00080061
STUDY_RELATED_SERIES = 0x00201206
STUDY_RELATED_INSTANCES = 0x00201208
SERIES_RELATED_INSTANCES = 0x00201209
RETRIEVE_URL = 0x00081190


def pick(doc: dict[str, object], tags: tuple[int, ...]) -> dict[str, object]:
    """The subset of a DICOM JSON dataset with these tags (keys stay sorted)."""
    out: dict[str, object] = {}
    for tag in sorted(set(tags)):
        key = f"{tag:08X}"
        if key in doc:
            out[key] = doc[key]
    return out


def parse_tag(name: str) -> int | None:
    """A keyword (``PatientID``) or 8-hex tag (``00100020``) to an int tag, else None."""
    if len(name) == 8:
        try:
            return int(name, 16)
        except ValueError:
            pass
    tag = tag_for_keyword(name)
    return int(tag) if tag is not None else None


def vr_of(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


@cache
def json_key(keyword: str) -> str:
    """The DICOM JSON key of a dictionary keyword: ``PatientID`` -> ``00100020``."""
    return f"{tag_for_keyword(keyword):08X}"


def keyword_of(tag: int) -> str:
    return keyword_for_tag(tag) or f"{tag:08X}"
