"""Pixel descriptor: everything needed to decode and render a frame without its file.

Built once at ingest from the dataset (``descriptor_from_dataset``), stored in the index
as JSON (``to_dict`` / ``from_dict``, exact round trip), and handed to ``server.render``
together with one frame's bytes. LUT data is normalised to little-endian uint16 entries.

Value precedence for rescale and window (PS3.3 C.7.6.16): per-frame functional group >
shared functional group > top-level attribute.
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.pixels.processing import apply_color_lut

from server.dicom.attributes import json_key
from server.errors import BadRequest

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"
_FORMAT_VERSION = 1
_T = TypeVar("_T")
LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lut:
    """A lookup table: PS3.3 C.11.1.1.1 LUT Descriptor + entries (uint16 LE bytes)."""

    first_mapped: int
    bits: int
    data: bytes
    explanation: str = ""

    @property
    def entries(self) -> int:
        return len(self.data) // 2

    def values(self) -> npt.NDArray[np.uint16]:
        return np.frombuffer(self.data, dtype="<u2").astype(np.uint16)


@dataclass(frozen=True)
class Palette:
    """PALETTE COLOR LUTs (PS3.3 C.7.6.3.1.5), segmented ones already expanded."""

    red: Lut
    green: Lut
    blue: Lut


@dataclass(frozen=True)
class FrameValues:
    """Per-frame overrides from functional groups; ``None`` means "use the shared value"."""

    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    window_centers: tuple[float, ...] | None = None
    window_widths: tuple[float, ...] | None = None
    voi_lut_function: str | None = None


@dataclass(frozen=True)
class PixelDescriptor:
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    high_bit: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int
    number_of_frames: int
    transfer_syntax_uid: str
    pixel_keyword: str = "PixelData"
    pixel_vr: str = "OW"
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    modality_lut: Lut | None = None
    window_centers: tuple[float, ...] = ()
    window_widths: tuple[float, ...] = ()
    voi_lut_function: str = "LINEAR"
    voi_luts: tuple[Lut, ...] = ()
    presentation_lut_shape: str | None = None
    palette: Palette | None = None
    frames: tuple[FrameValues, ...] = field(default=())
    modality: str = ""
    pixel_spacing: tuple[float, float] | None = None
    frame_time_ms: float | None = None

    @property
    def is_float(self) -> bool:
        return self.pixel_keyword != "PixelData"

    @property
    def is_monochrome(self) -> bool:
        return self.photometric_interpretation in ("MONOCHROME1", "MONOCHROME2")

    def frame_values(self, frame_index: int) -> FrameValues:
        """Rescale and window for one frame, per-frame values resolved over shared ones."""
        own = self.frames[frame_index] if frame_index < len(self.frames) else FrameValues()
        return FrameValues(
            rescale_slope=_first(own.rescale_slope, self.rescale_slope),
            rescale_intercept=_first(own.rescale_intercept, self.rescale_intercept),
            window_centers=_first(own.window_centers, self.window_centers),
            window_widths=_first(own.window_widths, self.window_widths),
            voi_lut_function=_first(own.voi_lut_function, self.voi_lut_function),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (bytes as base64, tuples as lists)."""
        out: dict[str, Any] = {"version": _FORMAT_VERSION}
        for f in fields(self):
            out[f.name] = _to_json(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PixelDescriptor:
        """Inverse of ``to_dict``; raises ValueError for an unknown format version."""
        if d.get("version", _FORMAT_VERSION) != _FORMAT_VERSION:
            raise ValueError(f"pixel descriptor version {d.get('version')!r} is not supported")
        pal, spacing = d.get("palette"), d.get("pixel_spacing")
        return cls(
            **{k: d[k] for k in _SCALARS if k in d},
            modality_lut=_lut_json(d["modality_lut"]) if d.get("modality_lut") else None,
            window_centers=_floats_json(d.get("window_centers")) or (),
            window_widths=_floats_json(d.get("window_widths")) or (),
            voi_luts=tuple(_lut_json(v) for v in d.get("voi_luts", ())),
            palette=None if pal is None else Palette(*(_lut_json(pal[c]) for c in ("red", "green", "blue"))),
            frames=tuple(
                FrameValues(
                    f.get("rescale_slope"),
                    f.get("rescale_intercept"),
                    _floats_json(f.get("window_centers")),
                    _floats_json(f.get("window_widths")),
                    f.get("voi_lut_function"),
                )
                for f in d.get("frames", ())
            ),
            pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        )


def _lut_json(v: Any) -> Lut:
    return Lut(int(v["first_mapped"]), int(v["bits"]), base64.b64decode(v["data"]), str(v.get("explanation", "")))


def _floats_json(v: Any) -> tuple[float, ...] | None:
    return None if v is None else tuple(float(x) for x in v)


_SCALARS = (
    "rows", "columns", "samples_per_pixel", "bits_allocated", "bits_stored", "high_bit",
    "pixel_representation", "photometric_interpretation", "planar_configuration",
    "number_of_frames", "transfer_syntax_uid", "pixel_keyword", "pixel_vr", "rescale_slope",
    "rescale_intercept", "voi_lut_function", "presentation_lut_shape", "modality",
    "frame_time_ms",
)  # fmt: skip


def _first(value: _T | None, default: _T) -> _T:
    return default if value is None else value


def _to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, Lut | Palette | FrameValues):
        return {f.name: _to_json(getattr(value, f.name)) for f in fields(value)}
    return value


