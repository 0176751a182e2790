"""Source region crop and viewport scaling (PS3.18 8.3.5.1.3), aspect ratio preserved."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

from server.errors import BadRequest
from server.render.params import Region, Viewport

U8 = npt.NDArray[np.uint8]


def crop(pixels: U8, region: Region | None) -> U8:
    """Cut the source region; a negative width/height flips that axis."""
    if region is None:
        return pixels
    rows, cols = pixels.shape[:2]
    x0, x1, flip_x = _span(region.x, region.width, cols, region.fractional, "x")
    y0, y1, flip_y = _span(region.y, region.height, rows, region.fractional, "y")
    out = pixels[y0:y1, x0:x1]
    if flip_x:
        out = out[:, ::-1]
    if flip_y:
        out = out[::-1]
    return np.ascontiguousarray(out)


def _span(start: float, length: float | None, size: int, fractional: bool, axis: str) -> tuple[int, int, bool]:
    scale = size if fractional else 1
    a = start * scale
    b = size if length is None else a + length * scale
    lo, hi = sorted((a, b))
    lo_i, hi_i = max(0, round(lo)), min(size, round(hi))
    if hi_i <= lo_i:
        name = "region" if fractional else "viewport"
        raise BadRequest(f"{name}: source region is outside the image along {axis}")
    return lo_i, hi_i, length is not None and length < 0


def output_size(width: int, height: int, viewport: Viewport | None) -> tuple[int, int]:
    """Fit (width, height) into the viewport keeping the aspect ratio."""
    if viewport is None or (viewport.width is None and viewport.height is None):
        return width, height
    scales = []
    if viewport.width is not None:
        scales.append(viewport.width / width)
    if viewport.height is not None:
        scales.append(viewport.height / height)
    scale = min(scales)
    return max(1, round(width * scale)), max(1, round(height * scale))


def apply_viewport(pixels: U8, viewport: Viewport | None) -> Image.Image:
    """Crop then resize into a Pillow image ("L" or "RGB")."""
    region = crop(pixels, viewport.region if viewport else None)
    image = Image.fromarray(region)
    size = output_size(image.width, image.height, viewport)
    if size == image.size:
        return image
    if size[0] < image.width:
        return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    return image.resize(size, Image.Resampling.BILINEAR)
