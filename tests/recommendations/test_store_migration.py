"""Migration 2 on a database created by the previous schema (events without quantity and value)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import sqlalchemy as sa

from atelier.recommendations.engine import EXCLUDE, Engine, Filter
from atelier.recommendations.store import (
    MIGRATIONS,
    Event,
    EventType,
    RecsStore,
    items_table,
    users_table,
    versions_table,
)
from atelier.runtime.storage import Store, tenant_column

T0 = datetime(2026, 2, 1, tzinfo=UTC)

# recs_events exactly as migration 1 of the previous release created it (commit 72c11f4).
_old = sa.MetaData()
_old_events = sa.Table(
    "recs_events",
    _old,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    tenant_column(),
    sa.Column("event_id", sa.String(128), nullable=False),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("item_id", sa.String(128), nullable=False),
    sa.Column("type", sa.SmallInteger, nullable=False),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("basket_id", sa.String(128), nullable=False, default=""),
    sa.UniqueConstraint("tenant_id", "event_id", name="uq_recs_events_tenant_event"),
    sa.Index("ix_recs_events_tenant_seq", "tenant_id", "seq"),
)


def _previous_release_database(store: Store) -> None:
    """The schema and rows a database of the previous release holds: migration 1 only."""
    old_first = MIGRATIONS[0]
    assert old_first.version == 1
    store.migrate("recommendations", [type(old_first)(1, old_first.description, _create_v1)])
    with store.engine.begin() as conn:
        conn.execute(
            items_table.insert(),
            [
                {"tenant_id": "acme", "item_id": i, "category": "home", "update_time": T0}
                for i in ("a", "b", "c")
            ],
        )
        conn.execute(
            _old_events.insert(),
            [
                {
                    "tenant_id": "acme",
                    "event_id": f"old-{k}",
                    "user_id": user,
                    "item_id": item,
                    "type": int(EventType.PURCHASE),
                    "time": T0 + timedelta(days=k),
                    "basket_id": "",
                }
                for k, (user, item) in enumerate([("ann", "a"), ("ann", "b"), ("bob", "a"), ("bob", "c")])
            ],
        )


def _create_v1(conn: sa.Connection) -> None:
    for table in (items_table, users_table, versions_table):
        table.create(conn, checkfirst=True)
    _old_events.create(conn, checkfirst=True)


def test_migration_2_keeps_the_events_of_an_existing_database(store: Store) -> None:
    _previous_release_database(store)
    columns = {c["name"] for c in sa.inspect(store.engine).get_columns("recs_events")}
    assert "quantity" not in columns and "value" not in columns  # really the old schema
    assert store.schema_version("recommendations") == 1

    recs = RecsStore(store)  # applies migration 2
    assert store.schema_version("recommendations") == 2
    old = recs.load_events("acme")
    assert len(old) == 4
    assert list(old.user_ids) == ["ann", "ann", "bob", "bob"]
    assert list(old.item_ids) == ["a", "b", "a", "c"]
    assert old.quantities is not None and old.values is not None
    np.testing.assert_array_equal(old.quantities, np.ones(4, np.float32))  # one unit each, as before
    assert np.isnan(old.values).all()

    # The migrated database takes the new columns, a settings row, and a second migrate is a no-op.
    result = recs.record_events(
        "acme",
        [
            Event("new-1", "ann", "c", EventType.PURCHASE, T0 + timedelta(days=9), quantity=3, value=7.5),
            Event("new-2", "ann", "a", EventType.RETURN, T0 + timedelta(days=10), quantity=1),
        ],
    )
    assert len(result.accepted) == 2
    recs.set_purchased_policy("acme", EXCLUDE)
    assert recs.purchased_policy("acme") == EXCLUDE
    again = RecsStore(store)
    everything = again.load_events("acme")
    assert len(everything) == 6 and list(everything.seq) == sorted(everything.seq)
    assert everything.quantities is not None and everything.values is not None
    assert everything.quantities[-2] == 3 and everything.values[-2] == 7.5

    # Serving from the migrated store: bob's old purchases (a, c) are excluded by the setting, so
    # only b is left; ann's new purchase of c counts too.
    engine = Engine(again)
    assert [s.item_id for s in engine.recommend("acme", "bob", 3, Filter()).items] == ["b"]
    assert [s.item_id for s in engine.recommend("acme", "ann", 3, Filter()).items] == []
