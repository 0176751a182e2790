"""The fast header reader gives what ``dcmread(stop_before_pixels=True)`` gives, or declines."""

from __future__ import annotations

import io
import math
import mmap
import random
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import ENCODED_VR
from pydicom.sequence import Sequence
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from benchmarks.common import ct_series
from server.dicom import fast_reader
from server.dicom.fast_reader import PIXEL_TAGS, read_header
from server.dicom.json_model import dataset_to_doc
from server.dicom.reading import configure_pydicom
from tests.conftest import SAMPLES, manifest

configure_pydicom()

INSTANCE = "/studies/1/series/2/instances/3"
CORPUS = [sample.path for sample in manifest()]
OTHER_ENCODINGS = {ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian}
# Measured: 217 of the 266 corpus files take the fast road. The rest: 32 implicit VR, big
# endian or deflated; 13 without preamble or a usable file meta; 4 that pydicom reads its own
# way (an implicit VR dataset under an explicit syntax, UN of undefined length, a stray item
# tag). A drop means a regression.
MIN_FAST = 217


def _reference(data: bytes) -> tuple[pydicom.FileDataset, int] | None:
    stream = io.BytesIO(data)
    try:
        ds = pydicom.dcmread(stream, stop_before_pixels=True)
    except Exception:
        return None
    return ds, stream.tell()


def _value(ds: Dataset, tag: int) -> Any:
    """The converted value, or the error pydicom raises converting it."""
    try:
        return ds[tag].value
    except Exception as exc:
        return ("raises", type(exc).__name__)


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _charsets(item: Dataset) -> list[str]:
    # Items read lazily from a raw sequence get their parent's encodings as a list ("iso8859"
    # becomes ["iso8859"]): the same character set to pydicom's decoders.
    encodings = item.original_character_set
    return [encodings] if isinstance(encodings, str) else list(encodings)


def _compare(fast: Dataset, ref: Dataset, where: str) -> None:
    """Same tags, and per element the same VR and converted value, items compared recursively."""
    tags = list(ref.keys())
    assert list(fast.keys()) == tags, f"{where}: tags differ"
    for tag in tags:
        at = f"{where} {tag:08X}"
        fast_value, ref_value = _value(fast, tag), _value(ref, tag)
        if isinstance(ref_value, tuple) and ref_value[:1] == ("raises",):
            assert fast_value == ref_value, f"{at}: pydicom raises {ref_value}, fast gives {fast_value!r}"
            continue
        assert fast[tag].VR == ref[tag].VR, f"{at}: VR {fast[tag].VR} != {ref[tag].VR}"
        assert fast[tag].is_undefined_length == ref[tag].is_undefined_length, f"{at}: undefined length differs"
        if isinstance(ref_value, Sequence):
            assert isinstance(fast_value, Sequence), f"{at}: not a sequence"
            assert len(fast_value) == len(ref_value), f"{at}: {len(fast_value)} items != {len(ref_value)}"
            for n, (fast_item, ref_item) in enumerate(zip(fast_value, ref_value, strict=True)):
                charsets = _charsets(fast_item), _charsets(ref_item)
                assert charsets[0] == charsets[1], f"{at}[{n}]: character sets {charsets}"
                _compare(fast_item, ref_item, f"{at}[{n}]")
        else:
            assert _same_value(fast_value, ref_value), f"{at}: {fast_value!r} != {ref_value!r}"


def _check_raw(fast: Dataset, ref: Dataset, where: str) -> None:
    """Before any conversion: the raw elements are pydicom's own, an undefined-length sequence
    (read eagerly by pydicom) is a raw element of its items."""
    for tag, ref_elem in ref._dict.items():
        elem = fast._dict[tag]
        if isinstance(ref_elem, RawDataElement):
            assert elem == ref_elem, f"{where} {tag:08X}: {elem!r} != {ref_elem!r}"
        elif tag == 0x00080005:  # dcmread converts it to find the character set; so do we
            assert isinstance(elem, DataElement) and elem.value == ref_elem.value, f"{where}: charset"
        else:
            assert isinstance(ref_elem, DataElement) and ref_elem.VR == "SQ" and ref_elem.is_undefined_length
            assert isinstance(elem, RawDataElement), f"{where} {tag:08X}: not raw"
            assert (elem.VR, elem.length, elem.value_tell) == ("SQ", 0xFFFFFFFF, ref_elem.file_tell)


