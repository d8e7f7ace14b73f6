"""Raw sales lines to demand series: returns, zero-sales periods, stock-outs, time zones, frequencies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atelier.runtime.errors import InvalidArgumentError
from atelier.trends.sales import SalesSpec, aggregate
from atelier.trends.store import Frequency


def _epoch(day: str) -> int:
    return int(pd.Timestamp(day).value // 1_000_000_000)


def test_weekly_sales_returns_zero_weeks_and_prices() -> None:
    sales = pd.DataFrame(
        {
            "date": ["2024-01-01", "2024-01-03", "2024-01-04", "2024-01-20", "2024-01-16", "2024-01-02"],
            "sku": ["A", "A", "A", "A", "A", "B"],
            "store": ["1", "1", "1", "1", "1", "1"],
            "qty": [2, 3, -1, 4, 0, 5],
            "paid": [20.0, 24.0, -10.0, 40.0, 0.0, 50.0],
            "promo": [0, 1, 0, 0, 0, 0],
            "category": ["tops"] * 5 + ["dresses"],
        }
    )
    spec = SalesSpec(
        keys=("sku", "store"),
        frequency=Frequency.WEEKLY,
        value_column="paid",
        promo_column="promo",
        label_columns=("category",),
    )
    series, report = aggregate(sales, spec, end=pd.Timestamp("2024-01-28"))
    by = {s.name: s for s in series}
    a = by["sku=A|store=1"]
    # Weeks start on Monday 2024-01-01; four weeks to the end of the data.
    assert list(a.period_start_s) == [
        _epoch(d) for d in ("2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22")
    ]
    # Gross demand: the return is counted beside it, not subtracted; weeks without sales are zeros.
    assert list(a.units) == [5.0, 0.0, 4.0, 0.0]
    assert list(a.returns) == [1.0, 0.0, 0.0, 0.0]
    assert a.price[0] == pytest.approx(44 / 5) and np.isnan(a.price[1])
    assert a.promo[0] == pytest.approx(3 / 5) and a.promo[2] == 0.0
    assert a.labels == {"sku": "A", "store": "1", "category": "tops"}
    assert by["sku=B|store=1"].labels["category"] == "dresses"
    assert (report.return_lines, report.zero_lines, report.series) == (1, 1, 2)
    net, _ = aggregate(sales, SalesSpec(keys=("sku", "store"), net_returns=True))
    assert list({s.name: s for s in net}["sku=A|store=1"].units[:1]) == [4.0]


def test_stocked_out_weeks_are_censored_not_zero() -> None:
    sales = pd.DataFrame({"date": ["2024-01-01", "2024-01-22"], "sku": ["A", "A"], "qty": [3, 2]})
    # Out of stock Tue-Sun of the second week (6 of 7 days) and one day of the third week.
    out_days = [*pd.date_range("2024-01-09", "2024-01-14").strftime("%Y-%m-%d"), "2024-01-16"]
    stockouts = pd.DataFrame({"date": out_days, "sku": ["A"] * len(out_days)})
    (a,), report = aggregate(sales, SalesSpec(keys=("sku",)), stockouts=stockouts)
    assert list(a.censored) == [False, True, False, False]
    assert np.isnan(a.units[1]) and a.units[2] == 0.0  # one day out: still a real zero week
    assert (report.censored_periods, report.zero_periods) == (1, 1)


def test_time_zones_decide_the_local_day() -> None:
    # 2024-01-07 23:30 in New York is Monday 04:30 UTC: a Sunday sale, in the first week.
    sales = pd.DataFrame(
        {"date": ["2024-01-08T04:30:00Z", "2024-01-08T12:00:00Z"], "sku": ["A", "A"], "qty": [1, 1]}
    )
    (utc,), _ = aggregate(sales, SalesSpec(keys=("sku",), frequency=Frequency.DAILY))
    (ny,), _ = aggregate(
        sales, SalesSpec(keys=("sku",), frequency=Frequency.DAILY, timezone="America/New_York")
    )
    assert list(utc.period_start_s) == [_epoch("2024-01-08")] and list(utc.units) == [2.0]
    assert list(ny.period_start_s) == [_epoch("2024-01-07"), _epoch("2024-01-08")]
    (ny_week,), _ = aggregate(sales, SalesSpec(keys=("sku",), timezone="America/New_York"))
    assert list(ny_week.units) == [1.0, 1.0]  # the Sunday sale closes the week of 2024-01-01
    with pytest.raises(InvalidArgumentError, match="time zone"):
        aggregate(sales, SalesSpec(keys=("sku",), timezone="Mars/Olympus"))


def test_monthly_periods_and_bad_rows() -> None:
    sales = pd.DataFrame(
        {"date": ["2024-01-31", "2024-03-01", "2024-03-31"], "sku": ["A"] * 3, "qty": [1, 2, 3]}
    )
    (a,), _ = aggregate(sales, SalesSpec(keys=("sku",), frequency=Frequency.MONTHLY))
    assert list(a.period_start_s) == [_epoch(d) for d in ("2024-01-01", "2024-02-01", "2024-03-01")]
    assert list(a.units) == [1.0, 0.0, 5.0]
    bad = sales.assign(qty=["1", "two", "3"])
    with pytest.raises(InvalidArgumentError, match="row 2"):
        aggregate(bad, SalesSpec(keys=("sku",)))
    with pytest.raises(InvalidArgumentError, match="'store'"):
        aggregate(sales, SalesSpec(keys=("sku", "store")))
    with pytest.raises(InvalidArgumentError, match="row 3"):
        aggregate(sales.assign(date=["2024-01-31", "2024-03-01", "soon"]), SalesSpec(keys=("sku",)))
