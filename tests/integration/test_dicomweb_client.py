"""A full round trip with dicomweb-client (the Python client from PyPI): store, search at
every level, retrieve study / series / instance / metadata / frames / rendered / bulk data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from tests.conftest import SAMPLES, free_port, start_server

FILES = [
    SAMPLES / "pydicom" / "CT_small.dcm",
    SAMPLES / "pydicom" / "MR_small.dcm",
    SAMPLES / "dicomParser" / "CT1_UNC.fragmented_bot_jpeg_ls.80.dcm",
    SAMPLES / "pydicom-data" / "emri_small.dcm",
]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[DICOMwebClient]:
    # dicomweb-client sends "Host: 127.0.0.1" without the port, so URLs the server derives from
    # Host would point at port 80: configure the public base URL, as a deployment would.
    port = free_port()
    server = start_server(tmp_path / "data", "--base-url", f"http://127.0.0.1:{port}/dicomweb", port=port)
    c = DICOMwebClient(server.dicomweb)
    c.store_instances([pydicom.dcmread(f) for f in FILES])
    yield c
    server.stop()


def test_round_trip(client: DICOMwebClient) -> None:
    originals = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(f) for f in FILES)}
    studies = client.search_for_studies()
    assert len(studies) == len({ds.StudyInstanceUID for ds in originals.values()})
    ct = originals[pydicom.dcmread(FILES[0]).SOPInstanceUID]
    study, series, sop = ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID

    found = client.search_for_series(study_instance_uid=study)
    assert series in {s["0020000E"]["Value"][0] for s in found}
    assert client.search_for_series(search_filters={"Modality": "CT"})
    inst = client.search_for_instances(study_instance_uid=study, series_instance_uid=series)
    assert sop in {i["00080018"]["Value"][0] for i in inst}
    assert client.search_for_instances(search_filters={"SOPInstanceUID": sop})

    retrieved = client.retrieve_instance(study, series, sop)
    assert np.array_equal(retrieved.pixel_array, ct.pixel_array)
    assert [d.SOPInstanceUID for d in client.retrieve_series(study, series)] == [sop]
    assert {d.SOPInstanceUID for d in client.retrieve_study(study)} >= {sop}

    metadata = client.retrieve_series_metadata(study, series)
    assert metadata[0]["00080018"]["Value"] == [sop]
    assert client.retrieve_study_metadata(study)
    instance_meta = client.retrieve_instance_metadata(study, series, sop)
    assert instance_meta["00280010"]["Value"] == [ct.Rows]

    frames = client.retrieve_instance_frames(study, series, sop, frame_numbers=[1])
    pixels = np.frombuffer(frames[0], dtype=ct.pixel_array.dtype).reshape(ct.Rows, ct.Columns)
    assert np.array_equal(pixels, ct.pixel_array)

    rendered = client.retrieve_instance_rendered(study, series, sop, media_types=("image/png",))
    assert rendered[:8] == b"\x89PNG\r\n\x1a\n"

    bulk_uri = instance_meta["7FE00010"]["BulkDataURI"]
    bulk = client.retrieve_bulkdata(bulk_uri)
    assert bytes(bulk[0]) == bytes(ct.PixelData)


def test_compressed_frames_come_back_as_stored(client: DICOMwebClient) -> None:
    ds = pydicom.dcmread(FILES[2])
    frames = client.retrieve_instance_frames(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, frame_numbers=[1],
        media_types=(("image/jls", "1.2.840.10008.1.2.4.80"),),
    )
    stored = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    assert frames[0].rstrip(b"\0") == stored.rstrip(b"\0")


def test_delete_removes_from_search(client: DICOMwebClient) -> None:
    ds = pydicom.dcmread(FILES[1])
    client.delete_study(ds.StudyInstanceUID)
    assert client.search_for_studies(search_filters={"StudyInstanceUID": ds.StudyInstanceUID}) == []
