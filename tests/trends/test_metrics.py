"""The benchmark protocol's metric code (atelier.trends.evaluation) against values worked out by
hand, so the figures in BENCHMARKS.md mean what the HERMES protocol says they mean."""

from __future__ import annotations

import math

import numpy as np
import pytest

from atelier.trends.evaluation import (
    Trend,
    class_accuracy,
    mase,
    mase_scale,
    smape,
    trend_class,
    yoy_change,
)


def test_seasonal_mase_by_hand() -> None:
    # Season 2: the seasonal differences of 1..6 are 3-1, 4-2, 5-3, 6-4 = 2 each, scale 2.
    train = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert mase_scale(train, 2) == 2.0
    # Errors |7-6| = 1 and |8-10| = 2: mean 1.5, over the scale 2.
    assert mase(train, [7.0, 8.0], [6.0, 10.0], 2) == pytest.approx(0.75)
    # Uneven differences: |4-1|, |2-5|, |9-4| = 3, 3, 5 -> scale 11/3; errors 1, 0 -> 0.5 / (11/3).
    assert mase_scale([1.0, 5.0, 4.0, 2.0, 9.0], 2) == pytest.approx(11 / 3)
    assert mase([1.0, 5.0, 4.0, 2.0, 9.0], [3.0, 3.0], [2.0, 3.0], 2) == pytest.approx(1.5 / 11)


def test_mase_m52_on_a_line() -> None:
    # y = t over 156 weeks: every lag-52 difference is 52; the seasonal naive forecast of the
    # last year (the year before it) is 52 too low in every week: MASE exactly 1.
    y = np.arange(156, dtype=float)
    train, actual = y[:104], y[104:]
    assert mase_scale(train, 52) == 52.0
    assert mase(train, actual, train[-52:], 52) == pytest.approx(1.0)
    # Off by 13 in every week: a quarter of the scale.
    assert mase(train, actual, actual + 13, 52) == pytest.approx(0.25)


def test_mase_edge_cases() -> None:
    # Shorter than a season plus one: the lag-1 scale (|2-1|, |4-2| -> 1.5).
    assert mase_scale([1.0, 2.0, 4.0], 52) == pytest.approx(1.5)
    assert math.isnan(mase_scale([1.0], 52))
    # A flat history has scale 0: an exact forecast scores 0, any error infinity.
    flat = [3.0] * 10
    assert mase(flat, [3.0, 3.0], [3.0, 3.0], 2) == 0.0
    assert mase(flat, [3.0, 3.0], [3.0, 4.0], 2) == math.inf


def test_yoy_class_by_hand() -> None:
    last = [10.0, 10.0, 10.0, 10.0]
    assert yoy_change(last, [11.0, 11.0]) == pytest.approx(0.1)
    assert trend_class(yoy_change(last, [11.0, 11.0])) is Trend.RISING
    assert trend_class(yoy_change(last, [10.4])) is Trend.FLAT
    assert trend_class(yoy_change(last, [9.0, 9.4])) is Trend.DECLINING  # -8%
    # The threshold itself is flat (strictly beyond it to move); nan (zero base) is flat.
    assert yoy_change(last, [10.5]) == 0.05 and trend_class(0.05) is Trend.FLAT
    assert trend_class(-0.05) is Trend.FLAT
    assert trend_class(0.0500001) is Trend.RISING and trend_class(-0.0500001) is Trend.DECLINING
    assert math.isnan(yoy_change([0.0, 0.0], [1.0]))
    assert trend_class(float("nan")) is Trend.FLAT
    # Another threshold.
    assert trend_class(0.08, threshold=0.1) is Trend.FLAT


def test_class_accuracy_by_hand() -> None:
    # Season 2: "last year" is the last two training values.
    train = [
        np.array([5.0, 5.0, 10.0, 10.0]),  # base 10
        np.array([1.0, 1.0, 4.0, 4.0]),  # base 4
        np.array([9.0, 9.0, 2.0, 2.0]),  # base 2
    ]
    actual = [
        np.array([12.0, 12.0]),  # +20% rising
        np.array([4.0, 4.1]),  # +1.25% flat
        np.array([1.0, 1.0]),  # -50% declining
    ]
    forecast = [
        np.array([11.0, 11.0]),  # +10% rising: right
        np.array([3.0, 3.0]),  # -25% declining: wrong
        np.array([1.5, 1.5]),  # -25% declining: right
    ]
    assert class_accuracy(train, actual, forecast, 2) == pytest.approx(2 / 3)
    assert class_accuracy(train, actual, actual, 2) == 1.0
    # The base is the last season of the training part, not the whole of it: with season 4 the
    # first series' base is 7.5 and 11 is +47%, still rising, but the second's base is 2.5, so
    # 3 is +20% (rising) against 4.05 (+62%, rising): right now.
    assert class_accuracy(train, actual, forecast, 4) == 1.0
    assert math.isnan(class_accuracy([], [], [], 2))


def test_smape_by_hand() -> None:
    # |1-3| * 2 / (1+3) = 1, and 0/0 counts as exact: mean 0.5.
    assert smape([1.0, 0.0], [3.0, 0.0]) == pytest.approx(0.5)
    assert smape([2.0, 4.0], [2.0, 4.0]) == 0.0
    assert smape([1.0], [-1.0]) == pytest.approx(2.0)
