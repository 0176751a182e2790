"""De-identification (PS3.15 Annex E) through ``POST /dicomweb/studies/{s}/deidentify``.

Checked against independent oracles, never against the server's own table:

* PS3.15 Table E.1-1 as published in the 2023 edition and packaged by dicom-anonymizer,
  applied with pydicom to the stored output (the server carries the 2026c edition);
* a second opinion: whatever dicognito changes in the original must not survive in ours;
* a byte search of each output file for the original's identifying strings.
"""

from __future__ import annotations

import io
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from dicognito.anonymizer import Anonymizer
from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from tests.conftest import SAMPLES, RunningServer, import_files, series_from, start_server

CT = SAMPLES / "pydicom" / "CT_small.dcm"
REAL = [
    SAMPLES / "deid-data" / "ctbrain1.dcm",
    SAMPLES / "highdicom" / "seg_image_ct_binary.dcm",
    SAMPLES / "fo-dicom" / "OutOfBoundsOverlay.dcm",
    SAMPLES / "highdicom" / "sm_image.dcm",
    SAMPLES / "nema-wg04" / "US1_RLE.dcm",
]
TABLE = dicom_anonymization_database_selector("dicomfields_2023")
REMOVE = {Tag(*t) for t in TABLE["X_TAGS"] + TABLE["X_D_TAGS"] if len(t) == 2}
EMPTY_OR_DUMMY = {
    Tag(*t) for k in ("Z_TAGS", "Z_D_TAGS", "X_Z_TAGS", "X_Z_D_TAGS", "D_TAGS") for t in TABLE[k] if len(t) == 2
}
NEW_UID = {Tag(*t) for t in TABLE["U_TAGS"] if len(t) == 2}
# Kept on purpose by the two options the issue asks for (checked separately below).
DESCRIPTORS = {Tag(t) for t in ("StudyDescription", "SeriesDescription", "ProtocolName", "ImageComments",
                                 "FrameComments", "AcquisitionComments", "PerformedProcedureStepDescription",
                                 "RequestedProcedureDescription", "ScheduledProcedureStepDescription",
                                 "DerivationDescription", "ContrastBolusAgent")}
PHI = "Doe^Jane Quincy"


def rich_study() -> list[bytes]:
    """Three CT instances of one study, with identifying text and a reference between them."""
    parts = series_from(CT, 3)
    datasets = [pydicom.dcmread(io.BytesIO(p)) for p in parts]
    first = datasets[0]
    for n, ds in enumerate(datasets):
        ds.PatientName = PHI
        ds.PatientID = "MRN-4471923"
        ds.PatientBirthDate = "19620314"
        ds.AccessionNumber = "ACC99812"
        ds.ReferringPhysicianName = "House^Gregory"
        ds.InstitutionName = "Princeton Plainsboro Teaching"
        ds.StudyDescription = "CT head Jane MRN-4471923 2024-03-01"
        ds.SeriesDescription = "axial 5mm"
        ds.OtherPatientIDs = "SSN 123-45-6789"
        ds.InstanceNumber = n + 1
        if n:
            ref = Dataset()
            ref.ReferencedSOPClassUID = first.SOPClassUID
            ref.ReferencedSOPInstanceUID = first.SOPInstanceUID
            ds.ReferencedImageSequence = Sequence([ref])
    out = []
    for ds in datasets:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    tmp = Path(tempfile.mkdtemp(prefix="lightbox-deid-"))
    data = tmp / "data"
    originals = tmp / "originals"
    originals.mkdir()
    for n, blob in enumerate(rich_study()):
        (originals / f"rich{n}.dcm").write_bytes(blob)
    import_files(data, [originals, *REAL])
    srv = start_server(data)
    yield srv
    srv.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def stored(server: RunningServer, study: str) -> list[pydicom.Dataset]:
    with sqlite3.connect(server.data / "index.sqlite") as db:
        keys = [r[0] for r in db.execute(
            "select i.blob_key from instances i join studies s on s.pk = i.study_pk where s.study_uid = ?", (study,))]
    return [pydicom.dcmread(server.data / "blobs" / k[:2] / k[2:4] / k) for k in keys]


def deidentify(server: RunningServer, study: str) -> dict[str, Any]:
    r = httpx.post(f"{server.dicomweb}/studies/{study}/deidentify", timeout=120)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def walk(ds: Dataset, path: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], pydicom.DataElement]]:
    for elem in ds:
        yield (*path, int(elem.tag)), elem
        if elem.VR == "SQ":
            for n, item in enumerate(elem.value):  # the item index keeps sibling items apart
                yield from walk(item, (*path, int(elem.tag), -n - 1))


def empty(elem: pydicom.DataElement) -> bool:
    return elem.value in (None, "", b"", []) or (elem.VR == "SQ" and len(elem.value) == 0)


