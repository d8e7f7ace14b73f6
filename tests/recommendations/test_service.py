"""The recommendations service over real gRPC sockets: catalogue, events, training, queries, errors."""

from __future__ import annotations

import cv2
import grpc
import numpy as np
import pytest

from atelier.recommendations.server import build
from atelier.recommendations.v1 import recommendations_pb2 as pb
from atelier.runtime.status import field_violations
from tests.recommendations.helpers import Client, event, item, money

P = pb.EVENT_TYPE_PURCHASE
C = pb.EVENT_TYPE_ADD_TO_CART
R = pb.EVENT_TYPE_RETURN

CATALOG = [
    item("t1", "tops", "street", ("black",), 30, ("S", "M")),
    item("t2", "tops", "street", ("white",), 35, ("M",)),
    item("t3", "tops", "classic", ("navy",), 60, ("L",)),
    item("t4", "tops", "classic", ("white",), 55, ("M", "L")),
    item("b1", "bottoms", "street", ("black",), 50, ("M",)),
    item("b2", "bottoms", "classic", ("beige",), 80, ("M",)),
    item("s1", "shoes", "street", ("white",), 90, ("42",)),
    item("s2", "shoes", "classic", ("brown",), 120, ("42",)),
    item("o1", "outerwear", "classic", ("navy",), 200, ("M",)),
    item("d1", "dresses", "classic", ("red",), 70, ("S",)),
]


def street_and_classic_events() -> list[pb.Event]:
    """Two taste groups: street shoppers (u0..u5) buy t1/t2/b1/s1, classic ones (u6..u11) t3/t4/b2/s2/o1."""
    events = []
    k = 0
    for u in range(12):
        group = ["t1", "t2", "b1", "s1"] if u < 6 else ["t3", "t4", "b2", "s2", "o1"]
        seg = "young" if u < 6 else "office"
        for j, it in enumerate(group):
            if (u + j) % 4 == 3:
                continue  # leave gaps for the model to fill
            events.append(
                event(f"e{k}", f"u{u}", it, P if j < 2 else C, minutes=k, basket=f"bk{u}", segment=seg)
            )
            k += 1
    return events


@pytest.fixture
def client(start_server):  # type: ignore[no-untyped-def]
    server = start_server("recommendations", build)
    c = Client(server.port)
    c.UpsertItems(pb.UpsertItemsRequest(items=CATALOG))
    c.RecordEvents(pb.RecordEventsRequest(events=street_and_classic_events()))
    yield c
    c.channel.close()


def ids(recs) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.item_id for r in recs]


def test_catalogue_round_trip_and_photo_colours(client: Client) -> None:
    img = np.full((200, 160, 3), 240, np.uint8)
    cv2.rectangle(img, (30, 20), (130, 180), (128, 0, 0), -1)  # BGR navy garment on light grey
    _ok, png = cv2.imencode(".png", img)
    photo = item("t9", "Tops", "street", price=19.99)
    photo.image.data = png.tobytes()
    reply = client.UpsertItems(pb.UpsertItemsRequest(items=[photo]))
    assert (reply.upserted, reply.colours_extracted) == (1, 1)
    got = client.GetItem(pb.GetItemRequest(item_id="t9"))
    assert got.category == "tops"
    assert got.price.units == 19 and abs(got.price.nanos - 990_000_000) < 10
    assert got.dominant_colours[0].name == "navy" and got.dominant_colours[0].fraction > 0.9
    # The extracted colour is a filter: only t9 and the retailer-tagged navy items match.
    recs = client.Recommend(pb.RecommendRequest(user_id="nobody", n=10, filter=pb.Filter(colours=["navy"])))
    assert set(ids(recs.recommendations)) == {"t9", "t3", "o1"}
    # Upserting again without a photo keeps the photo's colours.
    client.UpsertItems(pb.UpsertItemsRequest(items=[item("t9", "tops", "street", price=25)]))
    assert client.GetItem(pb.GetItemRequest(item_id="t9")).dominant_colours[0].name == "navy"
    navy = client.Recommend(pb.RecommendRequest(user_id="nobody", n=10, filter=pb.Filter(colours=["navy"])))
    assert "t9" in ids(navy.recommendations)
    # Several upserts, one rebuild: the serving state sees every batch.
    for k in range(3):
        client.UpsertItems(pb.UpsertItemsRequest(items=[item(f"batch{k}", "bags", "street", price=5)]))
    bags = client.Recommend(
        pb.RecommendRequest(user_id="nobody", n=10, filter=pb.Filter(categories=["bags"]))
    )
    assert sorted(ids(bags.recommendations)) == ["batch0", "batch1", "batch2"]


def test_events_are_idempotent_and_unknown_items_reported(client: Client) -> None:
    batch = [event("x1", "u0", "t3", C), event("x2", "u0", "nope", C), event("x1", "u0", "t3", C)]
    first = client.RecordEvents(pb.RecordEventsRequest(events=batch))
    assert (first.accepted, first.duplicates, list(first.unknown_items)) == (2, 1, ["x2"])
    again = client.RecordEvents(pb.RecordEventsRequest(events=batch))
    assert (again.accepted, again.duplicates, list(again.unknown_items)) == (0, 3, [])
    streamed = client.StreamEvents(
        iter(
            [
                pb.StreamEventsRequest(events=[event("x3", "u1", "t1")]),
                pb.StreamEventsRequest(events=[event("x3", "u1", "t1")]),
            ]
        )
    )
    assert (streamed.accepted, streamed.duplicates) == (1, 1)


