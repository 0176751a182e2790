"""The real OHIF Viewer (3.13.2, from npm) against Lightbox, driven by the shared harness
(../shared/ohif: check.mjs in Debian's chromium): the bundled OHIF at /ohif/, and the
harness's own OHIF talking to us cross-origin (CORS)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, SAMPLES, RunningServer, import_files, start_server

HARNESS_SRC = REPO.parent / "shared" / "ohif"
CACHE = REPO / ".cache" / "ohif-harness"
OUT = REPO / "test-artifacts" / "ohif"
STUDIES = [
    SAMPLES / "pydicom" / "CT_small.dcm",
    SAMPLES / "pydicom-data" / "emri_small.dcm",
    SAMPLES / "dicomParser" / "CT1_UNC.fragmented_bot_jpeg_ls.80.dcm",
    SAMPLES / "pydicom" / "dicomdirtests" / "98892001" / "CT5N",
]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def harness() -> Path:
    """A writable copy of the harness, installed once (npm ci, the OHIF build from npm)."""
    marker = CACHE / ".installed"
    if not marker.exists():
        shutil.rmtree(CACHE, ignore_errors=True)
        shutil.copytree(HARNESS_SRC, CACHE)
        for path in CACHE.rglob("*"):
            path.chmod(path.stat().st_mode | 0o200)
        subprocess.run(["bash", "install.sh"], cwd=CACHE, check=True, capture_output=True, timeout=900)
        marker.touch()
    return CACHE


@pytest.fixture(scope="module")
def ohif_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    subprocess.run(
        ["bash", "scripts/install-ohif.sh", "ohif-dist"], cwd=REPO, check=True, capture_output=True, timeout=900
    )
    data = tmp_path_factory.mktemp("ohif") / "data"
    import_files(data, STUDIES)
    server = start_server(data, "--ohif", str(REPO / "ohif-dist"))
    yield server
    server.stop()


def _check(harness: Path, url: str, out: Path, *extra: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run(
        ["node", "check.mjs", "--url", url, "--out", str(out), "--expect-studies", "4", *extra],
        cwd=harness,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ},
    )
    (out / "check.log").parent.mkdir(parents=True, exist_ok=True)
    (out / "check.log").write_text(proc.stdout + proc.stderr)
    result = json.loads((out / "result.json").read_text())
    assert proc.returncode == 0, proc.stdout[-3000:]
    return result


def test_bundled_ohif_lists_opens_and_scrolls_every_study(harness: Path, ohif_server: RunningServer) -> None:
    _check(harness, ohif_server.base + "/ohif", OUT / "bundled", "--fail-on-console-error")


def test_harness_ohif_cross_origin(harness: Path, ohif_server: RunningServer) -> None:
    serve = subprocess.run(
        ["bash", "serve.sh", "--background", ohif_server.dicomweb, "--mode", "direct"],
        cwd=harness,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode == 0, serve.stderr
    try:
        _check(harness, "http://127.0.0.1:13000", OUT / "direct")
    finally:
        subprocess.run(["bash", "serve.sh", "--stop"], cwd=harness, capture_output=True, timeout=30)
