"""Forecast accuracy as the HERMES benchmark protocol defines it (pure numpy, no gRPC).

- Seasonal MASE (m = season length): mean |y - yhat| over the test window divided by the mean
  |y_t - y_{t-m}| over the training history; the benchmark figure is the mean over series.
- Year-on-year class: yoy = (mean of the forecast window - mean of the last m observed values)
  / mean of the last m observed values; rising above +threshold, declining below -threshold,
  flat otherwise (threshold 0.05 in the paper).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import numpy.typing as npt

HERMES_THRESHOLD = 0.05

FloatArray = npt.NDArray[np.float64]


class Trend(IntEnum):
    # Same numbers as atelier.trends.v1.TrendClass so the servicer can pass them through.
    RISING = 1
    FLAT = 2
    DECLINING = 3


def mase_scale(train: npt.ArrayLike, season_length: int) -> float:
    """Mean absolute seasonal difference of the training part (lag 1 when it is shorter than a
    season plus one step, as a seasonal scale is then undefined)."""
    y = np.asarray(train, dtype=float)
    lag = season_length if len(y) > season_length else 1
    if len(y) <= lag:
        return float("nan")
    return float(np.mean(np.abs(y[lag:] - y[:-lag])))


def mase(train: npt.ArrayLike, actual: npt.ArrayLike, forecast: npt.ArrayLike, season_length: int) -> float:
    """Seasonal MASE of one series; inf when the training scale is 0 and the error is not."""
    error = float(np.mean(np.abs(np.asarray(actual, dtype=float) - np.asarray(forecast, dtype=float))))
    scale = mase_scale(train, season_length)
    if scale == 0:
        return 0.0 if error == 0 else float("inf")
    return error / scale


def smape(actual: npt.ArrayLike, forecast: npt.ArrayLike) -> float:
    """Symmetric MAPE in [0, 2]; periods where both are 0 count as exact."""
    a = np.asarray(actual, dtype=float)
    f = np.asarray(forecast, dtype=float)
    denominator = np.abs(a) + np.abs(f)
    ratio = np.where(denominator > 0, 2 * np.abs(a - f) / np.where(denominator > 0, denominator, 1), 0.0)
    return float(np.mean(ratio))


def yoy_change(last_season: npt.ArrayLike, next_values: npt.ArrayLike) -> float:
    """(mean(next) - mean(last season)) / mean(last season); nan when the last season's mean is 0."""
    base = float(np.mean(np.asarray(last_season, dtype=float)))
    if base == 0:
        return float("nan")
    return (float(np.mean(np.asarray(next_values, dtype=float))) - base) / base


def trend_class(yoy: float, threshold: float = HERMES_THRESHOLD) -> Trend:
    """Rising above +threshold, declining below -threshold, flat otherwise (and for nan)."""
    if yoy > threshold:
        return Trend.RISING
    if yoy < -threshold:
        return Trend.DECLINING
    return Trend.FLAT


def class_accuracy(
    train: list[FloatArray],
    actual: list[FloatArray],
    forecast: list[FloatArray],
    season_length: int,
    threshold: float = HERMES_THRESHOLD,
) -> float:
    """Share of series whose forecast yoy class equals the observed one."""
    hits = []
    for y_train, y_true, y_hat in zip(train, actual, forecast, strict=True):
        last = y_train[-season_length:]
        hits.append(
            trend_class(yoy_change(last, y_hat), threshold)
            == trend_class(yoy_change(last, y_true), threshold)
        )
    return float(np.mean(hits)) if hits else float("nan")
