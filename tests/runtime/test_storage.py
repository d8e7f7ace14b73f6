from __future__ import annotations

import sqlalchemy as sa

from atelier.runtime.storage import Migration, Store, create_tables, tenant_column

meta = sa.MetaData()
things = sa.Table(
    "things",
    meta,
    sa.Column("id", sa.String(32), primary_key=True),
    tenant_column(),
    sa.Column("payload", sa.LargeBinary),
)


def add_colour(conn: sa.Connection) -> None:
    conn.execute(sa.text("ALTER TABLE things ADD COLUMN colour VARCHAR(32)"))


MIGRATIONS = [Migration(1, "create things", create_tables(things)), Migration(2, "add colour", add_colour)]


def test_round_trip_and_migrations(store: Store) -> None:
    assert store.migrate("test", MIGRATIONS[:1]) == 1
    assert store.migrate("test", MIGRATIONS) == 2
    assert store.migrate("test", MIGRATIONS) == 2  # idempotent
    assert store.schema_version("test") == 2
    with store.engine.begin() as conn:
        conn.execute(things.insert().values(id="a", tenant_id="acme", payload=b"\x00\x01"))
        conn.execute(sa.text("UPDATE things SET colour = 'navy' WHERE id = 'a'"))
    with store.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT tenant_id, payload, colour FROM things")).one()
    assert (row[0], bytes(row[1]), row[2]) == ("acme", b"\x00\x01", "navy")
