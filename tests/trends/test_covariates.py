"""Exogenous inputs (price, discount, promotion): stored per observation, used by the global model,
and planned over the horizon so that a forecast can be asked under a planned promotion."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
import sqlalchemy as sa

from atelier.runtime.server import Server
from atelier.trends import store as store_mod
from atelier.trends.server import build
from atelier.trends.v1 import trends_pb2, trends_pb2_grpc
from tests.trends.test_service import MONDAY_2015, WEEK_S, fields, ts, violations_of

HOLD_OUT = 13
WITH, WITHOUT = (("x-atelier-tenant", "with-promos"),), (("x-atelier-tenant", "without-promos"),)


@pytest.fixture
def stub(start_server: Callable[..., Server]) -> Iterator[trends_pb2_grpc.TrendsServiceStub]:
    server = start_server("trends", build)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield trends_pb2_grpc.TrendsServiceStub(channel)


def promoted_sales(seed: int, weeks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weekly units with a yearly season, lifted 70% in promotion weeks (about 1 in 8, at a 20%
    lower price); the noise is Poisson."""
    rng = np.random.default_rng(seed)
    t = np.arange(weeks)
    base = rng.uniform(15, 40) * (1 + 0.3 * np.sin(2 * np.pi * t / 52 + rng.uniform(0, 6)))
    promo = (rng.uniform(size=weeks) < 0.125).astype(float)
    price = np.where(promo > 0, 8.0, 10.0)
    return rng.poisson(base * (1 + 0.7 * promo)).astype(float), promo, price


def upload(
    stub: trends_pb2_grpc.TrendsServiceStub,
    series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    metadata: tuple[tuple[str, str], ...],
    covariates: bool,
) -> None:
    obs = []
    for name, (units, promo, price) in series.items():
        for k in range(len(units)):
            o = trends_pb2.Observation(series=name, time=ts(MONDAY_2015 + k * WEEK_S), value=units[k])
            if covariates:
                o.promotion, o.price = promo[k], price[k]
            obs.append(o)
    infos = [trends_pb2.SeriesInfo(series=n, kind=trends_pb2.VALUE_KIND_COUNT) for n in series]
    stub.IngestObservations(
        trends_pb2.IngestObservationsRequest(observations=obs, series=infos), metadata=metadata
    )


def test_planned_promotions_lift_the_forecast_and_improve_accuracy(
    stub: trends_pb2_grpc.TrendsServiceStub,
) -> None:
    full = {f"sku{i}": promoted_sales(i, 156) for i in range(16)}
    train = {n: (u[:-HOLD_OUT], p[:-HOLD_OUT], c[:-HOLD_OUT]) for n, (u, p, c) in full.items()}
    upload(stub, train, WITH, covariates=True)
    upload(stub, train, WITHOUT, covariates=False)
    plans = [
        trends_pb2.FutureCovariates(series=n, promotion=p[-HOLD_OUT:].tolist(), price=c[-HOLD_OUT:].tolist())
        for n, (_, p, c) in full.items()
    ]
    planned = stub.Forecast(
        trends_pb2.ForecastRequest(horizon=HOLD_OUT, future=plans), metadata=WITH, timeout=300
    )
    default = stub.Forecast(trends_pb2.ForecastRequest(horizon=HOLD_OUT), metadata=WITH, timeout=300)
    blind = stub.Forecast(trends_pb2.ForecastRequest(horizon=HOLD_OUT), metadata=WITHOUT, timeout=300)
    by = {name: {f.series: np.array(f.mean) for f in r.forecasts} for name, r in
          (("planned", planned), ("default", default), ("blind", blind))}  # fmt: skip
    assert {f.model for f in planned.forecasts} == {"ensemble"}
    errors: dict[str, list[float]] = {"planned": [], "default": [], "blind": []}
    for name, (units, promo, _) in full.items():
        future_promo = promo[-HOLD_OUT:] > 0
        lift = by["planned"][name] - by["default"][name]
        # Higher in exactly the planned weeks; the same forecast in the others (same model, same
        # features there).
        assert np.all(lift[future_promo] > 0.15 * by["default"][name][future_promo]), (name, lift)
        np.testing.assert_allclose(lift[~future_promo], 0.0, atol=1e-6)
        for variant in errors:
            errors[variant] += list(np.abs(by[variant][name] - units[-HOLD_OUT:])[future_promo])
    assert len(errors["planned"]) >= 15  # enough held-out promotion weeks to compare
    mae = {variant: float(np.mean(e)) for variant, e in errors.items()}
    # The lift is 70%: knowing the promotion must remove most of the error in those weeks.
    assert mae["planned"] < 0.6 * mae["blind"], mae
    assert mae["planned"] < 0.6 * mae["default"], mae


