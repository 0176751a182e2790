"""The DIMSE service against real peers: dcmtk (echoscu, storescu, findscu, movescu with a
storescp destination, getscu) and pynetdicom as SCU, with DICOMweb checks of what they stored.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import generate_uid
from pynetdicom import AE, _config, build_role, evt

from tests.conftest import SAMPLES, RunningServer, free_port, start_server

pytestmark = pytest.mark.dimse

AET = "LIGHTBOX"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
NEVER_SENT = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.2"}  # implicit VR LE, explicit VR BE
NATIVE = {EXPLICIT_LE, *NEVER_SENT}

# One sample per transfer syntax dcmtk 3.6.7 can send (it does not know HTJ2K).
MIXED = [
    "pydicom/CT_small.dcm",  # Explicit VR LE
    "pydicom/MR_small_implicit.dcm",  # Implicit VR LE
    "pydicom/MR_small_bigendian.dcm",  # Explicit VR BE
    "pydicom/image_dfl.dcm",  # Deflated
    "pydicom/SC_rgb_small_odd_jpeg.dcm",  # JPEG baseline
    "pydicom/JPGExtended.dcm",  # JPEG extended
    "cornerstoneWADOImageLoader/CTImage.dcm_JPEGProcess14TransferSyntax_1.2.840.10008.1.2.4.57.dcm",
    "pydicom/SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1
    "pydicom/MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "pydicom/JPEGLSNearLossless_08.dcm",  # JPEG-LS near-lossless
    "pydicom/MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "pydicom/JPEG2000.dcm",  # JPEG 2000
    "pydicom/SC_rgb_rle.dcm",  # RLE
]
HTJ2K = "pydicom-data/HTJ2K_08_RGB.dcm"
CT = "pydicom/CT_small.dcm"


@dataclass(frozen=True)
class Made:
    path: Path
    sop_class: str
    study: str
    series: str
    sop: str
    transfer_syntax: str
    pixels: bytes


def remake(src: Path, out: Path, study: str, series: str, patient: tuple[str, str],
           study_date: str, number: int = 1) -> Made:
    """A copy of a real sample under new UIDs, in its own transfer syntax (pixels untouched)."""
    ds = pydicom.dcmread(src)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName, ds.PatientID = patient
    ds.StudyDate = study_date
    ds.InstanceNumber = number
    ds.save_as(out, enforce_file_format=True)
    return Made(out, str(ds.SOPClassUID), study, series, str(ds.SOPInstanceUID),
                str(ds.file_meta.TransferSyntaxUID), bytes(ds.PixelData))


def storescu_config(made: list[Made], path: Path) -> Path:
    """A storescu profile with one presentation context per (SOP Class, transfer syntax)."""
    pairs = sorted({(m.sop_class, m.transfer_syntax) for m in made})
    syntaxes = sorted({ts for _, ts in pairs})
    lines = ["[[TransferSyntaxes]]"]
    for i, ts in enumerate(syntaxes):
        lines += [f"[TS{i}]", f"TransferSyntax1 = {ts}"]
    lines += ["[[PresentationContexts]]", "[Mixed]"]
    for n, (sop_class, ts) in enumerate(pairs, 1):
        lines.append(f"PresentationContext{n} = {sop_class}\\TS{syntaxes.index(ts)}")
    lines += ["[[Profiles]]", "[Mixed]", "PresentationContexts = Mixed"]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=check)


@dataclass
class Pacs:
    server: RunningServer
    port: int
    tmp: Path
    dest_dir: Path
    mixed: list[Made]
    ct: list[Made]

    @property
    def peer(self) -> tuple[str, str]:
        return "127.0.0.1", str(self.port)


@pytest.fixture(scope="module")
def pacs() -> Iterator[Pacs]:
    """A server with DIMSE on, a storescp as its C-MOVE destination, and two studies stored
    with dcmtk storescu: one of mixed transfer syntaxes, one 5-slice CT series."""
    tmp = Path(tempfile.mkdtemp(prefix="lightbox-dimse-"))
    dest_dir = tmp / "dest"
    dest_dir.mkdir()
    dest_port = free_port()
    storescp = subprocess.Popen(
        ["storescp", "-aet", "DEST", "+xa", "-od", str(dest_dir), str(dest_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    port = free_port()
    server = start_server(tmp / "data", "--dimse-port", str(port), "--aet", AET,
                          "--dimse-known-aes", f"DEST@127.0.0.1:{dest_port}")
    (tmp / "mixed").mkdir()
    (tmp / "ct").mkdir()
    study = generate_uid()
    mixed = [
        remake(SAMPLES / rel, tmp / "mixed" / f"{i:02d}.dcm", study, generate_uid(),
               ("Dimse^Mixed", "DIMSE-MIX"), "20240102")
        for i, rel in enumerate(MIXED)
    ]
    ct_study, ct_series = generate_uid(), generate_uid()
    ct = [
        remake(SAMPLES / CT, tmp / "ct" / f"{i:02d}.dcm", ct_study, ct_series,
               ("Dimse^Ct", "DIMSE-CT"), "20231231", i + 1)
        for i in range(5)
    ]
    try:
        yield Pacs(server, port, tmp, dest_dir, mixed, ct)
    finally:
        server.stop()
        storescp.terminate()
        storescp.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def stored(pacs: Pacs) -> Pacs:
    """Both studies sent with dcmtk storescu (the mixed folder with a profile of its syntaxes)."""
    cfg = storescu_config(pacs.mixed, pacs.tmp / "mixed.cfg")
    run("storescu", "-aet", "MODALITY", "-aec", AET, "-xf", str(cfg), "Mixed", "+sd",
        *pacs.peer, str(pacs.tmp / "mixed"))
    run("storescu", "-aet", "MODALITY", "-aec", AET, "+sd", *pacs.peer, str(pacs.tmp / "ct"))
    return pacs


def scu(calling: str = "PYSCU") -> AE:
    ae = AE(calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae


def find(pacs: Pacs, model: str, **keys: str) -> list[Dataset]:
    ae = scu()
    ae.add_requested_context(model)
    query = Dataset()
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title=AET)
    assert assoc.is_established
    try:
        out = []
        for status, identifier in assoc.send_c_find(query, model):
            assert status is not None and status.Status in (0x0000, 0xFF00, 0xFF01), status
            if status.Status != 0x0000:
                out.append(identifier)
        return out
    finally:
        assoc.release()


def qido(pacs: Pacs, path: str, **params: str) -> list[dict[str, object]]:
    r = httpx.get(pacs.server.dicomweb + path, params=params, timeout=30)
    assert r.status_code in (200, 204), r.text
    return r.json() if r.status_code == 200 else []


def _uid(doc: dict[str, object], tag: str) -> str:
    return doc[tag]["Value"][0]  # type: ignore[index]


def same_pixels(ds: Dataset, made: Made) -> None:
    """Byte-identical when sent as stored; the same decoded pixels when it was transcoded."""
    if str(ds.file_meta.TransferSyntaxUID) == made.transfer_syntax:
        assert bytes(ds.PixelData) == made.pixels, made.path
    else:
        assert str(ds.file_meta.TransferSyntaxUID) in NATIVE
        assert np.array_equal(ds.pixel_array, pydicom.dcmread(made.path).pixel_array), made.path


# ---------------------------------------------------------------- C-ECHO


def test_echoscu_succeeds(pacs: Pacs) -> None:
    result = run("echoscu", "-aet", "ECHO", "-aec", AET, *pacs.peer, check=False)
    assert result.returncode == 0, result.stderr


def test_association_to_another_called_ae_title_is_rejected(pacs: Pacs) -> None:
    result = run("echoscu", "-aet", "ECHO", "-aec", "SOMEONE-ELSE", *pacs.peer, check=False)
    assert result.returncode != 0
    assert "Rejected" in result.stderr or "rejected" in result.stderr.lower()


# ---------------------------------------------------------------- C-STORE


def test_storescu_of_mixed_transfer_syntaxes_is_seen_by_qido(stored: Pacs) -> None:
    study = stored.mixed[0].study
    found = qido(stored, f"/studies/{study}/instances")
    assert {_uid(d, "00080018") for d in found} == {m.sop for m in stored.mixed}


def test_stored_instances_keep_their_transfer_syntax(stored: Pacs) -> None:
    with sqlite3.connect(stored.server.data / "index.sqlite") as db:
        rows = dict(db.execute("select sop_uid, transfer_syntax from instances").fetchall())
    assert {m.sop: rows.get(m.sop) for m in stored.mixed} == {
        m.sop: m.transfer_syntax for m in stored.mixed
    }


def test_wado_rs_serves_the_stored_pixels_unchanged(stored: Pacs) -> None:
    client = DICOMwebClient(stored.server.dicomweb)
    for made in stored.mixed:
        ds = client.retrieve_instance(made.study, made.series, made.sop,
                                      media_types=(("application/dicom", "*"),))
        if made.transfer_syntax in NEVER_SENT:  # PS3.18 8.7.3: goes out as Explicit VR LE
            assert str(ds.file_meta.TransferSyntaxUID) == EXPLICIT_LE
            assert np.array_equal(ds.pixel_array, pydicom.dcmread(made.path).pixel_array)
        else:
            assert str(ds.file_meta.TransferSyntaxUID) == made.transfer_syntax, made.path
            assert bytes(ds.PixelData) == made.pixels, made.path


def test_stored_ct_metadata_is_served_by_wado(stored: Pacs) -> None:
    made = stored.ct[0]
    r = httpx.get(f"{stored.server.dicomweb}/studies/{made.study}/metadata", timeout=30)
    assert r.status_code == 200
    assert {_uid(d, "00080018") for d in r.json()} == {m.sop for m in stored.ct}


def test_pynetdicom_stores_htj2k_that_dcmtk_cannot_send(pacs: Pacs) -> None:
    made = remake(SAMPLES / HTJ2K, pacs.tmp / "htj2k.dcm", generate_uid(), generate_uid(),
                  ("Dimse^Htj2k", "DIMSE-HT"), "20240301")
    ae = scu()
    ae.add_requested_context(made.sop_class, made.transfer_syntax)
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title=AET)
    assert assoc.is_established
    status = assoc.send_c_store(pydicom.dcmread(made.path))
    assoc.release()
    assert status.Status == 0x0000
    client = DICOMwebClient(pacs.server.dicomweb)
    ds = client.retrieve_instance(made.study, made.series, made.sop,
                                  media_types=(("application/dicom", "*"),))
    assert str(ds.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.203"
    assert bytes(ds.PixelData) == made.pixels


def _store(pacs: Pacs, dataset: Dataset | Path) -> int:
    ae = scu()
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", EXPLICIT_LE)  # CT
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.7", EXPLICIT_LE)  # Secondary Capture
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title=AET)
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(dataset).Status)
    finally:
        assoc.release()


@pytest.fixture
def send_files_as_is() -> Iterator[None]:
    """pynetdicom sends a file's bytes with the command identifiers of its File Meta."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    yield
    _config.STORE_SEND_CHUNKED_DATASET = False


