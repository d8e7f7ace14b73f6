"""`atelier trends`: load trend signals, forecast and plot them, classify, demand, backtest.

    atelier trends ingest data.csv                     # long format (below), streamed in batches
    atelier trends ingest weekly.csv --wide --external-csv influencers.csv
    atelier trends ingest-sales sales.csv --keys sku,store --frequency weekly --timezone Europe/Paris
    atelier trends series                              # what is stored
    atelier trends forecast --horizon 52 -o forecast.png --json forecast.json
    atelier trends classify --label category=shoes     # rising / flat / declining, top movers
    atelier trends demand --horizon 8 --json demand.json
    atelier trends backtest --horizon 52 --windows 1

Long CSV columns: `series` (the key), `time` (or `timestamp`: ISO 8601, a date or a date and
time; UTC when no offset given), `value`, `external` (optional: the same trend's external
signal, e.g. among fashion-forward influencers; empty cells mean none), `price`, `discount`
and `promotion` (optional exogenous inputs: price per unit, discount 0..1, promotion share
0..1), and any other column is a label of the series (category, colour, silhouette, market...). Wide CSV (`--wide`): the first
column is the time, every other column one series named by its header; `--external-csv` is a
file of the same shape with the external signal.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import typer
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import timestamp_pb2
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atelier.cli import client
from atelier.common.v1 import progress_pb2
from atelier.runtime.config import DEFAULT_PORTS
from atelier.trends.v1 import trends_pb2 as pb
from atelier.trends.v1 import trends_pb2_grpc as pb_grpc

app = typer.Typer(
    help="Trends: forecast fashion trend signals and demand, rising/declining detection.",
    no_args_is_help=True,
)
console = Console()

DEFAULT_ADDRESS = f"{os.environ.get('ATELIER_HOST', '127.0.0.1')}:" + os.environ.get(
    "ATELIER_TRENDS_PORT", str(DEFAULT_PORTS["trends"][0])
)
KINDS = {"share": pb.VALUE_KIND_SHARE, "count": pb.VALUE_KIND_COUNT, "index": pb.VALUE_KIND_INDEX}
FREQUENCIES = {"weekly": pb.FREQUENCY_WEEKLY, "daily": pb.FREQUENCY_DAILY, "monthly": pb.FREQUENCY_MONTHLY}
TREND_NAMES = {
    pb.TREND_CLASS_RISING: "[green]rising[/green]",
    pb.TREND_CLASS_FLAT: "flat",
    pb.TREND_CLASS_DECLINING: "[red]declining[/red]",
}
RESERVED = {"series", "time", "timestamp", "value", "external", "price", "discount", "promotion"}

AddressOpt = typer.Option(DEFAULT_ADDRESS, "--address", help="host:port of the trends service")
TenantOpt = typer.Option(
    "",
    "--tenant",
    help="tenant (x-atelier-tenant); default: the key's tenant, or ATELIER_DEFAULT_TENANT without keys",
)
SeriesOpt = typer.Option([], "--series", "-s", help="a series key (repeatable; default: all)")
LabelOpt = typer.Option([], "--label", "-l", help="only series with this label, KEY=VALUE (repeatable)")


# -- reading CSV files ----------------------------------------------------------------------------


@dataclass
class Upload:
    """Observations read from a CSV, with the CSV line each came from (for error messages)."""

    observations: list[pb.Observation] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)


def parse_time(text: str, where: str) -> timestamp_pb2.Timestamp:
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{where}: {text!r} is not an ISO 8601 date or time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return timestamp_pb2.Timestamp(seconds=int(when.timestamp()))


def parse_value(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise typer.BadParameter(f"{where}: {text!r} is not a number") from None


def read_long(path: Path) -> Upload:
    upload = Upload()
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        time_column = "time" if "time" in columns else "timestamp"
        missing = [c for c in ("series", time_column, "value") if c not in columns]
        if missing:
            raise typer.BadParameter(
                f"{path.name}: no column {', '.join(missing)}; the columns are series, time (or "
                "timestamp), value, external (optional) and labels (any other column)"
            )
        label_columns = [c for c in columns if c not in RESERVED]
        for number, row in enumerate(reader, start=2):
            where = f"{path.name} line {number}"
            # A short row leaves its last cells None (csv.DictReader): name the line, not a traceback.
            missing = [c for c in ("series", time_column, "value") if row.get(c) is None]
            if missing:
                raise typer.BadParameter(f"{where}: no cell for {', '.join(missing)}")
            obs = pb.Observation(
                series=row["series"].strip(),
                time=parse_time(row[time_column], where),
                value=parse_value(row["value"], where),
            )
            for optional in ("external", "price", "discount", "promotion"):
                if (row.get(optional) or "").strip():
                    setattr(obs, optional, parse_value(row[optional], where))
            upload.observations.append(obs)
            upload.lines.append(where)
            labels = {c: row[c].strip() for c in label_columns if (row.get(c) or "").strip()}
            if labels:
                upload.labels.setdefault(obs.series, {}).update(labels)
    return upload


def read_plan(path: Path, horizon: int) -> list[pb.FutureCovariates]:
    """Planned covariates: one row per series and step; a column left out (or empty cells of a
    series' column) means that input keeps its default over the whole horizon."""
    names = ("price", "discount", "promotion")
    plans: dict[str, dict[str, dict[int, float]]] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "series" not in columns or "step" not in columns or not any(n in columns for n in names):
            raise typer.BadParameter(
                f"{path.name}: columns are series, step and price, discount or promotion"
            )
        for number, row in enumerate(reader, start=2):
            where = f"{path.name} line {number}"
            step = int(parse_value(row.get("step") or "", where))
            if not 1 <= step <= horizon:
                raise typer.BadParameter(f"{where}: step {step} is outside 1..{horizon} (the horizon)")
            for name in names:
                if (row.get(name) or "").strip():
                    plan = plans.setdefault((row.get("series") or "").strip(), {}).setdefault(name, {})
                    plan[step] = parse_value(row[name], where)
    out = []
    for series, values in plans.items():
        entry = pb.FutureCovariates(series=series)
        for name, by_step in values.items():
            if len(by_step) != horizon:
                missing = sorted(set(range(1, horizon + 1)) - set(by_step))[:5]
                raise typer.BadParameter(
                    f"{path.name}: series {series!r} plans {name} for {len(by_step)} of {horizon} steps "
                    f"(missing e.g. steps {missing}): give every step, or none to keep the default"
                )
            getattr(entry, name).extend(by_step[k] for k in range(1, horizon + 1))
        out.append(entry)
    return out


def read_wide(path: Path, external: Path | None) -> Upload:
    def table(p: Path) -> tuple[list[str], list[list[str]]]:
        with p.open(newline="") as f:
            rows = list(csv.reader(f))
        if not rows or len(rows[0]) < 2:
            raise typer.BadParameter(f"{p.name}: a wide CSV needs a time column and one column per series")
        return rows[0], rows[1:]

    header, rows = table(path)
    signal: dict[tuple[str, str], str] = {}
    if external is not None:
        ext_header, ext_rows = table(external)
        for row in ext_rows:
            if not row:
                continue
            for name, cell in zip(ext_header[1:], row[1:], strict=False):
                signal[(row[0], name)] = cell
    upload = Upload()
    for name in header[1:]:
        for number, row in enumerate(rows, start=2):
            cell = row[header.index(name)] if header.index(name) < len(row) else ""
            if not cell.strip():
                continue  # a gap: the service interpolates missing periods and says so
            where = f"{path.name} line {number}, column {name!r}"
            obs = pb.Observation(series=name, time=parse_time(row[0], where), value=parse_value(cell, where))
            if (signal.get((row[0], name)) or "").strip():
                obs.external = parse_value(signal[(row[0], name)], f"{external} for {where}")
            upload.observations.append(obs)
            upload.lines.append(where)
    return upload


# -- talking to the service -----------------------------------------------------------------------


def _stub(address: str) -> tuple[pb_grpc.TrendsServiceStub, grpc.Channel]:
    options = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 64 << 20)]
    channel = client.channel(address, options=options)
    return pb_grpc.TrendsServiceStub(channel), channel


