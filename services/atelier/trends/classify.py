"""Rising / flat / declining, emerging trends and top movers, each with its figures (no gRPC).

The rule is the HERMES benchmark's: yoy = (mean of the next year's forecast - mean of the last
observed year) / mean of the last observed year; rising above +threshold (0.05), declining
below -threshold, flat otherwise.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from atelier.trends.evaluation import HERMES_THRESHOLD, Trend, trend_class, yoy_change


@dataclass(frozen=True)
class Classification:
    series: str
    trend: Trend
    emerging: bool
    yoy_change: float
    last_year_mean: float
    next_year_mean: float
    explanation: str
    model: str


def classify(
    names: Sequence[str],
    histories: Sequence[np.ndarray],
    forecasts: Sequence[np.ndarray],
    models: Sequence[str],
    year_periods: int,
    unit: str,
    threshold: float = HERMES_THRESHOLD,
) -> list[Classification]:
    """forecasts[i] holds the next year_periods values of histories[i]."""
    quarter = max(1, round(year_periods / 4))
    last_means = np.array([float(np.mean(y[-year_periods:])) for y in histories])
    # "Small": last year's level in the lowest third of the series classified together.
    small_cut = float(np.quantile(last_means, 1 / 3)) if len(last_means) >= 3 else -np.inf
    out = []
    for name, y, f, model, last_mean in zip(names, histories, forecasts, models, last_means, strict=True):
        used = min(len(y), year_periods)
        yoy = yoy_change(y[-year_periods:], f)
        trend = trend_class(yoy, threshold)
        next_mean = float(np.mean(f))
        recent, before = y[-quarter:], y[-2 * quarter : -quarter]
        growth = (
            (float(np.mean(recent)) / float(np.mean(before)) - 1)
            if len(before) and np.mean(before) > 0
            else float("nan")
        )
        emerging = bool(trend is Trend.RISING and last_mean <= small_cut and growth > threshold)
        sign = "above" if trend is Trend.RISING else "below" if trend is Trend.DECLINING else "within"
        bound = (
            f"+{threshold:.0%}"
            if trend is Trend.RISING
            else f"-{threshold:.0%}"
            if trend is Trend.DECLINING
            else f"±{threshold:.0%}"
        )
        parts = [
            f"the last {used} {unit} averaged {last_mean:.4g}; the {model} forecast for the next {year_periods} "
            f"{unit} averages {next_mean:.4g} ({yoy:+.1%}), {sign} the {bound} threshold: {trend.name.lower()}",
        ]
        if used < year_periods:
            parts.append(f"only {used} {unit} of history, so 'last year' is shorter than a year")
        if not np.isnan(growth):
            parts.append(f"the last {quarter} {unit} are {growth:+.1%} on the {quarter} before")
        if emerging:
            parts.append(
                f"emerging: small (last-year mean {last_mean:.4g} in the lowest third, cut {small_cut:.4g}) "
                "and accelerating"
            )
        out.append(Classification(name, trend, emerging, yoy, last_mean, next_mean, "; ".join(parts), model))
    return out


def top_movers(
    classifications: Sequence[Classification], categories: Sequence[str], count: int
) -> dict[str, tuple[list[str], list[str]]]:
    """Per category: the rising series with the largest yoy and the declining with the most negative."""
    grouped: dict[str, list[Classification]] = defaultdict(list)
    for c, category in zip(classifications, categories, strict=True):
        grouped[category].append(c)
    out = {}
    for category, members in grouped.items():
        rising = sorted((c for c in members if c.trend is Trend.RISING), key=lambda c: -c.yoy_change)
        declining = sorted((c for c in members if c.trend is Trend.DECLINING), key=lambda c: c.yoy_change)
        out[category] = ([c.series for c in rising[:count]], [c.series for c in declining[:count]])
    return out
