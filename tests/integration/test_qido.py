"""QIDO-RS over HTTP against a real server: resources, parameters, media types, charsets."""

from __future__ import annotations

import email
import email.policy
import io
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from tests.conftest import (
    SAMPLES,
    RunningServer,
    import_files,
    multipart_body,
    series_from,
    start_server,
    stow_headers,
)

ROOT = "1.2.826.0.1.3680043.9.7433.98"
S1, S2, S3 = f"{ROOT}.1", f"{ROOT}.2", f"{ROOT}.3"
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
# study, patient name, id, date, time, accession, [(modality, instances)]
STUDIES = [
    (S1, "Doe^John", "P1", "20200115", "101500", "A%1", [("CT", 3), ("SR", 1)]),
    (S2, "Müller^Jürgen", "380/26", "20210301", "235900", "A_2", [("MR", 2)]),
    (S3, "Núñez^José", "P3", "20221010", "080000.25", "A33", [("US", 1)]),
]
N_SERIES, N_INSTANCES = 4, 7


def _write(folder: Path) -> None:
    for study, name, pid, date, time, accession, series in STUDIES:
        for n, (modality, count) in enumerate(series, start=1):
            for i in range(1, count + 1):
                ds = Dataset()
                ds.file_meta = FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds.file_meta.MediaStorageSOPClassUID = CT_CLASS
                ds.file_meta.MediaStorageSOPInstanceUID = f"{study}.{n}.{i}"
                ds.SpecificCharacterSet = "ISO_IR 192"
                ds.SOPClassUID, ds.SOPInstanceUID = CT_CLASS, f"{study}.{n}.{i}"
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study, f"{study}.{n}"
                ds.PatientName, ds.PatientID, ds.StudyDate, ds.StudyTime = name, pid, date, time
                ds.AccessionNumber = accession
                if n == 1:
                    item = Dataset()
                    item.RequestedProcedureID = f"RP-{pid}"
                    ds.RequestAttributesSequence = [item]
                ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, n, i
                ds.StudyDescription, ds.InstitutionName = f"{series[0][0]} study", "General Hospital"
                ds.save_as(folder / f"{study}.{n}.{i}.dcm", enforce_file_format=True)


@pytest.fixture(scope="module")
def archive() -> Iterator[RunningServer]:
    tmp = Path(tempfile.mkdtemp(prefix="lightbox-qido-"))
    (tmp / "in").mkdir()
    _write(tmp / "in")
    import_files(tmp / "data", [tmp / "in"])
    server = start_server(tmp / "data")
    yield server
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def get(server: RunningServer, path: str, params: Any = None, **headers: str) -> httpx.Response:
    return httpx.get(server.dicomweb + path, params=params, headers=headers, timeout=30)


def uids(response: httpx.Response, key: str = "0020000D") -> list[str]:
    assert response.status_code == 200, response.text
    return [d[key]["Value"][0] for d in response.json()]


def warnings(response: httpx.Response) -> list[str]:
    return response.headers.get_list("warning")


# ---------------------------------------------------------------- resources


@pytest.mark.parametrize(("path", "count"), [
    ("/studies", 3), ("/series", N_SERIES), ("/instances", N_INSTANCES),
    (f"/studies/{S1}/series", 2), (f"/studies/{S1}/instances", 4), (f"/studies/{S1}/series/{S1}.1/instances", 3),
])
def test_every_resource_answers_dicom_json(archive: RunningServer, path: str, count: int) -> None:
    r = get(archive, path)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/dicom+json"
    assert len(r.json()) == count


def test_unknown_parent_is_an_empty_list(archive: RunningServer) -> None:
    r = get(archive, "/studies/9.9.9/series")
    assert (r.status_code, r.json()) == (200, [])


def test_malformed_parent_uid_is_bad_request(archive: RunningServer) -> None:
    assert get(archive, "/studies/not-a-uid/series").status_code == 400


def test_retrieve_urls_point_at_each_level(archive: RunningServer) -> None:
    study = get(archive, "/studies", {"StudyInstanceUID": S1}).json()[0]
    series = get(archive, f"/studies/{S1}/series", {"SeriesNumber": "1"}).json()[0]
    inst = get(archive, f"/studies/{S1}/series/{S1}.1/instances", {"InstanceNumber": "2"}).json()[0]
    assert study["00081190"]["Value"] == [f"{archive.dicomweb}/studies/{S1}"]
    assert series["00081190"]["Value"] == [f"{archive.dicomweb}/studies/{S1}/series/{S1}.1"]
    assert inst["00081190"]["Value"] == [f"{archive.dicomweb}/studies/{S1}/series/{S1}.1/instances/{S1}.1.2"]


