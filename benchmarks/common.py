"""Shared benchmark helpers: a 300-slice CT made from a real sample, servers, timing, RSS."""

from __future__ import annotations

import io
import os
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


def write_files(parts: list[bytes]) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="lightbox-bench-files-"))
    for n, data in enumerate(parts):
        (folder / f"{n:05d}.dcm").write_bytes(data)
    return folder


def fresh_server(*extra: str) -> RunningServer:
    tmp = Path(tempfile.mkdtemp(prefix="lightbox-bench-"))
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


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return statistics.median(ordered), p95


def row(name: str, value: float, unit: str, floor: float | None = None) -> str:
    ratio = f"  ({value / floor:6.1%} of floor {floor:,.1f})" if floor else ""
    return f"  {name:<48} {value:>10,.1f} {unit}{ratio}"


os.environ.setdefault("LIGHTBOX_ACCESS_LOG", "false")
