"""WADO-RS against a real server: every decodable sample, retrieved and compared with pydicom.

The samples share SOP Instance UIDs between variants (MR_small in eight encodings), so this
module imports copies with fresh UIDs into a server of its own; the oracle is pydicom's
decode of the *original* file.
"""

from __future__ import annotations

import copy
import hashlib
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

from tests.conftest import RunningServer, import_files, manifest, start_server

ELE = "1.2.840.10008.1.2.1"
OHIF_QUOTED = 'multipart/related; type="application/octet-stream"; transfer-syntax="*"'
OHIF_UNQUOTED = "multipart/related; type=application/octet-stream; transfer-syntax=*"
LOSSLESS_TARGETS = ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"]


@dataclass(frozen=True)
class Copy:
    name: str
    original: Path
    study: str
    series: str
    sop: str
    transfer_syntax: str
    frames: int

    def url(self, base: str) -> str:
        return f"{base}/studies/{self.study}/series/{self.series}/instances/{self.sop}"


def _read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _pixels(ds: pydicom.Dataset) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.pixel_array


def _digest(arr: np.ndarray) -> tuple[tuple[int, ...], str, str]:
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))  # big endian decodes compare equal
    return arr.shape, str(arr.dtype), hashlib.sha256(arr.tobytes()).hexdigest()


@cache
def _oracle(path: Path, frames: int) -> tuple[tuple, tuple]:
    """pydicom's decode of the original file, as digests: (all frames, last frame)."""
    arr = _pixels(_read(path))
    return _digest(arr), _digest(arr[frames - 1] if frames > 1 else arr)


def _decodable() -> list[Path]:
    return [s.path for s in manifest() if s.decodes and s.row["TransferSyntaxUID"]]


@pytest.fixture(scope="module")
def wado() -> Iterator[tuple[RunningServer, dict[str, Copy]]]:
    tmp = Path(tempfile.mkdtemp(prefix="lightbox-wado-"))
    copies: dict[str, Copy] = {}
    src = tmp / "samples"
    src.mkdir()
    for n, path in enumerate(_decodable()):
        try:
            ds = _read(path)
            if "PixelData" not in ds or "TransferSyntaxUID" not in ds.file_meta:
                continue
            ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            out = src / f"{n:03d}.dcm"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.save_as(out)
        except Exception:
            continue
        name = str(path.relative_to(path.parents[1]))
        copies[name] = Copy(name, path, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                            str(ds.file_meta.TransferSyntaxUID), int(ds.get("NumberOfFrames") or 1))
    import_files(tmp / "data", [src])
    server = start_server(tmp / "data")
    yield server, copies
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def stored(wado: tuple[RunningServer, dict[str, Copy]]) -> list[Copy]:
    """The copies the server accepted (lightbox import rejects a few malformed ones)."""
    server, copies = wado
    with httpx.Client(timeout=30) as client:
        out = [c for c in copies.values() if client.get(c.url(server.dicomweb) + "/metadata").status_code == 200]
    assert len(out) >= 150, f"only {len(out)} samples stored"
    return out


