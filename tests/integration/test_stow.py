"""STOW-RS and ingest against a real server: every sample, bad input, concurrency, crashes."""

from __future__ import annotations

import concurrent.futures
import hashlib
import sqlite3
import tempfile
from pathlib import Path

import httpx
import numpy as np
import orjson
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.encaps import generate_frames

from tests.conftest import (
    SAMPLES,
    RunningServer,
    manifest,
    multipart_body,
    series_from,
    start_server,
    stow_headers,
)

CT = SAMPLES / "pydicom" / "CT_small.dcm"


def _stow(server: RunningServer, parts: list[bytes], study: str | None = None, **kw: object) -> httpx.Response:
    url = server.dicomweb + "/studies" + (f"/{study}" if study else "")
    return httpx.post(url, content=multipart_body(parts), headers=stow_headers(), timeout=60, **kw)  # type: ignore[arg-type]


def _db(server: RunningServer) -> sqlite3.Connection:
    return sqlite3.connect(server.data / "index.sqlite")


def _blob(server: RunningServer, sha: str) -> Path:
    return server.data / "blobs" / sha[:2] / sha[2:4] / sha


def _counts(server: RunningServer) -> tuple[int, int, int]:
    with _db(server) as db:
        return (
            db.execute("select count(*) from studies").fetchone()[0],
            db.execute("select count(*) from series").fetchone()[0],
            db.execute("select count(*) from instances").fetchone()[0],
        )


@pytest.fixture(scope="module")
def every_sample_stowed() -> tuple[RunningServer, list[tuple[Path, bytes, httpx.Response]]]:
    tmp = Path(tempfile.mkdtemp(prefix="lightbox-stow-"))
    server = start_server(tmp / "data")
    results = []
    for sample in manifest():
        data = sample.path.read_bytes()
        results.append((sample.path, data, _stow(server, [data])))
    yield server, results
    server.stop()


def test_every_sample_is_stored_or_refused_with_a_reason(every_sample_stowed) -> None:
    _server, results = every_sample_stowed
    stored = 0
    for path, _data, response in results:
        assert response.status_code in (200, 202, 409), f"{path}: {response.status_code} {response.text[:300]}"
        doc = response.json()
        if response.status_code == 200:
            stored += 1
            assert "00081199" in doc
        else:
            failed = doc["00081198"]["Value"][0]
            assert failed["00081197"]["Value"][0] in (0xC000, 0xA900, 0x0110, 0xC122), path
            assert failed["00091001"]["Value"][0], f"{path}: failure without a reason"
    assert stored >= 200  # the corpus is mostly valid Part-10 files


def test_stored_bytes_are_identical_to_the_upload(every_sample_stowed) -> None:
    server, results = every_sample_stowed
    with _db(server) as db:
        shas = {row[0] for row in db.execute("select sha256 from instances")}
    checked = 0
    for _path, data, response in results:
        sha = hashlib.sha256(data).hexdigest()
        if response.status_code == 200 and sha in shas:
            assert _blob(server, sha).read_bytes() == data
            checked += 1
    assert checked >= 150


def test_index_rows_equal_pydicoms_reading(every_sample_stowed) -> None:
    server, results = every_sample_stowed
    with _db(server) as db:
        rows = {r[0]: r for r in db.execute(
            "select i.sha256, i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.rows, i.columns, "
            "i.number_of_frames, i.metadata from instances i")}
    checked = 0
    for path, data, response in results:
        row = rows.get(hashlib.sha256(data).hexdigest())
        if response.status_code != 200 or row is None:
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert row[1] == ds.SOPInstanceUID
        assert row[2] == ds.SOPClassUID
        assert row[3] == ds.file_meta.TransferSyntaxUID
        assert row[4] == ds.get("Rows")
        assert row[5] == ds.get("Columns")
        assert row[6] == int(ds.get("NumberOfFrames") or 1)
        metadata = orjson.loads(row[7])
        for keyword in ("StudyDate", "PatientID", "Modality", "SeriesInstanceUID"):
            tag = f"{pydicom.datadict.tag_for_keyword(keyword):08X}"
            want = ds.get(keyword)
            got = metadata.get(tag, {}).get("Value", [""])[0]
            assert got == (want or ""), f"{path}: {keyword}"
        checked += 1
    assert checked >= 150


