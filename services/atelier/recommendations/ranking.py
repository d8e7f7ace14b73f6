"""Two-stage recommendations: candidate sources, then a learned LightGBM lambdarank ranker.

What the winning H&M Personalized Fashion Recommendations solutions did, on the tenant's own
events: several cheap sources each propose a few dozen items per shopper (what they bought
before, what is popular now, overall, in their segment and in the categories they buy, what
shoppers who bought their items also bought, ALS neighbours, the same style in another colour);
a gradient-boosted ranker trained on a time split (features from the events before a cut,
labels = purchases in the days after it) orders the union.

Everything is dense per batch of shoppers (batch x items float32), so the same code scores
100,000 shoppers at training time and one shopper in a notebook. Serving does not run the
ranker: ``fit_two_stage`` ranks every known shopper once and keeps each one's best
``keep`` items (precomputed at training time, what need not be computed per request).

Fallback order (serving, engine.py): a shopper known to the model gets the ranked list; one
with events since training, or unknown to the ranker, gets ALS fold-in scores; a shopper with
no factors gets popularity in their segment blended with attribute similarity to what they
touched; nobody at all gets overall popularity. Items newer than the model are reachable through
ALS factors filled from attribute neighbours, SimilarItems and the popularity fallbacks.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from atelier.recommendations.store import CatalogItem, EventArrays, EventType
from atelier.recommendations.training import DAY_S, EventWeights, TrainParams, fit_factors, quantity_factor

log = logging.getLogger(__name__)

# Candidate sources, in the order their codes are stored (int8) and their reasons ranked.
# New sources go at the end: stored ranked lists keep their codes.
SOURCES = ("repurchase", "cobuy", "basket", "style", "als", "segment", "category", "popular", "coview")
SOURCE_CODE = {s: k for k, s in enumerate(SOURCES)}


@dataclass
class RankerParams:
    label_days: float = 14.0  # the ranker learns "what is bought in the next label_days"
    windows: int = 6  # label windows stacked back in time (more training groups on small data)
    # On large data fewer windows: only as many as max_train_users needs (training_windows).
    min_windows: int = 2
    window_step_days: float = 7.0  # windows overlap: each starts this much before the next
    # ALS as a candidate source and features (one ALS fit per window). Serving always keeps
    # ALS for shoppers without a ranked list.
    als_source: bool = True
    repurchase_k: int = 40
    cobuy_k: int = 30
    basket_k: int = 20
    style_k: int = 20
    coview_k: int = 20  # viewed by the same shoppers (views only: browsing, not buying)
    als_k: int = 30
    segment_k: int = 20
    category_k: int = 20
    popular_k: int = 30
    popular_days: float = 14.0
    # Item-item similarity: co-occurrences below min_support are dropped (one shopper proves
    # nothing), the cosine is shrunk by support / (support + shrinkage).
    min_support: int = 2
    shrinkage: float = 10.0
    neighbours: int = 50
    max_style_group: int = 200  # a "style" shared by more items says little about any of them
    history_half_life_days: float = 60.0
    keep: int = 100  # ranked items kept per shopper for serving
    # Shopper-windows the ranker learns from, over all windows (the real samples have 500-2,500;
    # past a few thousand, more shoppers only lengthen the fit).
    max_train_users: int = 8000
    # Small trees, many samples per leaf: the real samples give a few hundred to a few thousand
    # shopper-windows, where deeper trees learned noise (settings chosen on both real sets).
    n_estimators: int = 150
    learning_rate: float = 0.05
    num_leaves: int = 7
    min_child_samples: int = 100
    # Rankers averaged (different seeds) when the training rows are few: bags = clip(1e6 / rows, 1, bags).
    bags: int = 5
    # "lambdarank" (listwise, LGBMRanker) or "binary" (pointwise, LGBMClassifier).
    objective: str = "lambdarank"
    user_features: bool = True  # shopper-level features (only act through interactions in a ranker)
    num_threads: int = 0
    seed: int = 42
    als: TrainParams = field(default_factory=TrainParams)
    weights: EventWeights = field(default_factory=EventWeights)


@dataclass
class ItemTable:
    """The catalogue as the ranker sees it."""

    item_ids: np.ndarray  # object
    category: np.ndarray  # int32 code
    category_names: list[str]
    style: np.ndarray  # int32 code, -1 when none
    price: np.ndarray  # float64, NaN when none

    @classmethod
    def from_items(cls, items: list[CatalogItem]) -> ItemTable:
        cats = sorted({it.category for it in items})
        cat_index = {c: k for k, c in enumerate(cats)}
        styles: dict[str, int] = {}
        style = np.array(
            [styles.setdefault(it.style, len(styles)) if it.style else -1 for it in items], dtype=np.int32
        )
        return cls(
            np.array([it.item_id for it in items], dtype=object),
            np.array([cat_index[it.category] for it in items], dtype=np.int32),
            cats,
            style,
            np.array([np.nan if it.price is None else it.price for it in items], dtype=np.float64),
        )


def _pair_reduce(keys: np.ndarray, values: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """(unique keys, min/max/sum of values per key)."""
    if len(keys) == 0:
        return keys, values
    order = np.argsort(keys, kind="stable")
    k, v = keys[order], values[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    fn = {"min": np.minimum, "max": np.maximum, "sum": np.add}[how]
    return k[starts], fn.reduceat(v, starts)


def cooccurrence(
    incidence: sp.csr_matrix, min_support: int, shrinkage: float, neighbours: int
) -> sp.csr_matrix:
    """Item-item similarity from a (baskets or shoppers) x items 0/1 matrix.

    cosine(i, j) x support / (support + shrinkage), with pairs seen together fewer than
    min_support times dropped and only each item's best ``neighbours`` kept. Without the support
    terms an item bought once, by someone who also bought the query item, has cosine 1/sqrt(n)
    and outranks genuinely related items (what SimilarItems used to do).
    """
    n = incidence.shape[1]
    inc = incidence.tocsr().astype(np.float32)
    inc.data[:] = 1.0
    co = (inc.T @ inc).tocsr()
    counts = co.diagonal().copy()
    co.setdiag(0)
    co.eliminate_zeros()
    co.data[co.data < min_support] = 0
    co.eliminate_zeros()
    coo = co.tocoo()
    support = coo.data
    cos = support / np.sqrt(np.maximum(counts[coo.row], 1) * np.maximum(counts[coo.col], 1))
    sim = sp.csr_matrix(
        (cos * support / (support + shrinkage), (coo.row, coo.col)), shape=(n, n), dtype=np.float32
    )
    return _top_per_row(sim, neighbours)


def _top_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    m = m.tocsr()
    m.sort_indices()
    rows, cols, data = [], [], []
    for r in range(m.shape[0]):
        s, e = m.indptr[r], m.indptr[r + 1]
        if e == s:
            continue
        d = m.data[s:e]
        keep = np.argsort(-d, kind="stable")[:k]
        rows.append(np.full(len(keep), r))
        cols.append(m.indices[s:e][keep])
        data.append(d[keep])
    if not rows:
        return sp.csr_matrix(m.shape, dtype=np.float32)
    return sp.csr_matrix(
        (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=m.shape, dtype=np.float32
    )


def basket_incidence(
    rows: np.ndarray, cols: np.ndarray, times: np.ndarray, baskets: np.ndarray, n_items: int
) -> sp.csr_matrix:
    """Baskets x items; an event without a basket id belongs to "that shopper, that day"."""
    if len(rows) == 0:
        return sp.csr_matrix((0, n_items), dtype=np.float32)
    day = (times // DAY_S).astype(np.int64)
    keys = np.where(
        baskets != "",
        np.char.add("b:", baskets.astype(str)),
        np.char.add(np.char.add("u:", rows.astype(str)), np.char.add(":", day.astype(str))),
    )
    _, b = np.unique(keys, return_inverse=True)
    inc = sp.csr_matrix(
        (np.ones(len(b), np.float32), (b, cols)), shape=(int(b.max()) + 1, n_items), dtype=np.float32
    )
    inc.sum_duplicates()
    return inc


def style_similarity(style: np.ndarray, max_group: int) -> sp.csr_matrix:
    """Items sharing a style with another item (e.g. the same product in other colours), 1/group size."""
    n = len(style)
    has = style >= 0
    if not has.any():
        return sp.csr_matrix((n, n), dtype=np.float32)
    sizes = np.bincount(style[has])
    ok = has & (sizes[np.where(has, style, 0)] <= max_group) & (sizes[np.where(has, style, 0)] >= 2)
    idx = np.flatnonzero(ok)
    g = sp.csr_matrix((np.ones(len(idx), np.float32), (idx, style[idx])), shape=(n, int(style.max()) + 1))
    m = (g @ g.T).tocsr()
    m.setdiag(0)
    m.eliminate_zeros()
    m.data = m.data / sizes[style[m.nonzero()[0]]].astype(np.float32)
    return m.astype(np.float32)


@dataclass
class Sources:
    """What the candidate sources and the features need, learned from events before t_ref."""

    t_ref: float
    n_items: int
    conf: sp.csr_matrix  # users x items, decayed weighted confidence (positive part)
    buy_lines: sp.csr_matrix  # users x items, purchase events
    buy_days: sp.csr_matrix  # users x items, distinct days with a purchase
    units: sp.csr_matrix  # users x items, units bought minus units returned
    last_age: sp.csr_matrix  # users x items, 1 + days since the last event of any kind
    last_buy_age: sp.csr_matrix  # users x items, 1 + days since the last purchase
    first_buy_age: sp.csr_matrix  # users x items, 1 + days since the first purchase
    user_factors: np.ndarray
    item_factors: np.ndarray
    cobuy: sp.csr_matrix  # items x items, bought by the same shoppers
    coview: sp.csr_matrix  # items x items, viewed by the same shoppers
    basket: sp.csr_matrix  # items x items, in the same baskets
    style: sp.csr_matrix  # items x items, same style
    user_feats: np.ndarray  # users x len(USER_FEATURES)
    item_feats: np.ndarray  # items x len(ITEM_FEATURES)
    pop_recent: np.ndarray  # items, buyers in the last popular_days
    user_segment: np.ndarray  # users, int, -1 none
    segment_pop: np.ndarray  # segments x items
    user_category_share: np.ndarray  # users x categories
    item_category: np.ndarray


USER_FEATURES = (
    "user_events",
    "user_buy_lines",
    "user_items",
    "user_days_since_last",
    "user_days_since_first",
    "user_rebuy_share",
    "user_mean_unit_value",
)
ITEM_FEATURES = (
    "item_buyers_7d",
    "item_buyers_14d",
    "item_rank_14d",
    "item_buyers_30d",
    "item_buyers",
    "item_trend",
    "item_rebuy_rate",
    "item_cycle_days",
    "item_days_since_first_sale",
    "item_days_since_last_sale",
    "item_price",
    "item_category_code",
)
PAIR_FEATURES = (
    "pair_confidence",
    "pair_buy_lines",
    "pair_buy_days",
    "pair_units",
    "pair_days_since_last",
    "pair_days_since_last_buy",
    "pair_days_since_first_buy",
    "pair_recency_rank",
    "pair_cycle_ratio",
    "pair_cobuy",
    "pair_basket",
    "pair_style",
    "pair_als",
    "pair_als_rank",
    "pair_segment_pop",
    "pair_category_share",
    "pair_sources",
    "pair_coview",
)
FEATURES = USER_FEATURES + ITEM_FEATURES + PAIR_FEATURES


def build_sources(
    events: EventArrays,
    user_index: dict[str, int],
    items: ItemTable,
    segments: dict[str, str],
    segment_names: list[str],
    params: RankerParams,
    t_ref: float,
    fit_als: bool = True,
) -> Sources:
    """Learn every source from the events strictly before t_ref (pure numpy/scipy + implicit)."""
    n_users, n_items = len(user_index), len(items.item_ids)
    item_index = {it: k for k, it in enumerate(items.item_ids)}
    cols = np.fromiter((item_index.get(i, -1) for i in events.item_ids), np.int64, len(events))
    keep = (cols >= 0) & (events.times_s < t_ref)
    cols = cols[keep]
    rows = np.fromiter((user_index[u] for u in events.user_ids[keep]), np.int64, len(cols))
    types = events.types[keep].astype(np.int64)
    times = events.times_s[keep]
    assert events.quantities is not None and events.values is not None
    qty = events.quantities[keep].astype(np.float32)
    value = events.values[keep]
    age = (t_ref - times) / DAY_S
    shape = (n_users, n_items)

    decay = np.power(0.5, age / params.history_half_life_days).astype(np.float32)
    w = params.weights.array()[types] * decay * quantity_factor(qty)
    conf = sp.csr_matrix((w, (rows, cols)), shape=shape, dtype=np.float32)
    conf.sum_duplicates()
    conf_pos = conf.copy()
    conf_pos.data = np.maximum(conf_pos.data, 0)
    conf_pos.eliminate_zeros()

    buy = types == EventType.PURCHASE
    ret = types == EventType.RETURN
    key = rows * n_items + cols

    def pair_matrix(mask: np.ndarray, values: np.ndarray, how: str) -> sp.csr_matrix:
        k, v = _pair_reduce(key[mask], values[mask].astype(np.float64), how)
        return sp.csr_matrix((v.astype(np.float32), (k // n_items, k % n_items)), shape=shape)

    ones = np.ones(len(key))
    buy_lines = pair_matrix(buy, ones, "sum")
    day = np.floor(times / DAY_S)
    day_key = np.unique(np.stack([key[buy], day[buy]], axis=1), axis=0) if buy.any() else np.zeros((0, 2))
    bd_k, bd_v = _pair_reduce(day_key[:, 0].astype(np.int64), np.ones(len(day_key)), "sum")
    buy_days = sp.csr_matrix((bd_v.astype(np.float32), (bd_k // n_items, bd_k % n_items)), shape=shape)
    units = pair_matrix(buy | ret, np.where(ret, -qty, qty), "sum")
    last_age = pair_matrix(np.ones(len(key), bool), age + 1, "min")
    last_buy_age = pair_matrix(buy, age + 1, "min")
    first_buy_age = pair_matrix(buy, age + 1, "max")

    # ALS on the same confidence as the service's own model (negatives: returns outweigh).
    if fit_als and conf.nnz:
        uf, itf = fit_factors(conf, params.als)
    else:
        uf = np.zeros((n_users, 0), np.float32)
        itf = np.zeros((n_items, 0), np.float32)

    sel = buy | (types == EventType.ADD_TO_CART)
    shopper_inc = sp.csr_matrix((ones[sel], (rows[sel], cols[sel])), shape=shape)
    cobuy = cooccurrence(shopper_inc, params.min_support, params.shrinkage, params.neighbours)
    bsk = basket_incidence(rows[sel], cols[sel], times[sel], events.basket_ids[keep][sel], n_items)
    basket = cooccurrence(bsk, params.min_support, params.shrinkage, params.neighbours)
    viewed = types == EventType.VIEW
    view_inc = sp.csr_matrix((ones[viewed], (rows[viewed], cols[viewed])), shape=shape)
    # The same support threshold and shrinkage as co-purchase: one shopper's browsing is no evidence.
    coview = cooccurrence(view_inc, params.min_support, params.shrinkage, params.neighbours)
    style = style_similarity(items.style, params.max_style_group)

    # User features.
    n_ev = np.bincount(rows, minlength=n_users).astype(np.float32)
    n_buy = np.bincount(rows[buy], minlength=n_users).astype(np.float32)
    n_items_u = np.diff(conf_pos.indptr).astype(np.float32)
    last_u = np.full(n_users, np.nan, np.float32)
    first_u = np.full(n_users, np.nan, np.float32)
    if len(rows):
        k, v = _pair_reduce(rows, age, "min")
        last_u[k] = v
        k, v = _pair_reduce(rows, age, "max")
        first_u[k] = v
    rebought = buy_days.copy()
    rebought.data = (rebought.data >= 2).astype(np.float32)
    bought_items = np.diff(buy_days.indptr).astype(np.float32)
    rebuy_share = np.asarray(rebought.sum(axis=1)).ravel() / np.maximum(bought_items, 1)
    unit_value = np.full(n_users, np.nan, np.float32)
    valued = buy & ~np.isnan(value)
    if valued.any():
        spent = np.bincount(rows[valued], weights=value[valued], minlength=n_users)
        got = np.bincount(rows[valued], weights=qty[valued], minlength=n_users)
        unit_value = np.where(got > 0, spent / np.maximum(got, 1e-9), np.nan).astype(np.float32)
    user_feats = np.stack(
        [n_ev, n_buy, n_items_u, last_u, first_u, rebuy_share.astype(np.float32), unit_value], axis=1
    )

    # Item features.
    def buyers(mask: np.ndarray) -> np.ndarray:
        k = np.unique(key[mask])
        return np.bincount(k % n_items, minlength=n_items).astype(np.float32)

    b7 = buyers(buy & (age < 7))
    b14 = buyers(buy & (age < 14))
    rank14 = np.empty(n_items, np.float32)
    rank14[np.argsort(-(b14 + 0.001 * buyers(buy)), kind="stable")] = np.arange(n_items)
    b30 = buyers(buy & (age < 30))
    ball = buyers(buy)
    pop_recent = buyers(buy & (age < params.popular_days)) + 0.01 * ball  # ties broken by all-time
    item_rebuyers = np.asarray(rebought.sum(axis=0)).ravel()
    prior = float(item_rebuyers.sum() / max(ball.sum(), 1))
    rebuy_rate = (item_rebuyers + 5 * prior) / (ball + 5)  # shrunk toward the tenant's rate
    span = first_buy_age - last_buy_age  # days between first and last purchase per pair
    gaps = span.copy()
    multi = buy_days.copy()
    multi.data = np.maximum(multi.data - 1, 0)
    cycle_sum = np.asarray(gaps.sum(axis=0)).ravel()
    cycle_n = np.asarray(multi.sum(axis=0)).ravel()
    cycle = np.where(cycle_n > 0, cycle_sum / np.maximum(cycle_n, 1), np.nan).astype(np.float32)
    first_sale = np.full(n_items, np.nan, np.float32)
    last_sale = np.full(n_items, np.nan, np.float32)
    if buy.any():
        k, v = _pair_reduce(cols[buy], age[buy], "max")
        first_sale[k] = v
        k, v = _pair_reduce(cols[buy], age[buy], "min")
        last_sale[k] = v
    price = items.price.astype(np.float32).copy()
    if valued.any():  # no catalogue price: the median paid per unit
        paid = value[valued] / np.maximum(qty[valued], 1e-9)
        order = np.argsort(cols[valued])
        c_sorted, p_sorted = cols[valued][order], paid[order]
        starts = np.flatnonzero(np.r_[True, c_sorted[1:] != c_sorted[:-1]])
        ends = np.r_[starts[1:], len(c_sorted)]
        for s, e in zip(starts, ends, strict=True):
            if np.isnan(price[c_sorted[s]]):
                price[c_sorted[s]] = float(np.median(p_sorted[s:e]))
    item_feats = np.stack(
        [
            b7,
            b14,
            rank14,
            b30,
            ball,
            (b7 + 1) / (b30 / 4 + 1),
            rebuy_rate.astype(np.float32),
            cycle,
            first_sale,
            last_sale,
            price,
            items.category.astype(np.float32),
        ],
        axis=1,
    )

    seg_index = {s: k for k, s in enumerate(segment_names)}
    inv_users = np.empty(n_users, dtype=object)
    for u, k in user_index.items():
        inv_users[k] = u
    user_segment = np.array([seg_index.get(segments.get(u, ""), -1) for u in inv_users], dtype=np.int64)
    segment_pop = np.zeros((len(segment_names), n_items), np.float32)
    recent = buy & (age < 30)
    if recent.any() and len(segment_names):
        s = user_segment[rows[recent]]
        ok = s >= 0
        np.add.at(segment_pop, (s[ok], cols[recent][ok]), 1.0)
    n_cats = len(items.category_names)
    cat_conf = sp.csr_matrix(
        (
            conf_pos.data,
            (np.repeat(np.arange(n_users), np.diff(conf_pos.indptr)), items.category[conf_pos.indices]),
        ),
        shape=(n_users, max(n_cats, 1)),
    ).toarray()
    cat_share = cat_conf / np.maximum(cat_conf.sum(axis=1, keepdims=True), 1e-9)

    return Sources(
        t_ref=t_ref,
        n_items=n_items,
        conf=conf_pos,
        buy_lines=buy_lines,
        buy_days=buy_days,
        units=units,
        last_age=last_age,
        last_buy_age=last_buy_age,
        first_buy_age=first_buy_age,
        user_factors=uf,
        item_factors=itf,
        cobuy=cobuy,
        coview=coview,
        basket=basket,
        style=style,
        user_feats=user_feats,
        item_feats=item_feats,
        pop_recent=pop_recent,
        user_segment=user_segment,
        segment_pop=segment_pop,
        user_category_share=cat_share.astype(np.float32),
        item_category=items.category,
    )


@dataclass
class Candidates:
    rows: np.ndarray  # user row per candidate (grouped, ascending)
    items: np.ndarray  # item index per candidate
    features: np.ndarray  # candidates x len(FEATURES), float32, NaN = missing
    source: np.ndarray  # int8: the strongest source that proposed the pair (SOURCES order)


def _top_mask(scores: np.ndarray, k: int, out: np.ndarray, source: np.ndarray, code: int) -> None:
    """Mark each row's k best positive scores in out; record the source where none is yet."""
    if k <= 0 or scores.shape[1] == 0:
        return
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    r = np.repeat(np.arange(scores.shape[0]), k)
    c = top.ravel()
    ok = scores[r, c] > 0
    r, c = r[ok], c[ok]
    fresh = ~out[r, c]
    out[r, c] = True
    source[r[fresh], c[fresh]] = code


