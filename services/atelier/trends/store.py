"""Observations and series of each tenant in the runtime's store (SQLAlchemy Core, no gRPC).

Times are stored as UTC epoch seconds of the period start, so SQLite and PostgreSQL compare
them the same way. Ingest semantics (see the proto): idempotent on (series, time); a
different value for a stored (series, time) in a later request replaces it (a correction).
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import sqlalchemy as sa

from atelier.runtime.context import current_tenant
from atelier.runtime.errors import InvalidArgumentError, NotFoundError
from atelier.runtime.storage import Migration, Store, create_tables, tenant_column, utcnow

DAY_S = 86_400
WEEK_S = 7 * DAY_S


class Frequency(IntEnum):
    WEEKLY = 1
    DAILY = 2
    MONTHLY = 3  # calendar months: periods start on the 1st at 00:00 UTC

    @property
    def step_s(self) -> int:
        """Nominal period length (months: 1/12 of a 365.25-day year); grids use offsets()."""
        return {Frequency.WEEKLY: WEEK_S, Frequency.DAILY: DAY_S, Frequency.MONTHLY: 2_629_800}[self]

    @property
    def season_length(self) -> int:
        # The main seasonality: yearly for weekly (52) and monthly (12) data; daily data gets the
        # weekly cycle (7), and MSTL adds the yearly one (seasonalities) when two years are there.
        return {Frequency.WEEKLY: 52, Frequency.DAILY: 7, Frequency.MONTHLY: 12}[self]

    @property
    def seasonalities(self) -> tuple[int, ...]:
        """Every seasonal period a multi-seasonal model (MSTL) may use, shortest first."""
        return (7, 365) if self is Frequency.DAILY else (self.season_length,)

    @property
    def year_periods(self) -> int:
        return {Frequency.WEEKLY: 52, Frequency.DAILY: 365, Frequency.MONTHLY: 12}[self]


def _month_number(time_s: int | np.ndarray) -> np.ndarray:
    """Months since 1970-01 of UTC epoch seconds."""
    return np.asarray(time_s, dtype="int64").astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)


def is_period_start(time_s: int, frequency: Frequency) -> bool:
    """Monthly periods start on the 1st at 00:00 UTC (weekly and daily grids follow the series' anchor)."""
    if frequency is not Frequency.MONTHLY:
        return True
    start = int(np.datetime64(int(_month_number(time_s)), "M").astype("datetime64[s]").astype(np.int64))
    return start == int(time_s)


def offsets(times_s: np.ndarray | Sequence[int], start_s: int, frequency: Frequency) -> np.ndarray:
    """Whole periods from start_s to each time (calendar months for MONTHLY)."""
    times = np.asarray(times_s, dtype=np.int64)
    if frequency is Frequency.MONTHLY:
        return _month_number(times) - _month_number(start_s)
    return (times - start_s) // frequency.step_s


def period_times(start_s: int, first: int, count: int, frequency: Frequency) -> np.ndarray:
    """Epoch seconds of periods first .. first + count - 1 counted from start_s."""
    steps = np.arange(first, first + count, dtype=np.int64)
    if frequency is Frequency.MONTHLY:
        months = _month_number(start_s) + steps
        return months.astype("datetime64[M]").astype("datetime64[s]").astype(np.int64)
    return start_s + steps * frequency.step_s


class ValueKind(IntEnum):
    COUNT = 1
    SHARE = 2
    INDEX = 3


# Bounds on one series' shape (the README's limits table). Forecasting works on the regular grid
# from a series' first point to its last, so one point a million weeks away would size every array
# (and the work) by the gap: a series spans at most 30 years, and consecutive points are at most
# 2 years apart (5 for COUNT series: intermittent sales of slow movers go years without a sale).
# Monthly periods are counted in nominal months (step_s) here: a day's error at these bounds.
MAX_SPAN_PERIODS = {Frequency.WEEKLY: 1565, Frequency.DAILY: 10_958, Frequency.MONTHLY: 360}
MAX_GAP_PERIODS = {Frequency.WEEKLY: 104, Frequency.DAILY: 731, Frequency.MONTHLY: 24}
MAX_COUNT_GAP_PERIODS = {Frequency.WEEKLY: 261, Frequency.DAILY: 1826, Frequency.MONTHLY: 60}


def max_gap_periods(frequency: Frequency, kind: ValueKind) -> int:
    return (MAX_COUNT_GAP_PERIODS if kind is ValueKind.COUNT else MAX_GAP_PERIODS)[frequency]


_metadata = sa.MetaData()
series_table = sa.Table(
    "trends_series",
    _metadata,
    tenant_column(),
    sa.Column("series", sa.String(256), nullable=False),
    sa.Column("labels", sa.Text, nullable=False, default="{}"),
    sa.Column("frequency", sa.Integer, nullable=False),
    sa.Column("kind", sa.Integer, nullable=False),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "series"),
)
observations_table = sa.Table(
    "trends_observations",
    _metadata,
    tenant_column(),
    sa.Column("series", sa.String(256), nullable=False),
    sa.Column("time_s", sa.BigInteger, nullable=False),
    sa.Column("value", sa.Float(precision=53), nullable=False),
    sa.Column("external", sa.Float(precision=53), nullable=True),
    # Exogenous inputs of the period (see COVARIATES), NULL when not given.
    sa.Column("price", sa.Float(precision=53), nullable=True),
    sa.Column("discount", sa.Float(precision=53), nullable=True),
    sa.Column("promotion", sa.Float(precision=53), nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "series", "time_s"),
)

