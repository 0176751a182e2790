"""The error tree.

Every error the services raise is a ``LightboxError``. Each one knows its HTTP status
and, where PS3.4 / PS3.18 define one, the DICOM status (failure reason) code, so the
edges (``api/`` for HTTP, ``dimse/`` for DIMSE) translate without guessing::

    LightboxError            500  0x0110 processing failure
    ├── BadRequest           400  0xC000 cannot understand
    ├── Unauthorized         401
    ├── Forbidden            403
    ├── NotFound             404
    ├── Gone                 410
    ├── NotAcceptable        406
    ├── Conflict             409  0xA900 (dataset/identifier mismatch)
    ├── PayloadTooLarge      413  0xA700 out of resources
    ├── UnsupportedMediaType 415
    ├── OutOfResources       503  0xA700
    └── NotSupported         501  (a valid request we cannot fulfil, e.g. an undecodable codec)
"""

from __future__ import annotations


class LightboxError(Exception):
    """Base of every error the server raises on purpose."""

    http_status: int = 500
    dicom_status: int = 0x0110  # PS3.4 Annex C: processing failure

    def __init__(self, message: str, *, dicom_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if dicom_status is not None:
            self.dicom_status = dicom_status

    def __reduce__(self) -> tuple[type[LightboxError], tuple[str], dict[str, int]]:
        # Pickled whole (code and reason) when raised in an ingest worker process.
        return type(self), (self.message,), {"dicom_status": self.dicom_status}


class BadRequest(LightboxError):
    http_status = 400
    dicom_status = 0xC000  # cannot understand


class Unauthorized(LightboxError):
    http_status = 401


class Forbidden(LightboxError):
    http_status = 403


class NotFound(LightboxError):
    http_status = 404
    dicom_status = 0xC000


class Gone(LightboxError):
    http_status = 410


class NotAcceptable(LightboxError):
    http_status = 406


class Conflict(LightboxError):
    http_status = 409
    dicom_status = 0xA900  # dataset does not match / identifier mismatch


class PayloadTooLarge(LightboxError):
    http_status = 413
    dicom_status = 0xA700  # out of resources


class UnsupportedMediaType(LightboxError):
    http_status = 415


class OutOfResources(LightboxError):
    http_status = 503
    dicom_status = 0xA700


class NotSupported(LightboxError):
    http_status = 501
    dicom_status = 0xC122  # e.g. transfer syntax not supported