def _parts(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/related body the strict way (RFC 2046), keeping part headers verbatim."""
    boundary = re.search(r"boundary=\"?([^\";]+)", response.headers["content-type"]).group(1)
    body = response.content
    assert body.startswith(f"--{boundary}\r\n".encode())
    assert body.endswith(f"\r\n--{boundary}--\r\n".encode())
    chunks = body[: -len(f"\r\n--{boundary}--\r\n")].split(f"\r\n--{boundary}\r\n".encode())
    chunks[0] = chunks[0][len(f"--{boundary}\r\n"):]
    parts = []
    for chunk in chunks:
        head, _, data = chunk.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n"))
        parts.append((headers, data))
    return parts


def _frame_pixels(original: pydicom.Dataset, data: bytes, ts: str, photometric: str | None = None) -> np.ndarray:
    """Decode one delivered frame with pydicom, using the original's pixel description."""
    ds = copy.deepcopy(original)
    ds.file_meta.TransferSyntaxUID = ts
    ds.NumberOfFrames = 1
    if photometric:
        ds.PhotometricInterpretation = photometric
    ds.PixelData = encapsulate([data]) if ts != ELE else data
    if ts == ELE:
        ds["PixelData"].VR = "OB" if ds.BitsAllocated <= 8 else "OW"
        if ds.get("SamplesPerPixel", 1) > 1 and photometric == "RGB":
            ds.PlanarConfiguration = 0
    return _pixels(ds)


def _first_frame(arr: np.ndarray, frames: int) -> np.ndarray:
    return arr[0] if frames > 1 else arr


# ---------------------------------------------------------------- retrieve instances


def test_retrieve_instance_pixels_equal_pydicom_for_every_decodable_sample(wado, stored) -> None:
    server, _ = wado
    client = DICOMwebClient(server.dicomweb)
    mismatched = []
    for c in stored:
        try:
            got = client.retrieve_instance(c.study, c.series, c.sop)
        except IndexError:
            mismatched.append(c.name + " (no part)")
            continue
        sent_ts = str(got.file_meta.TransferSyntaxUID)
        assert sent_ts not in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.2"), c.name  # PS3.18 §8.7.3
        if _digest(_pixels(got)) != _oracle(c.original, c.frames)[0]:
            mismatched.append(c.name)
    assert mismatched == []


def test_retrieve_series_and_study_stream_every_instance(wado, stored) -> None:
    server, _ = wado
    client = DICOMwebClient(server.dicomweb)
    c = next(x for x in stored if x.transfer_syntax == "1.2.840.10008.1.2.2")  # transcoded on the way
    series = client.retrieve_series(c.study, c.series)
    study = client.retrieve_study(c.study)
    assert [str(d.SOPInstanceUID) for d in series] == [c.sop]
    assert [str(d.SOPInstanceUID) for d in study] == [c.sop]
    assert np.array_equal(_pixels(study[0]), _pixels(_read(c.original)))


def test_every_part_declares_its_transfer_syntax_and_location(wado, stored) -> None:
    server, _ = wado
    c = next(x for x in stored if x.transfer_syntax == "1.2.840.10008.1.2")
    r = httpx.get(c.url(server.dicomweb), headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200
    [(headers, data)] = _parts(r)
    assert headers["Content-Type"] == f"application/dicom; transfer-syntax={ELE}"
    assert headers["Content-Location"] == c.url(server.dicomweb)
    assert data[128:132] == b"DICM"


@pytest.mark.parametrize("target", LOSSLESS_TARGETS)
def test_transcoded_lossless_output_decodes_to_the_same_pixels(wado, stored, target) -> None:
    server, _ = wado
    client = DICOMwebClient(server.dicomweb)
    by_syntax: dict[str, Copy] = {}
    for c in stored:
        ds = _read(c.original)
        # openjpeg's default 6 resolution levels need 32+ pixels a side
        if ds.BitsAllocated in (8, 16) and ds.get("SamplesPerPixel", 1) in (1, 3) and c.frames <= 4 \
                and min(ds.Rows, ds.Columns) >= 32:
            by_syntax.setdefault(c.transfer_syntax, c)
    assert len(by_syntax) >= 8
    for c in by_syntax.values():
        got = client.retrieve_instance(c.study, c.series, c.sop, media_types=(("application/dicom", target),))
        assert str(got.file_meta.TransferSyntaxUID) == target, c.name
        assert str(got.SOPInstanceUID) == c.sop
        assert np.array_equal(_pixels(got), _pixels(_read(c.original))), f"{c.name} -> {target}"


def test_single_part_and_zip_downloads(wado, stored) -> None:
    server, _ = wado
    c = stored[0]
    single = httpx.get(c.url(server.dicomweb), headers={"Accept": "application/dicom; transfer-syntax=*"})
    assert single.status_code == 200
    assert single.headers["content-type"].startswith("application/dicom; transfer-syntax=")
    assert single.content[128:132] == b"DICM"
    z = httpx.get(f"{server.dicomweb}/studies/{c.study}", headers={"Accept": "application/zip"})
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    import io
    import zipfile

    names = zipfile.ZipFile(io.BytesIO(z.content)).namelist()
    assert names == [f"{c.study}/{c.series}/{c.sop}.dcm"]


def test_unproducible_syntax_and_media_type_are_406_with_a_reason(wado, stored) -> None:
    server, _ = wado
    c = stored[0]
    r = httpx.get(c.url(server.dicomweb), headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                             "transfer-syntax=1.2.840.10008.1.2.4.100"})
    assert r.status_code == 406 and "1.2.840.10008.1.2.4.100" in r.json()["error"]
    r = httpx.get(c.url(server.dicomweb), headers={"Accept": "text/html"})
    assert r.status_code == 406
    r = httpx.get(f"{server.dicomweb}/studies/{c.study}", headers={"Accept": "application/dicom"})
    assert r.status_code == 406  # single part holds one instance only


def test_q_values_pick_the_preferred_producible_syntax(wado, stored) -> None:
    server, _ = wado
    c = next(x for x in stored if x.transfer_syntax == ELE and _read(x.original).BitsAllocated == 16)
    accept = ('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.100; q=0.9, '
              'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80; q=0.5, '
              'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.5; q=0.7')
    r = httpx.get(c.url(server.dicomweb), headers={"Accept": accept})
    assert r.status_code == 200
    [(headers, _)] = _parts(r)
    assert headers["Content-Type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.5"


# ---------------------------------------------------------------- frames


@pytest.mark.parametrize("accept", [OHIF_QUOTED, OHIF_UNQUOTED])
def test_ohif_frame_accept_gets_browser_decodable_frames_with_exact_part_header(wado, stored, accept, request) -> None:
    """Every sample with OHIF's default (quoted) Accept; one per stored syntax with the unquoted one."""
    if accept == OHIF_UNQUOTED:
        stored = list({c.transfer_syntax: c for c in stored}.values())
    server, _ = wado
    http = httpx.Client(timeout=30)
    request.addfinalizer(http.close)
    browser = {ELE, "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
               "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
               "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
               "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
    wrong = []
    for c in stored:
        r = http.get(c.url(server.dicomweb) + f"/frames/{c.frames}", headers={"Accept": accept})
        assert r.status_code == 200, (c.name, r.text)
        [(headers, data)] = _parts(r)
        m = re.fullmatch(r"([a-z0-9\-+/]+); transfer-syntax=([0-9.]+)", headers["Content-Type"])
        assert m, headers
        sent = m.group(2)
        expected = c.transfer_syntax if c.transfer_syntax in browser else ELE
        assert sent == expected, c.name
        original = _read(c.original)
        pi = "RGB" if sent == ELE and c.transfer_syntax != sent and "YBR" in original.PhotometricInterpretation \
            and c.transfer_syntax not in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99") \
            else None
        try:
            if _digest(_frame_pixels(original, data, sent, pi)) != _oracle(c.original, c.frames)[1]:
                wrong.append(c.name)
        except ValueError as exc:  # e.g. a YBR_FULL_422 label on full-size native data
            wrong.append(f"{c.name}: {exc}")
    assert wrong == []


def test_frames_uncompressed_when_asked_and_compressed_as_stored_by_image_type(wado, stored) -> None:
    server, _ = wado
    c = next(x for x in stored if x.transfer_syntax == "1.2.840.10008.1.2.4.80")
    original = _read(c.original)
    url = c.url(server.dicomweb) + "/frames/1"
    raw = httpx.get(url, headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    [(headers, data)] = _parts(raw)
    assert headers["Content-Type"] == f"application/octet-stream; transfer-syntax={ELE}"
    assert np.array_equal(_frame_pixels(original, data, ELE), _first_frame(_pixels(original), c.frames))
    jls = httpx.get(url, headers={"Accept": 'multipart/related; type="image/jls"'})
    [(headers, data)] = _parts(jls)
    assert headers["Content-Type"] == "image/jls; transfer-syntax=1.2.840.10008.1.2.4.80"
    assert data[:2] == b"\xff\xd8"


def test_python_client_frames_default_accept_returns_stored_frames(wado, stored) -> None:
    server, _ = wado
    client = DICOMwebClient(server.dicomweb)
    c = next(x for x in stored if x.transfer_syntax == "1.2.840.10008.1.2.4.90" and x.frames == 1)
    [frame] = client.retrieve_instance_frames(c.study, c.series, c.sop, [1])
    original = _read(c.original)
    assert np.array_equal(_frame_pixels(original, frame, c.transfer_syntax), _pixels(original))


def test_frame_list_order_range_etag_and_errors(wado, stored) -> None:
    server, _ = wado
    c = next(x for x in stored if x.frames >= 3 and x.transfer_syntax == ELE)
    url = c.url(server.dicomweb)
    r = httpx.get(url + "/frames/3%2C1", headers={"Accept": OHIF_QUOTED})
    assert [h["Content-Location"].rsplit("/", 1)[1] for h, _ in _parts(r)] == ["3", "1"]
    assert r.headers["etag"] and "max-age" in r.headers["cache-control"]
    assert httpx.get(url + "/frames/3%2C1", headers={"Accept": OHIF_QUOTED,
                                                      "If-None-Match": r.headers["etag"]}).status_code == 304
    ranged = httpx.get(url + "/frames/1", headers={"Accept": "application/octet-stream", "Range": "bytes=0-99"})
    assert ranged.status_code == 206 and len(ranged.content) == 100
    assert ranged.headers["content-range"].startswith("bytes 0-99/")
    assert httpx.get(url + f"/frames/{c.frames + 1}").status_code == 404
    assert httpx.get(url + "/frames/0").status_code == 400
    assert httpx.get(url + "/frames/1,x").status_code == 400
    assert "content-encoding" not in httpx.get(url + "/frames/1", headers={"Accept-Encoding": "gzip"}).headers


# ---------------------------------------------------------------- metadata and bulk data


def _check_json_model(value: object) -> None:
    if isinstance(value, dict):
        keys = list(value)
        assert keys == sorted(keys)
        for key, attr in value.items():
            assert re.fullmatch(r"[0-9A-F]{8}", key), key
            assert not key.startswith("0002"), key
            assert "vr" in attr
            if "Value" in attr:
                assert attr["Value"], key  # no empty Value arrays (PS3.18 F.2.5)
                if attr["vr"] == "PN":
                    assert all(v is None or isinstance(v, dict) for v in attr["Value"]), key
                if attr["vr"] == "SQ":
                    for item in attr["Value"]:
                        _check_json_model(item)


def test_metadata_valid_json_model_with_frames_and_absolute_bulkdata_uris(wado, stored, request) -> None:
    server, _ = wado
    http = httpx.Client(timeout=30)
    request.addfinalizer(http.close)
    for c in stored:
        r = http.get(c.url(server.dicomweb) + "/metadata")
        assert r.headers["content-type"] == "application/dicom+json"
        [doc] = r.json()
        _check_json_model(doc)
        if c.frames > 1:
            assert doc["00280008"]["Value"] == [c.frames]
        pixel = doc.get("7FE00010") or doc.get("7FE00008") or doc.get("7FE00009")
        assert pixel["BulkDataURI"].startswith(c.url(server.dicomweb) + "/bulk/")


def test_every_bulkdata_uri_resolves_and_honours_range(wado, stored, request) -> None:
    server, _ = wado
    http = httpx.Client(timeout=60)
    request.addfinalizer(http.close)
    uris = []
    for c in stored[:80]:

        def walk(value: object) -> None:
            if isinstance(value, dict):
                for attr in value.values():
                    if "BulkDataURI" in attr:
                        uris.append(attr["BulkDataURI"])
                    for item in attr.get("Value", []) if attr.get("vr") == "SQ" else []:
                        walk(item)

        walk(http.get(c.url(server.dicomweb) + "/metadata").json()[0])
    assert len(uris) >= 80
    for uri in uris:
        r = http.get(uri)
        assert r.status_code == 200, (uri, r.text)
        assert r.headers["content-type"].startswith("multipart/related")
    plain = next(u for u in uris if not u.endswith("7FE00010"))
    r = http.get(plain, headers={"Accept": "application/octet-stream", "Range": "bytes=2-5"})
    assert r.status_code == 206 and len(r.content) == 4


def test_native_pixel_bulkdata_is_the_little_endian_value(wado, stored) -> None:
    server, _ = wado
    c = next(x for x in stored if x.transfer_syntax == ELE and x.frames == 1
             and _read(x.original).BitsAllocated == 16)
    r = httpx.get(c.url(server.dicomweb) + "/bulk/7FE00010", headers={"Accept": "application/octet-stream"})
    assert r.status_code == 200 and r.content == _read(c.original).PixelData


def test_series_metadata_gzip_etag_and_304(wado, stored) -> None:
    server, _ = wado
    c = stored[0]
    url = f"{server.dicomweb}/studies/{c.study}/series/{c.series}/metadata"
    plain = httpx.get(url, headers={"Accept-Encoding": "identity"})
    zipped = httpx.get(url, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.json() == plain.json()  # httpx undoes the gzip
    assert int(zipped.headers["content-length"]) < len(plain.content)
    assert zipped.headers["etag"] != plain.headers["etag"]
    again = httpx.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["etag"]})
    assert again.status_code == 304


def test_metadata_urls_follow_the_proxy_prefix(wado, stored) -> None:
    server, _ = wado
    c = stored[0]
    r = httpx.get(c.url(server.dicomweb) + "/metadata",
                  headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pacs.example.org",
                           "X-Forwarded-Prefix": "/site"})
    assert r.json()[0]["7FE00010"]["BulkDataURI"].startswith(
        f"https://pacs.example.org/site/dicomweb/studies/{c.study}/series/{c.series}/instances/{c.sop}/bulk/")


def test_study_level_metadata_and_xml(wado, stored) -> None:
    server, _ = wado
    c = stored[0]
    r = httpx.get(f"{server.dicomweb}/studies/{c.study}/metadata")
    assert [d["00080018"]["Value"][0] for d in r.json()] == [c.sop]
    xml = httpx.get(f"{server.dicomweb}/studies/{c.study}/metadata",
                    headers={"Accept": 'multipart/related; type="application/dicom+xml"'})
    [(headers, data)] = _parts(xml)
    assert headers["Content-Type"] == "application/dicom+xml" and b"<NativeDicomModel" in data


# ---------------------------------------------------------------- errors


def test_unknown_uids_and_wrong_parents_are_404_malformed_uids_400(wado, stored) -> None:
    server, _ = wado
    a, b = stored[0], stored[1]
    base = server.dicomweb
    assert httpx.get(f"{base}/studies/1.2.3.4.5.6").status_code == 404
    assert httpx.get(f"{base}/studies/1.2.3.4.5.6/metadata").status_code == 404
    assert httpx.get(f"{base}/studies/{a.study}/series/{b.series}").status_code == 404
    assert httpx.get(f"{base}/studies/{a.study}/series/{a.series}/instances/{b.sop}/metadata").status_code == 404
    assert httpx.get(f"{base}/studies/{b.study}/series/{b.series}/instances/{a.sop}/frames/1").status_code == 404
    assert httpx.get(f"{base}/studies/{a.study}/series/{a.series}/instances/{a.sop}/bulk/7FE00011").status_code \
        == 404
    assert httpx.get(f"{base}/studies/1.2.abc").status_code == 400
    assert httpx.get(f"{base}/studies/{a.study}/series/{'1' * 65}/metadata").status_code == 400
    assert httpx.get(f"{base}/studies/{a.study}/series/{a.series}/instances/{a.sop}/bulk/XYZ").status_code == 400


def test_jpeg_baseline_transcode_of_8_bit_data_is_close_and_marked_lossy(wado, stored) -> None:
    server, _ = wado
    client = DICOMwebClient(server.dicomweb)
    c = next(x for x in stored if x.transfer_syntax == ELE and x.frames == 1 and _read(x.original).BitsAllocated == 8
             and _read(x.original).get("SamplesPerPixel", 1) == 3 and min(_read(x.original).Rows,
                                                                          _read(x.original).Columns) >= 16)
    got = client.retrieve_instance(c.study, c.series, c.sop,
                                   media_types=(("application/dicom", "1.2.840.10008.1.2.4.50"),))
    assert str(got.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.50"
    assert got.LossyImageCompression == "01" and got.PhotometricInterpretation == "YBR_FULL_422"
    want = _pixels(_read(c.original)).astype(float)
    assert np.abs(_pixels(got).astype(float) - want).mean() < 8


def test_uncompressed_frame_is_encoded_when_an_image_type_is_asked(wado, stored) -> None:
    server, _ = wado
    c = next(x for x in stored if x.transfer_syntax == ELE and x.frames == 1 and _read(x.original).BitsAllocated == 16
             and _read(x.original).get("SamplesPerPixel", 1) == 1)
    r = httpx.get(c.url(server.dicomweb) + "/frames/1", headers={"Accept": 'multipart/related; type="image/jls"'})
    [(headers, data)] = _parts(r)
    assert headers["Content-Type"] == "image/jls; transfer-syntax=1.2.840.10008.1.2.4.80"
    original = _read(c.original)
    assert np.array_equal(_frame_pixels(original, data, "1.2.840.10008.1.2.4.80"), _pixels(original))


def test_encapsulated_pixel_bulkdata_is_one_part_per_frame(wado, stored) -> None:
    server, _ = wado
    c = next(x for x in stored if x.transfer_syntax == "1.2.840.10008.1.2.4.50" and x.frames > 1)
    r = httpx.get(c.url(server.dicomweb) + "/bulk/7FE00010",
                  headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
    parts = _parts(r)
    assert len(parts) == c.frames
    assert all(h["Content-Type"] == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50" for h, _ in parts)
    assert all(d[:2] == b"\xff\xd8" for _, d in parts)
