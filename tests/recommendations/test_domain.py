"""Domain units: storage (SQLite and PostgreSQL), interaction weighting, training, colours, rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
import pytest

from atelier.recommendations import colours
from atelier.recommendations.engine import CatalogIndex, Engine, Filter, compatible
from atelier.recommendations.simulate import average_precision_at_k, recall_at_k, simulate
from atelier.recommendations.store import (
    CatalogItem,
    DominantColour,
    Event,
    EventArrays,
    EventType,
    RecsStore,
)
from atelier.recommendations.training import (
    EventWeights,
    TrainParams,
    artefact_from_bytes,
    build_interactions,
    train,
)
from atelier.runtime.artefacts import DatabaseArtefacts
from atelier.runtime.storage import Store

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_store_round_trip_and_idempotent_events(store: Store) -> None:
    rs = RecsStore(store)
    rs.upsert_items(
        "acme",
        [
            CatalogItem(
                "a",
                "tops",
                ["navy"],
                price=10.5,
                currency="EUR",
                sizes_in_stock=["M"],
                image_colours=[DominantColour("navy", "#000080", 0.9)],
                had_image=True,
            ),
            CatalogItem("b", "bottoms", attributes={"fit": "wide"}),
        ],
    )
    rs.upsert_items("acme", [CatalogItem("a", "tops", ["blue"], price=12.0)])  # no photo: colours kept
    rs.upsert_items("other", [CatalogItem("z", "shoes")])
    a = rs.get_item("acme", "a")
    assert a is not None and a.colours == ["blue"] and a.price == 12.0
    assert a.image_colours == [DominantColour("navy", "#000080", 0.9)]
    assert rs.get_item("acme", "z") is None
    assert [i.item_id for i in rs.load_items("acme")] == ["a", "b"]

    events = [
        Event("e1", "u1", "a", EventType.VIEW, T0, segment="s1"),
        Event("e2", "u1", "ghost", EventType.PURCHASE, T0 + timedelta(minutes=1)),
        Event("e1", "u1", "a", EventType.VIEW, T0),
    ]
    first = rs.record_events("acme", events)
    assert [e.event_id for e in first.accepted] == ["e1", "e2"] and first.duplicates == 1
    assert first.unknown_item_event_ids == ["e2"]
    again = rs.record_events("acme", events)
    assert again.accepted == [] and again.duplicates == 3
    # Event ids are per tenant: the same id at another retailer is a different event.
    assert len(rs.record_events("other", events[:1]).accepted) == 1
    loaded = rs.load_events("acme")
    assert list(loaded.item_ids) == ["a", "ghost"] and list(loaded.types) == [1, 3]
    assert loaded.times_s[0] == T0.timestamp()
    assert len(rs.load_events("acme", after_seq=int(loaded.seq[0]))) == 1
    assert rs.segments("acme") == {"u1": "s1"}

    v1 = rs.add_version(
        "acme",
        {
            "algorithm": "als",
            "path": "p1",
            "users": 1,
            "items": 2,
            "interactions": 1,
            "factors": 8,
            "train_seconds": 0.1,
            "max_event_seq": 2,
            "params": "{}",
        },
    )
    v2 = rs.add_version(
        "acme",
        {
            "algorithm": "bpr",
            "path": "p2",
            "users": 1,
            "items": 2,
            "interactions": 1,
            "factors": 8,
            "train_seconds": 0.1,
            "max_event_seq": 2,
            "params": "{}",
        },
    )
    assert (v1, v2) == (1, 2)
    rs.activate("acme", 2)
    assert rs.active_version("acme")["path"] == "p2"  # type: ignore[index]
    rs.activate("acme", 1)
    assert [r["active"] for r in rs.versions("acme")] == [False, True]


def test_confidence_weights_recency_returns_and_baskets() -> None:
    day = 86400.0
    t = T0.timestamp()
    events = EventArrays(
        seq=np.arange(1, 8),
        user_ids=np.array(["u1", "u1", "u1", "u2", "u2", "u2", "u3"], dtype=object),
        item_ids=np.array(["a", "b", "b", "a", "c", "x", "c"], dtype=object),
        types=np.array([1, 3, 4, 3, 3, 1, 2], dtype=np.int8),
        times_s=np.array([t, t - 30 * day, t, t, t, t, t]),
        basket_ids=np.array(["", "", "", "k1", "k1", "", ""], dtype=object),
    )
    inter = build_interactions(
        events,
        np.array(["a", "b", "c"], dtype=object),
        {"u1": "s", "u2": "s"},
        EventWeights(),
        half_life_days=30,
    )
    assert list(inter.user_ids) == ["u1", "u2", "u3"]
    dense = inter.confidence.toarray()
    # u1: a viewed now (1); b bought 30 days ago (10 x 0.5) then returned now (-10) -> -5.
    np.testing.assert_allclose(dense[0], [1.0, -5.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(dense[1], [10.0, 0.0, 10.0])  # "x" is not in the catalogue: ignored
    assert inter.bought.toarray().tolist() == [[0, 1, 0], [1, 0, 1], [0, 0, 0]]
    co = inter.copurchase.toarray()
    # a and c share one basket (k1): below the minimum support of two baskets, so no pair yet.
    assert not co.any()
    assert inter.segment_names == ["s"]
    np.testing.assert_allclose(inter.segment_popularity[0], [11.0, 5.0, 10.0])  # u3 has no segment


def test_train_writes_a_version_that_beats_popularity(store: Store, tmp_path: Path) -> None:
    if store.dialect == "postgresql":
        with store.engine.connect() as conn:
            schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
        url = (
            store.engine.url.render_as_string(hide_password=False)
            + f"?options={quote('-csearch_path=' + schema)}"
        )
    else:
        url = store.engine.url.render_as_string(hide_password=False)
    rs = RecsStore(store)
    shop = simulate(n_users=600, n_items=150, n_clusters=5, interactions_per_user=15, seed=2)
    rs.upsert_items("acme", shop.items)
    ev = shop.events
    cut = np.quantile(ev.times_s, 0.9)
    held: dict[str, set[str]] = {}
    batch = []
    for k in range(len(ev)):
        if ev.times_s[k] >= cut:
            if ev.types[k] == EventType.PURCHASE:
                held.setdefault(ev.user_ids[k], set()).add(ev.item_ids[k])
            continue
        batch.append(
            Event(
                str(shop.event_ids[k]),
                ev.user_ids[k],
                ev.item_ids[k],
                EventType(int(ev.types[k])),
                datetime.fromtimestamp(ev.times_s[k], UTC),
            )
        )
    rs.record_events("acme", batch)
    rs.record_events("other", batch[:5])
    params = TrainParams(factors=16, iterations=10, models_dir=str(tmp_path / "models"))
    seen: list[float] = []
    path = train(url, "acme", params, progress=lambda f, _m: seen.append(f))
    assert path.startswith("recommendations/models/acme-") and seen[0] == 0.0 and seen == sorted(seen)
    [row] = rs.versions("acme")
    assert row["path"] == path and not row["active"] and row["max_event_seq"] == rs.max_event_seq("acme")
    assert not list(tmp_path.rglob("*.npz"))  # the model is in the database, not a local file
    art = artefact_from_bytes(DatabaseArtefacts(store).get(path), path)
    assert art.item_factors.shape == (150, 16) and art.user_factors.shape[0] == len(art.user_ids)
    # The engine serves it; its top 12 beats global popularity on the held-out purchases.
    rs.activate("acme", row["version"])
    engine = Engine(rs)
    state = engine.state("acme")
    assert state.version == row["version"] and state.has_model
    users = [u for u in held if u in state.user_index]
    assert len(users) > 50
    model_ap = np.mean(
        [
            average_precision_at_k(
                [r.item_id for r in engine.recommend("acme", u, 12, Filter()).items], held[u]
            )
            for u in users
        ]
    )
    popular = list(state.catalog.item_ids[np.argsort(-state.popularity)[:12]])
    pop_ap = np.mean([average_precision_at_k(popular, held[u]) for u in users])
    assert model_ap > pop_ap
    assert recall_at_k(["a", "b"], {"b", "c"}) == 0.5


def test_new_items_get_factors_from_attribute_neighbours(tmp_path: Path) -> None:
    rs = RecsStore(Store(f"sqlite:///{tmp_path / 'r.db'}"))
    shop = simulate(n_users=200, n_items=60, n_clusters=3, seed=4)
    rs.upsert_items("t", shop.items)
    rs.record_events(
        "t",
        [
            Event(
                str(shop.event_ids[k]),
                shop.events.user_ids[k],
                shop.events.item_ids[k],
                EventType(int(shop.events.types[k])),
                datetime.fromtimestamp(shop.events.times_s[k], UTC),
            )
            for k in range(len(shop.events))
        ],
    )
    train(str(rs.engine.url), "t", TrainParams(factors=8, iterations=5, models_dir=str(tmp_path)))
    rs.activate("t", 1)
    twin = shop.items[0]
    rs.upsert_items(
        "t",
        [
            CatalogItem(
                "twin",
                twin.category,
                list(twin.colours),
                twin.style,
                twin.silhouette,
                twin.material,
                twin.price,
                "EUR",
                list(twin.sizes_in_stock),
            )
        ],
    )
    engine = Engine(rs)
    state = engine.state("t")
    new = state.catalog.index["twin"]
    assert np.linalg.norm(state.item_factors[new]) > 0
    # Its factors come from items sharing its attributes: closest to its twin's cluster.
    same = [
        state.catalog.index[it.item_id]
        for it, c in zip(shop.items, shop.item_cluster, strict=True)
        if c == shop.item_cluster[0]
    ]
    other = [
        state.catalog.index[it.item_id]
        for it, c in zip(shop.items, shop.item_cluster, strict=True)
        if c != shop.item_cluster[0]
    ]
    sims = state.item_unit @ state.item_unit[new]
    assert sims[same].mean() > sims[other].mean()


def _photo(
    garment_bgr: tuple[int, int, int], backdrop: int = 250, patch_bgr: tuple[int, int, int] | None = None
) -> bytes:
    img = np.full((300, 240, 3), backdrop, np.uint8)
    cv2.ellipse(img, (120, 150), (80, 120), 0, 0, 360, garment_bgr, -1)
    if patch_bgr is not None:
        cv2.rectangle(img, (90, 60), (150, 130), patch_bgr, -1)
    return cv2.imencode(".jpg", img)[1].tobytes()


def test_dominant_colours_ignore_the_backdrop() -> None:
    red = colours.dominant_colours(_photo((0, 0, 220)))
    assert [c.name for c in red] == ["red"] and red[0].fraction > 0.95
    two = colours.dominant_colours(
        _photo((0, 128, 0), patch_bgr=(0, 215, 255))
    )  # BGR: green garment, gold patch
    assert [c.name for c in two] == ["green", "gold"]
    assert two[0].fraction > two[1].fraction > 0.1
    # A white shirt on a black backdrop: the backdrop is found from the border whatever its colour.
    assert colours.dominant_colours(_photo((255, 255, 255), backdrop=0))[0].name == "white"
    with pytest.raises(ValueError):
        colours.decode(b"\x89PNG broken")


def test_catalog_masks_and_compatibility_rules() -> None:
    cat = CatalogIndex(
        [
            CatalogItem("a", "tops", ["red"], price=10, sizes_in_stock=["S"]),
            CatalogItem("b", "tops", ["blue"], price=50, sizes_in_stock=["M"]),
            CatalogItem("c", "shoes", ["red"], sizes_in_stock=["M"]),
        ]
    )
    assert cat.mask(Filter(categories=("tops",), size="M")).tolist() == [False, True, False]
    assert cat.mask(Filter(colours=("red",))).tolist() == [True, False, True]
    assert cat.mask(Filter(max_price=20)).tolist() == [True, False, False]  # unpriced items never pass
    assert cat.mask(Filter(size="XL")).tolist() == [False, False, False]
    # Combined masks are cached per filter: what a caller changes in its copy stays its own.
    first = cat.mask(Filter(categories=("tops",), size="M"))
    first[:] = False
    assert cat.mask(Filter(categories=("tops",), size="M")).tolist() == [False, True, False]
    assert cat.mask(Filter(categories=("tops",), size="S")).tolist() == [True, False, False]
    assert compatible("tops", "bottoms") and compatible("tops", "shoes") and not compatible("tops", "tops")
    assert not compatible("dresses", "tops") and not compatible("dresses", "bottoms")
    assert compatible("hats", "tops") and not compatible("hats", "hats")


def test_cancelled_training_writes_no_version(tmp_path: Path) -> None:
    from atelier.runtime.errors import CancelledError

    rs = RecsStore(Store(f"sqlite:///{tmp_path / 'r.db'}"))
    shop = simulate(n_users=100, n_items=40, n_clusters=2, seed=6)
    rs.upsert_items("t", shop.items)
    rs.record_events(
        "t",
        [
            Event(
                str(shop.event_ids[k]),
                shop.events.user_ids[k],
                shop.events.item_ids[k],
                EventType(int(shop.events.types[k])),
                datetime.fromtimestamp(shop.events.times_s[k], UTC),
            )
            for k in range(len(shop.events))
        ],
    )

    def progress(fraction: float, message: str) -> None:
        if message.startswith("iteration 3/"):
            raise CancelledError("cancelled by request")

    with pytest.raises(CancelledError):
        train(
            str(rs.engine.url),
            "t",
            TrainParams(factors=4, iterations=20, models_dir=str(tmp_path / "m")),
            progress,
        )
    assert rs.versions("t") == []
    assert not list((tmp_path / "m").rglob("*.npz"))
    # A tenant without events cannot train: FAILED_PRECONDITION, not a crash.
    from atelier.runtime.errors import FailedPreconditionError

    with pytest.raises(FailedPreconditionError):
        train(str(rs.engine.url), "empty", TrainParams(models_dir=str(tmp_path / "m")))
