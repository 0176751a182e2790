"""Choosing what to send: media type and transfer syntax per resource category (PS3.18 §8.7).

Pure. ``offers()`` turns the client's media ranges (already parsed and sorted by
``media.parse_accept``) into the acceptable answers for one resource category, most
preferred first; the ``resolve_*`` functions then pick, for one stored object (or frame),
the first offer that can actually be produced. Nothing fits → ``NotAcceptable`` with the
reasons, which the HTTP edge turns into 406.

Rules we follow (checklist GEN-04..08, WADO-03, FRM-02..07):

* Quoted and unquoted parameters are equal; ``*/*``, ``multipart/*`` and a multipart range
  without ``type`` mean the category's default media type.
* ``transfer-syntax`` absent means the media type's default: Explicit VR Little Endian for
  ``application/dicom`` and ``application/octet-stream`` (PS3.18 §8.7.3.4), the stored
  syntax when it already has the requested image type, else Table 8.7.3-5's default.
* ``transfer-syntax=*`` means "as stored" — except Implicit VR Little Endian and Explicit
  VR Big Endian, which are never sent (PS3.18 §8.7.3) and go out as Explicit VR LE.
* Frames asked as ``application/octet-stream; transfer-syntax=*`` (OHIF) get the stored
  bytes when the browser decodes that syntax (``BROWSER_DECODABLE``), else Explicit VR LE.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from server.dicom.media import DICOM, DICOM_JSON, DICOM_XML, MULTIPART, OCTET, MediaRange
from server.dicom.uids import (
    BROWSER_DECODABLE,
    DEFLATED_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    FRAME_MEDIA_TYPES,
    IMPLICIT_VR_LE,
    JPEG_2000_LOSSLESS,
    JPEG_LOSSLESS_SV1,
    JPEG_LS_LOSSLESS,
    NATIVE_SYNTAXES,
    RLE_LOSSLESS,
    is_valid_uid,
)
from server.errors import NotAcceptable

Category = Literal["instances", "metadata", "bulk", "frames"]
ZIP = "application/zip"
JSON = "application/json"
ANY = "*"  # transfer-syntax=*: as stored

# PS3.18 Table 8.7.3-5: the default transfer syntax of each compressed frame media type.
DEFAULT_SYNTAX: dict[str, str] = {
    "image/jpeg": JPEG_LOSSLESS_SV1,
    "image/jls": JPEG_LS_LOSSLESS,
    "image/jp2": JPEG_2000_LOSSLESS,
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": "1.2.840.10008.1.2.4.201",
    "image/dicom-rle": RLE_LOSSLESS,
    "video/mpeg": "1.2.840.10008.1.2.4.100",
    "video/mp4": "1.2.840.10008.1.2.4.102",
    "video/h265": "1.2.840.10008.1.2.4.107",
}
# Older spellings clients still send (checklist FRM-04).
_ALIASES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle", "image/dicom+jpeg": "image/jpeg",
            "image/jph": "image/jphc"}
_NEVER_SENT = frozenset({IMPLICIT_VR_LE, EXPLICIT_VR_BE})

# can_produce(stored_syntax, target_syntax) → True when the services can make target from stored.
CanProduce = Callable[[str, str], bool]


@dataclass(frozen=True)
class Offer:
    """One acceptable answer: the (part) media type, multipart or not, and the syntax wanted.

    ``media_type`` may be a pattern (``*/*``, ``image/*``) for the bulk and frame categories;
    ``transfer_syntax`` is a UID, ``"*"`` (as stored) or ``None`` (the media type's default).
    """

    media_type: str
    multipart: bool
    transfer_syntax: str | None
    q: float = 1.0


@dataclass(frozen=True)
class Choice:
    """What one part will be: its media type and the transfer syntax of its bytes."""

    media_type: str
    transfer_syntax: str
    multipart: bool

    @property
    def content_type(self) -> str:
        """The part ``Content-Type`` line value, transfer-syntax included (checklist FRM-03)."""
        if self.media_type in (DICOM, OCTET) or self.media_type in FRAME_MEDIA_TYPES.values():
            return f"{self.media_type}; transfer-syntax={self.transfer_syntax}"
        return self.media_type


def media_type_of_syntax(transfer_syntax: str) -> str:
    """The media type a frame in this syntax travels as (Table 8.7.3-5)."""
    return FRAME_MEDIA_TYPES.get(transfer_syntax, OCTET)


def _syntax(r: MediaRange) -> str | None:
    value = r.transfer_syntax
    if value is None or value == ANY:
        return value
    return value if is_valid_uid(value) else "invalid:" + value


def _is_multipart(r: MediaRange) -> bool:
    return r.type in (MULTIPART, "multipart/*")


def offers(ranges: Sequence[MediaRange], category: Category, *, single_part: bool) -> list[Offer]:
    """The acceptable answers for ``category``, most preferred first; raise 406 when none.

    ``single_part``: a single-part (non-multipart) body is possible here (one instance,
    one frame, one bulk value).
    """
    out: list[Offer] = []
    reasons: list[str] = []
    for r in ranges:
        made = _offer(r, category, single_part, reasons)
        if made is not None and made not in out:
            out.append(made)
    if not out:
        raise NotAcceptable(_reason(category, reasons))
    return out


def _reason(category: Category, reasons: list[str]) -> str:
    supported = {
        "instances": f'multipart/related; type="{DICOM}" (optionally with transfer-syntax), '
                     f"{DICOM} for one instance, {ZIP}",
        "metadata": f'{DICOM_JSON} or multipart/related; type="{DICOM_XML}"',
        "bulk": f'multipart/related; type="{OCTET}" or {OCTET}',
        "frames": f'multipart/related; type="{OCTET}" or an image type (image/jpeg, image/jls, image/jp2, '
                  "image/jphc, image/dicom-rle), with transfer-syntax",
    }[category]
    detail = "; ".join(dict.fromkeys(reasons))
    return f"none of the accepted media types can be produced{': ' + detail if detail else ''}. " \
           f"Supported here: {supported}"


def _offer(r: MediaRange, category: Category, single_part: bool, reasons: list[str]) -> Offer | None:
    ts = _syntax(r)
    if ts is not None and ts.startswith("invalid:"):
        reasons.append(f"transfer-syntax {ts[8:]!r} is not a UID")
        return None
    if category == "metadata":
        if r.type in ("*/*", "application/*", DICOM_JSON, JSON):
            return Offer(DICOM_JSON, False, None, r.q)
        if _is_multipart(r) and r.inner in (None, DICOM_XML):
            return Offer(DICOM_XML, True, None, r.q)
        reasons.append(f"{r.type} is not a metadata media type")
        return None
    if category == "instances":
        return _instance_offer(r, ts, single_part, reasons)
    return _binary_offer(r, ts, category, single_part, reasons)


def _instance_offer(r: MediaRange, ts: str | None, single_part: bool, reasons: list[str]) -> Offer | None:
    if r.type == "*/*":
        return Offer(DICOM, True, ts, r.q)
    if _is_multipart(r):
        inner = r.inner or DICOM
        if inner in (DICOM, "*/*", "application/*"):
            return Offer(DICOM, True, ts, r.q)
        reasons.append(f'multipart/related; type="{inner}" is not offered for instances')
        return None
    if r.type in (DICOM, "application/*"):
        if single_part:
            return Offer(DICOM, False, ts, r.q)
        reasons.append(f"single-part {DICOM} holds one instance only (PS3.18 §8.7.3.3.2)")
        return None
    if r.type == ZIP:
        return Offer(ZIP, False, ts or ANY, r.q)
    reasons.append(f"{r.type} is not an instance media type")
    return None


def _binary_offer(
    r: MediaRange, ts: str | None, category: Category, single_part: bool, reasons: list[str]
) -> Offer | None:
    if r.type == "*/*":
        return Offer(OCTET, True, ts, r.q)
    if _is_multipart(r):
        inner = _ALIASES.get(r.inner or OCTET, r.inner or OCTET)
        return _typed_offer(inner, True, ts, r.q, reasons)
    media = _ALIASES.get(r.type, r.type)
    if not single_part:
        reasons.append(f"single-part {media} holds one {'frame' if category == 'frames' else 'value'} only")
        return None
    return _typed_offer(media, False, ts, r.q, reasons)


def _typed_offer(media: str, multipart: bool, ts: str | None, q: float, reasons: list[str]) -> Offer | None:
    if media == OCTET or media.endswith("/*") or media in DEFAULT_SYNTAX:
        if ts not in (None, ANY) and media in DEFAULT_SYNTAX and FRAME_MEDIA_TYPES.get(ts) != media:
            reasons.append(f"transfer-syntax {ts} is not a {media} syntax")
            return None
        return Offer(media, multipart, ts, q)
    reasons.append(f"{media} is not a pixel or bulk data media type")
    return None


# ---------------------------------------------------------------- per-object resolution


def _as_sent(stored: str) -> str:
    """Implicit VR LE and Big Endian go out as Explicit VR LE (PS3.18 §8.7.3)."""
    return EXPLICIT_VR_LE if stored in _NEVER_SENT else stored


def resolve_instance(options: Sequence[Offer], stored: str, can_produce: CanProduce) -> Choice:
    """The first offer a whole instance (Part-10) can be sent as."""
    reasons: list[str] = []
    for o in options:
        ts = o.transfer_syntax
        if ts is None:  # default ELE; a file we cannot decode keeps its syntax (checklist WADO-03)
            target = EXPLICIT_VR_LE if can_produce(stored, EXPLICIT_VR_LE) else _as_sent(stored)
        elif ts == ANY:
            target = _as_sent(stored)
        elif ts in _NEVER_SENT:
            reasons.append(f"{ts} is never sent (PS3.18 §8.7.3)")
            continue
        else:
            target = ts
        if target == stored or can_produce(stored, target):
            return Choice(o.media_type, target, o.multipart)
        reasons.append(f"cannot transcode {stored} to {target}")
    raise NotAcceptable("; ".join(dict.fromkeys(reasons)) or "no acceptable transfer syntax")


def _frame_target(o: Offer, stored: str) -> tuple[str, str] | None:
    """(media type, syntax) an offer asks of a frame stored in ``stored``; None: not applicable."""
    sent = _as_sent(stored)
    stored_media = media_type_of_syntax(sent)
    ts = o.transfer_syntax
    media = o.media_type
    if media == OCTET:
        if ts is None or ts == EXPLICIT_VR_LE:
            return OCTET, EXPLICIT_VR_LE
        if ts == ANY:
            if sent in BROWSER_DECODABLE or sent == DEFLATED_LE:
                return (OCTET, EXPLICIT_VR_LE) if sent in NATIVE_SYNTAXES else (stored_media, sent)
            return OCTET, EXPLICIT_VR_LE
        if ts in _NEVER_SENT:
            return None
        return media_type_of_syntax(ts), ts
    if media.endswith("/*"):  # */* or image/*: anything matching, as stored by default
        if ts in (None, ANY):
            target = EXPLICIT_VR_LE if sent in NATIVE_SYNTAXES else sent
        elif ts in _NEVER_SENT:
            return None
        else:
            target = ts
        out_media = media_type_of_syntax(target)
        major = media.split("/")[0]
        if major != "*" and not out_media.startswith(major + "/"):
            return None
        return out_media, target
    # a specific compressed type: the stored syntax if it is of that type, else the type's default
    if ts not in (None, ANY):
        return media, ts
    return media, sent if stored_media == media else DEFAULT_SYNTAX[media]


def resolve_frame(options: Sequence[Offer], stored: str, can_produce: CanProduce,
                  multipart: bool | None = None) -> Choice:
    """The first offer one frame can be sent as (``multipart`` fixes the framing if set)."""
    reasons: list[str] = []
    for o in options:
        if multipart is not None and o.multipart != multipart:
            continue
        picked = _frame_target(o, stored)
        if picked is None:
            reasons.append(f"{o.media_type} with transfer-syntax {o.transfer_syntax} does not apply to {stored}")
            continue
        media, target = picked
        if target == _as_sent(stored) and stored not in _NEVER_SENT:
            return Choice(media, target, o.multipart)
        if can_produce(stored, target):
            return Choice(media, target, o.multipart)
        reasons.append(f"cannot produce {media} ({target}) from {stored}")
    raise NotAcceptable("; ".join(dict.fromkeys(reasons)) or "no acceptable frame media type")


def resolve_bulk(options: Sequence[Offer]) -> Offer:
    """Bulk values other than pixel data are plain bytes: any octet-stream-compatible offer."""
    for o in options:
        if o.media_type in (OCTET, "*/*", "application/*"):
            return o
    raise NotAcceptable(f"bulk data is sent as {OCTET}; the Accept header does not allow it")
