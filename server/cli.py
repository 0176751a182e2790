"""The ``lightbox`` command: ``serve`` and ``import``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from server.config import Settings, settings_from_env

COMMANDS = ("serve", "import", "token", "user", "audit")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app
    from server.memory import tune_malloc

    tune_malloc()  # before the first large buffer: see server/memory.py
    settings = settings_from_env(
        host=args.host, port=args.port, data=args.data, dimse_port=args.dimse_port,
        aet=args.aet, base_url=args.base_url, ohif_dir=args.ohif, insecure=args.insecure or None,
        dimse_allowed_aets=args.dimse_allowed_aets, dimse_known_aes=args.dimse_known_aes,
        dimse_max_associations=args.dimse_max_associations,
        auth=args.auth, auth_users_file=args.users_file, tls_cert=args.tls_cert, tls_key=args.tls_key,
    )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not _listen_allowed(settings):
        return 2
    try:
        app = create_app(settings)
    except ValueError as exc:  # a bad auth configuration (e.g. oidc without an issuer)
        print(f"lightbox: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level="warning",
        access_log=False, timeout_graceful_shutdown=10, proxy_headers=False,
        ssl_certfile=settings.tls_cert or None, ssl_keyfile=settings.tls_key or None,
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


# ------------------------------------------------------------ security: token, user, audit


def _listen_allowed(settings: Settings) -> bool:
    from server.api.auth import insecure_warning, listen_problem

    problem = listen_problem(settings)
    if problem:
        print(f"lightbox: {problem}", file=sys.stderr)
        return False
    warning = insecure_warning(settings)
    if warning:
        logging.getLogger("lightbox").warning(warning)
    return True


def _security_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tok = sub.add_parser("token", help="create, list and revoke API tokens")
    tsub = tok.add_subparsers(dest="action", required=True)
    create = tsub.add_parser("create", help="create a token (printed once)")
    create.add_argument("--role", required=True, choices=("reader", "uploader", "admin"))
    create.add_argument("--study", help="limit the token to this Study Instance UID")
    create.add_argument("--patient", help="limit the token to this Patient ID")
    create.add_argument("--expires", help="lifetime, e.g. 30m, 12h, 7d (default: never)")
    create.add_argument("--label", default="", help="a note: who it is for")
    revoke = tsub.add_parser("revoke", help="revoke a token by its id (takes effect at once)")
    revoke.add_argument("token_id")
    tsub.add_parser("list", help="list tokens (ids, roles, scopes; never the secrets)")
    user = sub.add_parser("user", help="HTTP Basic users")
    usub = user.add_subparsers(dest="action", required=True)
    add = usub.add_parser("add", help="add or replace a user; the password is read from stdin or prompted")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=("reader", "uploader", "admin"))
    add.add_argument("--users-file", help="default: LIGHTBOX_AUTH_USERS_FILE or <data>/users")
    audit = sub.add_parser("audit", help="query the audit trail (JSON lines)")
    audit.add_argument("--study")
    audit.add_argument("--user")
    audit.add_argument("--action")
    audit.add_argument("--since", help="ISO date/time or e.g. 12h, 7d")
    audit.add_argument("--denied", action="store_true", help="only refused requests")
    for p in (tok, create, revoke, tsub.choices["list"], add, audit):
        p.add_argument("--data", type=Path)


async def _token(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from server.index.tokens import TokenStore
    from server.services.tokens import create_token, parse_duration

    store = TokenStore(settings.database)
    await store.start()
    try:
        if args.action == "create":
            new = await create_token(
                store, args.role, study_uid=args.study, patient_id=args.patient,
                expires_in=parse_duration(args.expires) if args.expires else None, label=args.label,
            )
            print(new.token)
            print(f"id {new.row.token_id}: shown once, store it now", file=sys.stderr)
            return 0
        if args.action == "revoke":
            if await store.revoke(args.token_id):
                print(f"revoked {args.token_id}")
                return 0
            print(f"no active token {args.token_id}", file=sys.stderr)
            return 1

        def when(t: float | None) -> str:
            return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M") if t else "-"

        for r in await store.all():
            state = "revoked" if r.revoked_at else ("expired" if not r.usable(time.time()) else "active")
            scope = f"study={r.study_uid}" if r.study_uid else (f"patient={r.patient_id}" if r.patient_id else "all")
            print(f"{r.token_id}\t{r.role}\t{scope}\t{state}\texpires {when(r.expires_at)}\t{r.label}")
        return 0
    finally:
        await store.close()


def _security_command(args: argparse.Namespace) -> int:
    import getpass

    import orjson

    from server.errors import LightboxError
    from server.services import audit
    from server.services.tokens import add_user

    settings = settings_from_env(data=args.data)
    try:
        if args.command == "token":
            return asyncio.run(_token(settings, args))
        if args.command == "user":
            path = Path(args.users_file or settings.auth_users_file or settings.data / "users")
            password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass()
            add_user(path, args.name, args.role, password)
            print(f"{args.name} ({args.role}) written to {path}")
            return 0
        since = audit.parse_since(args.since) if args.since else None
        for rec in audit.query(settings.audit_path, study=args.study, user=args.user, since=since,
                               action=args.action, denied=args.denied):
            sys.stdout.write(orjson.dumps(rec).decode() + "\n")
        return 0
    except LightboxError as exc:
        print(f"lightbox: {exc.message}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lightbox", description="DICOMweb server and viewer")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP (and optional DIMSE) server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--data", type=Path)
    serve.add_argument("--dimse-port", type=int)
    serve.add_argument("--aet")
    serve.add_argument("--dimse-allowed-aets", help="calling AE titles allowed, comma-separated")
    serve.add_argument("--dimse-known-aes", help="C-MOVE destinations: AET@host:port,... or a JSON file")
    serve.add_argument("--dimse-max-associations", type=int)
    serve.add_argument("--base-url")
    serve.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without auth")
    serve.add_argument("--auth", help="authentication methods: token,basic,oidc (default: none)")
    serve.add_argument("--users-file", help="HTTP Basic users file (lightbox user add)")
    serve.add_argument("--tls-cert", help="PEM certificate chain: terminate TLS here")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument("--ohif", nargs="?", const=str(Path(__file__).resolve().parent.parent / "ohif-dist"),
                       metavar="DIR", help="serve the OHIF Viewer (installed by `make ohif`) at /ohif/")
    _security_parsers(sub)
    imp = sub.add_parser("import", help="import DICOM files or folders into the store")
    imp.add_argument("paths", nargs="+")
    imp.add_argument("--data", type=Path)
    imp.add_argument("--jobs", type=int, default=4)
    imp.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command in {"token", "user", "audit"}:
        return _security_command(args)
    settings = settings_from_env(data=args.data)
    return asyncio.run(_import(settings, args.paths, args.jobs, args.quiet))


if __name__ == "__main__":
    sys.exit(main())
