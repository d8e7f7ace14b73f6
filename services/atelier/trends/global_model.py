"""A global gradient-boosted model over all series of a request (LightGBM), direct multi-step.

Why a global model: one tenant's trend series share their shapes (yearly seasonality, slow
drifts, the lead of fashion-forward influencers), and with 4-5 years per series a model that
learns across series beats fitting each one alone; on the backtest year of the Heuritech sample
(2018, forecast from 2015-2017) it scored a seasonal MASE of ~0.68 against ~0.72-0.75 for the
best per-series statsforecast models (see README.md).

Each training row is (series, forecast origin T, step h): the features describe the history up
to T, normalised by the mean of its last season, and the target is y[T+h-1] over that mean. The
loss is L1, weighted by level / MASE scale, so the model minimises the benchmark's MASE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from atelier.runtime.context import Cancellation

FEATURES = (
    "step",
    "same_period_last_year",
    "same_period_last_year_smoothed",
    "same_period_two_years",
    "same_period_two_years_smoothed",
    "window_last_year",
    "level_13",
    "level_4",
    "level_26",
    "previous_season_level",
    "momentum_13",
    "external_level_13",
    "external_previous_season",
    "external_momentum_13",
)
# With exogenous inputs (any series of the request has a price, discount or promotion): the
# planned values at the target period, against the series' own recent ones, so the model learns
# the lift of a promotion or a price cut from every series' past promotions.
COVARIATE_FEATURES = (
    "promotion",
    "discount",
    "relative_price",
    "promotion_recent_13",
    "promotion_same_period_last_year",
    "discount_recent_13",
)
# With public holidays (a request's holiday_country; calendar.py): the number of holidays in the
# target period and in the periods just after and before it (the eve and the day after move
# retail demand as much as the day itself).
HOLIDAY = "holiday"
HOLIDAY_FEATURES = ("holiday", "holiday_next", "holiday_previous")
# Short histories (under two seasons; only for series with exogenous inputs): the first forecast
# origin of the training rows; the same-period-last-year features are missing where no year is
# there (LightGBM learns a branch for missing values).
SHORT_FIRST_ORIGIN = 13


# Training rows at most (a row per series, origin and step): with many series the origins are
# spaced further apart, so time and memory stay bounded (LightGBM's time grows with the rows;
# 2M rows took ~250 s on the shared 2-core machine). The Heuritech benchmark's 100 series make
# 130,000 rows, so this only bites from about 400 series of that length.
MAX_TRAINING_ROWS = 500_000


@dataclass(frozen=True)
class GlobalModelConfig:
    trees: int = 250
    learning_rate: float = 0.04
    leaves: int = 15
    min_rows_per_leaf: int = 50
    # Forecast origins every this many periods in the training history.
    origin_step: int = 4
    seed: int = 0
    threads: int = 2


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    pad = width // 2
    padded = np.pad(values, (pad, pad), mode="edge")
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def _level(values: np.ndarray, season: int) -> float:
    level = float(values[-season:].mean())
    if level <= 0:
        level = float(np.abs(values).mean())
    return level if level > 0 else 1e-9


def features(
    y: np.ndarray,
    external: np.ndarray | None,
    origin: int,
    horizon: int,
    season: int,
    covariates: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, float]:
    """Feature rows for steps 1..horizon from the history y[:origin]; and the normalising level.

    covariates: None (no exogenous features: FEATURES only), or the series' covariates over its
    history and the horizon (arrays of at least origin + horizon values; a missing name: none).
    """
    history = y[:origin]
    level = _level(history, season)
    yn = history / level
    smooth = _smooth(yn, 5)
    steps = np.arange(1, horizon + 1)
    target = origin + steps - 1
    # The same period in the last observed year(s): lag season*ceil(h/season) stays in the history.
    lag = season * np.ceil(steps / season).astype(int)
    last = target - lag
    two = last - season
    nan = np.full(horizon, np.nan)
    width = len(FEATURES) + _covariate_width(covariates)
    rows = np.empty((horizon, width))
    rows[:, 0] = steps
    # last < 0 only for short histories (short=True in fit_predict): no same period last year.
    has_last = last >= 0
    rows[:, 1] = np.where(has_last, yn[np.maximum(last, 0)], nan)
    rows[:, 2] = np.where(has_last, smooth[np.maximum(last, 0)], nan)
    rows[:, 3] = np.where(two >= 0, yn[np.maximum(two, 0)], nan)
    rows[:, 4] = np.where(two >= 0, smooth[np.maximum(two, 0)], nan)
    cumulative = np.concatenate([[0.0], np.cumsum(yn)])
    lo, hi = np.maximum(last - 4, 0), np.minimum(np.maximum(last + 5, 1), origin)
    rows[:, 5] = np.where(has_last, (cumulative[hi] - cumulative[lo]) / np.maximum(hi - lo, 1), nan)
    rows[:, 6] = yn[-13:].mean()
    rows[:, 7] = yn[-4:].mean()
    rows[:, 8] = yn[-26:].mean()
    rows[:, 9] = yn[-2 * season : -season].mean() if origin >= 2 * season else np.nan
    rows[:, 10] = (
        yn[-13:].mean() / max(yn[-season - 13 : -season].mean(), 1e-6) if origin >= season + 13 else np.nan
    )
    if external is None:
        rows[:, 11:14] = np.nan
    else:
        x = external[:origin]
        xn = x / _level(x, season)
        rows[:, 11] = xn[-13:].mean()
        rows[:, 12] = xn[-2 * season : -season].mean() if origin >= 2 * season else np.nan
        rows[:, 13] = (
            xn[-13:].mean() / max(xn[-season - 13 : -season].mean(), 1e-6)
            if origin >= season + 13
            else np.nan
        )
    if covariates is not None:
        rows[:, len(FEATURES) :] = _covariate_features(covariates, origin, target, last, horizon)
    return rows, level


def _covariate_width(covariates: dict[str, np.ndarray] | None) -> int:
    """Feature columns of the covariates: none, the six of COVARIATE_FEATURES, and the holidays'
    three when given (every series of a request has them or none does)."""
    if covariates is None:
        return 0
    return len(COVARIATE_FEATURES) + (len(HOLIDAY_FEATURES) if HOLIDAY in covariates else 0)


def _covariate_features(
    covariates: dict[str, np.ndarray], origin: int, target: np.ndarray, last: np.ndarray, horizon: int
) -> np.ndarray:
    out = np.full((horizon, _covariate_width(covariates)), np.nan)
    zeros = np.zeros(origin + horizon)
    promotion = covariates.get("promotion", zeros)
    discount = covariates.get("discount", zeros)
    out[:, 0] = promotion[target]
    out[:, 1] = discount[target]
    price = covariates.get("price")
    if price is not None:
        recent = float(np.mean(price[max(0, origin - 13) : origin]))
        out[:, 2] = price[target] / recent if recent > 0 else np.nan
    out[:, 3] = float(np.mean(promotion[max(0, origin - 13) : origin]))
    out[:, 4] = np.where(last >= 0, promotion[np.maximum(last, 0)], np.nan)
    out[:, 5] = float(np.mean(discount[max(0, origin - 13) : origin]))
    holiday = covariates.get(HOLIDAY)
    if holiday is not None:
        k = len(COVARIATE_FEATURES)
        out[:, k] = holiday[target]
        after, before = target + 1, target - 1
        out[:, k + 1] = np.where(after < len(holiday), holiday[np.minimum(after, len(holiday) - 1)], np.nan)
        out[:, k + 2] = np.where(before >= 0, holiday[np.maximum(before, 0)], np.nan)
    return out


def recent_inputs(history: dict[str, np.ndarray], n: int, horizon: int) -> dict[str, np.ndarray]:
    """The series' usual inputs over the horizon: each covariate's mean over the last 13 periods
    of its history. A statistical model's level reflects them (its history holds the usual share
    of promotion weeks), so the planned inputs' effect for it is measured against these."""
    return {
        name: np.full(horizon, float(np.mean(np.asarray(values, float)[max(0, n - 13) : n])))
        for name, values in history.items()
    }


