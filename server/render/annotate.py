"""Burn-in text annotations (PS3.18 8.3.5.1.1 ``annotation=patient,technique``).

Pure: the caller passes the strings; patient text goes top-left, technique bottom-left.
"""

from __future__ import annotations

from collections.abc import Mapping

from PIL import Image, ImageDraw, ImageFont

from server.dicom.pixels import PixelDescriptor
from server.render.params import Window

_MARGIN = 4


def burn_annotations(image: Image.Image, wanted: frozenset[str], text: Mapping[str, str] | None) -> Image.Image:
    """Draw ``text[kind]`` for each requested kind; missing strings are skipped."""
    if not wanted or not text:
        return image
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(10, min(image.width, image.height) // 40))
    fill, stroke = (255, 0) if image.mode == "L" else ((255, 255, 255), (0, 0, 0))
    for kind in ("patient", "technique"):
        body = text.get(kind, "") if kind in wanted else ""
        if not body:
            continue
        box = draw.multiline_textbbox((0, 0), body, font=font, stroke_width=1)
        y = _MARGIN if kind == "patient" else image.height - (box[3] - box[1]) - _MARGIN
        draw.multiline_text((_MARGIN, max(0, y)), body, font=font, fill=fill, stroke_width=1, stroke_fill=stroke)
    return image


def technique_text(desc: PixelDescriptor, frame_index: int, window: Window | None) -> str:
    """A default technique line: modality, frame, size and the window in use."""
    parts = [desc.modality or "OT", f"frame {frame_index + 1}/{desc.number_of_frames}",
             f"{desc.columns}x{desc.rows}"]  # fmt: skip
    if window is not None:
        parts.append(f"W {window[1]:g} L {window[0]:g}")
    return "  ".join(parts)
