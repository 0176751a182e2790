"""UIDs and transfer syntaxes (PS3.5 §9, PS3.6 Annex A)."""

from __future__ import annotations

import re

from server.errors import BadRequest

# PS3.5 §9.1: components of digits separated by dots, no leading zeros, at most 64 chars.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
# Many real files carry components with leading zeros; accept them (still digits and dots).
_UID_LENIENT = re.compile(r"^[0-9]+(\.[0-9]+)*$")

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS_P14 = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR = "1.2.840.10008.1.2.4.81"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_2000 = "1.2.840.10008.1.2.4.91"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

NATIVE_SYNTAXES = frozenset({IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE, DEFLATED_LE})

# PS3.18 Table 8.7.3-5: media type of a compressed frame, by transfer syntax.
FRAME_MEDIA_TYPES: dict[str, str] = {
    JPEG_BASELINE: "image/jpeg",
    JPEG_EXTENDED: "image/jpeg",
    JPEG_LOSSLESS_P14: "image/jpeg",
    JPEG_LOSSLESS_SV1: "image/jpeg",
    JPEG_LS_LOSSLESS: "image/jls",
    JPEG_LS_NEAR: "image/jls",
    JPEG_2000_LOSSLESS: "image/jp2",
    JPEG_2000: "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    RLE_LOSSLESS: "image/dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
    "1.2.840.10008.1.2.4.107": "video/H265",
    "1.2.840.10008.1.2.4.108": "video/H265",
}

# Stored syntaxes cornerstone (OHIF) decodes in the browser (checklist FRM-06).
BROWSER_DECODABLE = frozenset(
    {
        EXPLICIT_VR_LE,
        RLE_LOSSLESS,
        JPEG_BASELINE,
        JPEG_EXTENDED,
        JPEG_LOSSLESS_P14,
        JPEG_LOSSLESS_SV1,
        JPEG_LS_LOSSLESS,
        JPEG_LS_NEAR,
        JPEG_2000_LOSSLESS,
        JPEG_2000,
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    }
)


def is_valid_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and _UID_LENIENT.match(value) is not None


def require_uid(value: str, what: str) -> str:
    """Return ``value`` if it is a syntactically valid UID, else raise BadRequest."""
    if not is_valid_uid(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise BadRequest(f"{what}: {shown!r} is not a valid UID (digits and dots, at most 64)")
    return value


def is_encapsulated(transfer_syntax: str) -> bool:
    return transfer_syntax not in NATIVE_SYNTAXES
