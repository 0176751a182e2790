"""API tokens table: only SHA-256 hashes of the secrets are stored.

A table of its own (own MetaData, ``create_all`` at start) beside the index schema, in the
same database, so tokens follow the index to PostgreSQL without a migration of the index.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from server.index import schema as S

metadata = sa.MetaData()

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("token_id", sa.String(32), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("study_uid", sa.String(64), nullable=True),
    sa.Column("patient_id", sa.Text, nullable=True),
    sa.Column("label", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
)


@dataclass(frozen=True)
class TokenRow:
    token_id: str
    role: str
    study_uid: str | None
    patient_id: str | None
    label: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


def _row(r: Any) -> TokenRow:
    return TokenRow(
        r.token_id, r.role, r.study_uid, r.patient_id, r.label, r.created_at, r.expires_at, r.revoked_at
    )


class TokenStore:
    def __init__(self, url: str) -> None:
        # SQLite: wait for the index's writers instead of failing with "database is locked".
        args = {"timeout": 30} if url.startswith("sqlite") else {}
        self.engine: AsyncEngine = create_async_engine(url, connect_args=args)

    async def start(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def close(self) -> None:
        await self.engine.dispose()

    async def add(self, row: TokenRow, token_hash: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(api_tokens.insert().values(
                token_id=row.token_id, token_hash=token_hash, role=row.role, study_uid=row.study_uid,
                patient_id=row.patient_id, label=row.label, created_at=row.created_at,
                expires_at=row.expires_at, revoked_at=None,
            ))

    async def by_hash(self, token_hash: str) -> TokenRow | None:
        async with self.engine.connect() as conn:
            r = (await conn.execute(sa.select(api_tokens).where(api_tokens.c.token_hash == token_hash))).first()
            return _row(r) if r else None

    async def revoke(self, token_id: str) -> bool:
        async with self.engine.begin() as conn:
            done = await conn.execute(
                api_tokens.update()
                .where(api_tokens.c.token_id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
            return bool(done.rowcount)

    async def all(self) -> list[TokenRow]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(api_tokens).order_by(api_tokens.c.created_at))
            return [_row(r) for r in rows]

    async def patient_of_study(self, study_uid: str) -> str | None:
        """The Patient ID of a stored study (for patient-scoped tokens); None if unknown."""
        async with self.engine.connect() as conn:
            try:
                r = (await conn.execute(
                    sa.select(S.patients.c.patient_id)
                    .join(S.studies, S.studies.c.patient_pk == S.patients.c.pk)
                    .where(S.studies.c.study_uid == study_uid)
                )).first()
            except sa.exc.OperationalError:  # index not created yet: nothing is stored
                return None
            return str(r[0]) if r else None
