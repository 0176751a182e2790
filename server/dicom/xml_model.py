"""DICOM JSON datasets to the Native DICOM Model XML (PS3.19 Annex A)."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr

from server.dicom.attributes import keyword_of

_PN_PARTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")


def _person_name(value: dict[str, str]) -> str:
    out = []
    for group in ("Alphabetic", "Ideographic", "Phonetic"):
        if group in value:
            comps = value[group].split("^")
            inner = "".join(
                f"<{name}>{escape(comp)}</{name}>" for name, comp in zip(_PN_PARTS, comps, strict=False) if comp
            )
            out.append(f"<{group}>{inner}</{group}>")
    return "".join(out)


def _attribute(key: str, attr: dict[str, Any]) -> str:
    tag = int(key, 16)
    vr = attr.get("vr", "UN")
    head = f'<DicomAttribute tag="{key}" vr="{vr}" keyword={quoteattr(keyword_of(tag))}>'
    body = []
    if "BulkDataURI" in attr:
        body.append(f"<BulkData uri={quoteattr(attr['BulkDataURI'])}/>")
    elif "InlineBinary" in attr:
        body.append(f"<InlineBinary>{escape(attr['InlineBinary'])}</InlineBinary>")
    for n, value in enumerate(attr.get("Value", []), start=1):
        if vr == "SQ":
            body.append(f'<Item number="{n}">{dataset_xml(value)}</Item>')
        elif vr == "PN":
            body.append(f'<PersonName number="{n}">{_person_name(value or {})}</PersonName>')
        elif value is None:
            body.append(f'<Value number="{n}"/>')
        else:
            body.append(f'<Value number="{n}">{escape(str(value))}</Value>')
    return head + "".join(body) + "</DicomAttribute>"


def dataset_xml(doc: dict[str, Any]) -> str:
    return "".join(_attribute(key, attr) for key, attr in sorted(doc.items()))


def to_native_xml(doc: dict[str, Any]) -> bytes:
    """One ``<NativeDicomModel>`` document."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM">'
        + dataset_xml(doc)
        + "</NativeDicomModel>"
    ).encode("utf-8")