def test_short_histories_use_their_promotions(stub: trends_pb2_grpc.TrendsServiceStub) -> None:
    # About a year of history (under two seasons): non-seasonal ETS, which cannot use the plan
    # itself, gets the plan's effect from the global model trained without last-year features.
    full = {f"new{i}": promoted_sales(100 + i, 60) for i in range(12)}
    upload(stub, {n: (u[:-8], p[:-8], c[:-8]) for n, (u, p, c) in full.items()}, WITH, covariates=True)
    plan = np.zeros(8)
    plan[[2, 5]] = 1.0
    reply = stub.Forecast(
        trends_pb2.ForecastRequest(
            horizon=8, future=[trends_pb2.FutureCovariates(series="new0", promotion=plan.tolist())]
        ),
        metadata=WITH,
        timeout=300,
    )
    by = {f.series: f for f in reply.forecasts}
    f = by["new0"]
    assert f.model == "ets_nonseasonal+inputs" and any("inputs' effect" in n for n in f.notes)
    mean = np.array(f.mean)
    assert mean[2] > 1.15 * np.delete(mean, [2, 5]).mean() and mean[5] > 1.15 * np.delete(mean, [2, 5]).mean()


def test_covariates_are_stored_and_validated(stub: trends_pb2_grpc.TrendsServiceStub) -> None:
    obs = [
        trends_pb2.Observation(
            series="a", time=ts(MONDAY_2015 + k * WEEK_S), value=5.0 + k, price=9.5, promotion=0.25
        )
        for k in range(20)
    ]
    request = trends_pb2.IngestObservationsRequest(observations=obs)
    assert stub.IngestObservations(request).inserted == 20
    assert stub.IngestObservations(request).unchanged == 20
    # A value-only re-upload keeps the stored covariates; a new discount is a correction.
    again = trends_pb2.IngestObservationsRequest(
        observations=[trends_pb2.Observation(series="a", time=ts(MONDAY_2015), value=5.0)]
    )
    assert stub.IngestObservations(again).unchanged == 1
    again.observations[0].discount = 0.3
    assert stub.IngestObservations(again).updated == 1
    stored = stub.GetSeries(trends_pb2.GetSeriesRequest(series="a")).observations
    assert (stored[0].price, stored[0].promotion, stored[0].discount) == (9.5, 0.25, pytest.approx(0.3))
    assert not stored[1].HasField("discount") and not stored[1].HasField("external")

    bad = trends_pb2.IngestObservationsRequest(
        observations=[
            trends_pb2.Observation(series="a", time=ts(MONDAY_2015), value=1, price=0),
            trends_pb2.Observation(series="a", time=ts(MONDAY_2015 + WEEK_S), value=1, promotion=1.5),
            trends_pb2.Observation(series="a", time=ts(MONDAY_2015 + 2 * WEEK_S), value=1, discount=-0.1),
        ]
    )
    assert fields(violations_of(lambda: stub.IngestObservations(bad))) == [
        "observations[0].price",
        "observations[1].promotion",
        "observations[2].discount",
    ]
    nan = trends_pb2.IngestObservationsRequest(
        observations=[trends_pb2.Observation(series="a", time=ts(MONDAY_2015), value=1, price=float("nan"))]
    )
    assert fields(violations_of(lambda: stub.IngestObservations(nan))) == ["observations[0].price"]
    some = trends_pb2.SeriesFilter(series=["a"])

    def forecast(*future: trends_pb2.FutureCovariates, **extra: object) -> object:
        return stub.Forecast(trends_pb2.ForecastRequest(filter=some, horizon=4, future=future, **extra))  # type: ignore[arg-type]

    assert fields(
        violations_of(lambda: forecast(trends_pb2.FutureCovariates(series="b", promotion=[1] * 4)))
    ) == ["future[0].series"]
    assert fields(
        violations_of(lambda: forecast(trends_pb2.FutureCovariates(series="a", promotion=[1] * 3)))
    ) == ["future[0].promotion"]
    assert fields(
        violations_of(lambda: forecast(trends_pb2.FutureCovariates(series="a", price=[1, 1, -2, 1])))
    ) == ["future[0].price[2]"]
    twice = trends_pb2.FutureCovariates(series="a", discount=[0.1] * 4)
    assert fields(violations_of(lambda: forecast(twice, twice))) == ["future[1].series"]


