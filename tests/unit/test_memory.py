"""server.memory: fixed malloc thresholds keep freed frame-sized buffers for the next request."""

from __future__ import annotations

import subprocess
import sys

# In a fresh interpreter (so no earlier allocation has moved glibc's adaptive threshold):
# allocate and free 2 MiB, then ask glibc how many free bytes its main heap holds.
PROBE = """
import ctypes, sys
from server.memory import tune_malloc
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    assert tune_malloc()
buf = bytearray(2 * 1024 * 1024)
mapped = libc.mallinfo2().hblkhd  # bytes in mmap-backed blocks
del buf
print(mapped, libc.mallinfo2().fordblks)
"""


def _probe(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    mapped, free = out.stdout.split()
    return int(mapped), int(free)


def test_default_glibc_maps_and_unmaps_a_frame_sized_buffer() -> None:
    mapped, free = _probe("default")
    assert mapped >= 2 * 1024 * 1024  # its own mapping, returned to the kernel on free
    assert free < 2 * 1024 * 1024


def test_tuned_malloc_keeps_the_freed_buffer_for_reuse() -> None:
    mapped, free = _probe("tuned")
    assert mapped < 2 * 1024 * 1024  # from the heap
    assert free >= 2 * 1024 * 1024  # and still there after free: no page faults next time


FREEZE = """
import gc
from server.memory import freeze_heap
import server.app  # what a server has loaded by the time it freezes
frozen = freeze_heap()
assert frozen == gc.get_freeze_count()
print(frozen, len(gc.get_objects()))
"""


def test_the_start_up_heap_is_frozen_out_of_the_collectors_passes() -> None:
    out = subprocess.run([sys.executable, "-c", FREEZE], capture_output=True, text=True, check=True)
    frozen, still_tracked = (int(n) for n in out.stdout.split())
    assert frozen > 50_000  # the modules, pydicom's dictionaries, FastAPI
    assert still_tracked < frozen / 100  # what a full collection still walks