def _assert_same(data: bytes, name: str, use_mmap: Path | None = None) -> bool:
    """Compare the fast reader with dcmread on one file; True when it took the fast road."""
    if use_mmap is not None:
        with open(use_mmap, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            result = read_header(view)
    else:
        result = read_header(data)
    if result is None:
        return False
    reference = _reference(data)
    assert reference is not None, f"{name}: dcmread fails where the fast reader succeeds"
    ds, position = result
    ref, ref_position = reference
    assert position == ref_position, f"{name}: position {position} != {ref_position}"
    assert ds.preamble == ref.preamble, f"{name}: preamble"
    assert ds.original_encoding == ref.original_encoding, f"{name}: {ds.original_encoding} != {ref.original_encoding}"
    assert ds.original_character_set == ref.original_character_set, f"{name}: original character set"
    assert ds._character_set == ref._character_set, f"{name}: character set"
    _check_raw(ds, ref, name)
    meta_tags = list(ref.file_meta.keys())
    assert list(ds.file_meta.keys()) == meta_tags, f"{name}: file meta tags"
    for tag in meta_tags:
        assert ds.file_meta[tag].VR == ref.file_meta[tag].VR, f"{name}: meta {tag:08X} VR"
        assert ds.file_meta[tag].value == ref.file_meta[tag].value, f"{name}: meta {tag:08X} value"
    assert ds.file_meta.original_encoding == ref.file_meta.original_encoding, f"{name}: meta encoding"
    pixel_tag = int.from_bytes(data[position : position + 2], "little") << 16
    pixel_tag |= int.from_bytes(data[position + 2 : position + 4], "little")
    pixel = pixel_tag if position + 4 <= len(data) and pixel_tag in PIXEL_TAGS else None
    # The JSON first, while both datasets are raw: it takes the raw-element road.
    assert dataset_to_doc(ds, INSTANCE, pixel) == dataset_to_doc(ref, INSTANCE, pixel), f"{name}: JSON"
    _compare(ds, ref, name)
    return True


def test_corpus_reads_like_dcmread() -> None:
    fast = [path for path in CORPUS if _assert_same(path.read_bytes(), str(path.relative_to(SAMPLES)), path)]
    print(f"fast reader: {len(fast)} of {len(CORPUS)} corpus files")
    assert len(CORPUS) >= 266
    assert len(fast) >= MIN_FAST, f"only {len(fast)} of {len(CORPUS)} files took the fast road"


def test_synthetic_ct_reads_like_dcmread() -> None:
    for n, data in enumerate(ct_series(2)):
        assert _assert_same(data, f"ct_series[{n}]"), f"ct_series[{n}]: not read the fast way"


def _ct_small() -> bytes:
    return (SAMPLES / "pydicom" / "CT_small.dcm").read_bytes()


def test_declines_other_encodings() -> None:
    declined = 0
    for path in CORPUS:
        data = path.read_bytes()
        reference = _reference(data)
        if reference is not None and reference[0].file_meta.get("TransferSyntaxUID") in OTHER_ENCODINGS:
            assert read_header(data) is None, f"{path}: not explicit VR LE, yet read"
            declined += 1
    print(f"declined as not explicit VR LE: {declined} corpus files")
    assert declined >= 30
    base = pydicom.dcmread(io.BytesIO(_ct_small()))
    encodings: dict[UID, dict[str, bool]] = {
        ImplicitVRLittleEndian: {"implicit_vr": True, "little_endian": True, "force_encoding": True},
        ExplicitVRBigEndian: {"implicit_vr": False, "little_endian": False, "force_encoding": True},
        DeflatedExplicitVRLittleEndian: {},
    }
    for syntax, encoding in encodings.items():
        base.file_meta.TransferSyntaxUID = syntax
        out = io.BytesIO()
        pydicom.dcmwrite(out, base, **encoding)
        assert read_header(out.getvalue()) is None, syntax
        assert _reference(out.getvalue()) is not None  # a valid file, just not ours


def _element_starts(data: bytes, end: int) -> set[int]:
    """Offsets of the top-level elements from the file meta to ``end`` (explicit VR LE)."""
    starts, pos = set(), 132
    while pos < end:
        starts.add(pos)
        vr = data[pos + 4 : pos + 6]
        if vr in (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"):
            pos += 12 + int.from_bytes(data[pos + 8 : pos + 12], "little")
        else:
            pos += 8 + int.from_bytes(data[pos + 6 : pos + 8], "little")
    return starts | {end}


def test_truncated_copies_decline_or_agree() -> None:
    data = _ct_small()
    full = read_header(data)
    assert full is not None
    header_end = full[1]
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")
    boundaries = _element_starts(data, header_end)
    cuts = set(range(0, header_end + 16, 5)) | set(range(header_end, header_end + 13))
    cuts |= boundaries | {b + 1 for b in boundaries} | {b - 1 for b in boundaries}
    for cut in sorted(cuts):
        truncated = data[:cut]
        # Whenever it reads, it reads what dcmread reads. It declines any cut inside an element,
        # including the pixel data element's own 12-byte header (where dcmread fails).
        took = _assert_same(truncated, f"cut at {cut}")
        if meta_end < cut <= header_end and cut in boundaries:
            assert took, f"cut at {cut}: a valid, pixel-less file declined"
        elif cut < header_end or header_end < cut < header_end + 12:
            assert not took, f"cut at {cut} inside an element: read"


def _sequence_file(charset: str | None, nested_items_undefined: bool) -> bytes:
    """A small Part-10 file with undefined-length sequences, nested, holding text."""
    ds = pydicom.dcmread(io.BytesIO(_ct_small()), stop_before_pixels=True)
    del ds.SpecificCharacterSet  # ISO_IR 100 here
    if charset is not None:
        ds.SpecificCharacterSet = charset
    inner = Dataset()
    inner.CodeMeaning = "Müller"
    inner.CodeValue = "123"
    outer = Dataset()
    outer.PatientName = "Gómez^José"
    outer.ConceptNameCodeSequence = [inner, Dataset()]
    outer.ConceptNameCodeSequence.is_undefined_length = True
    outer["ConceptNameCodeSequence"].is_undefined_length = True
    for item in outer.ConceptNameCodeSequence:
        item.is_undefined_length_sequence_item = nested_items_undefined
    # (0004,1220) comes before (0008,0005): read by dcmread before it knows the character set.
    ds.DirectoryRecordSequence = [outer, Dataset()]
    ds["DirectoryRecordSequence"].is_undefined_length = True
    outer.is_undefined_length_sequence_item = True
    ds.ReferencedImageSequence = [outer]
    ds["ReferencedImageSequence"].is_undefined_length = True
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_nested_undefined_length_sequences() -> None:
    for nested_undefined in (True, False):
        data = _sequence_file(None, nested_undefined)
        assert b"\xfe\xff\xdd\xe0" in data  # sequence delimiters: undefined lengths were written
        assert _assert_same(data, f"nested sequences, undefined items {nested_undefined}")
        result = read_header(data)
        assert result is not None
        item = result[0].ReferencedImageSequence[0]
        assert item.ConceptNameCodeSequence[0].CodeMeaning == "Müller"  # Latin-1, the default
        assert item.PatientName == "Gómez^José"
        # Written back, the raw sequences give the bytes they came from, as dcmread's do.
        written = io.BytesIO()
        result[0].save_as(written, enforce_file_format=True)
        assert written.getvalue() == data


def test_declines_character_set_after_an_undefined_length_sequence() -> None:
    # dcmread decodes (0004,1220)'s items as Latin-1, not knowing yet the UTF-8 that follows.
    data = _sequence_file("ISO_IR 192", True)
    assert read_header(data) is None
    assert _reference(data) is not None


def test_garbage_declines() -> None:
    rng = random.Random(20240601)
    data = _ct_small()
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")
    for _ in range(50):
        noise = rng.randbytes(rng.randrange(0, 4000))
        assert read_header(b"\0" * 128 + b"DICM" + noise) is None
        assert read_header(data[:meta_end] + noise) is None
        assert read_header(noise) is None
    assert read_header(b"") is None
    assert read_header(data[:128] + b"DICN" + data[132:]) is None


def test_mmap_and_bytes_agree(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    path.write_bytes(ct_series(1)[0])
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        mapped = read_header(view)
        assert mapped is not None
        ds, position = mapped
    from_bytes = read_header(path.read_bytes())
    assert from_bytes is not None
    assert position == from_bytes[1]
    assert ds.SOPInstanceUID == from_bytes[0].SOPInstanceUID  # values outlive the closed map


@pytest.mark.parametrize("value_vr", ["UN", "OB"])
def test_undefined_length_non_sequence_declines(value_vr: str) -> None:
    data = _ct_small()
    result = read_header(data)
    assert result is not None
    # An undefined-length element that is not SQ (empty, then its delimiter), before the pixel data.
    element = b"\x09\x00\x10\x00" + value_vr.encode() + b"\0\0\xff\xff\xff\xff" + b"\xfe\xff\xdd\xe0\0\0\0\0"
    spliced = data[: result[1]] + element + data[result[1] :]
    assert read_header(spliced) is None


def test_vr_table_matches_pydicom() -> None:
    # The VRs pydicom reads as explicit (2 letters), and those with a 32-bit length (PS3.5 7.1.2).
    known = {vr for vr in ENCODED_VR if len(vr) == 2}
    assert set(fast_reader._VRS) == known
    assert {vr for vr, (_, long) in fast_reader._VRS.items() if long} == {v.encode() for v in EXPLICIT_VR_LENGTH_32}
