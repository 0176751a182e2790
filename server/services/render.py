"""Rendered resources, thumbnails (PS3.18 §10.4.1.1.3, §10.4.3.3.4) and WADO-URI (§9.4).

Per image: index row → that frame's bytes by ``pread`` of the spans kept at ingest (pydicom
reads the file only when the index has none: deflated or unlocated pixel data) → decode →
render → encode. The pure steps live in ``server.render``; this module picks the resource's
images, negotiates the media type, caches and schedules.

Caches (bounded by ``Settings.render_cache_bytes``): decoded frames (¾, LRU by bytes, so a
window change re-renders without decoding) and encoded outputs (¼). Keys carry the stored
file's sha256, so a replaced instance never serves a stale image.

Where the CPU work runs (``Settings.render_executor``) was measured with
benchmarks/bench_render.py: 300 512×512 int16 CT frames, JPEG q90, decoded-frame cache off,
over HTTP with the load generator on the same 2-core box, other jobs keeping its load
average at 3–7. Frames/s at c=1 / c=8 (best of 3) and server CPU per frame at c=8:

    executor      run A (floor 533/s)    run B (floor 927/s)        run C (floor 886/s)
    inline        228 / 253              288 / 299   3.1 ms CPU     -
    thread (2)    296 / 260              401 / 311   3.0 ms CPU     390 / 362   3.3 ms CPU
    process (2)   103 / 205              197 / 176   5.8 ms CPU     186 / 170   5.3 ms CPU

The floor is decode + window + JPEG in one process on one core (~1.1 ms CPU a frame); the
HTTP stack alone costs ~0.7 ms CPU a request here (a 304 answer), so c=8 reaches ~35–50 %
of it, not the 75 % aimed at. Numpy's large-array loops and Pillow's coders release the GIL,
so a small private thread pool overlaps them with the event loop's HTTP work and wins; a
process pool (one per shard of the frame cache, so decoded pixels never cross processes)
still pays ~0.45 ms of pickling and feeder threads per frame and a third busy process on
two cores. ``thread`` is the default.

Since then ``…/frames/{n}/rendered`` without a query is answered outside FastAPI's routing
and middlewares (server/api/fastpath.py): ~0.5 ms CPU less a frame in an A/B on one server
(2.2–2.5 against 2.7–3.0 ms at c=8); thread c=8 then measured 51–81 % of the floor, the
spread being the other jobs on the shared 2-core box.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import orjson
import pydicom
from pydicom.pixels.utils import pixel_array

from server.dicom.frames import Span, join_fragments
from server.dicom.media import MULTIPART, MediaRange
from server.dicom.pixels import PixelDescriptor
from server.dicom.uids import EXPLICIT_VR_BE
from server.errors import BadRequest, Forbidden, LightboxError, NotAcceptable, NotFound, NotSupported
from server.index.base import IndexStore, StoredInstance
from server.render.annotate import technique_text
from server.render.decode import decode_frame
from server.render.lut import choose_voi
from server.render.params import MEDIA_TYPES, RenderParams
from server.render.pipeline import render_animation, render_array, render_thumbnail
from server.services import transcode as T
from server.services.deid import Deidentifier
from server.services.lru import ByteLRU
from server.services.retrieve import CHUNK, FRAME_CACHE_CONTROL, Part, Payload, etag_matches
from server.storage.base import BlobStore

log = logging.getLogger(__name__)

EXECUTORS = ("inline", "thread", "process")
LEVEL_CACHE_CONTROL = "private, no-cache"  # study/series answers change as instances arrive
ENCAPSULATED_DOCUMENT_PREFIX = "1.2.840.10008.5.1.4.1.1.104."  # PS3.4 Annex A, B.5 (PDF, CDA, STL...)
MAX_ANIMATION_FRAMES = 1000
ROW_TTL = 2.0  # seconds an index row is reused for rendering
MAX_SERIES_PREFETCH = 5000  # rows of a larger series are looked up one by one
THUMBNAIL_TRIES = 5  # images tried for a study/series thumbnail before giving up
Pixels = npt.NDArray[Any]
_T = TypeVar("_T")


@dataclass(frozen=True)
class Target:
    """The negotiated answer: one media type, single part or multipart/related."""

    media_type: str
    multipart: bool


def choose_target(ranges: Sequence[MediaRange], *, single: bool, multi: bool, document: str | None = None) -> Target:
    """First acceptable (media type, framing) in the client's order of preference.

    ``single``/``multi``: which framings the resource allows (PS3.18 §10.4.1.1.3, checklist
    REND-05: single part only for one image). ``document``: MIME type of an encapsulated
    document, offered instead of images.
    """
    for r in ranges:
        if r.type == MULTIPART:
            inner = r.inner or "image/jpeg"
            if document is None and multi and inner in MEDIA_TYPES:
                return Target(inner, True)
            if document is None and multi and inner in ("image/*", "*/*"):
                return Target("image/jpeg", True)
            continue
        if document is not None:
            if r.matches(document):
                return Target(document, False)
            continue
        if r.type in MEDIA_TYPES and single:
            return Target(r.type, False)
        if r.type in ("image/*", "*/*"):
            return Target("image/jpeg", not single)
    if document is not None:
        raise NotAcceptable(f"this instance is an encapsulated document; it renders as {document} only")
    offered = [*(t for t in MEDIA_TYPES if single), *(f'multipart/related; type="{t}"' for t in MEDIA_TYPES if multi)]
    raise NotAcceptable("rendered media types offered here: " + ", ".join(offered))


def has_image(row: StoredInstance) -> bool:
    return row.pixel_tag is not None and row.descriptor is not None


def is_document(row: StoredInstance) -> bool:
    return row.sop_class_uid.startswith(ENCAPSULATED_DOCUMENT_PREFIX)


def rendered_url(base: str, row: StoredInstance, frame: int | None = None) -> str:
    url = f"{base}/studies/{row.study_uid}/series/{row.series_uid}/instances/{row.sop_uid}"
    return f"{url}/frames/{frame}/rendered" if frame is not None else f"{url}/rendered"


# ---------------------------------------------------------------- worker functions (pure)


def _load_frame(read: Callable[[str, int, int], bytes], key: str, spans: list[Span] | None, path: Path | None,
                desc: PixelDescriptor, index: int) -> Pixels:
    """One frame's pixels: pread of the stored spans, else pydicom on the whole file."""
    if spans is not None:
        return decode_frame(join_fragments(lambda o, n: read(key, o, n), spans), desc, index)
    if path is None:
        raise NotSupported("the pixel data of this instance cannot be located in its file")
    try:
        ds = pydicom.dcmread(path)
        arr = pixel_array(ds, index=index if desc.number_of_frames > 1 else None)
    except LightboxError:
        raise
    except Exception as exc:  # pydicom's decoders raise many types; all mean "cannot decode"
        raise NotSupported(f"frame {index + 1} could not be decoded: {exc}") from exc
    return np.asarray(arr)


