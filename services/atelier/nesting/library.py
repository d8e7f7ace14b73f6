"""The pattern library: imported patterns stored per tenant, graded sizes kept together.

A pattern is stored whole (every piece of every size, as the serialised contract message the
servicer hands in), so a marker or the made-to-measure flow names it by id instead of re-sending
the file. SQLAlchemy Core on the runtime's store (SQLite by default, PostgreSQL when configured).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from atelier.runtime.storage import Migration, Store, create_tables, tenant_column, utcnow

metadata = sa.MetaData()

patterns_table = sa.Table(
    "nesting_patterns",
    metadata,
    tenant_column(),
    sa.Column("pattern_id", sa.String(64), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    # A summary (atelier.nesting.v1.Pattern without pieces) for listing, and the whole pattern.
    sa.Column("summary", sa.LargeBinary, nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "pattern_id"),
    sa.Index("ix_nesting_patterns_tenant_time", "tenant_id", "create_time"),
)

MIGRATIONS = [Migration(1, "pattern library", create_tables(patterns_table))]


@dataclass(frozen=True)
class StoredPattern:
    pattern_id: str
    name: str
    create_time: datetime
    summary: bytes
    content: bytes


class PatternLibrary:
    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate("nesting", MIGRATIONS)

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def add(self, tenant: str, pattern_id: str, name: str, summary: bytes, content: bytes) -> datetime:
        """Stores the pattern; durable (committed) when this returns."""
        now = utcnow()
        with self.store.engine.begin() as conn:
            conn.execute(
                patterns_table.insert().values(
                    tenant_id=tenant,
                    pattern_id=pattern_id,
                    name=name,
                    create_time=now,
                    summary=summary,
                    content=content,
                )
            )
        return now

    def get(self, tenant: str, pattern_id: str) -> StoredPattern | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(
                sa.select(patterns_table).where(
                    patterns_table.c.tenant_id == tenant, patterns_table.c.pattern_id == pattern_id
                )
            ).first()
        if row is None:
            return None
        return StoredPattern(row.pattern_id, row.name, row.create_time, row.summary, row.content)

    def list(self, tenant: str, offset: int, limit: int) -> list[StoredPattern]:
        """Newest first; content left empty (listing does not need the pieces)."""
        t = patterns_table.c
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.pattern_id, t.name, t.create_time, t.summary)
                .where(t.tenant_id == tenant)
                .order_by(t.create_time.desc(), t.pattern_id)
                .offset(offset)
                .limit(limit)
            ).all()
        return [StoredPattern(r.pattern_id, r.name, r.create_time, r.summary, b"") for r in rows]

    def delete(self, tenant: str, pattern_id: str) -> bool:
        with self.store.engine.begin() as conn:
            result = conn.execute(
                patterns_table.delete().where(
                    patterns_table.c.tenant_id == tenant, patterns_table.c.pattern_id == pattern_id
                )
            )
        return bool(result.rowcount)