def _fail(exc: grpc.RpcError, translate: Any = None) -> typer.Exit:
    from atelier.runtime.status import field_violations

    console.print(f"[red]{exc.code().name}[/red]: {exc.details()}")
    for path, why in field_violations(exc):
        console.print(f"  {translate(path) if translate else path}: {why}")
    return typer.Exit(1)


def _filter(series: list[str], label: list[str]) -> pb.SeriesFilter:
    labels = {}
    for item in label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: write KEY=VALUE, e.g. category=shoes", param_hint="--label")
        labels[key] = value
    return pb.SeriesFilter(series=series, labels=labels)


def _levels(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: write percentages, e.g. 80,95", param_hint="--levels") from None


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _iso(ts: timestamp_pb2.Timestamp) -> str:
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%d")


# -- commands -------------------------------------------------------------------------------------


@app.command()
def ingest(
    path: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="the CSV (see `atelier trends --help`)"
    ),
    kind: str = typer.Option("share", "--kind", help="share, count (non-negative) or index (any number)"),
    frequency: str = typer.Option("weekly", "--frequency", help="weekly, daily or monthly"),
    wide: bool = typer.Option(False, "--wide", help="first column the time, one column per series"),
    external_csv: Path = typer.Option(
        None,
        "--external-csv",
        exists=True,
        dir_okay=False,
        help="with --wide: the external signal, same shape",
    ),
    batch: int = typer.Option(
        10_000, "--batch", min=1, max=100_000, help="observations per streamed message"
    ),
    address: str = AddressOpt,
    tenant: str = TenantOpt,
) -> None:
    """Stream observations to the service (idempotent: ingesting a file twice changes nothing).

    Long CSV (the default), one observation a row. Columns: series (the key), time or timestamp
    (ISO 8601 date or date-time, UTC without an offset), value, external (optional: the same
    trend's external signal; empty means none); every other column is a label of the series
    (e.g. category, colour, silhouette, market). Wide CSV (--wide): the first column the time,
    one column per series, named by its header; --external-csv the signal in the same shape.
    A value the service refuses is reported with the CSV line it came from.
    """
    if kind not in KINDS:
        raise typer.BadParameter(f"choose from {', '.join(KINDS)}", param_hint="--kind")
    if frequency not in FREQUENCIES:
        raise typer.BadParameter(f"choose from {', '.join(FREQUENCIES)}", param_hint="--frequency")
    upload = read_wide(path, external_csv) if wide else read_long(path)
    if not upload.observations:
        raise typer.BadParameter(f"{path.name}: no observations")
    names = list(dict.fromkeys(o.series for o in upload.observations))
    infos = [
        pb.SeriesInfo(
            series=n, labels=upload.labels.get(n, {}), kind=KINDS[kind], frequency=FREQUENCIES[frequency]
        )
        for n in names
    ]
    _stream(upload, infos, batch, path.name, address, tenant)