def phi_strings(ds: Dataset) -> set[str]:
    words: set[str] = set()
    for kw in ("PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber", "InstitutionName",
               "ReferringPhysicianName", "PatientBirthDate", "InstitutionAddress", "OperatorsName",
               "PerformingPhysicianName", "StationName"):
        value = ds.get(kw)
        for part in str(value or "").replace("^", " ").replace("\\", " ").split():
            if len(part) >= 4 and part.upper() not in {"ANONYMOUS", "ANONYMIZED"}:
                words.add(part)
    return words


def check_pair(orig: Dataset, new: Dataset, uid_map: dict[str, str], shifts: set[int]) -> None:
    # pixel data untouched
    assert ("PixelData" in orig) == ("PixelData" in new)
    if "PixelData" in orig:
        assert new.PixelData == orig.PixelData
    assert new.PatientIdentityRemoved == "YES"
    codes = {item.CodeValue for item in new.DeidentificationMethodCodeSequence}
    assert {"113100", "113107", "113105"} <= codes
    before = dict(walk(orig))
    for path, elem in walk(new):
        tag = Tag(path[-1])
        assert not tag.is_private, f"private {tag} left"
        assert tag.group & 0xFF00 not in (0x5000, 0x6000), f"curve/overlay {tag} left"
        old = before.get(path)
        if tag in DESCRIPTORS:
            continue  # Clean Descriptors: checked by the byte search
        profiled = tag in REMOVE | EMPTY_OR_DUMMY
        if elem.VR == "DA" and profiled and not empty(elem) and old is not None and not empty(old):
            # Retain Longitudinal Temporal Information with Modified Dates: moved, by one offset
            shift = (date.fromisoformat(_iso(elem.value)) - date.fromisoformat(_iso(old.value))).days
            assert shift != 0, tag
            shifts.add(shift)
            continue
        if elem.VR in ("TM", "DT") and profiled:
            continue  # times stay (dates move by whole days); DT dates checked via the byte search
        if tag in REMOVE:
            assert False, f"{tag} {elem.keyword} should be removed (PS3.15 E.1-1 X) at {path}"
        if tag in EMPTY_OR_DUMMY and old is not None and not empty(old) and elem.VR != "SQ":
            assert empty(elem) or elem.value != old.value, f"{elem.keyword} kept its value"
        if tag in NEW_UID and not empty(elem):
            assert old is not None and elem.value != old.value and str(elem.value).startswith("2.25.")
            assert uid_map.setdefault(str(old.value), str(elem.value)) == str(elem.value), "UID mapped two ways"


def _iso(da: Any) -> str:
    text = str(da)
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}"


def check_second_opinion(orig: Dataset, new: Dataset) -> None:
    """dicognito's view of what identifies: nothing it would change may survive in ours."""
    theirs = pydicom.dcmread(io.BytesIO(_bytes(orig)))
    Anonymizer(seed="lightbox-test").anonymize(theirs)
    changed = {(path, str(elem.value)) for path, elem in walk(orig)
               # times: dicognito moves them with its date shift; the longitudinal option keeps them
               if not empty(elem) and elem.VR not in ("SQ", "OB", "OW", "UN", "TM")
               and (dict(walk(theirs)).get(path) is None or str(dict(walk(theirs))[path].value) != str(elem.value))}
    ours = {(path, str(elem.value)) for path, elem in walk(new) if not empty(elem)}
    left = {(p, v) for p, v in changed & ours if Tag(p[-1]) not in DESCRIPTORS}
    assert not left, f"dicognito would change these, we kept them: {sorted(left)[:5]}"


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def check_no_phi_bytes(orig: Dataset, new: Dataset) -> None:
    blob = _bytes(new).upper()
    # a word that the original also has in an attribute the profile keeps (e.g. "Test" in
    # "Test^Patient" and Manufacturer "Test Manufacturer") cannot be told apart
    kept = " ".join(str(e.value) for _, e in walk(orig) if e.VR not in ("SQ", "OB", "OW", "UN")
                    and e.tag not in REMOVE | EMPTY_OR_DUMMY | NEW_UID | DESCRIPTORS and e.tag.group != 0x0010).upper()
    for word in phi_strings(orig) - {w for w in phi_strings(orig) if w.upper() in kept}:
        assert word.upper().encode() not in blob, f"{word!r} left in the de-identified file"


def _originals(server: RunningServer, study: str) -> list[Dataset]:
    return sorted(stored(server, study), key=lambda d: (int(d.get("InstanceNumber") or 0), str(d.SOPInstanceUID)))


