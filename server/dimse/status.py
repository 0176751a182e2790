"""DIMSE status codes, and the one place errors become them (PS3.4 Annex B, C; PS3.7 C)."""

from __future__ import annotations

import errno

from server.errors import LightboxError

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
# PS3.7 Annex C: general failures
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
# PS3.4 Table B.2-1 (Storage)
OUT_OF_RESOURCES = 0xA700
IDENTIFIER_MISMATCH = 0xA900  # Data Set does not match SOP Class / the request's identifiers
CANNOT_UNDERSTAND = 0xC000
COERCION = 0xB000  # warning: we store the bytes as received, so never coerce today
# PS3.4 Table C.4-1/-2/-3 (Query/Retrieve)
QR_OUT_OF_RESOURCES = 0xA700
QR_MOVE_DESTINATION_UNKNOWN = 0xA801
QR_IDENTIFIER_MISMATCH = 0xA900
QR_UNABLE_TO_PROCESS = 0xC000
QR_SUBOPS_FAILED = 0xA702  # out of resources: unable to perform sub-operations
QR_WARNING_FAILURES = 0xB000  # sub-operations complete, one or more failures

_STORE_CODES = {PROCESSING_FAILURE, DUPLICATE_SOP_INSTANCE}
_RESOURCE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.ENOMEM}


def _is_store_failure(code: int) -> bool:
    return code in _STORE_CODES or (code & 0xFF00) in {0xA700, 0xA900} or (code & 0xF000) == 0xC000


def store_status(exc: BaseException) -> int:
    """The C-STORE response status for an exception raised while storing one instance."""
    if isinstance(exc, LightboxError):
        code = exc.dicom_status
        return code if _is_store_failure(code) else CANNOT_UNDERSTAND
    if isinstance(exc, MemoryError):
        return OUT_OF_RESOURCES
    if isinstance(exc, OSError):
        # disk full, quota, descriptors: the SCU may retry later (PS3.4 B.2.3)
        return OUT_OF_RESOURCES if exc.errno in _RESOURCE_ERRNOS else PROCESSING_FAILURE
    return PROCESSING_FAILURE


def query_status(exc: BaseException) -> int:
    """The C-FIND/C-MOVE/C-GET failure status for an exception raised by a service."""
    if isinstance(exc, LightboxError):
        code = exc.dicom_status
        if (code & 0xFF00) in {0xA700, 0xA900} or (code & 0xF000) == 0xC000:
            return code
        return QR_UNABLE_TO_PROCESS
    if isinstance(exc, (MemoryError, OSError)):
        return QR_OUT_OF_RESOURCES
    return QR_UNABLE_TO_PROCESS