def _render_job(pixels: Pixels | None, load: Callable[[], Pixels] | None, desc: PixelDescriptor, index: int,
                params: RenderParams, text: Mapping[str, str] | None, thumbnail: bool) -> tuple[Pixels, bytes]:
    """(pixels, encoded image): decode if not given, then the pure pipeline."""
    if pixels is None:
        assert load is not None
        pixels = load()
    if thumbnail:
        return pixels, render_thumbnail(pixels, desc, params, frame_index=index)
    return pixels, render_array(pixels, desc, params, frame_index=index, annotation_text=text)


def _animation_job(frames: list[tuple[int, Pixels | None, Callable[[], Pixels] | None]], desc: PixelDescriptor,
                   params: RenderParams) -> tuple[list[tuple[int, Pixels]], bytes]:
    decoded: list[tuple[int, Pixels]] = []
    for index, px, load in frames:
        if px is None:
            assert load is not None
            px = load()
        decoded.append((index, px))
    return decoded, render_animation(decoded, desc, params)


# Process executor: each worker process keeps its own decoded-frame cache, and a frame is
# always sent to the same worker (by key), so only parameters and the encoded image cross
# the process boundary, never the decoded pixels.
_WORKER_FRAMES: ByteLRU[tuple[str, int], Pixels] | None = None  # set in worker processes only