# ---------------------------------------------------------------- dataset -> descriptor


class _Attributes(Protocol):
    """What the descriptor reads of a dataset: a pydicom Dataset, or ``_DocAttributes``."""

    def get(self, key: str, default: Any = None, /) -> Any: ...

    def __contains__(self, key: str, /) -> bool: ...


def descriptor_from_dataset(ds: pydicom.Dataset) -> PixelDescriptor | None:
    """Build the descriptor; ``None`` when there is no pixel data.

    Raises BadRequest when the Image Pixel module (PS3.3 C.7.6.3) is missing or malformed.
    """
    keywords = [kw for kw in PIXEL_KEYWORDS if kw in ds]
    if not keywords:
        return None
    if len(keywords) > 1:
        raise BadRequest("only one of PixelData, FloatPixelData, DoubleFloatPixelData allowed")
    return _checked_build(ds, keywords[0], str(ds[keywords[0]].VR), _transfer_syntax(ds))


def _keys(*keywords: str) -> tuple[str, ...]:
    return tuple(json_key(kw) for kw in keywords)


# Where the descriptor needs the dataset: LUT data the DICOM JSON may hold only as a
# BulkDataURI, palettes (pydicom's expander reads a Dataset), functional groups (rare
# enhanced multi-frame files, whose items would all need checking as below).
_NEEDS_DATASET = _keys(
    "ModalityLUTSequence", "VOILUTSequence", "RedPaletteColorLookupTableDescriptor",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
)  # fmt: skip
# What the descriptor reads; the JSON model writes a value it cannot represent as a bare
# {"vr": "UN"}, where pydicom would raise (and the descriptor be refused).
_READ = _keys(
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "PhotometricInterpretation", "SamplesPerPixel", "PlanarConfiguration", "NumberOfFrames",
    "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "VOILUTFunction",
    "PresentationLUTShape", "Modality", "PixelSpacing", "ImagerPixelSpacing", "FrameTime",
)  # fmt: skip


def describable_from_doc(doc: Mapping[str, Any]) -> bool:
    """Whether ``descriptor_from_doc`` gives what ``descriptor_from_dataset`` would."""
    if any(key in doc for key in _NEEDS_DATASET):
        return False
    return not any(doc[key].get("vr") == "UN" for key in _READ if key in doc)


def descriptor_from_doc(doc: Mapping[str, Any], pixel_keyword: str, pixel_vr: str,
                        transfer_syntax: str) -> PixelDescriptor:
    """``descriptor_from_dataset`` from the instance's DICOM JSON (only where
    ``describable_from_doc``): at ingest the JSON is built anyway, and reading ~25 values from
    it costs a tenth of reading them through pydicom again."""
    return _checked_build(_DocAttributes(doc), pixel_keyword, pixel_vr, transfer_syntax)


class _DocAttributes:
    """A DICOM JSON dataset read the way the descriptor reads a pydicom Dataset: by keyword,
    a single value as itself, several as a list, a sequence as a list of items."""

    __slots__ = ("doc",)

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc

    def __contains__(self, keyword: str) -> bool:
        return json_key(keyword) in self.doc

    def get(self, keyword: str, default: Any = None) -> Any:
        element = self.doc.get(json_key(keyword))
        if element is None:
            return default
        values = element.get("Value")
        if element.get("vr") == "SQ":
            return [_DocAttributes(item) for item in values or ()]
        if not values:
            return None
        return values[0] if len(values) == 1 else list(values)