def test_dataset_not_matching_the_command_is_refused_with_a900(
    pacs: Pacs, send_files_as_is: None
) -> None:
    ds = pydicom.dcmread(SAMPLES / CT)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # what the command will announce
    path = pacs.tmp / "mismatch.dcm"
    ds.save_as(path)
    assert _store(pacs, path) == 0xA900
    assert qido(pacs, "/instances", SOPInstanceUID=str(ds.SOPInstanceUID)) == []


def test_dataset_without_study_uid_is_refused_with_c000(pacs: Pacs) -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = EXPLICIT_LE
    assert _store(pacs, ds) == 0xC000


# ---------------------------------------------------------------- C-FIND


def _extract(pacs: Pacs, name: str, *args: str) -> list[Dataset]:
    out = pacs.tmp / f"find-{name}"
    out.mkdir()
    run("findscu", "-aet", "FINDSCU", "-aec", AET, "-X", "-od", str(out), *args, *pacs.peer)
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_findscu_patient_level(stored: Pacs) -> None:
    found = _extract(stored, "patient", "-P", "-k", "QueryRetrieveLevel=PATIENT",
                     "-k", "PatientID=DIMSE-MIX", "-k", "PatientName",
                     "-k", "NumberOfPatientRelatedStudies", "-k", "NumberOfPatientRelatedInstances")
    assert len(found) == 1
    assert str(found[0].PatientName) == "Dimse^Mixed"
    assert int(found[0].NumberOfPatientRelatedStudies) == 1
    assert int(found[0].NumberOfPatientRelatedInstances) == len(stored.mixed)


def test_findscu_study_level(stored: Pacs) -> None:
    found = _extract(stored, "study", "-S", "-k", "QueryRetrieveLevel=STUDY",
                     "-k", "PatientID=DIMSE-*", "-k", "StudyInstanceUID",
                     "-k", "NumberOfStudyRelatedInstances", "-k", "ModalitiesInStudy")
    by_uid = {str(d.StudyInstanceUID): d for d in found}
    assert set(by_uid) >= {stored.mixed[0].study, stored.ct[0].study}
    assert int(by_uid[stored.ct[0].study].NumberOfStudyRelatedInstances) == 5
    assert list(by_uid[stored.ct[0].study].ModalitiesInStudy) == ["CT"] or \
        by_uid[stored.ct[0].study].ModalitiesInStudy == "CT"


def test_findscu_series_level(stored: Pacs) -> None:
    found = _extract(stored, "series", "-S", "-k", "QueryRetrieveLevel=SERIES",
                     "-k", f"StudyInstanceUID={stored.mixed[0].study}",
                     "-k", "SeriesInstanceUID", "-k", "Modality")
    assert {str(d.SeriesInstanceUID) for d in found} == {m.series for m in stored.mixed}
    assert all("Modality" in d for d in found)


def test_findscu_image_level(stored: Pacs) -> None:
    made = stored.ct[2]
    found = _extract(stored, "image", "-S", "-k", "QueryRetrieveLevel=IMAGE",
                     "-k", f"StudyInstanceUID={made.study}", "-k", f"SeriesInstanceUID={made.series}",
                     "-k", "SOPInstanceUID", "-k", "InstanceNumber=3")
    assert [str(d.SOPInstanceUID) for d in found] == [made.sop]
    assert int(found[0].InstanceNumber) == 3