def _init_worker(cache_bytes: int) -> None:
    global _WORKER_FRAMES
    _WORKER_FRAMES = ByteLRU(cache_bytes, lambda a: int(a.nbytes))


def _worker_pixels(key: tuple[str, int], load: Callable[[], Pixels]) -> Pixels:
    pixels = _WORKER_FRAMES.get(key) if _WORKER_FRAMES is not None else None
    if pixels is None:
        pixels = load()
        if _WORKER_FRAMES is not None:
            _WORKER_FRAMES.put(key, pixels)
    return pixels


def _worker_render(key: tuple[str, int], load: Callable[[], Pixels], desc: PixelDescriptor, index: int,
                   params: RenderParams, text: Mapping[str, str] | None, thumbnail: bool) -> bytes:
    return _render_job(_worker_pixels(key, load), None, desc, index, params, text, thumbnail)[1]


def _document(path: Path) -> bytes:
    """The Encapsulated Document (0042,0011) without its even-length pad (PS3.3 C.24.2)."""
    ds = pydicom.dcmread(path)
    data = bytes(ds.get("EncapsulatedDocument") or b"")
    length = ds.get("EncapsulatedDocumentLength")
    if length is not None and 0 < int(length) <= len(data):
        return data[: int(length)]
    return data


def _deidentified(path: Path, secret: bytes) -> bytes:
    ds = pydicom.dcmread(path)
    Deidentifier(secret).apply(ds)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# ---------------------------------------------------------------- the service


@dataclass(frozen=True)
class _Item:
    row: StoredInstance
    frame: int  # 1-based


