"""Shared benchmark helpers: a 300-slice CT made from a real sample, servers, timing, RSS."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import io
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pydicom
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import SAMPLES, RunningServer, free_port, start_server  # noqa: E402

CT_512 = (
    SAMPLES / "cornerstoneWADOImageLoader" / "CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm"
)


def ct_series(count: int = 300, study_uid: str | None = None) -> list[bytes]:
    """A 512×512 CT series of ``count`` slices (fresh UIDs, stepped slice positions)."""
    base = pydicom.dcmread(CT_512)
    study = study_uid or generate_uid()
    series = generate_uid()
    out = []
    for n in range(count):
        ds = base.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = n + 1
        ds.ImagePositionPatient = [0, 0, float(n)]
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def scratch_dir(prefix: str) -> Path:
    """A temporary folder removed when the benchmark exits (a STOW run leaves gigabytes)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def write_files(parts: list[bytes]) -> Path:
    folder = scratch_dir("lightbox-bench-files-")
    for n, data in enumerate(parts):
        (folder / f"{n:05d}.dcm").write_bytes(data)
    return folder


def fresh_server(*extra: str) -> RunningServer:
    tmp = scratch_dir("lightbox-bench-")
    env = {"LIGHTBOX_ACCESS_LOG": "false"}
    return start_server(tmp / "data", *extra, env=env)


def floor_server(
    app: str, env: dict[str, str] | None = None, probe: str = "/ping"
) -> tuple[subprocess.Popen[bytes], str]:
    """Run a bare uvicorn app (``benchmarks.floor_apps:drain`` or any ``module:attr``): the
    'floor' in ratios. Returns the process and its base URL once ``probe`` answers."""
    port = free_port()
    target = app if ":" in app else f"benchmarks.floor_apps:{app}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", target, "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(base + probe, timeout=1)
            return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("floor server did not start")


# ---------------------------------------------------------------- a light HTTP load client
# A bare asyncio client over keep-alive connections: on a 2-core machine the client shares the
# cores with the server, and http.client or httpx cost 2-3 times its CPU per request.


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    """One keep-alive HTTP/1.1 GET with a Content-Length answer: (status, body)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    return int(head[9:12]), await reader.readexactly(length)


async def _connect(base: str) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = base.removeprefix("http://").split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    return host, reader, writer


def _request(host: str, path: str, headers: dict[str, str]) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


async def load_for(base: str, paths: list[str], concurrency: int, headers: dict[str, str],
                   seconds: float) -> tuple[float, float]:
    """(responses/s, MB/s) of ``concurrency`` connections asking for random ``paths`` for ``seconds``."""
    done = size = 0
    stop = time.perf_counter() + seconds

    async def worker(seed: int) -> None:
        nonlocal done, size
        rng = random.Random(seed)
        host, reader, writer = await _connect(base)
        try:
            while time.perf_counter() < stop:
                status, body = await _get(reader, writer, _request(host, rng.choice(paths), headers))
                assert status == 200, body[:200]
                size += len(body)
                done += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - start
    return done / elapsed, size / elapsed / 1e6


async def load_each(base: str, paths: list[str], concurrency: int, headers: dict[str, str],
                    magic: bytes = b"") -> tuple[float, list[float]]:
    """Each path once over ``concurrency`` connections: (responses/s, latencies in s). Every
    answer must be a 200 whose body starts with ``magic``."""
    todo = list(reversed(paths))
    latencies: list[float] = []

    async def worker() -> None:
        host, reader, writer = await _connect(base)
        try:
            while todo:
                path = todo.pop()
                t = time.perf_counter()
                status, body = await _get(reader, writer, _request(host, path, headers))
                latencies.append(time.perf_counter() - t)
                if status != 200 or not body.startswith(magic):
                    raise RuntimeError(f"{status} {path}: {body[:200]!r}")
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(paths) / (time.perf_counter() - start), latencies


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` and its children (the server with its ingest worker processes)."""
    children = " ".join(p.read_text() for p in Path(f"/proc/{pid}/task").glob("*/children"))
    total = rss_mb(pid)
    for child in children.split():
        with contextlib.suppress(OSError):  # ended meanwhile
            total += rss_mb(int(child))
    return total


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return statistics.median(ordered), p95


def row(name: str, value: float, unit: str, floor: float | None = None) -> str:
    ratio = f"  ({value / floor:6.1%} of floor {floor:,.1f})" if floor else ""
    return f"  {name:<48} {value:>10,.1f} {unit}{ratio}"


os.environ.setdefault("LIGHTBOX_ACCESS_LOG", "false")