@pytest.mark.parametrize(
    ("level", "dimse_keys", "qido_path", "qido_params", "uid_tag"),
    [
        ("STUDY", {"PatientName": "dimse^*"}, "/studies", {"PatientName": "dimse^*"}, "0020000D"),
        ("STUDY", {"StudyDate": "20240101-20241231"}, "/studies", {"StudyDate": "20240101-20241231"},
         "0020000D"),
        ("STUDY", {"ModalitiesInStudy": "CT"}, "/studies", {"ModalitiesInStudy": "CT"}, "0020000D"),
        ("SERIES", {"Modality": "MR"}, "/series", {"Modality": "MR"}, "0020000E"),
        ("IMAGE", {"PatientID": "DIMSE-CT", "InstanceNumber": "2"}, "/instances",
         {"PatientID": "DIMSE-CT", "InstanceNumber": "2"}, "00080018"),
    ],
)
def test_c_find_matches_what_qido_matches(stored: Pacs, level: str, dimse_keys: dict[str, str],
                                          qido_path: str, qido_params: dict[str, str],
                                          uid_tag: str) -> None:
    keyword = {"0020000D": "StudyInstanceUID", "0020000E": "SeriesInstanceUID",
               "00080018": "SOPInstanceUID"}[uid_tag]
    answers = find(stored, STUDY_ROOT_FIND, QueryRetrieveLevel=level, **dimse_keys, **{keyword: ""})
    expected = {_uid(d, uid_tag) for d in qido(stored, qido_path, **qido_params)}
    assert expected, "the query should match something"
    assert {str(a[keyword].value) for a in answers} == expected