def test_frame_offsets_give_back_the_frames_pydicom_finds(every_sample_stowed) -> None:
    server, _results = every_sample_stowed
    with _db(server) as db:
        rows = db.execute("select sha256, frames, transfer_syntax, number_of_frames, pixel_tag from instances "
                          "where frames is not null").fetchall()
    checked = 0
    for sha, frames_json, ts, n_frames, pixel_tag in rows:
        blob = _blob(server, sha)
        raw = blob.read_bytes()
        spans = orjson.loads(frames_json)
        ds = pydicom.dcmread(blob)
        assert len(spans) == n_frames
        if ts not in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"):
            expected = list(generate_frames(ds[pixel_tag].value, number_of_frames=n_frames))
            for frame_spans, want in zip(spans, expected, strict=True):
                got = b"".join(raw[o:o + n] for o, n in frame_spans)
                assert got.rstrip(b"\0") == want.rstrip(b"\0"), f"{sha} ({ts})"
        else:
            if ds.BitsAllocated == 1 or (ts == "1.2.840.10008.1.2.2" and ds.BitsAllocated == 8):
                # 1-bit frames share bytes, 8-bit big-endian OW spans whole words: both are
                # checked by decoding every frame in tests/unit/dicom/test_frames.py
                continue
            size = ds.Rows * ds.Columns * ds.get("SamplesPerPixel", 1) * ds.BitsAllocated // 8
            pixel = bytes(ds[pixel_tag].value)
            for k, frame_spans in enumerate(spans):
                (offset, length), = frame_spans
                got = raw[offset:offset + length]
                if ts == "1.2.840.10008.1.2.2" and ds.BitsAllocated > 8:
                    # pydicom hands big-endian OW values back byte-swapped
                    width = ds.BitsAllocated // 8
                    got = np.frombuffer(got, f">u{width}").astype(f"<u{width}").tobytes()
                assert got == pixel[k * size:(k + 1) * size], f"{sha} frame {k}"
        checked += 1
    assert checked >= 150


def test_dicomweb_client_round_trip(fresh_server: RunningServer) -> None:
    client = DICOMwebClient(fresh_server.dicomweb)
    datasets = [pydicom.dcmread(SAMPLES / "pydicom" / name) for name in ("CT_small.dcm", "MR_small.dcm")]
    response = client.store_instances(datasets)
    referenced = response.ReferencedSOPSequence
    assert {item.ReferencedSOPInstanceUID for item in referenced} == {d.SOPInstanceUID for d in datasets}
    # dicomweb-client sends "Host: 127.0.0.1" without the port, so the URL is built from that.
    assert all(item.RetrieveURL.startswith("http://127.0.0.1") for item in referenced)
    assert all(f"/dicomweb/studies/{datasets[0].StudyInstanceUID}/" in item.RetrieveURL for item in referenced[:1])


def _pending(server: RunningServer) -> int:
    with _db(server) as db:
        return int(db.execute("select count(*) from pending_blobs").fetchone()[0])


def test_same_instance_twice_is_a_success(fresh_server: RunningServer) -> None:
    data = CT.read_bytes()
    assert _stow(fresh_server, [data]).status_code == 200
    assert _stow(fresh_server, [data]).status_code == 200
    assert _counts(fresh_server) == (1, 1, 1)
    assert _blob(fresh_server, hashlib.sha256(data).hexdigest()).read_bytes() == data
    assert _pending(fresh_server) == 0


