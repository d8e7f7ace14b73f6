"""From raw sales lines to demand series: aggregation by the tenant's keys and frequency.

A retailer's export has one line per sale (or per ticket line): a date or time, the keys that
identify what and where (SKU, store, ...), a quantity (negative for returns) and often the
amount paid and a promotion flag. Forecasting needs one series per key on a regular grid, and
three things must be explicit rather than guessed:

- **Returns** are not negative demand: demand is what customers bought in the period (gross
  units); returned units are counted beside it, and netted only when asked (``net_returns``).
- **Zero-sales periods** between a series' first sale and the end of the data are real zeros
  (the item was on sale and nobody bought it).
- **Stock-outs** are not zero demand: a period in which the item was out of stock for at least
  ``stockout_share`` of its days is *censored*: it carries no observation, so the store treats
  it as missing (interpolated and counted in the forecast's notes), never as a zero.

Periods are the tenant's local calendar periods (``timezone``): a sale at 23:30 in New York on
Sunday belongs to that Sunday, whatever UTC says. Each period is labelled by the UTC midnight of
its first local day (weeks start on Monday; months on the 1st), which is the grid the trends
store expects for weekly, daily and monthly series alike.

Pure domain: pandas in, dataclasses out, no gRPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from atelier.runtime.errors import InvalidArgumentError
from atelier.trends.store import Frequency, ObservationIn

# Series keys are stored as "key=value|key=value"; the store allows 256 characters.
MAX_SERIES_KEY_CHARS = 256
_PERIOD = {Frequency.DAILY: "D", Frequency.WEEKLY: "W-SUN", Frequency.MONTHLY: "M"}


@dataclass(frozen=True)
class SalesSpec:
    """How to read and aggregate a sales export. Column names are the file's own."""

    keys: tuple[str, ...]
    frequency: Frequency = Frequency.WEEKLY
    timezone: str = "UTC"
    date_column: str = "date"
    quantity_column: str = "qty"
    value_column: str | None = None  # amount paid for the line (price x quantity, after discounts)
    promo_column: str | None = None  # non-zero / true when the line was sold on promotion
    label_columns: tuple[str, ...] = ()  # constant per series (category, department, region...)
    net_returns: bool = False
    stockout_share: float = 0.5


@dataclass
class SalesSeries:
    """One key's demand on the regular grid from its first sale to the end of the data."""

    name: str
    labels: dict[str, str]
    period_start_s: np.ndarray  # int64 UTC epoch seconds of each period's label (see module doc)
    units: np.ndarray  # float64 demand (gross units, or net of returns when asked); NaN = censored
    returns: np.ndarray  # float64 returned units per period
    price: np.ndarray  # float64 mean price paid per unit; NaN without sales or value column
    promo: np.ndarray  # float64 share of units sold on promotion (0..1); NaN without sales
    censored: np.ndarray  # bool: stocked out for at least stockout_share of the period


@dataclass
class SalesReport:
    lines: int = 0
    sale_lines: int = 0
    return_lines: int = 0
    zero_lines: int = 0
    series: int = 0
    periods: int = 0
    zero_periods: int = 0
    censored_periods: int = 0
    warnings: list[str] = field(default_factory=list)


def local_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgumentError.for_field(
            "timezone", f"unknown time zone {name!r}; use an IANA name such as Europe/Paris or UTC"
        ) from None


def local_dates(values: pd.Series, timezone: str, column: str) -> pd.Series:
    """Local calendar dates (naive midnight) of dates or times; naive input is already local."""
    zone = local_zone(timezone)
    parsed = pd.to_datetime(values, errors="coerce", utc=False, format="mixed")
    bad = parsed.isna() & values.notna()
    if bad.any() or values.isna().any():
        row = int(np.flatnonzero((bad | values.isna()).to_numpy())[0])
        raise InvalidArgumentError.for_field(
            column, f"row {row + 1}: {values.iloc[row]!r} is not a date or time (ISO 8601)"
        )
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert(zone).dt.tz_localize(None)
    return parsed.dt.normalize()


def _period_labels(dates: pd.Series | pd.DatetimeIndex, frequency: Frequency) -> pd.Series:
    """The first local day of each date's period (Monday weeks, 1st of the month)."""
    periods = pd.Series(pd.DatetimeIndex(dates).to_period(_PERIOD[frequency]))
    return periods.dt.start_time


