"""Offline evaluation a retailer can run on its own events: a temporal split, the service's model
against baselines, MAP@12 / recall@12 / NDCG@12, coverage, novelty and a bootstrap interval.

The split is the H&M competition's: train on everything before the last ``test_days``; the
targets are each shopper's purchases in those days; a shopper counts when they bought in the
test days and had events before (cold shoppers are a different question, answered by
popularity). Every method sees the same training events and is scored on the same shoppers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atelier.recommendations.ranking import RankerParams, fit_two_stage
from atelier.recommendations.store import CatalogItem, EventArrays, EventType
from atelier.recommendations.training import DAY_S, TrainParams, build_interactions, fit_factors

MODEL = "two-stage (this service)"


@dataclass
class Split:
    train: EventArrays
    targets: dict[str, set[str]]  # user -> items bought in the test days
    cut_s: float


def temporal_split(events: EventArrays, test_days: float) -> Split:
    newest = float(events.times_s.max()) if len(events) else 0.0
    cut = newest - test_days * DAY_S
    train = events.times_s < cut
    test = ~train & (events.types == EventType.PURCHASE)
    history = set(events.user_ids[train].tolist())
    targets: dict[str, set[str]] = {}
    for user, item in zip(events.user_ids[test], events.item_ids[test], strict=True):
        if user in history:
            targets.setdefault(user, set()).add(item)
    return Split(events.subset(train), targets, cut)


def average_precision(ranked: list[str], relevant: set[str], k: int) -> float:
    hits, total = 0, 0.0
    for rank, item in enumerate(ranked[:k], start=1):
        if item in relevant:
            hits += 1
            total += hits / rank
    return total / min(len(relevant), k) if relevant else 0.0


def recall(ranked: list[str], relevant: set[str], k: int) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def ndcg(ranked: list[str], relevant: set[str], k: int) -> float:
    dcg = sum(1.0 / np.log2(r + 2) for r, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / np.log2(r + 2) for r in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


@dataclass
class MethodResult:
    name: str
    map_at_k: float
    recall_at_k: float
    ndcg_at_k: float
    coverage: float  # share of the catalogue recommended to at least one evaluated shopper
    novelty: float  # mean -log2(share of training buyers who bought the item), bits
    seconds: float
    per_user_ap: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))


@dataclass
class EvaluationReport:
    k: int
    test_days: float
    users_evaluated: int
    train_events: int
    items: int
    methods: list[MethodResult]
    best_baseline: str
    lift: float  # MAP of the model / MAP of the best baseline - 1
    lift_low: float  # bootstrap 95 % interval of the lift (shoppers resampled)
    lift_high: float
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "test_days": self.test_days,
            "users_evaluated": self.users_evaluated,
            "train_events": self.train_events,
            "items": self.items,
            "methods": [
                {
                    "name": m.name,
                    f"map@{self.k}": round(m.map_at_k, 5),
                    f"recall@{self.k}": round(m.recall_at_k, 5),
                    f"ndcg@{self.k}": round(m.ndcg_at_k, 5),
                    "coverage": round(m.coverage, 4),
                    "novelty_bits": round(m.novelty, 3),
                    "seconds": round(m.seconds, 2),
                }
                for m in self.methods
            ],
            "best_baseline": self.best_baseline,
            "lift": round(self.lift, 4),
            "lift_ci95": [round(self.lift_low, 4), round(self.lift_high, 4)],
            "info": self.info,
        }


def bootstrap_lift(
    model_ap: np.ndarray, base_ap: np.ndarray, rounds: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile 95 % interval of MAP(model)/MAP(baseline) - 1, resampling shoppers (paired)."""
    rng = np.random.default_rng(seed)
    n = len(model_ap)
    if n == 0:
        return 0.0, 0.0
    idx = rng.integers(0, n, size=(rounds, n))
    m, b = model_ap[idx].mean(axis=1), base_ap[idx].mean(axis=1)
    lifts = m / np.maximum(b, 1e-12) - 1
    return float(np.percentile(lifts, 2.5)), float(np.percentile(lifts, 97.5))


Recommender = Callable[[list[str]], list[list[str]]]