def _checked_build(ds: _Attributes, keyword: str, pixel_vr: str, transfer_syntax: str) -> PixelDescriptor:
    try:
        return _build(ds, keyword, pixel_vr, transfer_syntax)
    except BadRequest:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
        raise BadRequest(f"malformed image pixel attributes: {exc}") from exc


def _required_int(ds: _Attributes, keyword: str) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        raise BadRequest(f"{keyword}: missing required image pixel attribute")
    return int(value)


def _build(ds: _Attributes, keyword: str, pixel_vr: str, transfer_syntax: str) -> PixelDescriptor:
    is_float = keyword != "PixelData"
    bits_allocated = _required_int(ds, "BitsAllocated")
    rows, columns = _required_int(ds, "Rows"), _required_int(ds, "Columns")
    pi = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    if not pi:
        raise BadRequest("PhotometricInterpretation: missing required image pixel attribute")
    if is_float:
        bits_stored = bits_allocated
        pixel_rep = 0
    else:
        bits_stored = _required_int(ds, "BitsStored")
        pixel_rep = _required_int(ds, "PixelRepresentation")
    if rows <= 0 or columns <= 0 or not 0 < bits_stored <= bits_allocated:
        raise BadRequest("Rows/Columns/BitsStored: invalid image pixel attribute values")
    spp = int(ds.get("SamplesPerPixel") or 1)
    shared = _functional_group(ds, "SharedFunctionalGroupsSequence", 0)
    top = _frame_values(ds)
    per_frame = tuple(_frame_values(item) for item in ds.get("PerFrameFunctionalGroupsSequence") or ())
    if per_frame and all(fv == per_frame[0] for fv in per_frame):
        shared = _merge(per_frame[0], shared)
        per_frame = ()
    base = _merge(shared, top)
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    frame_time = ds.get("FrameTime")
    luts = _Luts.of(ds, transfer_syntax != _EXPLICIT_BE, pi == "PALETTE COLOR")
    return PixelDescriptor(
        rows=rows,
        columns=columns,
        samples_per_pixel=spp,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        high_bit=int(_first(ds.get("HighBit"), bits_stored - 1)),
        pixel_representation=pixel_rep,
        photometric_interpretation=pi,
        planar_configuration=int(ds.get("PlanarConfiguration") or 0) if spp > 1 else 0,
        number_of_frames=max(int(ds.get("NumberOfFrames") or 1), 1),
        transfer_syntax_uid=transfer_syntax,
        pixel_keyword=keyword,
        pixel_vr=pixel_vr,
        rescale_slope=_first(base.rescale_slope, 1.0),
        rescale_intercept=_first(base.rescale_intercept, 0.0),
        modality_lut=luts.modality,
        window_centers=base.window_centers or (),
        window_widths=base.window_widths or (),
        voi_lut_function=base.voi_lut_function or "LINEAR",
        voi_luts=luts.voi,
        presentation_lut_shape=_upper(ds.get("PresentationLUTShape")),
        palette=luts.palette if pi == "PALETTE COLOR" else None,
        frames=per_frame,
        modality=str(ds.get("Modality") or ""),
        pixel_spacing=(float(spacing[0]), float(spacing[1])) if _pair(spacing) else None,
        frame_time_ms=_finite(frame_time),
    )


