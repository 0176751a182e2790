"""decode_frame: bit-packed offsets, byte orders, and its two error kinds."""

from __future__ import annotations

import numpy as np
import pytest

from server.dicom.pixels import descriptor_from_dataset
from server.errors import BadRequest, NotSupported
from server.render.decode import decode_frame, native_frame_length
from tests.unit.render.render_reference import make_dataset


def test_bit_packed_frame_starting_mid_byte_is_unpacked() -> None:
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, (3, 3, 5)).astype(np.uint8)  # 15 pixels per frame
    packed = np.packbits(bits.ravel(), bitorder="little").tobytes()
    ds = make_dataset(bits)
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    ds.PixelData = packed
    desc = descriptor_from_dataset(ds)
    assert desc is not None
    for index in range(3):
        start, stop = index * 15 // 8, ((index + 1) * 15 + 7) // 8
        np.testing.assert_array_equal(decode_frame(packed[start:stop], desc, index), bits[index])


def test_big_endian_frame_is_swapped() -> None:
    data = np.arange(16, dtype=np.int16).reshape(4, 4) - 8
    ds = make_dataset(data, uid="1.2.840.10008.1.2.2")
    desc = descriptor_from_dataset(ds)
    assert desc is not None
    np.testing.assert_array_equal(decode_frame(data.astype(">i2").tobytes(), desc, 0), data)


def test_bits_stored_below_allocated_is_sign_extended() -> None:
    raw = np.array([[0x0FFF, 0x0800, 0x07FF, 0xF001]], dtype=np.uint16)  # 12-bit signed
    ds = make_dataset(raw.view(np.int16), bits_stored=12)
    desc = descriptor_from_dataset(ds)
    assert desc is not None
    out = decode_frame(raw.tobytes(), desc, 0)
    assert out.tolist() == [[-1, -2048, 2047, 1]]


def test_trailing_padding_byte_is_ignored() -> None:
    data = np.arange(9, dtype=np.uint8).reshape(3, 3)
    desc = descriptor_from_dataset(make_dataset(data))
    assert desc is not None and native_frame_length(desc) == 9
    np.testing.assert_array_equal(decode_frame(data.tobytes() + b"\0", desc, 0), data)


def test_frame_index_out_of_range_is_bad_request() -> None:
    desc = descriptor_from_dataset(make_dataset(np.zeros((4, 4), np.uint8)))
    assert desc is not None
    with pytest.raises(BadRequest, match="^frame:"):
        decode_frame(bytes(16), desc, 1)


def test_truncated_native_frame_is_not_supported() -> None:
    desc = descriptor_from_dataset(make_dataset(np.zeros((4, 4), np.uint16)))
    assert desc is not None
    with pytest.raises(NotSupported, match="truncated"):
        decode_frame(bytes(7), desc, 0)


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.8.1", "1.2.3.4"])
def test_unknown_or_unsupported_transfer_syntax_is_not_supported(uid: str) -> None:
    desc = descriptor_from_dataset(make_dataset(np.zeros((4, 4), np.uint8), uid=uid))
    assert desc is not None
    with pytest.raises(NotSupported):
        decode_frame(b"\xff\xd8garbage", desc, 0)


def test_corrupt_codestream_is_not_supported() -> None:
    desc = descriptor_from_dataset(make_dataset(np.zeros((4, 4), np.uint8), uid="1.2.840.10008.1.2.4.90"))
    assert desc is not None
    with pytest.raises(NotSupported, match="could not be decoded"):
        decode_frame(b"\xff\x4f\xff\x51 not j2k", desc, 0)
