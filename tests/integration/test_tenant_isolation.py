"""Two tenants on every service, over real gRPC sockets, with keys from a keys file.

Tenant A (key A) stores objects; tenant B (key B) then tries every RPC that stores or reads data
on A's names: B must never read, list, change or learn of A's objects (NOT_FOUND, never
PERMISSION_DENIED, which would confirm the object exists). Key A cannot switch to tenant B with
the header (PERMISSION_DENIED), and a read-only key of A cannot write. Each test checks that
B called every RPC of its service's contract except the ones declared stateless below, so a new
RPC that stores or reads data fails here until it is covered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2

from atelier.body.v1 import body_pb2, body_pb2_grpc
from atelier.inspection.v1 import inspection_pb2, inspection_pb2_grpc
from atelier.nesting.v1 import nesting_pb2, nesting_pb2_grpc
from atelier.recommendations.v1 import recommendations_pb2, recommendations_pb2_grpc
from atelier.runtime.keys import Role, new_key, write_keys_file
from atelier.runtime.server import Server
from atelier.trends.v1 import trends_pb2, trends_pb2_grpc

NOT_FOUND = grpc.StatusCode.NOT_FOUND
DENIED = grpc.StatusCode.PERMISSION_DENIED
OPERATIONS = "google.longrunning.Operations"
# RPCs that neither store nor read stored data (pure computations on the request).
STATELESS = {
    "atelier.body.v1.BodyService": {"MeasureBody", "PredictMeasurements", "CreateSizeGrid"},
    "atelier.generation.v1.GenerationService": {"MakeTileable", "ListModels"},
    "atelier.inspection.v1.InspectionService": {"GradeRoll"},
    "atelier.nesting.v1.NestingService": {"ImportMarker"},
    "atelier.recommendations.v1.RecommendationsService": set(),
    "atelier.trends.v1.TrendsService": set(),
}


class Keys:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.a, rec_a = new_key(["tenant-a"], Role.ADMIN, "a")
        self.b, rec_b = new_key(["tenant-b"], Role.ADMIN, "b")
        self.a_read, rec_r = new_key(["tenant-a"], Role.READ, "a read-only")
        write_keys_file(path, [rec_a, rec_b, rec_r])


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys.json")


class As:
    """Calls on one stub with one key (and optionally a tenant header), recording the methods."""

    def __init__(self, server: Server, stub_class: Any, key: str, tenant: str = "") -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        self.stub = stub_class(self.channel)
        self.service = stub_class.__name__.removesuffix("Stub")
        self.metadata = [("authorization", f"Bearer {key}")] + (
            [("x-atelier-tenant", tenant)] if tenant else []
        )
        self.called: set[str] = set()

    def __call__(self, method: str, request: Any) -> Any:
        self.called.add(method)
        reply = getattr(self.stub, method)(request, metadata=self.metadata, timeout=120)
        return list(reply) if hasattr(reply, "__next__") else reply

    def code(self, method: str, request: Any) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as info:
            self(method, request)
        return info.value.code()  # type: ignore[no-any-return]


def stubs(server: Server, stub_class: Any, keys: Keys) -> tuple[As, As, As, As]:
    """(A, B, A's key asking for tenant B, A's read-only key)."""
    return (
        As(server, stub_class, keys.a),
        As(server, stub_class, keys.b),
        As(server, stub_class, keys.a, tenant="tenant-b"),
        As(server, stub_class, keys.a_read),
    )


def covered(service: str, caller: As, descriptor: Any) -> None:
    methods = {m.name for m in descriptor.services_by_name[service.rsplit(".", 1)[-1]].methods}
    missing = methods - STATELESS[service] - caller.called
    assert not missing, f"tenant B never tried {sorted(missing)} of {service}"


def operation_is_private(server: Server, keys: Keys, name: str) -> None:
    a = As(server, operations_pb2_grpc.OperationsStub, keys.a)
    b = As(server, operations_pb2_grpc.OperationsStub, keys.b)
    assert a("GetOperation", operations_pb2.GetOperationRequest(name=name)).name == name
    wait = operations_pb2.WaitOperationRequest(name=name, timeout=duration_pb2.Duration(seconds=1))
    for method, request in (
        ("GetOperation", operations_pb2.GetOperationRequest(name=name)),
        ("WaitOperation", wait),
        ("CancelOperation", operations_pb2.CancelOperationRequest(name=name)),
        ("DeleteOperation", operations_pb2.DeleteOperationRequest(name=name)),
    ):
        assert b.code(method, request) == NOT_FOUND, method
    assert name not in [
        o.name for o in b("ListOperations", operations_pb2.ListOperationsRequest()).operations
    ]
    assert name in [o.name for o in a("ListOperations", operations_pb2.ListOperationsRequest()).operations]
    assert a("GetOperation", operations_pb2.GetOperationRequest(name=name)).name == name  # not deleted


def wait_done(server: Server, keys: Keys, name: str, timeout_s: float = 60) -> operations_pb2.Operation:
    a = As(server, operations_pb2_grpc.OperationsStub, keys.a)
    deadline = time.monotonic() + timeout_s
    while True:
        op = a("WaitOperation", operations_pb2.WaitOperationRequest(name=name, timeout={"seconds": 5}))
        if op.done or time.monotonic() > deadline:
            assert op.done, f"{name} not done"
            return op  # type: ignore[no-any-return]


# -- trends -------------------------------------------------------------------------------------------


def test_trends_series_stay_with_their_tenant(start_server: Callable[..., Server], keys: Keys) -> None:
    from atelier.trends.server import build
    from tests.trends.test_service import seasonal_series, weekly

    server = start_server("trends", build, api_keys_file=str(keys.path))
    a, b, a_as_b, a_read = stubs(server, trends_pb2_grpc.TrendsServiceStub, keys)
    ours = weekly("dress-red", seasonal_series(1, weeks=110))
    assert a("IngestObservations", trends_pb2.IngestObservationsRequest(observations=ours)).inserted == 110
    only = trends_pb2.SeriesFilter(series=["dress-red"])

    assert a_as_b.code("ListSeries", trends_pb2.ListSeriesRequest()) == DENIED
    assert (
        a_read.code("IngestObservations", trends_pb2.IngestObservationsRequest(observations=ours)) == DENIED
    )
    assert a_read("ListSeries", trends_pb2.ListSeriesRequest()).series[0].series == "dress-red"

    assert b("ListSeries", trends_pb2.ListSeriesRequest()).series == []
    assert b("ListSeries", trends_pb2.ListSeriesRequest(filter=only)).series == []
    assert b.code("GetSeries", trends_pb2.GetSeriesRequest(series="dress-red")) == NOT_FOUND
    assert b.code("Forecast", trends_pb2.ForecastRequest(filter=only, horizon=4)) == NOT_FOUND
    assert b.code("StartForecast", trends_pb2.StartForecastRequest(filter=only, horizon=4)) == NOT_FOUND
    assert b.code("ClassifyTrends", trends_pb2.ClassifyTrendsRequest(filter=only)) == NOT_FOUND
    assert b.code("ForecastDemand", trends_pb2.ForecastDemandRequest(filter=only, horizon=4)) == NOT_FOUND
    backtest = trends_pb2.BacktestRequest(filter=only, horizon=4, windows=1, models=["naive"])
    assert b.code("Backtest", backtest) == NOT_FOUND
    launch = trends_pb2.ForecastNewProductsRequest(
        products=[trends_pb2.NewProduct(id="new", labels={"category": "dresses"})],
        analogues=only,
        attributes=["category"],
        horizon=4,
    )
    assert b.code("ForecastNewProducts", launch) == NOT_FOUND
    # B writing the same series name makes B's own series: A's values do not change.
    theirs = weekly("dress-red", np.full(110, 99.0))
    assert b("IngestObservations", trends_pb2.IngestObservationsRequest(observations=theirs)).inserted == 110
    streamed = b("StreamObservations", iter([trends_pb2.StreamObservationsRequest(observations=theirs[:5])]))
    assert streamed.unchanged == 5
    # Sales lines streamed by B under A's series name aggregate into B's series only.
    sales = trends_pb2.IngestSalesRequest(
        aggregation=trends_pb2.SalesAggregation(keys=["sku"]),
        lines=[trends_pb2.SalesLine(local_date="2015-01-05", keys=["dress-red"], quantity=3)],
    )
    assert b("IngestSales", iter([sales])).inserted == 1
    assert [
        o.value for o in b("GetSeries", trends_pb2.GetSeriesRequest(series="sku=dress-red")).observations
    ] == [3]
    assert a_read.code("IngestSales", iter([sales])) == DENIED
    assert a.code("GetSeries", trends_pb2.GetSeriesRequest(series="sku=dress-red")) == NOT_FOUND
    mine = a("GetSeries", trends_pb2.GetSeriesRequest(series="dress-red"))
    assert [o.value for o in mine.observations] == [o.value for o in ours]

    # A's own calls succeed (naive models keep this test fast; the isolation is in the store query).
    forecast = a("Forecast", trends_pb2.ForecastRequest(filter=only, horizon=4, model="naive"))
    assert len(forecast.forecasts[0].mean) == 4
    op = a("StartForecast", trends_pb2.StartForecastRequest(filter=only, horizon=4, model="naive"))
    wait_done(server, keys, op.name)
    operation_is_private(server, keys, op.name)
    covered("atelier.trends.v1.TrendsService", b, trends_pb2.DESCRIPTOR)


# -- recommendations ----------------------------------------------------------------------------------


def test_recommendations_catalogue_events_and_models_stay_with_their_tenant(
    start_server: Callable[..., Server], keys: Keys
) -> None:
    from atelier.recommendations.server import build
    from tests.recommendations.helpers import event, item

    pb = recommendations_pb2
    server = start_server("recommendations", build, api_keys_file=str(keys.path))
    a, b, a_as_b, a_read = stubs(server, recommendations_pb2_grpc.RecommendationsServiceStub, keys)
    catalogue = [item(f"t{i}", "tops", "street", ("black",), 30 + i) for i in range(6)]
    a("UpsertItems", pb.UpsertItemsRequest(items=catalogue))
    events = [
        event(f"e{u}-{i}", f"u{u}", f"t{(u + i) % 6}", pb.EVENT_TYPE_PURCHASE, minutes=u * 10 + i)
        for u in range(8)
        for i in range(3)
    ]
    assert a("RecordEvents", pb.RecordEventsRequest(events=events)).accepted == len(events)
    op = a("TrainModel", pb.TrainModelRequest(algorithm=pb.ALGORITHM_ALS, factors=4, iterations=3))
    assert wait_done(server, keys, op.name).HasField("response")

    assert a_as_b.code("GetItem", pb.GetItemRequest(item_id="t1")) == DENIED
    assert a_read.code("UpsertItems", pb.UpsertItemsRequest(items=[item("t1", "shoes")])) == DENIED
    assert a_read.code("TrainModel", pb.TrainModelRequest(algorithm=pb.ALGORITHM_ALS)) == DENIED
    assert a_read("GetItem", pb.GetItemRequest(item_id="t1")).category == "tops"

    assert b.code("GetItem", pb.GetItemRequest(item_id="t1")) == NOT_FOUND
    assert b.code("SimilarItems", pb.SimilarItemsRequest(item_id="t1")) == NOT_FOUND
    assert b.code("CompleteTheLook", pb.CompleteTheLookRequest(item_ids=["t1"])) == NOT_FOUND
    assert b("ListModelVersions", pb.ListModelVersionsRequest()).versions == []
    recs = b("Recommend", pb.RecommendRequest(user_id="u1", n=5))
    assert list(recs.recommendations) == [] and recs.model_version == 0
    # B's events on A's item ids are events on unknown items of B; A's users are untouched.
    theirs = [event("e0-0", "u1", "t1", pb.EVENT_TYPE_PURCHASE)]
    assert list(b("RecordEvents", pb.RecordEventsRequest(events=theirs)).unknown_items) == ["e0-0"]
    assert b("StreamEvents", iter([pb.StreamEventsRequest(events=theirs)])).duplicates == 1
    b("UpsertItems", pb.UpsertItemsRequest(items=[item("t1", "shoes")]))
    assert b("GetItem", pb.GetItemRequest(item_id="t1")).category == "shoes"
    assert a("GetItem", pb.GetItemRequest(item_id="t1")).category == "tops"
    b_op = b(
        "TrainModel",
        pb.TrainModelRequest(algorithm=pb.ALGORITHM_ALS, factors=4, iterations=3, activate=False),
    )
    wait = As(server, operations_pb2_grpc.OperationsStub, keys.b)
    wait("WaitOperation", operations_pb2.WaitOperationRequest(name=b_op.name, timeout={"seconds": 30}))
    assert [v.active for v in a("ListModelVersions", pb.ListModelVersionsRequest()).versions] == [True]
    assert a("Recommend", pb.RecommendRequest(user_id="u1", n=3)).model_version == 1
    # Settings are per tenant: B's change does not reach A; a read key cannot change them.
    include = pb.TenantSettings(purchased=pb.PURCHASED_POLICY_INCLUDE)
    assert a_read.code("UpdateSettings", pb.UpdateSettingsRequest(settings=include)) == DENIED
    assert b("UpdateSettings", pb.UpdateSettingsRequest(settings=include)).purchased == include.purchased
    assert b("GetSettings", pb.GetSettingsRequest()).purchased == include.purchased
    assert a("GetSettings", pb.GetSettingsRequest()).purchased != include.purchased
    # B's evaluation runs on B's own events (two), never A's: it reports nothing to evaluate or
    # fails in words, and its operation is B's alone.
    evaluation = b("EvaluateModel", pb.EvaluateModelRequest(test_days=7))
    assert evaluation.name
    done = wait.__call__(
        "WaitOperation", operations_pb2.WaitOperationRequest(name=evaluation.name, timeout={"seconds": 30})
    )
    assert done.done
    a_ops = As(server, operations_pb2_grpc.OperationsStub, keys.a)
    assert a_ops.code("GetOperation", operations_pb2.GetOperationRequest(name=evaluation.name)) == NOT_FOUND
    operation_is_private(server, keys, op.name)
    covered("atelier.recommendations.v1.RecommendationsService", b, pb.DESCRIPTOR)


# -- nesting ------------------------------------------------------------------------------------------


def test_nesting_markers_stay_with_their_tenant(start_server: Callable[..., Server], keys: Keys) -> None:
    from atelier.nesting.server import build
    from tests.nesting.garment import piece

    pb = nesting_pb2
    server = start_server("nesting", build, api_keys_file=str(keys.path))
    a, b, a_as_b, a_read = stubs(server, nesting_pb2_grpc.NestingServiceStub, keys)
    square = ((0.0, 0.0), (100.0, 0.0), (100.0, 100.0), (0.0, 100.0))
    request = pb.CreateMarkerRequest(
        pieces=[piece("sq", square, quantity=2)], fabric=pb.Fabric(width_mm=250.0), time_budget_s=1
    )
    assert a_read.code("CreateMarker", request) == DENIED
    op = a("CreateMarker", request)
    wait_done(server, keys, op.name)
    assert a("GetMarker", pb.GetMarkerRequest(operation=op.name)).length_mm > 0

    assert a_as_b.code("GetMarker", pb.GetMarkerRequest(operation=op.name)) == DENIED
    assert b.code("GetMarker", pb.GetMarkerRequest(operation=op.name)) == NOT_FOUND
    assert b.code("WatchMarker", pb.WatchMarkerRequest(operation=op.name)) == NOT_FOUND
    export = pb.ExportMarkerRequest(operation=op.name, format=pb.FILE_FORMAT_SVG)
    assert b.code("ExportMarker", export) == NOT_FOUND
    theirs = b("CreateMarker", request)
    assert theirs.name != op.name
    assert a("ExportMarker", export).content.startswith(b"<")
    operation_is_private(server, keys, op.name)

    # The pattern library: A's saved pattern is invisible to B, by id and in lists.
    pieces_json = json.dumps(
        {"pieces": [{"id": "sq", "outline": [list(p) for p in square], "quantity": 1}]}
    ).encode()
    save = pb.ImportPiecesRequest(format=pb.FILE_FORMAT_JSON, content=pieces_json, save_pattern=True)
    assert a_read.code("ImportPieces", save) == DENIED  # it may store: a write
    pattern_id = a("ImportPieces", save).pattern_id
    assert pattern_id
    assert b("ListPatterns", pb.ListPatternsRequest()).patterns == []
    assert b.code("GetPattern", pb.GetPatternRequest(id=pattern_id)) == NOT_FOUND
    assert b.code("DeletePattern", pb.DeletePatternRequest(id=pattern_id)) == NOT_FOUND
    by_id = pb.CreateMarkerRequest(pattern_id=pattern_id, fabric=pb.Fabric(width_mm=250.0), time_budget_s=1)
    # A pattern id the caller's library lacks is a bad field, the same answer as for an id that
    # never existed (no existence leak).
    assert b.code("CreateMarker", by_id) == grpc.StatusCode.INVALID_ARGUMENT
    # Made to measure reads the pattern's graded sizes through the same tenant-scoped lookup.
    made = pb.MadeToMeasure(blend=pb.SizeBlend(size=""))
    mtm_req = pb.CreateMarkerRequest(
        pattern_id=pattern_id, fabric=pb.Fabric(width_mm=250.0), time_budget_s=1, made_to_measure=made
    )
    assert b.code("CreateMarker", mtm_req) == grpc.StatusCode.INVALID_ARGUMENT
    unknown = pb.CreateMarkerRequest(pattern_id="0" * 32, fabric=pb.Fabric(width_mm=250.0), time_budget_s=1)
    assert b.code("CreateMarker", unknown) == grpc.StatusCode.INVALID_ARGUMENT
    assert b("ImportPieces", save).pattern_id != pattern_id
    assert a("GetPattern", pb.GetPatternRequest(id=pattern_id)).id == pattern_id
    assert [x.id for x in a("ListPatterns", pb.ListPatternsRequest()).patterns] == [pattern_id]
    covered("atelier.nesting.v1.NestingService", b, pb.DESCRIPTOR)


# -- inspection ---------------------------------------------------------------------------------------


def test_inspection_profiles_stay_with_their_tenant(start_server: Callable[..., Server], keys: Keys) -> None:
    from atelier.inspection.server import build
    from tests.inspection.test_service import image, png, weave

    pb = inspection_pb2
    server = start_server("inspection", build, api_keys_file=str(keys.path))
    a, b, a_as_b, a_read = stubs(server, inspection_pb2_grpc.InspectionServiceStub, keys)
    goods = [image(png(weave(64, 128, s))) for s in range(4)]
    create = pb.CreateProfileRequest(article="plain-1", good_images=goods)
    assert a_read.code("CreateProfile", create) == DENIED
    assert a("CreateProfile", create).version == 1
    frame = image(png(weave(64, 128, 9)))

    assert a_as_b.code("GetProfile", pb.GetProfileRequest(article="plain-1")) == DENIED
    assert b.code("GetProfile", pb.GetProfileRequest(article="plain-1")) == NOT_FOUND
    assert b("ListProfiles", pb.ListProfilesRequest()).profiles == []
    assert b.code("InspectImage", pb.InspectImageRequest(article="plain-1", image=frame)) == NOT_FOUND
    (reply,) = b("InspectStream", iter([pb.InspectStreamRequest(article="plain-1", image=frame)]))
    assert reply.error.code == "NOT_FOUND"
    assert b("CreateProfile", create).version == 1  # B's own first version, not A's second
    assert [(p.article, p.version) for p in a("ListProfiles", pb.ListProfilesRequest()).profiles] == [
        ("plain-1", 1)
    ]
    assert a_read("InspectImage", pb.InspectImageRequest(article="plain-1", image=frame)).profile_version == 1
    covered("atelier.inspection.v1.InspectionService", b, pb.DESCRIPTOR)


# -- body ---------------------------------------------------------------------------------------------


def test_body_size_charts_stay_with_their_tenant(
    start_server: Callable[..., Server], keys: Keys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from atelier.body.server import build
    from tests.body.test_service import chart_pb

    pb = body_pb2
    monkeypatch.setenv("ATELIER_BODY_POSE_MODEL", str(tmp_path / "absent.task"))
    server = start_server("body", build, api_keys_file=str(keys.path))
    a, b, a_as_b, a_read = stubs(server, body_pb2_grpc.BodyServiceStub, keys)
    assert a_read.code("CreateSizeChart", pb.CreateSizeChartRequest(chart=chart_pb())) == DENIED
    created = a("CreateSizeChart", pb.CreateSizeChartRequest(chart=chart_pb()))
    name = created.name
    chest = [
        pb.Measurement(name="chest_girth", value_cm=100),
        pb.Measurement(name="waist_girth", value_cm=88),
    ]

    assert a_as_b.code("GetSizeChart", pb.GetSizeChartRequest(name=name)) == DENIED
    assert b.code("GetSizeChart", pb.GetSizeChartRequest(name=name)) == NOT_FOUND
    assert b("ListSizeCharts", pb.ListSizeChartsRequest()).charts == []
    changed = pb.SizeChart()
    changed.CopyFrom(created)
    changed.display_name = "taken over"
    assert b.code("UpdateSizeChart", pb.UpdateSizeChartRequest(chart=changed)) == NOT_FOUND
    assert b.code("DeleteSizeChart", pb.DeleteSizeChartRequest(name=name)) == NOT_FOUND
    assert b.code("RecommendSize", pb.RecommendSizeRequest(chart_name=name, measurements=chest)) == NOT_FOUND
    assert a_read.code("DeleteSizeChart", pb.DeleteSizeChartRequest(name=name)) == DENIED
    theirs = b("CreateSizeChart", pb.CreateSizeChartRequest(chart=chart_pb("b's shirts")))
    assert [c.name for c in b("ListSizeCharts", pb.ListSizeChartsRequest()).charts] == [theirs.name]
    assert [c.name for c in a("ListSizeCharts", pb.ListSizeChartsRequest()).charts] == [name]
    assert a("GetSizeChart", pb.GetSizeChartRequest(name=name)) == created
    assert (
        a_read("RecommendSize", pb.RecommendSizeRequest(chart_name=name, measurements=chest)).best.size == "M"
    )
    covered("atelier.body.v1.BodyService", b, pb.DESCRIPTOR)


# generation: tests/generation/test_tenant_isolation.py (it shares that folder's tiny models).
