"""The rendered-frame pipeline (PS3.18 8.3.5.1, checklist REND-04), in DICOM order:

decode -> Modality LUT -> VOI -> Presentation (greyscale, ``lut``) or colour (``color``)
-> source region + viewport (``resize``) -> annotations (``annotate``) -> ``encode``.

Decoding is separate (``decode_frame``) so callers can cache decoded arrays and call
``render_array`` repeatedly with other parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from server.dicom.pixels import PixelDescriptor
from server.errors import NotSupported
from server.render.annotate import burn_annotations
from server.render.color import to_rgb8
from server.render.decode import decode_frame
from server.render.encode import encode_animation, encode_image
from server.render.lut import to_grey8
from server.render.params import RenderParams, Window, thumbnail_params
from server.render.resize import apply_viewport

U8 = npt.NDArray[np.uint8]


def to_display(
    pixels: npt.NDArray[Any],
    desc: PixelDescriptor,
    frame_index: int = 0,
    window: Window | None = None,
) -> U8:
    """One decoded frame -> uint8 (rows, cols) grey or (rows, cols, 3) RGB, full size."""
    if desc.is_monochrome:
        if pixels.ndim != 2:
            raise NotSupported(f"greyscale frame with shape {pixels.shape}")
        return to_grey8(pixels, desc, frame_index, window)
    return to_rgb8(pixels, desc)


def render_image(
    pixels: npt.NDArray[Any],
    desc: PixelDescriptor,
    params: RenderParams,
    *,
    frame_index: int = 0,
    annotation_text: Mapping[str, str] | None = None,
) -> Image.Image:
    """Everything but the encoding: a Pillow image ready to save."""
    display = to_display(pixels, desc, frame_index, params.window)
    image = apply_viewport(display, params.viewport)
    return burn_annotations(image, params.annotation, annotation_text)


def render_array(
    pixels: npt.NDArray[Any],
    desc: PixelDescriptor,
    params: RenderParams,
    *,
    frame_index: int = 0,
    annotation_text: Mapping[str, str] | None = None,
) -> bytes:
    """A decoded frame (``decode_frame`` output) -> encoded image bytes."""
    image = render_image(pixels, desc, params, frame_index=frame_index, annotation_text=annotation_text)
    return encode_image(image, params.media_type, params.quality)


def render_frame(
    frame: bytes,
    desc: PixelDescriptor,
    frame_index: int,
    params: RenderParams,
    *,
    annotation_text: Mapping[str, str] | None = None,
) -> bytes:
    """Stored frame bytes -> encoded image bytes (decode + ``render_array``)."""
    pixels = decode_frame(frame, desc, frame_index)
    return render_array(pixels, desc, params, frame_index=frame_index, annotation_text=annotation_text)


def render_thumbnail(
    pixels: npt.NDArray[Any],
    desc: PixelDescriptor,
    params: RenderParams | None = None,
    *,
    frame_index: int = 0,
) -> bytes:
    """Thumbnail (PS3.18 10.4.3.3.4): small viewport, never patient annotation."""
    params = params or thumbnail_params()
    safe = RenderParams(
        params.media_type, params.window, params.viewport, params.quality,
        params.annotation - {"patient"}, params.preset,
    )  # fmt: skip
    return render_array(pixels, desc, safe, frame_index=frame_index)


def render_animation(
    frames: Sequence[tuple[int, npt.NDArray[Any]]],
    desc: PixelDescriptor,
    params: RenderParams,
    *,
    frame_time_ms: float | None = None,
) -> bytes:
    """Several decoded frames ``(frame_index, pixels)`` -> one animated GIF."""
    images = [render_image(px, desc, params, frame_index=i) for i, px in frames]
    return encode_animation(images, frame_time_ms or desc.frame_time_ms)