def _transfer_syntax(ds: pydicom.Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid:
        return str(uid)
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if little is False:
        return _EXPLICIT_BE
    return _EXPLICIT_LE if implicit is False else _IMPLICIT_LE


def _upper(value: Any) -> str | None:
    return str(value).strip().upper() or None if value is not None else None


def _pair(value: Any) -> bool:
    try:
        return len(value) >= 2 and all(math.isfinite(float(v)) for v in value[:2])
    except (TypeError, ValueError):
        return False


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _floats(value: Any) -> tuple[float, ...] | None:
    if value is None or value == "":
        return None
    items: Iterable[Any] = value if isinstance(value, list | tuple) or _is_multi(value) else [value]
    out = tuple(f for f in (_finite(v) for v in items) if f is not None)
    return out or None


def _is_multi(value: Any) -> bool:
    return type(value).__name__ == "MultiValue"


def _functional_group(ds: _Attributes, keyword: str, index: int) -> FrameValues:
    seq = ds.get(keyword)
    return _frame_values(seq[index]) if seq and len(seq) > index else FrameValues()


def _frame_values(item: _Attributes) -> FrameValues:
    """Rescale + window of one functional-group item (PS3.3 C.7.6.16.2.9 / .10) or top level."""
    source = item
    pvt = item.get("PixelValueTransformationSequence")
    voi = item.get("FrameVOILUTSequence")
    rescale = pvt[0] if pvt else source
    window = voi[0] if voi else source
    centers, widths = _floats(window.get("WindowCenter")), _floats(window.get("WindowWidth"))
    if centers is None or widths is None:
        centers = widths = None
    else:
        n = min(len(centers), len(widths))
        centers, widths = centers[:n], widths[:n]
    return FrameValues(
        rescale_slope=_finite(rescale.get("RescaleSlope")),
        rescale_intercept=_finite(rescale.get("RescaleIntercept")),
        window_centers=centers,
        window_widths=widths,
        voi_lut_function=_upper(window.get("VOILUTFunction")),
    )


def _merge(preferred: FrameValues, fallback: FrameValues) -> FrameValues:
    return FrameValues(*(_first(getattr(preferred, f.name), getattr(fallback, f.name)) for f in fields(FrameValues)))


def _lut_values(item: pydicom.Dataset, little_endian: bool) -> npt.NDArray[np.uint16]:
    """LUT Data (US list or OW bytes) as uint16 entries (PS3.3 C.11.1.1.1)."""
    descriptor = [int(v) for v in item.LUTDescriptor]
    entries = descriptor[0] or 65536
    elem = item["LUTData"]
    if isinstance(elem.value, bytes):
        raw = np.frombuffer(elem.value, dtype="<u2" if little_endian else ">u2")
    else:
        raw = np.asarray(elem.value if _is_multi(elem.value) or isinstance(elem.value, list)
                         else [elem.value], dtype=np.int64)  # fmt: skip
    if raw.size < entries:
        raise BadRequest(f"LUTData: {raw.size} entries, LUTDescriptor says {entries}")
    return raw[:entries].astype(np.uint16)


def _lut_from_item(item: pydicom.Dataset, little_endian: bool) -> Lut | None:
    if "LUTDescriptor" not in item or "LUTData" not in item:
        return None
    descriptor = [int(v) for v in item.LUTDescriptor]
    values = _lut_values(item, little_endian)
    explanation = str(item.get("LUTExplanation") or "")
    return Lut(descriptor[1], descriptor[2], values.astype("<u2").tobytes(), explanation)


@dataclass(frozen=True)
class _Luts:
    modality: Lut | None = None
    voi: tuple[Lut, ...] = ()
    palette: Palette | None = None

    @classmethod
    def of(cls, ds: _Attributes, little_endian: bool, palette: bool) -> _Luts:
        """The LUTs of a pydicom Dataset; a DICOM JSON source has none (``describable_from_doc``)."""
        if not isinstance(ds, pydicom.Dataset):
            return cls()
        seq = ds.get("ModalityLUTSequence")
        voi = (_lut_from_item(item, little_endian) for item in ds.get("VOILUTSequence") or ())
        return cls(
            modality=_lut_from_item(seq[0], little_endian) if seq else None,
            voi=tuple(lut for lut in voi if lut is not None),
            palette=_palette(ds) if palette else None,
        )


def _palette(ds: pydicom.Dataset) -> Palette | None:
    """Resolve normal or segmented palettes (PS3.3 C.7.9.2) with pydicom's expander.

    An unusable palette gives ``None``: the descriptor still builds, rendering says 501.
    """
    if "RedPaletteColorLookupTableDescriptor" not in ds:
        return None
    try:
        descriptor = [int(v) for v in ds.RedPaletteColorLookupTableDescriptor]
        entries, first = descriptor[0] or 65536, descriptor[1]
        table = apply_color_lut(np.arange(first, first + entries, dtype=np.int64), ds)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        LOGGER.warning("unusable palette colour lookup table: %s", exc)
        return None
    bits = 8 if table.dtype == np.uint8 else 16
    channels = [Lut(first, bits, table[:, i].astype("<u2").tobytes()) for i in range(3)]
    return Palette(*channels)
