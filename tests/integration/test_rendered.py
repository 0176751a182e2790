"""Rendered and thumbnail resources over HTTP (PS3.18 §10.4.1.1.3, checklist REND).

Pixels are checked against the independent pydicom oracle of tests/unit/render: PNG within
±1 grey level for every decodable sample the server holds, JPEG q95 within 35 dB PSNR.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image

from server.dicom.uids import is_valid_uid
from tests.conftest import RunningServer
from tests.unit.render.render_reference import Sample, manifest, psnr, read, reference_render

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")

def _addressable(sample: Sample) -> bool:
    """Files with valid Study/Series/SOP UIDs: the only ones a URL can name (the others are
    refused at ingest, which tests/integration/test_stow.py checks)."""
    try:
        ds = pydicom.dcmread(sample.path, stop_before_pixels=True, force=True)
        ids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    except Exception:
        return False
    return all(is_valid_uid(u) for u in ids)


SAMPLES = [s for s in manifest() if _addressable(s)]
IMAGES = [s for s in SAMPLES if s.has_pixels and s.decodes]
# Over HTTP, frames up to 1 MP (the float64 oracle is slow on mammograms); unit tests take them all.
HTTP_IMAGES = [s for s in IMAGES if int(s.row["Rows"] or 0) * int(s.row["Columns"] or 0) <= 1 << 20]
BROKEN = [s for s in SAMPLES if s.has_pixels and not s.decodes]
BIG = [s for s in IMAGES if s.row["Rows"] and int(s.row["Rows"]) >= 64][:40]
MULTI = [s for s in IMAGES if (s.row["NumberOfFrames"] or "1").isdigit() and int(s.row["NumberOfFrames"] or 1) > 1]
CT = "cornerstoneWADOImageLoader/CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm"
MULTIPART_JPEG = 'multipart/related; type="image/jpeg"'


def _ids(samples: list[Sample]) -> list[str]:
    return [s.name for s in samples]


@cache
def uids(name: str) -> tuple[str, str, str]:
    ds = pydicom.dcmread(next(s.path for s in SAMPLES if s.name == name), stop_before_pixels=True, force=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def instance_url(server: RunningServer, name: str) -> str:
    study, series, sop = uids(name)
    return f"{server.dicomweb}/studies/{study}/series/{series}/instances/{sop}"


def stored(sample: Sample, server: RunningServer, client: httpx.Client, tmp: Path) -> Sample | None:
    """The file the server holds for this sample's UIDs (files sharing a SOP Instance UID
    replace each other on import), fetched as Part-10 over WADO-URI for the oracle; None when
    import refused the file (then every URL for it must be 404)."""
    study, series, sop = uids(sample.name)
    r = client.get(f"{server.base}/wado", params={"requestType": "WADO", "studyUID": study, "seriesUID": series,
                                                  "objectUID": sop, "contentType": "application/dicom"})
    if r.status_code == 404:
        return None
    assert r.status_code == 200
    path = tmp / "stored.dcm"
    path.write_bytes(r.content)
    return Sample(path, sample.row)


def image(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def parts(response: httpx.Response) -> list[bytes]:
    """Bodies of a multipart/related answer."""
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    chunks = response.content.split(b"--" + boundary.encode())[1:-1]
    return [c.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") for c in chunks]


@pytest.fixture(scope="module")
def client(sample_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as c:
        yield c


# ---------------------------------------------------------------- pixels vs the oracle


@pytest.mark.parametrize("sample", HTTP_IMAGES, ids=_ids(HTTP_IMAGES))
def test_png_of_frame_1_matches_pydicom_reference(sample: Sample, sample_server: RunningServer,
                                                  client: httpx.Client, tmp_path: Path) -> None:
    held = stored(sample, sample_server, client, tmp_path)
    url = instance_url(sample_server, sample.name) + "/frames/1/rendered"
    if held is None:
        assert client.get(url).status_code == 404
        return
    try:
        expected = reference_render(read(held), 0)
    except (ValueError, RuntimeError, AttributeError, NotImplementedError):
        expected = None  # another (broken) file with this SOP Instance UID is the one stored

    r = client.get(url, headers={"Accept": "image/png"})

    if expected is None:
        assert r.status_code == 501, r.text
        return
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    out = image(r.content)
    assert out.shape == expected.shape
    diff = np.abs(out.astype(np.int16) - expected.astype(np.int16))
    assert int(diff.max()) <= 1


@pytest.mark.parametrize("sample", BIG, ids=_ids(BIG))
def test_jpeg_q95_is_within_35_db_of_reference(sample: Sample, sample_server: RunningServer,
                                               client: httpx.Client, tmp_path: Path) -> None:
    held = stored(sample, sample_server, client, tmp_path)
    url = instance_url(sample_server, sample.name) + "/frames/1/rendered?quality=95"
    if held is None:
        assert client.get(url).status_code == 404
        return
    try:
        expected = reference_render(read(held), 0)
    except (ValueError, RuntimeError, AttributeError, NotImplementedError):
        # another (broken) file with this SOP Instance UID is the one stored: said plainly
        assert client.get(url).status_code == 501
        return

    r = client.get(url)

    assert r.status_code == 200
    assert r.headers["content-type"] == "image/jpeg"
    assert psnr(image(r.content), expected) >= 35.0


@pytest.mark.parametrize("sample", BROKEN, ids=_ids(BROKEN))
def test_undecodable_sample_is_a_clear_4xx_or_501_never_500(sample: Sample, sample_server: RunningServer,
                                                            client: httpx.Client) -> None:
    url = instance_url(sample_server, sample.name) + "/rendered"

    r = client.get(url)

    # pydicom's whole-file decode failed on these; our one-frame decode may still succeed
    assert r.status_code in (200, 400, 404, 406, 501), r.text
    if r.status_code != 200:
        assert r.json()["error"]


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5"])
def test_compressed_syntaxes_render_over_http(syntax: str, sample_server: RunningServer, client: httpx.Client,
                                              tmp_path: Path) -> None:
    checked = 0
    for sample in (s for s in HTTP_IMAGES if s.row["TransferSyntaxUID"] == syntax):
        held = stored(sample, sample_server, client, tmp_path)
        if held is None:
            continue
        if str(read(held).file_meta.TransferSyntaxUID) != syntax:
            continue  # a file with the same SOP Instance UID in another syntax won
        r = client.get(instance_url(sample_server, sample.name) + "/frames/1/rendered?accept=image/png")
        assert r.status_code == 200, (sample.name, r.text)
        diff = np.abs(image(r.content).astype(np.int16) - reference_render(read(held), 0).astype(np.int16))
        assert int(diff.max()) <= 1
        checked += 1
    assert checked >= 1


# ---------------------------------------------------------------- negotiation and parameters


def test_accept_query_parameter_overrides_the_header(sample_server: RunningServer, client: httpx.Client) -> None:
    r = client.get(instance_url(sample_server, CT) + "/rendered?accept=image%2Fpng", headers={"Accept": "image/jpeg"})

    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG")


def test_default_is_a_single_jpeg(sample_server: RunningServer, client: httpx.Client) -> None:
    r = client.get(instance_url(sample_server, CT) + "/rendered")

    assert r.headers["content-type"] == "image/jpeg"
    assert r.content.startswith(b"\xff\xd8")
    assert image(r.content).shape == (512, 512)


def test_unsupported_media_type_is_406(sample_server: RunningServer, client: httpx.Client) -> None:
    r = client.get(instance_url(sample_server, CT) + "/rendered", headers={"Accept": "application/dicom"})

    assert r.status_code == 406


@pytest.mark.parametrize(("query", "name"), [
    ("window=abc", "window"), ("window=40", "window"), ("window=40,0", "window"), ("window=40,400,cubic", "window"),
    ("viewport=1", "viewport"), ("viewport=0,10", "viewport"), ("quality=0", "quality"), ("quality=x", "quality"),
    ("annotation=name", "annotation"), ("preset=nope", "preset"),
])  # fmt: skip
def test_bad_parameter_is_400_naming_it(query: str, name: str, sample_server: RunningServer,
                                        client: httpx.Client) -> None:
    r = client.get(instance_url(sample_server, CT) + "/rendered?" + query)

    assert r.status_code == 400
    assert r.json()["error"].startswith(name + ":")


def test_unknown_rendering_parameters_are_ignored(sample_server: RunningServer, client: httpx.Client) -> None:
    query = "viewport=256,256&quality=80&iccprofile=srgb&charset=UTF-8"

    r = client.get(instance_url(sample_server, CT) + "/rendered?" + query)

    assert r.status_code == 200
    assert image(r.content).shape == (256, 256)


def test_window_parameter_matches_reference_windowing(sample_server: RunningServer, client: httpx.Client,
                                                     tmp_path: Path) -> None:
    ds = read(stored(next(s for s in SAMPLES if s.name == CT), sample_server, client, tmp_path))
    ds.WindowCenter, ds.WindowWidth = -600, 1500

    r = client.get(instance_url(sample_server, CT) + "/rendered?window=-600,1500&accept=image/png")

    diff = np.abs(image(r.content).astype(np.int16) - reference_render(ds, 0).astype(np.int16))
    assert int(diff.max()) <= 1


def test_preset_is_the_same_as_its_window(sample_server: RunningServer, client: httpx.Client) -> None:
    base = instance_url(sample_server, CT) + "/rendered?accept=image/png"

    by_preset = client.get(base + "&preset=lung").content
    by_window = client.get(base + "&window=-600,1500").content

    assert image(by_preset).tolist() == image(by_window).tolist()
    assert image(by_preset).tolist() != image(client.get(base).content).tolist()


def test_viewport_keeps_aspect_and_crops_the_source_region(sample_server: RunningServer,
                                                           client: httpx.Client) -> None:
    r = client.get(instance_url(sample_server, CT) + "/rendered?viewport=100,50,0,0,256,512&accept=image/png")

    assert image(r.content).shape == (50, 25)


def test_annotation_burns_text_into_the_image(sample_server: RunningServer, client: httpx.Client) -> None:
    base = instance_url(sample_server, CT) + "/rendered?accept=image/png"

    plain = image(client.get(base).content)
    annotated = image(client.get(base + "&annotation=patient,technique").content)

    assert plain.shape == annotated.shape
    assert (plain != annotated).any()
    assert (plain[-40:] != annotated[-40:]).any()  # technique line at the bottom


# ---------------------------------------------------------------- levels and framing


def test_multi_frame_frame_n_differs_from_frame_1(sample_server: RunningServer, client: httpx.Client) -> None:
    sample = next(s for s in MULTI if s.name == "pydicom-data/emri_small.dcm")
    base = instance_url(sample_server, sample.name)

    first = image(client.get(base + "/frames/1/rendered?accept=image/png").content)
    fifth = image(client.get(base + "/frames/5/rendered?accept=image/png").content)

    assert first.shape == fifth.shape
    assert (first != fifth).any()
    diff = np.abs(fifth.astype(np.int16) - reference_render(read(sample), 4).astype(np.int16))
    assert int(diff.max()) <= 1


def test_frame_list_is_multipart_one_part_per_frame(sample_server: RunningServer, client: httpx.Client) -> None:
    base = instance_url(sample_server, "pydicom-data/emri_small.dcm")

    r = client.get(base + "/frames/1,3,5/rendered", headers={"Accept": MULTIPART_JPEG})

    assert r.status_code == 200
    assert r.headers["content-type"].startswith(MULTIPART_JPEG)
    bodies = parts(r)
    assert len(bodies) == 3
    assert all(b.startswith(b"\xff\xd8") for b in bodies)


def test_several_frames_as_single_jpeg_is_406(sample_server: RunningServer, client: httpx.Client) -> None:
    base = instance_url(sample_server, "pydicom-data/emri_small.dcm")

    r = client.get(base + "/frames/1,2/rendered", headers={"Accept": "image/jpeg"})

    assert r.status_code == 406


def test_multi_frame_instance_as_gif_is_animated(sample_server: RunningServer, client: httpx.Client) -> None:
    base = instance_url(sample_server, "pydicom-data/emri_small.dcm")

    r = client.get(base + "/rendered", headers={"Accept": "image/gif"})

    assert r.headers["content-type"] == "image/gif"
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.n_frames == 10


def test_study_rendered_single_part_only_is_406(sample_server: RunningServer, client: httpx.Client) -> None:
    study, _, _ = uids(CT)

    r = client.get(f"{sample_server.dicomweb}/studies/{study}/rendered", headers={"Accept": "image/jpeg"})

    assert r.status_code == 406  # checklist REND-05


def test_series_rendered_is_multipart_with_every_frame(sample_server: RunningServer, client: httpx.Client) -> None:
    study, series, _ = uids("pydicom-data/emri_small.dcm")

    r = client.get(f"{sample_server.dicomweb}/studies/{study}/series/{series}/rendered?viewport=32,32",
                   headers={"Accept": MULTIPART_JPEG})

    assert r.status_code == 200
    bodies = parts(r)
    assert len(bodies) >= 10
    assert all(image(b).shape == (32, 32) for b in bodies)


# ---------------------------------------------------------------- thumbnails


@pytest.mark.parametrize("level", ["study", "series", "instance", "frame"])
def test_thumbnail_is_one_small_jpeg_at_every_level(level: str, sample_server: RunningServer,
                                                     client: httpx.Client) -> None:
    study, series, _ = uids(CT)
    url = {
        "study": f"{sample_server.dicomweb}/studies/{study}/thumbnail",
        "series": f"{sample_server.dicomweb}/studies/{study}/series/{series}/thumbnail",
        "instance": instance_url(sample_server, CT) + "/thumbnail",
        "frame": instance_url(sample_server, CT) + "/frames/1/thumbnail",
    }[level]

    r = client.get(url, headers={"Accept": "image/jpeg"})

    assert r.status_code == 200
    assert r.headers["content-type"] == "image/jpeg"
    assert max(image(r.content).shape[:2]) == 128


def test_thumbnail_viewport_and_multipart_accept(sample_server: RunningServer, client: httpx.Client) -> None:
    r = client.get(instance_url(sample_server, CT) + "/thumbnail?viewport=64,64", headers={"Accept": MULTIPART_JPEG})

    assert r.headers["content-type"].startswith(MULTIPART_JPEG)
    (body,) = parts(r)
    assert image(body).shape == (64, 64)


def test_thumbnail_never_burns_patient_annotation(sample_server: RunningServer, client: httpx.Client) -> None:
    base = instance_url(sample_server, CT) + "/thumbnail?accept=image/png"

    assert client.get(base + "&annotation=patient").content == client.get(base).content


# ---------------------------------------------------------------- caching headers


def test_etag_and_if_none_match_give_304(sample_server: RunningServer, client: httpx.Client) -> None:
    url = instance_url(sample_server, CT) + "/rendered?window=40,400"
    first = client.get(url)
    etag = first.headers["etag"]

    again = client.get(url, headers={"If-None-Match": etag})
    other = client.get(url.replace("40,400", "50,400"), headers={"If-None-Match": etag})

    assert first.headers["cache-control"]
    assert again.status_code == 304
    assert other.status_code == 200
    assert other.headers["etag"] != etag


def test_window_change_on_a_decoded_frame_is_fast(sample_server: RunningServer, client: httpx.Client) -> None:
    import time

    url = instance_url(sample_server, CT) + "/rendered?window={},400"
    client.get(url.format(0))
    times = []
    for center in range(1, 11):
        t = time.perf_counter()
        assert client.get(url.format(center)).status_code == 200
        times.append(time.perf_counter() - t)

    assert sorted(times)[len(times) // 2] < 0.05  # ~3 ms here; generous for a loaded CI box


def test_concurrent_windows_on_one_frame_each_get_their_own_render(sample_server: RunningServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    frame = instance_url(sample_server, "pydicom-data/emri_small.dcm") + "/frames/7/rendered"
    url = frame + "?accept=image/png&window={},300"
    centers = list(range(100, 260, 20))

    def get(center: int) -> bytes:
        return httpx.get(url.format(center), timeout=60).content

    with ThreadPoolExecutor(len(centers)) as pool:  # all at once: one decode, shared
        together = list(pool.map(get, centers))
    alone = [get(c) for c in centers]

    assert [image(b).tolist() for b in together] == [image(b).tolist() for b in alone]
    assert len({bytes(b) for b in together}) == len(centers)


# ---------------------------------------------------------------- documents


def test_encapsulated_pdf_renders_as_application_pdf(sample_server: RunningServer, client: httpx.Client) -> None:
    url = instance_url(sample_server, "orthanc-tests/sample-pdf.dcm") + "/rendered"

    r = client.get(url)

    assert r.status_code == 200
    assert r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF")
    assert r.content.rstrip(b"\0").endswith(b"%%EOF") or b"%%EOF" in r.content[-32:]


# ---------------------------------------------------------------- a store of its own


def test_replaced_and_deleted_instances_are_not_served_from_cache(fresh_server: RunningServer) -> None:
    import time

    from tests.conftest import SAMPLES as SAMPLE_DIR
    from tests.conftest import multipart_body, series_from, stow_headers

    (original,) = series_from(SAMPLE_DIR / "pydicom" / "CT_small.dcm", 1)
    ds = pydicom.dcmread(io.BytesIO(original))
    changed = ds.pixel_array.copy()
    changed[:32] = changed.max()
    ds.PixelData = changed.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    url = (f"{fresh_server.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}")
    stow = f"{fresh_server.dicomweb}/studies"
    with httpx.Client(timeout=60) as c:
        assert c.post(stow, content=multipart_body([original]), headers=stow_headers()).status_code == 200
        before = c.get(url + "/rendered?accept=image/png")
        assert c.post(stow, content=multipart_body([buf.getvalue()]), headers=stow_headers()).status_code == 200
        time.sleep(2.1)  # rows are reused for ROW_TTL seconds
        after = c.get(url + "/rendered?accept=image/png")
        assert c.delete(url).status_code == 204
        time.sleep(2.1)
        gone = c.get(url + "/rendered?accept=image/png")

    assert before.status_code == after.status_code == 200
    assert before.headers["etag"] != after.headers["etag"]
    assert (image(before.content)[:32] != image(after.content)[:32]).any()
    assert gone.status_code == 404


@pytest.mark.parametrize("executor", ["process", "inline"])
def test_other_render_executors_give_the_same_pixels(executor: str, tmp_path: Path) -> None:
    import shutil

    from tests.conftest import SAMPLES as SAMPLE_DIR
    from tests.conftest import import_files, start_server

    source = SAMPLE_DIR / "pydicom-data" / "emri_small.dcm"
    data = tmp_path / "data"
    import_files(data, [source])
    server = start_server(data, env={"LIGHTBOX_RENDER_EXECUTOR": executor})
    try:
        study, series, sop = uids("pydicom-data/emri_small.dcm")
        base = f"{server.dicomweb}/studies/{study}/series/{series}/instances/{sop}"
        with httpx.Client(timeout=60) as c:
            fifth = c.get(base + "/frames/5/rendered?accept=image/png")
            windowed = c.get(base + "/frames/5/rendered?accept=image/png&window=300,600")
            gif = c.get(base + "/rendered?accept=image/gif")
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)

    expected = reference_render(read(next(s for s in SAMPLES if s.name == "pydicom-data/emri_small.dcm")), 4)
    assert int(np.abs(image(fifth.content).astype(np.int16) - expected.astype(np.int16)).max()) <= 1
    assert (image(windowed.content) != image(fifth.content)).any()
    with Image.open(io.BytesIO(gif.content)) as im:
        assert im.n_frames == 10