def test_train_recommend_filters_and_reasons(client: Client) -> None:
    version = client.train(factors=8, iterations=15)
    assert version.version == 1 and version.active and version.users == 12 and version.items == 10
    recs = client.Recommend(pb.RecommendRequest(user_id="u0", n=3, filter=pb.Filter(exclude_purchased=True)))
    assert recs.model_version == 1 and not recs.cold_start
    got = ids(recs.recommendations)
    assert "t1" not in got and "t2" not in got  # bought
    assert got[0] in {"b1", "s1"}  # the street items u0 has not bought come first
    # Reasons come from the source and u0's own events: b1 was in u0's cart, not bought; the
    # others are explained by an item u0 did buy or cart (t1, t2, b1).
    for r in recs.recommendations:
        if r.item_id == "b1":
            assert r.reason == "you viewed it or put it in your cart before"
        else:
            assert r.source == "als" and r.reason in {
                f"shoppers who like {x} like it too" for x in ("t1", "t2", "b1")
            }
    # Filters: category, size, price range (all masks).
    flt = pb.Filter(categories=["tops"], size="M", min_price=money(32), max_price=money(56))
    got = ids(client.Recommend(pb.RecommendRequest(user_id="u0", n=10, filter=flt)).recommendations)
    assert sorted(got) == ["t4"]  # the default leaves out t2, which u0 bought and nobody rebuys
    flt.purchased = pb.PURCHASED_POLICY_INCLUDE
    got = ids(client.Recommend(pb.RecommendRequest(user_id="u0", n=10, filter=flt)).recommendations)
    assert sorted(got) == ["t2", "t4"]
    # Diversity: with diversify, the top 4 span at least 3 categories.
    div = client.Recommend(pb.RecommendRequest(user_id="u7", n=4, diversify=True))
    assert len({r.category for r in div.recommendations}) >= 3
    listed = client.ListModelVersions(pb.ListModelVersionsRequest())
    assert [v.version for v in listed.versions] == [1] and listed.versions[0].active


def test_cold_start_by_segment_and_fold_in(client: Client) -> None:
    client.train(factors=8, iterations=15)
    office = client.Recommend(pb.RecommendRequest(user_id="newbie", n=3, segment="office"))
    assert office.cold_start
    assert set(ids(office.recommendations)) <= {"t3", "t4", "b2", "s2", "o1"}
    assert office.recommendations[0].reason == "popular in your segment office"
    # Two clicks of a new shopper count at once: folded into factors, no longer a cold start.
    reply = client.RecordEvents(
        pb.RecordEventsRequest(
            events=[event("n1", "newbie2", "t3", C, 1000), event("n2", "newbie2", "b2", P, 1001)]
        )
    )
    assert reply.users_folded_in == 1
    warm = client.Recommend(
        pb.RecommendRequest(user_id="newbie2", n=3, filter=pb.Filter(exclude_purchased=True))
    )
    assert not warm.cold_start
    assert "b2" not in ids(warm.recommendations)
    assert set(ids(warm.recommendations)) & {"t4", "s2", "o1"}


def test_similar_items_and_complete_the_look(client: Client) -> None:
    client.train(factors=8, iterations=15)
    similar = client.SimilarItems(pb.SimilarItemsRequest(item_id="t3", n=3))
    assert "t3" not in ids(similar.items)
    assert similar.items[0].item_id in {"t4", "o1", "b2", "s2"}
    look = client.CompleteTheLook(pb.CompleteTheLookRequest(item_ids=["t1"], n=4))
    cats = [r.category for r in look.items]
    assert "tops" not in cats and "dresses" not in cats  # a top goes with bottoms, shoes, outerwear
    assert look.items[0].item_id in {"b1", "s1"} and look.items[0].reason == "bought together with t1"