def _stream(
    upload: Upload, infos: list[pb.SeriesInfo], batch: int, what: str, address: str, tenant: str
) -> None:
    """Streams an upload in batches; a refused value is reported with the line it came from."""
    names = list(dict.fromkeys(o.series for o in upload.observations))
    starts = list(range(0, len(upload.observations), batch))

    def translate(violation: str) -> str:
        # "[b].observations[i].value" -> the CSV line it came from.
        head, _, rest = violation.partition("].observations[")
        if not rest or not head.startswith("["):
            return violation
        index, _, tail = rest.partition("]")
        try:
            row = starts[int(head[1:])] + int(index)
        except (ValueError, IndexError):
            return violation
        return f"{upload.lines[row]} ({tail.lstrip('.') or 'row'})"

    stub, channel = _stub(address)
    md = (("x-atelier-tenant", tenant),)
    try:
        with _progress() as progress:
            task = progress.add_task(f"ingesting {what}", total=len(upload.observations))

            def messages() -> Iterator[pb.StreamObservationsRequest]:
                for k, start in enumerate(starts):
                    part = upload.observations[start : start + batch]
                    yield pb.StreamObservationsRequest(observations=part, series=infos if k == 0 else [])
                    progress.advance(task, len(part))

            reply = stub.StreamObservations(messages(), metadata=md, timeout=600)
    except grpc.RpcError as exc:
        raise _fail(exc, translate) from None
    finally:
        channel.close()
    console.print(
        f"{len(names)} series, {len(upload.observations)} observations: {reply.inserted} inserted, "
        f"{reply.unchanged} unchanged, {reply.updated} updated (corrections)"
    )


def _read_table(path: Path) -> Any:
    import pandas as pd

    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            return pd.read_parquet(path)
        except ImportError as exc:
            raise typer.BadParameter(f"{path.name}: reading Parquet needs pyarrow ({exc})") from None
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