def test_a_study_is_copied_de_identified_with_consistent_uids(server: RunningServer) -> None:
    # the rich study's UIDs are random per build: find it by its patient
    with sqlite3.connect(server.data / "index.sqlite") as db:
        study = db.execute("select s.study_uid from studies s join patients p on p.pk = s.patient_pk "
                           "where p.patient_id = 'MRN-4471923'").fetchone()[0]
    originals = _originals(server, study)
    body = deidentify(server, study)
    assert body["SourceStudyInstanceUID"] == study and body["instances"] == 3
    new_study = body["StudyInstanceUID"]
    assert new_study != study and new_study.startswith("2.25.")
    assert body["RetrieveURL"].endswith(f"/dicomweb/studies/{new_study}")
    copies = sorted(stored(server, new_study), key=lambda d: int(d.InstanceNumber))
    assert len(copies) == 3
    uid_map: dict[str, str] = {}
    shifts: set[int] = set()
    for orig, new in zip(originals, copies, strict=True):
        check_pair(orig, new, uid_map, shifts)
        check_second_opinion(orig, new)
        check_no_phi_bytes(orig, new)
        assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
    assert len(shifts) == 1, f"dates moved by different offsets: {shifts}"
    assert {c.StudyInstanceUID for c in copies} == {new_study}
    assert len({c.SeriesInstanceUID for c in copies}) == 1
    assert len({c.SOPInstanceUID for c in copies}) == 3
    # the reference between instances now points at the new copy of the first instance
    for c in copies[1:]:
        assert c.ReferencedImageSequence[0].ReferencedSOPInstanceUID == copies[0].SOPInstanceUID
    # descriptors kept but cleaned (Clean Descriptors option)
    assert copies[0].SeriesDescription == "axial 5mm"
    desc = copies[0].StudyDescription
    assert desc.startswith("CT head") and "Jane" not in desc and "4471923" not in desc and "2024" not in desc
    # the original is kept; QIDO finds the copy under its pseudonym, not the name
    qido = httpx.get(f"{server.dicomweb}/studies", params={"StudyInstanceUID": new_study}).json()
    assert len(qido) == 1 and "Jane" not in str(qido)
    assert httpx.get(f"{server.dicomweb}/studies", params={"StudyInstanceUID": study}).json()
    # the same study de-identifies to the same UIDs (a repeat is harmless)
    assert deidentify(server, study)["StudyInstanceUID"] == new_study


@pytest.mark.parametrize("sample", REAL, ids=lambda p: p.name)
def test_real_samples_lose_every_phi_attribute_and_keep_their_pixels(server: RunningServer, sample: Path) -> None:
    orig = pydicom.dcmread(sample)
    study = str(orig.StudyInstanceUID)
    body = deidentify(server, study)
    copies = stored(server, body["StudyInstanceUID"])
    originals = {str(d.SOPInstanceUID): d for d in stored(server, study)}
    assert len(copies) == len(originals) >= 1
    uid_map: dict[str, str] = {}
    for new in copies:
        matches = [o for o in originals.values()
                   if o.SOPClassUID == new.SOPClassUID and o.get("PixelData") == new.get("PixelData")]
        assert matches, "no original with the same pixels"
        check_pair(matches[0], new, uid_map, set())
        check_second_opinion(matches[0], new)
        check_no_phi_bytes(matches[0], new)


def test_unknown_study_is_404_and_bad_uid_400(server: RunningServer) -> None:
    assert httpx.post(f"{server.dicomweb}/studies/1.2.3.4.5/deidentify").status_code == 404
    assert httpx.post(f"{server.dicomweb}/studies/not-a-uid/deidentify").status_code == 400


def test_a_de_identified_zip_download_matches_the_stored_copy(server: RunningServer) -> None:
    import zipfile

    orig = pydicom.dcmread(REAL[0])
    study = str(orig.StudyInstanceUID)
    r = httpx.get(f"{server.dicomweb}/studies/{study}/deidentify", timeout=120)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = zf.namelist()
        assert len(names) == 1
        new = pydicom.dcmread(io.BytesIO(zf.read(names[0])))
    assert names[0] == f"{new.StudyInstanceUID}/{new.SeriesInstanceUID}/{new.SOPInstanceUID}.dcm"
    assert study not in names[0] and new.PixelData == orig.PixelData
    check_pair(orig, new, {}, set())
    check_no_phi_bytes(orig, new)
    # the same UIDs as the stored de-identified copy
    assert new.StudyInstanceUID == deidentify(server, study)["StudyInstanceUID"]
    assert not [p for p in server.data.rglob("deid-*.zip")]  # the temporary ZIP is gone


def test_wado_uri_anonymize_yes_answers_the_same_de_identified_instance(server: RunningServer) -> None:
    orig = pydicom.dcmread(REAL[0])
    r = httpx.get(server.base + "/wado", params={
        "requestType": "WADO", "studyUID": orig.StudyInstanceUID, "seriesUID": orig.SeriesInstanceUID,
        "objectUID": orig.SOPInstanceUID, "contentType": "application/dicom", "anonymize": "yes"}, timeout=60)
    assert r.status_code == 200, r.text
    new = pydicom.dcmread(io.BytesIO(r.content))
    check_pair(orig, new, {}, set())
    check_second_opinion(orig, new)
    check_no_phi_bytes(orig, new)
    assert new.PixelData == orig.PixelData
    assert new.StudyInstanceUID == deidentify(server, str(orig.StudyInstanceUID))["StudyInstanceUID"]