class Renderer:
    """Rendered/thumbnail/WADO-URI use cases over an index and a blob store."""

    def __init__(self, index: IndexStore, blobs: BlobStore, cache_bytes: int = 256 * 1024**2,
                 executor: str = "thread", workers: int | None = None) -> None:
        if executor not in EXECUTORS:
            raise ValueError(f"render executor {executor!r}: one of {', '.join(EXECUTORS)}")
        self.index = index
        self.blobs = blobs
        self.decoded: ByteLRU[tuple[str, int], Pixels] = ByteLRU(cache_bytes * 3 // 4, lambda a: int(a.nbytes))
        self.outputs: ByteLRU[tuple[Any, ...], bytes] = ByteLRU(cache_bytes // 4, len)
        self._descriptors: dict[str, PixelDescriptor] = {}
        self._rows: dict[tuple[str, str | None, str], tuple[float, StoredInstance]] = {}
        self._listing: dict[tuple[str, str], asyncio.Future[float]] = {}
        self._decoding: dict[tuple[str, int], asyncio.Future[Pixels]] = {}
        count = workers or min(4, os.cpu_count() or 1)
        self._pool: Executor | None = None
        self._shards: list[ProcessPoolExecutor] = []
        if executor == "thread":
            self._pool = ThreadPoolExecutor(count, thread_name_prefix="render")
        elif executor == "process":  # one single-process pool per shard of the frame cache
            share = cache_bytes * 3 // 4 // count
            self._shards = [ProcessPoolExecutor(1, initializer=_init_worker, initargs=(share,)) for _ in range(count)]
            self._pool = self._shards[0]

    def close(self) -> None:
        for pool in {self._pool, *self._shards} - {None}:
            assert pool is not None
            pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._pool is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    # ------------------------------------------------------------ rows and pixels

    def descriptor(self, row: StoredInstance) -> PixelDescriptor:
        desc = self._descriptors.get(row.sha256)
        if desc is None:
            if row.descriptor is None:
                raise NotSupported(f"instance {row.sop_uid} has no usable image pixel description")
            try:
                desc = PixelDescriptor.from_dict(row.descriptor)
            except (ValueError, TypeError, KeyError) as exc:
                raise NotSupported(f"instance {row.sop_uid}: pixel description unusable: {exc}") from exc
            if len(self._descriptors) > 10_000:
                self._descriptors.clear()
            self._descriptors[row.sha256] = desc
        return desc

    def _loader(self, row: StoredInstance, desc: PixelDescriptor, frame: int) -> Callable[[], Pixels]:
        spans = row.frames[frame - 1] if row.frames is not None and frame <= len(row.frames) else None
        if desc.transfer_syntax_uid == EXPLICIT_VR_BE and desc.bits_allocated == 8 and desc.pixel_vr == "OW":
            spans = None  # byte-swapped in 16-bit words: a frame's bytes are not its own span (PS3.5 A.3)
        path = None if spans is not None else self.blobs.local_path(row.blob_key)
        return functools.partial(_load_frame, self.blobs.read_range_sync, row.blob_key, spans, path, desc, frame - 1)

    async def instance(self, study: str, series: str | None, sop: str) -> StoredInstance:
        """The index row, remembered for ROW_TTL seconds.

        A viewer asks for many frames, windows and instances of one series in a burst, and an
        index round trip costs about as much as rendering a cached frame; so a miss loads the
        rows of the whole series at once (one query, ~0.03 ms a row). A replaced or deleted
        instance's blob is gone from the store, so its row is looked up again at once; a new
        instance of the series is seen at most ROW_TTL late. (The caches are keyed by sha256.)
        """
        key = (study, series, sop)
        hit = self._rows.get(key)
        if hit is not None and hit[0] > time.monotonic():
            if await self.blobs.exists(hit[1].blob_key):
                return hit[1]
        elif series is not None:
            await self._load_series(study, series)
            hit = self._rows.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        row = await self.index.get_instance(study, series, sop)
        self._remember([row], key_series=series)
        return row

    async def _load_series(self, study: str, series: str) -> None:
        """One listing per series per ROW_TTL, shared by concurrent misses."""
        task = self._listing.get((study, series))
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None
                                             or task.result() <= time.monotonic())):
            task = asyncio.ensure_future(self._list_series(study, series))
            self._listing[(study, series)] = task
            if len(self._listing) > 1000:
                self._listing = {k: t for k, t in self._listing.items() if not t.done()}
        try:
            await asyncio.shield(task)
        except Exception as exc:  # noqa: BLE001 - an optimisation only: fall back to one row
            log.warning("listing series %s for rendering failed: %s", series, exc)

    async def _list_series(self, study: str, series: str) -> float:
        try:
            rows = await self.index.list_instances(study, series)
        except NotFound:
            rows = []
        if len(rows) <= MAX_SERIES_PREFETCH:
            self._remember(rows, key_series=series)
        return time.monotonic() + ROW_TTL

    def _remember(self, rows: Sequence[StoredInstance], key_series: str | None) -> None:
        if len(self._rows) + len(rows) > 50_000:
            self._rows.clear()
        expires = time.monotonic() + ROW_TTL
        for row in rows:
            self._rows[(row.study_uid, key_series, row.sop_uid)] = (expires, row)

    async def _annotation_text(self, row: StoredInstance, desc: PixelDescriptor, frame: int,
                               params: RenderParams) -> dict[str, str] | None:
        if not params.annotation:
            return None
        text: dict[str, str] = {}
        if "technique" in params.annotation:
            voi = choose_voi(desc, frame - 1, params.window)
            window = (voi.center, voi.width, voi.function) if voi.kind == "window" else None
            text["technique"] = technique_text(desc, frame - 1, window)
        if "patient" in params.annotation:
            docs = await self.index.metadata_docs(row.study_uid, row.series_uid, row.sop_uid)
            text["patient"] = patient_text(orjson.loads(docs[0])) if docs else ""
        return text

    async def image(self, row: StoredInstance, frame: int, params: RenderParams, *, thumbnail: bool = False) -> bytes:
        """One encoded image of one frame (1-based), through both caches."""
        desc = self.descriptor(row)
        if not 1 <= frame <= desc.number_of_frames:
            raise NotFound(f"frame {frame} is outside 1..{desc.number_of_frames} of instance {row.sop_uid}")
        out_key = (row.sha256, frame, params, thumbnail)
        cached = self.outputs.get(out_key)
        if cached is not None:
            return cached
        text = None if thumbnail else await self._annotation_text(row, desc, frame, params)
        pixel_key = (row.sha256, frame)
        try:
            if self._shards:
                shard = self._shards[hash(pixel_key) % len(self._shards)]
                job = functools.partial(_worker_render, pixel_key, self._loader(row, desc, frame), desc, frame - 1,
                                        params, text, thumbnail)
                body = await asyncio.get_running_loop().run_in_executor(shard, job)
            else:
                body = await self._render_cached(pixel_key, row, desc, frame, params, text, thumbnail)
        except FileNotFoundError as exc:
            self._rows.clear()
            raise NotFound(f"instance {row.sop_uid} was replaced or deleted meanwhile") from exc
        self.outputs.put(out_key, body)
        return body

    async def _render_cached(self, key: tuple[str, int], row: StoredInstance, desc: PixelDescriptor, frame: int,
                             params: RenderParams, text: Mapping[str, str] | None, thumbnail: bool) -> bytes:
        """Render from the decoded-frame cache; a frame being decoded for another request is
        waited for, not decoded twice (a window drag sends many requests for one frame)."""
        known = self.decoded.get(key)
        pending = self._decoding.get(key) if known is None else None
        if pending is not None:
            try:
                known = await asyncio.shield(pending)
            except LightboxError:
                known = None  # the other request reports its error; try ourselves
        if known is not None:
            return (await self._run(_render_job, known, None, desc, frame - 1, params, text, thumbnail))[1]
        waiting: asyncio.Future[Pixels] = asyncio.get_running_loop().create_future()
        self._decoding[key] = waiting
        try:
            pixels, body = await self._run(_render_job, None, self._loader(row, desc, frame), desc, frame - 1,
                                           params, text, thumbnail)
        except BaseException as exc:
            waiting.set_exception(exc if isinstance(exc, LightboxError) else NotSupported(str(exc)))
            waiting.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        finally:
            if self._decoding.get(key) is waiting:
                del self._decoding[key]
        pixels.setflags(write=False)  # shared by concurrent renders: nothing may change it in place
        self.decoded.put(key, pixels)
        waiting.set_result(pixels)
        return body

    async def animation(self, row: StoredInstance, frames: Sequence[int], params: RenderParams) -> bytes:
        """An animated GIF of ``frames`` (1-based), FrameTime as the delay."""
        desc = self.descriptor(row)
        if len(frames) > MAX_ANIMATION_FRAMES:
            raise NotAcceptable(f"image/gif: at most {MAX_ANIMATION_FRAMES} frames per animation")
        out_key = (row.sha256, tuple(frames), params, "animation")
        cached = self.outputs.get(out_key)
        if cached is not None:
            return cached
        jobs: list[tuple[int, Pixels | None, Callable[[], Pixels] | None]] = []
        for n in frames:
            px = self.decoded.get((row.sha256, n))
            jobs.append((n - 1, px, None if px is not None else self._loader(row, desc, n)))
        try:
            decoded, body = await self._run(_animation_job, jobs, desc, params)
        except FileNotFoundError as exc:
            self._rows.clear()
            raise NotFound(f"instance {row.sop_uid} was replaced or deleted meanwhile") from exc
        for index, px in decoded:
            px.setflags(write=False)
            self.decoded.put((row.sha256, index + 1), px)
        self.outputs.put(out_key, body)
        return body

    # ------------------------------------------------------------ WADO-RS rendered / thumbnail

    async def render(
        self, study: str, series: str | None, sop: str | None, frames: Sequence[int] | None,
        params: RenderParams, ranges: Sequence[MediaRange], base: str, *,
        thumbnail: bool = False, if_none_match: str | None = None,
    ) -> Payload:
        """``…/rendered`` or ``…/thumbnail`` at study, series, instance or frame level."""
        if sop is not None:
            rows = [await self.instance(study, series, sop)]
        else:
            rows = await self.index.list_instances(study, series)
        if thumbnail:
            return await self._thumbnail(rows, frames, params, ranges, if_none_match)
        if sop is not None and frames is None and is_document(rows[0]) and not has_image(rows[0]):
            return await self._document_payload(rows[0], ranges, if_none_match)
        items, target = self._plan(rows, frames, ranges, sop is not None)
        params = replace(params, media_type=target.media_type)
        etag = _etag(items, params, target, "rendered")
        headers = {"ETag": etag, "Vary": "Accept",
                   "Cache-Control": FRAME_CACHE_CONTROL if sop is not None else LEVEL_CACHE_CONTROL}
        if etag_matches(if_none_match, etag):
            return Payload(status=304, headers=headers)
        if not target.multipart:
            if len(items) > 1:  # image/gif of several frames (single-part types allow nothing else)
                body = await self.animation(items[0].row, [i.frame for i in items], params)
            else:
                body = await self.image(items[0].row, items[0].frame, params)
            return Payload(target.media_type, body=body, headers=headers)
        first = await self.image(items[0].row, items[0].frame, params)  # fail with a status, not mid-stream
        parts = [Part(target.media_type, rendered_url(base, items[0].row, items[0].frame), body=first)]
        parts += [Part(target.media_type, rendered_url(base, i.row, i.frame), stream=self._part(i, params))
                  for i in items[1:]]
        return Payload(parts=parts, part_type=target.media_type, headers=headers)

    async def single_image(self, study: str, series: str, sop: str, frame: int, params: RenderParams,
                           ranges: Sequence[MediaRange]) -> tuple[StoredInstance, RenderParams] | None:
        """When ``render`` answers this frame with one image (not multipart): the row and the
        parameters ``image`` draws it with, for the fast path's replays; else None."""
        row = await self.instance(study, series, sop)
        _, target = self._plan([row], [frame], ranges, True)  # negotiated as render() does; raises likewise
        return None if target.multipart else (row, replace(params, media_type=target.media_type))

    async def _part(self, item: _Item, params: RenderParams) -> AsyncIterator[bytes]:
        yield await self.image(item.row, item.frame, params)

    def _plan(self, rows: list[StoredInstance], frames: Sequence[int] | None, ranges: Sequence[MediaRange],
              one_instance: bool) -> tuple[list[_Item], Target]:
        images = [r for r in rows if has_image(r)]
        if not images:
            what = f"instance {rows[0].sop_uid}" if one_instance else "this study or series"
            raise NotAcceptable(f"{what} has no image pixel data to render")
        if not one_instance:  # study or series: every frame of every image (REND-05: multipart only)
            items = [_Item(r, n) for r in images for n in range(1, max(r.number_of_frames, 1) + 1)]
            return items, choose_target(ranges, single=False, multi=True)
        row = images[0]
        count = max(row.number_of_frames, 1)
        numbers = list(frames) if frames is not None else list(range(1, count + 1))
        for n in numbers:
            if n > count:
                raise NotFound(f"frame {n} is outside 1..{count} of instance {row.sop_uid}")
        target = choose_target(ranges, single=True, multi=True)
        if target.multipart or len(numbers) == 1 or target.media_type == "image/gif":
            return [_Item(row, n) for n in numbers], target
        if frames is None:  # one image of a multi-frame instance: its first frame (documented)
            return [_Item(row, 1)], target
        raise NotAcceptable(f"{len(numbers)} frames as {target.media_type}: ask for "
                            f'multipart/related; type="{target.media_type}" or image/gif')

    async def _thumbnail(self, rows: list[StoredInstance], frames: Sequence[int] | None, params: RenderParams,
                         ranges: Sequence[MediaRange], if_none_match: str | None) -> Payload:
        """Exactly one small image, no patient information (PS3.18 §10.4.3.3.4)."""
        images = [r for r in rows if has_image(r)]
        if not images:
            raise NotFound("no image instance here to make a thumbnail from")
        if len(rows) > 1:  # representative: the middle image of the first series with images
            same = [r for r in images if r.series_uid == images[0].series_uid]
            middle = (len(same) - 1) // 2
            images = sorted(same, key=lambda r: abs(same.index(r) - middle))[:THUMBNAIL_TRIES]
        target = choose_target(ranges, single=True, multi=True)
        params = replace(params, media_type=target.media_type)
        etag = _etag([_Item(r, frames[0] if frames else 0) for r in images], params, target, "thumbnail")
        headers = {"ETag": etag, "Vary": "Accept",
                   "Cache-Control": FRAME_CACHE_CONTROL if len(rows) == 1 else LEVEL_CACHE_CONTROL}
        if etag_matches(if_none_match, etag):
            return Payload(status=304, headers=headers)
        for n, row in enumerate(images):  # the next nearest image when one cannot be decoded
            frame = frames[0] if frames else (max(row.number_of_frames, 1) + 1) // 2
            try:
                body = await self.image(row, frame, params, thumbnail=True)
                break
            except NotSupported:
                if n == len(images) - 1:
                    raise
        if target.multipart:
            return Payload(parts=[Part(target.media_type, body=body)], part_type=target.media_type, headers=headers)
        return Payload(target.media_type, body=body, headers=headers)

    async def _document_payload(self, row: StoredInstance, ranges: Sequence[MediaRange],
                                if_none_match: str | None) -> Payload:
        """An encapsulated document (PDF, CDA…) rendered as itself (checklist REND-06)."""
        docs = await self.index.metadata_docs(row.study_uid, row.series_uid, row.sop_uid)
        mime = _mime_of(docs[0]) if docs else "application/pdf"
        target = choose_target(ranges, single=True, multi=False, document=mime)
        etag = f'"{row.sha256[:32]}-doc"'
        headers = {"ETag": etag, "Cache-Control": FRAME_CACHE_CONTROL, "Vary": "Accept"}
        if etag_matches(if_none_match, etag):
            return Payload(status=304, headers=headers)
        path = self.blobs.local_path(row.blob_key)
        if path is None:
            raise NotSupported("this blob store has no local files to read documents from")
        body = await asyncio.to_thread(_document, path)
        return Payload(target.media_type, body=body, headers=headers)

    # ------------------------------------------------------------ WADO-URI

    async def part10(self, row: StoredInstance, transfer_syntax: str | None, secret: bytes | None = None) -> Payload:
        """The stored Part-10 file (PS3.18 §9.4, URI-02/03): as stored, transcoded or de-identified."""
        headers = {"Cache-Control": FRAME_CACHE_CONTROL}
        wanted = row.transfer_syntax if transfer_syntax in (None, "", "*") else str(transfer_syntax)
        path = self.blobs.local_path(row.blob_key)
        if wanted != row.transfer_syntax:
            if secret is not None:
                raise NotAcceptable("transferSyntax: anonymize=yes is served as stored only; use transferSyntax=*")
            if path is None or not T.can_transcode(row.transfer_syntax, wanted, row.descriptor,
                                                   row.pixel_tag is not None):
                raise NotAcceptable(f"transferSyntax: {wanted} is not available for this instance "
                                    f"(stored as {row.transfer_syntax}; use * for as stored)")
            body = await asyncio.to_thread(T.instance_as, path, row.transfer_syntax, wanted)
            return Payload("application/dicom", body=body, headers=headers)
        if secret is not None:
            if path is None:
                raise NotSupported("anonymize: this blob store has no local files to de-identify")
            await self.refuse_burned_in(row)
            body = await asyncio.to_thread(_deidentified, path, secret)
            return Payload("application/dicom", body=body, headers=headers)
        headers["ETag"] = f'"{row.sha256[:32]}"'
        headers["Content-Length"] = str(row.file_size)
        return Payload("application/dicom", stream=self.blobs.iter_range(row.blob_key, 0, None, CHUNK),
                       headers=headers)

    async def refuse_burned_in(self, row: StoredInstance) -> None:
        """anonymize=yes: pixel data with Burned In Annotation (0028,0301) YES cannot be cleaned here."""
        docs = await self.index.metadata_docs(row.study_uid, row.series_uid, row.sop_uid)
        if docs and _json_value(orjson.loads(docs[0]), "00280301").upper() == "YES":
            raise Forbidden("anonymize: the pixel data carries burned-in annotation (0028,0301 YES), "
                            "which cannot be removed here")

    async def uri_image(self, row: StoredInstance, frame: int | None, params: RenderParams,
                        if_none_match: str | None = None) -> Payload:
        """A rendered image for WADO-URI: frame ``frame`` (1-based), or frame 1, or all as a GIF."""
        if not has_image(row):
            raise NotAcceptable(f"contentType: instance {row.sop_uid} has no image pixel data; "
                                "ask for application/dicom")
        count = max(row.number_of_frames, 1)
        if frame is not None and not 1 <= frame <= count:
            raise BadRequest(f"frameNumber: {frame} is outside 1..{count}")
        animate = frame is None and count > 1 and params.media_type == "image/gif"
        frames = list(range(1, count + 1)) if animate else [frame or 1]
        etag = _etag([_Item(row, n) for n in frames], params, Target(params.media_type, False), "uri")
        headers = {"ETag": etag, "Cache-Control": FRAME_CACHE_CONTROL}
        if etag_matches(if_none_match, etag):
            return Payload(status=304, headers=headers)
        if animate:
            body = await self.animation(row, frames, params)
        else:
            body = await self.image(row, frames[0], params)
        return Payload(params.media_type, body=body, headers=headers)


