"""IngestSales over real gRPC: raw sales lines streamed, aggregated by the service like the CLI
path (sales.aggregate), stored all or nothing, every bad line named."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pandas as pd
import pytest
from google.protobuf import timestamp_pb2

from atelier.runtime.server import Server
from atelier.trends.sales import SalesSpec, aggregate
from atelier.trends.server import build
from atelier.trends.store import Frequency
from atelier.trends.v1 import trends_pb2, trends_pb2_grpc
from tests.trends.test_service import fields, violations_of


@pytest.fixture
def stub(start_server: Callable[..., Server]) -> Iterator[trends_pb2_grpc.TrendsServiceStub]:
    server = start_server("trends", build)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield trends_pb2_grpc.TrendsServiceStub(channel)


def _epoch(day: str) -> int:
    return int(pd.Timestamp(day).value // 1_000_000_000)


AGGREGATION = trends_pb2.SalesAggregation(
    keys=["sku", "store"],
    frequency=trends_pb2.FREQUENCY_WEEKLY,
    timezone="America/New_York",
    label_keys=["category"],
    end_date="2024-01-28",
)


def _line(
    day: str, sku: str, qty: float, amount: float | None = None, promo: bool = False
) -> trends_pb2.SalesLine:
    line = trends_pb2.SalesLine(
        local_date=day, keys=[sku, "S1"], quantity=qty, promotion=promo, labels=["tops"]
    )
    if amount is not None:
        line.amount = amount
    return line


def test_streamed_lines_are_aggregated_like_the_cli_path(stub: trends_pb2_grpc.TrendsServiceStub) -> None:
    # 2024-01-08 03:30 UTC is Sunday 2024-01-07 22:30 in New York: the first week, not the second.
    late_sunday = trends_pb2.SalesLine(
        time=timestamp_pb2.Timestamp(seconds=_epoch("2024-01-08 03:30")),
        keys=["A", "S1"],
        quantity=1,
        labels=["tops"],
    )
    first = [
        _line("2024-01-01", "A", 2, 20.0),
        _line("2024-01-03", "A", 3, 24.0, promo=True),
        _line("2024-01-04", "A", -1, 10.0),  # a return: counted apart, not negative demand
        late_sunday,
    ]
    second = [_line("2024-01-20", "A", 4, 40.0), _line("2024-01-02", "B", 5)]
    # B is out of stock six days of the third week: censored (missing), not a zero.
    out = [
        trends_pb2.StockoutDay(local_date=d, keys=["B", "S1"])
        for d in pd.date_range("2024-01-15", "2024-01-20").strftime("%Y-%m-%d")
    ]
    reply = stub.IngestSales(
        iter(
            [
                trends_pb2.IngestSalesRequest(aggregation=AGGREGATION, lines=first),
                trends_pb2.IngestSalesRequest(lines=second, stockouts=out),
            ]
        )
    )
    assert (reply.lines, reply.return_lines, reply.series, reply.periods) == (6, 1, 2, 8)
    assert (reply.zero_periods, reply.censored_periods, reply.inserted) == (4, 1, 7)

    a = stub.GetSeries(trends_pb2.GetSeriesRequest(series="sku=A|store=S1"))
    assert a.info.kind == trends_pb2.VALUE_KIND_COUNT and a.info.frequency == trends_pb2.FREQUENCY_WEEKLY
    assert dict(a.info.labels) == {"sku": "A", "store": "S1", "category": "tops"}
    assert [o.time.seconds for o in a.observations] == [
        _epoch(d) for d in ("2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22")
    ]
    assert [o.value for o in a.observations] == [6.0, 0.0, 4.0, 0.0]
    # Price: paid over units of sale lines that carry an amount (the late line has none).
    assert a.observations[0].price == pytest.approx(44 / 5)
    assert a.observations[0].promotion == pytest.approx(3 / 6)
    b = stub.GetSeries(trends_pb2.GetSeriesRequest(series="sku=B|store=S1"))
    assert [o.time.seconds for o in b.observations] == [
        _epoch(d) for d in ("2024-01-01", "2024-01-08", "2024-01-22")
    ]

    # The same lines through the CLI's path (sales.aggregate on a table) give the same series.
    table = pd.DataFrame(
        {
            # One column of instants (noon UTC is the same day in New York).
            "date": [f"{d}T12:00:00Z" for d in ("2024-01-01", "2024-01-03", "2024-01-04")]
            + ["2024-01-08T03:30:00Z", "2024-01-20T12:00:00Z", "2024-01-02T12:00:00Z"],
            "sku": ["A", "A", "A", "A", "A", "B"],
            "store": ["S1"] * 6,
            "qty": [2, 3, -1, 1, 4, 5],
        }
    )
    spec = SalesSpec(keys=("sku", "store"), frequency=Frequency.WEEKLY, timezone="America/New_York")
    series, _ = aggregate(table, spec, end=pd.Timestamp("2024-01-28"))
    assert list(series[0].units) == [o.value for o in a.observations]

    # Streamed again: every observation is unchanged (idempotent like IngestObservations).
    again = stub.IngestSales(
        iter([trends_pb2.IngestSalesRequest(aggregation=AGGREGATION, lines=first + second, stockouts=out)])
    )
    assert (again.inserted, again.unchanged, again.updated) == (0, 7, 0)


def test_bad_lines_are_named_and_nothing_is_stored(stub: trends_pb2_grpc.TrendsServiceStub) -> None:
    good = trends_pb2.IngestSalesRequest(aggregation=AGGREGATION, lines=[_line("2024-01-01", "A", 2)])
    bad = trends_pb2.IngestSalesRequest(
        lines=[
            _line("2024-01-02", "A", 1),
            trends_pb2.SalesLine(local_date="2024-13-01", keys=["A", "S1"], quantity=1),
            trends_pb2.SalesLine(local_date="2024-01-03", keys=["A"], quantity=1),
            trends_pb2.SalesLine(keys=["A", "S1"], quantity=1),
            _line("2024-01-03", "A", 1, amount=-5.0),
            trends_pb2.SalesLine(local_date="2024-01-03", keys=["A", ""], quantity=1),
            trends_pb2.SalesLine(local_date="2024-01-03", keys=["A", "S1"], quantity=1, labels=["x", "y"]),
        ],
        stockouts=[trends_pb2.StockoutDay(local_date="yesterday", keys=["A", "S1"])],
    )
    found = fields(violations_of(lambda: stub.IngestSales(iter([good, bad]))))
    assert found == [
        "[1].lines[1].local_date",
        "[1].lines[2].keys",
        "[1].lines[3].time",
        "[1].lines[4].amount",
        "[1].lines[5].keys",
        "[1].lines[6].labels",
        "[1].stockouts[0].local_date",
    ]
    # All or nothing: the good first message was not stored either.
    assert stub.ListSeries(trends_pb2.ListSeriesRequest()).series == []

    no_spec = trends_pb2.IngestSalesRequest(lines=[_line("2024-01-01", "A", 2)])
    assert fields(violations_of(lambda: stub.IngestSales(iter([no_spec])))) == ["[0].aggregation"]
    assert fields(violations_of(lambda: stub.IngestSales(iter([good, good])))) == ["[1].aggregation"]
    assert fields(violations_of(lambda: stub.IngestSales(iter([])))) == ["aggregation"]
    wrong = trends_pb2.SalesAggregation(
        keys=["sku", "sku"], timezone="Mars/Olympus", frequency=9, end_date="2024-02-30"
    )
    assert sorted(
        fields(
            violations_of(lambda: stub.IngestSales(iter([trends_pb2.IngestSalesRequest(aggregation=wrong)])))
        )
    ) == [
        "[0].aggregation.end_date",
        "[0].aggregation.frequency",
        "[0].aggregation.label_keys",
        "[0].aggregation.timezone",
    ]
    # A message over the per-message bound is refused before its lines are read.
    many = trends_pb2.IngestSalesRequest(
        aggregation=AGGREGATION, lines=[_line("2024-01-01", "A", 1)] * 10_001
    )
    assert fields(violations_of(lambda: stub.IngestSales(iter([many])))) == ["[0].lines"]


def test_daily_and_monthly_streams(stub: trends_pb2_grpc.TrendsServiceStub) -> None:
    days = pd.date_range("2024-01-01", "2024-03-31").strftime("%Y-%m-%d")
    rng = np.random.default_rng(3)
    lines = [trends_pb2.SalesLine(local_date=d, keys=["A"], quantity=float(rng.integers(0, 5))) for d in days]
    for name, frequency, periods in (
        ("daily", trends_pb2.FREQUENCY_DAILY, 91),
        ("monthly", trends_pb2.FREQUENCY_MONTHLY, 3),
    ):
        spec = trends_pb2.SalesAggregation(keys=[f"sku_{name}"], frequency=frequency)
        for line in lines:
            line.keys[0] = "A"
        reply = stub.IngestSales(iter([trends_pb2.IngestSalesRequest(aggregation=spec, lines=lines)]))
        assert reply.periods == periods
        got = stub.GetSeries(trends_pb2.GetSeriesRequest(series=f"sku_{name}=A"))
        assert got.info.frequency == frequency
        assert sum(o.value for o in got.observations) == sum(line.quantity for line in lines)
