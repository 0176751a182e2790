"""Datasets to the DICOM JSON model (PS3.18 Annex F).

Bulk values become ``BulkDataURI``s. They are written *relative* to the DICOMweb root
(``/studies/…/bulk/…``) and made absolute when served, by one byte replace of the exact
``"BulkDataURI":"/`` pattern — so the stored JSON never depends on the public host name.
"""

from __future__ import annotations

import base64
import logging
import math
from typing import Any

import orjson
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import VR

from server.dicom.json_fast import SIMPLE_CHARSETS, fast_value
from server.dicom.uids import is_encapsulated

log = logging.getLogger(__name__)

# PS3.18 F.2.2: values of these VRs are binary and go inline or to a BulkDataURI.
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
# Values at or above this many bytes are bulk data (metadata stays small; OHIF fetches few).
BULK_THRESHOLD = 1024
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
BULK_PATTERN = b'"BulkDataURI":"/'

# The JSON of a raw element depends only on its bytes (VR, value, encoding): the slices of a
# series repeat nearly all of theirs, so a hit skips the conversion. The cached objects are
# shared between documents: only ever serialised, never changed. Bounded by a clear when full.
_ELEMENT_CACHE: dict[tuple[Any, ...], dict[str, Any]] = {}
_CACHE_ENTRIES = 8192
_CACHE_VALUE_BYTES = 256  # longer values are seldom repeated and would make the cache big
_TAG_NAMES: dict[int, str] = {}  # 0x00100010 -> "00100010": formatting each one adds up


def _tag_name(tag: int) -> str:
    name = f"{tag:08X}"
    if len(_TAG_NAMES) < _CACHE_ENTRIES:
        _TAG_NAMES[tag] = name
    return name


def bulk_path(instance_path: str, tag_path: tuple[int, ...], items: tuple[int, ...]) -> str:
    """``/studies/s/series/se/instances/i/bulk/7FE00010`` or a nested ``…/00540016/0/00181074``."""
    parts = []
    for depth, tag in enumerate(tag_path):
        parts.append(f"{tag:08X}")
        if depth < len(items):
            parts.append(str(items[depth]))
    return f"{instance_path}/bulk/{'/'.join(parts)}"


def _number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # PS3.18 F.2.3: NaN/Infinity have no JSON number form
    return value


def _binary_json(
    vr: str, value: bytes, instance_path: str, tag_path: tuple[int, ...], items: tuple[int, ...]
) -> dict[str, Any]:
    out: dict[str, Any] = {"vr": vr}
    if value:
        if len(value) >= BULK_THRESHOLD:
            out["BulkDataURI"] = bulk_path(instance_path, tag_path, items)
        else:
            out["InlineBinary"] = base64.b64encode(value).decode("ascii")
    return out


def _element_json(
    elem: DataElement,
    instance_path: str,
    tag_path: tuple[int, ...],
    items: tuple[int, ...],
    encoding: str | None,
) -> dict[str, Any]:
    vr = elem.VR
    if vr == VR.SQ:
        out: dict[str, Any] = {"vr": "SQ"}
        values = [
            _dataset_json(item, instance_path, tag_path, (*items, n), encoding)
            for n, item in enumerate(elem.value)
        ]
        if values:
            out["Value"] = values
        return out
    if vr in _BINARY_VRS or vr in ("US or SS", "OB or OW", "US or OW", "US or SS or OW"):
        value = elem.value
        if vr not in _BINARY_VRS and not isinstance(value, bytes | bytearray):
            return elem.to_json_dict(None, BULK_THRESHOLD)
        resolved = "OW" if vr.startswith("OB or") or vr.startswith("US or") else vr
        return _binary_json(resolved, bytes(value), instance_path, tag_path, items)
    result: dict[str, Any] = elem.to_json_dict(None, BULK_THRESHOLD)
    if "Value" in result:
        if vr in ("FL", "FD", "DS"):
            result["Value"] = [_number(v) for v in result["Value"]]
        if not result["Value"]:
            del result["Value"]
    return result


