"""Two-stage model, evaluation harness, similarity support, reasons, quantities, purchase policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import scipy.sparse as sp

from atelier.recommendations.engine import (
    EXCLUDE,
    EXCLUDE_UNLESS_REBOUGHT,
    INCLUDE,
    Engine,
    Filter,
)
from atelier.recommendations.evaluation import (
    average_precision,
    bootstrap_lift,
    evaluate,
    ndcg,
    recall,
    temporal_split,
)
from atelier.recommendations.ranking import SOURCES, RankerParams, cooccurrence, fit_two_stage
from atelier.recommendations.simulate import simulate
from atelier.recommendations.store import CatalogItem, Event, EventArrays, EventType, RecsStore
from atelier.recommendations.training import EventWeights, build_interactions, quantity_factor
from atelier.runtime.storage import Store

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DAY = 86400.0


def test_cooccurrence_needs_support_and_shrinks_rare_pairs() -> None:
    # Shoppers x items a, b, c, d: four shoppers bought a and b; one bought a and c; two b and d.
    inc = sp.csr_matrix(np.array([[1, 1, 0, 0]] * 4 + [[1, 0, 1, 0]] + [[0, 1, 0, 1]] * 2, dtype=np.float32))
    sim = cooccurrence(inc, min_support=2, shrinkage=10.0, neighbours=10).toarray()
    assert sim[0, 2] == 0 and sim[2, 0] == 0  # one shopper is not evidence
    assert sim[0, 1] > 0 and sim[1, 3] > 0
    # a-b: support 4, cosine 4/sqrt(5*6); b-d: support 2, cosine 2/sqrt(6*2).
    assert sim[0, 1] == pytest.approx(4 / np.sqrt(30) * 4 / 14, rel=1e-5)
    assert sim[1, 3] == pytest.approx(2 / np.sqrt(12) * 2 / 12, rel=1e-5)
    # The better-supported neighbour wins by more than its cosine alone says.
    assert sim[1, 0] / sim[1, 3] > (4 / np.sqrt(30)) / (2 / np.sqrt(12))


def _engine_with(store: Store, items: list[CatalogItem], events: list[Event]) -> tuple[Engine, RecsStore]:
    rs = RecsStore(store)
    rs.upsert_items("acme", items)
    rs.record_events("acme", events)
    return Engine(rs), rs


def _buy(
    k: int, user: str, item: str, day: float = 0, kind: EventType = EventType.PURCHASE, **kw: object
) -> Event:
    return Event(f"e{k}-{user}-{item}-{day}-{kind}", user, item, kind, T0 + timedelta(days=day), **kw)  # type: ignore[arg-type]


def test_similar_items_ignores_a_single_shared_shopper(store: Store, tmp_path: object) -> None:
    from atelier.recommendations.training import TrainParams, train

    items = [
        CatalogItem(i, "home", style=s)
        for i, s in (("q", "heart"), ("pal", "x"), ("odd", "y"), ("z1", "z"), ("z2", "w"))
    ]
    events, k = [], 0
    for u in range(6):  # six shoppers buy q with pal
        for it in ("q", "pal"):
            events.append(_buy(k, f"u{u}", it, day=u))
            k += 1
    events.append(_buy(k, "lone", "q"))  # one shopper buys q with an item nobody else buys
    events.append(_buy(k + 1, "lone", "odd"))
    for u in range(6, 9):
        events.append(_buy(k + 2 + u, f"u{u}", "z1", day=u))
    engine, rs = _engine_with(store, items, events)
    url = store.engine.url.render_as_string(hide_password=False)
    if store.dialect == "postgresql":
        pytest.skip("train() opens its own connection; the schema-bound URL is covered in test_domain")
    path = train(url, "acme", TrainParams(factors=4, iterations=3, models_dir=str(tmp_path), ranker=False))
    [row] = rs.versions("acme")
    rs.activate("acme", row["version"])
    engine = Engine(rs)
    assert path
    similar = engine.similar_items("acme", "q", 3, Filter())
    assert similar[0].item_id == "pal" and similar[0].source == "cobuy"
    assert similar[0].reason == "bought by the same shoppers as q"
    odd = [s for s in similar if s.item_id == "odd"]
    assert not odd or odd[0].source != "cobuy"  # one shared shopper never reads as "the same shoppers"


def test_reasons_follow_the_source_and_the_shoppers_own_events(store: Store) -> None:
    items = [CatalogItem(i, "home", style=f"style-{i}") for i in ("a", "b", "c", "d")]
    events = [_buy(1, "two", "a"), _buy(2, "two", "b", kind=EventType.VIEW)]
    events += [_buy(10 + u, f"o{u}", "c") for u in range(5)]
    engine, _ = _engine_with(store, items, events)
    result = engine.recommend("acme", "two", 4, Filter(purchased=INCLUDE))
    reasons = {s.item_id: s.reason for s in result.items}
    # A bought item is "bought", a viewed one is not; neither is "similar to" the other.
    assert reasons["a"] == "you bought it before"
    assert reasons["b"] == "you viewed it or put it in your cart before"
    assert reasons["c"] == "popular with shoppers now"


def test_purchased_policy_default_override_and_rebought_items(store: Store) -> None:
    items = [CatalogItem(i, "home") for i in ("tea", "vase", "other")]
    events = []
    k = 0
    # Everybody rebuys tea (two days) and buys a vase once; 40 shoppers, so the vase's rate
    # (0 of 40, shrunk toward the tenant's 50 %: 2.5 / 45) is clearly below 10 %.
    for u in range(40):
        for day in (0, 20):
            events.append(_buy(k, f"u{u}", "tea", day=day))
            k += 1
        events.append(_buy(k, f"u{u}", "vase", day=1))
        k += 1
    events.append(_buy(k, "u0", "other", day=2, kind=EventType.VIEW))
    engine, rs = _engine_with(store, items, events)

    def got(policy: str = "") -> set[str]:
        return {s.item_id for s in engine.recommend("acme", "u0", 3, Filter(purchased=policy)).items}

    assert engine.purchased_policy("acme") == EXCLUDE_UNLESS_REBOUGHT  # the default, API and CLI alike
    assert got() == {"tea", "other"}  # tea is rebought by the tenant's shoppers; the vase is not
    assert got(EXCLUDE) == {"other"}
    assert got(INCLUDE) == {"tea", "vase", "other"}
    engine.set_purchased_policy("acme", INCLUDE)
    assert got() == {"tea", "vase", "other"} and rs.purchased_policy("acme") == INCLUDE
    assert Engine(rs).purchased_policy("acme") == INCLUDE  # stored, not only cached


def test_quantity_weighs_purchases_and_returns_cancel_them(store: Store) -> None:
    t = T0.timestamp()
    events = EventArrays(
        seq=np.arange(1, 5),
        user_ids=np.array(["u", "u", "v", "v"], dtype=object),
        item_ids=np.array(["a", "b", "a", "a"], dtype=object),
        types=np.array([3, 3, 3, 4], dtype=np.int8),
        times_s=np.full(4, t),
        basket_ids=np.array(["", "", "", ""], dtype=object),
        quantities=np.array([24, 1, 5, 5], dtype=np.float32),
        values=np.array([30.0, 2.0, 10.0, 10.0]),
    )
    inter = build_interactions(events, np.array(["a", "b"], dtype=object), {}, EventWeights(), 60)
    dense = inter.confidence.toarray()
    assert dense[0, 0] == pytest.approx(10 * (1 + np.log(24)), rel=1e-5)  # 24 units: 1 + ln 24 purchases
    assert dense[0, 1] == pytest.approx(10.0)
    assert dense[1, 0] == 0  # five bought, five returned
    assert quantity_factor(np.array([0.5, 1.0], np.float32)).tolist() == [1.0, 1.0]
    # Stored and read back with the events.
    rs = RecsStore(store)
    rs.record_events("acme", [_buy(1, "u", "a", quantity=3.0, value=7.5), _buy(2, "u", "b")])
    back = rs.load_events("acme")
    assert back.quantities.tolist() == [3.0, 1.0]  # type: ignore[union-attr]
    assert back.values[0] == 7.5 and np.isnan(back.values[1])  # type: ignore[index]


def test_metrics_and_bootstrap() -> None:
    assert average_precision(["a", "x", "b"], {"a", "b"}, 12) == pytest.approx((1 + 2 / 3) / 2)
    assert recall(["a", "x"], {"a", "b"}, 12) == 0.5
    assert ndcg(["x", "a"], {"a"}, 12) == pytest.approx(1 / np.log2(3))
    same = np.array([0.1, 0.2, 0.0, 0.3])
    low, high = bootstrap_lift(same * 2, same, rounds=200)
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)
    low, high = bootstrap_lift(np.array([0.0, 0.0, 1.0, 0.0]), np.array([0.0, 1.0, 0.0, 0.0]), rounds=500)
    assert low < 0 < high  # one shopper each way: no evidence either way


def test_two_stage_ranks_and_the_evaluation_compares_it_with_baselines() -> None:
    shop = simulate(n_users=400, n_items=120, n_clusters=4, interactions_per_user=14, days=150, seed=3)
    segments = dict(zip(shop.user_ids, shop.user_segment, strict=True))
    split = temporal_split(shop.events, 14)
    assert split.targets and split.train.times_s.max() < split.cut_s
    params = RankerParams(windows=3, n_estimators=40, keep=30)
    model = fit_two_stage(split.train, shop.items, segments, params)
    assert model.ranker and model.info["train_groups"] >= 20
    ranked, scores, sources = model.ranked_for(0)
    assert len(ranked) == 30 and np.all(np.diff(scores) <= 0) and set(sources) <= set(range(len(SOURCES)))
    arrays = model.to_arrays()
    back = type(model).from_arrays(arrays)
    assert (
        back is not None
        and np.array_equal(back.ranked_items, model.ranked_items)
        and back.ranker == model.ranker
    )
    report = evaluate(shop.events, shop.items, segments, params, bootstrap_rounds=200)
    names = [m.name for m in report.methods]
    assert names[-1].startswith("two-stage") and len(names) == 5
    assert report.best_baseline in names[:-1]
    assert report.lift_low <= report.lift <= report.lift_high
    by = {m.name: m for m in report.methods}
    assert 0 < by["popularity (last 14 days)"].coverage < by[names[-1]].coverage
    assert by[names[-1]].map_at_k > by["popularity (last 14 days)"].map_at_k  # planted taste is found
    assert report.as_dict()["methods"][0]["name"] == names[0]


def test_block_gather_matches_scipy() -> None:
    from atelier.recommendations.reasons import block as _block

    m = sp.random(300, 300, density=0.05, format="csr", dtype=np.float32, random_state=1)
    rows, cols = np.array([5, 0, 299, 17]), np.array([3, 250, 7, 100, 42])
    np.testing.assert_array_equal(_block(m, rows, cols), m[rows][:, cols].toarray())


def _arrays(rows: list[tuple[str, str, EventType, float]]) -> EventArrays:
    return EventArrays(
        np.arange(len(rows), dtype=np.int64),
        np.array([r[0] for r in rows], dtype=object),
        np.array([r[1] for r in rows], dtype=object),
        np.array([int(r[2]) for r in rows], dtype=np.int8),
        np.array([T0.timestamp() + r[3] * DAY for r in rows]),
        np.array([""] * len(rows), dtype=object),
    )


def test_coview_is_a_candidate_source_with_support_threshold() -> None:
    from atelier.recommendations.ranking import ItemTable, build_sources, candidates

    items = [CatalogItem(i, "home") for i in ("a", "b", "c", "d", "e")]
    view = EventType.VIEW
    # Three shoppers viewed a and b; one shopper viewed a and c (support 1: not evidence).
    rows = [(f"s{k}", i, view, float(k)) for k in range(3) for i in ("a", "b")]
    rows += [("lone", "a", view, 1.0), ("lone", "c", view, 1.0), ("q", "a", view, 5.0)]
    # Purchases of d and e make them popular, so the popularity source has its own items.
    rows += [(f"p{k}", i, EventType.PURCHASE, 6.0) for k in range(4) for i in ("d", "e")]
    events = _arrays(rows)
    table = ItemTable.from_items(items)
    users = np.unique(events.user_ids.astype(str)).astype(object)
    index = {u: k for k, u in enumerate(users)}
    params = RankerParams(als_source=False, min_support=2, shrinkage=1.0, popular_k=2)
    src = build_sources(events, index, table, {}, [], params, T0.timestamp() + 30 * DAY, fit_als=False)
    co = src.coview.toarray()
    assert co[0, 1] > 0 and co[1, 0] > 0  # a-b: three shoppers
    assert co[0, 2] == 0 and co[2, 0] == 0  # a-c: one shopper
    assert co[3, 4] == 0  # bought together is not "viewed together"
    cand = candidates(src, np.array([index["q"]]), params)
    proposed = dict(zip(table.item_ids[cand.items], cand.source, strict=True))
    assert SOURCES[proposed["b"]] == "coview"
    assert "c" not in proposed
    from atelier.recommendations.ranking import FEATURES

    b = int(np.flatnonzero(table.item_ids[cand.items] == "b")[0])
    # The shopper's own confidence in a times a's similarity to b.
    weight = float(src.conf[index["q"], 0])
    assert weight > 0
    assert cand.features[b, FEATURES.index("pair_coview")] == pytest.approx(weight * co[0, 1], rel=1e-5)


def test_training_windows_shrink_on_large_data_only() -> None:
    from atelier.recommendations.ranking import training_windows

    params = RankerParams(windows=6, min_windows=2, max_train_users=8000)
    assert training_windows(params, 300) == 6  # the real samples: a few hundred a window, all kept
    assert training_windows(params, 2000) == 4
    assert training_windows(params, 50000) == 2
    assert training_windows(RankerParams(windows=1), 50000) == 1


def test_candidate_ranks_match_full_sorts() -> None:
    """The per-candidate ALS and recency ranks equal the ranks of full per-row sorts."""
    from atelier.recommendations.ranking import FEATURES, ItemTable, build_sources, candidates

    shop = simulate(n_users=120, n_items=80, n_clusters=3, interactions_per_user=10, days=60, seed=4)
    table = ItemTable.from_items(shop.items)
    users = np.unique(shop.events.user_ids.astype(str)).astype(object)
    index = {u: k for k, u in enumerate(users)}
    params = RankerParams(n_estimators=5)
    newest = float(shop.events.times_s.max()) + 1
    src = build_sources(shop.events, index, table, {}, [], params, newest)
    rows = np.arange(20)
    cand = candidates(src, rows, params)
    als = src.user_factors[rows] @ src.item_factors.T
    age = src.last_age[rows].toarray()
    for k, r in enumerate(rows):
        sel = cand.rows == r
        c = cand.items[sel]
        f = cand.features[sel]
        greater = (als[k][None, :] > als[k, c][:, None]).sum(axis=1)
        np.testing.assert_array_equal(f[:, FEATURES.index("pair_als_rank")], greater)
        own = np.flatnonzero(age[k] > 0)
        order = own[np.lexsort((own, age[k, own]))]
        expected = {int(i): float(p) for p, i in enumerate(order)}
        got = f[:, FEATURES.index("pair_recency_rank")]
        for i, g in zip(c, got, strict=True):
            assert (np.isnan(g) and int(i) not in expected) or expected[int(i)] == g


def test_coview_reason_is_true_to_the_shoppers_own_events(store: Store) -> None:
    items = [CatalogItem(i, "home") for i in ("a", "b", "c")]
    engine, _ = _engine_with(store, items, [_buy(1, "q", "a", kind=EventType.VIEW)])
    state = engine.state("acme")
    idx, w = state.user_row("q")
    b, a = state.catalog.index["b"], state.catalog.index["a"]
    reasons = Engine._reasons(state, [b, a], ["coview", "coview"], idx, w, "", state.bought_by("q"))
    assert reasons[0] == "often viewed together with items you looked at"
    assert reasons[1] == "you viewed it or put it in your cart before"  # their own item, whatever the source
    # A shopper with no other item of their own gets no "viewed together" claim.
    empty = np.zeros(0, np.int64)
    assert Engine._reasons(state, [b], ["coview"], empty, empty.astype(np.float32), "", empty) == [
        "popular with shoppers now"
    ]


def test_ranked_reasons_precomputed_at_training_equal_per_request_ones(
    store: Store, tmp_path: object
) -> None:
    """Training stores each ranked item's reason partner; a known shopper's reasons are the same
    as when the engine computes them per request (an artefact from before ranker_partners)."""
    from atelier.recommendations.training import TrainParams, train

    if store.dialect == "postgresql":
        pytest.skip("train() opens its own connection; the schema-bound URL is covered in test_domain")
    shop = simulate(n_users=300, n_items=100, n_clusters=4, interactions_per_user=14, days=150, seed=5)
    rs = RecsStore(store)
    rs.upsert_items("acme", shop.items)
    ev = shop.events
    rs.record_events(
        "acme",
        [
            Event(f"e{s}", u, i, EventType(int(t)), datetime.fromtimestamp(ts, UTC))
            for s, u, i, t, ts in zip(ev.seq, ev.user_ids, ev.item_ids, ev.types, ev.times_s, strict=True)
        ],
    )
    url = store.engine.url.render_as_string(hide_password=False)
    train(url, "acme", TrainParams(factors=8, iterations=3, models_dir=str(tmp_path)))
    [row] = rs.versions("acme")
    rs.activate("acme", row["version"])
    engine = Engine(rs)
    state = engine.state("acme")
    assert state.ranked_partners is not None and state.ranked_partners.shape == state.ranked_items.shape
    ranked = sorted(state.ranked_index)[:120]
    assert len(ranked) >= 100
    flt = Filter(purchased=INCLUDE)
    precomputed = [engine.recommend("acme", u, 12, flt).items for u in ranked]
    state.ranked_partners = None  # as an artefact written before the partners were stored
    per_request = [engine.recommend("acme", u, 12, flt).items for u in ranked]
    assert precomputed == per_request
    texts = [s.reason for answer in precomputed for s in answer]
    # The partners were used: reasons that name one of the shopper's items are among them.
    assert sum(t.startswith(("shoppers who", "often in the same basket")) for t in texts) >= 50
