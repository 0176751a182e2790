"""pynetdicom tuned for a stream of large datasets: its loops woken, whole PDUs read at once.

**Wake-ups.** Each association runs two polling threads: the association reactor looks at its DIMSE queue
every 1 ms, the DUL reactor at its socket and its send queue every 1 ms. A modality's storescu
waits for each C-STORE response before it sends the next instance, so every instance waits
out those ticks twice or three times (~1-1.5 ms of 10-13 ms). Here the sleep of a registered
thread becomes a wait that ends as soon as there is something to do: a decoded message for the
association thread, a PDU to send or bytes on the socket for the DUL thread. Ending a polling
loop's sleep early is always safe: the loop checks everything again after it.

**Spooling.** pynetdicom writes each received dataset to a temp file in the system's temp
folder: here it goes to the store's spool folder instead, on the store's filesystem (no copy
when /tmp is another one, as in a container) and in a small folder (creating a file in a
long-lived /tmp cost 200 µs here, in the spool folder 35 µs).

**File Meta.** Before each received dataset pynetdicom writes a File Meta group, built as a
pydicom FileMetaDataset and written by pydicom's validating writer (~0.25 ms per instance).
Here those six elements are written as bytes, the same bytes (a test compares them).

**Reads.** pynetdicom reads a PDU 4 KiB per ``recv`` into a growing bytearray: 128 system calls
and Python steps for each 512 KiB slice. Here a PDU is read into its final buffer in as few
calls as the socket allows.

This reaches into pynetdicom's internals (its module-level ``time``, ``DIMSEServiceProvider.
msg_queue``, ``DULServiceProvider.to_provider_queue`` and ``.socket``, ``AssociationSocket.
recv``), checked against 2.1-3.0
by the DIMSE tests; whatever it does not find, it leaves as pynetdicom made it.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import select
import socket
import struct
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from pydicom.filewriter import write_file_meta_info
from pynetdicom import (
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    association,
    dimse_messages,
    dul,
)
from pynetdicom.events import Event

# A thread's replacement for time.sleep, while its association lasts.
_WAITS: weakref.WeakKeyDictionary[threading.Thread, Callable[[float], None]] = weakref.WeakKeyDictionary()


_WAKERS: weakref.WeakKeyDictionary[threading.Thread, _DulWaker] = weakref.WeakKeyDictionary()


class _Clock:
    """Stands in for the ``time`` module inside pynetdicom's association and DUL modules."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        wait = _WAITS.get(threading.current_thread())
        if wait is None:
            time.sleep(seconds)
        else:
            wait(seconds)


def install(spool: Path | None = None) -> None:
    """Route pynetdicom's reactor sleeps through ``_Clock``, and write the datasets it receives
    into ``spool`` (process-wide, idempotent)."""
    association.time = _Clock()  # type: ignore[attr-defined,assignment]
    dul.time = _Clock()  # type: ignore[attr-defined,assignment]
    if hasattr(dimse_messages, "create_file_meta") and hasattr(dimse_messages, "write_file_meta_info"):
        dimse_messages.create_file_meta = _create_file_meta
        dimse_messages.write_file_meta_info = _write_file_meta_info  # type: ignore[attr-defined]
    if spool is not None and hasattr(dimse_messages, "NamedTemporaryFile"):
        dimse_messages.NamedTemporaryFile = functools.partial(
            tempfile.NamedTemporaryFile, dir=spool
        )


class _FileMeta(NamedTuple):
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    implementation_uid: str
    implementation_version: str


def _create_file_meta(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str,
                      implementation_uid: str = PYNETDICOM_IMPLEMENTATION_UID,
                      implementation_version: str = PYNETDICOM_IMPLEMENTATION_VERSION) -> Any:
    """pynetdicom's ``create_file_meta``, as the values only."""
    return _FileMeta(sop_class_uid, sop_instance_uid, transfer_syntax, implementation_uid, implementation_version)


