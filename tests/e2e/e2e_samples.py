"""Sample data for the viewer tests, derived from files in ../shared/dicom-samples.

The shared samples hold almost no multi-slice series, so a 512x512 CT stack is
made from one real CT slice: new UIDs, slice positions 5 mm apart, and a bright
disc that moves from slice to slice so that scrolling visibly changes pixels.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "dicom-samples"
CT512 = (
    SAMPLES / "cornerstoneWADOImageLoader" / "CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm"
)
CT_SMALL = SAMPLES / "pydicom" / "CT_small.dcm"
MULTIFRAME_NM = SAMPLES / "dcm4che" / "NM-MONO2-16-13x-heart.dcm"
RGB_US = SAMPLES / "pydicom" / "examples_rgb_color.dcm"
UNCALIBRATED_MR = SAMPLES / "pydicom-data" / "emri_small.dcm"  # no PixelSpacing, 10 frames
CT_SMALL_SPACING_MM = 0.661468
# JPEG-LS: the browser cannot decode it, so the viewer must get pixels some other way.
COMPRESSED_CT = SAMPLES / "dicomParser" / "CT1_UNC.fragmented_bot_jpeg_ls.80.dcm"

STACK_PATIENT = "Acceptance^CTStack"
STACK_PATIENT_ID = "LBX-E2E-CT"
STACK_SLICES = 12
STACK_SPACING_MM = 0.675781  # PixelSpacing of CT512, kept unchanged


def make_ct_stack(out_dir: Path, slices: int = STACK_SLICES) -> tuple[str, list[Path]]:
    """Write a CT stack; return its StudyInstanceUID and the file paths."""
    src = pydicom.dcmread(CT512)
    base = src.pixel_array.astype(np.int16)
    study, series, frame_of_ref = generate_uid(), generate_uid(), generate_uid()
    yy, xx = np.mgrid[0 : base.shape[0], 0 : base.shape[1]]
    paths = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for k in range(slices):
        ds = copy.deepcopy(src)
        cx = 128 + k * (256 // max(slices - 1, 1))
        disc = (xx - cx) ** 2 + (yy - 140) ** 2 < 30**2
        pix = base.copy()
        pix[disc] = 2500  # stored value; HU = 2500 - 1024 = 1476, bone-like
        ds.PixelData = pix.tobytes()
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.FrameOfReferenceUID = frame_of_ref
        ds.PatientName = STACK_PATIENT
        ds.PatientID = STACK_PATIENT_ID
        ds.AccessionNumber = "ACCCT0001"
        ds.StudyDate = "20240315"
        ds.StudyDescription = "E2E CT stack"
        ds.SeriesDescription = "Axial 5mm"
        ds.SeriesNumber = 2
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-172.0, -172.0, -5.0 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = -5.0 * k
        ds.SliceThickness = 5
        p = out_dir / f"ct_{k:03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return study, paths