def test_migration_adds_the_covariate_columns(tmp_path: object) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/old.db")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE trends_observations (tenant_id VARCHAR(128), series VARCHAR(256), "
                "time_s BIGINT, value FLOAT, external FLOAT)"
            )
        )
        conn.execute(sa.text("INSERT INTO trends_observations VALUES ('t', 's', 0, 1.0, NULL)"))
        store_mod._add_covariate_columns(conn)
        store_mod._add_covariate_columns(conn)  # idempotent: a fresh table already has them
        have = {c["name"] for c in sa.inspect(conn).get_columns("trends_observations")}
        row = conn.execute(sa.text("SELECT value, price, discount, promotion FROM trends_observations")).one()
    assert set(store_mod.COVARIATES) <= have
    assert tuple(row) == (1.0, None, None, None)


def test_backtest_and_classification_use_the_inputs(stub: trends_pb2_grpc.TrendsServiceStub) -> None:
    full = {f"sku{i}": promoted_sales(i, 156) for i in range(16)}
    upload(stub, full, WITH, covariates=True)
    upload(stub, full, WITHOUT, covariates=False)
    request = trends_pb2.BacktestRequest(horizon=HOLD_OUT, windows=1, models=["gbm"])
    with_inputs = stub.Backtest(request, metadata=WITH, timeout=300).scores[0]
    blind = stub.Backtest(request, metadata=WITHOUT, timeout=300).scores[0]
    # Each window's own promotions are its plan: the 70% lifts are foreseen.
    assert with_inputs.mase < 0.85 * blind.mase, (with_inputs.mase, blind.mase)
    bad = trends_pb2.BacktestRequest(horizon=HOLD_OUT, models=["gbm"], holiday_country="XX")
    assert fields(violations_of(lambda: stub.Backtest(bad, metadata=WITH))) == ["holiday_country"]
    classify = trends_pb2.ClassifyTrendsRequest(holiday_country="XX")
    assert fields(violations_of(lambda: stub.ClassifyTrends(classify, metadata=WITH))) == ["holiday_country"]
    classify.holiday_country = "US"
    assert len(stub.ClassifyTrends(classify, metadata=WITH, timeout=300).trends) == 16


def test_demand_forecast_takes_the_plan(stub: trends_pb2_grpc.TrendsServiceStub) -> None:
    full = {f"sku{i}": promoted_sales(200 + i, 156) for i in range(12)}
    upload(stub, full, WITH, covariates=True)
    plan = np.zeros(8)
    plan[[1, 4]] = 1.0
    some = trends_pb2.SeriesFilter(series=list(full))
    future = [trends_pb2.FutureCovariates(series="sku0", promotion=plan.tolist())]
    planned = stub.ForecastDemand(
        trends_pb2.ForecastDemandRequest(filter=some, horizon=8, future=future), metadata=WITH, timeout=300
    )
    default = stub.ForecastDemand(
        trends_pb2.ForecastDemandRequest(filter=some, horizon=8), metadata=WITH, timeout=300
    )
    by = {f.series: f for f in planned.forecasts}
    before = {f.series: np.array(f.mean) for f in default.forecasts}
    assert by["sku0"].model == "smooth:ensemble", by["sku0"].model
    lift = np.array(by["sku0"].mean) - before["sku0"]
    assert np.all(lift[[1, 4]] > 0.15 * before["sku0"][[1, 4]]), lift
    np.testing.assert_allclose(np.delete(lift, [1, 4]), 0.0, atol=1e-6)
    bad = trends_pb2.ForecastDemandRequest(
        filter=some, horizon=8, future=[trends_pb2.FutureCovariates(series="x")]
    )
    assert fields(violations_of(lambda: stub.ForecastDemand(bad, metadata=WITH))) == ["future[0].series"]