def _epoch_s(days: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    return pd.DatetimeIndex(days).as_unit("s").asi8.astype(np.int64)


def series_name(keys: Sequence[str], values: Sequence[object]) -> str:
    return "|".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))


def _check_columns(frame: pd.DataFrame, spec: SalesSpec) -> None:
    wanted = [spec.date_column, spec.quantity_column, *spec.keys, *spec.label_columns]
    wanted += [c for c in (spec.value_column, spec.promo_column) if c]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise InvalidArgumentError.for_field(
            "columns",
            f"no column {', '.join(map(repr, missing))} in the sales data (columns: "
            f"{', '.join(map(str, frame.columns))})",
        )
    if not spec.keys:
        raise InvalidArgumentError.for_field("keys", "at least one key column (e.g. sku, or sku and store)")
    if not 0 < spec.stockout_share <= 1:
        raise InvalidArgumentError.for_field("stockout_share", "a share of the period in (0, 1]")


def aggregate(
    sales: pd.DataFrame,
    spec: SalesSpec,
    stockouts: pd.DataFrame | None = None,
    end: pd.Timestamp | None = None,
) -> tuple[list[SalesSeries], SalesReport]:
    """Demand series from sales lines (and optional stock-out days), one per distinct key.

    stockouts: rows of (spec.date_column, *spec.keys), each a local day on which that key was
    out of stock. end: the last local day the data covers (default: the last sale's day), so a
    series that stopped selling gets its zero periods up to it.
    """
    _check_columns(sales, spec)
    report = SalesReport(lines=len(sales))
    if sales.empty:
        return [], report
    frame = pd.DataFrame({"day": local_dates(sales[spec.date_column], spec.timezone, spec.date_column)})
    qty = pd.to_numeric(sales[spec.quantity_column], errors="coerce")
    if qty.isna().any() or not np.isfinite(qty.to_numpy(float)).all():
        row = int(np.flatnonzero(~np.isfinite(qty.to_numpy(float)))[0])
        raise InvalidArgumentError.for_field(
            spec.quantity_column,
            f"row {row + 1}: {sales[spec.quantity_column].iloc[row]!r} is not a finite number",
        )
    for key in (*spec.keys, *spec.label_columns):
        frame[key] = sales[key].astype(str).str.strip().to_numpy()
    frame["sold"] = qty.clip(lower=0).to_numpy(float)
    frame["returned"] = (-qty).clip(lower=0).to_numpy(float)
    report.sale_lines = int((qty > 0).sum())
    report.return_lines = int((qty < 0).sum())
    report.zero_lines = int((qty == 0).sum())
    if spec.value_column:
        value = pd.to_numeric(sales[spec.value_column], errors="coerce").to_numpy(float)
        # The amount of sale lines only (a return's refund is not a price paid).
        frame["paid"] = np.where(qty.to_numpy(float) > 0, np.nan_to_num(value), 0.0)
        frame["paid_units"] = np.where(np.isfinite(value) & (qty.to_numpy(float) > 0), frame["sold"], 0.0)
    if spec.promo_column:
        raw = sales[spec.promo_column]
        flag = raw.astype(str).str.strip().str.lower().isin(("1", "true", "yes", "y", "t"))
        flag |= pd.to_numeric(raw, errors="coerce").fillna(0).to_numpy(float) != 0
        frame["promo_units"] = np.where(flag.to_numpy(bool), frame["sold"], 0.0)
    frame["period"] = _period_labels(frame["day"], spec.frequency).to_numpy()
    last_day = pd.Timestamp(end).normalize() if end is not None else frame["day"].max()
    last_period = _period_labels(pd.DatetimeIndex([last_day]), spec.frequency).iloc[0]

    censored_by_key: dict[tuple[str, ...], set[pd.Timestamp]] = {}
    if stockouts is not None and not stockouts.empty:
        censored_by_key = _censored_periods(stockouts, spec)

    sums = {"sold": "sum", "returned": "sum"}
    for extra in ("paid", "paid_units", "promo_units"):
        if extra in frame:
            sums[extra] = "sum"
    grouped = frame.groupby([*spec.keys, "period"], sort=True).agg(sums)
    labels_of = (
        frame.groupby(list(spec.keys), sort=False)[list(spec.label_columns)].first()
        if spec.label_columns
        else None
    )
    out: list[SalesSeries] = []
    key_levels = list(range(len(spec.keys))) if len(spec.keys) > 1 else 0
    for key_values, part in grouped.groupby(level=key_levels, sort=True):
        key_values = key_values if isinstance(key_values, tuple) else (key_values,)
        name = series_name(spec.keys, key_values)
        if len(name) > MAX_SERIES_KEY_CHARS:
            report.warnings.append(
                f"series {name[:60]!r}... left out: key longer than {MAX_SERIES_KEY_CHARS}"
            )
            continue
        part = part.droplevel(list(range(len(spec.keys))))
        grid = pd.period_range(part.index.min(), last_period, freq=_PERIOD[spec.frequency]).start_time
        part = part.reindex(grid, fill_value=0.0)
        sold = part["sold"].to_numpy(float)
        returned = part["returned"].to_numpy(float)
        units = np.maximum(sold - returned, 0.0) if spec.net_returns else sold.copy()
        censored = np.asarray(pd.DatetimeIndex(grid).isin(list(censored_by_key.get(tuple(key_values), ()))))
        # A stocked-out period with sales still says something, but less than its demand: censored too.
        units[censored] = np.nan
        with np.errstate(invalid="ignore", divide="ignore"):
            price = (
                part["paid"].to_numpy(float) / part["paid_units"].to_numpy(float)
                if "paid" in part
                else np.full(len(grid), np.nan)
            )
            promo = (
                part["promo_units"].to_numpy(float) / sold
                if "promo_units" in part
                else np.full(len(grid), np.nan)
            )
        price[~np.isfinite(price)] = np.nan
        promo[sold == 0] = np.nan
        labels = {k: str(v) for k, v in zip(spec.keys, key_values, strict=True)}
        if labels_of is not None:
            labels.update(
                {
                    c: str(labels_of.loc[key_values if len(spec.keys) > 1 else key_values[0], c])
                    for c in spec.label_columns
                }
            )
        out.append(SalesSeries(name, labels, _epoch_s(grid), units, returned, price, promo, censored))
        report.periods += len(grid)
        report.censored_periods += int(censored.sum())
        report.zero_periods += int(((sold == 0) & ~censored).sum())
    report.series = len(out)
    return out, report


