"""server.dimse.tuning: pynetdicom's loops woken by their work, PDUs read whole — and every
byte still arrives, and nothing is left registered when an association ends."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, association, dimse_messages, dul, evt
from pynetdicom.events import Event

from server.dimse import tuning
from tests.conftest import free_port


def test_whole_reads_give_exactly_the_bytes_asked_for_and_what_came_before_a_close() -> None:
    ours, theirs = socket.socketpair()
    wrapper = SimpleNamespace(socket=ours)
    tuning._whole_reads(wrapper)
    payload = np.random.default_rng(1).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()

    def send() -> None:
        for i in range(0, len(payload), 70_001):  # odd pieces, so reads come back partial
            theirs.sendall(payload[i : i + 70_001])
        theirs.sendall(b"tail")
        theirs.close()

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert wrapper.recv(len(payload)) == payload
        assert wrapper.recv(100) == b"tail"  # closed early: what arrived, like pynetdicom's recv
        assert wrapper.recv(10) == b""
    finally:
        sender.join()
        ours.close()


def _dataset(n: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = ds.SeriesInstanceUID = "1.2.3"
    ds.InstanceNumber = n
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.SamplesPerPixel = 1
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.full((512, 512), n, np.uint16).tobytes()
    return ds


def test_an_association_with_tuned_loops_stores_every_instance_and_unregisters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module, name in ((association, "time"), (dul, "time"), (dimse_messages, "NamedTemporaryFile"),
                         (dimse_messages, "create_file_meta"), (dimse_messages, "write_file_meta_info")):
        monkeypatch.setattr(module, name, getattr(module, name))  # restored after the test
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", True)  # as the server runs it
    tuning.install(tmp_path)
    received: list[tuple[int, bytes, bool]] = []

    def store(event: Event) -> int:
        assert event.dataset_path.parent == tmp_path  # spooled where the store can rename it
        ds = dcmread(event.dataset_path)  # with the File Meta written as bytes
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        registered = tuning._WAITS.get(threading.current_thread()) is not None
        received.append((int(ds.InstanceNumber), bytes(ds.PixelData), registered))
        return 0x0000

    scp = AE("TUNED")
    scp.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    port = free_port()
    server = scp.start_server(
        ("127.0.0.1", port), block=False,
        evt_handlers=[(evt.EVT_C_STORE, store), (evt.EVT_CONN_OPEN, tuning.on_open),
                      (evt.EVT_CONN_CLOSE, tuning.on_close)],
    )
    try:
        scu = AE("SCU")
        scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = scu.associate("127.0.0.1", port, ae_title="TUNED")
        assert assoc.is_established
        statuses = [assoc.send_c_store(_dataset(n)).Status for n in range(1, 6)]  # ~16 PDUs each
        assoc.release()
        assert statuses == [0] * 5
        assert [(n, pixels == np.full((512, 512), n, np.uint16).tobytes(), reg) for n, pixels, reg in received] == [
            (n, True, True) for n in range(1, 6)
        ]
        for _ in range(100):  # the close event comes from the acceptor's threads
            if not tuning._WAITS and not tuning._WAKERS:
                break
            time.sleep(0.02)
        assert not tuning._WAITS and not tuning._WAKERS
    finally:
        server.shutdown()


@pytest.mark.parametrize("sop_class, sop_instance, syntax", [
    (CTImageStorage, "1.2.3.4", ExplicitVRLittleEndian),  # even lengths
    (CTImageStorage, "1.2.826.0.1.3680043.8.498.12345678901234567890123", "1.2.840.10008.1.2.4.50"),
    ("1.2.840.10008.5.1.4.1.1.7", generate_uid(), "1.2.840.10008.1.2"),
])
def test_the_file_meta_written_as_bytes_equals_pydicoms(sop_class: str, sop_instance: str, syntax: str) -> None:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info
    from pynetdicom.dsutils import create_file_meta

    ours, theirs = DicomBytesIO(), DicomBytesIO()
    values = {"sop_class_uid": UID(sop_class), "sop_instance_uid": UID(sop_instance), "transfer_syntax": UID(syntax)}
    tuning._write_file_meta_info(ours, tuning._create_file_meta(**values))
    write_file_meta_info(theirs, create_file_meta(**values))
    assert ours.getvalue() == theirs.getvalue()
    # and a real FileMetaDataset still goes to pydicom's writer
    passed_on = DicomBytesIO()
    tuning._write_file_meta_info(passed_on, create_file_meta(**values))
    assert passed_on.getvalue() == theirs.getvalue()
