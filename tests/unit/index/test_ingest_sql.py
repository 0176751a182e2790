"""The ingest statements run on the DBAPI cursor: compiled once per dialect, in step with the schema."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from server.index import schema as S
from server.index import sql as Q


def test_the_instance_insert_writes_every_column_the_values_have() -> None:
    facts: Any = type("F", (), {"blob_key": "k", "file_size": 1, "sha256": "k", "pixel_offset": None,
                                "pixel_length": None, "frames": None, "descriptor": None})()
    record: Any = type("R", (), {name: None for name in (
        "sop_class_uid", "instance_number", "rows", "columns", "bits_allocated", "number_of_frames",
        "transfer_syntax", "pixel_tag", "instance_json", "metadata_json")})()
    values = Q._instance_values(record, facts, 1, 2, 0.0)
    assert set(Q._INSTANCE_KEYS) == {"sop_uid", *values}
    assert set(Q._INSTANCE_KEYS) == {c.name for c in S.instances.c} - {"pk"}


def test_statements_compile_for_sqlite_positionally_and_postgresql_by_name() -> None:
    lite = Q._IngestSql(sqlite.dialect())
    assert lite.pending_add is not None and "ON CONFLICT DO NOTHING" in lite.pending_add.sql
    assert lite.instance_insert.order == Q._INSTANCE_KEYS
    assert lite.series_bump.order == ("num_instances_1", "now", "b_pk")
    assert lite.series_bump.defaults["num_instances_1"] == 1
    pg = Q._IngestSql(postgresql.dialect())
    assert pg.pending_add is not None and "ON CONFLICT DO NOTHING" in pg.pending_add.sql
    assert pg.instance_of_sop.order is None and "%(sop)s" in pg.instance_of_sop.sql


def test_prepared_statements_run_on_a_plain_cursor() -> None:
    engine = sa.create_engine("sqlite://")
    S.metadata.create_all(engine)
    statements = Q._IngestSql(engine.dialect)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        assert statements.pending_add is not None
        for _ in range(2):  # a second mark of the same blob is no error
            statements.pending_add.run(cursor, {"blob_key": "k", "created_at": 1.0, "owner": "me"})
        cursor.execute("select blob_key, owner from pending_blobs")
        assert cursor.fetchall() == [("k", "me")]
        statements.pending_drop.run(cursor, {"key": "k"})
        assert statements.instance_of_sop.first(cursor, {"sop": "1.2"}) is None
    finally:
        raw.close()
