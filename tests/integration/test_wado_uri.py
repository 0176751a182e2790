"""WADO-URI at /wado (PS3.18 §9.4, checklist URI-01..06), against the sample server."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image

from tests.conftest import SAMPLES, RunningServer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")

CT = SAMPLES / "cornerstoneWADOImageLoader" / "CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm"
SMALL = SAMPLES / "pydicom" / "CT_small.dcm"
MULTI = SAMPLES / "pydicom-data" / "emri_small.dcm"
OHIF_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def query(path: object, **extra: str) -> dict[str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)  # type: ignore[arg-type]
    return {"requestType": "WADO", "studyUID": str(ds.StudyInstanceUID), "seriesUID": str(ds.SeriesInstanceUID),
            "objectUID": str(ds.SOPInstanceUID), **extra}


def image(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


@pytest.fixture(scope="module")
def wado(sample_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sample_server.base, timeout=60) as c:
        yield c


@pytest.mark.parametrize("missing", ["requestType", "studyUID", "seriesUID", "objectUID"])
def test_missing_required_parameter_is_400_naming_it(missing: str, wado: httpx.Client) -> None:
    params = query(SMALL)
    del params[missing]

    r = wado.get("/wado", params=params)

    assert r.status_code == 400
    assert r.json()["error"].startswith(missing)


@pytest.mark.parametrize(("name", "value"), [
    ("requestType", "WADO-RS"), ("objectUID", "1.2.abc"), ("frameNumber", "0"), ("imageQuality", "101"),
    ("rows", "-5"), ("region", "0.5,0.5,0.2,0.9"), ("windowWidth", "x"), ("annotation", "everything"),
])  # fmt: skip
def test_malformed_parameter_is_400_naming_it(name: str, value: str, wado: httpx.Client) -> None:
    params = query(SMALL, contentType="image/jpeg", windowCenter="40", windowWidth="400")
    params[name] = value

    r = wado.get("/wado", params=params)

    assert r.status_code == 400
    assert r.json()["error"].startswith(name)


def test_unknown_object_is_404(wado: httpx.Client) -> None:
    r = wado.get("/wado", params={**query(SMALL), "objectUID": "1.2.3.4.5.6.7.8.9"})

    assert r.status_code == 404


def test_ohif_request_returns_the_stored_part10_ignoring_accept(wado: httpx.Client) -> None:
    r = wado.get("/wado", params=query(CT, contentType="application/dicom", transferSyntax="*"),
                 headers={"Accept": OHIF_ACCEPT})

    assert r.status_code == 200
    assert r.headers["content-type"] == "application/dicom"
    sop = pydicom.dcmread(CT, stop_before_pixels=True).SOPInstanceUID
    same_uid = [p for p in SAMPLES.rglob("*.dcm") if p.name.startswith("CTImage.dcm")
                and pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID == sop]
    # every variant of this CT shares its SOP Instance UID; the one imported last is stored, byte for byte
    assert hashlib.sha256(r.content).hexdigest() in {hashlib.sha256(p.read_bytes()).hexdigest() for p in same_uid}


def test_other_transfer_syntax_that_cannot_be_made_is_406(wado: httpx.Client) -> None:
    r = wado.get("/wado", params=query(CT, contentType="application/dicom", transferSyntax="1.2.840.10008.1.2.4.50"))

    assert r.status_code == 406


def test_default_content_type_single_frame_is_jpeg_multi_frame_is_dicom(wado: httpx.Client) -> None:
    single = wado.get("/wado", params=query(CT))
    multi = wado.get("/wado", params=query(MULTI))

    assert single.headers["content-type"] == "image/jpeg"
    assert multi.headers["content-type"] == "application/dicom"


def test_png_with_window_equals_the_wado_rs_render(sample_server: RunningServer, wado: httpx.Client) -> None:
    q = query(CT, contentType="image/png", windowCenter="-600", windowWidth="1500")
    rs = (f"/dicomweb/studies/{q['studyUID']}/series/{q['seriesUID']}/instances/{q['objectUID']}"
          "/rendered?window=-600,1500&accept=image/png")

    uri = wado.get("/wado", params=q)

    assert uri.headers["content-type"] == "image/png"
    assert image(uri.content).tolist() == image(wado.get(rs).content).tolist()


def test_rows_and_columns_are_maxima_keeping_aspect(wado: httpx.Client) -> None:
    r = wado.get("/wado", params=query(CT, contentType="image/png", rows="100", columns="300"))

    assert image(r.content).shape == (100, 100)


def test_region_crops_fractions_of_the_image(wado: httpx.Client) -> None:
    r = wado.get("/wado", params=query(CT, contentType="image/png", region="0,0,0.5,0.25"))

    assert image(r.content).shape == (128, 256)


def test_frame_number_selects_the_frame_and_out_of_range_is_400(wado: httpx.Client) -> None:
    first = wado.get("/wado", params=query(MULTI, contentType="image/png", frameNumber="1"))
    fifth = wado.get("/wado", params=query(MULTI, contentType="image/png", frameNumber="5"))
    beyond = wado.get("/wado", params=query(MULTI, contentType="image/png", frameNumber="11"))

    assert (image(first.content) != image(fifth.content)).any()
    assert beyond.status_code == 400
    assert beyond.json()["error"].startswith("frameNumber")


def test_gif_of_multi_frame_object_is_animated(wado: httpx.Client) -> None:
    r = wado.get("/wado", params=query(MULTI, contentType="image/gif"))

    with Image.open(io.BytesIO(r.content)) as im:
        assert im.n_frames == 10


def test_image_quality_changes_the_jpeg(wado: httpx.Client) -> None:
    low = wado.get("/wado", params=query(CT, contentType="image/jpeg", imageQuality="10"))
    high = wado.get("/wado", params=query(CT, contentType="image/jpeg", imageQuality="95"))

    assert len(low.content) < len(high.content)


def test_anonymize_yes_returns_a_deidentified_part10(wado: httpx.Client) -> None:
    stored = wado.get("/wado", params=query(CT, contentType="application/dicom"))
    original = pydicom.dcmread(io.BytesIO(stored.content))

    r = wado.get("/wado", params=query(CT, contentType="application/dicom", anonymize="yes"))

    assert r.status_code == 200
    ds = pydicom.dcmread(io.BytesIO(r.content))
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.SOPInstanceUID != original.SOPInstanceUID
    assert str(ds.get("PatientName", "")) != str(original.PatientName)
    assert ds.PixelData == original.PixelData


def test_ohif_accept_header_does_not_change_a_rendered_answer(wado: httpx.Client) -> None:
    r = wado.get("/wado", params=query(CT, contentType="image/png"), headers={"Accept": OHIF_ACCEPT})

    assert r.headers["content-type"] == "image/png"


def test_unsupported_content_type_is_406(wado: httpx.Client) -> None:
    r = wado.get("/wado", params=query(CT, contentType="video/mp4"))

    assert r.status_code == 406
