"""Public holidays by country (holiday_country) as known inputs of the global model: learned from
the history, applied over the horizon; unknown countries refused."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pandas as pd
import pytest

from atelier.runtime.server import Server
from atelier.trends.calendar import check_country, holiday_counts
from atelier.trends.server import build
from atelier.trends.store import Frequency
from atelier.trends.v1 import trends_pb2, trends_pb2_grpc
from tests.trends.test_service import fields, ts, violations_of

HORIZON = 61  # November and December 2024: Veterans Day, Thanksgiving, Christmas


@pytest.fixture
def stub(start_server: Callable[..., Server]) -> Iterator[trends_pb2_grpc.TrendsServiceStub]:
    server = start_server("trends", build)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield trends_pb2_grpc.TrendsServiceStub(channel)


def test_holiday_counts_per_period() -> None:
    days = pd.date_range("2024-12-20", "2025-01-02").asi8 // 10**9
    daily = holiday_counts("US", days, Frequency.DAILY)
    assert list(np.flatnonzero(daily)) == [5, 12]  # Christmas, New Year's Day
    weeks = pd.date_range("2024-11-04", periods=4, freq="W-MON").asi8 // 10**9
    assert list(holiday_counts("US", weeks, Frequency.WEEKLY)) == [0, 1, 0, 1]  # Nov 11, Nov 28
    months = pd.date_range("2024-11-01", periods=2, freq="MS").asi8 // 10**9
    assert list(holiday_counts("FR", months, Frequency.MONTHLY)) == [2, 1]  # Nov 1 and 11; Dec 25
    assert check_country("fr") == "FR"


def test_holidays_are_learned_and_lower_the_error(stub: trends_pb2_grpc.TrendsServiceStub) -> None:
    # 12 shops' daily sales, a weekly pattern; US public holidays triple the day's sales and lift
    # the day before by half. About 700 days of history (under two years: weekly MSTL), then the
    # last two months of 2024 held out.
    days = pd.date_range(end="2024-12-31", periods=700 + HORIZON)
    times = days.asi8 // 10**9
    holiday = holiday_counts("US", times, Frequency.DAILY)
    eve = np.append(holiday[1:], 0.0)
    rng = np.random.default_rng(7)
    full = {}
    for k in range(12):
        weekday = 1 + 0.3 * np.sin(2 * np.pi * (np.arange(len(days)) + k) / 7)
        mean = rng.uniform(20, 60) * weekday * (1 + 2.0 * holiday + 0.5 * eve)
        full[f"shop{k}"] = rng.poisson(mean).astype(float)
    obs = [
        trends_pb2.Observation(series=name, time=ts(int(t)), value=v)
        for name, values in full.items()
        for t, v in zip(times[:-HORIZON], values[:-HORIZON], strict=True)
    ]
    infos = [
        trends_pb2.SeriesInfo(
            series=n, kind=trends_pb2.VALUE_KIND_COUNT, frequency=trends_pb2.FREQUENCY_DAILY
        )
        for n in full
    ]
    stub.IngestObservations(trends_pb2.IngestObservationsRequest(observations=obs, series=infos))
    with_h = stub.Forecast(trends_pb2.ForecastRequest(horizon=HORIZON, holiday_country="US"), timeout=300)
    without = stub.Forecast(trends_pb2.ForecastRequest(horizon=HORIZON), timeout=300)
    assert {f.model for f in with_h.forecasts} == {"ensemble"}
    future_holiday = holiday[-HORIZON:] > 0
    assert future_holiday.sum() == 3
    errors: dict[str, list[float]] = {"with": [], "without": []}
    for name, reply in (("with", with_h), ("without", without)):
        for f in reply.forecasts:
            actual = full[f.series][-HORIZON:]
            mean = np.array(f.mean)
            errors[name].append(float(np.mean(np.abs(mean - actual)[future_holiday])))
            everyday = ~future_holiday & ~np.append(future_holiday[1:], False)
            errors.setdefault(f"{name}_everyday", []).append(float(np.mean(np.abs(mean - actual)[everyday])))
            if name == "with":
                # The forecast rises on the holidays themselves.
                assert np.all(mean[future_holiday] > 1.5 * np.median(mean)), (f.series, mean[future_holiday])
    mae = {k: float(np.mean(v)) for k, v in errors.items()}
    assert mae["with"] < 0.5 * mae["without"], mae
    # And the other days are no worse for it.
    assert mae["with_everyday"] < 1.1 * mae["without_everyday"], mae


def test_unknown_country_is_invalid(stub: trends_pb2_grpc.TrendsServiceStub) -> None:
    obs = [
        trends_pb2.Observation(series="a", time=ts(1_420_416_000 + k * 86_400), value=1.0 + k % 7)
        for k in range(30)
    ]
    info = trends_pb2.SeriesInfo(series="a", frequency=trends_pb2.FREQUENCY_DAILY)
    stub.IngestObservations(trends_pb2.IngestObservationsRequest(observations=obs, series=[info]))
    for code in ("XX", "Atlantis", ""):
        request = trends_pb2.ForecastRequest(horizon=7, holiday_country=code, model="naive")
        if code:
            assert fields(violations_of(lambda r=request: stub.Forecast(r))) == ["holiday_country"]
            start = trends_pb2.StartForecastRequest(horizon=7, holiday_country=code)
            assert fields(violations_of(lambda s=start: stub.StartForecast(s))) == ["holiday_country"]
        else:
            assert len(stub.Forecast(request).forecasts[0].mean) == 7
