"""Greyscale pipeline: Modality LUT -> VOI -> Presentation, composed once into 8 bits.

The three steps (PS3.3 C.11.1, C.11.2, C.11.6; PS3.4 N.2.1.1) collapse into the cheapest
equivalent form:

* rescale + linear window (or min..max) + inversion -> ONE float32 ``x * a + b`` with
  clipping in place (faster than a 64k table gather);
* a Modality/VOI LUT Sequence or SIGMOID on <=16-bit integers -> a uint8 table over the
  whole dtype domain, built once per inputs (``lru_cache``) and indexed without clipping;
* anything else (float or 32-bit data with a LUT/sigmoid) -> the same maths in float32.

Output is uint8, 0 = black. Windows follow C.11.2.1.2 exactly (LINEAR uses c-0.5, w-1).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from server.dicom.pixels import Lut, PixelDescriptor
from server.render.params import Window

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Voi:
    """The chosen VOI transform: a window, a VOI LUT, or ``minmax`` (frame range)."""

    kind: str  # "window" | "lut" | "minmax"
    center: float = 0.0
    width: float = 1.0
    function: str = "LINEAR"
    lut: Lut | None = None


@dataclass(frozen=True)
class Chain:
    """Inputs of the composed transform; hashable, so it keys the table cache."""

    slope: float
    intercept: float
    modality_lut: Lut | None
    voi: Voi
    invert: bool


def choose_voi(desc: PixelDescriptor, frame_index: int, window: Window | None) -> Voi:
    """Requested window, else the file's first valid window, else its VOI LUT, else min..max."""
    if window is not None:
        return Voi("window", window[0], window[1], window[2])
    values = desc.frame_values(frame_index)
    function = (values.voi_lut_function or "LINEAR").upper()
    for center, width in zip(values.window_centers or (), values.window_widths or (), strict=False):
        valid = width >= 1 if function == "LINEAR" else width > 0
        if valid and function in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            return Voi("window", center, width, function)
        break  # only the first (default) window is used (PS3.3 C.11.2.1.2)
    if desc.voi_luts:
        return Voi("lut", lut=desc.voi_luts[0])
    return Voi("minmax")


def inverts(desc: PixelDescriptor) -> bool:
    """MONOCHROME1 (PS3.3 C.7.6.3.1.2) or Presentation LUT Shape INVERSE (C.11.6.1)."""
    return desc.photometric_interpretation == "MONOCHROME1" or desc.presentation_lut_shape == "INVERSE"


def make_chain(desc: PixelDescriptor, frame_index: int, window: Window | None) -> Chain:
    values = desc.frame_values(frame_index)
    return Chain(
        slope=float(values.rescale_slope if values.rescale_slope is not None else 1.0),
        intercept=float(values.rescale_intercept or 0.0),
        modality_lut=desc.modality_lut,
        voi=choose_voi(desc, frame_index, window),
        invert=inverts(desc),
    )


def to_grey8(pixels: npt.NDArray[Any], desc: PixelDescriptor, frame_index: int, window: Window | None) -> U8:
    """Apply Modality LUT, VOI and Presentation to one greyscale frame -> uint8."""
    chain = make_chain(desc, frame_index, window)
    if not pixels.dtype.isnative:
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    kind = chain.voi.kind
    linear_voi = kind == "minmax" or (kind == "window" and chain.voi.function != "SIGMOID")
    if chain.modality_lut is None and linear_voi:
        return _linear(pixels, chain)
    if kind == "minmax":  # min..max of a Modality LUT Sequence output
        out = modality_values(pixels.astype(np.float64), chain)
        lo, hi = _finite_range(out)
        plain = Chain(1.0, 0.0, None, chain.voi, chain.invert)
        return _scale_offset(out, *_coefficients(plain, lo, hi))
    if pixels.dtype.kind in "ui" and pixels.dtype.itemsize <= 2:
        table = _table(pixels.dtype.str, chain)
        index = pixels.view(f"u{pixels.dtype.itemsize}")
        return np.asarray(table[index], dtype=np.uint8)
    return _round8(pipeline_values(pixels.astype(np.float64), chain))


# ------------------------------------------------------------------ linear fast path