def test_reject_policy_refuses_other_bytes_with_0111_and_keeps_the_first(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", env={"LIGHTBOX_DUPLICATE_POLICY": "reject"})
    try:
        first = CT.read_bytes()
        ds = pydicom.dcmread(CT)
        ds.PatientName = "Other^Bytes"
        other = tmp_path / "other.dcm"
        ds.save_as(other, enforce_file_format=True)
        assert _stow(server, [first]).status_code == 200
        response = _stow(server, [other.read_bytes()])
        assert response.status_code == 409
        assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0111]
        assert _stow(server, [first]).status_code == 200  # the same bytes again are fine
        with _db(server) as db:
            (sha,) = db.execute("select sha256 from instances").fetchone()
            (name,) = db.execute("select patient_name from patients").fetchone()
        assert sha == hashlib.sha256(first).hexdigest()
        assert name != "Other^Bytes"
        assert not _blob(server, hashlib.sha256(other.read_bytes()).hexdigest()).exists()
        assert _pending(server) == 0
    finally:
        server.stop()


def test_different_bytes_for_the_same_instance_replace_it(fresh_server: RunningServer) -> None:
    ds = pydicom.dcmread(CT)
    first = CT.read_bytes()
    ds.PatientName = "Replaced^Patient"
    import io
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert _stow(fresh_server, [first]).status_code == 200
    assert _stow(fresh_server, [buf.getvalue()]).status_code == 200
    with _db(fresh_server) as db:
        (sha,) = db.execute("select sha256 from instances").fetchone()
        (name,) = db.execute("select patient_name from patients").fetchone()
    assert sha == hashlib.sha256(buf.getvalue()).hexdigest()
    assert name == "Replaced^Patient"
    assert not _blob(fresh_server, hashlib.sha256(first).hexdigest()).exists()


def test_mixed_request_is_202_with_the_bad_part_failed(fresh_server: RunningServer) -> None:
    good = series_from(CT, 2)
    response = _stow(fresh_server, [good[0], b"not dicom at all", good[1]])
    assert response.status_code == 202
    doc = response.json()
    assert len(doc["00081199"]["Value"]) == 2
    assert doc["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    # the refused part went nowhere: no blob, no pending mark
    assert not _blob(fresh_server, hashlib.sha256(b"not dicom at all").hexdigest()).exists()
    assert _pending(fresh_server) == 0


def test_study_mismatch_fails_that_part_only(fresh_server: RunningServer) -> None:
    parts = series_from(CT, 2, study_uid="1.2.3.4.5")
    stranger = series_from(CT, 1)[0]
    response = _stow(fresh_server, [*parts, stranger], study="1.2.3.4.5")
    assert response.status_code == 202
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]
    assert _counts(fresh_server) == (1, 1, 2)


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", 415),
        ("multipart/form-data; boundary=x", 415),
        ('multipart/related; type="application/dicom+json"; boundary=x', 415),
        ('multipart/related; type="application/dicom"', 400),
    ],
)
def test_unsupported_request_types_are_refused(fresh_server: RunningServer, content_type: str, status: int) -> None:
    response = httpx.post(fresh_server.dicomweb + "/studies", content=b"--x--", headers={"Content-Type": content_type})
    assert response.status_code == status
    assert response.json()["error"]


