"""How we ask pydicom to read headers: leniently, without warnings on bad values."""

from __future__ import annotations

import pydicom.config


def configure_pydicom() -> None:
    """Read real-world files as they are: invalid values are kept, not warned about."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
