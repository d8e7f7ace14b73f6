"""Domain pieces without gRPC: the global model's bounded training set, interval scaling, the
intermittent-demand interval."""

from __future__ import annotations

import numpy as np
import pytest

from atelier.trends import demand, forecasting, global_model


def _series(seed: int, weeks: int = 209) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(weeks)
    return rng.uniform(5, 20) + 3 * np.sin(2 * np.pi * t / 52 + rng.uniform(0, 6)) + rng.normal(0, 0.3, weeks)


def test_global_model_training_rows_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    histories = [_series(k) for k in range(30)]
    seen: list[int] = []
    import lightgbm as lgb

    original = lgb.LGBMRegressor.fit

    def spy(self, x, y, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(len(x))
        return original(self, x, y, **kwargs)

    monkeypatch.setattr(lgb.LGBMRegressor, "fit", spy)
    config = global_model.GlobalModelConfig(threads=1, trees=60)
    train = [y[:-52] for y in histories]
    full = global_model.fit_predict(train, [None] * 30, 52, 52, config)
    monkeypatch.setattr(global_model, "MAX_TRAINING_ROWS", 10_000)
    capped = global_model.fit_predict(train, [None] * 30, 52, 52, config)
    # 157 weeks of training each: origins 105, 101, ..., 61 (every 4 weeks from the newest to the
    # first with two years before it and 8 weeks to learn from) = 12, x 52 steps x 30 series.
    assert seen[0] == 30 * 12 * 52 and seen[1] <= 10_000
    # Still a forecast of the seasonal shape: both within the noise of the truth's 2019 year.
    for forecasts in (full, capped):
        errors = [np.mean(np.abs(f - y[-52:])) for f, y in zip(forecasts, histories, strict=True)]
        assert float(np.mean(errors)) < 1.0


def test_scale_intervals_keeps_levels_nested() -> None:
    mean = np.array([10.0, 10.0])
    intervals = {
        80: (np.array([9.0, 9.0]), np.array([11.0, 11.0])),
        95: (np.array([8.5, 8.5]), np.array([11.5, 11.5])),
    }
    # 80% widened 2x (half-width 2) beyond the 95% one narrowed (1.5 x 0.9): the 95% is kept >= the 80%.
    out = forecasting._scale_intervals(mean, intervals, {80: 2.0, 95: 0.9})
    assert np.allclose(out[80][0], 8.0) and np.allclose(out[80][1], 12.0)
    assert np.allclose(out[95][0], 8.0) and np.allclose(out[95][1], 12.0)
    # The factor is the level-quantile of |error| / half-width, clipped; too few points: None.
    ratios = {80: [np.linspace(0, 2, 41)], 95: [np.linspace(0, 2, 41)]}
    factors = forecasting._calibration_factors(ratios, [80, 95])
    assert factors == pytest.approx({80: 1.6, 95: 1.9})
    assert forecasting._calibration_factors({80: [np.ones(5)]}, [80]) is None


def test_intermittent_demand_interval_by_hand() -> None:
    # Sizes 1, 1, 2, 4 (mean 2); a rate of 0.5 a period means demand in p = 0.25 of the periods.
    sizes = np.array([1.0, 1.0, 2.0, 4.0])
    lo, hi = demand.mixture_interval(np.array([0.5]), sizes, 80)
    # 10% quantile: inside the 75% of no demand -> 0. 90% quantile: (0.9 - 0.75) / 0.25 = 0.6
    # of the way through the sizes -> numpy's quantile of [1, 1, 2, 4] at 0.6 = 1.8.
    assert lo[0] == 0.0 and hi[0] == pytest.approx(1.8)
    assert demand.profile(np.array([0, 0, 3, 0, 3, 0, 0, 3.0])).demand_class == "intermittent"
    assert demand.profile(np.array([5, 6, 5, 7, 5, 6.0])).demand_class == "smooth"


def test_daily_mstl_uses_the_yearly_season_when_two_years_are_there() -> None:
    # Three years of daily data: a weekly cycle and a yearly one (summer high). 150 days ahead the
    # weekly-only model extrapolates the recent slope (error 8.6 when written); with the year, 0.5.
    rng = np.random.default_rng(5)
    t = np.arange(3 * 365)
    truth = lambda k: 50 + 10 * (k % 7 >= 5) + 20 * np.sin(2 * np.pi * k / 365)  # noqa: E731
    history = truth(t) + rng.normal(0, 1, len(t))
    pool = forecasting.FitPool(1)
    try:
        (weekly_only,) = forecasting.predict(
            [history], [None], 7, 150, [80], "mstl", [True], pool, calibrate=False
        )
        (both,) = forecasting.predict(
            [history], [None], 7, 150, [80], "mstl", [True], pool, calibrate=False, seasonalities=(7, 365)
        )
    finally:
        pool.close()
    future = truth(np.arange(len(t), len(t) + 150))
    error_weekly = np.mean(np.abs(weekly_only.mean - future))
    error_both = np.mean(np.abs(both.mean - future))
    assert error_both < 1.5 and error_both < error_weekly / 4


def test_large_requests_calibrate_on_a_spread_sample_of_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    histories = [_series(k, weeks=120) for k in range(40)]
    pool = forecasting.FitPool(1)
    calls = {"holdout": 0, "plain": 0}
    holdout, plain = pool.submit_with_holdout, pool.submit

    def count(kind, fn):  # type: ignore[no-untyped-def]
        def wrapper(*args):  # type: ignore[no-untyped-def]
            calls[kind] += 1
            return fn(*args)

        return wrapper

    monkeypatch.setattr(pool, "submit_with_holdout", count("holdout", holdout))
    monkeypatch.setattr(pool, "submit", count("plain", plain))
    monkeypatch.setattr(forecasting, "CALIBRATION_SERIES", 10)
    try:
        out = forecasting.predict(
            histories, [None] * 40, 52, 8, [80], "theta", [False] * 40, pool, chunk_size=5
        )
    finally:
        pool.close()
    # 8 chunks of 5; every 4th is held out: 2 chunks, 10 series, 80 holdout points (>= 30).
    assert calls == {"holdout": 2, "plain": 6}
    assert not any("uncalibrated" in note for p in out for note in p.notes)


class _FailsOnMarkedSeries:
    """The requested statsforecast model, except that it raises (or forecasts NaN) for a series
    holding the marker value: the test's stand-in for a series the model cannot fit (a 1e308 value
    made MSTL raise before the bounds existed; no bounded value is known to)."""

    def __init__(self, model, fail):  # type: ignore[no-untyped-def]
        self.model, self.fail = model, fail

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return repr(self.model)

    def new(self):  # type: ignore[no-untyped-def]
        return _FailsOnMarkedSeries(self.model.new(), self.fail)

    def forecast(self, y, h, X=None, X_future=None, level=None, fitted=False):  # type: ignore[no-untyped-def]
        # The explicit signature: statsforecast asks for intervals only from a model that takes `level`.
        kwargs = {"X": X, "X_future": X_future, "fitted": fitted, **({"level": level} if level else {})}
        if (y == 777.0).any():
            if self.fail == "raise":
                raise FloatingPointError("overflow in the model's state")
            out = self.model.forecast(y=y, h=h, **kwargs)
            out["mean"] = np.full(h, np.nan)
            return out
        return self.model.forecast(y=y, h=h, **kwargs)


def _in_process(pool: forecasting.FitPool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool's fits run in this process (the injected failure lives here, not in its workers)."""
    from concurrent.futures import Future

    def run(fn):  # type: ignore[no-untyped-def]
        def submit(*args):  # type: ignore[no-untyped-def]
            future: Future[object] = Future()
            future.set_result(fn(*args))
            return future

        return submit

    monkeypatch.setattr(pool, "submit", run(forecasting.fit_chunk))
    monkeypatch.setattr(pool, "submit_with_holdout", run(forecasting.fit_chunk_with_holdout))


@pytest.mark.parametrize("fail", ["raise", "nan"])
def test_one_failing_series_falls_back_without_failing_the_others(
    monkeypatch: pytest.MonkeyPatch, fail: str
) -> None:
    """Issue 14: one series whose model failed failed a whole multi-series Forecast (20 healthy
    series with it could not be forecast). Now it gets the naive model and says why."""
    healthy = [_series(k, weeks=120) for k in range(20)]
    bad = _series(99, weeks=120)
    bad[60] = 777.0
    original = forecasting._statsforecast_model
    monkeypatch.setattr(
        forecasting,
        "_statsforecast_model",
        lambda *args: _FailsOnMarkedSeries(original(*args), fail),
    )
    pool = forecasting.FitPool(1)
    _in_process(pool, monkeypatch)
    histories = [*healthy[:10], bad, *healthy[10:]]
    out = forecasting.predict(histories, [None] * 21, 52, 12, [80, 95], "auto", [False] * 21, pool)
    assert len(out) == 21
    for p in out:
        assert np.isfinite(p.mean).all() and all(
            np.isfinite(v).all() for iv in p.intervals.values() for v in iv
        )
    assert any("mstl" in n and "naive used in its place" in n for n in out[10].notes), out[10].notes
    assert not any("naive used" in n for i, p in enumerate(out) if i != 10 for n in p.notes), [
        p.notes for p in out
    ]
    # The healthy series' statistical fits are the ones they get without the bad series beside them.
    alone = forecasting.predict(
        healthy, [None] * 20, 52, 12, [80], "mstl", [False] * 20, pool, calibrate=False
    )
    mixed = forecasting.predict(
        histories, [None] * 21, 52, 12, [80], "mstl", [False] * 21, pool, calibrate=False
    )
    assert mixed[10].model == "naive" and mixed[10].mean == pytest.approx(np.full(12, bad[-1]))
    for a, m in zip(alone, mixed[:10] + mixed[11:], strict=True):
        assert a.model == m.model == "mstl" and np.allclose(a.mean, m.mean)
    pool.close()
