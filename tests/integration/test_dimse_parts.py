"""The DIMSE edge's pure parts: known-AE table, identifier ↔ Query, status mapping."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from server.dimse.identifiers import (
    IdentifierMismatch,
    identifier_query,
    patient_docs,
    query_level,
    response_identifier,
)
from server.dimse.peers import KnownAE, parse_allowed_aets, parse_known_aes
from server.dimse.status import store_status
from server.errors import BadRequest, Conflict, OutOfResources

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"


def test_known_aes_from_a_string() -> None:
    table = parse_known_aes("DEST@10.0.0.5:104, WS1@ws1.example:11112")
    assert table == {"DEST": KnownAE("DEST", "10.0.0.5", 104),
                     "WS1": KnownAE("WS1", "ws1.example", 11112)}


def test_known_aes_from_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "aes.json"
    path.write_text(json.dumps({"ARCHIVE": {"host": "pacs.local", "port": 4242}}))
    assert parse_known_aes(str(path)) == {"ARCHIVE": KnownAE("ARCHIVE", "pacs.local", 4242)}


@pytest.mark.parametrize("spec", ["DEST@host", "DEST", "WAY-TOO-LONG-AE-TITLE@h:1", "D@h:0", "D@h:x"])
def test_bad_known_ae_entries_are_refused(spec: str) -> None:
    with pytest.raises(BadRequest):
        parse_known_aes(spec)


def test_allowed_aets_are_trimmed_and_empty_means_any() -> None:
    assert parse_allowed_aets(" CT1 ,MR2,") == ["CT1", "MR2"]
    assert parse_allowed_aets("") == []


def _identifier(**keys: object) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_every_key_is_returned_and_valued_keys_match() -> None:
    ds = _identifier(QueryRetrieveLevel="SERIES", StudyInstanceUID="1.2.3", Modality="CT",
                     SeriesDescription="", SpecificCharacterSet="ISO_IR 100")
    query = identifier_query(ds, query_level(ds, STUDY_ROOT_FIND))
    assert query.level == "series"
    assert query.matches == {0x0020000D: "1.2.3", 0x00080060: "CT", 0x0008103E: ""}


def test_uid_lists_become_backslash_lists() -> None:
    ds = _identifier(QueryRetrieveLevel="IMAGE", SOPInstanceUID=["1.2.3", "1.2.4"])
    assert identifier_query(ds, "IMAGE").matches[0x00080018] == "1.2.3\\1.2.4"


def test_patient_level_matches_only_patient_attributes() -> None:
    ds = _identifier(QueryRetrieveLevel="PATIENT", PatientID="P1", StudyDate="20240101",
                     NumberOfPatientRelatedStudies=None)
    query = identifier_query(ds, query_level(ds, PATIENT_ROOT_FIND))
    assert query.level == "study" and query.matches == {0x00100020: "P1"}


@pytest.mark.parametrize(("level", "model"), [("PATIENT", STUDY_ROOT_FIND), ("FRAME", STUDY_ROOT_FIND),
                                              ("", PATIENT_ROOT_FIND)])
def test_levels_outside_the_model_do_not_match_it(level: str, model: str) -> None:
    with pytest.raises(IdentifierMismatch) as info:
        query_level(_identifier(QueryRetrieveLevel=level), model)
    assert info.value.dicom_status == 0xA900


def test_response_has_exactly_the_requested_keys() -> None:
    request = _identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientName="",
                          AccessionNumber="")
    doc = {"0020000D": {"vr": "UI", "Value": ["1.2.3"]},
           "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jörg"}]},
           "00080020": {"vr": "DA", "Value": ["20240101"]}}
    answer = response_identifier(request, doc, "STUDY", "LIGHTBOX")
    assert answer.StudyInstanceUID == "1.2.3"
    assert str(answer.PatientName) == "Müller^Jörg"
    assert answer.AccessionNumber in ("", None)  # asked for, not stored: returned empty
    assert "StudyDate" not in answer  # stored, not asked for
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert answer.RetrieveAETitle == "LIGHTBOX" and answer.QueryRetrieveLevel == "STUDY"


def test_patients_are_grouped_from_studies_with_counts() -> None:
    def study(pid: str, series: int, instances: int) -> dict[str, object]:
        return {"00100020": {"vr": "LO", "Value": [pid]},
                "00201206": {"vr": "IS", "Value": [series]},
                "00201208": {"vr": "IS", "Value": [instances]},
                "0020000D": {"vr": "UI", "Value": ["1.2"]}}

    patients = patient_docs([study("A", 2, 10), study("B", 1, 1), study("A", 1, 5)])
    a = next(p for p in patients if p["00100020"]["Value"] == ["A"])  # type: ignore[index]
    assert a["00201200"]["Value"] == [2] and a["00201202"]["Value"] == [3]  # type: ignore[index]
    assert a["00201204"]["Value"] == [15]  # type: ignore[index]
    assert "0020000D" not in a and len(patients) == 2


@pytest.mark.parametrize(
    ("exc", "status"),
    [(BadRequest("bad"), 0xC000), (Conflict("mismatch"), 0xA900),
     (Conflict("dup", dicom_status=0x0111), 0x0111), (OutOfResources("busy"), 0xA700),
     (OSError(errno.ENOSPC, "disk full"), 0xA700), (RuntimeError("bug"), 0x0110)],
)
def test_store_failures_map_to_ps3_4_statuses(exc: BaseException, status: int) -> None:
    assert store_status(exc) == status
