"""Greyscale chain: Modality LUT -> VOI -> Presentation against pydicom's reference."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from server.dicom.pixels import descriptor_from_dataset
from server.render.lut import _table, to_grey8
from tests.unit.render.render_reference import make_dataset, reference_render

RAMP = np.arange(-1024, 3072, dtype=np.int16).reshape(64, 64)


def _render(ds: Dataset, frame: int = 0, window: tuple[float, float, str] | None = None) -> np.ndarray:
    desc = descriptor_from_dataset(ds)
    assert desc is not None
    pixels = ds.pixel_array[frame] if desc.number_of_frames > 1 else ds.pixel_array
    return to_grey8(pixels, desc, frame, window)


def _close(a: np.ndarray, b: np.ndarray) -> None:
    assert int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) <= 1


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_file_window_with_rescale_matches_pydicom(function: str) -> None:
    ds = make_dataset(RAMP, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=500,
                      WindowWidth=1200, VOILUTFunction=function)  # fmt: skip
    _close(_render(ds), reference_render(ds))


def test_sigmoid_on_float_pixels_matches_pydicom() -> None:
    data = np.linspace(-1, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    ds = make_dataset(data.view(np.uint32), WindowCenter=0.1, WindowWidth=0.5,
                      VOILUTFunction="SIGMOID")  # fmt: skip
    del ds.PixelData
    ds.FloatPixelData = data.tobytes()
    desc = descriptor_from_dataset(ds)
    assert desc is not None and desc.is_float
    expected = 255 / (1 + np.exp(-4 * (data.astype(np.float64) - 0.1) / 0.5))
    _close(to_grey8(data, desc, 0, None), np.floor(expected + 0.5).astype(np.uint8))


def test_requested_window_overrides_the_files() -> None:
    ds = make_dataset(RAMP, WindowCenter=0, WindowWidth=10)
    ds_ref = make_dataset(RAMP, WindowCenter=40, WindowWidth=400)
    _close(_render(ds, window=(40.0, 400.0, "LINEAR")), reference_render(ds_ref))


def test_monochrome1_inverts() -> None:
    ds = make_dataset(RAMP, "MONOCHROME1")
    out = _render(ds)
    assert out[0, 0] == 255 and out[-1, -1] == 0
    _close(out, reference_render(ds))


def test_presentation_lut_shape_inverse_inverts_monochrome2() -> None:
    out = _render(make_dataset(RAMP, PresentationLUTShape="INVERSE"))
    assert out[0, 0] == 255 and out[-1, -1] == 0


def test_monochrome1_with_inverse_shape_inverts_once() -> None:
    out = _render(make_dataset(RAMP, "MONOCHROME1", PresentationLUTShape="INVERSE"))
    assert out[0, 0] == 255


def test_no_window_uses_frame_min_max() -> None:
    out = _render(make_dataset(RAMP))
    assert out.min() == 0 and out.max() == 255


def test_constant_frame_is_black_and_white_when_inverted() -> None:
    flat = np.full((8, 8), 7, dtype=np.uint16)
    assert int(_render(make_dataset(flat)).max()) == 0
    assert int(_render(make_dataset(flat, "MONOCHROME1")).min()) == 255


def test_voi_lut_sequence_is_applied() -> None:
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.LUTData = list(range(255, -1, -1))
    data = np.arange(256, dtype=np.uint8).reshape(16, 16)
    ds = make_dataset(data, VOILUTSequence=[item])
    out = _render(ds)
    assert out[0, 0] == 255 and out[-1, -1] == 0
    _close(out, reference_render(ds))


def test_linear_window_needs_no_table() -> None:
    _table.cache_clear()
    _render(make_dataset(RAMP, WindowCenter=40, WindowWidth=400))
    assert _table.cache_info().currsize == 0


def test_sigmoid_table_is_built_once_per_inputs() -> None:
    _table.cache_clear()
    ds = make_dataset(RAMP, WindowCenter=40, WindowWidth=400, VOILUTFunction="SIGMOID")
    _render(ds)
    _render(ds)
    assert _table.cache_info().hits == 1 and _table.cache_info().misses == 1


def test_window_width_one_is_a_step() -> None:
    out = _render(make_dataset(RAMP, WindowCenter=100.5, WindowWidth=1))
    flat = RAMP.ravel()
    assert set(out.ravel()[flat <= 100].tolist()) == {0}
    assert set(out.ravel()[flat > 100].tolist()) == {255}


def test_nan_float_pixels_render_without_warnings() -> None:
    data = np.array([[np.nan, 0.0], [1.0, np.inf]], dtype=np.float32)
    ds = make_dataset(data.view(np.uint32))
    del ds.PixelData
    ds.FloatPixelData = data.tobytes()
    desc = descriptor_from_dataset(ds)
    assert desc is not None
    out = to_grey8(data, desc, 0, None)
    assert out[1, 0] == 255 and out[0, 1] == 0


def _enhanced(frames: np.ndarray) -> Dataset:
    ds = make_dataset(frames)
    shared = Dataset()
    pvt = Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept = 1, -1024
    shared.PixelValueTransformationSequence = [pvt]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for center, width in ((40, 400), (-600, 1500)):
        item, voi = Dataset(), Dataset()
        voi.WindowCenter, voi.WindowWidth = center, width
        item.FrameVOILUTSequence = [voi]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    return ds


def test_per_frame_functional_groups_give_each_frame_its_window() -> None:
    frames = np.stack([RAMP.astype(np.uint16) + 1024] * 2)
    ds = _enhanced(frames)
    desc = descriptor_from_dataset(ds)
    assert desc is not None
    assert desc.rescale_intercept == -1024
    assert [f.window_centers for f in desc.frames] == [(40.0,), (-600.0,)]
    first, second = _render(ds, 0), _render(ds, 1)
    assert not np.array_equal(first, second)
    _close(first, reference_render(ds, 0))
    _close(second, reference_render(ds, 1))
