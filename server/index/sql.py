"""The IndexStore on SQLAlchemy Core: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.sql.compiler import SQLCompiler

from server.dicom.header import InstanceRecord, normalize_name
from server.errors import Conflict, NotFound
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


def _sync_url(url: str) -> str:
    """The same database through its synchronous driver (the write path's)."""
    return url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")


# ---------------------------------------------------------------- the ingest statements
# Built once: SQLAlchemy then reuses their compiled form, where a statement built per call
# (``.where(col == value)``, ``.values(**row)``) costs a cache-key walk every time.

_bp = sa.bindparam
_I = S.instances
_INSTANCE_OF_SOP = sa.select(_I.c.pk, _I.c.blob_key, _I.c.series_pk, _I.c.study_pk, _I.c.sha256).where(
    _I.c.sop_uid == _bp("sop")
)
_BLOB_USED = sa.select(_I.c.pk).where(_I.c.blob_key == _bp("key")).limit(1)
_PENDING_OF = sa.select(S.pending_blobs.c.blob_key).where(S.pending_blobs.c.blob_key == _bp("key"))
_PENDING_DROP = S.pending_blobs.delete().where(S.pending_blobs.c.blob_key == _bp("key"))
_PATIENT_PK = sa.select(S.patients.c.pk).where(S.patients.c.patient_id == _bp("pid"),
                                               S.patients.c.issuer == _bp("issuer"))
_STUDY_PK = sa.select(S.studies.c.pk).where(S.studies.c.study_uid == _bp("uid"))
_SERIES_PK = sa.select(S.series.c.pk).where(S.series.c.series_uid == _bp("uid"))
# Updates take their SET columns from the parameters; the row is picked by ``b_pk``.
_PATIENT_UPDATE = S.patients.update().where(S.patients.c.pk == _bp("b_pk"))
_STUDY_UPDATE = S.studies.update().where(S.studies.c.pk == _bp("b_pk"))
_SERIES_UPDATE = S.series.update().where(S.series.c.pk == _bp("b_pk"))
_INSTANCE_INSERT = _I.insert()
_INSTANCE_UPDATE = _I.update().where(_I.c.pk == _bp("b_pk"))
_SERIES_BUMP = (S.series.update().where(S.series.c.pk == _bp("b_pk"))
                .values(num_instances=S.series.c.num_instances + 1, updated_at=_bp("now")))
_STUDY_BUMP = (S.studies.update().where(S.studies.c.pk == _bp("b_pk"))
               .values(num_instances=S.studies.c.num_instances + 1, updated_at=_bp("now")))


class _Prepared:
    """A prebuilt statement compiled once for the write engine's dialect and run on the DBAPI
    cursor of the open transaction: SQLAlchemy's own execute costs ~40 µs a statement (SQLite's
    ~3 µs), most of an ingest commit. Values must already be the driver's types (str, int,
    float, bytes, None): no bind processors run."""

    __slots__ = ("defaults", "order", "sql")

    def __init__(self, stmt: sa.ClauseElement, dialect: Dialect, keys: Sequence[str] | None = None) -> None:
        columns = list(keys) if keys is not None else None
        compiled = cast(SQLCompiler, stmt.compile(dialect=dialect, column_keys=columns))
        self.sql = compiled.string
        self.defaults = dict(compiled.params)  # e.g. LIMIT's value, a bump's increment
        self.order = tuple(compiled.positiontup or ()) if compiled.positional else None

    def run(self, cursor: DBAPICursor, values: dict[str, Any]) -> DBAPICursor:
        params = {**self.defaults, **values}
        cursor.execute(self.sql, tuple(params[n] for n in self.order) if self.order is not None else params)
        return cursor

    def first(self, cursor: DBAPICursor, values: dict[str, Any]) -> Any:
        return self.run(cursor, values).fetchone()


_INSTANCE_KEYS = (
    "sop_uid", "series_pk", "study_pk", "sop_class_uid", "instance_number", "rows", "columns",
    "bits_allocated", "number_of_frames", "transfer_syntax", "blob_key", "file_size", "sha256",
    "pixel_tag", "pixel_offset", "pixel_length", "frames", "descriptor", "instance_json", "metadata",
    "created_at",
)  # fmt: skip


class _IngestSql:
    """The statements of the common ingest path (a new slice of a known series), prepared."""

    def __init__(self, dialect: Dialect) -> None:
        self.instance_of_sop = _Prepared(_INSTANCE_OF_SOP, dialect)
        self.patient_pk = _Prepared(_PATIENT_PK, dialect)
        self.study_pk = _Prepared(_STUDY_PK, dialect)
        self.series_pk = _Prepared(_SERIES_PK, dialect)
        self.instance_insert = _Prepared(_INSTANCE_INSERT, dialect, _INSTANCE_KEYS)
        self.series_bump = _Prepared(_SERIES_BUMP, dialect)
        self.study_bump = _Prepared(_STUDY_BUMP, dialect)
        self.pending_drop = _Prepared(_PENDING_DROP, dialect)
        # One statement, so one implicit transaction: the cheapest durable pending mark.
        self.pending_add: _Prepared | None = None
        if dialect.name == "sqlite":
            self.pending_add = _Prepared(sqlite.insert(S.pending_blobs).on_conflict_do_nothing(), dialect)
        elif dialect.name == "postgresql":
            self.pending_add = _Prepared(postgresql.insert(S.pending_blobs).on_conflict_do_nothing(), dialect)


def _mark_pending(conn: Connection, blob_key: str) -> None:
    if conn.execute(_PENDING_OF, {"key": blob_key}).first() is None:
        conn.execute(S.pending_blobs.insert(), {"blob_key": blob_key, "created_at": time.time(), "owner": OWNER})


def _drop_pending(conn: Connection, blob_key: str) -> None:
    conn.execute(_PENDING_DROP, {"key": blob_key})


def _upsert(conn: Connection, cursor: DBAPICursor, find: _Prepared, update: sa.Update, table: sa.Table,
            refresh: bool, where: dict[str, Any], identity: dict[str, Any],
            values: Callable[[], dict[str, Any]]) -> tuple[int, bool]:
    """(pk, created) of the row ``find`` selects with ``where``; created from ``identity`` and
    ``values()`` when absent, updated with ``values()`` when present and ``refresh``."""
    row = find.first(cursor, where)
    if row is not None:
        if refresh:
            conn.execute(update, {"b_pk": row[0], **values()})
        return int(row[0]), False
    result = conn.execute(table.insert(), {**identity, **values()})
    return int(result.inserted_primary_key[0]), True  # type: ignore[index]


def _patient_values(r: InstanceRecord) -> dict[str, Any]:
    return {
        "patient_name": r.patient_name,
        "name_ci": r.patient_name.upper(),
        "name_norm": normalize_name(r.patient_name),
        "birth_date": r.patient_birth_date,
        "sex": r.patient_sex,
    }


def _study_values(r: InstanceRecord, patient_pk: int, now: float) -> dict[str, Any]:
    return {
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


def _series_values(r: InstanceRecord, study_pk: int, now: float) -> dict[str, Any]:
    return {
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


def _instance_values(r: InstanceRecord, facts: BlobFacts, series_pk: int, study_pk: int,
                     now: float) -> dict[str, Any]:
    return {
        "series_pk": series_pk,
        "study_pk": study_pk,
        "sop_class_uid": r.sop_class_uid,
        "instance_number": r.instance_number,
        "rows": r.rows,
        "columns": r.columns,
        "bits_allocated": r.bits_allocated,
        "number_of_frames": r.number_of_frames,
        "transfer_syntax": r.transfer_syntax,
        "blob_key": facts.blob_key,
        "file_size": facts.file_size,
        "sha256": facts.sha256,
        "pixel_tag": r.pixel_tag,
        "pixel_offset": facts.pixel_offset,
        "pixel_length": facts.pixel_length,
        "frames": orjson.dumps(facts.frames).decode() if facts.frames is not None else None,
        "descriptor": orjson.dumps(facts.descriptor).decode() if facts.descriptor else None,
        "instance_json": r.instance_json,
        "metadata": r.metadata_json,
        "created_at": now,
    }


class SqlIndex:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.engine = create_async_engine(url, pool_pre_ping=not self.is_sqlite)
        # Writes run as one block on a plain (synchronous) connection in a worker thread:
        # through the async driver each statement is a loop round trip, ~1 ms a statement on
        # SQLite. Ingest calls the *_sync methods straight from its own worker thread.
        self.sync_engine = sa.create_engine(
            _sync_url(url), pool_pre_ping=not self.is_sqlite,
            connect_args={"check_same_thread": False} if self.is_sqlite else {},
        )
        if self.is_sqlite:
            _sqlite_pragmas(self.engine.sync_engine)
            _sqlite_pragmas(self.sync_engine)
        # One writer at a time in this process (the database serialises across processes):
        # waiting here is cheaper than SQLite's busy-retry loop.
        self._write_lock = threading.Lock()
        self._sql = _IngestSql(self.sync_engine.dialect)

    async def start(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(S.migrate)

    async def close(self) -> None:
        await self.engine.dispose()
        self.sync_engine.dispose()

    async def healthy(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    def write_sync(self, block: Callable[..., T], *args: Any) -> T:
        """Run ``block(conn, *args)`` in one write transaction (call from a worker thread)."""
        with self._write_lock, self.sync_engine.connect() as conn:
            conn = conn.execution_options(immediate=True)
            with conn.begin():
                return block(conn, *args)

    async def _write_block(self, block: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(self.write_sync, block, *args)

    def _read_sync(self, query: sa.Select[Any], params: dict[str, Any]) -> Any:
        with self.sync_engine.connect() as conn:
            return conn.execute(query, params).first()

    # ---------------------------------------------------------------- ingest

    def mark_pending_sync(self, blob_key: str) -> None:
        """Note a blob about to be written, before it is: a crash then leaves it findable."""
        add = self._sql.pending_add
        if add is None:
            self.write_sync(_mark_pending, blob_key)
            return
        # One INSERT … ON CONFLICT DO NOTHING on the bare connection is its own transaction:
        # ~20 µs, where a SQLAlchemy block costs ~150 µs and many more GIL round trips.
        with self._write_lock:
            raw = self.sync_engine.raw_connection()
            try:
                add.run(raw.cursor(), {"blob_key": blob_key, "created_at": time.time(), "owner": OWNER})
                raw.commit()
            finally:
                raw.close()

    def drop_pending_sync(self, blob_key: str) -> None:
        self.write_sync(_drop_pending, blob_key)

    async def drop_pending(self, blob_key: str) -> None:
        await self._write_block(_drop_pending, blob_key)

    async def pending_blobs(self) -> list[str]:
        """Pending blobs no live process is still writing (a crash's leftovers)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(S.pending_blobs.c.blob_key, S.pending_blobs.c.owner, S.pending_blobs.c.created_at)
            )
            return [key for key, owner, created in rows if _abandoned(owner, created)]

    def blob_in_use_sync(self, blob_key: str) -> bool:
        return self._read_sync(_BLOB_USED, {"key": blob_key}) is not None

    async def blob_in_use(self, blob_key: str) -> bool:
        return await asyncio.to_thread(self.blob_in_use_sync, blob_key)

    def commit_instance_sync(self, record: InstanceRecord, facts: BlobFacts, replace: bool = True,
                             before_commit: Callable[[], None] | None = None) -> CommitResult:
        def commit_last(conn: Connection) -> CommitResult:
            result = self._commit(conn, record, facts, replace)
            if before_commit is not None:
                before_commit()  # inside the transaction: if it raises, nothing is committed
            return result

        return self.write_sync(commit_last)

    async def commit_instance(self, record: InstanceRecord, facts: BlobFacts, replace: bool = True) -> CommitResult:
        return await self._write_block(self._commit, record, facts, replace)

    def _commit(self, conn: Connection, record: InstanceRecord, facts: BlobFacts, replace: bool) -> CommitResult:
        now = time.time()
        q = self._sql
        cursor = conn.connection.cursor()  # the hot statements run here, inside conn's transaction
        old = q.instance_of_sop.first(cursor, {"sop": record.sop_uid})
        if old is not None and old[4] == facts.sha256:  # the same bytes again: nothing changes
            q.pending_drop.run(cursor, {"key": facts.blob_key})
            return CommitResult(created=False, replaced_blob=None, unchanged=True)
        if old is not None and not replace:
            raise Conflict(f"SOP Instance {record.sop_uid} is already stored with different content",
                           dicom_status=0x0111)
        # A new instance of a known study keeps the study's attributes as first stored; a
        # replaced instance brings its own (the sender is correcting something).
        refresh = old is not None
        patient_pk, _ = _upsert(conn, cursor, q.patient_pk, _PATIENT_UPDATE, S.patients, refresh,
                                {"pid": record.patient_id, "issuer": record.issuer_of_patient_id},
                                {"patient_id": record.patient_id, "issuer": record.issuer_of_patient_id},
                                lambda: _patient_values(record))
        study_pk, _ = _upsert(conn, cursor, q.study_pk, _STUDY_UPDATE, S.studies, refresh,
                              {"uid": record.study_uid}, {"study_uid": record.study_uid},
                              lambda: _study_values(record, patient_pk, now))
        series_pk, series_created = _upsert(conn, cursor, q.series_pk, _SERIES_UPDATE, S.series, refresh,
                                            {"uid": record.series_uid}, {"series_uid": record.series_uid},
                                            lambda: _series_values(record, study_pk, now))
        values = _instance_values(record, facts, series_pk, study_pk, now)
        replaced: str | None = None
        if old is None:
            q.instance_insert.run(cursor, {"sop_uid": record.sop_uid, **values})
        else:
            conn.execute(_INSTANCE_UPDATE, {"b_pk": old[0], **values})
            if old[1] != facts.blob_key:
                replaced = old[1]
                _mark_pending(conn, old[1])
        if old is None and not series_created:
            # The common case, one more slice of a known series: count it in place. Writers
            # are serialised (BEGIN IMMEDIATE), so the increments stay exact.
            q.series_bump.run(cursor, {"b_pk": series_pk, "now": now})
            q.study_bump.run(cursor, {"b_pk": study_pk, "now": now})
        else:
            self._refresh_counts(conn, series_pk, study_pk)
        if old is not None and (old[2], old[3]) != (series_pk, study_pk):
            self._refresh_counts(conn, old[2], old[3])
        q.pending_drop.run(cursor, {"key": facts.blob_key})
        return CommitResult(created=old is None, replaced_blob=replaced)

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
            _mark_pending(conn, key)
        return keys
