"""Storage: SQLAlchemy Core over an embedded SQLite file by default, PostgreSQL when
``ATELIER_DATABASE_URL`` points at one.

Each service owns its tables and migrates them with a simple versioned scheme: a list of
:class:`Migration` steps per component, applied in order inside a transaction and recorded
in ``atelier_schema_versions``. Every table a service stores records in carries a
``tenant_id`` column (see :func:`tenant_column`), so per-retailer isolation needs no migration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

# Seconds to wait for a PostgreSQL connection before the call fails as UNAVAILABLE.
CONNECT_TIMEOUT_S = 5

schema_metadata = sa.MetaData()
schema_versions = sa.Table(
    "atelier_schema_versions",
    schema_metadata,
    sa.Column("component", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.String(256), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)


def tenant_column() -> sa.Column[str]:
    """The tenant id column every stored record carries."""
    return sa.Column("tenant_id", sa.String(64), nullable=False, index=True)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    upgrade: Callable[[Connection], None]


def normalise_url(url: str) -> str:
    """postgres:// and postgresql:// use psycopg 3 (the driver we install)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside one writer (several threads, or a CLI reading a live store);
    # synchronous=FULL makes a committed write survive power loss, so "acknowledged" means durable.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Store:
    """A database connection pool plus the migrations applied to it."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        """``schema``: a PostgreSQL schema to work in (search_path), e.g. one per test."""
        self.url = normalise_url(url)
        self.engine: Engine = self._create_engine(self.url, schema)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @staticmethod
    def _create_engine(url: str, schema: str | None) -> Engine:
        parsed = sa.engine.make_url(url)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
            sa.event.listen(engine, "connect", _on_sqlite_connect)
            return engine
        # A database that stops answering must fail calls (UNAVAILABLE, see runtime.readiness) in
        # seconds, not hang them: bounded connect, TCP keepalives for a peer that vanished, and a
        # bounded wait for a pooled connection.
        connect_args: dict[str, Any] = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        if schema:
            connect_args["options"] = f"-csearch_path={schema}"
        return sa.create_engine(
            url,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=10,
            pool_timeout=CONNECT_TIMEOUT_S * 2,
            connect_args=connect_args,
        )

    def ping(self) -> None:
        """Raises when the database does not answer (readiness checks call this)."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def migrate(self, component: str, migrations: Sequence[Migration]) -> int:
        """Apply the component's pending migrations in order; returns the schema version."""
        versions = [m.version for m in migrations]
        if versions != sorted(set(versions)):
            raise ValueError(f"{component}: migration versions must be unique and increasing, got {versions}")
        for attempt in range(5):
            try:
                schema_metadata.create_all(self.engine, checkfirst=True)
                break
            except sa.exc.OperationalError:  # another process created it at the same moment
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
        with self.engine.begin() as conn:
            applied = set(
                conn.scalars(
                    sa.select(schema_versions.c.version).where(schema_versions.c.component == component)
                )
            )
            for migration in migrations:
                if migration.version in applied:
                    continue
                log.info(
                    "migrating %s to version %d: %s", component, migration.version, migration.description
                )
                migration.upgrade(conn)
                conn.execute(
                    schema_versions.insert().values(
                        component=component,
                        version=migration.version,
                        description=migration.description,
                        applied_at=utcnow(),
                    )
                )
        return max(versions, default=0)

    def schema_version(self, component: str) -> int:
        with self.engine.connect() as conn:
            value = conn.scalar(
                sa.select(sa.func.max(schema_versions.c.version)).where(
                    schema_versions.c.component == component
                )
            )
        return int(value or 0)

    def dispose(self) -> None:
        self.engine.dispose()


def create_tables(*tables: sa.Table) -> Callable[[Connection], None]:
    """A migration step that creates the given tables (and their indexes)."""

    def upgrade(conn: Connection) -> None:
        for table in tables:
            table.create(conn, checkfirst=True)

    return upgrade
