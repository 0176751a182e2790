"""Transcoding: whole instances (Part-10 out) and single frames, with pydicom 3 + pylibjpeg.

Everything here is CPU work on one instance or one frame; callers run it in a worker
thread. What can be produced depends on what is installed: decoders come from pydicom's
plugin registry (pylibjpeg, pyjpegls, openjpeg, rle); encoders are pydicom's (RLE,
JPEG-LS, JPEG 2000) plus JPEG baseline through Pillow for 8-bit data.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.filewriter import correct_ambiguous_vr, dcmwrite
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import UID

from server.dicom.pixels import PixelDescriptor
from server.dicom.uids import (
    DEFLATED_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    JPEG_2000_LOSSLESS,
    JPEG_BASELINE,
    JPEG_LS_LOSSLESS,
    JPEG_LS_NEAR,
    NATIVE_SYNTAXES,
    RLE_LOSSLESS,
    is_encapsulated,
)
from server.errors import NotAcceptable, NotSupported

_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_DECODE_ERRORS = (ValueError, RuntimeError, NotImplementedError, TypeError, KeyError, IndexError,
                  AttributeError, OverflowError)  # fmt: skip
# Targets we encode to (lossless ones, plus JPEG baseline); other syntaxes only as stored.
ENCODABLE = frozenset({EXPLICIT_VR_LE, RLE_LOSSLESS, JPEG_LS_LOSSLESS, JPEG_2000_LOSSLESS, JPEG_BASELINE})
_LOSSY = frozenset({JPEG_BASELINE, JPEG_LS_NEAR, "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.91"})


@cache
def can_decode(transfer_syntax: str) -> bool:
    if transfer_syntax in NATIVE_SYNTAXES:
        return True
    try:
        return bool(get_decoder(transfer_syntax).is_available)
    except NotImplementedError:
        return False


@cache
def can_encode(transfer_syntax: str) -> bool:
    if transfer_syntax in (EXPLICIT_VR_LE, JPEG_BASELINE):
        return True  # JPEG baseline through Pillow
    if transfer_syntax not in ENCODABLE:
        return False
    try:
        return bool(get_encoder(transfer_syntax).is_available)
    except NotImplementedError:
        return False


def can_transcode(stored: str, target: str, desc: dict[str, Any] | None, has_pixels: bool = True) -> bool:
    """Whether an instance (or a frame) stored in ``stored`` can be produced in ``target``."""
    if target == stored and stored not in (IMPLICIT_VR_LE, EXPLICIT_VR_BE):
        return True
    if target in (IMPLICIT_VR_LE, EXPLICIT_VR_BE, DEFLATED_LE):
        return False  # never sent (PS3.18 §8.7.3) / not worth producing
    if not has_pixels:  # only the dataset encoding changes
        return target == EXPLICIT_VR_LE or not is_encapsulated(stored)
    if desc is None:  # pixels we could not describe at ingest: pydicom may still decode them
        return target == EXPLICIT_VR_LE and can_decode(stored)
    if not can_decode(stored):
        return False
    if target == EXPLICIT_VR_LE:
        return True
    if not can_encode(target) or desc.get("pixel_keyword", "PixelData") != "PixelData":
        return False
    bits = int(desc.get("bits_allocated", 0))
    samples = int(desc.get("samples_per_pixel", 1))
    if target == JPEG_BASELINE:
        return bits == 8 and samples in (1, 3)
    if target == RLE_LOSSLESS:
        return bits in (8, 16, 32)
    return bits in (8, 16) and samples in (1, 3)


# ---------------------------------------------------------------- frames


def _descriptor(desc: dict[str, Any]) -> PixelDescriptor:
    return PixelDescriptor.from_dict(desc)


def _decode_options(d: PixelDescriptor) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "rows": d.rows, "columns": d.columns, "samples_per_pixel": d.samples_per_pixel,
        "bits_allocated": d.bits_allocated, "bits_stored": d.bits_stored,
        "pixel_representation": d.pixel_representation,
        "photometric_interpretation": d.photometric_interpretation,
        "number_of_frames": 1, "pixel_keyword": d.pixel_keyword, "pixel_vr": d.pixel_vr,
    }
    if d.samples_per_pixel > 1:
        opts["planar_configuration"] = d.planar_configuration
    return opts


def le_bytes(arr: npt.NDArray[Any]) -> bytes:
    return bytes(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes())


def swap_native(frame: bytes, bits_allocated: int, pixel_vr: str) -> bytes:
    """Big endian native pixel bytes → little endian (PS3.5 §7.3: OW swaps in 16-bit words)."""
    width = max(bits_allocated // 8, 2 if pixel_vr == "OW" else 1)
    if width == 1 or len(frame) % width:
        return frame
    return np.frombuffer(frame, dtype=f">u{width}").astype(f"<u{width}").tobytes()


def decode_frame(frame: bytes, stored: str, desc: dict[str, Any]) -> tuple[npt.NDArray[Any], str]:
    """One encapsulated frame → (array, photometric of the array); YBR JPEG comes back RGB."""
    d = _descriptor(desc)
    try:
        decoder = get_decoder(stored)
        arr, meta = decoder.as_array(encapsulate([frame]), **_decode_options(d))
    except _DECODE_ERRORS as exc:
        raise NotSupported(f"frame could not be decoded from {stored}: {exc}") from exc
    photometric = str(meta.get("photometric_interpretation", d.photometric_interpretation))
    return arr, photometric


def frame_to_native(frame: bytes, stored: str, desc: dict[str, Any]) -> bytes:
    """One frame's stored bytes → Explicit VR Little Endian native bytes."""
    if stored in (IMPLICIT_VR_LE, EXPLICIT_VR_LE, DEFLATED_LE):
        return frame
    if stored == EXPLICIT_VR_BE:
        return swap_native(frame, int(desc.get("bits_allocated", 16)), str(desc.get("pixel_vr", "OW")))
    arr, _ = decode_frame(frame, stored, desc)
    return le_bytes(arr)