def test_study_counts_and_modalities(archive: RunningServer) -> None:
    doc = get(archive, "/studies", {"PatientID": "P1"}).json()[0]
    assert doc["00080061"]["Value"] == ["CT", "SR"]
    assert (doc["00201206"]["Value"], doc["00201208"]["Value"]) == ([2], [4])


# ---------------------------------------------------------------- matching over HTTP


def test_keyword_and_tag_forms_are_the_same_key(archive: RunningServer) -> None:
    assert uids(get(archive, "/studies", {"00100020": "P1"})) == uids(get(archive, "/studies", {"PatientID": "P1"}))
    assert uids(get(archive, "/studies", {"00100020": "P1"})) == [S1]


def test_percent_decoded_values_with_utf8_and_slash(archive: RunningServer) -> None:
    assert uids(get(archive, "/studies?PatientName=M%C3%BCller%2A")) == [S2]
    assert uids(get(archive, "/studies?00100020=380%2F26")) == [S2]


def test_fuzzy_matching_over_http(archive: RunningServer) -> None:
    assert uids(get(archive, "/studies", {"PatientName": "jose", "fuzzymatching": "true"})) == [S3]
    assert uids(get(archive, "/studies", {"PatientName": "jose", "fuzzymatching": "false"})) == []


def test_uid_lists_comma_backslash_and_repeated(archive: RunningServer) -> None:
    assert sorted(uids(get(archive, "/studies", {"StudyInstanceUID": f"{S1},{S3}"}))) == [S1, S3]
    assert sorted(uids(get(archive, f"/studies?StudyInstanceUID={S1}%5C{S3}"))) == [S1, S3]
    r = get(archive, f"/studies/{S1}/series?SeriesInstanceUID={S1}.1&SeriesInstanceUID={S1}.2")
    assert sorted(uids(r, "0020000E")) == [f"{S1}.1", f"{S1}.2"]


def test_date_range_and_modalities_in_study(archive: RunningServer) -> None:
    assert uids(get(archive, "/studies", {"StudyDate": "20210101-", "ModalitiesInStudy": "MR"})) == [S2]


# One row per matching rule (PS3.4 C.2.2.2), each over HTTP with the raw query string.
RULES = [
    ("single value", "/studies?PatientID=P1", [S1]),
    ("single value is case-sensitive", "/studies?PatientID=p1", []),
    ("by tag", "/studies?00100020=P3", [S3]),
    ("universal", "/studies?PatientID=", [S1, S2, S3]),
    ("universal star", "/studies?AccessionNumber=*", [S1, S2, S3]),
    ("trailing wildcard", "/studies?PatientID=P*", [S1, S3]),
    ("single-character wildcard", "/studies?AccessionNumber=A3?", [S3]),
    ("leading wildcard", "/studies?PatientName=*%C3%BC*", [S2]),
    ("% is literal", "/studies?AccessionNumber=A%251", [S1]),
    ("_ is literal", "/studies?AccessionNumber=A_*", [S2]),
    ("% never a wildcard", "/studies?AccessionNumber=A%25", []),
    ("UID list, comma", f"/studies?StudyInstanceUID={S1},{S2}", [S1, S2]),
    ("UID list, backslash", f"/studies?StudyInstanceUID={S2}%5C{S3}", [S2, S3]),
    ("date range", "/studies?StudyDate=20200101-20211231", [S1, S2]),
    ("date open end", "/studies?StudyDate=20210101-", [S2, S3]),
    ("date open start", "/studies?StudyDate=-20200115", [S1]),
    ("time range", "/studies?StudyTime=0800-1100", [S1, S3]),
    # one date-time range from the first day's time to the last day's (PS3.4 C.2.2.2.5.1);
    # as two separate ranges "1000-0900" would match nothing
    ("date and time combined", "/studies?StudyDate=20200115-20221010&StudyTime=1000-0900", [S1, S2, S3]),
    ("date and time combined, narrow", "/studies?StudyDate=20200115-20221010&StudyTime=1100-0700", [S2]),
    ("name case-insensitive", "/studies?PatientName=DOE%5EJOHN", [S1]),
    ("fuzzy name", "/studies?PatientName=nun&fuzzymatching=true", [S3]),
    ("modalities in study", "/studies?ModalitiesInStudy=SR", [S1]),
    ("modalities list", "/studies?ModalitiesInStudy=MR%5CUS", [S2, S3]),
    ("sequence, one level", "/studies/{S1}/series?RequestAttributesSequence.RequestedProcedureID=RP-P1", [S1]),
    ("sequence by tags", "/series?00400275.00401001=RP-P3", [S3]),
]


