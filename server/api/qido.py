"""QIDO-RS: ``GET /studies``, ``/series``, ``/instances`` and their scoped forms (PS3.18 §10.6).

Answers ``application/dicom+json`` (default; ``application/json`` too) or
``multipart/related; type="application/dicom+xml"`` with one dataset per part.
Ignored parameters and capped results are reported in ``Warning: 299`` headers
(PS3.18 §8.3.4); the CORS layer (api/browser.py) exposes them to browsers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.api.http import public_base, settings_of
from server.api.multipart import closing, multipart_content_type, new_boundary, part_head
from server.dicom.attributes import parse_tag
from server.dicom.media import DICOM_JSON, DICOM_XML, MULTIPART, accept_from_query, parse_accept
from server.dicom.uids import require_uid
from server.dicom.xml_model import to_native_xml
from server.errors import BadRequest, NotAcceptable
from server.services.search import Level, Query, SearchService

router = APIRouter()

# PS3.18 Table 8.3.4-1 (query parameters) and §8.3.3 (accept, charset)
_CONTROL = {"limit", "offset", "fuzzymatching", "includefield", "emptyvaluematching",
            "multiplevaluematching", "accept", "charset"}


def _uint(name: str, raw: str, minimum: int) -> int:
    text = raw.strip()
    if not text.isdigit():
        raise BadRequest(f"{name}: {raw[:40]!r} is not a non-negative integer")
    value = int(text)
    if value < minimum:
        raise BadRequest(f"{name}: must be at least {minimum}")
    return value


def _bool(name: str, raw: str) -> bool:
    text = raw.strip().lower()
    if text not in ("true", "false"):
        raise BadRequest(f"{name}: {raw[:40]!r} is not true or false")
    return text == "true"


def _attribute_path(name: str) -> tuple[int, ...] | None:
    """``PatientID``, ``00100020`` or a dotted sequence path ``0040A370.00401001``."""
    tags = [parse_tag(part) for part in name.split(".")]
    if not tags or any(t is None for t in tags):
        return None
    return tuple(t for t in tags if t is not None)


def query_from_params(
    level: Level, params: Iterable[tuple[str, str]], study_uid: str | None = None, series_uid: str | None = None
) -> tuple[Query, list[str]]:
    """QIDO query parameters → (Query, warnings). Unknown parameters are ignored with a
    warning (PS3.18 §8.3.4); malformed values of known ones are a BadRequest naming them."""
    warnings: list[str] = []
    matches: dict[int, list[str]] = {}
    seq: dict[tuple[int, int], list[str]] = {}
    include: set[int] = set()
    include_all = False
    limit: int | None = None
    offset = 0
    fuzzy = False
    for raw_name, value in params:
        name = raw_name.strip()
        lower = name.lower()
        if lower in _CONTROL:
            if lower == "limit":
                limit = _uint("limit", value, 0)
            elif lower == "offset":
                offset = _uint("offset", value, 0)
            elif lower == "fuzzymatching":
                fuzzy = _bool("fuzzymatching", value)
            elif lower == "includefield":
                for field in (f.strip() for f in value.split(",")):
                    if not field:
                        continue
                    if field.lower() == "all":
                        include_all = True
                        continue
                    path = _attribute_path(field)
                    if path is None:
                        warnings.append(f"includefield {field[:64]!r} is not a known attribute and was ignored")
                    else:
                        include.add(path[0])
            elif lower == "emptyvaluematching" and _bool(name, value):
                warnings.append("The emptyvaluematching parameter is not supported. "
                                "Empty Value Matching has not been performed.")
            elif lower == "multiplevaluematching":
                _bool(name, value)  # backslash-separated values are always matched as OR
            continue
        path = _attribute_path(name)
        if path is None:
            warnings.append(f"query parameter {name[:64]!r} is not supported and was ignored")
        elif len(path) == 1:
            matches.setdefault(path[0], []).append(value)
        elif len(path) == 2:
            seq.setdefault((path[0], path[1]), []).append(value)
        else:
            raise BadRequest(f"{name[:64]}: sequence matching is supported one level deep only")
    query = Query(
        level=level,
        # repeated keys (SeriesInstanceUID=a&SeriesInstanceUID=b) are one list of values
        matches={t: "\\".join(v) for t, v in matches.items()},
        seq_matches={k: "\\".join(v) for k, v in seq.items()},
        study_uid=study_uid, series_uid=series_uid, limit=limit, offset=offset, fuzzy=fuzzy,
        include="all" if include_all else frozenset(include),
    )
    return query, warnings


def _wants_xml(request: Request) -> bool:
    header = accept_from_query(request.query_params.getlist("accept")) or request.headers.get("accept")
    for media in parse_accept(header):
        if media.type in (DICOM_JSON, "application/json", "*/*", "application/*"):
            return False
        if media.type == MULTIPART and media.inner in (None, DICOM_XML):
            return True
        if media.type == DICOM_XML:
            return True
    raise NotAcceptable(
        f"QIDO-RS answers {DICOM_JSON} or multipart/related; type=\"{DICOM_XML}\", not {header!r}"
    )


def _warning_value(base: str, text: str) -> str:
    # the form PS3.18 §8.3.4.4 shows: 299 {service}: text
    value = f"299 {base}: {text}".replace("\r", " ").replace("\n", " ")
    return value.encode("latin-1", "replace").decode("latin-1")


async def search(request: Request, level: Level, study: str | None = None, series: str | None = None) -> Response:
    settings = settings_of(request)
    if study is not None:
        require_uid(study, "StudyInstanceUID")
    if series is not None:
        require_uid(series, "SeriesInstanceUID")
    xml = _wants_xml(request)
    params = [(k, v) for k, v in request.query_params.multi_items()]
    query, warnings = query_from_params(level, params, study, series)
    service: SearchService = request.app.state.search
    base = public_base(request, settings)
    result = await service.search(query, base)
    warnings += result.warnings
    status = 204 if not result.datasets and settings.qido_empty_204 else 200
    if xml:
        body, media_type = _multipart_xml(result.datasets)
    else:
        # PS3.18 F.2: attributes in tag order (sorted here, in C, rather than per dict)
        body, media_type = orjson.dumps(result.datasets, option=orjson.OPT_SORT_KEYS), DICOM_JSON
    response = Response(b"" if status == 204 else body, status_code=status,
                        media_type=None if status == 204 else media_type)
    for text in dict.fromkeys(warnings):  # once each, in order
        response.headers.append("Warning", _warning_value(base, text))
    return response


def _multipart_xml(datasets: list[dict[str, Any]]) -> tuple[bytes, str]:
    boundary = new_boundary()
    out = bytearray()
    for n, doc in enumerate(datasets):
        if n:
            out += b"\r\n"
        out += part_head(boundary, DICOM_XML)
        out += to_native_xml(doc)
    out += closing(boundary) if datasets else f"--{boundary}--\r\n".encode()
    return bytes(out), multipart_content_type(DICOM_XML, boundary)


@router.get("/studies")
async def search_for_studies(request: Request) -> Response:
    return await search(request, "study")


@router.get("/series")
async def search_for_all_series(request: Request) -> Response:
    return await search(request, "series")


@router.get("/instances")
async def search_for_all_instances(request: Request) -> Response:
    return await search(request, "instance")


@router.get("/studies/{study}/series")
async def search_for_series(request: Request, study: str) -> Response:
    return await search(request, "series", study)


@router.get("/studies/{study}/instances")
async def search_for_study_instances(request: Request, study: str) -> Response:
    return await search(request, "instance", study)


@router.get("/studies/{study}/series/{series}/instances")
async def search_for_instances(request: Request, study: str, series: str) -> Response:
    return await search(request, "instance", study, series)

