"""STOW-RS: a 300-slice 512×512 CT, 50 per request, 4 concurrent, against the drain floor;
then peak RSS growth of the server during one ~2 GB STOW streamed with chunked encoding."""

from __future__ import annotations

import concurrent.futures
import statistics
import threading
import time
from collections.abc import Iterator

import httpx
from pydicom.uid import generate_uid

from benchmarks.common import ct_series, floor_server, fresh_server, row, rss_mb, tree_rss_mb
from tests.conftest import multipart_body, stow_headers


def _post_all(url: str, bodies: list[bytes], concurrency: int) -> float:
    def post(body: bytes) -> int:
        return httpx.post(url, content=body, headers=stow_headers(), timeout=300).status_code

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        statuses = list(pool.map(post, bodies))
    elapsed = time.perf_counter() - start
    assert all(s == 200 for s in statuses), statuses
    return elapsed


ROUNDS = 3  # each a new 300-slice study; the median is printed (this machine is noisy)


def throughput() -> None:
    studies = []
    for _ in range(ROUNDS):
        parts = ct_series(300)
        studies.append([multipart_body(parts[i:i + 50]) for i in range(0, 300, 50)])
    megabytes = sum(map(len, studies[0])) / 1e6
    proc, floor = floor_server("drain")
    try:
        _post_all(floor + "/", studies[0], 4)  # warm-up
        floor_s = statistics.median(_post_all(floor + "/", bodies, 4) for bodies in studies)
    finally:
        proc.terminate()
    server = fresh_server()
    try:
        _post_all(server.dicomweb + "/studies", [multipart_body(ct_series(4))], 1)  # warm-up, as the floor's
        stow_s = statistics.median(_post_all(server.dicomweb + "/studies", bodies, 4) for bodies in studies)
    finally:
        server.stop()
    print(f"STOW-RS, 300 × 512×512 CT, 50 per request, 4 concurrent (median of {ROUNDS} studies)")
    print(row("floor (drain the body)", megabytes / floor_s, "MB/s"))
    print(row("lightbox", megabytes / stow_s, "MB/s", megabytes / floor_s))
    print(row("lightbox", 300 / stow_s, "instances/s"))


def _big_body(template: bytes, target: int, boundary: str) -> Iterator[bytes]:
    """~``target`` bytes of multipart, each part a copy of ``template`` with a new SOP UID."""
    old = template.split(b"\x00")[0]  # unused; keeps the template immutable
    del old
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(template))
    sent = 0
    while sent < target:
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        chunk = f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + buf.getvalue()
        sent += len(chunk)
        yield chunk
    yield f"\r\n--{boundary}--".encode()


def peak_rss(total_bytes: int = 2 * 1024**3) -> None:
    template = ct_series(1)[0]
    server = fresh_server()
    try:
        pid = server.process.pid
        httpx.post(server.dicomweb + "/studies", content=multipart_body(ct_series(2)), headers=stow_headers(),
                   timeout=60)  # the ingest workers are up and have stored something
        baseline, tree_baseline = rss_mb(pid), tree_rss_mb(pid)
        peak, tree_peak = [baseline], [tree_baseline]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb(pid))
                tree_peak[0] = max(tree_peak[0], tree_rss_mb(pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        start = time.perf_counter()
        response = httpx.post(
            server.dicomweb + "/studies", content=_big_body(template, total_bytes, "bigbody"),
            headers=stow_headers("bigbody"), timeout=1200,
        )
        elapsed = time.perf_counter() - start
        done.set()
        sampler.join()
        assert response.status_code == 200, response.text[:500]
        stored = len(response.json()["00081199"]["Value"])
    finally:
        server.stop()
    print(f"One {total_bytes / 1e9:.1f} GB STOW (chunked, {stored} instances)")
    print(row("throughput", total_bytes / 1e6 / elapsed, "MB/s"))
    print(row("server RSS before", baseline, "MB"))
    print(row("server RSS peak growth", peak[0] - baseline, "MB"))
    print(row("with ingest workers: RSS before", tree_baseline, "MB"))
    print(row("with ingest workers: peak growth", tree_peak[0] - tree_baseline, "MB"))


if __name__ == "__main__":
    import sys

    throughput()
    peak_rss(int(float(sys.argv[1]) * 1024**3) if len(sys.argv) > 1 else 2 * 1024**3)