def encode_frame(native: bytes, desc: dict[str, Any], target: str, photometric: str | None = None) -> bytes:
    """Explicit VR LE native bytes of one frame → one codestream in ``target``."""
    d = _descriptor(desc)
    pi = photometric or d.photometric_interpretation
    if target == JPEG_BASELINE:
        return _jpeg_baseline(_native_array(native, d), d)
    opts: dict[str, Any] = {
        "rows": d.rows, "columns": d.columns, "samples_per_pixel": d.samples_per_pixel,
        "bits_allocated": d.bits_allocated, "bits_stored": d.bits_stored,
        "pixel_representation": d.pixel_representation, "photometric_interpretation": pi,
        "number_of_frames": 1, "planar_configuration": 0,
    }
    if target in (JPEG_LS_LOSSLESS, JPEG_LS_NEAR):
        opts["photometric_interpretation"] = "RGB" if d.samples_per_pixel == 3 else pi
    try:
        return bytes(get_encoder(target).encode(native, **opts))
    except _DECODE_ERRORS as exc:
        raise NotAcceptable(f"the frame cannot be encoded as {target}: {exc}") from exc


def _native_array(native: bytes, d: PixelDescriptor) -> npt.NDArray[Any]:
    dtype = np.dtype(f"<{'i' if d.pixel_representation else 'u'}{max(d.bits_allocated // 8, 1)}")
    arr = np.frombuffer(native, dtype=dtype)
    shape = (d.rows, d.columns, d.samples_per_pixel) if d.samples_per_pixel > 1 else (d.rows, d.columns)
    return arr[: int(np.prod(shape))].reshape(shape)


def _jpeg_baseline(arr: npt.NDArray[Any], d: PixelDescriptor) -> bytes:
    from PIL import Image

    if d.bits_allocated != 8:
        raise NotAcceptable("JPEG baseline holds 8-bit data only")
    image = Image.fromarray(arr.astype(np.uint8), "RGB" if arr.ndim == 3 else "L")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90, subsampling=1)  # 4:2:2 = YBR_FULL_422
    return out.getvalue()


def frame_from_file(path: Path, index: int, desc: dict[str, Any] | None, *, decode: bool = False
                    ) -> tuple[bytes, str]:
    """Fallback when the index has no byte spans (deflated or unlocated pixel data) or no
    pixel description: (frame bytes, their transfer syntax) read with pydicom. Native frames,
    and with ``decode`` every frame, come back as Explicit VR LE."""
    ds = pydicom.dcmread(path)
    ts = str(ds.file_meta.get("TransferSyntaxUID", EXPLICIT_VR_LE))
    if is_encapsulated(ts) and not decode:
        frames = int(ds.get("NumberOfFrames") or 1)
        for n, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=frames)):
            if n == index:
                return bytes(frame), ts
        raise NotSupported(f"frame {index + 1} is not in the pixel data")
    if decode:
        arr = ds.pixel_array
        if int(ds.get("NumberOfFrames") or 1) > 1:
            arr = arr[index]
        return le_bytes(arr), EXPLICIT_VR_LE
    # native: slice the stored bytes, so planar layout and YBR_FULL_422 stay as the metadata says
    rows, columns = int(ds.Rows), int(ds.Columns)
    samples, bits = int(ds.get("SamplesPerPixel", 1)), int(ds.BitsAllocated)
    pixels = rows * columns * samples
    if str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        pixels = pixels // 3 * 2  # PS3.3 C.7.6.3.1.2
    size = (pixels * bits + 7) // 8
    raw = bytes(ds.PixelData)
    frame = raw[index * size : (index + 1) * size + (1 if ts == EXPLICIT_VR_BE else 0)]
    if ts == EXPLICIT_VR_BE:
        frame = swap_native(frame + b"\0" * (len(frame) % 2), bits, str(ds["PixelData"].VR))
    return frame[:size], EXPLICIT_VR_LE