@app.command("ingest-sales")
def ingest_sales(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="sales lines, CSV or Parquet"),
    keys: str = typer.Option(..., "--keys", help="comma-separated key columns of a series, e.g. sku,store"),
    frequency: str = typer.Option("weekly", "--frequency", help="daily, weekly (Monday) or monthly"),
    timezone: str = typer.Option("UTC", "--timezone", help="IANA zone of the shops' calendar"),
    date_column: str = typer.Option("date", "--date-column"),
    quantity_column: str = typer.Option("qty", "--quantity-column", help="units; negative = returns"),
    value_column: str = typer.Option("", "--value-column", help="amount paid per line (for prices)"),
    promo_column: str = typer.Option("", "--promo-column", help="promotion flag per line"),
    label_columns: str = typer.Option("", "--labels", help="comma-separated columns kept as series labels"),
    stockouts: Path = typer.Option(
        None, "--stockouts", exists=True, dir_okay=False, help="date + key columns: days out of stock"
    ),
    net_returns: bool = typer.Option(False, "--net-returns", help="demand net of returned units"),
    end: str = typer.Option("", "--end", help="last day the data covers (default: the last sale)"),
    batch: int = typer.Option(10_000, "--batch", min=1, max=100_000),
    dry_run: bool = typer.Option(False, "--dry-run", help="aggregate and report, send nothing"),
    address: str = AddressOpt,
    tenant: str = TenantOpt,
) -> None:
    """Aggregate raw sales lines into demand series (one per key) and ingest them as counts.

    Returns are counted apart from demand (or netted with --net-returns); periods without sales
    between a key's first sale and the end are zeros; periods out of stock for at least half
    their days (--stockouts) are sent as missing, not zero: the service interpolates them and
    says so in the forecast's notes. Periods follow the shops' local calendar (--timezone).
    """
    import pandas as pd

    from atelier.runtime.errors import InvalidArgumentError
    from atelier.trends import sales as sales_mod
    from atelier.trends.store import Frequency

    freqs = {"daily": Frequency.DAILY, "weekly": Frequency.WEEKLY, "monthly": Frequency.MONTHLY}
    if frequency not in freqs:
        raise typer.BadParameter(f"choose from {', '.join(freqs)}", param_hint="--frequency")
    spec = sales_mod.SalesSpec(
        keys=tuple(k.strip() for k in keys.split(",") if k.strip()),
        frequency=freqs[frequency],
        timezone=timezone,
        date_column=date_column,
        quantity_column=quantity_column,
        value_column=value_column or None,
        promo_column=promo_column or None,
        label_columns=tuple(c.strip() for c in label_columns.split(",") if c.strip()),
        net_returns=net_returns,
    )
    try:
        frame = _read_table(path)
        out_days = _read_table(stockouts) if stockouts else None
        series, report = sales_mod.aggregate(frame, spec, out_days, pd.Timestamp(end) if end else None)
    except InvalidArgumentError as exc:
        raise typer.BadParameter(f"{path.name}: {exc}") from None
    console.print(
        f"{report.lines} lines ({report.return_lines} returns, {report.zero_lines} zero) -> "
        f"{report.series} series, {report.periods} periods: {report.zero_periods} without sales (zeros), "
        f"{report.censored_periods} out of stock (sent as missing)"
    )
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    upload = Upload()
    upload.labels = {s.name: s.labels for s in series}
    for o in sales_mod.observations(series):
        # The mean price paid and the share of units sold on promotion ride along where the
        # period had sales to tell (the service takes them as the model's exogenous inputs).
        obs = pb.Observation(series=o.series, time=timestamp_pb2.Timestamp(seconds=o.time_s), value=o.value)
        if o.price is not None:
            obs.price = o.price
        if o.promotion is not None:
            obs.promotion = o.promotion
        upload.observations.append(obs)
        upload.lines.append(f"series {o.series!r} period {_iso(obs.time)}")
    if dry_run or not upload.observations:
        return
    infos = [
        pb.SeriesInfo(
            series=s.name, labels=s.labels, kind=pb.VALUE_KIND_COUNT, frequency=FREQUENCIES[frequency]
        )
        for s in series
    ]
    _stream(upload, infos, batch, path.name, address, tenant)


