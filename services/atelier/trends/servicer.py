"""The gRPC face of the trends service: protobuf <-> domain, validation at the boundary.

Everything here is conversion and checking; the algorithms live in forecasting, global_model,
classify, demand, backtest and store, none of which imports gRPC.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import grpc
import numpy as np
from google.longrunning import operations_pb2
from google.protobuf import timestamp_pb2
from prometheus_client import Counter, Gauge, Histogram

from atelier.runtime import limits
from atelier.runtime.context import Cancellation
from atelier.runtime.errors import InvalidArgumentError, Violations
from atelier.runtime.jobs import JobHandle, JobManager
from atelier.runtime.metrics import LATENCY_BUCKETS
from atelier.runtime.status import cancellation_from
from atelier.trends import backtest as backtest_mod
from atelier.trends import calendar as calendar_mod
from atelier.trends import classify as classify_mod
from atelier.trends import demand as demand_mod
from atelier.trends import forecasting
from atelier.trends import hierarchy as hierarchy_mod
from atelier.trends import launch as launch_mod
from atelier.trends import sales as sales_mod
from atelier.trends.store import (
    COVARIATES,
    Filter,
    Frequency,
    ObservationIn,
    SeriesData,
    SeriesMeta,
    TrendsStore,
    ValueKind,
)
from atelier.trends.v1 import trends_pb2, trends_pb2_grpc

MAX_OBSERVATIONS_PER_REQUEST = 100_000
MAX_SERIES_KEY_CHARS = 256
MAX_LABELS = 16
MAX_LABEL_CHARS = 256
# Observations are periods of retail history: 1900 up to 2100 (a forecast 104 weeks on still ends
# far inside the protobuf Timestamp range). Values: finite, at most 1e12 in magnitude (units sold,
# shares and indices are far below; squares of 1e12 still fit a float).
EARLIEST_TIME = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2100, 1, 1, tzinfo=UTC)
MAX_ABS_VALUE = 1e12
MAX_HORIZON = {Frequency.WEEKLY: 104, Frequency.DAILY: 730, Frequency.MONTHLY: 36}
MAX_SERIES_PER_FORECAST = 10_000
MAX_LEVELS = 4
MAX_WINDOWS = 8
MAX_PAGE_SIZE = 1000
MAX_TOP_MOVERS = 100
MAX_HIERARCHY_LEVELS = 8
MAX_NEW_PRODUCTS = 1000
MAX_LAUNCH_HORIZON = 104
# IngestSales: a stream is aggregated whole (a key's periods need all of its lines), so it is held
# in memory until it ends: about 100 bytes a line, 50 MB at the limit. Larger exports are split
# by key (each key's lines in one stream) or ingested with `atelier trends ingest-sales`.
MAX_SALES_LINES = 500_000
MAX_STOCKOUT_DAYS = 100_000
MAX_SALES_PER_MESSAGE = 10_000
MAX_SALES_KEYS = 8
# Observations one stream may produce (series x periods), stored in one transaction.
MAX_SALES_OBSERVATIONS = 2_000_000
MAX_LINE_VIOLATIONS = 20
YEAR_PERIODS = {f: f.year_periods for f in Frequency}
UNITS = {Frequency.WEEKLY: "weeks", Frequency.DAILY: "days", Frequency.MONTHLY: "months"}

ingested_total = Counter(
    "atelier_trends_observations_ingested_total",
    "Observations received, by outcome (inserted, unchanged, updated).",
    ["outcome"],
)
forecast_seconds = Histogram(
    "atelier_trends_forecast_seconds",
    "Time to fit and forecast one request.",
    ["rpc"],
    buckets=LATENCY_BUCKETS,
)
series_forecast_total = Counter(
    "atelier_trends_series_forecast_total", "Series forecast, by model.", ["model"]
)
backtest_mase = Gauge(
    "atelier_trends_backtest_mase", "Seasonal MASE of the latest backtest, by model.", ["model"]
)
classified_total = Counter(
    "atelier_trends_series_classified_total", "Series classified, by class.", ["trend"]
)


def _time_s(ts: timestamp_pb2.Timestamp) -> int:
    return int(ts.seconds)


def _timestamp(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=int(seconds))


def _filter(msg: trends_pb2.SeriesFilter) -> Filter:
    return Filter(series=tuple(msg.series), labels=tuple(sorted(msg.labels.items())))


@dataclass
class Prepared:
    """Validated forecast inputs: the series data grouped by frequency."""

    groups: dict[Frequency, list[SeriesData]]
    horizon: int
    levels: list[int]
    model: str
    hierarchy: tuple[str, ...] = ()
    reconciliation: str = ""
    tree: hierarchy_mod.Hierarchy | None = None  # built once, when the hierarchy is checked
    # Planned covariates over the horizon, by series (FutureCovariates; names with values only).
    planned: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    # ISO 3166 code whose public holidays are known inputs (calendar.py); "" for none.
    holiday_country: str = ""


class TrendsServicer(trends_pb2_grpc.TrendsServiceServicer):
    def __init__(self, store: TrendsStore, pool: forecasting.FitPool, jobs: JobManager) -> None:
        self.store = store
        self.pool = pool
        self.jobs = jobs

    # -- ingest --------------------------------------------------------------------------------

    def _validate_ingest(
        self, request: trends_pb2.IngestObservationsRequest | trends_pb2.StreamObservationsRequest
    ) -> tuple[list[ObservationIn], list[SeriesMeta], int]:
        v = Violations()
        if len(request.observations) > MAX_OBSERVATIONS_PER_REQUEST:
            v.add(
                "observations",
                f"{len(request.observations)} observations; at most "
                f"{MAX_OBSERVATIONS_PER_REQUEST} per request (split the upload or stream it)",
            )
            v.raise_if_any("the upload is too large")
        metas: list[SeriesMeta] = []
        seen_meta: set[str] = set()
        for i, info in enumerate(request.series):
            path = f"series[{i}]"
            _check_key(v, info.series, f"{path}.series")
            if info.series in seen_meta:
                v.add(f"{path}.series", f"series {info.series!r} is described twice in this request")
            seen_meta.add(info.series)
            if len(info.labels) > MAX_LABELS:
                v.add(f"{path}.labels", f"{len(info.labels)} labels; at most {MAX_LABELS}")
            for key, value in sorted(info.labels.items())[:MAX_LABELS]:
                limits.check_text(v, f"{path}.labels[{key[:40]!r}]", key, MAX_LABEL_CHARS, required=True)
                limits.check_text(v, f"{path}.labels[{key[:40]!r}]", value, MAX_LABEL_CHARS)
            if info.frequency not in (0, *Frequency):
                v.add(f"{path}.frequency", f"unknown frequency {info.frequency}")
            if info.kind not in (0, *ValueKind):
                v.add(f"{path}.kind", f"unknown value kind {info.kind}")
            if not v:
                metas.append(
                    SeriesMeta(
                        info.series,
                        dict(info.labels),
                        Frequency(info.frequency or Frequency.WEEKLY),
                        ValueKind(info.kind or ValueKind.SHARE),
                    )
                )
        kinds = {m.series: m.kind for m in metas}
        observations: list[ObservationIn] = []
        first: dict[tuple[str, int], int] = {}
        duplicates = 0
        for i, obs in enumerate(request.observations):
            path = f"observations[{i}]"
            if not _check_key(v, obs.series, f"{path}.series"):
                continue
            if not obs.HasField("time"):
                v.add(f"{path}.time", "required: the start of the period (UTC)")
                continue
            if limits.check_time(v, f"{path}.time", obs.time, EARLIEST_TIME, LATEST_TIME) is None:
                continue
            if not limits.check_number(v, f"{path}.value", obs.value, MAX_ABS_VALUE):
                continue
            if obs.HasField("external") and not limits.check_number(
                v, f"{path}.external", obs.external, MAX_ABS_VALUE
            ):
                continue
            given = {c: _optional(obs, c) for c in COVARIATES}
            if not _check_covariates(v, path, {c: x for c, x in given.items() if x is not None}):
                continue
            if kinds.get(obs.series) in (ValueKind.COUNT, ValueKind.SHARE) and obs.value < 0:
                v.add(
                    f"{path}.value",
                    f"series {obs.series!r} holds {kinds[obs.series].name} values, "
                    f"which cannot be negative (got {obs.value})",
                )
                continue
            point = (obs.series, _time_s(obs.time))
            external = obs.external if obs.HasField("external") else None
            optional = {c: _optional(obs, c) for c in COVARIATES}
            if point in first:
                earlier = request.observations[first[point]]
                same_optional = all(
                    _optional(earlier, f) == _optional(obs, f) for f in ("external", *COVARIATES)
                )
                if earlier.value != obs.value or not same_optional:
                    v.add(
                        f"{path}.value",
                        f"duplicate timestamp: observations[{first[point]}] has the same series and "
                        f"time with value {earlier.value}; one value per (series, time) per request",
                    )
                else:
                    duplicates += 1
                continue
            first[point] = i
            observations.append(ObservationIn(obs.series, point[1], float(obs.value), external, **optional))
        v.raise_if_any("the observations are invalid")
        return observations, metas, duplicates

    def _ingest(
        self, request: trends_pb2.IngestObservationsRequest | trends_pb2.StreamObservationsRequest
    ) -> trends_pb2.IngestObservationsResponse:
        observations, metas, duplicates = self._validate_ingest(request)
        result = self.store.ingest(observations, metas)
        result.unchanged += duplicates
        for outcome in ("inserted", "unchanged", "updated"):
            ingested_total.labels(outcome).inc(getattr(result, outcome))
        return trends_pb2.IngestObservationsResponse(
            inserted=result.inserted, unchanged=result.unchanged, updated=result.updated
        )

    def IngestObservations(
        self, request: trends_pb2.IngestObservationsRequest, context: grpc.ServicerContext
    ) -> trends_pb2.IngestObservationsResponse:
        return self._ingest(request)

    def StreamObservations(
        self, request_iterator: Iterator[trends_pb2.StreamObservationsRequest], context: grpc.ServicerContext
    ) -> trends_pb2.StreamObservationsResponse:
        total = trends_pb2.StreamObservationsResponse()
        for index, request in enumerate(request_iterator):
            try:
                part = self._ingest(request)
            except InvalidArgumentError as exc:
                # Name the message of the stream the problem is in; earlier messages stay committed.
                raise InvalidArgumentError(
                    f"stream message {index} (earlier messages were stored): {exc.message}",
                    [type(viol)(f"[{index}].{viol.field}", viol.description) for viol in exc.violations],
                ) from None
            total.inserted += part.inserted
            total.unchanged += part.unchanged
            total.updated += part.updated
        return total

    def IngestSales(
        self, request_iterator: Iterator[trends_pb2.IngestSalesRequest], context: grpc.ServicerContext
    ) -> trends_pb2.IngestSalesResponse:
        lines = _SalesLines()
        spec: sales_mod.SalesSpec | None = None
        end: str = ""
        for index, request in enumerate(request_iterator):
            v = Violations()
            if index == 0:
                if request.HasField("aggregation"):
                    spec, end = _sales_spec(v, request.aggregation, "[0].aggregation")
                else:
                    v.add(
                        "[0].aggregation", "required in the first message: the keys, frequency and time zone"
                    )
            elif request.HasField("aggregation"):
                v.add(f"[{index}].aggregation", "only in the first message of the stream")
            v.raise_if_any("the sales stream is invalid (nothing was stored)")
            assert spec is not None
            lines.add(v, request, index, spec)
            v.raise_if_any("sales lines are invalid (nothing was stored)")
        if spec is None:
            raise InvalidArgumentError.for_field(
                "aggregation", "an empty stream: send the aggregation and lines"
            )
        frame, stockouts = lines.frames(spec)
        series, report = sales_mod.aggregate(frame, spec, stockouts, end_day(end))
        if report.periods > MAX_SALES_OBSERVATIONS:
            raise InvalidArgumentError.for_field(
                "lines",
                f"{report.series} series over {report.periods} periods; at most {MAX_SALES_OBSERVATIONS} per "
                "stream (split the stream by key)",
            )
        metas = [SeriesMeta(s.name, s.labels, spec.frequency, ValueKind.COUNT) for s in series]
        result = self.store.ingest(sales_mod.observations(series), metas)
        for outcome in ("inserted", "unchanged", "updated"):
            ingested_total.labels(outcome).inc(getattr(result, outcome))
        return trends_pb2.IngestSalesResponse(
            lines=report.lines,
            return_lines=report.return_lines,
            series=report.series,
            periods=report.periods,
            zero_periods=report.zero_periods,
            censored_periods=report.censored_periods,
            inserted=result.inserted,
            unchanged=result.unchanged,
            updated=result.updated,
            warnings=report.warnings,
        )

    # -- reading -------------------------------------------------------------------------------

    def ListSeries(
        self, request: trends_pb2.ListSeriesRequest, context: grpc.ServicerContext
    ) -> trends_pb2.ListSeriesResponse:
        v = Violations()
        v.check(0 <= request.page_size <= MAX_PAGE_SIZE, "page_size", f"must be 0..{MAX_PAGE_SIZE}")
        offset = limits.page_offset(v, request.page_token)
        v.raise_if_any()
        size = request.page_size or 100
        summaries, more = self.store.summaries(_filter(request.filter), offset, size)
        return trends_pb2.ListSeriesResponse(
            series=[
                _series_info(s.meta, s.observation_count, s.first_time_s, s.last_time_s) for s in summaries
            ],
            next_page_token=str(offset + size) if more else "",
        )

    def GetSeries(
        self, request: trends_pb2.GetSeriesRequest, context: grpc.ServicerContext
    ) -> trends_pb2.GetSeriesResponse:
        v = Violations()
        _check_key(v, request.series, "series")
        v.raise_if_any()
        meta, rows = self.store.observations(request.series)
        return trends_pb2.GetSeriesResponse(
            info=_series_info(meta, len(rows), rows[0].time_s if rows else 0, rows[-1].time_s if rows else 0),
            observations=[
                trends_pb2.Observation(
                    series=o.series,
                    time=_timestamp(o.time_s),
                    value=o.value,
                    external=o.external,
                    price=o.price,
                    discount=o.discount,
                    promotion=o.promotion,
                )
                for o in rows
            ],
        )

    # -- forecasting ---------------------------------------------------------------------------

    def _prepare(
        self,
        flt: trends_pb2.SeriesFilter,
        horizon: int,
        levels: Sequence[int],
        model: str,
        history_needed: int = forecasting.MIN_HISTORY,
    ) -> Prepared:
        v = Violations()
        v.check(
            1 <= horizon <= max(MAX_HORIZON.values()),
            "horizon",
            f"required, 1..{MAX_HORIZON[Frequency.WEEKLY]} for weekly, "
            f"1..{MAX_HORIZON[Frequency.DAILY]} for daily and 1..{MAX_HORIZON[Frequency.MONTHLY]} for "
            f"monthly series; got {horizon}",
        )
        v.check(len(levels) <= MAX_LEVELS, "levels", f"at most {MAX_LEVELS} interval levels")
        for i, level in enumerate(levels):
            v.check(1 <= level <= 99, f"levels[{i}]", f"a percentage 1..99, got {level}")
        v.check(
            model in ("", "auto", *forecasting.MODELS),
            "model",
            f"unknown model {model!r}; choose from auto, {', '.join(forecasting.MODELS)}",
        )
        for i, key in enumerate(flt.series):
            _check_key(v, key, f"filter.series[{i}]")
        v.raise_if_any()
        metas = self.store.resolve(_filter(flt))
        if len(metas) > MAX_SERIES_PER_FORECAST:
            raise InvalidArgumentError.for_field(
                "filter",
                f"selects {len(metas)} series; at most "
                f"{MAX_SERIES_PER_FORECAST} per request (narrow the filter)",
            )
        for frequency in {m.frequency for m in metas}:
            if horizon > MAX_HORIZON[frequency]:
                raise InvalidArgumentError.for_field(
                    "horizon",
                    f"{horizon} is beyond the limit of {MAX_HORIZON[frequency]} for "
                    f"{frequency.name.lower()} series",
                )
        data = self.store.load(metas)
        short = [(d.meta.series, len(d.values)) for d in data if len(d.values) < history_needed]
        if short:
            shown = ", ".join(f"{name!r} has {n}" for name, n in short[:5])
            more = f" (and {len(short) - 5} more)" if len(short) > 5 else ""
            raise InvalidArgumentError.for_field(
                "filter",
                f"too short history: {shown}{more} observations, {history_needed} needed"
                + (
                    f" (a backtest holds out horizon x windows = {history_needed - forecasting.MIN_HISTORY}"
                    " periods: use a shorter horizon or fewer windows, or leave these series out)"
                    if history_needed > forecasting.MIN_HISTORY
                    else "; from there up to two seasons a non-seasonal model is used, and said so in "
                    "the notes; leave these series out with the filter until they have more"
                ),
            )
        groups: dict[Frequency, list[SeriesData]] = {}
        for d in data:
            groups.setdefault(d.meta.frequency, []).append(d)
        return Prepared(groups, horizon, sorted(set(levels)) or list(forecasting.DEFAULT_LEVELS), model)

    def _run_forecast(
        self,
        prepared: Prepared,
        cancellation: Cancellation,
        progress: forecasting.ProgressFn | None = None,
    ) -> trends_pb2.ForecastResponse:
        if prepared.hierarchy:
            return self._run_hierarchical(prepared, cancellation, progress)
        response = trends_pb2.ForecastResponse()
        for frequency, data in prepared.groups.items():
            predictions = forecasting.predict(
                [d.values for d in data],
                [d.external for d in data],
                frequency.season_length,
                prepared.horizon,
                prepared.levels,
                prepared.model,
                [d.meta.kind is not ValueKind.INDEX for d in data],
                self.pool,
                progress,
                cancellation=cancellation,
                seasonalities=frequency.seasonalities,
                **_inputs(data, prepared),
            )
            for d, p in zip(data, predictions, strict=True):
                response.forecasts.append(_series_forecast(d, p))
                series_forecast_total.labels(p.model).inc()
        return response

    def _with_holidays(self, prepared: Prepared, country: str) -> Prepared:
        if not country:
            return prepared
        return dataclasses.replace(prepared, holiday_country=calendar_mod.check_country(country))

    def _with_future(self, prepared: Prepared, future: Sequence[trends_pb2.FutureCovariates]) -> Prepared:
        """Checks the planned covariates against the request's series and horizon."""
        if not future:
            return prepared
        v = Violations()
        selected = {d.meta.series for data in prepared.groups.values() for d in data}
        planned: dict[str, dict[str, np.ndarray]] = {}
        for i, entry in enumerate(future):
            path = f"future[{i}]"
            if entry.series not in selected:
                v.add(f"{path}.series", f"series {entry.series[:300]!r} is not among the forecast's series")
                continue
            if entry.series in planned:
                v.add(f"{path}.series", f"series {entry.series!r} is planned twice")
                continue
            values = {}
            for name in COVARIATES:
                given = list(getattr(entry, name))
                if not given:
                    continue
                if len(given) != prepared.horizon:
                    v.add(
                        f"{path}.{name}",
                        f"{len(given)} values; give one per step of the horizon ({prepared.horizon}) or none",
                    )
                    continue
                for k, value in enumerate(given):
                    if not _check_covariates(v, f"{path}.{name}[{k}]", {name: value}, named=False):
                        break
                values[name] = np.asarray(given, float)
            planned[entry.series] = values
        v.raise_if_any("the planned covariates are invalid")
        return dataclasses.replace(prepared, planned=planned)

    @staticmethod
    def _hierarchy_inputs(
        prepared: Prepared,
        data: Sequence[SeriesData],
        tree: hierarchy_mod.Hierarchy,
        bottom: np.ndarray,
        starts: Sequence[int],
    ) -> dict[str, Any]:
        """The nodes' inputs for forecasting.predict: the bottom series' stored and planned prices,
        discounts and promotions aggregated up the hierarchy, and the holidays (every node)."""
        length = bottom.shape[1]
        past: list[dict[str, np.ndarray]] = []
        for d in data:
            pad = length - len(d.values)
            # Before a series' first sale: no promotion, no discount, its first price.
            past.append(
                {
                    name: np.concatenate([np.full(pad, values[0] if name == "price" else 0.0), values])
                    for name, values in d.covariates.items()
                }
            )
        plans = [prepared.planned.get(d.meta.series, {}) for d in data]
        if not any(past) and not any(plans) and not prepared.holiday_country:
            return {}
        node_past, node_plan = hierarchy_mod.aggregate_inputs(tree, bottom, past, plans, prepared.horizon)
        node_past = [{n: v[start:] for n, v in p.items()} for p, start in zip(node_past, starts, strict=True)]
        if prepared.holiday_country:
            frequency = data[0].meta.frequency
            longest = data[int(np.argmax([len(d.values) for d in data]))]
            times = np.concatenate([longest.times_s, longest.future_times_s(prepared.horizon)])
            counts = calendar_mod.holiday_counts(prepared.holiday_country, times, frequency)
            for p, plan, start in zip(node_past, node_plan, starts, strict=True):
                p[calendar_mod.HOLIDAY] = counts[start:length]
                plan[calendar_mod.HOLIDAY] = counts[length:]
        return {"covariates": node_past, "planned": node_plan}

    def _with_hierarchy(self, prepared: Prepared, keys: Sequence[str], method: str) -> Prepared:
        """Checks a hierarchy request against the loaded series (see the proto for the rules)."""
        if not keys:
            if method:
                raise InvalidArgumentError.for_field("reconciliation", "only with a hierarchy")
            return prepared
        v = Violations()
        v.check(len(keys) <= MAX_HIERARCHY_LEVELS, "hierarchy", f"at most {MAX_HIERARCHY_LEVELS} levels")
        for i, key in enumerate(keys):
            v.check(0 < len(key) <= MAX_SERIES_KEY_CHARS, f"hierarchy[{i}]", "a label key, 1..256 characters")
        v.check(
            method in ("", *hierarchy_mod.METHODS),
            "reconciliation",
            f"unknown method {method!r}; choose from {', '.join(hierarchy_mod.METHODS)}",
        )
        v.raise_if_any()
        if len(prepared.groups) != 1:
            raise InvalidArgumentError.for_field(
                "filter", "a hierarchy needs series of one frequency (filter the others out)"
            )
        (data,) = prepared.groups.values()
        not_counts = [d.meta.series for d in data if d.meta.kind is not ValueKind.COUNT]
        if not_counts:
            raise InvalidArgumentError.for_field(
                "filter",
                f"a hierarchy adds series up, so they must be COUNT series: {not_counts[:5]} are not",
            )
        last = max(d.last_time_s for d in data)
        early = [d.meta.series for d in data if d.last_time_s != last]
        if early:
            raise InvalidArgumentError.for_field(
                "filter",
                f"every series of a hierarchy must reach the same last period ({_iso_day(last)}): "
                f"{early[:5]} end earlier (ingest their zero periods, e.g. with `atelier trends "
                "ingest-sales`, or filter them out)",
            )
        # Label checks (every bottom series carries every key) happen in hierarchy.build.
        tree = hierarchy_mod.build([d.meta.series for d in data], [d.meta.labels for d in data], keys)
        if method == "mint_shrink" and len(tree.nodes) > hierarchy_mod.MAX_MINT_NODES:
            raise InvalidArgumentError.for_field(
                "reconciliation",
                f"mint_shrink reconciles at most {hierarchy_mod.MAX_MINT_NODES} nodes (its covariance is "
                f"dense); this hierarchy has {len(tree.nodes)}: use wls_struct (the default here) or ols",
            )
        return dataclasses.replace(
            prepared,
            hierarchy=tuple(keys),
            reconciliation=method or hierarchy_mod.default_method(tree),
            tree=tree,
        )

    def _run_hierarchical(
        self, prepared: Prepared, cancellation: Cancellation, progress: forecasting.ProgressFn | None
    ) -> trends_pb2.ForecastResponse:
        ((frequency, data),) = prepared.groups.items()
        tree = prepared.tree
        assert tree is not None  # set by _with_hierarchy with the hierarchy
        # The bottom series on one grid ending at their common last period; before a series'
        # first observation it sold nothing (COUNT series), so it adds zeros.
        length = max(len(d.values) for d in data)
        bottom = np.zeros((len(data), length))
        for i, d in enumerate(data):
            bottom[i, length - len(d.values) :] = d.values
        nodes = tree.aggregate(bottom)
        # Each node is forecast from its first non-zero period (at least MIN_HISTORY periods).
        histories, starts = [], []
        for row in nodes:
            nonzero = np.flatnonzero(row)
            first = int(nonzero[0]) if nonzero.size else 0
            starts.append(min(first, length - forecasting.MIN_HISTORY))
            histories.append(row[starts[-1] :])
        inputs = self._hierarchy_inputs(prepared, data, tree, bottom, starts)
        base = forecasting.predict(
            histories,
            [None] * len(histories),
            frequency.season_length,
            prepared.horizon,
            prepared.levels,
            prepared.model,
            [True] * len(histories),
            self.pool,
            progress,
            cancellation=cancellation,
            seasonalities=frequency.seasonalities,
            **inputs,
        )
        cancellation.check()
        mean = np.vstack([p.mean for p in base])
        intervals = {
            lv: (np.vstack([p.intervals[lv][0] for p in base]), np.vstack([p.intervals[lv][1] for p in base]))
            for lv in prepared.levels
        }
        reconciled, reconciled_intervals = hierarchy_mod.reconcile(
            tree, mean, nodes, frequency.season_length, prepared.reconciliation, intervals, non_negative=True
        )
        longest = data[int(np.argmax([len(d.values) for d in data]))]
        response = trends_pb2.ForecastResponse()
        note = (
            f"reconciled with {prepared.reconciliation} over {len(tree.nodes)} nodes "
            f"({len(tree.bottom)} series); base model {base[0].model if base else ''}"
        )
        for k, name in enumerate(tree.nodes):
            node_data = SeriesData(
                SeriesMeta(name, {}, frequency, ValueKind.COUNT), longest.start_time_s, nodes[k], None
            )
            p = forecasting.Prediction(
                reconciled[k],
                {lv: (lo[k], hi[k]) for lv, (lo, hi) in reconciled_intervals.items()},
                base[k].model,
                [*base[k].notes, note],
            )
            forecast = _series_forecast(node_data, p)
            forecast.level = tree.node_levels[k]
            response.forecasts.append(forecast)
            series_forecast_total.labels(p.model).inc()
        return response

    def ForecastNewProducts(
        self, request: trends_pb2.ForecastNewProductsRequest, context: grpc.ServicerContext
    ) -> trends_pb2.ForecastNewProductsResponse:
        _check_new_products(request).raise_if_any()
        metas = [
            m
            for m in self.store.resolve(_filter(request.analogues), "analogues")
            if m.kind is ValueKind.COUNT
        ]
        if len({m.frequency for m in metas}) > 1:
            raise InvalidArgumentError.for_field(
                "analogues", "the analogue series must have one frequency (filter the others out)"
            )
        data = self.store.load(metas)
        past, not_launches = launch_mod.launches(
            [d.meta.series for d in data],
            [d.meta.labels for d in data],
            [d.start_time_s for d in data],
            [d.values for d in data],
        )
        if not past:
            raise InvalidArgumentError.for_field(
                "analogues",
                f"no past launch among {len(data)} COUNT series ({not_launches} were already selling when "
                "the data begins): ingest the sales of products launched during the data's span",
            )
        levels = sorted(set(request.levels)) or list(forecasting.DEFAULT_LEVELS)
        library = launch_mod.Library(past, list(request.attributes), request.horizon)
        response = trends_pb2.ForecastNewProductsResponse(series_not_launches=not_launches)
        for product in request.products:
            result = library.forecast(
                dict(product.labels), levels, request.min_analogues or launch_mod.DEFAULT_MIN_ANALOGUES
            )
            response.forecasts.append(
                trends_pb2.NewProductForecast(
                    id=product.id,
                    mean=result.mean.tolist(),
                    intervals=[
                        trends_pb2.Interval(level=lv, lower=lo.tolist(), upper=hi.tolist())
                        for lv, (lo, hi) in sorted(result.intervals.items())
                    ],
                    matched=result.matched,
                    analogue_count=result.analogues,
                    notes=result.notes,
                )
            )
        return response

    def Forecast(
        self, request: trends_pb2.ForecastRequest, context: grpc.ServicerContext
    ) -> trends_pb2.ForecastResponse:
        started = time.monotonic()
        cancellation = cancellation_from(context)
        prepared = self._prepare(request.filter, request.horizon, list(request.levels), request.model)
        prepared = self._with_hierarchy(prepared, request.hierarchy, request.reconciliation)
        prepared = self._with_future(prepared, request.future)
        prepared = self._with_holidays(prepared, request.holiday_country)
        response = self._run_forecast(prepared, cancellation)
        forecast_seconds.labels("Forecast").observe(time.monotonic() - started)
        return response

    def StartForecast(
        self, request: trends_pb2.StartForecastRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        # Validated and loaded here, in the caller's tenant, so bad input fails the call itself.
        prepared = self._prepare(request.filter, request.horizon, list(request.levels), request.model)
        prepared = self._with_hierarchy(prepared, request.hierarchy, request.reconciliation)
        prepared = self._with_future(prepared, request.future)
        prepared = self._with_holidays(prepared, request.holiday_country)
        count = sum(len(d) for d in prepared.groups.values())

        def run(handle: JobHandle) -> trends_pb2.ForecastResponse:
            started = time.monotonic()
            handle.progress(0.0, f"forecasting {count} series", 0, count)

            def report(fraction: float, message: str) -> None:
                handle.progress(fraction, message, int(fraction * count), count)

            response = self._run_forecast(prepared, handle.cancellation, report)
            forecast_seconds.labels("StartForecast").observe(time.monotonic() - started)
            return response

        return self.jobs.get(self.jobs.submit("forecast", run))

    def ClassifyTrends(
        self, request: trends_pb2.ClassifyTrendsRequest, context: grpc.ServicerContext
    ) -> trends_pb2.ClassifyTrendsResponse:
        v = Violations()
        v.check(
            math.isfinite(request.threshold) and 0 <= request.threshold < 10,
            "threshold",
            "a fraction 0..10 (0 means 0.05)",
        )
        v.check(0 <= request.top_movers <= MAX_TOP_MOVERS, "top_movers", f"must be 0..{MAX_TOP_MOVERS}")
        v.raise_if_any()
        cancellation = cancellation_from(context)
        threshold = request.threshold or classify_mod.HERMES_THRESHOLD
        label = request.category_label or "category"
        prepared = self._prepare(request.filter, 1, [80], "auto")
        prepared = self._with_holidays(prepared, request.holiday_country)
        response = trends_pb2.ClassifyTrendsResponse()
        everything: list[tuple[classify_mod.Classification, str]] = []
        for frequency, data in prepared.groups.items():
            year = YEAR_PERIODS[frequency]
            predictions = forecasting.predict(
                [d.values for d in data],
                [d.external for d in data],
                frequency.season_length,
                year,
                [80],
                "auto",
                [d.meta.kind is not ValueKind.INDEX for d in data],
                self.pool,
                calibrate=False,  # the class uses the mean only
                cancellation=cancellation,
                # The stored inputs; over the year ahead the defaults (last price, no promotion)
                # and the calendar's holidays.
                **_inputs(data, dataclasses.replace(prepared, horizon=year)),
            )
            results = classify_mod.classify(
                [d.meta.series for d in data],
                [d.values for d in data],
                [p.mean for p in predictions],
                [p.model for p in predictions],
                year,
                UNITS[frequency],
                threshold,
            )
            everything += [(c, d.meta.labels.get(label, "")) for c, d in zip(results, data, strict=True)]
        for c, _ in everything:
            classified_total.labels(c.trend.name.lower()).inc()
            response.trends.append(
                trends_pb2.TrendClassification(
                    series=c.series,
                    trend=trends_pb2.TrendClass.ValueType(int(c.trend)),
                    emerging=c.emerging,
                    yoy_change=_finite(c.yoy_change),
                    last_year_mean=c.last_year_mean,
                    next_year_mean=c.next_year_mean,
                    explanation=c.explanation,
                    model=c.model,
                )
            )
        movers = classify_mod.top_movers(
            [c for c, _ in everything], [cat for _, cat in everything], request.top_movers or 5
        )
        for category, (rising, declining) in movers.items():
            response.top_movers[category].rising.extend(rising)
            response.top_movers[category].declining.extend(declining)
        return response

    def ForecastDemand(
        self, request: trends_pb2.ForecastDemandRequest, context: grpc.ServicerContext
    ) -> trends_pb2.ForecastDemandResponse:
        cancellation = cancellation_from(context)
        prepared = self._prepare(request.filter, request.horizon, list(request.levels), "auto")
        prepared = self._with_future(prepared, request.future)
        prepared = self._with_holidays(prepared, request.holiday_country)
        response = trends_pb2.ForecastDemandResponse()
        for frequency, data in prepared.groups.items():
            results = demand_mod.forecast_demand(
                [d.values for d in data],
                frequency.season_length,
                prepared.horizon,
                prepared.levels,
                self.pool,
                cancellation,
                **_inputs(data, prepared),
            )
            for d, (p, _) in zip(data, results, strict=True):
                response.forecasts.append(_series_forecast(d, p))
                series_forecast_total.labels(p.model).inc()
        return response

    def Backtest(
        self, request: trends_pb2.BacktestRequest, context: grpc.ServicerContext
    ) -> trends_pb2.BacktestResponse:
        v = Violations()
        windows = request.windows or 1
        v.check(1 <= windows <= MAX_WINDOWS, "windows", f"must be 1..{MAX_WINDOWS} (0 means 1)")
        for i, name in enumerate(request.models):
            v.check(
                name in forecasting.MODELS,
                f"models[{i}]",
                f"unknown model {name!r}; choose from {', '.join(forecasting.MODELS)}",
            )
        v.raise_if_any()
        models = list(dict.fromkeys(request.models)) or list(forecasting.MODELS)
        cancellation = cancellation_from(context)
        prepared = self._prepare(
            request.filter,
            request.horizon,
            [80],
            "auto",
            history_needed=request.horizon * windows + forecasting.MIN_HISTORY,
        )
        prepared = self._with_holidays(prepared, request.holiday_country)
        response = trends_pb2.BacktestResponse()
        best: tuple[float, str] | None = None
        for frequency, data in prepared.groups.items():
            scores = backtest_mod.backtest(
                [d.values for d in data],
                [d.external for d in data],
                frequency.season_length,
                YEAR_PERIODS[frequency],
                prepared.horizon,
                windows,
                models,
                [d.meta.kind is not ValueKind.INDEX for d in data],
                self.pool,
                cancellation=cancellation,
                covariates=_history_inputs(data, request.holiday_country),
            )
            for s in scores:
                backtest_mase.labels(s.model).set(s.mase)
                if math.isfinite(s.mase) and (best is None or s.mase < best[0]) and len(prepared.groups) == 1:
                    best = (s.mase, s.model)
                response.scores.append(
                    trends_pb2.ModelScore(
                        model=s.model if len(prepared.groups) == 1 else f"{s.model}/{frequency.name.lower()}",
                        mase=_finite(s.mase),
                        class_accuracy=s.class_accuracy,
                        smape=s.smape,
                        series_count=s.series_count,
                    )
                )
        # With several frequencies there is no single best model; each score names its frequency.
        response.best_model = best[1] if best else ""
        return response


def _inputs(data: Sequence[SeriesData], prepared: Prepared) -> dict[str, Any]:
    """forecasting.predict's covariates and planned values: the stored inputs, the plans, and
    the public holidays of each period (history and horizon) when the request names a country."""
    covariates = [dict(d.covariates) for d in data]
    planned = [dict(prepared.planned.get(d.meta.series, {})) for d in data]
    if prepared.holiday_country:
        for d, past, plan in zip(data, covariates, planned, strict=True):
            times = np.concatenate([d.times_s, d.future_times_s(prepared.horizon)])
            counts = calendar_mod.holiday_counts(prepared.holiday_country, times, d.meta.frequency)
            past[calendar_mod.HOLIDAY] = counts[: len(d.values)]
            plan[calendar_mod.HOLIDAY] = counts[len(d.values) :]
    return {"covariates": covariates, "planned": planned}


def _history_inputs(data: Sequence[SeriesData], country: str) -> list[dict[str, np.ndarray]]:
    """Each series' stored inputs over its history, with its holidays when a country is named."""
    out = [dict(d.covariates) for d in data]
    if country:
        code = calendar_mod.check_country(country)
        for d, inputs in zip(data, out, strict=True):
            inputs[calendar_mod.HOLIDAY] = calendar_mod.holiday_counts(code, d.times_s, d.meta.frequency)
    return out


def _local_day(v: Violations, path: str, text: str) -> bool:
    """A "YYYY-MM-DD" day from 1900 up to 2100."""
    try:
        day = date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        day = None
    if day is None or not EARLIEST_TIME.year <= day.year < LATEST_TIME.year:
        v.add(path, f"{text[:40]!r} is not a local day YYYY-MM-DD from 1900 up to 2100")
        return False
    return True


def end_day(text: str) -> Any:
    import pandas as pd

    return pd.Timestamp(text) if text else None


def _sales_spec(
    v: Violations, msg: trends_pb2.SalesAggregation, path: str
) -> tuple[sales_mod.SalesSpec | None, str]:
    v.check(
        1 <= len(msg.keys) <= MAX_SALES_KEYS,
        f"{path}.keys",
        f"1..{MAX_SALES_KEYS} key names, e.g. sku, store",
    )
    v.check(len(msg.label_keys) <= MAX_SALES_KEYS, f"{path}.label_keys", f"at most {MAX_SALES_KEYS} names")
    names = [*msg.keys, *msg.label_keys]
    for i, key in enumerate(msg.keys):
        limits.check_text(v, f"{path}.keys[{i}]", key, MAX_LABEL_CHARS, required=True)
    for i, key in enumerate(msg.label_keys):
        limits.check_text(v, f"{path}.label_keys[{i}]", key, MAX_LABEL_CHARS, required=True)
    v.check(len(set(names)) == len(names), f"{path}.label_keys", "key and label names must all differ")
    v.check(msg.frequency in (0, *Frequency), f"{path}.frequency", f"unknown frequency {msg.frequency}")
    if msg.end_date:
        _local_day(v, f"{path}.end_date", msg.end_date)
    timezone = msg.timezone or "UTC"
    try:
        sales_mod.local_zone(timezone)
    except InvalidArgumentError:
        v.add(f"{path}.timezone", f"unknown time zone {timezone[:60]!r}; an IANA name such as Europe/Paris")
    if v:
        return None, ""
    spec = sales_mod.SalesSpec(
        keys=tuple(msg.keys),
        frequency=Frequency(msg.frequency or Frequency.WEEKLY),
        timezone=timezone,
        date_column="date",
        quantity_column="qty",
        value_column="amount",
        promo_column="promotion",
        label_columns=tuple(msg.label_keys),
        net_returns=msg.net_returns,
    )
    return spec, msg.end_date


class _SalesLines:
    """The lines of an IngestSales stream, validated per message and held by column."""

    def __init__(self) -> None:
        self.time_s: list[int] = []  # -1 where the line gives its local day
        self.day: list[str] = []
        self.keys: list[tuple[str, ...]] = []
        self.labels: list[tuple[str, ...]] = []
        self.qty: list[float] = []
        self.amount: list[float] = []  # NaN without one
        self.promotion: list[bool] = []
        self.out_day: list[str] = []
        self.out_keys: list[tuple[str, ...]] = []

    def add(
        self, v: Violations, request: trends_pb2.IngestSalesRequest, index: int, spec: sales_mod.SalesSpec
    ) -> None:
        where = f"[{index}]"
        for name, items, total, limit in (
            ("lines", request.lines, len(self.qty), MAX_SALES_LINES),
            ("stockouts", request.stockouts, len(self.out_day), MAX_STOCKOUT_DAYS),
        ):
            if len(items) > MAX_SALES_PER_MESSAGE:
                v.add(f"{where}.{name}", f"{len(items)} in one message; at most {MAX_SALES_PER_MESSAGE}")
            elif total + len(items) > limit:
                v.add(f"{where}.{name}", f"more than {limit} in one stream (split the stream by key)")
        if v:
            return
        for i, line in enumerate(request.lines):
            if len(v.items) >= MAX_LINE_VIOLATIONS:
                break
            path = f"{where}.lines[{i}]"
            ok = _sales_keys(v, f"{path}.keys", line.keys, spec.keys)
            if line.labels and len(line.labels) != len(spec.label_columns):
                ok = v.check(
                    False,
                    f"{path}.labels",
                    f"{len(line.labels)} values for {len(spec.label_columns)} label_keys",
                )
            for k, label in enumerate(line.labels):
                ok = limits.check_text(v, f"{path}.labels[{k}]", label, MAX_LABEL_CHARS) and ok
            has_time, has_day = line.HasField("time"), bool(line.local_date)
            if has_time == has_day:
                ok = v.check(False, f"{path}.time", "give exactly one of time and local_date")
            elif has_time:
                ok = (
                    limits.check_time(v, f"{path}.time", line.time, EARLIEST_TIME, LATEST_TIME) is not None
                    and ok
                )
            else:
                ok = _local_day(v, f"{path}.local_date", line.local_date) and ok
            ok = limits.check_number(v, f"{path}.quantity", line.quantity, MAX_ABS_VALUE) and ok
            if line.HasField("amount"):
                if limits.check_number(v, f"{path}.amount", line.amount, MAX_ABS_VALUE):
                    ok = (
                        v.check(
                            line.amount >= 0, f"{path}.amount", f"an amount paid, >= 0; got {line.amount}"
                        )
                        and ok
                    )
                else:
                    ok = False
            if not ok or v:
                continue  # once a line is wrong nothing is stored: stop collecting, keep checking
            self.time_s.append(int(line.time.seconds) if has_time else -1)
            self.day.append(line.local_date)
            self.keys.append(tuple(line.keys))
            self.labels.append(tuple(line.labels) or ("",) * len(spec.label_columns))
            self.qty.append(line.quantity)
            self.amount.append(line.amount if line.HasField("amount") else math.nan)
            self.promotion.append(line.promotion)
        for i, day in enumerate(request.stockouts):
            if len(v.items) >= MAX_LINE_VIOLATIONS:
                break
            path = f"{where}.stockouts[{i}]"
            if _sales_keys(v, f"{path}.keys", day.keys, spec.keys) & _local_day(
                v, f"{path}.local_date", day.local_date
            ):
                self.out_day.append(day.local_date)
                self.out_keys.append(tuple(day.keys))

    def frames(self, spec: sales_mod.SalesSpec) -> tuple[Any, Any]:
        """The lines as sales.aggregate's frame (local days) and the stock-out days."""
        import pandas as pd

        time_s = np.asarray(self.time_s, np.int64)
        timed = time_s >= 0
        days = pd.to_datetime(pd.Series(self.day, dtype=object).where(~timed, None), format="%Y-%m-%d")
        if timed.any():
            zone = sales_mod.local_zone(spec.timezone)
            local = pd.to_datetime(time_s[timed], unit="s", utc=True).tz_convert(zone).tz_localize(None)
            days[timed] = local.normalize()
        frame = pd.DataFrame(
            {"date": days, "qty": self.qty, "amount": self.amount, "promotion": self.promotion}
        )
        for k, key in enumerate(spec.keys):
            frame[key] = [values[k] for values in self.keys]
        for k, label in enumerate(spec.label_columns):
            frame[label] = [values[k] for values in self.labels]
        stockouts = pd.DataFrame(
            {"date": pd.to_datetime(pd.Series(self.out_day, dtype=object), format="%Y-%m-%d")}
        )
        for k, key in enumerate(spec.keys):
            stockouts[key] = [values[k] for values in self.out_keys]
        return frame, stockouts if self.out_day else None


def _sales_keys(v: Violations, path: str, values: Sequence[str], names: Sequence[str]) -> bool:
    """One non-empty value per key name, making a series name of at most 256 characters."""
    if len(values) != len(names):
        v.add(path, f"{len(values)} values for the {len(names)} keys ({', '.join(names)})")
        return False
    if not all(values):
        v.add(path, "every key value is required (non-empty)")
        return False
    name = sales_mod.series_name(names, values)
    if len(name) > MAX_SERIES_KEY_CHARS:
        v.add(
            path,
            f"the series name {name[:40]!r}... is {len(name)} characters; at most {MAX_SERIES_KEY_CHARS}",
        )
        return False
    return True


def _check_new_products(request: trends_pb2.ForecastNewProductsRequest) -> Violations:
    v = Violations()
    v.check(
        1 <= len(request.products) <= MAX_NEW_PRODUCTS,
        "products",
        f"1..{MAX_NEW_PRODUCTS} products, got {len(request.products)}",
    )
    seen: set[str] = set()
    for i, product in enumerate(request.products):
        if _check_key(v, product.id, f"products[{i}].id"):
            v.check(product.id not in seen, f"products[{i}].id", f"id {product.id!r} appears twice")
            seen.add(product.id)
        v.check(len(product.labels) <= MAX_LABELS, f"products[{i}].labels", f"at most {MAX_LABELS} labels")
    v.check(
        1 <= len(request.attributes) <= MAX_HIERARCHY_LEVELS,
        "attributes",
        f"1..{MAX_HIERARCHY_LEVELS} label keys, most specific first",
    )
    for i, key in enumerate(request.attributes):
        v.check(0 < len(key) <= MAX_SERIES_KEY_CHARS, f"attributes[{i}]", "a label key, 1..256 characters")
    v.check(
        1 <= request.horizon <= MAX_LAUNCH_HORIZON,
        "horizon",
        f"required, 1..{MAX_LAUNCH_HORIZON} periods from launch; got {request.horizon}",
    )
    v.check(len(request.levels) <= MAX_LEVELS, "levels", f"at most {MAX_LEVELS} interval levels")
    for i, level in enumerate(request.levels):
        v.check(1 <= level <= 99, f"levels[{i}]", f"a percentage 1..99, got {level}")
    v.check(0 <= request.min_analogues <= 1000, "min_analogues", "0..1000 (0 means 5)")
    for i, key in enumerate(request.analogues.series):
        _check_key(v, key, f"analogues.series[{i}]")
    return v


def _optional(msg: Any, name: str) -> float | None:
    """An optional double field's value, None when not set."""
    return float(getattr(msg, name)) if msg.HasField(name) else None


def _check_covariates(v: Violations, path: str, values: dict[str, float], named: bool = True) -> bool:
    """Price > 0 (at most MAX_ABS_VALUE); discount and promotion fractions 0..1."""
    ok = True
    for name, value in values.items():
        where = f"{path}.{name}" if named else path
        if not limits.check_number(v, where, value, MAX_ABS_VALUE):
            ok = False
        elif name == "price" and value <= 0:
            v.add(where, f"a price per unit must be > 0, got {value}")
            ok = False
        elif name != "price" and not 0 <= value <= 1:
            v.add(where, f"a {name} is a fraction 0..1 (1 = fully on {name}), got {value}")
            ok = False
    return ok


def _finite(value: float) -> float:
    # Protobuf carries nan, but JSON clients choke on it; a 0 with the explanation is clearer.
    return float(value) if math.isfinite(value) else 0.0


def _check_key(v: Violations, key: str, path: str) -> bool:
    if not key:
        v.add(path, "required: a series key")
        return False
    if len(key) > MAX_SERIES_KEY_CHARS:
        v.add(path, f"{len(key)} characters; at most {MAX_SERIES_KEY_CHARS}")
        return False
    return True


def _series_info(meta: SeriesMeta, count: int, first_s: int, last_s: int) -> trends_pb2.SeriesInfo:
    info = trends_pb2.SeriesInfo(
        series=meta.series,
        labels=meta.labels,
        frequency=trends_pb2.Frequency.ValueType(int(meta.frequency)),
        kind=trends_pb2.ValueKind.ValueType(int(meta.kind)),
        observation_count=count,
    )
    if count:
        info.first_time.CopyFrom(_timestamp(first_s))
        info.last_time.CopyFrom(_timestamp(last_s))
    return info


def _series_forecast(data: SeriesData, p: forecasting.Prediction) -> trends_pb2.SeriesForecast:
    notes = list(p.notes)
    if data.filled_periods:
        notes.append(
            f"{data.filled_periods} missing periods in the history were filled by linear interpolation"
        )
    return trends_pb2.SeriesForecast(
        series=data.meta.series,
        times=[_timestamp(int(t)) for t in data.future_times_s(len(p.mean))],
        mean=p.mean.tolist(),
        intervals=[
            trends_pb2.Interval(level=lv, lower=lo.tolist(), upper=hi.tolist())
            for lv, (lo, hi) in sorted(p.intervals.items())
        ],
        model=p.model,
        notes=notes,
    )


def _iso_day(time_s: int) -> str:
    return str(np.datetime64(int(time_s), "s").astype("datetime64[D]"))
