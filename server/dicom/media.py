"""Media types and Accept negotiation (RFC 7231 §5.3; PS3.18 §8.7).

Type, subtype and parameter names are case-insensitive; quoted and unquoted parameter
values are the same value; whitespace around ``;`` is optional (Weasis sends none).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
OCTET = "application/octet-stream"
MULTIPART = "multipart/related"


@dataclass(frozen=True)
class MediaRange:
    type: str  # e.g. "multipart/related", "image/*", "*/*"
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0
    order: int = 0

    @property
    def inner(self) -> str | None:
        """For ``multipart/related``: the ``type`` parameter (the part media type)."""
        value = self.params.get("type")
        return value.lower() if value else None

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")

    def matches(self, media_type: str) -> bool:
        if self.type == "*/*":
            return True
        major, _, minor = self.type.partition("/")
        other_major, _, other_minor = media_type.lower().partition("/")
        return major == other_major and (minor == "*" or minor == other_minor)


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    out: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    out.append("".join(buf))
    return out


def parse_media_type(text: str) -> tuple[str, dict[str, str]]:
    """``multipart/related; type="application/dicom"; boundary=x`` → (type, params)."""
    pieces = _split(text, ";")
    media = pieces[0].strip().lower()
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        name, sep, value = piece.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        params[name.strip().lower()] = value
    return media, params


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges from an Accept header, most preferred first; empty header → ``*/*``."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges: list[MediaRange] = []
    for order, item in enumerate(_split(header, ",")):
        if not item.strip():
            continue
        media, params = parse_media_type(item)
        q = 1.0
        if "q" in params:
            try:
                q = max(0.0, min(1.0, float(params.pop("q"))))
            except ValueError:
                q = 1.0
        if "/" not in media:
            media = "*/*" if media == "*" else media
        if q > 0:
            ranges.append(MediaRange(media, params, q, order))
    # Higher q first; then more specific; then the order the client wrote them.
    return sorted(ranges, key=lambda r: (-r.q, r.type.count("*"), r.order))


def accept_from_query(values: list[str]) -> str | None:
    """The ``accept`` query parameter overrides the Accept header (PS3.18 §8.3.3.1)."""
    joined = ",".join(v for v in values if v)
    return joined or None
