"""Per-tenant size chart storage (SQLAlchemy Core on the runtime's store)."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict

import sqlalchemy as sa

from atelier.body.sizing import Size, SizeChart, SizeRange
from atelier.runtime.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from atelier.runtime.storage import Migration, Store, create_tables, tenant_column, utcnow

metadata = sa.MetaData()
size_charts = sa.Table(
    "body_size_charts",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    tenant_column(),
    sa.Column("display_name", sa.String(256), nullable=False),
    sa.Column("system", sa.String(64), nullable=False),
    sa.Column("sizes_json", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
MIGRATIONS = [Migration(1, "size charts", create_tables(size_charts))]
PREFIX = "size-charts/"
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20


def _sizes_to_json(sizes: list[Size]) -> str:
    return json.dumps([asdict(s) for s in sizes])


def _sizes_from_json(text: str) -> list[Size]:
    return [Size(d["label"], tuple(SizeRange(**r) for r in d["ranges"])) for d in json.loads(text)]


def chart_id(name: str) -> str:
    if not name.startswith(PREFIX) or not name[len(PREFIX) :]:
        raise InvalidArgumentError.for_field("name", f"must look like {PREFIX}{{id}}, got {name!r}")
    return name[len(PREFIX) :]


class ChartStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def migrate(self) -> None:
        self.store.migrate("body", MIGRATIONS)

    def _row_to_chart(self, row: sa.Row) -> SizeChart:  # type: ignore[type-arg]
        return SizeChart(
            row.display_name, row.system, _sizes_from_json(row.sizes_json), PREFIX + row.id, row.version
        )

    def create(self, tenant: str, chart: SizeChart) -> SizeChart:
        cid = uuid.uuid4().hex[:16]
        now = utcnow()
        with self.store.engine.begin() as conn:
            conn.execute(
                size_charts.insert().values(
                    id=cid,
                    tenant_id=tenant,
                    display_name=chart.display_name,
                    system=chart.system,
                    sizes_json=_sizes_to_json(chart.sizes),
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
            )
        return SizeChart(chart.display_name, chart.system, chart.sizes, PREFIX + cid, 1)

    def get(self, tenant: str, name: str) -> SizeChart:
        cid = chart_id(name)
        with self.store.engine.connect() as conn:
            row = conn.execute(
                sa.select(size_charts).where(size_charts.c.id == cid, size_charts.c.tenant_id == tenant)
            ).first()
        if row is None:
            raise NotFoundError(f"size chart {name} not found", "atelier.body.v1.SizeChart", name)
        return self._row_to_chart(row)

    def list(self, tenant: str, page_size: int, page_token: str) -> tuple[list[SizeChart], str]:
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        query = sa.select(size_charts).where(size_charts.c.tenant_id == tenant).order_by(size_charts.c.id)
        if page_token:
            query = query.where(size_charts.c.id > page_token)
        with self.store.engine.connect() as conn:
            rows = conn.execute(query.limit(size + 1)).all()
        charts = [self._row_to_chart(r) for r in rows[:size]]
        token = rows[size - 1].id if len(rows) > size else ""
        return charts, token

    def update(self, tenant: str, chart: SizeChart) -> SizeChart:
        """Replaces the chart; when chart.version is set it must match (optimistic concurrency)."""
        cid = chart_id(chart.name)
        with self.store.engine.begin() as conn:
            row = conn.execute(
                sa.select(size_charts.c.version).where(
                    size_charts.c.id == cid, size_charts.c.tenant_id == tenant
                )
            ).first()
            if row is None:
                raise NotFoundError(
                    f"size chart {chart.name} not found", "atelier.body.v1.SizeChart", chart.name
                )
            if chart.version and chart.version != row.version:
                raise FailedPreconditionError(
                    f"chart.version is {chart.version} but the stored chart is at version {row.version}; "
                    "get it again and retry"
                )
            version = row.version + 1
            conn.execute(
                size_charts.update()
                .where(size_charts.c.id == cid, size_charts.c.tenant_id == tenant)
                .values(
                    display_name=chart.display_name,
                    system=chart.system,
                    sizes_json=_sizes_to_json(chart.sizes),
                    version=version,
                    updated_at=utcnow(),
                )
            )
        return SizeChart(chart.display_name, chart.system, chart.sizes, chart.name, version)

    def delete(self, tenant: str, name: str) -> None:
        cid = chart_id(name)
        with self.store.engine.begin() as conn:
            result = conn.execute(
                size_charts.delete().where(size_charts.c.id == cid, size_charts.c.tenant_id == tenant)
            )
        if result.rowcount == 0:
            raise NotFoundError(f"size chart {name} not found", "atelier.body.v1.SizeChart", name)
