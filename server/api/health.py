"""``/healthz``: 200 when the index answers and the store is writable."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter()


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    index_ok = await request.app.state.index.healthy()
    spool = request.app.state.blobs.spool_dir()
    store_ok = spool.is_dir()
    status = 200 if index_ok and store_ok else 503
    return JSONResponse({"index": index_ok, "store": store_ok}, status_code=status)
