"""The fast path (server/api/fastpath.py) answers single frames and rendered frames exactly as
the normal FastAPI path does, or leaves the request to it.

Over HTTP each request is sent twice: as a viewer sends it (fast path) and with the same
Accept also given as ``?accept=`` (any query but ``token=`` goes the normal way, which reads
the same Accept from it); status, headers in order and body must match, the multipart
boundary and Date aside. In process, an app whose inner app counts its calls shows which
requests the fast path answered itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from server.app import create_app
from server.config import Settings
from tests.conftest import (
    SAMPLES,
    RunningServer,
    import_files,
    multipart_body,
    series_from,
    start_server,
    stow_headers,
)

OHIF = "multipart/related; type=application/octet-stream; transfer-syntax=*"
ORIGIN = "https://viewer.example"
FRAME_ACCEPTS = [
    OHIF,
    "application/octet-stream",
    'multipart/related; type="application/octet-stream"',
    "*/*",
    'multipart/related; type="image/jls"',
]
RENDER_ACCEPTS = ["image/jpeg", "image/png", 'multipart/related; type="image/jpeg"']
SOURCES = {
    "native, 10 frames": SAMPLES / "pydicom-data" / "emri_small.dcm",
    "JPEG-LS, 10 frames": SAMPLES / "pydicom-data" / "emri_small_jpeg_ls_lossless.dcm",
    "native, 64 KiB frames": SAMPLES / "notZaki-DICOMSamples" / "MR_Explicit_Little_MultiFrame.dcm",
    "native, 512 KiB frames": SAMPLES / "pydicom-data" / "eCT_Supplemental.dcm",
    "big endian, 15 frames": SAMPLES / "pydicom" / "rtdose_expb.dcm",
    "RLE, 2 frames": SAMPLES / "dicomParser" / "CT0012.not_fragmented_bot_rle.dcm",
}


@dataclass(frozen=True)
class Stored:
    study: str
    series: str
    sop: str
    frames: int

    def url(self, base: str, frame: int | None = None) -> str:
        url = f"{base}/dicomweb/studies/{self.study}/series/{self.series}/instances/{self.sop}"
        return url if frame is None else f"{url}/frames/{frame}"


def _write(folder: Path, name: str, data: bytes) -> Stored:
    (folder / f"{name}.dcm").write_bytes(data)
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return Stored(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID),
                  int(ds.get("NumberOfFrames") or 1))


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _same(fast: httpx.Response, normal: httpx.Response) -> None:
    """Equal status, headers (names, values, order) and body, boundary and Date aside."""

    def plain(r: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = [(k, v) for k, v in r.headers.multi_items() if k != "date"]
        body = r.content
        m = re.search(r"boundary=([^;\s]+)", r.headers.get("content-type", ""))
        if m:
            headers = [(k, v.replace(m.group(1), "BOUNDARY")) for k, v in headers]
            body = body.replace(m.group(1).encode(), b"BOUNDARY")
        return r.status_code, headers, body

    assert plain(fast) == plain(normal)


def _pair(client: httpx.Client, url: str, accept: str, headers: dict[str, str] | None = None,
          params: dict[str, str] | None = None) -> tuple[httpx.Response, httpx.Response]:
    """(the request as a viewer sends it, the same forced down the normal path)."""
    fast = client.get(url, headers={"Accept": accept, **(headers or {})}, params=params)
    normal = client.get(url, headers={"Accept": accept, **(headers or {})}, params={**(params or {}), "accept": accept})
    return fast, normal


# ---------------------------------------------------------------- an open server


@dataclass
class Site:
    server: RunningServer
    stored: dict[str, Stored]


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    tmp = Path(tempfile.mkdtemp(prefix="lightbox-fastpath-"))
    folder = tmp / "files"
    folder.mkdir()
    stored = {name: _write(folder, f"{n}", series_from(path, 1)[0]) for n, (name, path) in enumerate(SOURCES.items())}
    import_files(tmp / "data", [folder])
    server = start_server(tmp / "data", env={"LIGHTBOX_CROSS_ORIGIN_ISOLATION": "true", "LIGHTBOX_ACCESS_LOG": "true"})
    yield Site(server, stored)
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("name", list(SOURCES))
def test_frames_answer_as_the_normal_path_does(site: Site, name: str) -> None:
    c = site.stored[name]
    answered = 0
    with httpx.Client(timeout=60) as client:
        for frame in sorted({1, c.frames}):
            for accept in FRAME_ACCEPTS:
                for extra in ({}, {"Origin": ORIGIN}):
                    fast, normal = _pair(client, c.url(site.server.base, frame), accept, extra)
                    _same(fast, normal)
                    # asked again: replayed where the frame is one span as stored (server.api.replay)
                    again = client.get(c.url(site.server.base, frame), headers={"Accept": accept, **extra})
                    _same(again, normal)
                    if name.startswith("native") and fast.status_code == 200 and "jls" not in accept:
                        assert again.content == fast.content  # a replay keeps the first answer's boundary
                    answered += fast.status_code == 200
                    if fast.status_code == 200:
                        assert fast.headers["etag"] and fast.headers["cache-control"] == "private, max-age=86400"
                        assert fast.headers["cross-origin-opener-policy"] == "same-origin"
                        assert fast.headers["cross-origin-embedder-policy"] == "require-corp"
                        assert fast.headers["x-content-type-options"] == "nosniff"
                        if extra:
                            assert fast.headers["access-control-allow-origin"] == "*"
                            assert "ETag" in fast.headers["access-control-expose-headers"]
                            assert fast.headers["vary"] == "Accept, Origin"
    assert answered >= 2 * len({1, c.frames})  # OHIF's Accept and octet-stream always work


def test_a_frame_range_and_a_revalidation_answer_alike(site: Site) -> None:
    c = site.stored["native, 512 KiB frames"]
    url = c.url(site.server.base, 2)
    with httpx.Client(timeout=60) as client:
        fast, normal = _pair(client, url, "application/octet-stream", {"Range": "bytes=10-99"})
        _same(fast, normal)
        assert fast.status_code == 206 and len(fast.content) == 90
        assert fast.headers["content-range"].startswith("bytes 10-99/")
        etag = client.get(url, headers={"Accept": OHIF}).headers["etag"]
        fast, normal = _pair(client, url, OHIF, {"If-None-Match": etag})
        _same(fast, normal)
        assert fast.status_code == 304 and fast.content == b""


@pytest.mark.parametrize("name", ["native, 64 KiB frames", "native, 512 KiB frames"])  # joined, sent in pieces
def test_frames_arrive_whole_with_their_part_header(site: Site, name: str) -> None:
    c = site.stored[name]
    with httpx.Client(timeout=60) as client:
        r = client.get(c.url(site.server.base, c.frames), headers={"Accept": OHIF})
    original = pydicom.dcmread(SOURCES[name])
    size = original.Rows * original.Columns * original.BitsAllocated // 8
    assert r.status_code == 200
    boundary = r.headers["content-type"].split("boundary=")[1]
    head, rest = r.content.split(b"\r\n\r\n", 1)
    assert head.startswith(f"--{boundary}\r\nContent-Type: application/octet-stream; transfer-syntax=".encode())
    assert rest.endswith(f"\r\n--{boundary}--\r\n".encode())
    frame = rest.removesuffix(f"\r\n--{boundary}--\r\n".encode())
    assert int(r.headers["content-length"]) == len(r.content)
    assert len(frame) == size >= 64 * 1024
    assert frame == original.PixelData[(c.frames - 1) * size : c.frames * size]


@pytest.mark.parametrize("name", ["native, 10 frames", "JPEG-LS, 10 frames", "RLE, 2 frames"])
def test_rendered_frames_answer_as_the_normal_path_does(site: Site, name: str) -> None:
    c = site.stored[name]
    with httpx.Client(timeout=60) as client:
        for accept in RENDER_ACCEPTS:
            for extra in ({}, {"Origin": ORIGIN}):
                fast, normal = _pair(client, c.url(site.server.base, c.frames) + "/rendered", accept, extra)
                _same(fast, normal)
                again = client.get(c.url(site.server.base, c.frames) + "/rendered", headers={"Accept": accept, **extra})
                _same(again, normal)  # replayed when single part: drawn again, the same image
                assert fast.status_code == 200, fast.text
                media = accept.split('"')[1] if "multipart" in accept else accept
                assert media in fast.headers["content-type"]
                assert (fast.headers.get("access-control-allow-origin") == "*") == bool(extra)


def test_errors_answer_as_the_normal_path_does(site: Site) -> None:
    c = site.stored["native, 10 frames"]
    with httpx.Client(timeout=60) as client:
        for url, status in [(c.url(site.server.base, c.frames + 1), 404),
                            (c.url(site.server.base, 1).replace(c.sop, "1.2.3.4"), 404),
                            (c.url(site.server.base, 1).replace(c.sop, "1..2"), 400),
                            (c.url(site.server.base, 0), 400),
                            (c.url(site.server.base, c.frames + 1) + "/rendered", 404)]:
            fast, normal = _pair(client, url, OHIF if "rendered" not in url else "image/jpeg", {"Origin": ORIGIN})
            _same(fast, normal)
            assert fast.status_code == status
            assert fast.headers["warning"].startswith("299 lightbox:")
            assert fast.headers["access-control-allow-origin"] == "*"


def test_each_frame_request_is_logged_once(site: Site) -> None:
    c = site.stored["native, 10 frames"]
    url = c.url(site.server.base, 3)
    before = len(_lines(site.server.log))
    r = httpx.get(url, headers={"Accept": OHIF})
    rendered = httpx.get(url + "/rendered", headers={"Accept": "image/jpeg"})
    missing = httpx.get(url.replace("/frames/3", "/frames/99"), headers={"Accept": OHIF})  # tried, then passed on
    assert (r.status_code, rendered.status_code, missing.status_code) == (200, 200, 404)
    time.sleep(0.2)
    path = url.removeprefix(site.server.base)
    # (a line of the test before may land late, as the access log is written after the answer)
    asked = {path, path + "/rendered", path.replace("/frames/3", "/frames/99")}
    new = [x for x in _lines(site.server.log)[before:] if x["path"] in asked]
    assert [(x["method"], x["path"], x["query"], x["status"], x["bytes"]) for x in new] == [
        ("GET", path, "", 200, len(r.content)), ("GET", path + "/rendered", "", 200, len(rendered.content)),
        ("GET", path.replace("/frames/3", "/frames/99"), "", 404, len(missing.content))]


# ---------------------------------------------------------------- tokens, scopes and the audit trail


@dataclass
class Locked:
    server: RunningServer
    ct: Stored
    mr: Stored
    reader: str
    ct_only: str

    @property
    def audit(self) -> list[dict[str, Any]]:
        return _lines(self.server.data / "audit.jsonl")


def _token(data: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "server", "token", "create", *args, "--data", str(data)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def locked() -> Iterator[Locked]:
    tmp = Path(tempfile.mkdtemp(prefix="lightbox-fastpath-auth-"))
    folder = tmp / "files"
    folder.mkdir()
    ct = _write(folder, "ct", series_from(SOURCES["native, 10 frames"], 1)[0])
    mr = _write(folder, "mr", series_from(SOURCES["RLE, 2 frames"], 1)[0])
    data = tmp / "data"
    import_files(data, [folder])
    server = start_server(data, "--auth", "token", env={"LIGHTBOX_ACCESS_LOG": "true"})
    reader, ct_only = _token(data, "--role", "reader"), _token(data, "--role", "reader", "--study", ct.study)
    yield Locked(server, ct, mr, reader, ct_only)
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def test_without_credentials_frames_are_401_with_a_challenge_and_cors(locked: Locked) -> None:
    with httpx.Client(timeout=60) as client:
        for url, accept in [(locked.ct.url(locked.server.base, 1), OHIF),
                            (locked.ct.url(locked.server.base, 1) + "/rendered", "image/jpeg")]:
            for auth in ({}, {"Authorization": "Bearer lbx_nope_nope"}):
                fast, normal = _pair(client, url, accept, {"Origin": ORIGIN, **auth})
                _same(fast, normal)
                assert fast.status_code == 401
                assert fast.headers["www-authenticate"] == 'Bearer realm="lightbox"'
                assert fast.headers["access-control-allow-origin"] == "*"
            assert client.get(url, headers={"Accept": accept}, params={"token": "lbx_nope_nope"}).status_code == 401


def test_a_token_reads_frames_privately_by_header_or_query(locked: Locked) -> None:
    url = locked.ct.url(locked.server.base, 2)
    bearer = {"Authorization": f"Bearer {locked.reader}"}
    with httpx.Client(timeout=60) as client:
        for accept, suffix in [(OHIF, ""), ("image/jpeg", "/rendered")]:
            fast, normal = _pair(client, url + suffix, accept, bearer)
            _same(fast, normal)
            assert fast.status_code == 200
            assert fast.headers["cache-control"] == "private, max-age=86400"
            fast, normal = _pair(client, url + suffix, accept, params={"token": locked.reader})
            _same(fast, normal)
            assert fast.status_code == 200
    logged = [x for x in _lines(locked.server.log) if x.get("path", "").endswith("/frames/2")]
    assert len(logged) == 4 and all(locked.reader not in x["query"] for x in logged)
    assert [x["query"] == "" for x in logged] == [True, False, True, False]  # ?token= is taken out before


def test_a_study_token_gets_404_for_another_study(locked: Locked) -> None:
    bearer = {"Authorization": f"Bearer {locked.ct_only}"}
    with httpx.Client(timeout=60) as client:
        for suffix, accept in [("", OHIF), ("/rendered", "image/jpeg")]:
            mine = client.get(locked.ct.url(locked.server.base, 1) + suffix, headers={"Accept": accept, **bearer})
            assert mine.status_code == 200
            fast, normal = _pair(client, locked.mr.url(locked.server.base, 1) + suffix, accept, bearer)
            _same(fast, normal)
            assert fast.status_code == 404
            assert locked.ct.study not in fast.text and locked.mr.study in fast.text


def test_every_frame_request_is_audited_exactly_once(locked: Locked) -> None:
    ct, mr = locked.ct, locked.mr
    reader = {"Authorization": f"Bearer {locked.reader}"}
    scoped = {"Authorization": f"Bearer {locked.ct_only}"}
    asks = [(ct.url(locked.server.base, 4), OHIF, reader, 200, "retrieve-frames"),
            (ct.url(locked.server.base, 4) + "/rendered", "image/jpeg", reader, 200, "render"),
            (mr.url(locked.server.base, 1), OHIF, scoped, 404, "retrieve-frames"),
            (mr.url(locked.server.base, 1), OHIF, {}, 401, "retrieve-frames"),
            (ct.url(locked.server.base, 99), OHIF, reader, 404, "retrieve-frames")]
    for url, accept, auth, status, action in asks:
        before = len(locked.audit)
        assert httpx.get(url, headers={"Accept": accept, **auth}).status_code == status
        [record] = locked.audit[before:]
        assert (record["path"], record["status"], record["action"]) == (url.removeprefix(locked.server.base),
                                                                       status, action)
        assert record["study"] == url.split("/studies/")[1].split("/")[0]
        who = {"Bearer " + locked.reader: f"token:{locked.reader.split('_')[1]}",
               "Bearer " + locked.ct_only: f"token:{locked.ct_only.split('_')[1]}"}.get(auth.get("Authorization", ""))
        assert record["user"] == who and record["client"] == "127.0.0.1"


# ---------------------------------------------------------------- replaced and deleted instances


def _stow(server: RunningServer, data: bytes) -> None:
    r = httpx.post(f"{server.dicomweb}/studies", content=multipart_body([data]), headers=stow_headers(), timeout=60)
    assert r.status_code == 200, r.text


def test_a_replaced_or_deleted_instance_is_never_served_stale(fresh_server: RunningServer, tmp_path: Path) -> None:
    [first] = series_from(SOURCES["native, 10 frames"], 1)
    ds = pydicom.dcmread(io.BytesIO(first))
    size = ds.Rows * ds.Columns * 2
    c = _write(tmp_path, "x", first)
    url = c.url(fresh_server.base, 3)
    _stow(fresh_server, first)
    with httpx.Client(timeout=60) as client:
        old = client.get(url, headers={"Accept": "application/octet-stream"})
        assert old.status_code == 200 and old.content == ds.PixelData[2 * size : 3 * size]
        assert client.get(url, headers={"Accept": "application/octet-stream"}).content == old.content  # replayed
        drawn = [client.get(url + "/rendered", headers={"Accept": "image/png"}) for _ in range(2)]  # kept, replayed
        assert drawn[0].content == drawn[1].content

        ds.PixelData = (ds.pixel_array[::-1] // 2).astype(ds.pixel_array.dtype).tobytes()  # same UIDs, new pixels
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        _stow(fresh_server, buf.getvalue())
        # first a revalidation with the old ETag (the server's cached row is the old one), then plain reads
        again = client.get(url, headers={"Accept": "application/octet-stream", "If-None-Match": old.headers["etag"]})
        assert again.status_code == 200 and again.content == ds.PixelData[2 * size : 3 * size]
        assert again.content != old.content and again.headers["etag"] != old.headers["etag"]
        for _ in range(2):
            new = client.get(url, headers={"Accept": "application/octet-stream"})
            assert (new.status_code, new.content, new.headers["etag"]) == (200, again.content, again.headers["etag"])
        redrawn = client.get(url + "/rendered", headers={"Accept": "image/png"})
        normal = client.get(url + "/rendered", params={"accept": "image/png"})
        assert redrawn.status_code == 200 and redrawn.content == normal.content != drawn[0].content
        assert redrawn.headers["etag"] == normal.headers["etag"] != drawn[0].headers["etag"]

        bulk = c.url(fresh_server.base) + "/bulk/7FE00010"  # its own retrieve path, the same cached row
        assert client.get(bulk, headers={"Accept": "application/octet-stream"}).content == ds.PixelData
        ds.PixelData = (ds.pixel_array // 3).astype(ds.pixel_array.dtype).tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        _stow(fresh_server, buf.getvalue())
        r = client.get(bulk, headers={"Accept": "application/octet-stream"})
        assert r.status_code == 200 and r.content == ds.PixelData

        assert client.delete(c.url(fresh_server.base)).status_code == 204
        for accept, suffix in [("application/octet-stream", ""), (OHIF, ""), ("image/jpeg", "/rendered")]:
            assert client.get(url + suffix, headers={"Accept": accept}).status_code == 404


# ---------------------------------------------------------------- which requests take the fast path


def test_the_fast_path_answers_single_frames_and_passes_the_rest(tmp_path: Path) -> None:
    # In a thread of its own: the e2e tests' session-wide Playwright (sync API) keeps an event
    # loop running in the main thread for the rest of the test session.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(_which_requests_take_the_fast_path(tmp_path))).result()


async def _which_requests_take_the_fast_path(tmp_path: Path) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    c = _write(folder, "x", series_from(SOURCES["native, 10 frames"], 1)[0])
    import_files(tmp_path / "data", [folder])
    fast = create_app(Settings(data=tmp_path / "data", access_log=False))
    normal = fast.app
    calls: list[str] = []

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            calls.append(scope["path"])
        await normal(scope, receive, send)

    fast.app = counting
    frame = c.url("", 2)
    asks = [  # (method, path, query, Accept, status, answered by the fast path)
        ("GET", frame, "", OHIF, 200, True),
        ("GET", frame + "/rendered", "", "image/jpeg", 200, True),
        ("GET", frame, "", "application/octet-stream", 200, True),
        ("GET", frame, "accept=application/octet-stream", OHIF, 200, False),
        ("GET", frame + "/rendered", "quality=80", "image/jpeg", 200, False),
        ("HEAD", frame, "", OHIF, 200, False),
        ("GET", c.url("", 1) + ",2", "", OHIF, 200, False),
        ("GET", frame + "/thumbnail", "", "image/jpeg", 200, False),
        ("GET", frame + "/", "", OHIF, 404, False),
        ("GET", c.url("", 11), "", OHIF, 404, False),
        ("GET", c.url("", 0), "", OHIF, 400, False),
        ("GET", frame + "/rendered", "", "text/html", 406, False),
    ]
    async with normal.router.lifespan_context(normal), httpx.AsyncClient(  # type: ignore[attr-defined]
            transport=httpx.ASGITransport(app=fast), base_url="http://testserver") as client:
        for method, path, query, accept, status, answered in asks:
            calls.clear()
            r = await client.request(method, path + (f"?{query}" if query else ""), headers={"Accept": accept})
            assert r.status_code == status, (path, query, r.text)
            assert calls == ([] if answered else [path]), (method, path, query)

        # Asked again, a frame or a rendered frame is replayed; a multipart rendered frame (asked
        # for the first time here), a Range or a revalidation is not.
        again = [(frame, {"Accept": OHIF}, 200, 1), (frame, {"Accept": "application/octet-stream"}, 200, 1),
                 (frame + "/rendered", {"Accept": "image/jpeg"}, 200, 1),
                 (frame + "/rendered", {"Accept": 'multipart/related; type="image/jpeg"'}, 200, 0),
                 (frame, {"Accept": OHIF, "Range": "bytes=0-9"}, 206, 0),
                 (frame, {"Accept": OHIF, "If-None-Match": '"x"'}, 200, 0),
                 (frame, {"Accept": OHIF, "Origin": ORIGIN}, 200, 0)]  # another key: answered, then kept
        for path, headers, status, replayed in again:
            calls.clear()
            before = fast.replayed
            r = await client.get(path, headers=headers)
            assert r.status_code == status and calls == [], (path, headers)
            assert fast.replayed - before == replayed, (path, headers)
