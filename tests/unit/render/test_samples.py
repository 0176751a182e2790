"""Every sample file: render frame 1 as PNG and compare with the pydicom oracle (±1 grey).

Undecodable files must raise NotSupported or BadRequest, never anything else.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from server.dicom.pixels import PixelDescriptor, descriptor_from_dataset
from server.errors import BadRequest, NotSupported
from server.render.decode import decode_frame
from server.render.params import RenderParams
from server.render.pipeline import render_array, render_frame
from tests.unit.render.render_reference import Sample, frame_bytes, manifest, psnr, read, reference_render

pytestmark = pytest.mark.filterwarnings(
    # pydicom's own notes about odd files (JFIF markers vs PI, padding) are expected here
    "ignore::UserWarning:pydicom.*",
)

SAMPLES = manifest() if manifest.__module__ else []
IMAGES = [s for s in SAMPLES if s.has_pixels and s.decodes]
BROKEN = [s for s in SAMPLES if s.has_pixels and not s.decodes]
NO_PIXELS = [s for s in SAMPLES if not s.has_pixels]
PNG = RenderParams(media_type="image/png")


def _ids(samples: list[Sample]) -> list[str]:
    return [s.name for s in samples]


def _decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def test_manifest_is_found_and_complete() -> None:
    assert len(SAMPLES) == 266
    assert len(IMAGES) > 200


@pytest.mark.parametrize("sample", IMAGES, ids=_ids(IMAGES))
def test_png_render_matches_pydicom_reference(sample: Sample) -> None:
    ds = read(sample)
    desc = descriptor_from_dataset(ds)
    assert desc is not None
    desc = PixelDescriptor.from_dict(json.loads(json.dumps(desc.to_dict())))

    out = _decode_png(render_frame(frame_bytes(ds, 0), desc, 0, PNG))

    expected = reference_render(ds, 0)
    assert out.shape == expected.shape
    diff = np.abs(out.astype(np.int16) - expected.astype(np.int16))
    assert int(diff.max()) <= 1, f"max diff {diff.max()} at {np.argwhere(diff > 1)[:3]}"


@pytest.mark.parametrize("sample", IMAGES, ids=_ids(IMAGES))
def test_decoded_frame_equals_pixel_array(sample: Sample) -> None:
    ds = read(sample)
    desc = descriptor_from_dataset(ds)
    assert desc is not None

    arr = decode_frame(frame_bytes(ds, 0), desc, 0)

    expected = ds.pixel_array
    if desc.number_of_frames > 1:
        expected = expected[0]
    assert arr.shape == expected.shape
    np.testing.assert_array_equal(arr, expected)


@pytest.mark.parametrize("sample", BROKEN, ids=_ids(BROKEN))
def test_undecodable_file_raises_not_supported_or_bad_request(sample: Sample) -> None:
    with pytest.raises((NotSupported, BadRequest)):
        ds = read(sample)
        desc = descriptor_from_dataset(ds)
        assert desc is not None
        render_frame(frame_bytes(ds, 0), desc, 0, PNG)


@pytest.mark.parametrize("sample", NO_PIXELS, ids=_ids(NO_PIXELS))
def test_file_without_pixels_has_no_descriptor(sample: Sample) -> None:
    assert descriptor_from_dataset(read(sample)) is None


JPEG_FILES = [s for s in IMAGES if s.row["Rows"] and int(s.row["Rows"]) >= 64][:40]


@pytest.mark.parametrize("sample", JPEG_FILES, ids=_ids(JPEG_FILES))
def test_jpeg_q95_is_at_least_35_db_psnr(sample: Sample) -> None:
    ds = read(sample)
    desc = descriptor_from_dataset(ds)
    assert desc is not None
    pixels = decode_frame(frame_bytes(ds, 0), desc, 0)

    data = render_array(pixels, desc, RenderParams(media_type="image/jpeg", quality=95))

    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        out = np.asarray(image)
    assert psnr(out, reference_render(ds, 0)) >= 35.0


MULTI = [s for s in IMAGES if (s.row["NumberOfFrames"] or "1").isdigit()
         and int(s.row["NumberOfFrames"] or 1) > 1]  # fmt: skip


@pytest.mark.parametrize("sample", MULTI, ids=_ids(MULTI))
def test_last_frame_matches_reference(sample: Sample) -> None:
    # covers 1-bit frames starting mid-byte and per-frame functional-group values
    ds = read(sample)
    desc = descriptor_from_dataset(ds)
    assert desc is not None
    last = desc.number_of_frames - 1

    out = _decode_png(render_frame(frame_bytes(ds, last), desc, last, PNG))

    expected = reference_render(ds, last)
    diff = np.abs(out.astype(np.int16) - expected.astype(np.int16))
    assert int(diff.max()) <= 1


@pytest.mark.parametrize("sample", IMAGES, ids=_ids(IMAGES))
def test_descriptor_round_trips_through_json(sample: Sample) -> None:
    desc = descriptor_from_dataset(read(sample))
    assert desc is not None

    again = PixelDescriptor.from_dict(json.loads(json.dumps(desc.to_dict())))

    assert again == desc
