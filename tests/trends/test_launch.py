"""New-product forecasts from past launches: launch alignment, attribute back-off, the RPC."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np

from atelier.runtime.server import Server
from atelier.trends import launch
from atelier.trends.server import build as build_trends
from atelier.trends.v1 import trends_pb2, trends_pb2_grpc

from .test_service import MONDAY_2015, fields, violations_of, weekly

WEEK_S = 7 * 86_400


def test_launch_alignment_and_back_off() -> None:
    # "old" sells from the data's first period: not a launch. The others launch later.
    names = ["old", "d1", "d2", "t1"]
    labels = [
        {"category": "dresses", "department": "women"},
        {"category": "dresses", "department": "women"},
        {"category": "dresses", "department": "women"},
        {"category": "tops", "department": "women"},
    ]
    starts = [0, 3, 5, 2]
    values = [np.ones(20), np.array([0, 0, 10, 6, 4, 2.0]), np.array([8, 4, 2, 1.0]), np.array([3, 3, 3.0])]
    past, not_launches = launch.launches(names, labels, starts, values)
    assert not_launches == 1 and [p.name for p in past] == ["d1", "d2", "t1"]
    assert past[0].curve.tolist() == [10, 6, 4, 2]  # aligned on the first sale
    dresses = launch.forecast(
        {"category": "dresses", "department": "women"}, ["category", "department"], past, 4, [80], 2
    )
    assert dresses.matched == {"category": "dresses", "department": "women"} and dresses.analogues == 2
    assert dresses.mean.tolist() == [9.0, 5.0, 3.0, 1.5]
    lo, hi = dresses.intervals[80]
    assert np.all(lo <= dresses.mean) and np.all(dresses.mean <= hi) and lo[0] < hi[0]
    # Only one top: back off to the department (three launches), said in the notes.
    tops = launch.forecast(
        {"category": "tops", "department": "women"}, ["category", "department"], past, 4, [80], 2
    )
    assert tops.matched == {"department": "women"} and tops.analogues == 3
    assert any("fewer than 2 past launches share category" in n for n in tops.notes)
    # Periods beyond some analogues' history use those that reached them.
    assert any("as few as" in n for n in tops.notes)


def test_forecast_new_products_over_grpc(start_server: Callable[..., Server]) -> None:
    server = start_server("trends", build_trends)
    rng = np.random.default_rng(7)
    curve = {"dresses": 30 * np.exp(-np.arange(20) / 6), "tops": 10 * np.exp(-np.arange(20) / 12)}
    obs, infos = [], []
    obs += weekly("always", np.full(60, 5.0))  # on sale from the start: not a launch
    infos.append(
        trends_pb2.SeriesInfo(series="always", labels={"category": "tops"}, kind=trends_pb2.VALUE_KIND_COUNT)
    )
    for k in range(12):
        category = "dresses" if k % 2 == 0 else "tops"
        start = MONDAY_2015 + (5 + 3 * k) * WEEK_S
        values = np.maximum(curve[category] * rng.uniform(0.8, 1.2) + rng.normal(0, 0.5, 20), 0.1)
        obs += weekly(f"p{k}", values, start=start)
        labels = {"category": category, "department": "women"}
        infos.append(trends_pb2.SeriesInfo(series=f"p{k}", labels=labels, kind=trends_pb2.VALUE_KIND_COUNT))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = trends_pb2_grpc.TrendsServiceStub(channel)
        stub.IngestObservations(trends_pb2.IngestObservationsRequest(observations=obs, series=infos))
        request = trends_pb2.ForecastNewProductsRequest(
            products=[
                trends_pb2.NewProduct(id="new-dress", labels={"category": "dresses", "department": "women"}),
                trends_pb2.NewProduct(id="new-coat", labels={"category": "coats", "department": "women"}),
            ],
            attributes=["category", "department"],
            horizon=12,
        )
        reply = stub.ForecastNewProducts(request)
        assert reply.series_not_launches == 1
        dress, coat = reply.forecasts
        assert dress.id == "new-dress" and dict(dress.matched) == {
            "category": "dresses",
            "department": "women",
        }
        assert dress.analogue_count == 6
        assert np.mean(np.abs(np.array(dress.mean) - curve["dresses"][:12])) < 2.5
        assert [i.level for i in dress.intervals] == [80, 95]
        # No coats launched before: the department's launches, and the reply says so.
        assert dict(coat.matched) == {"department": "women"} and coat.analogue_count == 12
        assert any("coats" not in n and "category" in n for n in coat.notes)
        bad = trends_pb2.ForecastNewProductsRequest(products=[trends_pb2.NewProduct(id="")], horizon=0)
        assert sorted(fields(violations_of(lambda: stub.ForecastNewProducts(bad)))) == [
            "attributes",
            "horizon",
            "products[0].id",
        ]