# ---------------------------------------------------------------- whole instances


def _swap_binary_values(ds: Dataset) -> None:
    """Binary values read from a big endian file are still in file byte order."""

    def swap(_ds: Dataset, elem: Any) -> None:
        if int(elem.tag) in (0x7FE00010, 0x7FE00008, 0x7FE00009):
            return
        width = _SWAP_WIDTH.get(str(elem.VR))
        if width and isinstance(elem.value, bytes | bytearray) and len(elem.value) % width == 0:
            elem.value = np.frombuffer(elem.value, f">u{width}").astype(f"<u{width}").tobytes()

    ds.walk(swap)


def _resolve_ambiguous_vrs(ds: Dataset) -> None:
    """Explicit VR needs one VR per element; pydicom leaves some (e.g. retired curve data) open."""
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1

    def fix(_ds: Dataset, elem: Any) -> None:
        vr = str(elem.VR)
        if " or " in vr:
            elem.VR = ("SS" if signed else "US") if vr == "US or SS" else "OW"

    correct_ambiguous_vr(ds, True)
    ds.walk(fix)


def _write(ds: Dataset, target: str) -> bytes:
    _resolve_ambiguous_vrs(ds)
    ds.file_meta.TransferSyntaxUID = UID(target)
    if getattr(ds, "preamble", None) is None:
        ds.preamble = b"\0" * 128
    out = io.BytesIO()
    dcmwrite(out, ds, implicit_vr=False, little_endian=True, force_encoding=True)
    return out.getvalue()


def _native_pixels(ds: Dataset) -> None:
    """Replace (possibly big endian or compressed) pixel data by ELE native bytes."""
    arr = ds.pixel_array
    ds.PixelData = le_bytes(arr)
    ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        ds.PlanarConfiguration = 0
    if str(ds.get("PhotometricInterpretation", "")).startswith("YBR") and is_encapsulated(
        str(ds.file_meta.TransferSyntaxUID)
    ):
        ds.PhotometricInterpretation = "RGB"  # pydicom decodes YBR JPEG to RGB


def instance_as(path: Path, stored: str, target: str) -> bytes:
    """The Part-10 file at ``path`` (stored in ``stored``) re-encoded as ``target``."""
    try:
        return _instance_as(path, stored, target)
    except (NotAcceptable, NotSupported):
        raise
    except _DECODE_ERRORS as exc:
        raise NotSupported(f"cannot transcode {stored} to {target}: {exc}") from exc


def _instance_as(path: Path, stored: str, target: str) -> bytes:
    if target == stored and stored not in (IMPLICIT_VR_LE, EXPLICIT_VR_BE):
        return path.read_bytes()
    ds = pydicom.dcmread(path)
    has_pixels = "PixelData" in ds
    if stored == EXPLICIT_VR_BE:
        _swap_binary_values(ds)
        if has_pixels:
            _native_pixels(ds)
    elif has_pixels and is_encapsulated(stored) and target != stored:
        _native_pixels(ds)
    ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_VR_LE)
    if target == EXPLICIT_VR_LE or not has_pixels or not is_encapsulated(target):
        return _write(ds, EXPLICIT_VR_LE if target in NATIVE_SYNTAXES else target)
    if target == JPEG_BASELINE:
        return _write(_to_jpeg_baseline(ds), target)
    try:
        ds.compress(target, encoding_plugin="", generate_instance_uid=False)
    except _DECODE_ERRORS as exc:
        raise NotAcceptable(f"cannot encode this instance as {target}: {exc}") from exc
    if target in _LOSSY:
        ds.LossyImageCompression = "01"
    return _write(ds, target)


def _to_jpeg_baseline(ds: Dataset) -> Dataset:
    d = PixelDescriptor.from_dict({**_desc_of(ds)})
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames") or 1)
    stack = arr if frames > 1 else arr[np.newaxis]
    ds.PixelData = encapsulate([_jpeg_baseline(f, d) for f in stack])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.LossyImageCompression = "01"
    return ds


def _desc_of(ds: Dataset) -> dict[str, Any]:
    from server.dicom.pixels import descriptor_from_dataset

    desc = descriptor_from_dataset(ds)
    if desc is None:
        raise NotAcceptable("no pixel data to encode")
    return desc.to_dict()
