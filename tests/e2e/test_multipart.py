"""The viewer's multipart/related reader, run in the browser on bodies a server may send."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

PARSE = """async ([body, contentType]) => {
  const m = await import('./js/multipart.js');
  const bytes = Uint8Array.from(body);
  const b = m.boundaryOf(contentType);
  return m.parseMultipart(bytes, b).map((p) => ({ headers: p.headers, body: Array.from(p.body) }));
}"""


def parse(page, url, body: bytes, content_type: str):
    page.goto(url)
    return page.evaluate(PARSE, [list(body), content_type])


def test_single_frame_part_with_boundary_like_bytes_inside(e2e_server, page):
    pixels = b"\r\n--XYZ" + bytes(range(256)) + b"--XY"  # looks like a boundary, is not one
    body = (
        b"--XYZW\r\nContent-Type: application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1\r\n\r\n"
        + pixels
        + b"\r\n--XYZW--\r\n"
    )
    parts = parse(page, e2e_server.url, body, 'multipart/related; type="application/octet-stream"; boundary=XYZW')
    assert len(parts) == 1
    assert bytes(parts[0]["body"]) == pixels
    assert parts[0]["headers"]["content-type"].endswith("transfer-syntax=1.2.840.10008.1.2.1")


def test_quoted_boundary_preamble_and_two_parts(e2e_server, page):
    body = b"preamble\r\n--a b\r\nContent-Type: x/y\r\n\r\nONE\r\n--a b\r\n\r\nTWO\r\n--a b--"
    parts = parse(page, e2e_server.url, body, 'multipart/related; boundary="a b"; type="x/y"')
    assert [bytes(p["body"]) for p in parts] == [b"ONE", b"TWO"]
    assert parts[1]["headers"] == {}
