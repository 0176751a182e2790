"""Rendering parameters: typed, validated, with a 400 naming the offending parameter.

WADO-RS rendered resources (PS3.18 8.3.5.1): ``window``, ``viewport``, ``quality``,
``annotation``; WADO-URI (PS3.18 9.4 / 8.3.5.1): ``windowCenter``, ``windowWidth``,
``rows``, ``columns``, ``region``, ``imageQuality``, ``annotation``.

Extension (documented): ``preset=`` names a window preset (``WINDOW_PRESETS``, CT
Hounsfield units, centre/width) or ``thumbnail`` (small viewport, no patient annotation).
An explicit ``window`` wins over a preset's window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from server.errors import BadRequest, NotAcceptable

MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif")
ANNOTATIONS = ("patient", "technique")
VOI_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}
MAX_VIEWPORT = 8192
THUMBNAIL_SIZE = 128
THUMBNAIL_QUALITY = 80

# (center, width) in HU — common radiology presets.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "temporal-bone": (600.0, 2800.0),
    "soft-tissue": (50.0, 400.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "angio": (300.0, 600.0),
}

Window = tuple[float, float, str]  # center, width, VOI LUT Function (PS3.3 C.11.2.1.3)


@dataclass(frozen=True)
class Region:
    """Source region: pixels (WADO-RS sx,sy,sw,sh) or fractions 0..1 (WADO-URI region)."""

    x: float = 0.0
    y: float = 0.0
    width: float | None = None  # None: to the right/bottom edge; negative: flipped
    height: float | None = None
    fractional: bool = False


@dataclass(frozen=True)
class Viewport:
    """Output size bounds; ``None`` leaves that dimension to the aspect ratio."""

    width: int | None = None
    height: int | None = None
    region: Region | None = None


@dataclass(frozen=True)
class RenderParams:
    media_type: str = "image/jpeg"
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = 90
    annotation: frozenset[str] = frozenset()
    preset: str | None = None


def _media(media_type: str) -> str:
    value = media_type.split(";")[0].strip().lower()
    if value not in MEDIA_TYPES:
        supported = ", ".join(MEDIA_TYPES)
        raise NotAcceptable(f"media type {media_type!r}: rendered supports {supported}")
    return value


def _number(name: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise BadRequest(f"{name}: {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise BadRequest(f"{name}: must be finite")
    return value


def _integer(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise BadRequest(f"{name}: {text.strip()!r} is not an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}: {value} is outside {low}..{high}")
    return value


def make_window(name: str, center: float, width: float, function: str = "LINEAR") -> Window:
    """Validate a window (PS3.3 C.11.2.1.2: LINEAR needs width >= 1, others > 0)."""
    if function == "LINEAR" and width < 1:
        raise BadRequest(f"{name}: width must be >= 1 for linear")
    if width <= 0:
        raise BadRequest(f"{name}: width must be > 0")
    return (center, width, function)


def parse_window(window: str) -> Window:
    parts = window.split(",")
    if len(parts) not in (2, 3):
        raise BadRequest("window: expected center,width[,linear|linear-exact|sigmoid]")
    function = "LINEAR"
    if len(parts) == 3:
        key = parts[2].strip().lower().replace("_", "-")
        if key not in VOI_FUNCTIONS:
            raise BadRequest(f"window: function {parts[2]!r} is not linear|linear-exact|sigmoid")
        function = VOI_FUNCTIONS[key]
    center, width = _number("window", parts[0]), _number("window", parts[1])
    return make_window("window", center, width, function)


def parse_viewport(viewport: str) -> Viewport:
    """``vw,vh[,sx,sy,sw,sh]`` (PS3.18 8.3.5.1.3); empty sx..sh take their defaults."""
    parts = [p.strip() for p in viewport.split(",")]
    if len(parts) not in (2, 6):
        raise BadRequest("viewport: expected vw,vh[,sx,sy,sw,sh]")
    vw = _integer("viewport", parts[0], 1, MAX_VIEWPORT)
    vh = _integer("viewport", parts[1], 1, MAX_VIEWPORT)
    if len(parts) == 2:
        return Viewport(vw, vh)
    sx, sy = (_number("viewport", p) if p else 0.0 for p in parts[2:4])
    sw, sh = (_number("viewport", p) if p else None for p in parts[4:6])
    if sx < 0 or sy < 0 or sw == 0 or sh == 0:
        raise BadRequest("viewport: sx,sy must be >= 0 and sw,sh non-zero")
    return Viewport(vw, vh, Region(sx, sy, sw, sh))


def parse_annotation(annotation: str) -> frozenset[str]:
    items = {a.strip().lower() for a in annotation.split(",") if a.strip()}
    unknown = items - set(ANNOTATIONS)
    if unknown:
        raise BadRequest(f"annotation: {', '.join(sorted(unknown))} not in patient,technique")
    return frozenset(items)


def parse_render_params(
    window: str | None = None,
    viewport: str | None = None,
    quality: str | None = None,
    annotation: str | None = None,
    preset: str | None = None,
    media_type: str = "image/jpeg",
) -> RenderParams:
    """Query parameters of a WADO-RS rendered/thumbnail request -> RenderParams."""
    name = preset.strip().lower() if preset else None
    if name is not None and name != "thumbnail" and name not in WINDOW_PRESETS:
        known = ", ".join(["thumbnail", *WINDOW_PRESETS])
        raise BadRequest(f"preset: {preset!r} unknown; one of {known}")
    win = parse_window(window) if window else None
    if win is None and name in WINDOW_PRESETS:
        win = make_window("preset", *WINDOW_PRESETS[name])
    view = parse_viewport(viewport) if viewport else None
    notes = parse_annotation(annotation) if annotation else frozenset()
    q = _integer("quality", quality, 1, 100) if quality else 90
    if name == "thumbnail":
        # PS3.18 10.4.3.3.4: thumbnails carry no patient-identifying information.
        view = view or Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE)
        notes = notes - {"patient"}
        q = q if quality else THUMBNAIL_QUALITY
    return RenderParams(_media(media_type), win, view, q, notes, name)


def thumbnail_params(viewport: str | None = None, media_type: str = "image/jpeg") -> RenderParams:
    return parse_render_params(viewport=viewport, preset="thumbnail", media_type=media_type)


def parse_wado_uri_params(
    window_center: str | None = None,
    window_width: str | None = None,
    rows: str | None = None,
    columns: str | None = None,
    region: str | None = None,
    image_quality: str | None = None,
    annotation: str | None = None,
    media_type: str = "image/jpeg",
) -> RenderParams:
    """WADO-URI rendering parameters (PS3.18 9.4, 8.3.5.1) -> RenderParams.

    ``rows``/``columns`` alone fix that dimension; both are maxima (aspect kept).
    """
    win: Window | None = None
    if (window_center is None) != (window_width is None):
        name = "windowWidth" if window_width is None else "windowCenter"
        raise BadRequest(f"{name}: windowCenter and windowWidth must be given together")
    if window_center is not None and window_width is not None:
        center = _number("windowCenter", window_center)
        win = make_window("windowWidth", center, _number("windowWidth", window_width))
    height = _integer("rows", rows, 1, MAX_VIEWPORT) if rows else None
    width = _integer("columns", columns, 1, MAX_VIEWPORT) if columns else None
    area = _parse_region(region) if region else None
    view = Viewport(width, height, area) if (width or height or area) else None
    q = _integer("imageQuality", image_quality, 1, 100) if image_quality else 90
    notes = parse_annotation(annotation) if annotation else frozenset()
    return RenderParams(_media(media_type), win, view, q, notes, None)


def _parse_region(region: str) -> Region:
    parts = region.split(",")
    if len(parts) != 4:
        raise BadRequest("region: expected x1,y1,x2,y2 as fractions 0..1")
    x1, y1, x2, y2 = (_number("region", p) for p in parts)
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise BadRequest("region: need 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")
    return Region(x1, y1, x2 - x1, y2 - y1, fractional=True)
