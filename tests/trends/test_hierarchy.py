"""Hierarchical forecasts: the summing matrix, reconciliation that adds up, and the gRPC path."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
import pytest

from atelier.runtime.errors import InvalidArgumentError
from atelier.runtime.server import Server
from atelier.trends import hierarchy
from atelier.trends.server import build as build_trends
from atelier.trends.v1 import trends_pb2, trends_pb2_grpc

from .test_service import MONDAY_2015, WEEK_S, fields, ts, violations_of, weekly

LABELS = [
    {"department": "women", "category": "dresses"},
    {"department": "women", "category": "dresses"},
    {"department": "women", "category": "tops"},
    {"department": "men", "category": "shirts"},
]


def test_summing_matrix() -> None:
    tree = hierarchy.build(["a", "b", "c", "d"], LABELS, ["department", "category"])
    assert tree.nodes == [
        "total",
        "department=men",
        "department=women",
        "department=men/category=shirts",
        "department=women/category=dresses",
        "department=women/category=tops",
        "a",
        "b",
        "c",
        "d",
    ]
    assert tree.node_levels[:3] == ["total", "department", "department"] and tree.node_levels[-1] == "series"
    values = np.arange(8, dtype=float).reshape(4, 2)
    nodes = tree.aggregate(values)
    assert (
        nodes[0].tolist() == [12.0, 16.0]
        and nodes[2].tolist() == [6.0, 9.0]
        and nodes[4].tolist() == [2.0, 4.0]
    )
    with pytest.raises(InvalidArgumentError, match="'c' has no 'season'"):
        hierarchy.build(["a", "b", "c", "d"], LABELS, ["department", "season"])


@pytest.mark.parametrize("method", hierarchy.METHODS)
def test_reconciled_forecasts_add_up(method: str) -> None:
    tree = hierarchy.build(["a", "b", "c", "d"], LABELS, ["department", "category"])
    rng = np.random.default_rng(1)
    bottom = 10 + rng.normal(0, 1, (4, 120)).cumsum(axis=1) * 0.1 + rng.normal(0, 1, (4, 120))
    history = tree.aggregate(bottom)
    # Incoherent base forecasts: every node's own flat forecast, plus noise.
    base = history[:, -1:] + rng.normal(0, 2, (len(tree.nodes), 6))
    assert hierarchy.incoherence(tree, base) > 1
    lo, hi = base - 3, base + 3
    mean, intervals = hierarchy.reconcile(tree, base, history, 52, method, {80: (lo, hi)})
    assert hierarchy.incoherence(tree, mean) < 1e-6
    lower, upper = intervals[80]
    assert np.all(lower <= mean + 1e-9) and np.all(mean <= upper + 1e-9)
    # Bottom-up keeps the bottom base forecasts; the others move them towards the levels above.
    if method == "bottom_up":
        assert np.allclose(mean[tree.bottom_index], base[tree.bottom_index])


def test_hierarchical_forecast_over_grpc(start_server: Callable[..., Server]) -> None:
    server = start_server("trends", build_trends)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = trends_pb2_grpc.TrendsServiceStub(channel)
        rng = np.random.default_rng(3)
        t = np.arange(160)
        obs, infos = [], []
        for k, labels in enumerate(LABELS):
            name = "abcd"[k]
            weeks = 160 if k != 3 else 100  # "d" started later: zeros before it in the total
            values = 20 + 5 * k + 6 * np.sin(2 * np.pi * t[-weeks:] / 52) + rng.normal(0, 1, weeks)
            obs += weekly(name, np.maximum(values, 0), start=MONDAY_2015 + (160 - weeks) * 7 * 86_400)
            infos.append(trends_pb2.SeriesInfo(series=name, labels=labels, kind=trends_pb2.VALUE_KIND_COUNT))
        stub.IngestObservations(trends_pb2.IngestObservationsRequest(observations=obs, series=infos))
        reply = stub.Forecast(
            trends_pb2.ForecastRequest(horizon=12, model="mstl", hierarchy=["department", "category"])
        )
        by = {f.series: f for f in reply.forecasts}
        assert len(by) == 10 and by["total"].level == "total" and by["a"].level == "series"
        mean = {name: np.array(f.mean) for name, f in by.items()}
        assert np.allclose(mean["total"], sum(mean[n] for n in "abcd"), atol=1e-6)
        assert np.allclose(mean["department=women"], mean["a"] + mean["b"] + mean["c"], atol=1e-6)
        assert np.allclose(mean["department=women/category=dresses"], mean["a"] + mean["b"], atol=1e-6)
        assert by["total"].times[0].seconds == MONDAY_2015 + 160 * 7 * 86_400
        assert any("reconciled with mint_shrink" in n for n in by["total"].notes)
        # Errors: a share series cannot be added up; an unknown method is named.
        share = trends_pb2.SeriesInfo(series="share", labels=LABELS[0], kind=trends_pb2.VALUE_KIND_SHARE)
        stub.IngestObservations(
            trends_pb2.IngestObservationsRequest(observations=weekly("share", np.ones(160)), series=[share])
        )
        assert fields(
            violations_of(
                lambda: stub.Forecast(trends_pb2.ForecastRequest(horizon=4, hierarchy=["department"]))
            )
        ) == ["filter"]
        some = trends_pb2.SeriesFilter(series=list("abcd"))
        assert fields(
            violations_of(
                lambda: stub.Forecast(
                    trends_pb2.ForecastRequest(
                        filter=some, horizon=4, hierarchy=["department"], reconciliation="magic"
                    )
                )
            )
        ) == ["reconciliation"]


def test_planned_promotions_with_a_hierarchy(start_server: Callable[..., Server]) -> None:
    from tests.trends.test_covariates import promoted_sales

    server = start_server("trends", build_trends)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = trends_pb2_grpc.TrendsServiceStub(channel)
        obs, infos = [], []
        for k in range(8):
            units, promo, price = promoted_sales(k, 156)
            name = f"sku{k}"
            for w in range(156):
                o = trends_pb2.Observation(series=name, time=ts(MONDAY_2015 + w * WEEK_S), value=units[w])
                o.promotion, o.price = promo[w], price[w]
                obs.append(o)
            labels = {"department": "women", "category": "dresses" if k < 4 else "tops"}
            infos.append(trends_pb2.SeriesInfo(series=name, labels=labels, kind=trends_pb2.VALUE_KIND_COUNT))
        stub.IngestObservations(trends_pb2.IngestObservationsRequest(observations=obs, series=infos))
        plan = np.zeros(8)
        plan[[2, 5]] = 1.0
        future = [
            trends_pb2.FutureCovariates(
                series=f"sku{k}", promotion=plan.tolist(), price=[8.0 if p else 10.0 for p in plan]
            )
            for k in range(4)  # every dress is on promotion in weeks 3 and 6
        ]
        request = trends_pb2.ForecastRequest(horizon=8, hierarchy=["department", "category"])
        default = stub.Forecast(request, timeout=300)
        request.future.extend(future)
        planned = stub.Forecast(request, timeout=300)
        by = {f.series: np.array(f.mean) for f in planned.forecasts}
        before = {f.series: np.array(f.mean) for f in default.forecasts}
        dresses = "department=women/category=dresses"
        # Coherent, and the planned weeks rise for the dresses, their category and the total.
        assert np.allclose(by[dresses], sum(by[f"sku{k}"] for k in range(4)), atol=1e-6)
        assert np.allclose(by["total"], sum(by[f"sku{k}"] for k in range(8)), atol=1e-6)
        for name in ("sku0", "sku3", dresses, "total"):
            lift = by[name] - before[name]
            assert np.all(lift[[2, 5]] > 0.1 * before[name][[2, 5]]), (name, lift)
            assert np.all(np.abs(np.delete(lift, [2, 5])) < np.min(lift[[2, 5]])), (name, lift)
        # The tops, not on promotion, barely move (the reconciliation spreads a little).
        tops = "department=women/category=tops"
        assert np.all(np.abs(by[tops] - before[tops]) < 0.1 * before[tops]), (by[tops], before[tops])


def test_large_hierarchies_are_sparse_and_default_to_wls_struct() -> None:
    n = 4000
    labels = [{"department": f"d{i % 5}", "category": f"c{i % 40}"} for i in range(n)]
    tree = hierarchy.build([f"s{i}" for i in range(n)], labels, ["department", "category"])
    # One non-zero per series and level (total, department, category, itself): not nodes x series.
    assert tree.summing.nnz == 4 * n and len(tree.nodes) == 1 + 5 + 40 + n
    assert hierarchy.default_method(tree) == "wls_struct"
    small = hierarchy.build(["a", "b", "c", "d"], LABELS, ["department", "category"])
    assert hierarchy.default_method(small) == "mint_shrink"
    rng = np.random.default_rng(2)
    bottom = rng.poisson(5, (n, 60)).astype(float)
    history = tree.aggregate(bottom)
    base = history[:, -4:] + rng.normal(0, 1, (len(tree.nodes), 4))
    mean, intervals = hierarchy.reconcile(tree, base, history, 52, "wls_struct", {80: (base - 2, base + 2)})
    assert hierarchy.incoherence(tree, mean) < 1e-6 * mean.max()
    assert intervals[80][0].shape == mean.shape
    with pytest.raises(InvalidArgumentError, match="at most 3000 nodes"):
        hierarchy.reconcile(tree, base, history, 52, "mint_shrink")


def test_sparse_bottom_up_intervals_match_normality() -> None:
    # The large-hierarchy path's interval formula is what hierarchicalforecast's Normality gives
    # for bottom-up (checked where both run: a small hierarchy).
    tree = hierarchy.build(["a", "b", "c", "d"], LABELS, ["department", "category"])
    rng = np.random.default_rng(4)
    base = rng.uniform(5, 20, (len(tree.nodes), 6))
    half = rng.uniform(1, 3, base.shape)
    intervals = {80: (base - half, base + half)}
    dense_mean, dense = hierarchy.reconcile(tree, base, base, 52, "bottom_up", intervals)
    sigmah = half / hierarchy.norm.ppf(0.9)
    sparse_mean, sparse = hierarchy._reconcile_sparse(tree, base, "bottom_up", [80], sigmah, False)
    np.testing.assert_allclose(sparse_mean, dense_mean, atol=1e-9)
    np.testing.assert_allclose(sparse[80][0], dense[80][0], atol=1e-9)
    np.testing.assert_allclose(sparse[80][1], dense[80][1], atol=1e-9)


def test_node_inputs_are_aggregated_from_the_bottom() -> None:
    from atelier.trends.calendar import HOLIDAY
    from atelier.trends.servicer import Prepared, TrendsServicer
    from atelier.trends.store import Frequency, SeriesData, SeriesMeta, ValueKind

    labels = [{"category": "dresses"}, {"category": "dresses"}, {"category": "tops"}]
    tree = hierarchy.build(["a", "b", "c"], labels, ["category"])
    start = 1_703_980_800  # Sunday 2023-12-31 00:00 UTC; daily series over New Year 2024
    units = np.array([[10.0, 10, 30, 10], [30.0, 30, 10, 30], [5.0, 5, 5, 5]])
    promo = np.array([[1.0, 0, 0, 0], [0.0, 0, 1, 0], [0.0, 0, 0, 0]])
    data = [
        SeriesData(
            SeriesMeta(name, lab, Frequency.DAILY, ValueKind.COUNT),
            start,
            units[k],
            None,
            covariates={"promotion": promo[k]} if k < 2 else {},
        )
        for k, (name, lab) in enumerate(zip("abc", labels, strict=True))
    ]
    planned = {"a": {"promotion": np.array([1.0, 0.0])}}
    prepared = Prepared({Frequency.DAILY: data}, 2, [80], "auto", planned=planned, holiday_country="US")
    inputs = TrendsServicer._hierarchy_inputs(prepared, data, tree, units, [0] * len(tree.nodes))
    past, plan = inputs["covariates"], inputs["planned"]
    dresses = tree.nodes.index("category=dresses")
    # The share of the dresses' units sold on promotion: a's 10 of 40, then none, then b's 10 of 40.
    np.testing.assert_allclose(past[dresses]["promotion"], [0.25, 0.0, 0.25, 0.0])
    # Planned: a on promotion on the first day, weighted by the children's recent mean units (15, 25).
    np.testing.assert_allclose(plan[dresses]["promotion"], [15 / 40, 0.0])
    total = tree.nodes.index("total")
    np.testing.assert_allclose(past[total]["promotion"], [10 / 45, 0.0, 10 / 45, 0.0])
    # Bottom series keep their own; every node gets the holidays (New Year's Day is the 2nd day).
    np.testing.assert_allclose(past[tree.nodes.index("a")]["promotion"], promo[0])
    assert all(list(p[HOLIDAY]) == [0, 1, 0, 0] for p in past)
    assert all(list(p[HOLIDAY]) == [0, 0] for p in plan)
