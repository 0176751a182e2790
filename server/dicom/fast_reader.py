"""A fast header reader for explicit VR little endian Part-10 files (PS3.10 §7, PS3.5 §7.1.2).

Why: ingest reads every header, and ``pydicom.dcmread(stop_before_pixels=True)`` spends most of
its time in its Python loop per element (about 1 ms for a 250-element CT header). This walks the
same bytes with one precompiled struct per element, about 3x faster, and builds the very
``RawDataElement`` objects that pydicom's ``read_dataset`` stores, so values still convert lazily
through pydicom on access.

pydicom remains the reference and the fallback: ``read_header`` returns None for anything it
does not mirror exactly (other transfer syntaxes, truncation, unknown VRs, odd structures), and
the caller then runs ``dcmread`` with its usual error handling.
"""

from __future__ import annotations

import mmap
import re
import struct
from collections.abc import Callable
from typing import Any, BinaryIO, cast

from pydicom import config
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import PrivateTransferSyntaxes

Buffer = mmap.mmap | bytes
Elements = dict[BaseTag, DataElement | RawDataElement]  # the type pydicom's Dataset takes

_DEFAULT_ENCODING = "iso8859"  # pydicom.charset.default_encoding
_HEAD = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length
_LONG_LENGTH = struct.Struct("<L")  # after the 2 reserved bytes of a long-length VR
# The hot loop's header: tag bytes, VR, 16-bit length, and the 32-bit length that long-length
# VRs have after it (else value bytes), in one call.
_HEAD_LONG = struct.Struct("<4s2sHL")
_HEAD_SHORT = struct.Struct("<4s2sH")
_TAG = struct.Struct("<HH")
_ITEM_HEAD = struct.Struct("<HHL")  # item / delimiter tag and its 32-bit length (no VR)

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_SEQ_DELIM = 0xFFFEE0DD
_ITEM_GROUP = 0xFFFE
_PIXEL_GROUP = 0x7FE0
_ITEM_DELIM_ELEMENT = 0xE00D
_CHARSET_TAG = BaseTag(0x00080005)
_GROUP_LENGTH_META = 0x00020000
_TRANSFER_SYNTAX = BaseTag(0x00020010)
# pydicom's stop_before_pixels (filereader._at_pixel_data).
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
# Syntaxes that are not explicit VR LE after the file meta: pydicom reads them its own way.
_OTHER_ENCODINGS = frozenset({b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.2", b"1.2.840.10008.1.2.1.99"})
_PLAIN_UID = re.compile(rb"[0-9]+(\.[0-9]+)*")
_MAX_DEPTH = 32  # nesting of undefined-length sequences; deeper is left to pydicom

# PS3.5 Table 7.1-1: VRs with 2 reserved bytes and a 32-bit length; all others have 16 bits.
_LONG_VRS = ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV")
_SHORT_VRS = (
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO",
    "LT", "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US",
)  # fmt: skip
# VR bytes -> (VR as pydicom stores it in a RawDataElement, has a 32-bit length)
_VRS: dict[bytes, tuple[str, bool]] = {
    **{vr.encode(): (vr, False) for vr in _SHORT_VRS},
    **{vr.encode(): (vr, True) for vr in _LONG_VRS},
}
_TAGS: dict[bytes, BaseTag] = {}  # see _new_tag
_MAX_TAGS = 1 << 14
_EMPTY: dict[bool, dict[str, bytes | None]] = {}  # by config.use_none_as_empty_text_VR_value

# RawDataElement(...) runs a Python-level __new__; tuple.__new__ builds the same NamedTuple
# about 3x faster, given all nine fields (tag, VR, length, value, value_tell, is_implicit_VR,
# is_little_endian, is_raw, is_buffered).
_new_raw = cast(Callable[[type[RawDataElement], tuple[Any, ...]], RawDataElement], tuple.__new__)


def read_header(buf: mmap.mmap | bytes) -> tuple[FileDataset, int] | None:
    """(dataset, position) like dcmread(stop_before_pixels=True) followed by tell(); None when
    the file needs pydicom's own reader."""
    try:
        return _read(buf)
    except Exception:  # struct.error, KeyError (unknown VR) or bytes we misjudged: pydicom decides
        return None


def _read(buf: Buffer) -> tuple[FileDataset, int] | None:
    size = len(buf)
    if size < 132 or buf[128:132] != b"DICM":
        return None
    meta_read = _read_meta(buf, size)
    if meta_read is None:
        return None
    file_meta, pos = meta_read
    if size - pos < 8 or _HEAD.unpack_from(buf, pos)[0] == 0:
        return None  # no dataset, or a command set (group 0000, implicit VR): pydicom's cases
    dataset_read = _read_dataset(buf, pos, size)
    if dataset_read is None:
        return None
    elements, position = dataset_read
    # The source kept as dcmread keeps its file object (ds.buffer).
    ds = FileDataset(cast(BinaryIO, buf), elements, buf[:128], file_meta, False, True)
    # As read_partial: the dataset's character set becomes its original encoding; reading it
    # converts (0008,0005) in place, as dcmread leaves it.
    try:
        charset = ds._character_set
    except Exception:
        return None  # dcmread would fail the same way: let it say so
    ds.set_original_encoding(False, True, charset)
    return ds, position


def _empty_values() -> dict[str, bytes | None]:
    """The value pydicom stores for a zero-length raw element, by VR: b"" or None, by config."""
    setting = config.use_none_as_empty_text_VR_value
    table = _EMPTY.get(setting)
    if table is None:
        table = _EMPTY[setting] = {vr: cast(bytes | None, empty_value_for_VR(vr, raw=True)) for vr, _ in _VRS.values()}
    return table


def _read_meta(buf: Buffer, size: int) -> tuple[FileMetaDataset, int] | None:
    """The group-0002 elements from offset 132 (always explicit VR LE) and the offset after them,
    or None unless the dataset that follows is explicit VR LE too."""
    elements: Elements = {}
    pos = 132
    while True:
        if size - pos < 8:
            return None
        group, element, vr_bytes, length = _HEAD.unpack_from(buf, pos)
        if group != 2:
            break
        head = _value_at(buf, pos, vr_bytes, length, size)
        if head is None:
            return None
        vr, value_pos, length = head
        end = value_pos + length
        if length == _UNDEFINED or vr == "SQ" or end > size:
            return None
        value = buf[value_pos:end] if length else _empty_values()[vr]
        tag = BaseTag(group << 16 | element)
        elements[tag] = RawDataElement(tag, vr, length, value, value_pos, False, True)
        pos = end
    if not elements:
        return None
    file_meta = FileMetaDataset(elements)
    file_meta.set_original_encoding(is_implicit_vr=False, is_little_endian=True, character_encoding=_DEFAULT_ENCODING)
    # dcmread converts the first element (its test for an implicit VR meta) and the group length,
    # and fails if they do not convert. A UL group length of 4 bytes always does; else ask pydicom.
    first = cast(RawDataElement, next(iter(elements.values())))
    if (first.tag, first.VR, first.length) != (_GROUP_LENGTH_META, "UL", 4):
        try:
            file_meta[first.tag]
            if _GROUP_LENGTH_META in elements:
                file_meta[_GROUP_LENGTH_META]
        except Exception:
            return None
    # The transfer syntax as pydicom's convert_UI gives it, when it is a plain UID.
    syntax = cast(RawDataElement | None, elements.get(_TRANSFER_SYNTAX))
    if syntax is None or syntax.VR != "UI" or not isinstance(syntax.value, bytes):
        return None
    uid = syntax.value.rstrip(b"\0 ")
    if not _PLAIN_UID.fullmatch(uid) or uid in _OTHER_ENCODINGS or uid.decode() in PrivateTransferSyntaxes:
        return None
    return file_meta, pos


def _read_dataset(buf: Buffer, pos: int, size: int) -> tuple[Elements, int] | None:
    """pydicom's data_element_generator at the top level, explicit VR LE, stopping before the
    pixel data: the elements and the offset where reading stopped.

    The loop runs once per element, the cost this module exists to cut, so it checks little:
    an unknown VR raises KeyError, a cut tag struct.error (read_header turns both into None),
    and a value running past the end leaves ``pos`` beyond ``size``.
    """
    elements: Elements = {}
    unpack_head = _HEAD_LONG.unpack_from
    vrs = _VRS
    tags = _TAGS
    empty = _empty_values()
    new_raw = _new_raw
    raw_type = RawDataElement
    first_sequence = size  # value offset of the first undefined-length sequence
    while pos < size:
        try:
            tag_bytes, vr_bytes, length, long_length = unpack_head(buf, pos)
        except struct.error:  # under 12 bytes left: the last element, with a 16-bit length
            tag_bytes, vr_bytes, length = _HEAD_SHORT.unpack_from(buf, pos)
            if vrs[vr_bytes][1]:
                return None  # its 32-bit length is cut: pydicom fails
            long_length = 0
        vr, long = vrs[vr_bytes]
        if long:
            length = long_length
            value_pos = pos + 12
        else:
            value_pos = pos + 8
        tag = tags.get(tag_bytes)
        if tag is None:  # a tag not met yet, or one the cache leaves out to be looked at here
            group, element = _TAG.unpack(tag_bytes)
            if group << 16 | element in PIXEL_TAGS:
                return (elements, pos) if _charset_precedes(elements, first_sequence) else None
            if group == _ITEM_GROUP:
                return None  # a stray item or delimiter: pydicom stops or misreads
            tag = _new_tag(tag_bytes, group, element)
        if length == _UNDEFINED:
            if vr != "SQ":
                return None  # e.g. UN of undefined length (implicit VR inside): pydicom's job
            delimiter = _sequence_end(buf, value_pos, size, 1)
            if delimiter is None:
                return None
            # The items without the Sequence Delimitation Item, as pydicom keeps any other
            # undefined-length value: it reads them into a Sequence on access, and writes the
            # delimiter back after them.
            value: bytes | None = buf[value_pos:delimiter]
            end = delimiter + 8
            first_sequence = min(first_sequence, value_pos)
        else:
            end = value_pos + length
            value = buf[value_pos:end] if length else empty[vr]
        elements[tag] = new_raw(raw_type, (tag, vr, length, value, value_pos, False, True, True, False))
        pos = end
    # No pixel data. pydicom would skip a partial tag at the end: a cut file is left to it.
    return (elements, pos) if pos == size and _charset_precedes(elements, first_sequence) else None


def _new_tag(tag_bytes: bytes, group: int, element: int) -> BaseTag:
    """A BaseTag, kept for the next file by its bytes: a series repeats its tags, and a lookup
    costs less than making one. Bounded, as private tags can be anything; groups from the pixel
    data's on stay out, so that a cached tag is never one the loop must stop at."""
    tag = BaseTag(group << 16 | element)
    if group < _PIXEL_GROUP and len(_TAGS) < _MAX_TAGS:
        _TAGS[tag_bytes] = tag
    return tag


def _charset_precedes(elements: Elements, first_sequence: int) -> bool:
    """dcmread reads an undefined-length sequence with the character set known at that point;
    read lazily, it gets the dataset's. They agree unless (0008,0005) comes after it."""
    charset = elements.get(_CHARSET_TAG)
    return charset is None or cast(RawDataElement, charset).value_tell < first_sequence


def _sequence_end(buf: Buffer, pos: int, size: int, depth: int) -> int | None:
    """The offset of the Sequence Delimitation Item ending the undefined-length sequence whose
    items start at ``pos`` (PS3.5 §7.5), or None."""
    if depth > _MAX_DEPTH:
        return None
    unpack_item = _ITEM_HEAD.unpack_from
    while True:
        if size - pos < 8:
            return None
        group, element, length = unpack_item(buf, pos)
        tag = group << 16 | element
        if tag == _SEQ_DELIM:
            return pos
        if tag != _ITEM:
            return None
        pos += 8
        if length == _UNDEFINED:
            item_end = _item_end(buf, pos, None, size, depth)
        else:
            item_end = _item_end(buf, pos, pos + length, size, depth)
        if item_end is None:
            return None
        pos = item_end


def _item_end(buf: Buffer, pos: int, end: int | None, size: int, depth: int) -> int | None:
    """Walk an item's explicit VR elements from ``pos``: to ``end`` for a defined length, else
    through its Item Delimitation Item. The offset after the item, or None when the elements do
    not tile it exactly (pydicom would then read it differently from its declared extent)."""
    limit = size if end is None else end
    if limit > size:
        return None
    unpack_head = _HEAD.unpack_from
    while True:
        if pos == end:
            return pos
        if limit - pos < 8:
            return None
        group, element, vr_bytes, length = unpack_head(buf, pos)
        if group == _ITEM_GROUP:
            return pos + 8 if end is None and element == _ITEM_DELIM_ELEMENT else None
        head = _value_at(buf, pos, vr_bytes, length, limit)
        if head is None:
            return None  # also an item in implicit VR (PS3.5 §7.5.1 lets it be): pydicom's job
        vr, value_pos, length = head
        if length == _UNDEFINED:
            if vr != "SQ":
                return None
            delimiter = _sequence_end(buf, value_pos, limit, depth + 1)
            if delimiter is None:
                return None
            pos = delimiter + 8
        else:
            pos = value_pos + length
            if pos > limit:
                return None


def _value_at(buf: Buffer, pos: int, vr_bytes: bytes, length: int, limit: int) -> tuple[str, int, int] | None:
    """(VR, value offset, value length) of the explicit VR element whose header starts at
    ``pos`` (``length``: its 16-bit length field), or None for an unknown VR or a 32-bit length
    cut by ``limit``."""
    vr_info = _VRS.get(vr_bytes)
    if vr_info is None:
        return None
    vr, long = vr_info
    if not long:
        return vr, pos + 8, length
    if limit - pos < 12:
        return None
    return vr, pos + 12, _LONG_LENGTH.unpack_from(buf, pos + 8)[0]