@pytest.mark.parametrize(("rule", "path", "expected"), RULES, ids=[r[0] for r in RULES])
def test_matching_rule_over_http(archive: RunningServer, rule: str, path: str, expected: list[str]) -> None:
    r = get(archive, path.replace("{S1}", S1))
    assert sorted({d["0020000D"]["Value"][0] for d in r.json()} if r.status_code == 200 else [r.text]) == expected


def test_higher_level_keys_on_lower_level_resources(archive: RunningServer) -> None:
    r = get(archive, "/instances", {"PatientID": "P1", "Modality": "SR"})
    assert uids(r, "00080018") == [f"{S1}.2.1"]
    assert r.json()[0]["00100010"]["Value"] == [{"Alphabetic": "Doe^John"}]


# ---------------------------------------------------------------- paging, fields


def test_limit_and_offset_page_through_everything(archive: RunningServer) -> None:
    pages = [uids(get(archive, "/instances", {"limit": 3, "offset": o}), "00080018") for o in (0, 3, 6)]
    everything = uids(get(archive, "/instances"), "00080018")
    assert [u for p in pages for u in p] == everything
    assert warnings(get(archive, "/instances", {"limit": 3}))  # more results exist


def test_offset_past_the_end_is_200_empty(archive: RunningServer) -> None:
    r = get(archive, "/studies", {"offset": 100})
    assert (r.status_code, r.json()) == (200, [])


def test_no_match_is_200_empty(archive: RunningServer) -> None:
    r = get(archive, "/studies", {"PatientID": "NOPE"})
    assert (r.status_code, r.json()) == (200, [])


@pytest.mark.parametrize("query", [
    "includefield=00080080,StudyDescription",
    "includefield=00080080%2CStudyDescription",
    "includefield=InstitutionName&includefield=00081030",
])
def test_includefield_lists(archive: RunningServer, query: str) -> None:
    doc = get(archive, f"/studies?PatientID=P1&{query}").json()[0]
    assert doc["00080080"]["Value"] == ["General Hospital"]
    assert doc["00081030"]["Value"] == ["CT study"]


def test_includefield_all_on_instances_returns_the_header(archive: RunningServer) -> None:
    doc = get(archive, f"/studies/{S1}/series/{S1}.1/instances", {"includefield": "all", "limit": 1}).json()[0]
    assert doc["00080080"]["Value"] == ["General Hospital"]
    assert doc["00100020"]["Value"] == ["P1"]


def test_universal_match_returns_the_attribute(archive: RunningServer) -> None:
    doc = get(archive, "/studies", {"PatientID": "P1", "InstitutionName": ""}).json()[0]
    assert doc["00080080"]["Value"] == ["General Hospital"]


# ---------------------------------------------------------------- bad and unknown parameters


@pytest.mark.parametrize(("query", "named"), [
    ("limit=-1", "limit"), ("limit=abc", "limit"), ("offset=-5", "offset"), ("offset=x", "offset"),
    ("fuzzymatching=maybe", "fuzzymatching"), ("StudyDate=2020", "StudyDate"),
    ("StudyDate=20201340", "StudyDate"), ("00080020=20200101-20190101", "StudyDate"),
    ("StudyInstanceUID=1.2.x", "StudyInstanceUID"), ("StudyTime=9999", "StudyTime"),
])
def test_malformed_value_is_400_naming_the_parameter(archive: RunningServer, query: str, named: str) -> None:
    r = get(archive, f"/studies?{query}")
    assert r.status_code == 400
    assert named in r.json()["error"]


