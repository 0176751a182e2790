"""STOW-RS: ``POST /studies`` and ``POST /studies/{study}`` (PS3.18 §10.5)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from server.api.http import dicom_json, public_base, settings_of
from server.api.multipart import MultipartSpooler, PartLimitExceeded, SpooledPart
from server.dicom.media import DICOM, DICOM_XML, parse_accept, parse_media_type
from server.dicom.uids import require_uid
from server.dicom.xml_model import to_native_xml
from server.errors import BadRequest, LightboxError, PayloadTooLarge, UnsupportedMediaType
from server.services.ingest import Ingestor, IngestResult

log = logging.getLogger(__name__)
router = APIRouter()

# PS3.18 Table 10.5.3-2 / PS3.4 Annex I: FailureReason codes
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


def _uid_attr(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]}


class StowReport:
    """Collects per-part outcomes into the Store Instances Response Module (PS3.18 I.1)."""

    def __init__(self, base: str, study: str | None) -> None:
        self.base = base
        self.study = study
        # (part number, item): parts are stored concurrently, answered in upload order
        self.referenced: list[tuple[int, dict[str, Any]]] = []
        self.failed: list[tuple[int, dict[str, Any]]] = []

    def stored(self, r: IngestResult, part: int = 0) -> None:
        url = f"{self.base}/studies/{r.study_uid}/series/{r.series_uid}/instances/{r.sop_uid}"
        self.referenced.append((part, {
            "00081150": _uid_attr(r.sop_class_uid),
            "00081155": _uid_attr(r.sop_uid),
            "00081190": {"vr": "UR", "Value": [url]},
        }))
        self.study = self.study or r.study_uid

    def failure(self, reason: int, message: str, sop_class: str = "", sop: str = "", part: int = 0) -> None:
        item: dict[str, Any] = {"00081197": {"vr": "US", "Value": [reason]}}
        if sop_class:
            item["00081150"] = _uid_attr(sop_class)
        if sop:
            item["00081155"] = _uid_attr(sop)
        # Not a standard attribute: keep the reason text next to the code for people.
        item["00090010"] = {"vr": "LO", "Value": ["LIGHTBOX"]}
        item["00091001"] = {"vr": "LT", "Value": [message[:1000]]}
        self.failed.append((part, item))

    def dataset(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.study and self.referenced:
            doc["00081190"] = {"vr": "UR", "Value": [f"{self.base}/studies/{self.study}"]}
        if self.failed:
            doc["00081198"] = {"vr": "SQ", "Value": [item for _, item in sorted(self.failed, key=lambda p: p[0])]}
        if self.referenced:
            doc["00081199"] = {"vr": "SQ", "Value": [item for _, item in sorted(self.referenced, key=lambda p: p[0])]}
        return doc

    def status(self) -> int:
        # PS3.18 Table 10.5.3-1
        if not self.failed:
            return 200
        if self.referenced:
            return 202
        return 409


async def _ingest_part(
    ingestor: Ingestor, part: SpooledPart, number: int, study: str | None, report: StowReport
) -> None:
    if part.error:
        part.path.unlink(missing_ok=True)
        reason = OUT_OF_RESOURCES if "limit" in part.error else CANNOT_UNDERSTAND
        report.failure(reason, part.error, part=number)
        return
    part_type = part.headers.get("content-type")
    if part_type and parse_media_type(part_type)[0] != DICOM:
        part.path.unlink(missing_ok=True)
        report.failure(CANNOT_UNDERSTAND, f"part media type {part_type!r} is not {DICOM}", part=number)
        return
    try:
        result = await ingestor.ingest(part.path, expected_study=study, sha256=part.sha256)
    except LightboxError as exc:
        report.failure(exc.dicom_status, exc.message, part=number)
        return
    except Exception as exc:  # never a 500 for one bad part
        log.exception("ingest failed")
        report.failure(PROCESSING_FAILURE, f"processing failure: {exc}", part=number)
        return
    report.stored(result, part=number)


class PartPipeline:
    """Stores finished parts while the body is still arriving, a few at a time, so one
    part's fsync overlaps the next part's upload (memory stays flat: parts are on disk)."""

    IN_FLIGHT = 2

    def __init__(self, ingestor: Ingestor, study: str | None, report: StowReport) -> None:
        self.ingestor, self.study, self.report = ingestor, study, report
        self.tasks: set[asyncio.Task[None]] = set()
        self.count = 0

    async def submit(self, part: SpooledPart) -> None:
        if len(self.tasks) >= self.IN_FLIGHT:
            _done, self.tasks = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        self.count += 1
        self.tasks.add(asyncio.create_task(_ingest_part(self.ingestor, part, self.count, self.study, self.report)))

    async def finish(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks)
        self.tasks = set()


async def store_instances(request: Request, study: str | None) -> Response:
    settings = settings_of(request)
    if study is not None:
        require_uid(study, "StudyInstanceUID")
    media, params = parse_media_type(request.headers.get("content-type", ""))
    if media != "multipart/related":
        raise UnsupportedMediaType(
            f"Content-Type {media or '(none)'} is not supported; send multipart/related; "
            f'type="{DICOM}"'
        )
    inner = params.get("type", DICOM).lower()
    if inner != DICOM:
        raise UnsupportedMediaType(
            f'multipart/related type="{inner}" is not supported; only type="{DICOM}" is'
        )
    boundary = params.get("boundary")
    if not boundary:
        raise BadRequest("Content-Type: multipart/related without a boundary parameter")
    ingestor: Ingestor = request.app.state.ingestor
    blobs = request.app.state.blobs
    report = StowReport(public_base(request, settings), study)
    spooler = MultipartSpooler(boundary, blobs.spool_dir(), settings.max_part_bytes, settings.max_parts)
    pipeline = PartPipeline(ingestor, study, report)
    try:
        async for chunk in request.stream():
            spooler.feed(chunk)
            for part in spooler.take_finished():
                await pipeline.submit(part)
    except PartLimitExceeded as exc:
        _drop(spooler)
        await pipeline.finish()
        raise PayloadTooLarge(str(exc)) from exc
    except ClientDisconnect:
        _drop(spooler)
        await pipeline.finish()  # parts already received are complete instances: keep them
        raise
    except ValueError as exc:  # the multipart parser found broken framing
        _drop(spooler)
        await pipeline.finish()
        raise BadRequest(f"malformed multipart body: {exc}") from exc
    for part in spooler.take_finished():
        await pipeline.submit(part)
    await pipeline.finish()
    truncated = spooler.abandon()
    if truncated is not None:
        report.failure(CANNOT_UNDERSTAND, truncated.error or "truncated part", part=pipeline.count + 1)
    if spooler.count == 0:
        raise BadRequest("the multipart body holds no parts (check the boundary)")
    doc = report.dataset()
    accept = parse_accept(request.headers.get("accept"))
    if accept and accept[0].matches(DICOM_XML) and accept[0].type != "*/*":
        return Response(to_native_xml(doc), status_code=report.status(), media_type=DICOM_XML)
    return dicom_json(doc, status=report.status())


def _drop(spooler: MultipartSpooler) -> None:
    for part in spooler.take_finished():
        part.path.unlink(missing_ok=True)
    spooler.abandon()


@router.post("/studies")
async def post_studies(request: Request) -> Response:
    return await store_instances(request, None)


@router.post("/studies/{study}")
async def post_study(request: Request, study: str) -> Response:
    return await store_instances(request, study)
