"""A simulated retailer for tests and benchmarks (no public interaction dataset can be fetched here).

What is planted, so a model has something to find and a baseline something to miss:
- taste clusters: each shopper belongs to one cluster and picks 75 % of items from that
  cluster's items (whose style attribute is the cluster's style);
- popularity skew: a Zipf(1.1) popularity per item;
- seasonality: each item has a peak month; its appeal follows a cosine over the year;
- outfits: a purchase of a top or dress comes with a bottom/shoes/outerwear of the same cluster
  in the same basket half the time (what complete-the-look should learn);
- segments: a shopper's segment is their cluster's segment 70 % of the time, else random.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from atelier.recommendations.store import CatalogItem, EventArrays, EventType

CATEGORIES = ["tops", "bottoms", "dresses", "shoes", "outerwear", "accessories"]
CATEGORY_SHARE = np.array([0.3, 0.2, 0.15, 0.15, 0.1, 0.1])
COMPLEMENTS = {"tops": ["bottoms", "shoes", "outerwear"], "dresses": ["shoes", "outerwear", "accessories"]}
COLOURS = ["black", "white", "navy", "red", "beige", "green", "grey", "pink"]
SIZES = ["XS", "S", "M", "L", "XL"]
START = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
DAY_S = 86400.0


@dataclass
class Retailer:
    items: list[CatalogItem]
    item_cluster: np.ndarray
    user_ids: np.ndarray  # object
    user_cluster: np.ndarray
    user_segment: np.ndarray  # object
    events: EventArrays
    event_ids: np.ndarray  # object
    days: int


def simulate(
    n_users: int,
    n_items: int,
    n_clusters: int = 20,
    interactions_per_user: float = 12.0,
    days: int = 365,
    seed: int = 0,
) -> Retailer:
    rng = np.random.default_rng(seed)
    item_cluster = rng.integers(0, n_clusters, n_items)
    item_cat = rng.choice(len(CATEGORIES), n_items, p=CATEGORY_SHARE)
    popularity = 1.0 / np.power(rng.permutation(n_items) + 1.0, 1.1)
    peak_month = rng.integers(0, 12, n_items)
    items = [
        CatalogItem(
            item_id=f"i{j}",
            category=CATEGORIES[item_cat[j]],
            colours=[COLOURS[rng.integers(len(COLOURS))]],
            style=f"style{item_cluster[j]}",
            silhouette=["slim", "regular", "relaxed"][j % 3],
            material=["cotton", "wool", "denim", "silk"][j % 4],
            price=float(np.round(10 + rng.gamma(2, 25), 2)),
            currency="EUR",
            sizes_in_stock=sorted(rng.choice(SIZES, rng.integers(1, 6), replace=False).tolist()),
        )
        for j in range(n_items)
    ]
    user_cluster = rng.integers(0, n_clusters, n_users)
    segment_of_cluster = np.array([f"seg{c % 8}" for c in range(n_clusters)], dtype=object)
    user_segment = np.where(
        rng.random(n_users) < 0.7,
        segment_of_cluster[user_cluster],
        np.array([f"seg{k}" for k in rng.integers(0, 8, n_users)], dtype=object),
    )

    # Per (month, cluster) sampling tables: popularity x season x in-cluster preference.
    months = np.arange(12)
    season = 1.0 + 0.8 * np.cos(2 * np.pi * (months[:, None] - peak_month[None, :]) / 12)  # 12 x items
    base = season * popularity[None, :]
    in_cluster = item_cluster[None, :] == np.arange(n_clusters)[:, None]  # clusters x items
    cdf_cluster = np.cumsum(base[:, None, :] * in_cluster[None, :, :], axis=2)  # 12 x C x items
    cdf_all = np.cumsum(base, axis=1)

    counts = rng.poisson(interactions_per_user, n_users) + 1
    users = np.repeat(np.arange(n_users), counts)
    n = len(users)
    times = START + rng.random(n) * days * DAY_S
    month = np.minimum(((times - START) / DAY_S / (days / 12)).astype(int), 11)
    own = rng.random(n) < 0.75
    u = rng.random(n)
    chosen = np.empty(n, np.int64)
    for m in range(12):
        for c in range(n_clusters):
            sel = own & (month == m) & (user_cluster[users] == c)
            if sel.any():
                table = cdf_cluster[m, c]
                chosen[sel] = np.searchsorted(table, u[sel] * table[-1])
        sel = ~own & (month == m)
        if sel.any():
            chosen[sel] = np.searchsorted(cdf_all[m], u[sel] * cdf_all[m][-1])
    chosen = np.minimum(chosen, n_items - 1)

    # Every interaction is a view; some go to the cart, some of those are bought, some returned.
    cart = rng.random(n) < 0.35
    buy = cart & (rng.random(n) < 0.55)
    ret = buy & (rng.random(n) < 0.12)
    ev_user = [users, users[cart], users[buy], users[ret]]
    ev_item = [chosen, chosen[cart], chosen[buy], chosen[ret]]
    ev_time = [times, times[cart] + 60, times[buy] + 120, times[ret] + 10 * DAY_S]
    ev_type = [
        np.full(n, EventType.VIEW),
        np.full(int(cart.sum()), EventType.ADD_TO_CART),
        np.full(int(buy.sum()), EventType.PURCHASE),
        np.full(int(ret.sum()), EventType.RETURN),
    ]
    # Outfits: a bought top or dress comes with a complement of the same cluster half the time.
    cluster_cat_items: dict[tuple[int, str], np.ndarray] = {}
    for j in range(n_items):
        cluster_cat_items.setdefault((int(item_cluster[j]), CATEGORIES[item_cat[j]]), [])  # type: ignore[arg-type]
        cluster_cat_items[(int(item_cluster[j]), CATEGORIES[item_cat[j]])].append(j)  # type: ignore[attr-defined]
    bought = np.flatnonzero(buy)
    out_user, out_item, out_time = [], [], []
    for k in bought[rng.random(len(bought)) < 0.5]:
        cat = CATEGORIES[item_cat[chosen[k]]]
        if cat not in COMPLEMENTS:
            continue
        pool = cluster_cat_items.get((int(item_cluster[chosen[k]]), COMPLEMENTS[cat][rng.integers(3)]))
        if not pool:
            continue
        pool_arr = np.asarray(pool)
        pick = pool_arr[np.argmax(popularity[pool_arr] * rng.random(len(pool_arr)))]
        out_user.append(users[k])
        out_item.append(pick)
        out_time.append(times[k] + 130)
    for kind in (EventType.VIEW, EventType.ADD_TO_CART, EventType.PURCHASE):
        ev_user.append(np.asarray(out_user, np.int64))
        ev_item.append(np.asarray(out_item, np.int64))
        ev_time.append(np.asarray(out_time, np.float64) - 60 * (EventType.PURCHASE - kind))
        ev_type.append(np.full(len(out_user), kind))
    all_user = np.concatenate(ev_user)
    all_time = np.concatenate(ev_time)
    order = np.argsort(all_time, kind="stable")
    user_ids = np.array([f"u{k}" for k in range(n_users)], dtype=object)
    item_ids = np.array([it.item_id for it in items], dtype=object)
    total = len(order)
    events = EventArrays(
        seq=np.arange(1, total + 1, dtype=np.int64),
        user_ids=user_ids[all_user[order]],
        item_ids=item_ids[np.concatenate(ev_item)[order]],
        types=np.concatenate(ev_type)[order].astype(np.int8),
        times_s=all_time[order],
        basket_ids=np.full(total, "", dtype=object),
    )
    return Retailer(
        items,
        item_cluster,
        user_ids,
        user_cluster,
        user_segment,
        events,
        np.array([f"e{k}" for k in range(total)], dtype=object),
        days,
    )


def split_last_purchases(
    events: EventArrays, test_days: float = 14.0
) -> tuple[np.ndarray, dict[str, set[str]]]:
    """Held-out evaluation as in the H&M Kaggle task: train on everything before the last
    test_days; the targets are each shopper's purchases in those days."""
    cut = events.times_s.max() - test_days * DAY_S
    train = events.times_s < cut
    targets: dict[str, set[str]] = {}
    test = ~train & (events.types == EventType.PURCHASE)
    for user, item in zip(events.user_ids[test], events.item_ids[test], strict=True):
        targets.setdefault(user, set()).add(item)
    return train, targets


def average_precision_at_k(ranked: list[str], relevant: set[str], k: int = 12) -> float:
    hits, total = 0, 0.0
    for rank, item in enumerate(ranked[:k], start=1):
        if item in relevant:
            hits += 1
            total += hits / rank
    return total / min(len(relevant), k) if relevant else 0.0


def recall_at_k(ranked: list[str], relevant: set[str], k: int = 12) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0