@app.command("series")
def list_series(
    series: list[str] = SeriesOpt,
    label: list[str] = LabelOpt,
    address: str = AddressOpt,
    tenant: str = TenantOpt,
) -> None:
    """The stored series: labels, kind, frequency, observations and their time span."""
    stub, channel = _stub(address)
    md = (("x-atelier-tenant", tenant),)
    table = Table(title="trend series")
    for column in ("series", "labels", "kind", "frequency", "observations", "first", "last"):
        table.add_column(column)
    token = ""
    try:
        while True:
            reply = stub.ListSeries(
                pb.ListSeriesRequest(filter=_filter(series, label), page_size=1000, page_token=token),
                metadata=md,
            )
            for s in reply.series:
                table.add_row(
                    s.series,
                    ", ".join(f"{k}={v}" for k, v in sorted(s.labels.items())),
                    pb.ValueKind.Name(s.kind).removeprefix("VALUE_KIND_").lower(),
                    pb.Frequency.Name(s.frequency).removeprefix("FREQUENCY_").lower(),
                    str(s.observation_count),
                    _iso(s.first_time),
                    _iso(s.last_time),
                )
            token = reply.next_page_token
            if not token:
                break
    except grpc.RpcError as exc:
        raise _fail(exc) from None
    finally:
        channel.close()
    console.print(table)


def _forecast_json(forecasts: Any) -> dict[str, Any]:
    return {
        f.series: {
            "model": f.model,
            "notes": list(f.notes),
            "times": [_iso(t) for t in f.times],
            "mean": list(f.mean),
            "intervals": {
                str(i.level): {"lower": list(i.lower), "upper": list(i.upper)} for i in f.intervals
            },
        }
        for f in forecasts
    }