def test_c_find_answers_only_the_requested_keys(stored: Pacs) -> None:
    answers = find(stored, STUDY_ROOT_FIND, QueryRetrieveLevel="STUDY", PatientID="DIMSE-CT",
                   StudyInstanceUID="", StudyDescription="")
    assert len(answers) == 1
    keywords = {e.keyword for e in answers[0]}
    assert {"StudyInstanceUID", "StudyDescription", "QueryRetrieveLevel", "PatientID"} <= keywords
    assert "PatientName" not in keywords and "StudyDate" not in keywords


def test_patient_level_in_study_root_is_refused(stored: Pacs) -> None:
    ae = scu()
    ae.add_requested_context(STUDY_ROOT_FIND)
    assoc = ae.associate("127.0.0.1", stored.port, ae_title=AET)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = ""
    statuses = [s.Status for s, _ in assoc.send_c_find(query, STUDY_ROOT_FIND)]
    assoc.release()
    assert statuses == [0xA900]


def test_malformed_match_value_fails_with_c000(stored: Pacs) -> None:
    ae = scu()
    ae.add_requested_context(STUDY_ROOT_FIND)
    assoc = ae.associate("127.0.0.1", stored.port, ae_title=AET)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyDate = "2024-13-45"
    responses = list(assoc.send_c_find(query, STUDY_ROOT_FIND))
    assoc.release()
    assert [s.Status for s, _ in responses] == [0xC000]
    assert "StudyDate" in str(responses[0][0].get("ErrorComment", ""))


# ---------------------------------------------------------------- C-MOVE


