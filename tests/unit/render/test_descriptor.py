"""PixelDescriptor: built from a dataset, JSON round trip, clear errors."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut

from server.dicom.pixels import (
    FrameValues,
    Lut,
    PixelDescriptor,
    describable_from_doc,
    descriptor_from_dataset,
    descriptor_from_doc,
)
from server.errors import BadRequest
from server.services.ingest import inspect_file
from tests.unit.render.render_reference import SAMPLES, Sample, make_dataset, manifest, read


def test_dataset_without_pixels_gives_none() -> None:
    ds = Dataset()
    ds.Modality = "SR"
    assert descriptor_from_dataset(ds) is None


@pytest.mark.parametrize("keyword", ["BitsAllocated", "PixelRepresentation", "PhotometricInterpretation", "Rows"])
def test_missing_required_attribute_is_bad_request_naming_it(keyword: str) -> None:
    ds = make_dataset(np.zeros((4, 4), np.uint8))
    delattr(ds, keyword)
    with pytest.raises(BadRequest, match=keyword):
        descriptor_from_dataset(ds)


def test_fields_are_read() -> None:
    ds = make_dataset(np.zeros((2, 4, 6), np.int16), bits_stored=12, RescaleSlope="2.5",
                      RescaleIntercept=-10, WindowCenter=[40, 400], WindowWidth=[400, 2000],
                      VOILUTFunction="linear_exact", Modality="CT", PixelSpacing=[0.5, 0.7],
                      FrameTime=33.3)  # fmt: skip
    desc = descriptor_from_dataset(ds)
    assert desc == PixelDescriptor(
        rows=4, columns=6, samples_per_pixel=1, bits_allocated=16, bits_stored=12, high_bit=11,
        pixel_representation=1, photometric_interpretation="MONOCHROME2", planar_configuration=0,
        number_of_frames=2, transfer_syntax_uid="1.2.840.10008.1.2.1", pixel_keyword="PixelData",
        pixel_vr="OW", rescale_slope=2.5, rescale_intercept=-10.0, window_centers=(40.0, 400.0),
        window_widths=(400.0, 2000.0), voi_lut_function="LINEAR_EXACT", modality="CT",
        pixel_spacing=(0.5, 0.7), frame_time_ms=33.3,
    )  # fmt: skip


def test_round_trip_with_luts_palette_and_frames_is_exact() -> None:
    desc = PixelDescriptor(
        rows=2, columns=2, samples_per_pixel=1, bits_allocated=16, bits_stored=16, high_bit=15,
        pixel_representation=0, photometric_interpretation="MONOCHROME2", planar_configuration=0,
        number_of_frames=2, transfer_syntax_uid="1.2.840.10008.1.2.4.90",
        modality_lut=Lut(-2048, 16, bytes(range(256)), "mlut"),
        voi_luts=(Lut(0, 12, b"\x01\x02\x03\x04"),),
        frames=(FrameValues(1.0, -1024.0, (40.0,), (400.0,), None), FrameValues()),
    )  # fmt: skip
    assert PixelDescriptor.from_dict(json.loads(json.dumps(desc.to_dict()))) == desc


def test_segmented_palette_is_expanded_like_pydicom() -> None:
    spring = pydicom.dcmread(SAMPLES / "pydicom" / "palettes" / "spring.dcm")
    assert "SegmentedRedPaletteColorLookupTableData" in spring
    ds = make_dataset(np.arange(256, dtype=np.uint8).reshape(16, 16), photometric="PALETTE COLOR")
    for elem in spring:
        if elem.tag.group == 0x0028 and 0x1101 <= elem.tag.element <= 0x1223:
            ds[elem.tag] = elem
    desc = descriptor_from_dataset(ds)
    assert desc is not None and desc.palette is not None
    expected = apply_color_lut(np.arange(256), palette="SPRING")
    got = np.stack([c.values() for c in (desc.palette.red, desc.palette.green, desc.palette.blue)], -1)
    np.testing.assert_array_equal(got, expected)


def test_missing_transfer_syntax_is_inferred_from_the_encoding() -> None:
    ds = pydicom.dcmread(SAMPLES / "pydicom-data" / "OT-PAL-8-face.dcm", force=True)
    desc = descriptor_from_dataset(ds)
    assert desc is not None
    assert desc.transfer_syntax_uid == "1.2.840.10008.1.2"
    assert desc.palette is not None


def _doc_cases() -> list[Sample]:
    return [s for s in manifest() if s.has_pixels]


@pytest.mark.parametrize("sample", _doc_cases(), ids=lambda s: s.name)
def test_descriptor_from_the_json_equals_the_one_from_the_dataset(sample: Sample) -> None:
    """Ingest reads the descriptor from the DICOM JSON it has just built, where it can: the
    same descriptor as pydicom's reading of the whole file gives (the pixel VR aside, which
    ingest reads from the file itself)."""
    try:
        record, facts = inspect_file(sample.path)
    except BadRequest:
        return  # refused at ingest (no valid UIDs): no descriptor stored
    try:
        expected = descriptor_from_dataset(read(sample))
    except BadRequest:
        assert facts.descriptor is None
        return
    assert expected is not None
    if not describable_from_doc(record.doc):
        return  # the dataset's road, as before
    got = descriptor_from_doc(record.doc, expected.pixel_keyword, expected.pixel_vr, expected.transfer_syntax_uid)
    assert got == expected
    assert facts.descriptor is not None
    assert {**facts.descriptor, "pixel_vr": None} == {**expected.to_dict(), "pixel_vr": None}


def test_most_sample_descriptors_come_from_the_json() -> None:
    docs = []
    for sample in _doc_cases():
        with contextlib.suppress(BadRequest):
            docs.append(inspect_file(sample.path)[0].doc)
    assert sum(describable_from_doc(doc) for doc in docs) > 0.8 * len(docs)
