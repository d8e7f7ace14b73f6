"""Public holidays by country as a known future input (the `holidays` package, offline).

A holiday moves demand (shops closed, gifts bought before, a long weekend after) on dates that
are known years ahead, so the global model takes it like a planned promotion: the number of
public holidays in each period over the history *and* the horizon, with the neighbouring
periods' counts (the eve and the day after matter as much as the day for retail). Weekly and
monthly periods count the holidays among their days.

Pure domain: no gRPC.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from atelier.runtime.errors import InvalidArgumentError
from atelier.trends.store import Frequency

# The covariate's name beside store.COVARIATES (price, discount, promotion).
HOLIDAY = "holiday"


@cache
def _supported() -> frozenset[str]:
    import holidays

    return frozenset(holidays.list_supported_countries())


def check_country(code: str, field_path: str = "holiday_country") -> str:
    """The ISO 3166 code (alpha-2 or alpha-3, upper case) when the holidays package knows it."""
    if code.upper() not in _supported():
        raise InvalidArgumentError.for_field(
            field_path,
            f"unknown country {code[:40]!r}: an ISO 3166 code with public holidays, e.g. US, FR, GB, DE",
        )
    return code.upper()


def _days(period_starts_s: np.ndarray, frequency: Frequency, end_s: int) -> np.ndarray:
    """Each period's days (datetime64[D]), as (periods, longest period) with NaT padding."""
    starts = np.asarray(period_starts_s, np.int64).astype("datetime64[s]").astype("datetime64[D]")
    ends = np.append(starts[1:], np.datetime64(int(end_s), "s").astype("datetime64[D]"))
    width = int((ends - starts).astype(int).max()) if len(starts) else 1
    grid = starts[:, None] + np.arange(width)[None, :]
    return np.where(grid < ends[:, None], grid, np.datetime64("NaT"))


@cache
def _holiday_dates(country: str, years: tuple[int, ...]) -> np.ndarray:
    """The holidays' days (a forecast of 10,000 series asks for the same years each time)."""
    import holidays

    calendar = holidays.country_holidays(country, years=list(years))
    return np.array(sorted(calendar.keys()), dtype="datetime64[D]")


def holiday_counts(country: str, period_starts_s: np.ndarray, frequency: Frequency) -> np.ndarray:
    """The number of public holidays of `country` in each period (0/1 for daily periods).

    period_starts_s: the consecutive periods' starts (UTC midnight of the first local day), history
    and horizon together; the last period is one frequency step long.
    """
    starts = np.asarray(period_starts_s, np.int64)
    if not len(starts):
        return np.zeros(0)
    if frequency is Frequency.MONTHLY:  # the last month ends on the 1st of the next one
        next_month = np.datetime64(int(starts[-1]), "s").astype("datetime64[M]") + 1
        last_end = int(next_month.astype("datetime64[s]").astype(np.int64))
    else:
        last_end = int(starts[-1]) + frequency.step_s
    days = _days(starts, frequency, last_end)
    valid = ~np.isnat(days)
    years = np.unique(days[valid].astype("datetime64[Y]").astype(int) + 1970)
    dates = _holiday_dates(country, tuple(int(y) for y in years))
    return (np.isin(days, dates) & valid).sum(axis=1).astype(float)