def _write_file_meta_info(fp: Any, file_meta: Any, enforce_standard: bool = True) -> None:
    """pydicom's ``write_file_meta_info`` for what ``_create_file_meta`` made (group 0002,
    explicit VR little endian, PS3.10 §7.1); anything else goes to pydicom's own."""
    if not isinstance(file_meta, _FileMeta):
        write_file_meta_info(fp, file_meta, enforce_standard=enforce_standard)
        return
    body = b"".join((
        _element(0x0001, b"OB", b"\x00\x01"),
        _element(0x0002, b"UI", _uid(file_meta.sop_class_uid)),
        _element(0x0003, b"UI", _uid(file_meta.sop_instance_uid)),
        _element(0x0010, b"UI", _uid(file_meta.transfer_syntax)),
        _element(0x0012, b"UI", _uid(file_meta.implementation_uid)),
        _element(0x0013, b"SH", _text(file_meta.implementation_version)),
    ))
    fp.write(_element(0x0000, b"UL", struct.pack("<L", len(body))) + body)


def _uid(value: str) -> bytes:
    raw = str(value).encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw  # UI pads with NUL (PS3.5 §6.2)


def _text(value: str) -> bytes:
    raw = str(value).encode("ascii")
    return raw + b" " if len(raw) % 2 else raw


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":  # 2 reserved bytes and a 32-bit length
        return struct.pack("<HH2s2xL", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


class _WakingQueue(queue.Queue[Any]):
    """A queue that calls ``wake`` after each put."""

    def __init__(self, wake: Callable[[], None], items: queue.Queue[Any]) -> None:
        super().__init__()
        self._wake = wake
        while True:  # whatever was queued before the swap (normally nothing)
            try:
                self.put_nowait(items.get_nowait())
            except queue.Empty:
                break

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class _DulWaker:
    """Wakes the DUL thread from a select() on its socket through a socket pair."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake is already pending) or closed
            self._writer.send(b"\0")

    def wait(self, seconds: float) -> None:
        wrapper = getattr(self.provider, "socket", None)
        peer = getattr(wrapper, "socket", None)
        try:
            select.select([self._reader] if peer is None else [self._reader, peer], [], [], seconds)
            while self._reader.recv(4096):
                pass
        except BlockingIOError:
            pass  # drained
        except (OSError, ValueError):  # a socket closed meanwhile: behave as pynetdicom would
            time.sleep(seconds)

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


def _whole_reads(wrapper: Any) -> None:
    """Give an AssociationSocket a ``recv(n)`` that fills one n-byte buffer with recv_into."""

    def recv(nr_bytes: int) -> bytearray:
        peer = wrapper.socket
        buffer = bytearray(nr_bytes)
        with memoryview(buffer) as view:
            got = 0
            while got < nr_bytes:
                n = peer.recv_into(view[got:], nr_bytes - got)
                if not n:  # closed: what arrived, as pynetdicom's own recv returns it
                    break
                got += n
        del buffer[got:]
        return buffer

    if isinstance(getattr(wrapper, "socket", None), socket.socket):
        wrapper.recv = recv


def on_open(event: Event) -> None:
    """EVT_CONN_OPEN handler: fires before the association's threads start."""
    assoc = event.assoc
    dimse, provider = assoc.dimse, assoc.dul
    if not isinstance(getattr(dimse, "msg_queue", None), queue.Queue) or not isinstance(
        getattr(provider, "to_provider_queue", None), queue.Queue
    ):
        return  # not the pynetdicom this was written for: keep its own polling
    ready = threading.Event()

    def wait_for_message(seconds: float) -> None:
        ready.wait(seconds)
        ready.clear()  # a message put after this is seen by the loop's next get or wait

    waker = _DulWaker(provider)
    dimse.msg_queue = _WakingQueue(ready.set, dimse.msg_queue)
    provider.to_provider_queue = _WakingQueue(waker.wake, provider.to_provider_queue)
    _WAITS[assoc] = wait_for_message
    _WAITS[provider] = waker.wait
    _WAKERS[assoc] = waker  # closed with the connection
    _whole_reads(provider.socket)


def on_close(event: Event) -> None:
    """EVT_CONN_CLOSE handler."""
    assoc = event.assoc
    _WAITS.pop(assoc, None)
    _WAITS.pop(assoc.dul, None)
    waker = _WAKERS.pop(assoc, None)
    if waker is not None:
        waker.close()
