"""New-product forecasts: a product without history gets the launch curve of similar past launches.

Most of a fashion season is new products, which have no sales to fit a model to. What a
planner knows of them is their attributes (department, category, style, colour, price band),
and what the tenant's data knows is how earlier products with those attributes sold in their
first weeks. So (the analogue approach of the field, and the setting of the HERMES paper):

1. **Launch curves**: each past series, aligned on its launch (its first period with a sale), gives
   units sold in periods 0, 1, 2, ... after launch. Series that were already selling when the
   data begins are not launches (their start is the data's start) and are left out.
2. **Analogues by attribute back-off**: for a new product with attributes in order from most to
   least specific (e.g. ``product_type, category, department``), the analogues are the past
   launches that share all of them; if fewer than ``min_analogues`` do, the most specific
   attribute is dropped, and so on down to every launch (said in the reply).
3. **Forecast**: per period after launch, the mean of the analogues' units (what a planner
   orders against), with intervals from the analogues' empirical quantiles (the spread between
   launches is the uncertainty of a launch). A period that only some analogues have reached uses
   those that have, and says so.

Pure domain: arrays in, dataclasses out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_MIN_ANALOGUES = 5


@dataclass(frozen=True)
class Launch:
    """A past launch: its attributes and units sold per period from its launch period on."""

    name: str
    labels: Mapping[str, str]
    curve: np.ndarray


@dataclass
class LaunchForecast:
    mean: np.ndarray
    intervals: dict[int, tuple[np.ndarray, np.ndarray]]
    matched: dict[str, str]  # the attributes the analogues share with the product
    analogues: int
    notes: list[str] = field(default_factory=list)


def launches(
    names: Sequence[str],
    labels: Sequence[Mapping[str, str]],
    starts: Sequence[int],
    values: Sequence[np.ndarray],
) -> tuple[list[Launch], int]:
    """Past launches from stored series (start: each series' first period, any comparable unit).

    A series is a launch from its first non-zero period, unless it starts with the data (the
    earliest start of all): such a series was on sale before the data and its start is not a
    launch. Returns the launches and how many series were left out that way.
    """
    if not names:
        return [], 0
    data_start = min(starts)
    out, left_censored = [], 0
    for name, lab, start, y in zip(names, labels, starts, values, strict=True):
        nonzero = np.flatnonzero(np.asarray(y) > 0)
        if start == data_start:
            left_censored += 1
            continue
        if nonzero.size == 0:
            continue
        out.append(Launch(name, dict(lab), np.asarray(y, dtype=float)[nonzero[0] :]))
    return out, left_censored


class Library:
    """Past launches indexed by their attributes, for many products at once.

    keys: attribute keys from most to least specific. The launch curves are one matrix
    (launches x horizon, NaN beyond a launch's history) and each back-off level a dict from the
    attribute values to the launches that share them, so a product costs a few dict look-ups.
    """

    def __init__(self, past: Sequence[Launch], keys: Sequence[str], horizon: int) -> None:
        if not past:
            raise ValueError("no past launches to learn from")
        self.keys = list(keys)
        self.horizon = horizon
        self.curves = np.full((len(past), horizon), np.nan)
        for i, launch in enumerate(past):
            n = min(horizon, len(launch.curve))
            self.curves[i, :n] = launch.curve[:n]
        # depth d: the d least specific keys (keys[len - d:]) -> launches sharing their values.
        self.index: list[dict[tuple[str | None, ...], list[int]]] = []
        for depth in range(len(self.keys) + 1):
            level_keys = self.keys[len(self.keys) - depth :]
            groups: dict[tuple[str | None, ...], list[int]] = {}
            for i, launch in enumerate(past):
                groups.setdefault(tuple(launch.labels.get(k) for k in level_keys), []).append(i)
            self.index.append(groups)

    def forecast(
        self,
        attributes: Mapping[str, str],
        levels: Sequence[int],
        min_analogues: int = DEFAULT_MIN_ANALOGUES,
        statistic: str = "mean",
    ) -> LaunchForecast:
        """The launch curve of a product with these attributes, `horizon` periods from its launch.

        statistic: "mean" (expected units: what adds up over products and what a buy is planned
        on; the service's) or "median" (the typical launch; smaller absolute errors on skewed sales).
        """
        keys, horizon = self.keys, self.horizon
        notes: list[str] = []
        chosen: list[int] = []
        matched: dict[str, str] = {}
        for depth in range(len(keys), -1, -1):
            level_keys = keys[len(keys) - depth :]
            if any(k not in attributes for k in level_keys):
                continue  # the product lacks one of these attributes: back off past it
            chosen = self.index[depth].get(tuple(attributes[k] for k in level_keys), [])
            if len(chosen) >= min_analogues or depth == 0:
                matched = {k: attributes[k] for k in level_keys}
                break
        given = [k for k in keys if k in attributes]
        if len(matched) < len(given):
            dropped = [k for k in given if k not in matched]
            notes.append(
                f"fewer than {min_analogues} past launches share {', '.join(dropped)}: "
                + (f"analogues matched on {_describe(matched)}" if matched else "every past launch used")
            )
        curves = self.curves[chosen]
        counts = np.sum(np.isfinite(curves), axis=0)
        mean = np.zeros(horizon)
        intervals = {lv: (np.zeros(horizon), np.zeros(horizon)) for lv in levels}
        reached = np.flatnonzero(counts)
        for step in range(horizon):
            # Steps no analogue has reached yet repeat the last step some have reached.
            source = step if counts[step] else (int(reached[-1]) if reached.size else -1)
            if source < 0:
                continue
            column = curves[np.isfinite(curves[:, source]), source]
            mean[step] = float(np.median(column) if statistic == "median" else column.mean())
            for lv in levels:
                lo, hi = np.quantile(column, [0.5 - lv / 200, 0.5 + lv / 200])
                intervals[lv][0][step], intervals[lv][1][step] = float(lo), float(hi)
        short = int(np.sum(counts < len(chosen)))
        if short:
            notes.append(
                f"{short} of {horizon} periods rest on the analogues that have been on sale that long "
                f"(as few as {int(counts.min())} of {len(chosen)})"
            )
        return LaunchForecast(mean, intervals, matched, len(chosen), notes)


def forecast(
    attributes: Mapping[str, str],
    keys: Sequence[str],
    past: Sequence[Launch],
    horizon: int,
    levels: Sequence[int],
    min_analogues: int = DEFAULT_MIN_ANALOGUES,
) -> LaunchForecast:
    """One product's launch curve (see Library for many). Raises ValueError without past launches."""
    return Library(past, keys, horizon).forecast(attributes, levels, min_analogues)


def _describe(matched: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in matched.items())
