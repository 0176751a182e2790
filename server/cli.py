"""The ``lightbox`` command: ``serve`` and ``import``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from server.config import Settings, settings_from_env

COMMANDS = ("serve", "import")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app

    settings = settings_from_env(
        host=args.host, port=args.port, data=args.data, dimse_port=args.dimse_port,
        aet=args.aet, base_url=args.base_url, insecure=args.insecure or None,
    )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app = create_app(settings)
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level="warning",
        access_log=False, timeout_graceful_shutdown=10, proxy_headers=False,
    )
    return 0


def _walk(paths: Sequence[str]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, _dirs, files in os.walk(path):
                for name in sorted(files):
                    yield Path(root) / name
        elif path.is_file():
            yield path


async def _import(settings: Settings, paths: Sequence[str], jobs: int, quiet: bool) -> int:
    from tqdm import tqdm

    from server.dicom.reading import configure_pydicom
    from server.errors import LightboxError
    from server.index.sql import SqlIndex
    from server.services.ingest import Ingestor, is_part10
    from server.storage.filestore import FileStore

    configure_pydicom()
    settings.data.mkdir(parents=True, exist_ok=True)
    blobs = FileStore(settings.data)
    index = SqlIndex(settings.database)
    await index.start()
    ingestor = Ingestor(index, blobs, settings.duplicate_policy)
    files = list(_walk(paths))
    counts: Counter[str] = Counter()
    rejected: list[tuple[Path, str]] = []
    gate = asyncio.Semaphore(jobs)
    bar = tqdm(total=len(files), unit="file", disable=quiet, file=sys.stderr)

    async def one(path: Path) -> None:
        async with gate:
            try:
                if not await asyncio.to_thread(is_part10, path):
                    counts["skipped (not DICOM)"] += 1
                    return
                fd, name = tempfile.mkstemp(prefix="import-", dir=blobs.spool_dir())
                os.close(fd)
                await asyncio.to_thread(shutil.copyfile, path, name)
                result = await ingestor.ingest(Path(name))
                counts[result.outcome] += 1
            except LightboxError as exc:
                counts["rejected"] += 1
                rejected.append((path, exc.message))
            except OSError as exc:
                counts["rejected"] += 1
                rejected.append((path, str(exc)))
            finally:
                bar.update(1)

    await asyncio.gather(*(one(p) for p in files))
    bar.close()
    await index.close()
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing to import"
    print(f"imported {len(files)} files: {summary}")
    for path, reason in rejected:
        print(f"  rejected {path}: {reason}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lightbox", description="DICOMweb server and viewer")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP (and optional DIMSE) server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--data", type=Path)
    serve.add_argument("--dimse-port", type=int)
    serve.add_argument("--aet")
    serve.add_argument("--base-url")
    serve.add_argument("--insecure", action="store_true")
    imp = sub.add_parser("import", help="import DICOM files or folders into the store")
    imp.add_argument("paths", nargs="+")
    imp.add_argument("--data", type=Path)
    imp.add_argument("--jobs", type=int, default=4)
    imp.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    settings = settings_from_env(data=args.data)
    return asyncio.run(_import(settings, args.paths, args.jobs, args.quiet))


if __name__ == "__main__":
    sys.exit(main())