def with_future(
    history: dict[str, np.ndarray], planned: dict[str, np.ndarray], n: int, horizon: int
) -> dict[str, np.ndarray]:
    """A series' covariates over its n history periods and the horizon: the planned values where
    given, else the defaults: the last price, no discount, no promotion (no holiday: the caller
    gives the holidays' future, which the calendar knows)."""
    out = {}
    for name in ("price", "discount", "promotion", HOLIDAY):
        past = history.get(name)
        future = planned.get(name)
        if past is None and future is None:
            continue
        if past is None:
            # Planned but never observed: the history had none (a price: unknown, so missing).
            past = np.full(n, np.nan) if name == "price" else np.zeros(n)
        if future is None or len(future) == 0:
            future = np.full(horizon, past[-1] if name == "price" else 0.0)
        out[name] = np.concatenate([np.asarray(past, float)[:n], np.asarray(future, float)[:horizon]])
    return out


def _longest_lag(horizon: int, season: int) -> int:
    return season * math.ceil(horizon / season)


def predictable(n: int, horizon: int, season: int) -> bool:
    """Whether a history of n periods has the same periods of last year for every step."""
    return n >= _longest_lag(horizon, season)


def trainable(n: int, horizon: int, season: int, short: bool = False) -> bool:
    """Whether a history of n periods yields at least one training origin."""
    return n - horizon >= (SHORT_FIRST_ORIGIN if short else _longest_lag(horizon, season) + 8)


