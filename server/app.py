"""create_app(settings): the one place that picks and wires the backends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from server.api import admin, health, qido, rendered, stow, wado, wado_uri
from server.api.accesslog import AccessLog
from server.api.auth import Authenticator, AuthMiddleware
from server.api.browser import add_browser_access
from server.api.fastpath import FastPath
from server.api.http import DICOMWEB_ROOT, error_response
from server.api.ohif import ohif_router
from server.config import Settings
from server.dicom.reading import configure_pydicom
from server.dimse.service import start_dimse, stop_dimse
from server.errors import LightboxError
from server.index.sql import SqlIndex
from server.index.tokens import TokenStore
from server.memory import freeze_heap
from server.services.audit import AuditLog
from server.services.ingest import Ingestor
from server.services.ingest_pool import pool_for
from server.services.render import Renderer
from server.services.retrieve import Retriever
from server.services.search import SearchService
from server.storage.filestore import FileStore

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastPath:
    """The ASGI app to serve: the FastAPI app (``.app``) behind the fast path for frames."""
    configure_pydicom()
    settings.data.mkdir(parents=True, exist_ok=True)
    blobs = FileStore(settings.data)
    index = SqlIndex(settings.database)
    ingestor = Ingestor(index, blobs, settings.duplicate_policy)
    tokens = TokenStore(settings.database)
    authenticator = Authenticator(settings, tokens)  # fails fast on a bad auth configuration
    audit = AuditLog(settings.audit_path) if settings.audit_log else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await index.start()
        await tokens.start()
        spooled = blobs.clear_spool()
        orphans = await ingestor.recover()
        if spooled or orphans:
            log.warning("removed %d unfinished uploads and %d orphan blobs", spooled, orphans)
        pool = pool_for(settings)  # after recovery, which must never race a worker's pending blob
        ingestor.offload = pool.ingest if pool else None
        dimse = await start_dimse(settings, app.state)
        freeze_heap()  # last: everything start-up made stays for the process's life
        yield
        await stop_dimse(dimse)
        if pool:
            await asyncio.to_thread(pool.close)
        renderer.close()
        await index.close()
        await tokens.close()
        if audit:
            audit.close()

    app = FastAPI(title="Lightbox", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.blobs = blobs
    app.state.index = index
    app.state.ingestor = ingestor
    app.state.tokens = tokens
    app.state.search = SearchService(index, settings.qido_max_results)
    app.state.retriever = retriever = Retriever(index, blobs)
    app.state.renderer = renderer = Renderer(index, blobs, settings.render_cache_bytes, settings.render_executor,
                                             settings.render_workers or None)
    # pydicom logs every failed decoder plugin with a traceback (LOGGER.exception); an
    # undecodable frame is an expected 501 with its reason, so keep those out of the log.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)

    @app.exception_handler(LightboxError)
    async def _lightbox_error(_request: Request, exc: LightboxError) -> Response:
        return error_response(exc)

    app.include_router(health.router)
    app.include_router(stow.router, prefix=DICOMWEB_ROOT)
    app.include_router(admin.router, prefix=DICOMWEB_ROOT)
    app.include_router(admin.admin_router)
    app.include_router(wado.router, prefix=DICOMWEB_ROOT)
    app.include_router(qido.router, prefix=DICOMWEB_ROOT)
    app.include_router(rendered.router, prefix=DICOMWEB_ROOT)
    app.include_router(wado_uri.router)
    if settings.ohif_dir:
        app.include_router(ohif_router(Path(settings.ohif_dir)))
    if settings.web_dir.is_dir():
        app.mount("/", StaticFiles(directory=settings.web_dir, html=True), name="web")
    app.add_middleware(AuthMiddleware, settings=settings, authenticator=authenticator, audit=audit)
    add_browser_access(app, settings)  # outside auth: preflights and 401s carry CORS headers
    if settings.access_log:
        app.add_middleware(AccessLog)
    # Outside FastAPI itself: single frames and rendered frames answered by the same code
    # without the per-request cost of its routing and middlewares (server.api.fastpath).
    return FastPath(app, settings=settings, authenticator=authenticator, audit=audit, retriever=retriever,
                    renderer=renderer)