def plot_forecasts(
    histories: dict[str, pb.GetSeriesResponse], forecasts: list[pb.SeriesForecast], path: Path, title: str
) -> None:
    """History, forecast mean and shaded intervals, one panel per series (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    count = len(forecasts)
    cols = 1 if count == 1 else 2
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 3.2 * rows), squeeze=False)
    for ax, f in zip(axes.flat, forecasts, strict=False):
        history = histories[f.series]
        h_times = [datetime.fromtimestamp(o.time.seconds, UTC) for o in history.observations]
        ax.plot(h_times, [o.value for o in history.observations], color="#333333", lw=1.1, label="history")
        f_times = [datetime.fromtimestamp(t.seconds, UTC) for t in f.times]
        shades = sorted(f.intervals, key=lambda i: -i.level)
        for k, interval in enumerate(shades):
            ax.fill_between(
                f_times,
                interval.lower,
                interval.upper,
                color="#1f77b4",
                alpha=0.18 + 0.17 * k,
                lw=0,
                label=f"{interval.level}% interval",
            )
        ax.plot(f_times, f.mean, color="#1f77b4", lw=1.6, label=f"forecast ({f.model})")
        ax.set_title(f.series, fontsize=10)
        ax.xaxis.set_major_locator(mdates.YearLocator())
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@app.command()
def forecast(
    horizon: int = typer.Option(52, "--horizon", help="steps ahead (weeks or days), up to 104 weekly"),
    levels: str = typer.Option("80,95", "--levels", help="prediction interval levels in percent"),
    model: str = typer.Option("auto", "--model", help="auto, ensemble, gbm, mstl, theta, ets, snaive, naive"),
    series: list[str] = SeriesOpt,
    label: list[str] = LabelOpt,
    output: Path = typer.Option(
        None, "--output", "-o", help="plot of history, forecast and intervals (.png)"
    ),
    json_out: Path = typer.Option(None, "--json", help="the forecasts as JSON"),
    plot_series: int = typer.Option(6, "--plot-series", min=1, max=24, help="series in the plot at most"),
    plan: Path = typer.Option(
        None,
        "--plan",
        exists=True,
        dir_okay=False,
        help="planned inputs, CSV: series, step (1..horizon), and price, discount, promotion (any of them)",
    ),
    holiday_country: str = typer.Option(
        "", "--holiday-country", help="ISO 3166 code (e.g. US, FR): its public holidays as known inputs"
    ),
    address: str = AddressOpt,
    tenant: str = TenantOpt,
) -> None:
    """Forecast (a job on the service, with a progress bar), print a summary, write PNG and JSON.

    --plan asks for the forecast under planned prices and promotions (a series and step not in
    the file: last price, no discount, no promotion)."""
    if output is not None and output.suffix.lower() != ".png":
        raise typer.BadParameter(f"{output}: the plot is a .png", param_hint="--output")
    request = pb.StartForecastRequest(
        filter=_filter(series, label),
        horizon=horizon,
        levels=_levels(levels),
        model=model,
        future=read_plan(plan, horizon) if plan is not None else [],
        holiday_country=holiday_country,
    )
    stub, channel = _stub(address)
    md = (("x-atelier-tenant", tenant),)
    ops = operations_pb2_grpc.OperationsStub(channel)
    try:
        op = stub.StartForecast(request, metadata=md, timeout=120)
        with _progress() as progress:
            task = progress.add_task("forecasting", total=None)
            while not op.done:
                time.sleep(0.3)
                op = ops.GetOperation(
                    operations_pb2.GetOperationRequest(name=op.name), metadata=md, timeout=60
                )
                meta = progress_pb2.OperationMetadata()
                op.metadata.Unpack(meta)
                total = meta.progress.steps_total or None
                progress.update(
                    task,
                    total=total,
                    completed=meta.progress.steps_done if total else 0,
                    description=f"forecasting: {meta.progress.message}"
                    if meta.progress.message
                    else "forecasting",
                )
        if op.HasField("error"):
            console.print(f"[red]the forecast job failed[/red]: {op.error.message}")
            raise typer.Exit(1)
        result = pb.ForecastResponse()
        op.response.Unpack(result)
        forecasts = sorted(result.forecasts, key=lambda f: f.series)
        shown = forecasts[:plot_series]
        histories = (
            {f.series: stub.GetSeries(pb.GetSeriesRequest(series=f.series), metadata=md) for f in shown}
            if output is not None
            else {}
        )
    except grpc.RpcError as exc:
        raise _fail(exc) from None
    finally:
        channel.close()
    table = Table(title=f"forecast, {horizon} steps")
    for column in ("series", "model", "first", "last", "mean", "notes"):
        table.add_column(column)
    for f in forecasts[:50]:
        table.add_row(
            f.series,
            f.model,
            f"{f.mean[0]:.4g}",
            f"{f.mean[-1]:.4g}",
            f"{sum(f.mean) / len(f.mean):.4g}",
            "; ".join(f.notes),
        )
    console.print(table)
    if len(forecasts) > 50:
        console.print(f"... and {len(forecasts) - 50} more series (all of them in --json)")
    if json_out is not None:
        json_out.write_text(
            json.dumps({"horizon": horizon, "forecasts": _forecast_json(forecasts)}, indent=1)
        )
        console.print(f"wrote {json_out}")
    if output is not None:
        more = f" (first {len(shown)} of {len(forecasts)})" if len(forecasts) > len(shown) else ""
        plot_forecasts(histories, shown, output, f"{horizon}-step forecast{more}")
        console.print(f"wrote {output}")


@app.command()
def classify(
    series: list[str] = SeriesOpt,
    label: list[str] = LabelOpt,
    threshold: float = typer.Option(0.05, "--threshold", help="year-on-year change for rising/declining"),
    top: int = typer.Option(5, "--top", help="top movers per category"),
    category_label: str = typer.Option("category", "--category-label", help="the label naming a category"),
    json_out: Path = typer.Option(None, "--json", help="the classifications as JSON"),
    address: str = AddressOpt,
    tenant: str = TenantOpt,
) -> None:
    """Rising / flat / declining over the next year, emerging trends and top movers, with the figures."""
    stub, channel = _stub(address)
    try:
        reply = stub.ClassifyTrends(
            pb.ClassifyTrendsRequest(
                filter=_filter(series, label),
                threshold=threshold,
                top_movers=top,
                category_label=category_label,
            ),
            metadata=(("x-atelier-tenant", tenant),),
            timeout=600,
        )
    except grpc.RpcError as exc:
        raise _fail(exc) from None
    finally:
        channel.close()
    table = Table(title="trends over the next year")
    for column in ("series", "trend", "yoy", "last year", "next year", "emerging"):
        table.add_column(column)
    for t in sorted(reply.trends, key=lambda t: -t.yoy_change):
        table.add_row(
            t.series,
            TREND_NAMES.get(t.trend, "?"),
            f"{t.yoy_change:+.1%}",
            f"{t.last_year_mean:.4g}",
            f"{t.next_year_mean:.4g}",
            "yes" if t.emerging else "",
        )
    console.print(table)
    for category, movers in sorted(reply.top_movers.items()):
        console.print(
            f"{category or '(no category)'}: rising {', '.join(movers.rising) or '-'}; "
            f"declining {', '.join(movers.declining) or '-'}"
        )
    if json_out is not None:
        json_out.write_text(
            json.dumps(
                {
                    "trends": {
                        t.series: {
                            "trend": pb.TrendClass.Name(t.trend).removeprefix("TREND_CLASS_").lower(),
                            "yoy_change": t.yoy_change,
                            "last_year_mean": t.last_year_mean,
                            "next_year_mean": t.next_year_mean,
                            "emerging": t.emerging,
                            "model": t.model,
                            "explanation": t.explanation,
                        }
                        for t in reply.trends
                    },
                    "top_movers": {
                        c: {"rising": list(m.rising), "declining": list(m.declining)}
                        for c, m in reply.top_movers.items()
                    },
                },
                indent=1,
            )
        )
        console.print(f"wrote {json_out}")


@app.command()
def demand(
    horizon: int = typer.Option(8, "--horizon", help="steps ahead"),
    levels: str = typer.Option("80,95", "--levels", help="interval levels in percent"),
    series: list[str] = SeriesOpt,
    label: list[str] = LabelOpt,
    json_out: Path = typer.Option(None, "--json", help="the forecasts as JSON"),
    address: str = AddressOpt,
    tenant: str = TenantOpt,
) -> None:
    """Per-SKU demand forecasts with intervals (intermittent demand: Croston-SBA / ADIDA)."""
    stub, channel = _stub(address)
    try:
        reply = stub.ForecastDemand(
            pb.ForecastDemandRequest(filter=_filter(series, label), horizon=horizon, levels=_levels(levels)),
            metadata=(("x-atelier-tenant", tenant),),
            timeout=600,
        )
    except grpc.RpcError as exc:
        raise _fail(exc) from None
    finally:
        channel.close()
    top = max(_levels(levels) or [95])
    table = Table(title=f"demand, next {horizon} periods")
    for column in ("series", "class:model", "total", f"first period {top}% interval"):
        table.add_column(column)
    for f in sorted(reply.forecasts, key=lambda f: f.series):
        widest = max(f.intervals, key=lambda i: i.level, default=None)
        table.add_row(
            f.series,
            f.model,
            f"{sum(f.mean):.4g}",
            f"{widest.lower[0]:.4g} .. {widest.upper[0]:.4g}" if widest else "",
        )
    console.print(table)
    if json_out is not None:
        forecasts = _forecast_json(reply.forecasts)
        json_out.write_text(json.dumps({"horizon": horizon, "forecasts": forecasts}, indent=1))
        console.print(f"wrote {json_out}")


@app.command()
def backtest(
    horizon: int = typer.Option(52, "--horizon", help="steps per window"),
    windows: int = typer.Option(1, "--windows", help="rolling-origin windows, 1..8"),
    models: list[str] = typer.Option(
        [], "--model", "-m", help="a model to compare (repeatable; default all)"
    ),
    series: list[str] = SeriesOpt,
    label: list[str] = LabelOpt,
    address: str = AddressOpt,
    tenant: str = TenantOpt,
) -> None:
    """How good each model is on your own series: seasonal MASE, trend-class accuracy, sMAPE."""
    stub, channel = _stub(address)
    try:
        with console.status(f"backtesting {len(models) or 'all'} models over {windows} window(s)"):
            reply = stub.Backtest(
                pb.BacktestRequest(
                    filter=_filter(series, label), horizon=horizon, windows=windows, models=models
                ),
                metadata=(("x-atelier-tenant", tenant),),
                timeout=1800,
            )
    except grpc.RpcError as exc:
        raise _fail(exc) from None
    finally:
        channel.close()
    table = Table(title=f"backtest, horizon {horizon}, {windows} window(s)")
    for column in ("model", "seasonal MASE", "class accuracy", "sMAPE", "series"):
        table.add_column(column)
    for s in sorted(reply.scores, key=lambda s: s.mase):
        best = " (best)" if s.model == reply.best_model else ""
        table.add_row(
            s.model + best, f"{s.mase:.4f}", f"{s.class_accuracy:.3f}", f"{s.smape:.3f}", str(s.series_count)
        )
    console.print(table)
