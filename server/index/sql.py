"""The IndexStore on SQLAlchemy Core: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import create_async_engine

from server.dicom.header import InstanceRecord, normalize_name
from server.errors import NotFound
from server.index import schema as S
from server.index.base import BlobFacts, CommitResult, StoredInstance

T = TypeVar("T")
OWNER = f"{socket.gethostname()}:{os.getpid()}"
STALE_ELSEWHERE = 24 * 3600  # a writer on another host is presumed dead after a day


def _abandoned(owner: str, created: float) -> bool:
    host, _, pid = owner.rpartition(":")
    if owner == OWNER:
        return False
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return not owner or time.time() - created > STALE_ELSEWHERE


def _sqlite_pragmas(target: Engine) -> None:
    @event.listens_for(target, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @event.listens_for(target, "begin")
    def _begin(conn: Any) -> None:
        # Writers take the lock up front so two writers never deadlock on an upgrade.
        immediate = conn.get_execution_options().get("immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class SqlIndex:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.engine = create_async_engine(url, pool_pre_ping=not self.is_sqlite)
        # SQLite writes run as one block on a plain (synchronous) connection in a worker
        # thread: through aiosqlite each statement is a thread hop, ~1 ms a statement.
        self.sync_engine: Engine | None = None
        if self.is_sqlite:
            _sqlite_pragmas(self.engine.sync_engine)
            self.sync_engine = sa.create_engine(
                url.replace("+aiosqlite", ""), connect_args={"check_same_thread": False}
            )
            _sqlite_pragmas(self.sync_engine)
        # One writer at a time in this process; SQLite serialises across processes.
        self._write_lock = asyncio.Lock()

    async def start(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(S.migrate)

    async def close(self) -> None:
        await self.engine.dispose()
        if self.sync_engine is not None:
            self.sync_engine.dispose()

    async def healthy(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    async def _write_block(self, block: Callable[..., T], *args: Any) -> T:
        """Run ``block(conn, *args)`` in one write transaction, with as few hops as possible."""
        async with self._write_lock:
            if self.sync_engine is not None:
                return await asyncio.to_thread(self._sync_block, self.sync_engine, block, *args)
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(immediate=True)
                async with conn.begin():
                    return await conn.run_sync(block, *args)

    @staticmethod
    def _sync_block(engine: Engine, block: Callable[..., T], *args: Any) -> T:
        with engine.connect() as conn:
            conn = conn.execution_options(immediate=True)
            with conn.begin():
                return block(conn, *args)

    # ---------------------------------------------------------------- ingest

    async def add_pending(self, blob_key: str) -> None:
        await self._write_block(self._mark_pending_sync, blob_key)

    @staticmethod
    def _mark_pending_sync(conn: Connection, blob_key: str) -> None:
        exists = conn.execute(sa.select(S.pending_blobs.c.blob_key).where(S.pending_blobs.c.blob_key == blob_key))
        if exists.first() is None:
            conn.execute(S.pending_blobs.insert().values(blob_key=blob_key, created_at=time.time(), owner=OWNER))

    async def drop_pending(self, blob_key: str) -> None:
        await self._write_block(self._drop_pending_sync, blob_key)

    @staticmethod
    def _drop_pending_sync(conn: Connection, blob_key: str) -> None:
        conn.execute(S.pending_blobs.delete().where(S.pending_blobs.c.blob_key == blob_key))

    async def pending_blobs(self) -> list[str]:
        """Pending blobs no live process is still writing (a crash's leftovers)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(S.pending_blobs.c.blob_key, S.pending_blobs.c.owner, S.pending_blobs.c.created_at)
            )
            return [key for key, owner, created in rows if _abandoned(owner, created)]

    async def blob_in_use(self, blob_key: str) -> bool:
        async with self.engine.connect() as conn:
            row = await conn.execute(
                sa.select(S.instances.c.pk).where(S.instances.c.blob_key == blob_key).limit(1)
            )
            return row.first() is not None

    async def instance_sha256(self, sop_uid: str) -> tuple[str, str] | None:
        query = (
            sa.select(S.instances.c.sha256, S.studies.c.study_uid)
            .join(S.studies, S.studies.c.pk == S.instances.c.study_pk)
            .where(S.instances.c.sop_uid == sop_uid)
        )
        if self.sync_engine is not None:  # one thread hop instead of aiosqlite's several
            row = await asyncio.to_thread(self._sync_first, self.sync_engine, query)
        else:
            async with self.engine.connect() as conn:
                row = (await conn.execute(query)).first()
        return (row[0], row[1]) if row else None

    @staticmethod
    def _sync_first(engine: Engine, query: sa.Select[Any]) -> Any:
        with engine.connect() as conn:
            return conn.execute(query).first()

    async def commit_instance(self, record: InstanceRecord, facts: BlobFacts) -> CommitResult:
        return await self._write_block(self._commit_sync, record, facts)

    def _commit_sync(self, conn: Connection, record: InstanceRecord, facts: BlobFacts) -> CommitResult:
        now = time.time()
        old = (
            conn.execute(
                sa.select(S.instances.c.pk, S.instances.c.blob_key, S.instances.c.series_pk,
                          S.instances.c.study_pk)
                .where(S.instances.c.sop_uid == record.sop_uid)
            )
        ).first()
        # A new instance of a known study keeps the study's attributes as first stored; a
        # replaced instance brings its own (the sender is correcting something).
        refresh = old is not None
        patient_pk, _ = self._upsert_patient(conn, record, refresh)
        study_pk, _ = self._upsert_study(conn, record, patient_pk, now, refresh)
        series_pk, series_created = self._upsert_series(conn, record, study_pk, now, refresh)
        values = {
            "series_pk": series_pk,
            "study_pk": study_pk,
            "sop_class_uid": record.sop_class_uid,
            "instance_number": record.instance_number,
            "rows": record.rows,
            "columns": record.columns,
            "bits_allocated": record.bits_allocated,
            "number_of_frames": record.number_of_frames,
            "transfer_syntax": record.transfer_syntax,
            "blob_key": facts.blob_key,
            "file_size": facts.file_size,
            "sha256": facts.sha256,
            "pixel_tag": record.pixel_tag,
            "pixel_offset": facts.pixel_offset,
            "pixel_length": facts.pixel_length,
            "frames": orjson.dumps(facts.frames).decode() if facts.frames is not None else None,
            "descriptor": orjson.dumps(facts.descriptor).decode() if facts.descriptor else None,
            "instance_json": record.instance_json,
            "metadata": record.metadata_json,
            "created_at": now,
        }
        replaced: str | None = None
        if old is None:
            conn.execute(S.instances.insert().values(sop_uid=record.sop_uid, **values))
        else:
            conn.execute(S.instances.update().where(S.instances.c.pk == old[0]).values(**values))
            if old[1] != facts.blob_key:
                replaced = old[1]
                self._mark_pending_sync(conn, old[1])
        if old is None and not series_created:
            # The common case, one more slice of a known series: count it in place. Writers
            # are serialised (BEGIN IMMEDIATE), so the increments stay exact.
            conn.execute(S.series.update().where(S.series.c.pk == series_pk)
                         .values(num_instances=S.series.c.num_instances + 1, updated_at=now))
            conn.execute(S.studies.update().where(S.studies.c.pk == study_pk)
                         .values(num_instances=S.studies.c.num_instances + 1, updated_at=now))
        else:
            self._refresh_counts(conn, series_pk, study_pk)
        if old is not None and (old[2], old[3]) != (series_pk, study_pk):
            self._refresh_counts(conn, old[2], old[3])
        conn.execute(S.pending_blobs.delete().where(S.pending_blobs.c.blob_key == facts.blob_key))
        return CommitResult(created=old is None, replaced_blob=replaced)

    def _upsert_patient(self, conn: Connection, r: InstanceRecord, refresh: bool) -> tuple[int, bool]:
        values = {
            "patient_name": r.patient_name,
            "name_ci": r.patient_name.upper(),
            "name_norm": normalize_name(r.patient_name),
            "birth_date": r.patient_birth_date,
            "sex": r.patient_sex,
        }
        row = (
            conn.execute(
                sa.select(S.patients.c.pk).where(
                    S.patients.c.patient_id == r.patient_id, S.patients.c.issuer == r.issuer_of_patient_id
                )
            )
        ).first()
        if row is not None:
            if refresh:
                conn.execute(S.patients.update().where(S.patients.c.pk == row[0]).values(**values))
            return int(row[0]), False
        result = conn.execute(
            S.patients.insert().values(patient_id=r.patient_id, issuer=r.issuer_of_patient_id, **values)
        )
        return int(result.inserted_primary_key[0]), True  # type: ignore[index]

    def _upsert_study(
        self, conn: Connection, r: InstanceRecord, patient_pk: int, now: float, refresh: bool
    ) -> tuple[int, bool]:
        values = {
            "patient_pk": patient_pk,
            "study_date": r.study_date,
            "study_time": r.study_time,
            "accession": r.accession_number,
            "study_id": r.study_id,
            "description": r.study_description,
            "description_ci": r.study_description.upper(),
            "referring_ci": r.referring_physician_name.upper(),
            "study_json": r.study_json,
            "updated_at": now,
        }
        row = (conn.execute(sa.select(S.studies.c.pk).where(S.studies.c.study_uid == r.study_uid))).first()
        if row is not None:
            if refresh:
                conn.execute(S.studies.update().where(S.studies.c.pk == row[0]).values(**values))
            return int(row[0]), False
        result = conn.execute(S.studies.insert().values(study_uid=r.study_uid, **values))
        return int(result.inserted_primary_key[0]), True  # type: ignore[index]

    def _upsert_series(
        self, conn: Connection, r: InstanceRecord, study_pk: int, now: float, refresh: bool
    ) -> tuple[int, bool]:
        values = {
            "study_pk": study_pk,
            "modality": r.modality,
            "series_number": r.series_number,
            "description": r.series_description,
            "description_ci": r.series_description.upper(),
            "series_date": r.series_date,
            "body_part": r.body_part,
            "series_json": r.series_json,
            "updated_at": now,
        }
        row = (conn.execute(sa.select(S.series.c.pk).where(S.series.c.series_uid == r.series_uid))).first()
        if row is not None:
            if refresh:
                conn.execute(S.series.update().where(S.series.c.pk == row[0]).values(**values))
            return int(row[0]), False
        result = conn.execute(S.series.insert().values(series_uid=r.series_uid, **values))
        return int(result.inserted_primary_key[0]), True  # type: ignore[index]

    def _refresh_counts(self, conn: Connection, series_pk: int, study_pk: int) -> None:
        """Recount from the rows themselves: exact under any interleaving of writers."""
        now = time.time()
        n_series_instances = (
            conn.execute(sa.select(sa.func.count()).where(S.instances.c.series_pk == series_pk))
        ).scalar_one()
        if n_series_instances == 0:
            conn.execute(S.series.delete().where(S.series.c.pk == series_pk))
        else:
            conn.execute(
                S.series.update().where(S.series.c.pk == series_pk)
                .values(num_instances=n_series_instances, updated_at=now)
            )
        n_instances = (
            conn.execute(sa.select(sa.func.count()).where(S.instances.c.study_pk == study_pk))
        ).scalar_one()
        conn.execute(S.study_modalities.delete().where(S.study_modalities.c.study_pk == study_pk))
        if n_instances == 0:
            conn.execute(S.studies.delete().where(S.studies.c.pk == study_pk))
            return
        modality_rows = conn.execute(
            sa.select(S.series.c.modality).where(S.series.c.study_pk == study_pk).distinct()
        )
        modalities = sorted({m for (m,) in modality_rows if m})
        if modalities:
            conn.execute(
                S.study_modalities.insert(), [{"study_pk": study_pk, "modality": m} for m in modalities]
            )
        n_series = (
            conn.execute(sa.select(sa.func.count()).where(S.series.c.study_pk == study_pk))
        ).scalar_one()
        conn.execute(
            S.studies.update().where(S.studies.c.pk == study_pk).values(
                num_series=n_series, num_instances=n_instances,
                modalities="\\".join(modalities), updated_at=now,
            )
        )

    # ---------------------------------------------------------------- retrieve

    _INSTANCE_COLUMNS = (
        S.studies.c.study_uid, S.series.c.series_uid, S.instances.c.sop_uid,
        S.instances.c.sop_class_uid, S.instances.c.transfer_syntax, S.instances.c.blob_key,
        S.instances.c.file_size, S.instances.c.sha256, S.instances.c.number_of_frames,
        S.instances.c.instance_number, S.instances.c.pixel_tag, S.instances.c.pixel_offset,
        S.instances.c.pixel_length, S.instances.c.frames, S.instances.c.descriptor,
    )

    @staticmethod
    def _stored(row: Any) -> StoredInstance:
        return StoredInstance(
            study_uid=row[0], series_uid=row[1], sop_uid=row[2], sop_class_uid=row[3],
            transfer_syntax=row[4], blob_key=row[5], file_size=row[6], sha256=row[7],
            number_of_frames=row[8], instance_number=row[9], pixel_tag=row[10],
            pixel_offset=row[11], pixel_length=row[12],
            frames=orjson.loads(row[13]) if row[13] else None,
            descriptor=orjson.loads(row[14]) if row[14] else None,
        )

    def _joined(self, *columns: Any) -> sa.Select[Any]:
        return (
            sa.select(*columns)
            .select_from(S.instances)
            .join(S.series, S.series.c.pk == S.instances.c.series_pk)
            .join(S.studies, S.studies.c.pk == S.instances.c.study_pk)
        )

    @staticmethod
    def _scope(query: sa.Select[Any], study: str, series: str | None, sop: str | None) -> sa.Select[Any]:
        query = query.where(S.studies.c.study_uid == study)
        if series is not None:
            query = query.where(S.series.c.series_uid == series)
        if sop is not None:
            query = query.where(S.instances.c.sop_uid == sop)
        return query

    async def get_instance(self, study: str, series: str | None, sop: str) -> StoredInstance:
        query = self._scope(self._joined(*self._INSTANCE_COLUMNS), study, series, sop)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"instance {sop} not found in study {study}"
                           + (f", series {series}" if series else ""))
        return self._stored(row)

    async def list_instances(self, study: str, series: str | None = None) -> list[StoredInstance]:
        query = self._scope(self._joined(*self._INSTANCE_COLUMNS), study, series, None).order_by(
            S.series.c.series_number, S.series.c.pk, S.instances.c.instance_number, S.instances.c.pk
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        if not rows:
            raise NotFound(f"study {study}" + (f" series {series}" if series else "") + " not found")
        return [self._stored(r) for r in rows]

    async def metadata_docs(self, study: str, series: str | None, sop: str | None) -> list[bytes]:
        query = self._scope(self._joined(S.instances.c.metadata), study, series, sop).order_by(
            S.series.c.series_number, S.series.c.pk, S.instances.c.instance_number, S.instances.c.pk
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        if not rows:
            what = f"instance {sop}" if sop else f"series {series}" if series else f"study {study}"
            raise NotFound(f"{what} not found")
        return [r[0] for r in rows]

    async def level_version(self, study: str, series: str | None, sop: str | None) -> str:
        """A value that changes whenever anything below this level changes (for ETags)."""
        query = self._scope(
            self._joined(sa.func.count(), sa.func.max(S.instances.c.created_at), sa.func.sum(S.instances.c.pk)),
            study, series, sop,
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or not row[0]:
            raise NotFound(f"study {study} not found")
        return f"{row[0]}-{row[1]!r}-{row[2]}"

    # ---------------------------------------------------------------- delete

    async def delete(self, study: str, series: str | None, sop: str | None) -> list[str]:
        query = self._scope(
            self._joined(S.instances.c.pk, S.instances.c.blob_key, S.instances.c.series_pk,
                         S.instances.c.study_pk),
            study, series, sop,
        )
        return await self._write_block(self._delete_sync, query, (study, series, sop))

    def _delete_sync(
        self, conn: Connection, query: sa.Select[Any], what: tuple[str, str | None, str | None]
    ) -> list[str]:
        rows = conn.execute(query).all()
        if not rows:
            study, series, sop = what
            name = f"instance {sop}" if sop else f"series {series}" if series else f"study {study}"
            raise NotFound(f"{name} not found")
        pks = [r[0] for r in rows]
        for start in range(0, len(pks), 500):
            conn.execute(S.instances.delete().where(S.instances.c.pk.in_(pks[start:start + 500])))
        for series_pk, study_pk in sorted({(r[2], r[3]) for r in rows}):
            self._refresh_counts(conn, series_pk, study_pk)
        keys = sorted({r[1] for r in rows})
        for key in keys:
            self._mark_pending_sync(conn, key)
        return keys
