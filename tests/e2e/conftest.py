"""Fixtures for the viewer tests: a real Lightbox server with sample studies, and Chromium.

`e2e_server` starts `python -m server serve` on a free port with a fresh data folder and
imports the samples with `python -m server import`. Set LIGHTBOX_E2E_URL to drive an
already running DICOMweb server that serves the viewer instead (its data must already
hold the same samples); nothing is started then.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The e2e helpers are plain modules beside this file, not a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e_samples as samples  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "e2e"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class E2EServer:
    url: str  # ends with "/": the viewer's address
    log: Path | None = None
    studies: dict[str, str] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "healthz", timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def sample_paths(work: Path) -> list[Path]:
    _, stack = samples.make_ct_stack(work / "ct-stack")
    return [
        *stack,
        samples.CT_SMALL,
        samples.MULTIFRAME_NM,
        samples.RGB_US,
        samples.UNCALIBRATED_MR,
        samples.COMPRESSED_CT,
    ]


@pytest.fixture(scope="session")
def e2e_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EServer]:
    external = os.environ.get("LIGHTBOX_E2E_URL")
    if external:
        yield E2EServer(url=external.rstrip("/") + "/")
        return
    work = tmp_path_factory.mktemp("lightbox-e2e")
    data, log = work / "data", work / "server.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", str(port), "--data", str(data)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not become healthy:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        imported = subprocess.run(
            [sys.executable, "-m", "server", "import", "--data", str(data), "--quiet", *map(str, sample_paths(work))],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert imported.returncode == 0, imported.stdout + imported.stderr
        yield E2EServer(url=url, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def page(browser, request):
    """A desktop page that fails the test on any uncaught script error.

    The server's CSP forbids eval, which Playwright's wait_for_function needs, so this
    page bypasses it; test_viewer_runs_under_a_strict_csp drives the viewer with it on.
    """
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    ctx.close()
    assert not errors, errors