def _coefficients(chain: Chain, lo: float, hi: float) -> tuple[float, float]:
    """``a, b`` so that ``x * a + b`` is rescale + window + inversion in 0..255 units."""
    m, k, voi = chain.slope, chain.intercept, chain.voi
    if voi.kind == "minmax":
        lo, hi = sorted((lo * m + k, hi * m + k))
        center, width = (lo + hi) / 2, hi - lo
    elif voi.function == "LINEAR":  # PS3.3 C.11.2.1.2.1
        center, width = voi.center - 0.5, voi.width - 1
    else:  # LINEAR_EXACT, C.11.2.1.3.2
        center, width = voi.center, voi.width
    if voi.kind == "minmax" and width <= 0:
        a = b = 0.0  # constant frame -> black
    else:
        step = width < 1e-6  # LINEAR with width 1 is a step at c - 0.5 (C.11.2.1.2.1)
        width = max(width, 1e-6)
        a = 255.0 * m / width
        b = 255.0 * ((k - center) / width + (-0.5 / 255.0 if step else 0.5))
    if chain.invert:
        a, b = -a, 255.0 - b
    return a, b


def _linear(pixels: npt.NDArray[Any], chain: Chain) -> U8:
    lo = hi = 0.0
    if chain.voi.kind == "minmax":
        lo, hi = _finite_range(pixels)
    return _scale_offset(pixels, *_coefficients(chain, lo, hi))


def _scale_offset(pixels: npt.NDArray[Any], a: float, b: float) -> U8:
    buf: F32 = np.multiply(pixels, np.float32(a), dtype=np.float32)
    buf += np.float32(b + 0.5)  # +0.5 then truncation = round half up
    if pixels.dtype.kind == "f":
        np.nan_to_num(buf, copy=False, nan=0.5, posinf=255.5, neginf=0.0)
    np.clip(buf, 0.0, 255.0, out=buf)
    return buf.astype(np.uint8)


def _finite_range(pixels: npt.NDArray[Any]) -> tuple[float, float]:
    if pixels.size == 0:
        return 0.0, 0.0
    if pixels.dtype.kind == "f":
        finite = pixels[np.isfinite(pixels)]
        return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    return float(pixels.min()), float(pixels.max())


# ------------------------------------------------------------------ table / float path


def modality_values(x: npt.NDArray[np.float64], chain: Chain) -> npt.NDArray[np.float64]:
    """Modality LUT Sequence (C.11.1.1, clipped at both ends) or rescale (C.11.1)."""
    lut = chain.modality_lut
    if lut is None:
        return x * chain.slope + chain.intercept
    return _lookup(x, lut)


def _lookup(x: npt.NDArray[np.float64], lut: Lut) -> npt.NDArray[np.float64]:
    index = np.clip(np.floor(x) - lut.first_mapped, 0, lut.entries - 1).astype(np.intp)
    table: npt.NDArray[np.float64] = lut.values().astype(np.float64)
    return np.asarray(table[index], dtype=np.float64)


def pipeline_values(x: npt.NDArray[np.float64], chain: Chain) -> npt.NDArray[np.float64]:
    """Full chain in float64, output 0..255 (unrounded); used to build tables."""
    y = modality_values(x, chain)
    voi = chain.voi
    if voi.kind == "lut" and voi.lut is not None:  # C.11.2.1.1
        y = _lookup(y, voi.lut) * (255.0 / (2 ** _lut_bits(voi.lut) - 1))
    elif voi.function == "SIGMOID":  # C.11.2.1.3.1
        with np.errstate(over="ignore"):
            y = 255.0 / (1.0 + np.exp(-4.0 * (y - voi.center) / voi.width))
    else:
        a, b = _coefficients(Chain(1.0, 0.0, None, voi, False), 0.0, 0.0)
        y = np.clip(y * a + b, 0.0, 255.0)
    return 255.0 - y if chain.invert else y


def _lut_bits(lut: Lut) -> int:
    """Bits per entry; an 8-bit descriptor with larger values is read as 16 (common error)."""
    if lut.bits <= 8 and lut.entries and int(lut.values().max()) > 255:
        return 16
    return min(max(lut.bits, 1), 16)


def _round8(values: npt.NDArray[np.float64]) -> U8:
    clean = np.nan_to_num(values, nan=0.0)
    return np.clip(np.floor(clean + 0.5), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _table(dtype: str, chain: Chain) -> U8:
    """uint8 output for every value of an 8/16-bit dtype, indexed by the unsigned view."""
    itemsize = np.dtype(dtype).itemsize
    domain = np.arange(2 ** (8 * itemsize), dtype=f"u{itemsize}")
    values = domain.view(dtype).astype(np.float64)
    table = _round8(pipeline_values(values, chain))
    table.setflags(write=False)
    return table