def preload() -> None:
    """Imports LightGBM (and the scipy/pandas it pulls in: seconds on a busy machine) ahead of the
    first request, whose deadline cannot interrupt an import."""
    import lightgbm  # noqa: F401


def fit_predict(
    histories: list[np.ndarray],
    externals: list[np.ndarray | None],
    horizon: int,
    season: int,
    config: GlobalModelConfig = GlobalModelConfig(),
    cancellation: Cancellation | None = None,
    covariates: list[dict[str, np.ndarray]] | None = None,
    baselines: list[dict[str, np.ndarray]] | None = None,
    short: bool = False,
) -> list[np.ndarray]:
    """Trains one model on every series' own past and forecasts each series' next horizon steps.

    Every history must be predictable() (unless short); at least one must be trainable().
    cancellation is checked per series while the rows are built and after every boosting round.
    covariates: per series, its exogenous inputs over history and horizon (with_future); the
    model then uses COVARIATE_FEATURES too. baselines: the same with the default future (no
    promotion, last price): the forecasts under them follow the planned ones in the returned list
    (2 x len(histories) arrays), so a caller can tell the planned inputs' effect.
    short: histories under two seasons (the same-period-last-year features missing).
    """
    import lightgbm as lgb  # imported here: a 1 s import the other models do not need

    first_origin = SHORT_FIRST_ORIGIN if short else _longest_lag(horizon, season) + 8
    every_origin = sum(
        len(y) - horizon - first_origin + 1 for y in histories if trainable(len(y), horizon, season, short)
    )
    step = max(config.origin_step, math.ceil(every_origin * horizon / MAX_TRAINING_ROWS))
    covs: list[dict[str, np.ndarray] | None] = (
        list(covariates) if covariates is not None else [None] * len(histories)
    )
    blocks, targets, weights = [], [], []
    for y, x, cov in zip(histories, externals, covs, strict=True):
        n = len(y)
        if cancellation is not None:
            cancellation.check()
        if not trainable(n, horizon, season, short):
            continue
        scale = float(np.mean(np.abs(y[season:] - y[:-season]))) if n > season else 0.0
        scale = scale if scale > 0 else max(float(np.abs(y).mean()), 1e-9)
        # Origins from the newest backwards, so the most recent history is always used.
        for origin in range(n - horizon, first_origin - 1, -step):
            rows, level = features(y, x, origin, horizon, season, cov)
            blocks.append(rows)
            targets.append(y[origin : origin + horizon] / level)
            weights.append(np.full(horizon, level / scale))
    if not blocks:
        raise ValueError("no series is long enough to train the global model")
    model = lgb.LGBMRegressor(
        objective="l1",
        n_estimators=config.trees,
        learning_rate=config.learning_rate,
        num_leaves=config.leaves,
        min_child_samples=config.min_rows_per_leaf,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        random_state=config.seed,
        n_jobs=config.threads,
        verbose=-1,
    )
    callbacks = []
    if cancellation is not None:
        # LightGBM passes on what a callback raises: training stops after the current round.
        callbacks.append(lambda _env: cancellation.check())
    model.fit(
        np.vstack(blocks), np.concatenate(targets), sample_weight=np.concatenate(weights), callbacks=callbacks
    )
    forecasts = []
    for futures in (covs, baselines):
        if futures is None:
            continue
        for y, x, cov in zip(histories, externals, futures, strict=True):
            rows, level = features(y, x, len(y), horizon, season, cov)
            forecasts.append(np.asarray(model.predict(rows), dtype=float) * level)
    return forecasts
