"""DELETE of studies, series and instances (not PS3.18; what Orthanc/dcm4chee users expect)."""

from __future__ import annotations

import io

import httpx
import pydicom
from dicomweb_client.api import DICOMwebClient

from tests.conftest import SAMPLES, RunningServer, multipart_body, series_from, stow_headers


def _store(server: RunningServer, files: list[bytes], study: str | None = None) -> None:
    url = f"{server.dicomweb}/studies" + (f"/{study}" if study else "")
    r = httpx.post(url, content=multipart_body(files), headers=stow_headers(), timeout=60)
    assert r.status_code == 200, r.text


def _blobs(server: RunningServer) -> int:
    return sum(1 for p in (server.data / "blobs").rglob("*") if p.is_file())


def test_delete_instance_series_and_study_removes_rows_and_blobs(fresh_server: RunningServer) -> None:
    first = series_from(SAMPLES / "pydicom" / "CT_small.dcm", 3)
    study = pydicom.dcmread(io.BytesIO(first[0])).StudyInstanceUID
    second = series_from(SAMPLES / "pydicom" / "MR_small.dcm", 2, study_uid=study)
    _store(fresh_server, first + second)
    client = DICOMwebClient(fresh_server.dicomweb)
    ids = [pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True) for f in first + second]
    s, se1, se2 = study, ids[0].SeriesInstanceUID, ids[3].SeriesInstanceUID
    base = fresh_server.dicomweb
    assert _blobs(fresh_server) == 5

    # one instance
    r = httpx.delete(f"{base}/studies/{s}/series/{se1}/instances/{ids[0].SOPInstanceUID}")
    assert r.status_code == 204
    assert httpx.get(f"{base}/studies/{s}/series/{se1}/instances/{ids[0].SOPInstanceUID}").status_code == 404
    assert len(httpx.get(f"{base}/studies/{s}/series/{se1}/metadata").json()) == 2
    assert _blobs(fresh_server) == 4
    [series] = client.search_for_series(s, search_filters={"SeriesInstanceUID": se1})
    assert series["00201209"]["Value"] == [2]

    # a series, under the wrong study first
    assert httpx.delete(f"{base}/studies/1.2.3.4/series/{se2}").status_code == 404
    assert httpx.delete(f"{base}/studies/{s}/series/{se2}").status_code == 204
    assert httpx.get(f"{base}/studies/{s}/series/{se2}/metadata").status_code == 404
    [study_row] = client.search_for_studies(search_filters={"StudyInstanceUID": s})
    assert study_row["00201208"]["Value"] == [2]
    assert _blobs(fresh_server) == 2

    # the study
    assert httpx.delete(f"{base}/studies/{s}").status_code == 204
    assert httpx.get(f"{base}/studies/{s}/metadata").status_code == 404
    assert httpx.get(f"{base}/studies/{s}").status_code == 404
    assert client.search_for_studies(search_filters={"StudyInstanceUID": s}) == []
    assert _blobs(fresh_server) == 0
    assert httpx.delete(f"{base}/studies/{s}").status_code == 404
    assert httpx.delete(f"{base}/studies/not-a-uid").status_code == 400
