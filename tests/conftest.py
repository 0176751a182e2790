"""Shared fixtures: a real ``lightbox serve`` subprocess on a free port, and the samples."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(os.environ.get("LIGHTBOX_SAMPLES", REPO.parent / "shared" / "dicom-samples"))


@dataclass(frozen=True)
class Sample:
    path: Path
    row: dict[str, str]

    @property
    def decodes(self) -> bool:
        return self.row["decodes"].startswith("yes")


def manifest() -> list[Sample]:
    with open(SAMPLES / "MANIFEST.tsv", encoding="utf-8") as f:
        return [Sample(SAMPLES / r["path"], r) for r in csv.DictReader(f, delimiter="\t")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    base: str  # http://127.0.0.1:PORT
    data: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def dicomweb(self) -> str:
        return self.base + "/dicomweb"

    def stop(self, kill: bool = False) -> None:
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(timeout=20)


def start_server(data: Path, *extra: str, port: int | None = None, env: dict[str, str] | None = None) -> RunningServer:
    """Start ``python -m server`` (what the Dockerfile runs) and wait for /healthz."""
    port = port or free_port()
    log = data.parent / f"server-{port}.log"
    cmd = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port), "--data", str(data), *extra]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return RunningServer(base, data, proc, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not become healthy: {log.read_text()[-3000:]}")


def import_files(data: Path, paths: list[Path]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "server", "import", "--quiet", "--data", str(data), *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


@pytest.fixture(scope="session")
def samples() -> list[Sample]:
    return manifest()


@pytest.fixture
def fresh_server() -> Iterator[RunningServer]:
    """A server of its own with an empty store (for tests that change or count things)."""
    tmp = Path(tempfile.mkdtemp(prefix="lightbox-test-"))
    server = start_server(tmp / "data")
    yield server
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def sample_server() -> Iterator[RunningServer]:
    """One server for the session, with every importable sample loaded via ``lightbox import``.

    Read-only: tests that store or delete must use ``fresh_server``."""
    tmp = Path(tempfile.mkdtemp(prefix="lightbox-samples-"))
    data = tmp / "data"
    import_files(data, [SAMPLES])
    server = start_server(data)
    yield server
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def multipart_body(
    parts: list[bytes], boundary: str = "lightbox-test-boundary", part_type: str = "application/dicom"
) -> bytes:
    """A STOW-RS body the way dicomweb-client writes it (leading CRLF, no trailing CRLF)."""
    out = bytearray()
    for data in parts:
        out += f"\r\n--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
        out += data
    out += f"\r\n--{boundary}--".encode()
    return bytes(out)


def stow_headers(boundary: str = "lightbox-test-boundary") -> dict[str, str]:
    return {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary="{boundary}"',
        "Accept": "application/dicom+json",
    }


def series_from(sample: Path, count: int, study_uid: str | None = None) -> list[bytes]:
    """``count`` Part-10 files made from a real sample, with fresh instance (and series) UIDs."""
    import io

    import pydicom
    from pydicom.uid import generate_uid

    base = pydicom.dcmread(sample)
    series_uid = generate_uid()
    study = study_uid or generate_uid()
    out = []
    for n in range(count):
        ds = base.copy()
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = n + 1
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out