def _top_mask_shared(scores: np.ndarray, k: int) -> np.ndarray:
    """The k best positive scores of one row shared by every shopper (item indices)."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64)
    top = np.argpartition(-scores, k - 1)[:k]
    return top[scores[top] > 0]


def candidates(src: Sources, rows: np.ndarray, params: RankerParams) -> Candidates:
    """Candidates and features for the given user rows (one dense batch)."""
    n = src.n_items
    b = len(rows)

    def dense(m: sp.csr_matrix) -> np.ndarray:
        return m[rows].toarray()

    conf = dense(src.conf)
    last_age = dense(src.last_age)  # 0 = never
    cobuy = (src.conf[rows] @ src.cobuy).toarray()
    basket = (src.conf[rows] @ src.basket).toarray()
    coview = (src.conf[rows] @ src.coview).toarray()
    style = (src.conf[rows] @ src.style).toarray()
    has_als = src.user_factors.shape[1] > 0
    als = src.user_factors[rows] @ src.item_factors.T if has_als else np.zeros((b, n), np.float32)
    seg = src.user_segment[rows]
    seg_pop = np.zeros((b, n), np.float32)
    if len(src.segment_pop):
        seg_pop[seg >= 0] = src.segment_pop[seg[seg >= 0]]
    cat_share = src.user_category_share[rows][:, src.item_category]
    cat_pop = cat_share * src.pop_recent[None, :]

    chosen = np.zeros((b, n), bool)
    source = np.full((b, n), -1, np.int8)
    # Order matters only for the recorded source: the first that proposes an item names it.
    _top_mask(1.0 / np.maximum(last_age, 1.0) * (last_age > 0), params.repurchase_k, chosen, source, 0)
    _top_mask(cobuy, params.cobuy_k, chosen, source, 1)
    _top_mask(basket, params.basket_k, chosen, source, 2)
    _top_mask(style, params.style_k, chosen, source, 3)
    _top_mask(coview, params.coview_k, chosen, source, SOURCE_CODE["coview"])
    if has_als:
        _top_mask(als - als.min(axis=1, keepdims=True) + 1e-6, params.als_k, chosen, source, 4)
    _top_mask(seg_pop, params.segment_k, chosen, source, 5)
    _top_mask(cat_pop, params.category_k, chosen, source, 6)
    # The same popular items for every shopper: one partition, not one per row.
    popular = _top_mask_shared(src.pop_recent, params.popular_k)
    fresh = ~chosen[:, popular]
    chosen[:, popular] = True
    source[:, popular] = np.where(fresh, np.int8(7), source[:, popular])
    r, c = np.nonzero(chosen)
    n_sources = (
        (last_age[r, c] > 0).astype(np.float32)
        + (cobuy[r, c] > 0)
        + (basket[r, c] > 0)
        + (style[r, c] > 0)
        + (coview[r, c] > 0)
    )
    # Ranks are needed for the candidates only: one sort per row and a search per candidate
    # (two full argsorts per batch were half of the ranking pass's time at 20k items).
    bounds = np.searchsorted(r, np.arange(b + 1))
    if has_als:
        ascending = np.sort(als, axis=1)
        als_rank = np.empty(len(r), np.float32)
        for k in range(b):
            s, e = bounds[k], bounds[k + 1]
            # Items scoring strictly higher: the 0-based rank, ties sharing the best place.
            als_rank[s:e] = n - np.searchsorted(ascending[k], als[k, c[s:e]], side="right")
    else:
        als_rank = np.full(len(r), np.nan, np.float32)

    def nan0(m: np.ndarray) -> np.ndarray:
        return np.where(m > 0, m, np.nan).astype(np.float32)

    # The shopper's own items in recency order (what the repurchase baseline shows first), from
    # the sparse rows: newest first, ties in item order.
    own = src.last_age[rows].tocoo()
    order = np.lexsort((own.col, own.data, own.row))
    own_rows = own.row[order]
    starts = np.searchsorted(own_rows, np.arange(b))
    recency_rank = np.zeros((b, n), np.float32)
    recency_rank[own_rows, own.col[order]] = np.arange(len(order)) - starts[own_rows]
    users = rows[r]
    last_buy = dense(src.last_buy_age)[r, c]
    first_buy = dense(src.first_buy_age)[r, c]
    buy_days = dense(src.buy_days)[r, c]
    cycle = src.item_feats[c, ITEM_FEATURES.index("item_cycle_days")]
    pair = np.stack(
        [
            conf[r, c],
            dense(src.buy_lines)[r, c],
            buy_days,
            dense(src.units)[r, c],
            nan0(last_age[r, c]),
            nan0(last_buy),
            nan0(first_buy),
            np.where(last_age[r, c] > 0, recency_rank[r, c], np.nan),
            np.where(last_buy > 0, last_buy / np.maximum(cycle, 1.0), np.nan),
            cobuy[r, c],
            basket[r, c],
            style[r, c],
            als[r, c] if has_als else np.full(len(r), np.nan),
            als_rank,
            seg_pop[r, c],
            cat_share[r, c],
            n_sources,
            coview[r, c],
        ],
        axis=1,
    ).astype(np.float32)
    features = np.concatenate([src.user_feats[users], src.item_feats[c], pair], axis=1)
    return Candidates(users, c.astype(np.int64), features, source[r, c])


def _batches(rows: np.ndarray, n_items: int) -> list[np.ndarray]:
    size = max(1, 3_000_000 // max(n_items, 1))
    return [rows[s : s + size] for s in range(0, len(rows), size)]


def _ranker(params: RankerParams) -> Any:
    import lightgbm as lgb

    cls = lgb.LGBMRanker if params.objective == "lambdarank" else lgb.LGBMClassifier
    extra = {"lambdarank_truncation_level": 20} if params.objective == "lambdarank" else {}
    return cls(
        objective=params.objective,
        n_estimators=params.n_estimators,
        learning_rate=params.learning_rate,
        num_leaves=params.num_leaves,
        min_child_samples=params.min_child_samples,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        **extra,
        # One thread unless told: LightGBM's OpenMP threads spin-wait, and on a shared or busy
        # machine "every core" made a fit six times slower than one thread (measured).
        n_jobs=params.num_threads or 1,
        random_state=params.seed,
        verbose=-1,
    )


@dataclass
class TwoStageModel:
    """The trained ranker and each known shopper's precomputed ranked list."""

    user_ids: np.ndarray  # object
    item_ids: np.ndarray  # object
    ranked_items: np.ndarray  # users x keep, int32 item index, -1 pad
    ranked_scores: np.ndarray  # users x keep, float32
    ranked_sources: np.ndarray  # users x keep, int8 SOURCES code
    ranker: str  # LightGBM model text ("" when too few labels to learn from)
    importance: dict[str, float]
    info: dict[str, Any]
    # users x keep, int32: each ranked item's reason partner in the interactions' item space
    # (reasons.ranked_partners; written with the artefact, None in artefacts from before it).
    partners: np.ndarray | None = None

    def to_arrays(self, prefix: str = "ranker_") -> dict[str, np.ndarray]:
        """The model as a dict of plain arrays (no pickle), for whatever stores artefacts."""
        import json

        return {
            f"{prefix}user_ids": self.user_ids.astype(str),
            f"{prefix}item_ids": self.item_ids.astype(str),
            f"{prefix}items": self.ranked_items,
            f"{prefix}scores": self.ranked_scores,
            f"{prefix}sources": self.ranked_sources,
            f"{prefix}model": np.array(self.ranker),
            f"{prefix}meta": np.array(json.dumps({"importance": self.importance, "info": self.info})),
            **({f"{prefix}partners": self.partners} if self.partners is not None else {}),
        }

    @classmethod
    def from_arrays(cls, z: Any, prefix: str = "ranker_") -> TwoStageModel | None:
        import json

        if f"{prefix}items" not in z:
            return None
        meta = json.loads(str(z[f"{prefix}meta"]))
        return cls(
            z[f"{prefix}user_ids"].astype(object),
            z[f"{prefix}item_ids"].astype(object),
            z[f"{prefix}items"],
            z[f"{prefix}scores"],
            z[f"{prefix}sources"],
            str(z[f"{prefix}model"]),
            meta["importance"],
            meta["info"],
            z.get(f"{prefix}partners"),
        )

    def ranked_for(self, user_row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        items = self.ranked_items[user_row]
        ok = items >= 0
        return items[ok], self.ranked_scores[user_row][ok], self.ranked_sources[user_row][ok]


def _eligible(events: EventArrays, cut: float, label_sel: np.ndarray) -> int:
    """Shoppers who buy in the label window after cut and had events before it."""
    buyers = np.unique(events.user_ids[label_sel].astype(str))
    before = np.unique(events.user_ids[events.times_s < cut].astype(str))
    return len(np.intersect1d(buyers, before, assume_unique=True))


def training_windows(params: RankerParams, eligible_first: int) -> int:
    """How many label windows to build: all of them while shoppers are few, fewer on large data.

    Each window costs a full pass over the events (sources, an ALS fit); once the newest
    window alone offers max_train_users / min_windows shoppers, more windows add no shoppers
    the ranker can use, only cost (on the real samples, a few hundred per window, all windows
    are kept).
    """
    needed = int(np.ceil(params.max_train_users / max(eligible_first, 1)))
    return int(np.clip(needed, min(params.min_windows, params.windows), params.windows))


def fit_two_stage(
    events: EventArrays,
    items: list[CatalogItem],
    segments: dict[str, str],
    params: RankerParams | None = None,
    progress: Any = None,
    users: np.ndarray | None = None,
    serving_factors: tuple[np.ndarray, np.ndarray] | None = None,
) -> TwoStageModel:
    """Train the ranker on time splits of the events, then rank every shopper (or ``users``).

    Window w (w = 1..windows): sources from the events before newest - w x label_days, labels
    = what each shopper bought in the label_days after. Serving sources: every event.
    """
    params = params or RankerParams()
    report = progress or (lambda _f, _m: None)
    table = ItemTable.from_items(items)
    known_items = set(table.item_ids)
    in_catalogue = np.fromiter((i in known_items for i in events.item_ids), bool, len(events))
    events = events.subset(in_catalogue)
    user_ids = np.unique(events.user_ids.astype(str)).astype(object)
    user_index = {u: k for k, u in enumerate(user_ids)}
    item_index = {it: k for k, it in enumerate(table.item_ids)}
    seg_values, seg_counts = np.unique([segments.get(u, "") for u in user_ids], return_counts=True)
    segment_names = [str(s) for s in seg_values[np.argsort(-seg_counts)] if s][:500]
    newest = float(events.times_s.max()) if len(events) else 0.0

    xs, ys, groups = [], [], []
    rng = np.random.default_rng(params.seed)

    def cut_of(w: int) -> float:
        return newest - (params.label_days + (w - 1) * params.window_step_days) * DAY_S + 1.0

    def labelled(cut: float) -> np.ndarray:
        return (
            (events.times_s >= cut)
            & (events.times_s < cut + params.label_days * DAY_S)
            & (events.types == EventType.PURCHASE)
        )

    windows = training_windows(params, _eligible(events, cut_of(1), labelled(cut_of(1))))
    info_windows = windows
    for w in range(1, windows + 1):
        cut = cut_of(w)
        label_sel = labelled(cut)
        if not label_sel.any():
            continue
        report(0.05 + 0.3 * (w - 1) / windows, f"ranker window {w}: sources")
        src = build_sources(
            events, user_index, table, segments, segment_names, params, cut, fit_als=params.als_source
        )
        label_rows = np.fromiter((user_index[u] for u in events.user_ids[label_sel]), np.int64)
        label_cols = np.fromiter((item_index[i] for i in events.item_ids[label_sel]), np.int64)
        had_history = np.diff(src.conf.indptr) > 0
        train_rows = np.unique(label_rows[had_history[label_rows]])
        per_window = max(1, params.max_train_users // windows)
        if len(train_rows) > per_window:
            train_rows = np.sort(rng.choice(train_rows, per_window, replace=False))
        labels = set((label_rows * len(table.item_ids) + label_cols).tolist())
        for batch in _batches(train_rows, len(table.item_ids)):
            cand = candidates(src, batch, params)
            y = np.fromiter(
                ((r * len(table.item_ids) + c) in labels for r, c in zip(cand.rows, cand.items, strict=True)),
                np.float32,
                len(cand.rows),
            )
            # A group without a bought candidate teaches lambdarank nothing.
            _, starts, sizes = np.unique(cand.rows, return_index=True, return_counts=True)
            for s, size in zip(starts, sizes, strict=True):
                if y[s : s + size].any():
                    xs.append(cand.features[s : s + size])
                    ys.append(y[s : s + size])
                    groups.append(size)
    ranker_text = ""
    importance: dict[str, float] = {}
    info: dict[str, Any] = {
        "train_groups": len(groups),
        "train_rows": int(sum(groups)),
        "windows": info_windows,
    }
    boosters: list[Any] = []
    if len(groups) >= 20:
        report(0.4, f"fitting the ranker on {len(groups)} shoppers")
        x = np.concatenate(xs)
        y = np.concatenate(ys)
        if not params.user_features:
            x[:, : len(USER_FEATURES)] = np.nan  # an all-missing column is never split on
        bags = int(np.clip(1_000_000 // max(len(x), 1), 1, params.bags))
        info["bags"] = bags
        for bag in range(bags):
            model = _ranker(replace(params, seed=params.seed + bag))
            if params.objective == "lambdarank":
                model.fit(x, y, group=groups)
            else:
                model.fit(x, y)
            boosters.append(model.booster_)
        ranker_text = "\n\n#BAG#\n\n".join(b.model_to_string() for b in boosters)
        gains = np.sum([b.feature_importance(importance_type="gain") for b in boosters], axis=0)
        total = float(gains.sum()) or 1.0
        importance = {f: round(float(g) / total, 4) for f, g in zip(FEATURES, gains, strict=True)}
    report(0.6, "serving sources on every event")
    reuse = (
        params.als_source
        and serving_factors is not None
        and serving_factors[0].shape[0] == len(user_ids)
        and serving_factors[1].shape[0] == len(table.item_ids)
    )
    src = build_sources(
        events,
        user_index,
        table,
        segments,
        segment_names,
        params,
        newest + 1.0,
        fit_als=params.als_source and not reuse,
    )
    if reuse and serving_factors is not None:
        src.user_factors, src.item_factors = serving_factors
    rank_rows = (
        np.arange(len(user_ids))
        if users is None
        else np.array(sorted(user_index[u] for u in users if u in user_index), dtype=np.int64)
    )
    keep = params.keep
    ranked_items = np.full((len(user_ids), keep), -1, np.int32)
    ranked_scores = np.zeros((len(user_ids), keep), np.float32)
    ranked_sources = np.full((len(user_ids), keep), -1, np.int8)
    batches = _batches(rank_rows, len(table.item_ids))
    for k, batch in enumerate(batches):
        cand = candidates(src, batch, params)
        if boosters:
            scores = np.mean(
                [b.predict(cand.features, num_threads=params.num_threads or 1) for b in boosters], axis=0
            ).astype(np.float32)
        else:  # too little history for a ranker: the sources' own order (repurchase, then the rest)
            scores = -cand.source.astype(np.float32) + 0.001 * np.nan_to_num(
                cand.features[:, FEATURES.index("item_buyers_7d")]
            )
        _store_ranked(cand, scores, keep, ranked_items, ranked_scores, ranked_sources)
        if k % 20 == 0:
            report(
                0.6 + 0.35 * k / max(len(batches), 1), f"ranking shoppers {k * len(batch)}/{len(rank_rows)}"
            )
    return TwoStageModel(
        user_ids, table.item_ids, ranked_items, ranked_scores, ranked_sources, ranker_text, importance, info
    )


def _store_ranked(
    cand: Candidates,
    scores: np.ndarray,
    keep: int,
    ranked_items: np.ndarray,
    ranked_scores: np.ndarray,
    ranked_sources: np.ndarray,
) -> None:
    order = np.lexsort((-scores, cand.rows))
    rows, items, s, srcs = cand.rows[order], cand.items[order], scores[order], cand.source[order]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    ok = rank < keep
    ranked_items[rows[ok], rank[ok]] = items[ok]
    ranked_scores[rows[ok], rank[ok]] = s[ok]
    ranked_sources[rows[ok], rank[ok]] = srcs[ok]


def params_dict(params: RankerParams) -> dict[str, Any]:
    return asdict(params)
