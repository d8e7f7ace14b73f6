"""Model versions swap in under concurrent load without a single failed request."""

from __future__ import annotations

import threading

import grpc

from atelier.recommendations.server import build
from atelier.recommendations.simulate import simulate
from atelier.recommendations.v1 import recommendations_pb2 as pb
from tests.recommendations.helpers import Client, item


def test_hot_swap_under_load_has_no_failed_request(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server("recommendations", build)
    client = Client(server.port)
    shop = simulate(n_users=300, n_items=120, n_clusters=4, interactions_per_user=8, seed=3)
    client.UpsertItems(
        pb.UpsertItemsRequest(
            items=[
                item(it.item_id, it.category, it.style, tuple(it.colours), it.price, tuple(it.sizes_in_stock))
                for it in shop.items
            ]
        )
    )
    events = []
    for k in range(len(shop.events)):
        e = pb.Event(
            event_id=str(shop.event_ids[k]),
            user_id=str(shop.events.user_ids[k]),
            item_id=str(shop.events.item_ids[k]),
            type=int(shop.events.types[k]),
        )
        e.time.FromNanoseconds(int(shop.events.times_s[k] * 1e9))
        events.append(e)
    client.RecordEvents(pb.RecordEventsRequest(events=events))
    assert client.train(factors=16, iterations=5).version == 1

    stop = threading.Event()
    failures: list[str] = []
    versions_seen: set[int] = set()
    calls = [0]

    def hammer(worker: int) -> None:
        c = Client(server.port)
        k = 0
        while not stop.is_set():
            k += 1
            try:
                reply = c.Recommend(
                    pb.RecommendRequest(
                        user_id=f"u{(worker * 37 + k) % 320}", n=12, filter=pb.Filter(exclude_purchased=True)
                    ),
                    timeout=10,
                )
                versions_seen.add(reply.model_version)
                assert len(reply.recommendations) == 12
                calls[0] += 1
            except (grpc.RpcError, AssertionError) as exc:  # pragma: no cover - the point of the test
                failures.append(repr(exc))
        c.channel.close()

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        # Two more trainings (and a catalogue change) swap the serving state while requests run.
        assert client.train(factors=16, iterations=5).version == 2
        client.UpsertItems(pb.UpsertItemsRequest(items=[item("new1", "tops", "style1", price=20)]))
        assert client.train(factors=16, iterations=5, algorithm=pb.ALGORITHM_BPR).version == 3
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert calls[0] > 50
    assert {1, 3} <= versions_seen
    final = client.Recommend(pb.RecommendRequest(user_id="u1", n=5))
    assert final.model_version == 3
    active = [v.version for v in client.ListModelVersions(pb.ListModelVersionsRequest()).versions if v.active]
    assert active == [3]