# ---------------------------------------------------------------- helpers


def _etag(items: Sequence[_Item], params: RenderParams, target: Target, kind: str) -> str:
    """Strong: the stored files' sha256 + what was asked for."""
    asked = (params.media_type, params.window, params.viewport, params.quality, sorted(params.annotation))
    h = hashlib.sha256(f"{kind}|{asked!r}|{target.multipart}".encode())  # repr of a frozenset is not stable
    for item in items:
        h.update(f"|{item.row.sha256}:{item.frame}".encode())
    return f'"{h.hexdigest()[:40]}"'


def _json_value(doc: Mapping[str, Any], tag: str) -> str:
    values = doc.get(tag, {}).get("Value") or []
    if not values:
        return ""
    first = values[0]
    if isinstance(first, dict):  # PN: Alphabetic, else Ideographic/Phonetic
        first = first.get("Alphabetic") or first.get("Ideographic") or first.get("Phonetic") or ""
    return str(first).replace("^", " ").strip()


def patient_text(doc: Mapping[str, Any]) -> str:
    """Patient annotation: name, ID, birth date / study date and description."""
    line1 = "  ".join(v for v in (_json_value(doc, "00100010"), _json_value(doc, "00100020"),
                                  _json_value(doc, "00100030")) if v)  # fmt: skip
    line2 = "  ".join(v for v in (_json_value(doc, "00080020"), _json_value(doc, "00081030")) if v)
    return "\n".join(line for line in (line1, line2) if line)


def _mime_of(doc: bytes) -> str:
    """MIME Type of Encapsulated Document (0042,0012), default application/pdf."""
    value = _json_value(orjson.loads(doc), "00420012")
    return value.lower() if value and "/" in value else "application/pdf"