# Per-observation exogenous inputs, known ahead for the forecast periods (a planned price or
# promotion): price per unit (> 0), discount (fraction of the regular price, 0..1) and promotion
# (share of the period or of the units on promotion, 0..1; a flag is 0 or 1).
COVARIATES = ("price", "discount", "promotion")


def _add_covariate_columns(conn: sa.Connection) -> None:
    """Version 2: the covariate columns on a table created by version 1 (a fresh table has them)."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("trends_observations")}
    for name in COVARIATES:
        if name not in have:
            kind = observations_table.c[name].type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE trends_observations ADD COLUMN {name} {kind}"))


MIGRATIONS = [
    Migration(
        1, "create trends_series and trends_observations", create_tables(series_table, observations_table)
    ),
    Migration(2, "price, discount and promotion per observation", _add_covariate_columns),
]


@dataclass(frozen=True)
class ObservationIn:
    series: str
    time_s: int
    value: float
    external: float | None = None
    price: float | None = None
    discount: float | None = None
    promotion: float | None = None


@dataclass(frozen=True)
class SeriesMeta:
    series: str
    labels: dict[str, str] = field(default_factory=dict)
    frequency: Frequency = Frequency.WEEKLY
    kind: ValueKind = ValueKind.SHARE


@dataclass(frozen=True)
class SeriesSummary:
    meta: SeriesMeta
    observation_count: int
    first_time_s: int
    last_time_s: int


@dataclass
class IngestResult:
    inserted: int = 0
    unchanged: int = 0
    updated: int = 0


@dataclass
class SeriesData:
    """One series on a regular grid, ready to forecast."""

    meta: SeriesMeta
    start_time_s: int
    values: np.ndarray  # float64, one per period from start_time_s
    external: np.ndarray | None  # same length, or None when the series has no external signal
    filled_periods: int = 0  # missing periods filled by linear interpolation
    # Per covariate name (COVARIATES) with at least one stored value: one value per period (price
    # interpolated and held at the ends; discount and promotion 0 where not given).
    covariates: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def times_s(self) -> np.ndarray:
        return period_times(self.start_time_s, 0, len(self.values), self.meta.frequency)

    @property
    def last_time_s(self) -> int:
        return int(period_times(self.start_time_s, len(self.values) - 1, 1, self.meta.frequency)[0])

    def future_times_s(self, horizon: int) -> np.ndarray:
        """The start of each of the next `horizon` periods."""
        return period_times(self.start_time_s, len(self.values), horizon, self.meta.frequency)


@dataclass(frozen=True)
class Filter:
    series: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()


# Tries of one ingest transaction that lost a race on the primary key (see TrendsStore.ingest).
INGEST_ATTEMPTS = 3


class TrendsStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate("trends", MIGRATIONS)

    # -- writing ---------------------------------------------------------------------------

    def ingest(
        self, observations: Sequence[ObservationIn], metas: Sequence[SeriesMeta], metas_field: str = "series"
    ) -> IngestResult:
        """Stores one validated batch in one transaction (no duplicate (series, time) inside it).

        Two uploads of the same new points at once (a client retrying while its first try is
        still running) race between reading and inserting: the loser's transaction fails on the
        primary key and is run again, and then finds the winner's rows (counted unchanged).
        """
        for attempt in range(INGEST_ATTEMPTS):
            try:
                return self._ingest_once(observations, metas, metas_field)
            except sa.exc.IntegrityError:
                if attempt == INGEST_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _ingest_once(
        self, observations: Sequence[ObservationIn], metas: Sequence[SeriesMeta], metas_field: str
    ) -> IngestResult:
        tenant = current_tenant()
        result = IngestResult()
        by_series: dict[str, list[ObservationIn]] = defaultdict(list)
        for obs in observations:
            by_series[obs.series].append(obs)
        given = {m.series: (i, m) for i, m in enumerate(metas)}
        with self.store.engine.begin() as conn:
            names = sorted(set(by_series) | set(given))
            known: dict[str, sa.Row] = {}
            for chunk in _chunks(names, 500):
                for row in conn.execute(
                    series_table.select()
                    .where(series_table.c.tenant_id == tenant)
                    .where(series_table.c.series.in_(chunk))
                ):
                    known[row.series] = row
            ranges = self._time_ranges(conn, tenant, [n for n in names if n in known])
            first_times = {n: r[0] for n, r in ranges.items()}
            now = utcnow()
            for name in names:
                index, meta = given.get(name, (-1, SeriesMeta(series=name)))
                stored = known.get(name)
                if stored is None:
                    conn.execute(
                        series_table.insert().values(
                            tenant_id=tenant,
                            series=name,
                            labels=json.dumps(meta.labels, sort_keys=True),
                            frequency=int(meta.frequency),
                            kind=int(meta.kind),
                            update_time=now,
                        )
                    )
                    continue
                frequency, kind = Frequency(stored.frequency), ValueKind(stored.kind)
                if index < 0:
                    continue
                if name in first_times and meta.frequency != frequency:
                    raise InvalidArgumentError.for_field(
                        f"{metas_field}[{index}].frequency",
                        f"series {name!r} already holds {frequency.name.lower()} observations; "
                        "frequency cannot change (use a new series key)",
                    )
                if name in first_times and meta.kind != kind:
                    raise InvalidArgumentError.for_field(
                        f"{metas_field}[{index}].kind",
                        f"series {name!r} already holds {kind.name} values; kind cannot change",
                    )
                conn.execute(
                    series_table.update()
                    .where(series_table.c.tenant_id == tenant)
                    .where(series_table.c.series == name)
                    .values(
                        labels=json.dumps(meta.labels, sort_keys=True),
                        frequency=int(meta.frequency),
                        kind=int(meta.kind),
                        update_time=now,
                    )
                )
            # The given meta wins (it was checked against stored observations above).
            kinds = {}
            for n in by_series:
                if n in given:
                    kinds[n] = (given[n][1].frequency, given[n][1].kind)
                elif n in known:
                    kinds[n] = (Frequency(known[n].frequency), ValueKind(known[n].kind))
                else:
                    kinds[n] = (Frequency.WEEKLY, ValueKind.SHARE)
            # Each observation's index in the request, for field paths: built once (per series it
            # cost series x observations: seconds for a 200-series message).
            position = {id(o): i for i, o in enumerate(observations)}
            for name, batch in by_series.items():
                frequency, kind = kinds[name]
                self._check_batch(name, batch, frequency, kind, first_times.get(name), position)
                self._check_gaps(name, batch, frequency, kind, ranges.get(name), position)
                self._write(conn, tenant, name, batch, result)
        return result

    @staticmethod
    def _check_batch(
        name: str,
        batch: list[ObservationIn],
        frequency: Frequency,
        kind: ValueKind,
        anchor_s: int | None,
        position: dict[int, int],
    ) -> None:
        """Checks that need the stored series: grid alignment and value kind."""
        anchor = anchor_s if anchor_s is not None else min(o.time_s for o in batch)
        for obs in batch:
            i = position[id(obs)]
            if frequency is Frequency.MONTHLY and not is_period_start(obs.time_s, frequency):
                raise InvalidArgumentError.for_field(
                    f"observations[{i}].time",
                    f"not on the monthly grid of series {name!r}: monthly periods start on the 1st "
                    f"of the month at 00:00 UTC, got {_iso(obs.time_s)}",
                )
            if frequency is not Frequency.MONTHLY and (obs.time_s - anchor) % frequency.step_s:
                what = "week start (same weekday and time)" if frequency is Frequency.WEEKLY else "day start"
                raise InvalidArgumentError.for_field(
                    f"observations[{i}].time",
                    f"not on the {frequency.name.lower()} grid of series {name!r}: must be a {what} "
                    f"a whole number of periods from {_iso(anchor)}",
                )
            if kind in (ValueKind.COUNT, ValueKind.SHARE) and (obs.value < 0 or (obs.external or 0) < 0):
                raise InvalidArgumentError.for_field(
                    f"observations[{i}].value" if obs.value < 0 else f"observations[{i}].external",
                    f"series {name!r} holds {kind.name} values, which cannot be negative",
                )

    @staticmethod
    def _check_gaps(
        name: str,
        batch: list[ObservationIn],
        frequency: Frequency,
        kind: ValueKind,
        stored: tuple[int, int] | None,
        position: dict[int, int],
    ) -> None:
        """Span and gap bounds. The stored points already keep them, so checking the new points
        before the stored first and after the stored last is exact: a point between them can only
        shorten a gap."""
        points = sorted((o.time_s, position[id(o)]) for o in batch)
        chains = [points]
        if stored is not None:
            chains = [
                [p for p in points if p[0] < stored[0]] + [(stored[0], -1)],
                [(stored[1], -1)] + [p for p in points if p[0] > stored[1]],
            ]
            points = sorted([*points, (stored[0], -1), (stored[1], -1)])
        step = frequency.step_s
        span = (points[-1][0] - points[0][0]) // step
        if span > MAX_SPAN_PERIODS[frequency]:
            index = max((p for p in (points[0], points[-1]) if p[1] >= 0), key=lambda p: p[1])[1]
            raise InvalidArgumentError.for_field(
                f"observations[{index}].time",
                f"series {name!r} would span {span} {frequency.name.lower()} periods "
                f"({_iso(points[0][0])} to {_iso(points[-1][0])}); at most {MAX_SPAN_PERIODS[frequency]} "
                "(30 years): check the timestamp",
            )
        limit = max_gap_periods(frequency, kind)
        for (a, ia), (b, ib) in (pair for chain in chains for pair in itertools.pairwise(chain)):
            if (b - a) // step > limit:
                index = ib if ib >= 0 else ia
                raise InvalidArgumentError.for_field(
                    f"observations[{index}].time",
                    f"{(b - a) // step} {frequency.name.lower()} periods between {_iso(a)} and {_iso(b)} "
                    f"in series {name!r}; at most {limit} for a {kind.name} series: check the timestamp",
                )

    @staticmethod
    def _time_ranges(conn: sa.Connection, tenant: str, names: list[str]) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        t = observations_table
        for chunk in _chunks(names, 500):
            query = (
                sa.select(t.c.series, sa.func.min(t.c.time_s), sa.func.max(t.c.time_s))
                .where(t.c.tenant_id == tenant)
                .where(t.c.series.in_(chunk))
                .group_by(t.c.series)
            )
            found.update({name: (int(first), int(last)) for name, first, last in conn.execute(query)})
        return found

    @staticmethod
    def _write(
        conn: sa.Connection, tenant: str, name: str, batch: list[ObservationIn], result: IngestResult
    ) -> None:
        t = observations_table
        low, high = min(o.time_s for o in batch), max(o.time_s for o in batch)
        stored = {
            row.time_s: (row.value, row.external, row.price, row.discount, row.promotion)
            for row in conn.execute(
                sa.select(t.c.time_s, t.c.value, t.c.external, t.c.price, t.c.discount, t.c.promotion)
                .where(t.c.tenant_id == tenant)
                .where(t.c.series == name)
                .where(t.c.time_s.between(low, high))
            )
        }
        inserts = []
        for obs in batch:
            old = stored.get(obs.time_s)
            if old is None:
                inserts.append(
                    {
                        "tenant_id": tenant,
                        "series": name,
                        "time_s": obs.time_s,
                        "value": obs.value,
                        "external": obs.external,
                        **{c: getattr(obs, c) for c in COVARIATES},
                    }
                )
                continue
            # An optional field not given keeps the stored one (a re-upload of values only).
            new = (obs.value, obs.external, *(getattr(obs, c) for c in COVARIATES))
            merged = tuple(o if n is None else n for n, o in zip(new, old, strict=True))
            if merged == tuple(old):
                result.unchanged += 1
                continue
            conn.execute(
                t.update()
                .where(t.c.tenant_id == tenant)
                .where(t.c.series == name)
                .where(t.c.time_s == obs.time_s)
                .values(dict(zip(("value", "external", *COVARIATES), merged, strict=True)))
            )
            result.updated += 1
        if inserts:
            conn.execute(t.insert(), inserts)
            result.inserted += len(inserts)

    # -- reading ---------------------------------------------------------------------------

    def _matching(self, conn: sa.Connection, flt: Filter) -> list[SeriesMeta]:
        tenant = current_tenant()
        query = (
            series_table.select().where(series_table.c.tenant_id == tenant).order_by(series_table.c.series)
        )
        if flt.series:
            query = query.where(series_table.c.series.in_(flt.series))
        metas = []
        wanted = dict(flt.labels)
        for row in conn.execute(query):
            labels = json.loads(row.labels)
            if all(labels.get(k) == v for k, v in wanted.items()):
                metas.append(SeriesMeta(row.series, labels, Frequency(row.frequency), ValueKind(row.kind)))
        return metas

    def resolve(self, flt: Filter, field_path: str = "filter") -> list[SeriesMeta]:
        """The series a filter selects; NOT_FOUND for an unknown key or an empty selection."""
        with self.store.engine.connect() as conn:
            metas = self._matching(conn, flt)
        found = {m.series for m in metas}
        missing = [s for s in flt.series if s not in found]
        if missing:
            raise NotFoundError(
                f"unknown series {missing[0]!r}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                "atelier.trends.v1.Series",
                missing[0],
            )
        if not metas:
            raise NotFoundError(
                f"no series of this tenant match {field_path}", "atelier.trends.v1.Series", ""
            )
        return metas

    def summaries(self, flt: Filter, offset: int, limit: int) -> tuple[list[SeriesSummary], bool]:
        tenant = current_tenant()
        t = observations_table
        with self.store.engine.connect() as conn:
            metas = self._matching(conn, flt)
            page = metas[offset : offset + limit]
            stats = {}
            for chunk in _chunks([m.series for m in page], 500):
                query = (
                    sa.select(t.c.series, sa.func.count(), sa.func.min(t.c.time_s), sa.func.max(t.c.time_s))
                    .where(t.c.tenant_id == tenant)
                    .where(t.c.series.in_(chunk))
                    .group_by(t.c.series)
                )
                stats.update({row[0]: row[1:] for row in conn.execute(query)})
        out = [
            SeriesSummary(
                m,
                int(stats.get(m.series, (0, 0, 0))[0]),
                int(stats.get(m.series, (0, 0, 0))[1]),
                int(stats.get(m.series, (0, 0, 0))[2]),
            )
            for m in page
        ]
        return out, len(metas) > offset + limit

    def observations(self, name: str) -> tuple[SeriesMeta, list[ObservationIn]]:
        metas = self.resolve(Filter(series=(name,)), "series")
        t = observations_table
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.time_s, t.c.value, t.c.external, t.c.price, t.c.discount, t.c.promotion)
                .where(t.c.tenant_id == current_tenant())
                .where(t.c.series == name)
                .order_by(t.c.time_s)
            ).all()
        return metas[0], [
            ObservationIn(name, int(r.time_s), float(r.value), r.external, r.price, r.discount, r.promotion)
            for r in rows
        ]

    def load(self, metas: Sequence[SeriesMeta]) -> list[SeriesData]:
        """Each series on its regular grid; gaps filled by linear interpolation (and counted)."""
        tenant = current_tenant()
        t = observations_table
        rows_by: dict[str, list[tuple[int, float, float | None, float | None, float | None, float | None]]]
        rows_by = defaultdict(list)
        with self.store.engine.connect() as conn:
            for chunk in _chunks([m.series for m in metas], 500):
                query = (
                    sa.select(
                        t.c.series,
                        t.c.time_s,
                        t.c.value,
                        t.c.external,
                        t.c.price,
                        t.c.discount,
                        t.c.promotion,
                    )
                    .where(t.c.tenant_id == tenant)
                    .where(t.c.series.in_(chunk))
                    .order_by(t.c.series, t.c.time_s)
                )
                for name, time_s, value, external, price, discount, promotion in conn.execute(query):
                    rows_by[name].append((int(time_s), float(value), external, price, discount, promotion))
        out = []
        for meta in metas:
            rows = rows_by.get(meta.series, [])
            if not rows:
                out.append(SeriesData(meta, 0, np.zeros(0), None))
                continue
            start = rows[0][0]
            index = offsets([r[0] for r in rows], start, meta.frequency)
            n = int(index[-1]) + 1
            known = np.array([r[1] for r in rows])
            values = np.interp(np.arange(n), index, known)
            external = None
            ext_rows = [(i, r[2]) for i, r in zip(index, rows, strict=True) if r[2] is not None]
            if len(ext_rows) >= 2:
                external = np.interp(np.arange(n), [e[0] for e in ext_rows], [float(e[1]) for e in ext_rows])
            covariates = _covariates(index, rows, n)
            out.append(SeriesData(meta, start, values, external, n - len(rows), covariates))
        return out


def _covariates(index: np.ndarray, rows: Sequence[tuple], n: int) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    """The series' covariates on its grid: a price is interpolated between the periods that have
    one (and held before the first and after the last); a period without a discount or promotion
    had none."""
    out = {}
    for k, name in enumerate(COVARIATES, start=3):
        given = [(i, float(r[k])) for i, r in zip(index, rows, strict=True) if r[k] is not None]
        if not given:
            continue
        where, what = [g[0] for g in given], [g[1] for g in given]
        if name == "price":
            out[name] = np.interp(np.arange(n), where, what)
        else:
            grid = np.zeros(n)
            grid[where] = what
            out[name] = grid
    return out


def _chunks(items: Sequence[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _iso(time_s: int) -> str:
    return np.datetime64(int(time_s), "s").astype(str) + "Z"