def test_bad_input_leaves_the_store_intact(fresh_server: RunningServer) -> None:
    assert _stow(fresh_server, series_from(CT, 3)).status_code == 200
    before = _counts(fresh_server)
    blobs_before = sorted(p.name for p in (fresh_server.data / "blobs").rglob("*") if p.is_file())
    good = series_from(CT, 1)[0]
    truncated = multipart_body([good])[: len(good) // 2]
    r1 = httpx.post(fresh_server.dicomweb + "/studies", content=truncated, headers=stow_headers())
    assert r1.status_code == 409
    assert "truncated" in r1.json()["00081198"]["Value"][0]["00091001"]["Value"][0]
    traversal = fresh_server.dicomweb + "/studies/..%5C..%5Cetc%5Cpasswd"
    r2 = httpx.post(traversal, content=multipart_body([good]), headers=stow_headers())
    assert r2.status_code == 400
    assert "not a valid UID" in r2.json()["error"]
    r3 = _stow(fresh_server, [good[:300]])  # header cut short
    assert r3.status_code == 409
    r4 = httpx.post(fresh_server.dicomweb + "/studies", content=b"garbage", headers=stow_headers())
    assert r4.status_code == 400
    assert _counts(fresh_server) == before
    blobs_after = sorted(p.name for p in (fresh_server.data / "blobs").rglob("*") if p.is_file())
    assert blobs_after == blobs_before
    assert not [p for p in (fresh_server.data / "tmp").rglob("*") if p.is_file()]


def test_eight_concurrent_stows_into_one_study_give_exact_counts(fresh_server: RunningServer) -> None:
    study = "1.2.826.0.1.3680043.8.498.1"
    batches = [series_from(CT, 5, study_uid=study) for _ in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda parts: _stow(fresh_server, parts, study=study).status_code, batches))
    assert statuses == [200] * 8
    with _db(fresh_server) as db:
        num_series, num_instances = db.execute(
            "select num_series, num_instances from studies where study_uid=?", (study,)).fetchone()
        per_series = [r[0] for r in db.execute("select num_instances from series")]
    assert (num_series, num_instances) == (8, 40)
    assert per_series == [5] * 8


def test_kill_during_a_large_stow_leaves_no_partial_instance(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    parts = series_from(CT, 40)
    body = multipart_body(parts)
    sent = {"n": 0}

    def slow_body():
        # Send the first 30 instances, then stall so the server dies mid-body.
        cut = len(multipart_body(parts[:30]))
        for i in range(0, cut, 64 * 1024):
            yield body[i:min(i + 64 * 1024, cut)]
            sent["n"] += 1
        import time
        time.sleep(1.5)
        server.stop(kill=True)
        yield body[cut:cut + 100]

    with pytest.raises(httpx.HTTPError):
        httpx.post(server.dicomweb + "/studies", content=slow_body(), headers=stow_headers(), timeout=30)
    restarted = start_server(tmp_path / "data")
    try:
        with _db(restarted) as db:
            rows = db.execute("select sop_uid, sha256 from instances").fetchall()
        assert 0 < len(rows) <= 30
        for sop, sha in rows:
            stored = pydicom.dcmread(_blob(restarted, sha))
            assert stored.SOPInstanceUID == sop
            assert hashlib.sha256(_blob(restarted, sha).read_bytes()).hexdigest() == sha
        on_disk = [p for p in (restarted.data / "blobs").rglob("*") if p.is_file()]
        assert len(on_disk) == len(rows)
        assert not [p for p in (restarted.data / "tmp").rglob("*") if p.is_file()]
    finally:
        restarted.stop()


def test_a_server_starting_beside_a_running_import_leaves_it_alone(tmp_path: Path) -> None:
    import subprocess
    import sys

    folder = tmp_path / "files"
    folder.mkdir()
    for n, data in enumerate(series_from(CT, 60)):
        (folder / f"{n}.dcm").write_bytes(data)
    data_dir = tmp_path / "data"
    command = [sys.executable, "-m", "server", "import", "--quiet", "--data", str(data_dir), str(folder)]
    importer = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    server = start_server(data_dir)  # its start-up recovery runs while the import writes
    try:
        out, _ = importer.communicate(timeout=120)
        assert importer.returncode == 0
        assert "60 stored" in out, out
        with _db(server) as db:
            shas = [r[0] for r in db.execute("select sha256 from instances")]
        assert len(shas) == 60
        assert all(_blob(server, sha).is_file() for sha in shas)
    finally:
        server.stop()