def _dataset_json(
    ds: Dataset, instance_path: str, parent: tuple[int, ...], items: tuple[int, ...], inherited: str | None = "latin-1"
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Items inherit the character set of the dataset that holds them (PS3.5 §6.1.2.5.3).
    encoding = _simple_encoding(ds) if 0x00080005 in ds else inherited
    # The elements as stored (raw until something reads them), by plain int tags: sorting
    # and lookups then run in C, not through pydicom's Python-level tag comparisons.
    elements = dict(zip(map(int, ds.keys()), ds.values(), strict=True))
    for tag in sorted(elements):  # F.2.2 wants ascending keys
        if tag & 0xFFFF == 0 or tag >> 16 in (0x0002, 0xFFFE):
            continue  # no group lengths, no file meta, no stray item tags (PS3.18 F.2.2)
        raw = elements[tag]
        name = _TAG_NAMES.get(tag) or _tag_name(tag)
        if isinstance(raw, RawDataElement) and raw.VR != "SQ" and isinstance(raw.value, bytes):
            vr = str(raw.VR)
            # Bytes as they are; private UN stays UN (PS3.18 F.2.2, checklist JSON-10); a
            # public UN takes pydicom's road, which finds its VR in the dictionary.
            if vr not in _BINARY_VRS or vr != "UN" or tag >> 16 & 1:
                if vr in _BINARY_VRS and len(raw.value) >= BULK_THRESHOLD:
                    out[name] = _binary_json(vr, raw.value, instance_path, (*parent, tag), items)
                    continue
                fast = _raw_json(raw, vr, encoding)
                if fast is not None:
                    out[name] = fast
                    continue
        try:
            elem = ds[tag]
            out[name] = _element_json(elem, instance_path, (*parent, tag), items, encoding)
        except Exception as exc:  # a malformed value must not lose the rest of the header
            log.warning("element %08X not representable in JSON: %s", tag, exc)
            out[name] = {"vr": "UN"}
    return out


def _raw_json(raw: RawDataElement, vr: str, encoding: str | None) -> dict[str, Any] | None:
    """The JSON of a raw element below the bulk threshold straight from its bytes, or None to
    take pydicom's road."""
    value = raw.value
    if not isinstance(value, bytes):
        return None
    key = (vr, value, encoding, raw.is_little_endian)
    cached = _ELEMENT_CACHE.get(key)
    if cached is None:
        cached = _binary_json(vr, value, "", (), ()) if vr in _BINARY_VRS else fast_value(raw, encoding)
        if cached is not None and len(value) <= _CACHE_VALUE_BYTES:
            if len(_ELEMENT_CACHE) >= _CACHE_ENTRIES:
                _ELEMENT_CACHE.clear()
            _ELEMENT_CACHE[key] = cached
    return cached


def _simple_encoding(ds: Dataset) -> str | None:
    """The codec for text values when the character set needs no escapes, else None."""
    raw = ds.get_item(0x00080005)
    if raw is None:
        return SIMPLE_CHARSETS[""]
    value = raw.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    names = [v.strip() for v in (value if isinstance(value, list | tuple) else str(value or "").split("\\"))]
    names = [n for n in names if n] or [""]
    if len(names) == 1 and names[0] in SIMPLE_CHARSETS:
        return SIMPLE_CHARSETS[names[0]]
    return None


def dataset_to_json(ds: Dataset, instance_path: str, pixel_tag: int | None = None) -> bytes:
    """Serialise a header (read with stop_before_pixels) to DICOM JSON bytes.

    ``instance_path`` is the instance's path below the DICOMweb root; ``pixel_tag`` adds the
    pixel data element (not in ``ds``) as a BulkDataURI.
    """
    return orjson.dumps(dataset_to_doc(ds, instance_path, pixel_tag))


def dataset_to_doc(ds: Dataset, instance_path: str, pixel_tag: int | None = None) -> dict[str, Any]:
    """``dataset_to_json`` before serialisation: read it, never change it (its element
    objects are shared with other documents)."""
    doc = _dataset_json(ds, instance_path, (), ())
    if pixel_tag is not None:
        vr = {0x7FE00008: "OF", 0x7FE00009: "OD"}.get(pixel_tag, "OB" if _is_encapsulated(ds) else "OW")
        if pixel_tag == 0x7FE00010 and not _is_encapsulated(ds) and ds.get("BitsAllocated", 16) <= 8:
            vr = "OB"
        doc[f"{pixel_tag:08X}"] = {"vr": vr, "BulkDataURI": f"{instance_path}/bulk/{pixel_tag:08X}"}
    return doc


def _is_encapsulated(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return ts is not None and is_encapsulated(str(ts))


def absolutize(doc: bytes, base_url: str) -> bytes:
    """Make the stored relative BulkDataURIs absolute for one response."""
    return doc.replace(BULK_PATTERN, b'"BulkDataURI":"' + base_url.encode() + b"/")
