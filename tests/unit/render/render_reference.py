"""Test helpers: the sample corpus, frame extraction and an INDEPENDENT pydicom oracle.

The oracle uses only pydicom's float64 reference functions (pixel_array,
apply_modality_lut, apply_windowing / apply_voi, apply_color_lut), then scales to 8 bits.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels.processing import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
)
from pydicom.uid import UID

SAMPLES = Path(
    os.environ.get("LIGHTBOX_SAMPLES", Path(__file__).resolve().parents[3].parent / "shared" / "dicom-samples")
)
NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}


@dataclass(frozen=True)
class Sample:
    path: Path
    row: dict[str, str]

    @property
    def name(self) -> str:
        return self.row["path"]

    @property
    def decodes(self) -> bool:
        return self.row["decodes"].startswith("yes")

    @property
    def has_pixels(self) -> bool:
        return not self.row["decodes"].startswith("n/a")


def manifest() -> list[Sample]:
    with open(SAMPLES / "MANIFEST.tsv", encoding="utf-8") as f:
        return [Sample(SAMPLES / r["path"], r) for r in csv.DictReader(f, delimiter="\t")]


def read(sample: Sample) -> Dataset:
    ds = pydicom.dcmread(sample.path, force=True)
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        implicit, little = ds.original_encoding
        uid = "1.2.840.10008.1.2" if implicit else (
            "1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2")  # fmt: skip
        if not hasattr(ds, "file_meta"):
            ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = UID(uid)
    return ds


def frame_bytes(ds: Dataset, index: int = 0) -> bytes:
    """One frame as the file stores it (native slice, or the joined fragments)."""
    uid = str(ds.file_meta.TransferSyntaxUID)
    keyword = next(k for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in ds)
    data: bytes = ds[keyword].value
    frames = int(ds.get("NumberOfFrames") or 1)
    if uid not in NATIVE:
        return bytes(get_frame(data, index, number_of_frames=frames))
    spp = int(ds.get("SamplesPerPixel") or 1)
    pixels = int(ds.Rows) * int(ds.Columns) * spp
    if ds.PhotometricInterpretation == "YBR_FULL_422":
        pixels = pixels // 3 * 2
    bits = int(ds.BitsAllocated)
    if uid == "1.2.840.10008.1.2.2" and bits == 8 and ds[keyword].VR == "OW":
        # 8-bit OW big endian is swapped in 16-bit words: take the word-aligned span
        return data[index * pixels : (index + 1) * pixels + 1]
    start, stop = index * pixels * bits // 8, ((index + 1) * pixels * bits + 7) // 8
    return data[start:stop]


FLAT_KEYWORDS = (
    "PhotometricInterpretation", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "VOILUTFunction",
    "ModalityLUTSequence", "VOILUTSequence", "PresentationLUTShape",
)  # fmt: skip


def flat_dataset(ds: Dataset, index: int = 0) -> Dataset:
    """Copy per-frame/shared functional-group rescale + window to the top level so that
    pydicom's flat reference functions see them (they ignore functional groups)."""
    out = Dataset()
    for keyword in FLAT_KEYWORDS:
        if keyword in ds:
            out[keyword] = ds[keyword]
    out.file_meta = ds.file_meta
    if "BitsStored" not in out:
        out.BitsStored = ds.BitsAllocated
    if "PixelRepresentation" not in out:
        out.PixelRepresentation = 0
    items = []
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        seq = ds.get(keyword)
        if seq:
            items.append(seq[0] if keyword.startswith("Shared") else seq[index])
    for item in items:
        for sub, names in (("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
                           ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction"))):  # fmt: skip
            if item.get(sub):
                for name in names:
                    if name in item[sub][0]:
                        setattr(out, name, item[sub][0][name].value)
    return out


def _first_window_valid(ds: Dataset) -> bool:
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return False
    if ds["WindowCenter"].value in (None, "") or ds["WindowWidth"].value in (None, ""):
        return False
    width = ds["WindowWidth"].value
    width = float(width[0] if ds["WindowWidth"].VM > 1 else width)
    function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
    return width >= 1 if function == "LINEAR" else width > 0


def _y_range(ds: Dataset) -> tuple[float, float]:
    """pydicom apply_windowing's output range (copied convention, for normalising)."""
    if ds.get("ModalityLUTSequence"):
        y_min, y_max = 0.0, 2.0 ** ds.ModalityLUTSequence[0].LUTDescriptor[2] - 1
    elif ds.PixelRepresentation == 0:
        y_min, y_max = 0.0, 2.0**ds.BitsStored - 1
    else:
        y_min, y_max = -(2.0 ** (ds.BitsStored - 1)), 2.0 ** (ds.BitsStored - 1) - 1
    if ds.get("RescaleSlope") is not None and ds.get("RescaleIntercept") is not None:
        y_min = y_min * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        y_max = y_max * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return y_min, y_max


def _to8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(np.nan_to_num(values, nan=0.0) + 0.5), 0, 255).astype(np.uint8)


def reference_array(ds: Dataset, index: int = 0) -> np.ndarray:
    """ds.pixel_array's frame `index`."""
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames") or 1)
    return arr[index] if frames > 1 else arr


def reference_render(ds: Dataset, index: int = 0, arr: np.ndarray | None = None) -> np.ndarray:
    """The expected 8-bit full-size output, computed with pydicom's float64 reference."""
    arr = reference_array(ds, index) if arr is None else arr
    pi = str(ds.PhotometricInterpretation).strip().upper()
    if pi == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds).astype(np.float64)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        if bits > 8 or rgb.max() > 255:
            bits = 16
        return _to8(rgb[..., :3] * 255.0 / (2**bits - 1))
    if pi not in ("MONOCHROME1", "MONOCHROME2"):
        if arr.dtype == np.uint8:
            return arr[..., :3]
        top = 2.0 ** int(ds.BitsStored) - 1
        return _to8(np.clip(arr[..., :3].astype(np.float64), 0, top) * 255.0 / top)
    flat = flat_dataset(ds, index)
    mod = np.asarray(apply_modality_lut(arr, flat), dtype=np.float64)
    if _first_window_valid(flat):
        y_min, y_max = _y_range(flat)
        out = (apply_windowing(mod, flat) - y_min) / (y_max - y_min) * 255.0
    elif flat.get("VOILUTSequence"):
        lut_item = flat.VOILUTSequence[0]
        bits = int(lut_item.LUTDescriptor[2])
        voi = apply_voi(np.floor(mod).astype(np.int64), flat).astype(np.float64)
        if bits <= 8 and voi.max() > 255:
            bits = 16
        out = voi * 255.0 / (2**bits - 1)
    else:
        finite = mod[np.isfinite(mod)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        out = (mod - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(mod)
    invert = pi == "MONOCHROME1" or str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE"
    return _to8(255.0 - out if invert else out)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def make_dataset(
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    uid: str = "1.2.840.10008.1.2.1",
    **attributes: Any,
) -> Dataset:
    """A small in-memory image dataset (native little endian unless `uid` says otherwise)."""
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(uid)
    frames = pixels.shape[0] if pixels.ndim == 3 and photometric.startswith("MONO") else 1
    rows, cols = pixels.shape[-2:] if photometric.startswith("MONO") else pixels.shape[:2]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1 if photometric.startswith("MONO") or photometric == "PALETTE COLOR" else 3
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.PhotometricInterpretation = photometric
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds
