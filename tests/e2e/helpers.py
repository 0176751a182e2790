"""Small helpers shared by the viewer tests: reading the canvas, opening studies, metrics."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

VIEWPORT = ".viewport.active"
METRICS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e" / "metrics.json"


def study_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def canvas(page, selector: str = VIEWPORT + " canvas") -> np.ndarray:
    """The canvas' pixels as an H×W×3 uint8 array."""
    url = page.evaluate("(s) => document.querySelector(s).toDataURL('image/png')", selector)
    png = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def assert_not_blank(img: np.ndarray) -> None:
    gray = img.mean(axis=2)
    lit = (gray > 16).mean()
    levels = len(np.unique(gray.astype(np.uint8)))
    assert lit > 0.02 and levels >= 8, f"canvas looks blank: {lit:.3%} lit, {levels} grey levels"


def wait_ready(page, source: str | None = None, selector: str = VIEWPORT, timeout: float = 15000) -> None:
    sel = f'{selector}[data-state="ready"]' + (f'[data-source="{source}"]' if source else "")
    try:
        page.wait_for_selector(sel, timeout=timeout)
    except Exception:
        state = page.evaluate(
            "(s) => { const v = document.querySelector(s);"
            " return v && {...v.dataset, msg: v.querySelector('.vp-msg').textContent}; }",
            selector,
        )
        raise AssertionError(f"viewport not ready{' with ' + source if source else ''}: {state}") from None


def open_study(page, url: str, uid: str, source: str | None = "raw") -> None:
    page.goto(url + "#/study/" + uid)
    wait_ready(page, source)


def overlay(page, corner: str, selector: str = VIEWPORT) -> str:
    return page.inner_text(f"{selector} .ov.{corner}")


def center(page, selector: str = VIEWPORT + " canvas") -> tuple[float, float]:
    box = page.locator(selector).bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def record(name: str, value) -> None:
    """Keep a measured figure in test-artifacts/e2e/metrics.json for the report."""
    METRICS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(METRICS.read_text()) if METRICS.exists() else {}
    data[name] = value
    METRICS.write_text(json.dumps(data, indent=2, sort_keys=True))