def test_each_bad_input_is_invalid_argument(client: Client) -> None:
    def violations(call, request) -> dict[str, str]:  # type: ignore[no-untyped-def]
        with pytest.raises(grpc.RpcError) as info:
            call(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
        return dict(field_violations(info.value))

    assert "n" in violations(client.Recommend, pb.RecommendRequest(user_id="u0", n=101))
    assert "user_id" in violations(client.Recommend, pb.RecommendRequest(n=5))
    assert "filter.max_price" in violations(
        client.Recommend,
        pb.RecommendRequest(user_id="u0", filter=pb.Filter(min_price=money(50), max_price=money(10))),
    )
    bad_time = event("z1", "u0", "t1")
    bad_time.time.nanos = -5
    no_time = pb.Event(event_id="z2", user_id="u0", item_id="t1", type=pb.EVENT_TYPE_VIEW)
    future = event("z3", "u0", "t1", minutes=60 * 24 * 365 * 20)
    got = violations(client.RecordEvents, pb.RecordEventsRequest(events=[bad_time, no_time, future]))
    assert set(got) == {"events[0].time", "events[1].time", "events[2].time"}
    got = violations(
        client.RecordEvents, pb.RecordEventsRequest(events=[pb.Event(event_id="z4", item_id="t1")])
    )
    assert {"events[0].user_id", "events[0].type", "events[0].time"} <= set(got)
    got = violations(
        client.UpsertItems, pb.UpsertItemsRequest(items=[pb.Item(item_id="a"), item("a", "tops")])
    )
    assert {"items[0].category", "items[1].item_id"} <= set(got)
    broken = item("p1", "tops")
    broken.image.data = b"not an image"
    assert "items[0].image.data" in violations(client.UpsertItems, pb.UpsertItemsRequest(items=[broken]))
    assert "factors" in violations(client.TrainModel, pb.TrainModelRequest(factors=100000))
    assert "item_ids" in violations(client.CompleteTheLook, pb.CompleteTheLookRequest(n=3))
    # Unknown items in a query are NOT_FOUND; unknown users are not an error (cold start).
    for call, request in (
        (client.SimilarItems, pb.SimilarItemsRequest(item_id="ghost")),
        (client.CompleteTheLook, pb.CompleteTheLookRequest(item_ids=["t1", "ghost"])),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call(request)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and "ghost" in info.value.details()
    assert client.Recommend(pb.RecommendRequest(user_id="ghost-user", n=2)).cold_start


def test_tenants_are_isolated(client: Client, start_server) -> None:  # type: ignore[no-untyped-def]
    other = Client(int(client.channel._channel.target().decode().rsplit(":", 1)[1]), tenant="other")
    assert list(other.Recommend(pb.RecommendRequest(user_id="u0", n=5)).recommendations) == []
    with pytest.raises(grpc.RpcError) as info:
        other.GetItem(pb.GetItemRequest(item_id="t1"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_quantity_value_settings_and_evaluation_over_grpc(client: Client) -> None:
    from google.longrunning import operations_pb2

    from tests.recommendations.helpers import money as eur

    def violations(call, request) -> dict[str, str]:  # type: ignore[no-untyped-def]
        with pytest.raises(grpc.RpcError) as info:
            call(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
        return dict(field_violations(info.value))

    bad = event("q1", "u0", "t1", P, 500)
    bad.quantity = -5  # a return must say RETURN, not a negative purchase
    got = violations(client.RecordEvents, pb.RecordEventsRequest(events=[bad]))
    assert "events[0].quantity" in got and "RETURN" in got["events[0].quantity"]
    ok = event("q2", "u0", "t3", R, 501)
    ok.quantity = 5
    ok.value.CopyFrom(eur(300))
    assert client.RecordEvents(pb.RecordEventsRequest(events=[ok])).accepted == 1
    # Settings: one default for API and CLI, changed per tenant, overridden per request.
    assert (
        client.GetSettings(pb.GetSettingsRequest()).purchased == pb.PURCHASED_POLICY_EXCLUDE_UNLESS_REBOUGHT
    )
    changed = client.UpdateSettings(
        pb.UpdateSettingsRequest(settings=pb.TenantSettings(purchased=pb.PURCHASED_POLICY_INCLUDE))
    )
    assert changed.purchased == pb.PURCHASED_POLICY_INCLUDE
    assert "settings.purchased" in violations(
        client.UpdateSettings,
        pb.UpdateSettingsRequest(settings=pb.TenantSettings(purchased=9)),  # type: ignore[arg-type]
    )
    assert "filter.purchased" in violations(
        client.Recommend,
        pb.RecommendRequest(user_id="u0", filter=pb.Filter(purchased=7)),  # type: ignore[arg-type]
    )
    # EvaluateModel: validated, then a job whose answer is the report.
    assert {"test_days", "k"} <= set(
        violations(client.EvaluateModel, pb.EvaluateModelRequest(test_days=-1, k=500))
    )

    def evaluate() -> operations_pb2.Operation:
        op = client.EvaluateModel(pb.EvaluateModelRequest(test_days=0.01))  # the last 14.4 minutes
        return client.ops.WaitOperation(
            operations_pb2.WaitOperationRequest(name=op.name, timeout={"seconds": 60}),
            metadata=client.metadata,
            timeout=65,
        )

    op = evaluate()  # only a return in the last minutes: nobody to score, the data's fault
    assert op.done and op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    later = [event(f"l{u}", f"u{u}", "b1" if u < 6 else "b2", P, 505 + u) for u in range(12)]
    client.RecordEvents(pb.RecordEventsRequest(events=later))
    op = evaluate()
    assert op.done and not op.HasField("error"), op.error
    report = pb.EvaluationReport()
    op.response.Unpack(report)
    assert report.users_evaluated > 0 and report.k == 12 and len(report.methods) == 5
    assert report.methods[-1].name.startswith("two-stage") and report.best_baseline
    assert report.lift_ci_low <= report.lift <= report.lift_ci_high
