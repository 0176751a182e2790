"""Where each frame's bytes are in a Part-10 file (PS3.5 §8.2, A.4).

The index keeps, per frame, the list of ``(offset, length)`` spans of its bytes in the file:
one span for native pixel data, one per fragment for encapsulated data (item headers
excluded). Reading a frame is then a few ``pread``s, never a re-parse.

Pure: bytes come from a ``read_at(offset, size)`` callable supplied by the caller.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from server.dicom.uids import EXPLICIT_VR_BE, IMPLICIT_VR_LE, NATIVE_SYNTAXES

ReadAt = Callable[[int, int], bytes]
Span = tuple[int, int]
FrameSpans = list[list[Span]]

_ITEM = 0xFFFEE000
_SEQ_DELIM = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}


class FrameLayoutError(ValueError):
    """The pixel data cannot be split into frames."""


@dataclass(frozen=True)
class PixelElement:
    tag: int
    value_offset: int
    length: int  # _UNDEFINED for encapsulated
    vr: bytes = b""  # b"" when the syntax is implicit VR


def read_pixel_element(read_at: ReadAt, offset: int, transfer_syntax: str) -> PixelElement:
    """Parse the pixel data element header starting at ``offset``."""
    head = read_at(offset, 12)
    if len(head) < 8:
        raise FrameLayoutError("pixel data element truncated")
    big = transfer_syntax == EXPLICIT_VR_BE
    group, elem = struct.unpack(">HH" if big else "<HH", head[:4])
    tag = (group << 16) | elem
    if transfer_syntax == IMPLICIT_VR_LE:
        (length,) = struct.unpack("<I", head[4:8])
        return PixelElement(tag, offset + 8, length)
    vr = head[4:6]
    if vr in _LONG_VRS:
        (length,) = struct.unpack(">I" if big else "<I", head[8:12])
        return PixelElement(tag, offset + 12, length, vr)
    (length,) = struct.unpack(">H" if big else "<H", head[6:8])
    return PixelElement(tag, offset + 8, length, vr)


def native_frames(
    element: PixelElement, rows: int, columns: int, samples: int, bits_allocated: int, frames: int,
    photometric: str = "", swapped_words: bool = False,
) -> FrameSpans:
    """Byte spans of native frames; for 1-bit data, the whole bytes that hold each frame.

    ``swapped_words``: 8-bit values in big-endian OW are byte-swapped in 16-bit words, so a
    frame's span is widened to whole words."""
    if element.length == _UNDEFINED:
        raise FrameLayoutError("native pixel data with undefined length")
    if photometric.endswith("_422") and samples == 3:
        samples = 2  # PS3.3 C.7.6.3.1.2: two chroma values per two pixels: Y Y Cb Cr
    frame_bits = rows * columns * samples * bits_allocated
    spans: FrameSpans = []
    for n in range(frames):
        start_bit = n * frame_bits
        start = start_bit // 8
        end = (start_bit + frame_bits + 7) // 8
        if swapped_words:
            start, end = start - start % 2, min(end + end % 2, element.length)
        if end > element.length:
            raise FrameLayoutError(f"pixel data holds fewer than {frames} frames")
        spans.append([(element.value_offset + start, end - start)])
    return spans


def _items(read_at: ReadAt, offset: int, end: int) -> list[Span]:
    """(value offset, length) of each item of an encapsulated sequence, BOT first."""
    items: list[Span] = []
    pos = offset
    while pos + 8 <= end:
        head = read_at(pos, 8)
        if len(head) < 8:
            break
        group, elem, length = struct.unpack("<HHI", head)
        tag = (group << 16) | elem
        if tag == _SEQ_DELIM:
            return items
        if tag != _ITEM or length == _UNDEFINED:
            raise FrameLayoutError(f"unexpected tag {tag:08X} in encapsulated pixel data")
        if pos + 8 + length > end:
            raise FrameLayoutError("encapsulated pixel data truncated")
        items.append((pos + 8, length))
        pos += 8 + length
    raise FrameLayoutError("encapsulated pixel data has no sequence delimiter")


def _starts_frame(read_at: ReadAt, fragment: Span) -> bool:
    head = read_at(fragment[0], 4)
    # JPEG SOI, JPEG 2000 codestream SOC+SIZ, JP2 signature box
    return head[:2] == b"\xff\xd8" or head[:4] == b"\xff\x4f\xff\x51" or head[:4] == b"\x00\x00\x00\x0c"


def _group_by_offsets(fragments: list[Span], first: int, offsets: list[int]) -> FrameSpans:
    frames: FrameSpans = [[] for _ in offsets]
    starts = [first + o for o in offsets]
    index = -1
    for frag in fragments:
        item_start = frag[0] - 8
        while index + 1 < len(starts) and item_start >= starts[index + 1]:
            index += 1
        if index < 0:
            raise FrameLayoutError("offset table does not start at the first fragment")
        frames[index].append(frag)
    if any(not f for f in frames):
        raise FrameLayoutError("offset table points at no fragment")
    return frames


def encapsulated_frames(
    read_at: ReadAt,
    element: PixelElement,
    end: int,
    frames: int,
    extended_offsets: list[int] | None = None,
) -> FrameSpans:
    """Fragment spans of each frame: from the EOT, else the BOT, else by content."""
    items = _items(read_at, element.value_offset, end)
    if not items:
        raise FrameLayoutError("encapsulated pixel data has no offset table item")
    bot, fragments = items[0], items[1:]
    if not fragments:
        raise FrameLayoutError("encapsulated pixel data has no fragments")
    first = fragments[0][0] - 8
    if extended_offsets:  # PS3.5 A.4: Extended Offset Table (7FE0,0001)
        return _group_by_offsets(fragments, first, extended_offsets[:frames])
    if bot[1] >= 4 * frames and frames > 1:
        raw = read_at(bot[0], bot[1])
        offsets = list(struct.unpack(f"<{bot[1] // 4}I", raw))[:frames]
        return _group_by_offsets(fragments, first, offsets)
    if frames == 1:
        return [fragments]
    if len(fragments) == frames:
        return [[f] for f in fragments]
    # No table and more fragments than frames: a new frame starts at each codestream marker.
    grouped: FrameSpans = []
    for frag in fragments:
        if not grouped or _starts_frame(read_at, frag):
            grouped.append([frag])
        else:
            grouped[-1].append(frag)
    if len(grouped) != frames:
        raise FrameLayoutError(f"found {len(grouped)} frames in the fragments, expected {frames}")
    return grouped


def locate_frames(
    read_at: ReadAt,
    pixel_offset: int,
    file_size: int,
    transfer_syntax: str,
    rows: int,
    columns: int,
    samples: int,
    bits_allocated: int,
    frames: int,
    extended_offsets: list[int] | None = None,
    photometric: str = "",
) -> tuple[PixelElement, FrameSpans]:
    element = read_pixel_element(read_at, pixel_offset, transfer_syntax)
    if transfer_syntax in NATIVE_SYNTAXES:
        swapped = transfer_syntax == EXPLICIT_VR_BE and bits_allocated == 8 and element.vr == b"OW"
        spans = native_frames(element, rows, columns, samples, bits_allocated, frames, photometric, swapped)
    else:
        spans = encapsulated_frames(read_at, element, file_size, frames, extended_offsets)
    return element, spans


def join_fragments(read_at: ReadAt, spans: list[Span]) -> bytes:
    """One frame's bytes from its spans."""
    if len(spans) == 1:
        return read_at(*spans[0])
    return b"".join(read_at(o, n) for o, n in spans)
