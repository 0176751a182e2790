"""Frame spans found at ingest give back each frame's pixels for the awkward native layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from server.dicom.frames import join_fragments
from server.dicom.pixels import PixelDescriptor
from server.dicom.reading import configure_pydicom
from server.render.decode import decode_frame
from server.services.ingest import inspect_file
from tests.conftest import SAMPLES

CASES = [
    "pydicom/SC_ybr_full_422_uncompressed.dcm",  # YBR_FULL_422: 2 bytes a pixel, not 3
    "pydicom/SC_rgb_small_odd_big_endian.dcm",  # 8-bit values in big-endian OW words
    "pydicom-data/emri_small.dcm",  # 10 frames, 16-bit
    "pydicom-data/liver_nonbyte_aligned.dcm",  # 1-bit frames that start mid-byte
]


@pytest.mark.parametrize("name", CASES)
def test_every_frame_decodes_to_pydicoms_pixels(name: str, tmp_path: Path) -> None:
    configure_pydicom()
    path = tmp_path / "f.dcm"
    shutil.copyfile(SAMPLES / name, path)
    _record, facts = inspect_file(path)
    assert facts.frames is not None and facts.descriptor is not None
    desc = PixelDescriptor.from_dict(facts.descriptor)
    expected = pydicom.dcmread(SAMPLES / name).pixel_array
    if desc.number_of_frames == 1:
        expected = expected[np.newaxis]
    data = path.read_bytes()
    for n, spans in enumerate(facts.frames):
        frame = join_fragments(lambda o, k: data[o:o + k], spans)
        assert np.array_equal(decode_frame(frame, desc, n), expected[n]), f"frame {n}"
