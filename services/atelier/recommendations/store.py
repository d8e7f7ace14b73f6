"""The recommendations service's tables and how it reads and writes them (SQLAlchemy Core).

Every table carries ``tenant_id``: one retailer never sees another's catalogue, events or models.
Events are append-only with a monotonically increasing ``seq`` so a model version can record the
last event it saw and serving can fold in exactly the events that came after it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from atelier.runtime.storage import Migration, Store, create_tables, tenant_column, utcnow

metadata = sa.MetaData()

items_table = sa.Table(
    "recs_items",
    metadata,
    tenant_column(),
    sa.Column("item_id", sa.String(128), nullable=False),
    sa.Column("category", sa.String(64), nullable=False),
    sa.Column("colours", sa.Text, nullable=False, default="[]"),
    # Colours extracted from the last photo: JSON list of {name, hex_rgb, fraction}.
    sa.Column("image_colours", sa.Text, nullable=False, default="[]"),
    sa.Column("style", sa.String(128), nullable=False, default=""),
    sa.Column("silhouette", sa.String(128), nullable=False, default=""),
    sa.Column("material", sa.String(128), nullable=False, default=""),
    # Price in major units of `currency`; NULL when the retailer gave none.
    sa.Column("price", sa.Float, nullable=True),
    sa.Column("currency", sa.String(3), nullable=False, default=""),
    sa.Column("sizes_in_stock", sa.Text, nullable=False, default="[]"),
    sa.Column("attributes", sa.Text, nullable=False, default="{}"),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "item_id"),
)

events_table = sa.Table(
    "recs_events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    tenant_column(),
    sa.Column("event_id", sa.String(128), nullable=False),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("item_id", sa.String(128), nullable=False),
    sa.Column("type", sa.SmallInteger, nullable=False),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("basket_id", sa.String(128), nullable=False, default=""),
    # Units bought or returned (always positive; the type says which way) and the amount paid
    # for them in major units (NULL when the retailer gave none). Added by migration 2.
    sa.Column("quantity", sa.Float, nullable=False, default=1.0, server_default="1"),
    sa.Column("value", sa.Float, nullable=True),
    sa.UniqueConstraint("tenant_id", "event_id", name="uq_recs_events_tenant_event"),
    sa.Index("ix_recs_events_tenant_seq", "tenant_id", "seq"),
)

users_table = sa.Table(
    "recs_users",
    metadata,
    tenant_column(),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("segment", sa.String(128), nullable=False, default=""),
    sa.PrimaryKeyConstraint("tenant_id", "user_id"),
)

versions_table = sa.Table(
    "recs_model_versions",
    metadata,
    tenant_column(),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("algorithm", sa.String(16), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("users", sa.Integer, nullable=False),
    sa.Column("items", sa.Integer, nullable=False),
    sa.Column("interactions", sa.BigInteger, nullable=False),
    sa.Column("factors", sa.Integer, nullable=False),
    sa.Column("train_seconds", sa.Float, nullable=False),
    # The last events.seq the model saw; later events are folded in at serving time.
    sa.Column("max_event_seq", sa.BigInteger, nullable=False),
    sa.Column("params", sa.Text, nullable=False, default="{}"),
    sa.Column("active", sa.Boolean, nullable=False, default=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "version"),
)

settings_table = sa.Table(
    "recs_tenant_settings",
    metadata,
    tenant_column(),
    # A PurchasedPolicy name ("include", "exclude", "exclude_unless_rebought"); see engine.py.
    sa.Column("purchased_policy", sa.String(32), nullable=False),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id"),
)


def _add_event_quantity(conn: Connection) -> None:
    # Databases created before migration 2 lack the columns; new ones got them from migration 1.
    have = {c["name"] for c in sa.inspect(conn).get_columns("recs_events")}
    if "quantity" not in have:
        conn.execute(sa.text("ALTER TABLE recs_events ADD COLUMN quantity FLOAT NOT NULL DEFAULT 1"))
    if "value" not in have:
        conn.execute(sa.text("ALTER TABLE recs_events ADD COLUMN value FLOAT"))


def _migration_2(conn: Connection) -> None:
    _add_event_quantity(conn)
    create_tables(settings_table)(conn)


MIGRATIONS = [
    Migration(
        1,
        "create recommendations tables",
        create_tables(items_table, events_table, users_table, versions_table),
    ),
    Migration(2, "event quantity and value; per-tenant settings", _migration_2),
]


class EventType(IntEnum):
    VIEW = 1
    ADD_TO_CART = 2
    PURCHASE = 3
    RETURN = 4


@dataclass(frozen=True)
class DominantColour:
    name: str
    hex_rgb: str
    fraction: float


@dataclass
class CatalogItem:
    item_id: str
    category: str
    colours: list[str] = field(default_factory=list)
    style: str = ""
    silhouette: str = ""
    material: str = ""
    price: float | None = None  # major units of currency
    currency: str = ""
    sizes_in_stock: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    image_colours: list[DominantColour] = field(default_factory=list)
    # True when this upsert carried a photo (so image_colours replaces the stored ones).
    had_image: bool = False

    @property
    def all_colours(self) -> set[str]:
        return set(self.colours) | {c.name for c in self.image_colours}


@dataclass(frozen=True)
class Event:
    event_id: str
    user_id: str
    item_id: str
    type: EventType
    time_utc: datetime
    basket_id: str = ""
    segment: str = ""
    quantity: float = 1.0  # units, > 0; a return says "quantity units came back"
    value: float | None = None  # amount paid for those units (major units), None if unknown


@dataclass
class RecordResult:
    accepted: list[Event]
    duplicates: int
    unknown_item_event_ids: list[str]


@dataclass
class EventArrays:
    """Events as columns (what training and fold-in consume)."""

    seq: np.ndarray  # int64
    user_ids: np.ndarray  # object (str)
    item_ids: np.ndarray  # object (str)
    types: np.ndarray  # int8, EventType values
    times_s: np.ndarray  # float64, seconds since the epoch
    basket_ids: np.ndarray  # object (str)
    quantities: np.ndarray | None = None  # float32 units (> 0); None means 1 each
    values: np.ndarray | None = None  # float64 amount paid, NaN where unknown; None means unknown

    def __post_init__(self) -> None:
        if self.quantities is None:
            self.quantities = np.ones(len(self.seq), np.float32)
        if self.values is None:
            self.values = np.full(len(self.seq), np.nan)

    def __len__(self) -> int:
        return len(self.seq)

    def subset(self, mask: np.ndarray) -> EventArrays:
        assert self.quantities is not None and self.values is not None
        return EventArrays(
            self.seq[mask],
            self.user_ids[mask],
            self.item_ids[mask],
            self.types[mask],
            self.times_s[mask],
            self.basket_ids[mask],
            self.quantities[mask],
            self.values[mask],
        )

    @classmethod
    def empty(cls) -> EventArrays:
        return cls(
            np.zeros(0, np.int64),
            np.zeros(0, object),
            np.zeros(0, object),
            np.zeros(0, np.int8),
            np.zeros(0, np.float64),
            np.zeros(0, object),
        )

    @classmethod
    def from_events(cls, events: Sequence[Event], seq_start: int = 0) -> EventArrays:
        return cls(
            np.arange(seq_start, seq_start + len(events), dtype=np.int64),
            np.array([e.user_id for e in events], dtype=object),
            np.array([e.item_id for e in events], dtype=object),
            np.array([int(e.type) for e in events], dtype=np.int8),
            np.array([e.time_utc.timestamp() for e in events], dtype=np.float64),
            np.array([e.basket_id for e in events], dtype=object),
            np.array([e.quantity for e in events], dtype=np.float32),
            np.array([np.nan if e.value is None else e.value for e in events], dtype=np.float64),
        )


def _insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT (for ON CONFLICT clauses, which SQLite and PostgreSQL share)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def _aware(value: datetime) -> datetime:
    # SQLite gives naive datetimes back; everything we store is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class RecsStore:
    """Data access for one service process (all tenants)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate("recommendations", MIGRATIONS)

    @property
    def engine(self) -> sa.Engine:
        return self.store.engine

    # -- catalogue --------------------------------------------------------------------------

    def upsert_items(self, tenant: str, items: Sequence[CatalogItem]) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            for with_image in (True, False):
                rows = [self._item_row(tenant, it, now) for it in items if it.had_image == with_image]
                if not rows:
                    continue
                stmt = _insert(conn, items_table)
                update_cols = [c for c in rows[0] if c not in ("tenant_id", "item_id")]
                if not with_image:  # keep the colours of an earlier photo
                    update_cols.remove("image_colours")
                stmt = stmt.on_conflict_do_update(
                    index_elements=["tenant_id", "item_id"],
                    set_={c: stmt.excluded[c] for c in update_cols},
                )
                conn.execute(stmt, rows)

    @staticmethod
    def _item_row(tenant: str, item: CatalogItem, now: datetime) -> dict[str, Any]:
        return {
            "tenant_id": tenant,
            "item_id": item.item_id,
            "category": item.category,
            "colours": json.dumps(item.colours),
            "style": item.style,
            "silhouette": item.silhouette,
            "material": item.material,
            "price": item.price,
            "currency": item.currency,
            "sizes_in_stock": json.dumps(item.sizes_in_stock),
            "attributes": json.dumps(item.attributes),
            "image_colours": json.dumps([c.__dict__ for c in item.image_colours]),
            "update_time": now,
        }

    @staticmethod
    def _item_from_row(row: Any) -> CatalogItem:
        return CatalogItem(
            item_id=row.item_id,
            category=row.category,
            colours=json.loads(row.colours),
            style=row.style,
            silhouette=row.silhouette,
            material=row.material,
            price=row.price,
            currency=row.currency,
            sizes_in_stock=json.loads(row.sizes_in_stock),
            attributes=json.loads(row.attributes),
            image_colours=[DominantColour(**c) for c in json.loads(row.image_colours)],
        )

    def get_item(self, tenant: str, item_id: str) -> CatalogItem | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                items_table.select()
                .where(items_table.c.tenant_id == tenant)
                .where(items_table.c.item_id == item_id)
            ).first()
        return None if row is None else self._item_from_row(row)

    def load_items(self, tenant: str) -> list[CatalogItem]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                items_table.select().where(items_table.c.tenant_id == tenant).order_by(items_table.c.item_id)
            ).all()
        return [self._item_from_row(r) for r in rows]

    def known_item_ids(self, tenant: str, item_ids: Iterable[str]) -> set[str]:
        wanted = list(set(item_ids))
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                found.update(
                    conn.scalars(
                        sa.select(items_table.c.item_id)
                        .where(items_table.c.tenant_id == tenant)
                        .where(items_table.c.item_id.in_(chunk))
                    )
                )
        return found

    def tenants(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(
                set(conn.scalars(sa.select(items_table.c.tenant_id).distinct()))
                | set(conn.scalars(sa.select(versions_table.c.tenant_id).distinct()))
            )

    # -- events -----------------------------------------------------------------------------

    def record_events(self, tenant: str, events: Sequence[Event]) -> RecordResult:
        """Commit new events (ignoring ids already stored) and remember users' segments."""
        # The same id twice in one request: the first wins, like a retry would.
        unique: dict[str, Event] = {}
        for event in events:
            unique.setdefault(event.event_id, event)
        duplicates = len(events) - len(unique)
        known_items = self.known_item_ids(tenant, (e.item_id for e in unique.values()))
        accepted: list[Event] = []
        with self.engine.begin() as conn:
            ids = list(unique)
            inserted: set[str] = set()
            for start in range(0, len(ids), 500):
                chunk = [unique[i] for i in ids[start : start + 500]]
                stmt = (
                    _insert(conn, events_table)
                    .on_conflict_do_nothing(index_elements=["tenant_id", "event_id"])
                    .returning(events_table.c.event_id)
                )
                rows = [
                    {
                        "tenant_id": tenant,
                        "event_id": e.event_id,
                        "user_id": e.user_id,
                        "item_id": e.item_id,
                        "type": int(e.type),
                        "time": e.time_utc,
                        "basket_id": e.basket_id,
                        "quantity": e.quantity,
                        "value": e.value,
                    }
                    for e in chunk
                ]
                inserted.update(conn.scalars(stmt, rows))
            accepted = [unique[i] for i in ids if i in inserted]
            duplicates += len(unique) - len(accepted)
            segments = {e.user_id: e.segment for e in accepted if e.segment}
            if segments:
                stmt = _insert(conn, users_table)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["tenant_id", "user_id"], set_={"segment": stmt.excluded.segment}
                )
                conn.execute(
                    stmt, [{"tenant_id": tenant, "user_id": u, "segment": s} for u, s in segments.items()]
                )
        unknown = [e.event_id for e in accepted if e.item_id not in known_items]
        return RecordResult(accepted=accepted, duplicates=duplicates, unknown_item_event_ids=unknown)

    def load_events(self, tenant: str, after_seq: int = 0, upto_seq: int | None = None) -> EventArrays:
        query = (
            sa.select(
                events_table.c.seq,
                events_table.c.user_id,
                events_table.c.item_id,
                events_table.c.type,
                events_table.c.time,
                events_table.c.basket_id,
                events_table.c.quantity,
                events_table.c.value,
            )
            .where(events_table.c.tenant_id == tenant)
            .where(events_table.c.seq > after_seq)
            .order_by(events_table.c.seq)
        )
        if upto_seq is not None:
            query = query.where(events_table.c.seq <= upto_seq)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            return EventArrays.empty()
        seq, users, items, types, times, baskets, quantities, values = zip(*rows, strict=True)
        return EventArrays(
            np.asarray(seq, dtype=np.int64),
            np.asarray(users, dtype=object),
            np.asarray(items, dtype=object),
            np.asarray(types, dtype=np.int8),
            np.array([_aware(t).timestamp() for t in times]),
            np.asarray(baskets, dtype=object),
            np.asarray(quantities, dtype=np.float32),
            np.array([np.nan if v is None else v for v in values], dtype=np.float64),
        )

    def max_event_seq(self, tenant: str) -> int:
        with self.engine.connect() as conn:
            value = conn.scalar(
                sa.select(sa.func.max(events_table.c.seq)).where(events_table.c.tenant_id == tenant)
            )
        return int(value or 0)

    def segments(self, tenant: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(users_table.c.user_id, users_table.c.segment).where(
                    users_table.c.tenant_id == tenant
                )
            ).all()
        return {u: s for u, s in rows}

    # -- model versions ---------------------------------------------------------------------

    def add_version(self, tenant: str, values: dict[str, Any]) -> int:
        """Insert a (not yet active) version, numbered one past the newest."""
        for _attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    newest = conn.scalar(
                        sa.select(sa.func.max(versions_table.c.version)).where(
                            versions_table.c.tenant_id == tenant
                        )
                    )
                    version = int(newest or 0) + 1
                    conn.execute(
                        versions_table.insert().values(
                            tenant_id=tenant, version=version, active=False, create_time=utcnow(), **values
                        )
                    )
                return version
            except sa.exc.IntegrityError:  # two trainings numbered at once: take the next number
                continue
        raise RuntimeError("could not number a new model version")

    def set_path(self, tenant: str, version: int, path: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                versions_table.update()
                .where(versions_table.c.tenant_id == tenant)
                .where(versions_table.c.version == version)
                .values(path=path)
            )

    def activate(self, tenant: str, version: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                versions_table.update()
                .where(versions_table.c.tenant_id == tenant)
                .values(active=versions_table.c.version == version)
            )

    def versions(self, tenant: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    versions_table.select()
                    .where(versions_table.c.tenant_id == tenant)
                    .order_by(versions_table.c.version.desc())
                )
                .mappings()
                .all()
            )
        return [{**r, "create_time": _aware(r["create_time"])} for r in rows]

    # -- settings ---------------------------------------------------------------------------

    def purchased_policy(self, tenant: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.scalar(
                sa.select(settings_table.c.purchased_policy).where(settings_table.c.tenant_id == tenant)
            )

    def set_purchased_policy(self, tenant: str, policy: str) -> None:
        with self.engine.begin() as conn:
            stmt = _insert(conn, settings_table)
            stmt = stmt.on_conflict_do_update(
                index_elements=["tenant_id"],
                set_={"purchased_policy": stmt.excluded.purchased_policy, "update_time": utcnow()},
            )
            conn.execute(stmt, [{"tenant_id": tenant, "purchased_policy": policy, "update_time": utcnow()}])

    def active_version(self, tenant: str) -> dict[str, Any] | None:
        for row in self.versions(tenant):
            if row["active"]:
                return row
        return None