@pytest.fixture(scope="module")
def moved(stored: Pacs) -> dict[str, Dataset]:
    """The mixed study after movescu sent it to the storescp destination, by SOP UID."""
    study = stored.mixed[0].study
    run("movescu", "-aet", "MOVESCU", "-aec", AET, "-aem", "DEST", "-S",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", *stored.peer)
    received = (pydicom.dcmread(p) for p in stored.dest_dir.iterdir())
    return {str(ds.SOPInstanceUID): ds for ds in received}


def test_movescu_sends_a_study_to_the_storescp_destination(stored: Pacs,
                                                            moved: dict[str, Dataset]) -> None:
    assert set(moved) >= {m.sop for m in stored.mixed}
    for made in stored.mixed:
        same_pixels(moved[made.sop], made)


def test_c_move_decompresses_what_the_destination_does_not_accept(
    stored: Pacs, moved: dict[str, Dataset]
) -> None:
    # storescp +xa does not take JPEG process 14: it arrives decompressed
    made = next(m for m in stored.mixed if m.transfer_syntax == "1.2.840.10008.1.2.4.57")
    assert str(moved[made.sop].file_meta.TransferSyntaxUID) == EXPLICIT_LE
    same_pixels(moved[made.sop], made)


def test_movescu_to_an_unknown_destination_fails_with_a801(stored: Pacs) -> None:
    result = run("movescu", "-v", "-aet", "MOVESCU", "-aec", AET, "-aem", "NOWHERE", "-S",
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={stored.ct[0].study}",
                 *stored.peer, check=False)
    assert result.returncode != 0
    assert "MoveDestinationUnknown" in result.stdout + result.stderr  # dcmtk's name for 0xA801


# ---------------------------------------------------------------- C-GET


def test_getscu_retrieves_a_series(stored: Pacs) -> None:
    out = stored.tmp / "getscu"
    out.mkdir()
    made = stored.ct[0]
    run("getscu", "-aet", "GETSCU", "-aec", AET, "-S", "-od", str(out),
        "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={made.study}",
        "-k", f"SeriesInstanceUID={made.series}", *stored.peer)
    received = [pydicom.dcmread(p) for p in out.iterdir()]
    assert {str(d.SOPInstanceUID) for d in received} == {m.sop for m in stored.ct}
    assert all(bytes(d.PixelData) == made.pixels for d in received)


def test_getscu_gets_compressed_instances_decompressed(stored: Pacs) -> None:
    # getscu offers only uncompressed syntaxes for the C-STORE sub-operations
    out = stored.tmp / "getscu-mixed"
    out.mkdir()
    run("getscu", "-aet", "GETSCU", "-aec", AET, "-S", "-od", str(out),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={stored.mixed[0].study}",
        *stored.peer)
    received = {str(d.SOPInstanceUID): d for d in map(pydicom.dcmread, out.iterdir())}
    assert set(received) == {m.sop for m in stored.mixed}
    for made in stored.mixed:
        assert received[made.sop].file_meta.TransferSyntaxUID in NATIVE
        same_pixels(received[made.sop], made)


def test_pynetdicom_c_get_retrieves_every_transfer_syntax_unchanged(stored: Pacs) -> None:
    got: dict[str, Dataset] = {}

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        got[str(ds.SOPInstanceUID)] = ds
        return 0x0000

    ae = scu()
    ae.add_requested_context(STUDY_ROOT_GET)
    pairs = sorted({(m.sop_class, m.transfer_syntax) for m in stored.mixed})
    roles = []
    for sop_class, ts in pairs:
        ae.add_requested_context(sop_class, [ts])
    for sop_class in {c for c, _ in pairs}:
        roles.append(build_role(sop_class, scp_role=True))
    assoc = ae.associate("127.0.0.1", stored.port, ae_title=AET, ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = stored.mixed[0].study
    statuses = [s.Status for s, _ in assoc.send_c_get(query, STUDY_ROOT_GET)]
    assoc.release()
    assert statuses[-1] == 0x0000
    assert set(got) == {m.sop for m in stored.mixed}
    for made in stored.mixed:
        assert str(got[made.sop].file_meta.TransferSyntaxUID) == made.transfer_syntax
        assert bytes(got[made.sop].PixelData) == made.pixels, made.path


# ---------------------------------------------------------------- association log


def test_each_association_is_logged_once_with_peer_titles_and_result(stored: Pacs) -> None:
    run("echoscu", "-aet", "LOGCHECK", "-aec", AET, *stored.peer)
    lines = [ln for ln in stored.server.log.read_text().splitlines() if "calling=LOGCHECK" in ln]
    assert len(lines) == 1
    assert "peer=127.0.0.1:" in lines[0] and f"called={AET}" in lines[0]
    assert "1 C-ECHO" in lines[0] and lines[0].endswith("released")
    stores = [ln for ln in stored.server.log.read_text().splitlines() if "calling=MODALITY" in ln]
    assert any(f"{len(stored.mixed)} C-STORE ok" in ln for ln in stores)


# ---------------------------------------------------------------- access control


@pytest.fixture(scope="module")
def guarded() -> Iterator[tuple[RunningServer, int]]:
    tmp = Path(tempfile.mkdtemp(prefix="lightbox-dimse-guard-"))
    port = free_port()
    server = start_server(tmp / "data", "--dimse-port", str(port), "--aet", AET,
                          "--dimse-allowed-aets", "GOOD,ALSO-GOOD", "--dimse-max-associations", "1")
    yield server, port
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def test_calling_ae_title_outside_the_allow_list_is_rejected(guarded: tuple[RunningServer, int]) -> None:
    server, port = guarded
    bad = run("echoscu", "-aet", "BAD", "-aec", AET, "127.0.0.1", str(port), check=False)
    for _ in range(50):  # the rejected association holds the one slot until its thread ends
        good = run("echoscu", "-aet", "GOOD", "-aec", AET, "127.0.0.1", str(port), check=False)
        if good.returncode == 0:
            break
        time.sleep(0.05)
    assert bad.returncode != 0 and good.returncode == 0
    assert "calling AE title not allowed" in server.log.read_text()


def test_associations_beyond_the_limit_are_rejected(guarded: tuple[RunningServer, int]) -> None:
    _server, port = guarded
    ae = scu("GOOD")
    ae.add_requested_context(VERIFICATION)
    first = ae.associate("127.0.0.1", port, ae_title=AET)
    try:
        assert first.is_established
        second = ae.associate("127.0.0.1", port, ae_title=AET)
        assert second.is_rejected
    finally:
        first.release()
    # The slot frees once the server's side of the first association has ended, which may be
    # a moment after the client has its release response.
    for _ in range(50):
        third = ae.associate("127.0.0.1", port, ae_title=AET)
        if third.is_established:
            break
        time.sleep(0.05)
    assert third.is_established
    third.release()
