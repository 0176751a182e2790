"""Colour to 8-bit RGB: PALETTE COLOR lookup and scaling of RGB samples.

Decoding already returns RGB for RGB, YBR_FULL, YBR_FULL_422 (pydicom converts, PS3.3
C.7.6.3.1.2), YBR_ICT/YBR_RCT (the JPEG 2000 decoder reverses the component transform)
and both planar configurations. Modality/VOI LUTs do not apply to colour (PS3.3 C.11.1).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from server.dicom.pixels import Palette, PixelDescriptor
from server.errors import NotSupported

U8 = npt.NDArray[np.uint8]


def palette_to_rgb8(pixels: npt.NDArray[Any], palette: Palette) -> U8:
    """Map stored indices through the palette (PS3.3 C.7.6.3.1.5); out-of-range clamps."""
    table = palette_table(palette)
    index = pixels.astype(np.int64) - palette.red.first_mapped
    return np.asarray(np.take(table, index, axis=0, mode="clip"), dtype=np.uint8)


@functools.lru_cache(maxsize=32)
def palette_table(palette: Palette) -> U8:
    """(entries, 3) uint8 table; 16-bit entries scaled by 255/65535, rounded."""
    channels = []
    for lut in (palette.red, palette.green, palette.blue):
        values = lut.values().astype(np.float64)
        bits = 16 if lut.bits > 8 or (values.size and values.max() > 255) else 8
        channels.append(np.floor(values * (255.0 / (2**bits - 1)) + 0.5))
    entries = min(c.size for c in channels)
    table = np.stack([c[:entries] for c in channels], axis=-1).astype(np.uint8)
    table.setflags(write=False)
    return table


def color_to_rgb8(pixels: npt.NDArray[Any], desc: PixelDescriptor) -> U8:
    """RGB samples of BitsStored bits -> 0..255 (identity for 8-bit data)."""
    if pixels.dtype == np.uint8 and desc.bits_stored >= 8:
        return pixels
    top = float(2**desc.bits_stored - 1)
    scaled = np.floor(np.clip(pixels.astype(np.float64), 0, top) * (255.0 / top) + 0.5)
    return scaled.astype(np.uint8)


def to_rgb8(pixels: npt.NDArray[Any], desc: PixelDescriptor) -> U8:
    if desc.photometric_interpretation == "PALETTE COLOR":
        if desc.palette is None:
            raise NotSupported("PALETTE COLOR image without a usable palette")
        return palette_to_rgb8(pixels, desc.palette)
    if pixels.ndim != 3 or pixels.shape[-1] < 3:
        raise NotSupported(f"{desc.photometric_interpretation} with {desc.samples_per_pixel} samples per pixel")
    return color_to_rgb8(pixels[..., :3], desc)