def test_unknown_parameter_is_ignored_and_named_in_a_warning(archive: RunningServer) -> None:
    r = get(archive, "/studies", {"NoSuchThing": "x", "PatientID": "P1"}, origin="https://viewer.example")
    assert uids(r) == [S1]
    assert any("NoSuchThing" in w and w.startswith(f"299 {archive.dicomweb}: ") for w in warnings(r))
    # a browser script can read it (CORS-03)
    exposed = [h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")]
    assert "warning" in exposed


def test_unsupported_attribute_is_ignored_with_a_warning(archive: RunningServer) -> None:
    r = get(archive, "/studies", {"Modality": "CT"})
    assert len(uids(r)) == 3
    assert any("Modality" in w for w in warnings(r))


def test_sequence_path_deeper_than_one_level_is_400(archive: RunningServer) -> None:
    r = get(archive, "/series", {"RequestAttributesSequence.ReferencedStudySequence.ReferencedSOPClassUID": "1.2"})
    assert r.status_code == 400
    assert "one level" in r.json()["error"]


# ---------------------------------------------------------------- media types


def test_application_json_is_accepted(archive: RunningServer) -> None:
    r = get(archive, "/studies", accept="application/dicom+json, application/json")
    assert r.status_code == 200 and len(r.json()) == 3


def test_unsupported_accept_is_406(archive: RunningServer) -> None:
    assert get(archive, "/studies", accept="image/png").status_code == 406


def test_multipart_xml_has_one_native_model_per_match(archive: RunningServer) -> None:
    r = get(archive, "/studies", accept='multipart/related; type="application/dicom+xml"')
    assert r.status_code == 200
    assert r.headers["content-type"].startswith('multipart/related; type="application/dicom+xml"')
    message = email.message_from_bytes(
        b"Content-Type: " + r.headers["content-type"].encode() + b"\r\n\r\n" + r.content, policy=email.policy.HTTP
    )
    parts = list(message.iter_parts())
    assert len(parts) == 3
    ns = {"n": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
    names = set()
    for part in parts:
        assert part.get_content_type() == "application/dicom+xml"
        root = ET.fromstring(part.get_payload(decode=True))
        family = root.find("n:DicomAttribute[@tag='00100010']/n:PersonName/n:Alphabetic/n:FamilyName", ns)
        assert family is not None
        names.add(family.text)
    assert names == {"Doe", "Müller", "Núñez"}


# ---------------------------------------------------------------- dicomweb-client


@pytest.fixture(scope="module")
def client(archive: RunningServer) -> DICOMwebClient:
    return DICOMwebClient(archive.dicomweb)


def test_dicomweb_client_search_for_studies(client: DICOMwebClient) -> None:
    found = client.search_for_studies(search_filters={"PatientName": "doe*"}, fields=["StudyDescription"])
    assert [d["0020000D"]["Value"][0] for d in found] == [S1]
    assert found[0]["00081030"]["Value"] == ["CT study"]
    fuzzy = client.search_for_studies(search_filters={"PatientName": "jurg"}, fuzzymatching=True)
    assert [d["0020000D"]["Value"][0] for d in fuzzy] == [S2]


def test_dicomweb_client_pages_with_get_remaining(client: DICOMwebClient) -> None:
    found = client.search_for_instances(limit=2, get_remaining=True)
    assert len(found) == N_INSTANCES
    assert len({d["00080018"]["Value"][0] for d in found}) == N_INSTANCES


def test_dicomweb_client_series_and_instances(client: DICOMwebClient) -> None:
    series = client.search_for_series(S1, search_filters={"Modality": "CT"})
    assert [d["0020000E"]["Value"][0] for d in series] == [f"{S1}.1"]
    assert series[0]["00201209"]["Value"] == [3]
    inst = client.search_for_instances(S1, f"{S1}.1", offset=1, limit=1)
    assert [d["00200013"]["Value"][0] for d in inst] == [2]
    every = client.search_for_series(search_filters={"PatientID": "380/26"})
    assert [d["0020000D"]["Value"][0] for d in every] == [S2]


# ---------------------------------------------------------------- settings


@pytest.fixture(scope="module")
def capped(archive: RunningServer) -> Iterator[RunningServer]:
    tmp = Path(tempfile.mkdtemp(prefix="lightbox-qido-cap-"))
    shutil.copytree(archive.data, tmp / "data", ignore=shutil.ignore_patterns("*.sqlite-*"))
    server = start_server(tmp / "data", env={"LIGHTBOX_QIDO_MAX_RESULTS": "2", "LIGHTBOX_QIDO_EMPTY_204": "true"})
    yield server
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def test_server_cap_says_so_in_a_warning(capped: RunningServer) -> None:
    r = get(capped, "/instances")
    assert len(r.json()) == 2
    assert any("maximum" in w for w in warnings(r))


def test_empty_result_can_be_204(capped: RunningServer) -> None:
    r = get(capped, "/studies", {"PatientID": "NOPE"})
    assert r.status_code == 204 and r.content == b""


# ---------------------------------------------------------------- character sets (real samples)


def _expected_name(ds: pydicom.Dataset) -> dict[str, str]:
    pn = ds.PatientName
    groups = {"Alphabetic": pn.alphabetic, "Ideographic": pn.ideographic, "Phonetic": pn.phonetic}
    return {k: v for k, v in groups.items() if v}


# Two charset samples carry no Study/SOP Instance UID: ingest refuses them (test_stow checks that).
CHARSET_FILES = [
    p for p in sorted((SAMPLES / "pydicom" / "charset").glob("chr*.dcm"))
    if {"SOPInstanceUID", "StudyInstanceUID"} <= set(pydicom.dcmread(p, stop_before_pixels=True).dir())
]


@pytest.mark.parametrize("path", CHARSET_FILES, ids=[p.stem for p in CHARSET_FILES])
def test_names_decoded_from_every_character_set(sample_server: RunningServer, path: Path) -> None:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    r = get(sample_server, "/instances", {"SOPInstanceUID": ds.SOPInstanceUID, "includefield": "PatientName"})
    docs = r.json()
    assert len(docs) == 1
    assert docs[0]["00100010"]["Value"] == [_expected_name(ds)]


def test_japanese_name_matches_by_ideographic_component(sample_server: RunningServer) -> None:
    r = get(sample_server, "/studies", {"PatientName": "山田", "fuzzymatching": "true"})
    names = [d["00100010"]["Value"][0].get("Ideographic", "") for d in r.json()]
    assert names and all("山田" in n for n in names)


def _valid_json_model(value: Any) -> None:
    if isinstance(value, dict) and "vr" in value:
        assert value.get("Value", [None]) != [], "empty Value array"
        for v in value.get("Value", []):
            if value["vr"] == "PN":
                assert isinstance(v, dict)
            elif value["vr"] in ("IS", "DS", "US", "UL", "SS", "SL", "FL", "FD"):
                assert v is None or isinstance(v, int | float), (value, v)
            elif value["vr"] == "SQ":
                for item in v.values():
                    _valid_json_model(item)
    elif isinstance(value, dict):
        for item in value.values():
            _valid_json_model(item)


@pytest.mark.parametrize("path", ["/studies", "/series", "/instances?includefield=all"])
def test_results_are_valid_dicom_json(sample_server: RunningServer, path: str) -> None:
    docs = get(sample_server, path).json()
    assert docs
    for doc in docs:
        assert all(len(k) == 8 and k == k.upper() for k in doc)
        assert list(doc) == sorted(doc)  # PS3.18 F.2: in tag order
        _valid_json_model(doc)


# ---------------------------------------------------------------- read after write


def test_stored_instances_are_found_at_once(fresh_server: RunningServer) -> None:
    parts = series_from(SAMPLES / "pydicom" / "CT_small.dcm", 2)
    study = pydicom.dcmread(io.BytesIO(parts[0])).StudyInstanceUID
    before = get(fresh_server, "/studies", {"StudyInstanceUID": study})
    stored = httpx.post(fresh_server.dicomweb + "/studies", content=multipart_body(parts), headers=stow_headers(),
                        timeout=60)
    assert stored.status_code == 200
    after = get(fresh_server, "/studies", {"StudyInstanceUID": study}).json()
    assert before.json() == []
    assert after[0]["00201208"]["Value"] == [2]
    deleted = httpx.delete(f"{fresh_server.dicomweb}/studies/{study}", timeout=30)
    if deleted.status_code in (200, 202, 204):  # when DELETE is served, QIDO forgets the study at once
        assert get(fresh_server, "/studies", {"StudyInstanceUID": study}).json() == []
