"""Decode ONE frame's stored bytes into a numpy array, using pydicom 3's pixel decoders.

The result equals ``ds.pixel_array[frame_index]`` for the same file: YBR_FULL and
YBR_FULL_422 come back as RGB (pydicom's ``as_rgb`` default), PALETTE COLOR as indices,
no Modality/VOI LUT applied. Shape is (rows, columns) or (rows, columns, samples).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder

from server.dicom.pixels import PixelDescriptor
from server.errors import BadRequest, NotSupported

# Deflate is undone upstream: the frame bytes are Explicit VR Little Endian (PS3.5 A.5).
_NATIVE_ALIASES = {"1.2.840.10008.1.2.1.99": "1.2.840.10008.1.2.1"}
_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
_DECODE_ERRORS = (ValueError, RuntimeError, NotImplementedError, TypeError, KeyError,
                  IndexError, AttributeError, OverflowError, MemoryError)  # fmt: skip


def native_frame_length(desc: PixelDescriptor) -> int:
    """Bytes of one native frame (PS3.5 8.1.1); bit-packed frames are rounded up."""
    pixels = desc.rows * desc.columns * desc.samples_per_pixel
    if desc.photometric_interpretation == "YBR_FULL_422":
        pixels = pixels // 3 * 2  # PS3.3 C.7.6.3.1.2: two chroma samples per pixel pair
    return (pixels * desc.bits_allocated + 7) // 8


def decode_frame(frame: bytes, desc: PixelDescriptor, frame_index: int) -> npt.NDArray[Any]:
    """Decode one frame: native bytes in file byte order, or one encapsulated codestream.

    For BitsAllocated 1 ``frame`` is the byte span holding the frame, which starts at bit
    ``(frame_index * rows * columns * samples) % 8`` of it. Raises BadRequest for a frame
    index out of range and NotSupported when the data cannot be decoded here.
    """
    if not 0 <= frame_index < desc.number_of_frames:
        raise BadRequest(f"frame: {frame_index + 1} is outside 1..{desc.number_of_frames}")
    uid = _NATIVE_ALIASES.get(desc.transfer_syntax_uid, desc.transfer_syntax_uid)
    native = uid in _NATIVE
    if native and desc.bits_allocated == 1:
        return _unpack_bits(frame, desc, frame_index)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        raise NotSupported(f"transfer syntax {uid} cannot be decoded: {exc}") from exc
    if not decoder.is_available:
        missing = ", ".join(decoder.missing_dependencies) or "no decoding plugin"
        raise NotSupported(f"transfer syntax {uid} cannot be decoded here: {missing}")
    source = _native_source(frame, desc, uid) if native else encapsulate([frame])
    try:
        arr, _ = decoder.as_array(source, **_options(desc))
    except _DECODE_ERRORS as exc:
        raise NotSupported(f"frame {frame_index + 1} could not be decoded: {exc}") from exc
    return _shape(arr, desc)


def _options(desc: PixelDescriptor) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "rows": desc.rows,
        "columns": desc.columns,
        "samples_per_pixel": desc.samples_per_pixel,
        "bits_allocated": desc.bits_allocated,
        "bits_stored": desc.bits_stored,
        "pixel_representation": desc.pixel_representation,
        "photometric_interpretation": desc.photometric_interpretation,
        "number_of_frames": 1,
        "pixel_keyword": desc.pixel_keyword,
        "pixel_vr": desc.pixel_vr,
    }
    if desc.samples_per_pixel > 1:
        opts["planar_configuration"] = desc.planar_configuration
    return opts


def _native_source(frame: bytes, desc: PixelDescriptor, uid: str) -> bytes:
    expected = native_frame_length(desc)
    if len(frame) < expected:
        raise NotSupported(f"frame has {len(frame)} bytes, {expected} expected (truncated)")
    if uid == "1.2.840.10008.1.2.2" and desc.bits_allocated == 8 and desc.pixel_vr == "OW":
        # 8-bit OW in big endian is byte-swapped in 16-bit words; keep the span even.
        return bytes(frame[: expected + expected % 2]).ljust(expected + expected % 2, b"\0")
    return bytes(frame[:expected])  # drop trailing padding (PS3.5 8.1.1)


def _unpack_bits(frame: bytes, desc: PixelDescriptor, frame_index: int) -> npt.NDArray[Any]:
    """BitsAllocated 1: little-endian bit order within each byte (PS3.5 8.1.1, D.2)."""
    count = desc.rows * desc.columns * desc.samples_per_pixel
    start = (frame_index * count) % 8
    bits = np.unpackbits(np.frombuffer(frame, dtype=np.uint8), bitorder="little")
    if bits.size < start + count:
        raise NotSupported(f"frame has {bits.size - start} bits, {count} expected (truncated)")
    flat = np.ascontiguousarray(bits[start : start + count])
    return _shape(flat, desc)


def _shape(arr: npt.NDArray[Any], desc: PixelDescriptor) -> npt.NDArray[Any]:
    if desc.samples_per_pixel > 1:
        return arr.reshape(desc.rows, desc.columns, desc.samples_per_pixel)
    return arr.reshape(desc.rows, desc.columns)