def _censored_periods(stockouts: pd.DataFrame, spec: SalesSpec) -> dict[tuple[str, ...], set[pd.Timestamp]]:
    """Periods in which a key was out of stock for at least spec.stockout_share of the days."""
    missing = [c for c in (spec.date_column, *spec.keys) if c not in stockouts.columns]
    if missing:
        raise InvalidArgumentError.for_field(
            "stockouts", f"no column {', '.join(map(repr, missing))} in the stock-out data"
        )
    days = local_dates(stockouts[spec.date_column], spec.timezone, f"stockouts.{spec.date_column}")
    frame = pd.DataFrame({k: stockouts[k].astype(str).str.strip().to_numpy() for k in spec.keys})
    frame["day"] = days.to_numpy()
    frame = frame.drop_duplicates()
    frame["period"] = _period_labels(frame["day"], spec.frequency).to_numpy()
    period_days = {Frequency.DAILY: 1, Frequency.WEEKLY: 7}
    counts = frame.groupby([*spec.keys, "period"]).size()
    out: dict[tuple[str, ...], set[pd.Timestamp]] = {}
    for index, count in counts.items():
        index = index if isinstance(index, tuple) else (index,)
        *key, period = index
        length = period_days.get(spec.frequency) or pd.Timestamp(period).days_in_month
        if count >= spec.stockout_share * length:
            out.setdefault(tuple(key), set()).add(pd.Timestamp(period))
    return out


def observations(series: Sequence[SalesSeries]) -> list[ObservationIn]:
    """The store's observations of aggregated series: censored periods are left out (missing).

    Each carries the mean price paid and the share of units sold on promotion where the period
    had sales to tell (the forecast takes them as exogenous inputs).
    """
    out: list[ObservationIn] = []
    for s in series:
        for start, units, price, promo in zip(s.period_start_s, s.units, s.price, s.promo, strict=True):
            if not np.isfinite(units):
                continue
            out.append(
                ObservationIn(
                    s.name,
                    int(start),
                    float(units),
                    price=float(price) if np.isfinite(price) and price > 0 else None,
                    promotion=float(min(max(promo, 0.0), 1.0)) if np.isfinite(promo) else None,
                )
            )
    return out