def baselines(split: Split, items: list[CatalogItem], k: int) -> dict[str, Recommender]:
    """Popularity, repurchase, item-kNN and plain ALS, trained on the split's training events."""
    from implicit.nearest_neighbours import CosineRecommender
    from threadpoolctl import threadpool_limits

    ev = split.train
    newest = float(ev.times_s.max())
    buys = ev.types == EventType.PURCHASE
    recent = buys & (ev.times_s >= newest - 14 * DAY_S)
    users_items = {(u, i) for u, i in zip(ev.user_ids[recent], ev.item_ids[recent], strict=True)}
    counts: dict[str, int] = {}
    for _, i in users_items:
        counts[i] = counts.get(i, 0) + 1
    popular = [i for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][: 4 * k]

    # Repurchase: the shopper's own purchases, most recent first, then the popular items.
    last: dict[str, dict[str, float]] = {}
    for u, i, t in zip(ev.user_ids[buys], ev.item_ids[buys], ev.times_s[buys], strict=True):
        row = last.setdefault(u, {})
        row[i] = max(row.get(i, 0.0), t)

    def repurchase(users: list[str]) -> list[list[str]]:
        out = []
        for u in users:
            own = [i for i, _ in sorted(last.get(u, {}).items(), key=lambda kv: -kv[1])]
            out.append((own + [p for p in popular if p not in set(own)])[:k])
        return out

    item_ids = np.array([it.item_id for it in items], dtype=object)
    inter = build_interactions(ev, item_ids, {}, TrainParams().weights, TrainParams().recency_half_life_days)
    row_of = {u: r for r, u in enumerate(inter.user_ids)}
    positive = inter.confidence.copy()
    positive.data[positive.data < 0] = 0
    positive.eliminate_zeros()

    def knn(users: list[str]) -> list[list[str]]:
        rows = np.array([row_of[u] for u in users])
        with threadpool_limits(1, "blas"):
            model = CosineRecommender(K=100)
            model.fit(positive, show_progress=False)
            ids, _ = model.recommend(rows, positive[rows], N=k, filter_already_liked_items=False)
        return [[item_ids[i] for i in r if i >= 0] for r in ids]

    def als(users: list[str]) -> list[list[str]]:
        rows = np.array([row_of[u] for u in users])
        uf, itf = fit_factors(inter.confidence, TrainParams())
        scores = uf[rows] @ itf.T
        top = np.argsort(-scores, axis=1)[:, :k]
        return [[item_ids[i] for i in r] for r in top]

    return {
        "popularity (last 14 days)": lambda users: [popular[:k]] * len(users),
        "repurchase, then popular": repurchase,
        "item-kNN (implicit cosine, K=100)": knn,
        "plain ALS (implicit, 64 factors)": als,
    }


def two_stage_recommender(
    split: Split, items: list[CatalogItem], segments: dict[str, str], params: RankerParams, k: int
) -> tuple[Recommender, dict[str, Any]]:
    info: dict[str, Any] = {}

    def recommend(users: list[str]) -> list[list[str]]:
        model = fit_two_stage(split.train, items, segments, params, users=np.array(users, dtype=object))
        info.update(model.info)
        info["feature_importance"] = dict(sorted(model.importance.items(), key=lambda kv: -kv[1])[:8])
        row_of = {u: r for r, u in enumerate(model.user_ids)}
        out = []
        for u in users:
            ranked, _, _ = model.ranked_for(row_of[u])
            out.append([model.item_ids[i] for i in ranked[:k]])
        return out

    return recommend, info


def evaluate(
    events: EventArrays,
    items: list[CatalogItem],
    segments: dict[str, str] | None = None,
    params: RankerParams | None = None,
    test_days: float = 14.0,
    k: int = 12,
    max_users: int = 5000,
    bootstrap_rounds: int = 2000,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
) -> EvaluationReport:
    """Score the two-stage model and the baselines on the same temporal split."""
    report = progress or (lambda _f, _m: None)
    segments = segments or {}
    params = params or RankerParams()
    known = {it.item_id for it in items}
    events = events.subset(np.fromiter((i in known for i in events.item_ids), bool, len(events)))
    split = temporal_split(events, test_days)
    users = sorted(split.targets)
    if len(users) > max_users:
        users = sorted(np.random.default_rng(seed).choice(users, max_users, replace=False).tolist())
    if not users:
        raise ValueError(
            f"no shopper both bought in the last {test_days:g} days and had events before them; "
            "record more history or shorten test_days"
        )
    buyers: dict[str, set[str]] = {}
    tr = split.train
    for u, i in zip(
        tr.user_ids[tr.types == EventType.PURCHASE], tr.item_ids[tr.types == EventType.PURCHASE], strict=True
    ):
        buyers.setdefault(i, set()).add(u)
    n_buyers = max(len({u for s in buyers.values() for u in s}), 1)

    methods: dict[str, Recommender] = dict(baselines(split, items, k))
    model_rec, model_info = two_stage_recommender(split, items, segments, params, k)
    methods[MODEL] = model_rec
    results: list[MethodResult] = []
    for j, (name, rec) in enumerate(methods.items()):
        report(0.05 + 0.9 * j / len(methods), f"scoring {name}")
        started = time.perf_counter()
        lists = rec(users)
        seconds = time.perf_counter() - started
        aps = np.array([average_precision(r, split.targets[u], k) for u, r in zip(users, lists, strict=True)])
        recs = [recall(r, split.targets[u], k) for u, r in zip(users, lists, strict=True)]
        ndcgs = [ndcg(r, split.targets[u], k) for u, r in zip(users, lists, strict=True)]
        shown = {i for r in lists for i in r[:k]}
        novelty = (
            float(
                np.mean([-np.log2(max(len(buyers.get(i, ())), 1) / n_buyers) for r in lists for i in r[:k]])
            )
            if shown
            else 0.0
        )
        results.append(
            MethodResult(
                name,
                float(aps.mean()),
                float(np.mean(recs)),
                float(np.mean(ndcgs)),
                len(shown) / max(len(items), 1),
                novelty,
                seconds,
                aps,
            )
        )
    model = results[-1]
    base = max(results[:-1], key=lambda m: m.map_at_k)
    lift = model.map_at_k / max(base.map_at_k, 1e-12) - 1
    low, high = bootstrap_lift(model.per_user_ap, base.per_user_ap, bootstrap_rounds, seed)
    return EvaluationReport(
        k=k,
        test_days=test_days,
        users_evaluated=len(users),
        train_events=len(split.train),
        items=len(items),
        methods=results,
        best_baseline=base.name,
        lift=lift,
        lift_low=low,
        lift_high=high,
        info=model_info,
    )
