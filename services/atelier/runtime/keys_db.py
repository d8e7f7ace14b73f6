"""The key store in a shared database (``ATELIER_API_KEYS_DATABASE_URL``), for deployments that
want a revocation to reach every replica of every service within seconds, without rolling a
Secret. Same records as the keys file (atelier.runtime.keys); ``atelier keys --database URL``
manages them. Each process caches a lookup for ``cache_s`` seconds, so a revoked key stops
working within that time and a flood of calls costs one query per key id per interval.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence

import sqlalchemy as sa

from atelier.runtime.errors import UnavailableError
from atelier.runtime.keys import KeyRecord, KeyStoreError, Principal, check_records, match_record, split_key
from atelier.runtime.storage import Migration, Store, create_tables

_metadata = sa.MetaData()
api_keys_table = sa.Table(
    "atelier_api_keys",
    _metadata,
    sa.Column("id", sa.String(12), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("tenants", sa.Text, nullable=False),  # JSON list
    sa.Column("role", sa.String(8), nullable=False),
    sa.Column("name", sa.String(256), nullable=False, default=""),
    sa.Column("created", sa.String(32), nullable=False, default=""),
    sa.Column("revoked", sa.String(32), nullable=False, default=""),
)
MIGRATIONS = [Migration(1, "create atelier_api_keys", create_tables(api_keys_table))]
_MAX_CACHED = 10_000


def _record(row: sa.RowMapping) -> KeyRecord:
    raw = dict(row)
    raw["tenants"] = json.loads(raw["tenants"])
    return KeyRecord.from_json(raw, f"atelier_api_keys row {row['id']}")


class DatabaseKeyStore:
    def __init__(self, url_or_store: str | Store, cache_s: float = 5.0, require_active: bool = True) -> None:
        self.store = url_or_store if isinstance(url_or_store, Store) else Store(url_or_store)
        self.source = f"database table atelier_api_keys at {self.store.engine.url.render_as_string()}"
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._lock = threading.Lock()
        try:
            self.store.migrate("runtime.api_keys", MIGRATIONS)
            if require_active:
                check_records(self.records(), self.source)
        except sa.exc.SQLAlchemyError as exc:
            raise KeyStoreError(f"ATELIER_API_KEYS_DATABASE_URL cannot be used: {exc}") from None

    def records(self) -> list[KeyRecord]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(api_keys_table.select().order_by(api_keys_table.c.created)).mappings()
            return [_record(r) for r in rows]

    def add(self, record: KeyRecord) -> None:
        values = record.to_json()
        values["tenants"] = json.dumps(values["tenants"])
        with self.store.engine.begin() as conn:
            conn.execute(api_keys_table.insert().values(**values))

    def replace_all(self, records: Sequence[KeyRecord]) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(api_keys_table.delete())
            for record in records:
                values = record.to_json()
                values["tenants"] = json.dumps(values["tenants"])
                conn.execute(api_keys_table.insert().values(**values))

    def _lookup(self, key_id: str) -> KeyRecord | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key_id)
        if hit is not None and now - hit[0] < self.cache_s:
            return hit[1]
        try:
            with self.store.engine.connect() as conn:
                row = (
                    conn.execute(api_keys_table.select().where(api_keys_table.c.id == key_id))
                    .mappings()
                    .first()
                )
        except sa.exc.SQLAlchemyError:
            raise UnavailableError(
                "the API key store is unreachable; retry shortly", retry_after_s=2
            ) from None
        record = _record(row) if row is not None else None
        with self._lock:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[key_id] = (now, record)
        return record

    def authenticate(self, key: str) -> Principal | None:
        key_id = split_key(key)
        return None if key_id is None else match_record(self._lookup(key_id), key)
