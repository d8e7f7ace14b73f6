"""Serving: per-tenant in-memory state, vectorised scoring, fold-in and atomic model swaps.

A :class:`TenantState` holds everything one request needs as numpy arrays in catalogue order:
the ranker's lists per shopper (precomputed at training, ranking.py), item factors, boolean masks
per category/size/colour, prices, attribute features, popularity by segment and co-occurrence. A request is a matrix-vector product, a few mask ANDs and an
argpartition. States are immutable apart from fold-in overrides (guarded by a lock); a new model
or a changed catalogue builds a new state beside the old one and replaces the reference, so
in-flight requests finish on the state they started with and none fails during a swap.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from prometheus_client import Counter, Histogram

from atelier.recommendations import reasons
from atelier.recommendations.ranking import SOURCES
from atelier.recommendations.store import CatalogItem, Event, EventType, RecsStore
from atelier.recommendations.training import (
    Artefact,
    EventWeights,
    artefact_from_bytes,
    build_interactions,
    quantity_factor,
)
from atelier.runtime.artefacts import ArtefactNotFound, ArtefactStore, DatabaseArtefacts, get_or_legacy_file

log = logging.getLogger(__name__)

FOLD_IN = Counter(
    "atelier_recommendations_fold_in_users_total", "Users whose factors were recomputed from new events"
)
COLD_START = Counter(
    "atelier_recommendations_cold_start_total", "Recommend answers given without user factors"
)
SWAPS = Counter("atelier_recommendations_state_swaps_total", "Serving states published", ["reason"])
BUILD_SECONDS = Histogram(
    "atelier_recommendations_state_build_seconds",
    "Time to build a serving state",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
)

# Complete-the-look: which categories go with which. Categories outside these rules are
# compatible with anything but their own category.
COMPATIBLE: dict[str, set[str]] = {
    "tops": {"bottoms", "shoes", "outerwear", "accessories", "bags"},
    "bottoms": {"tops", "shoes", "outerwear", "accessories", "bags"},
    "dresses": {"shoes", "outerwear", "accessories", "bags"},
    "outerwear": {"tops", "bottoms", "dresses", "shoes", "accessories", "bags"},
    "shoes": {"tops", "bottoms", "dresses", "outerwear", "accessories", "bags"},
    "accessories": {"tops", "bottoms", "dresses", "outerwear", "shoes", "bags"},
    "bags": {"tops", "bottoms", "dresses", "outerwear", "shoes", "accessories"},
}

NEW_ITEM_NEIGHBOURS = 10
# Combined filter masks kept per catalogue (1,024 x 20,000 items = 20 MB at most).
MAX_CACHED_FILTERS = 1024
# SimilarItems: behaviour (shoppers who liked both, support >= 2, shrunk) weighs
# buyers / (buyers + SIMILAR_SHRINKAGE) of the score, attributes the rest: an item few people
# bought is compared by what it is, a best seller by who buys it.
SIMILAR_SHRINKAGE = 10.0
# An item counts as "rebought" (kept by EXCLUDE_UNLESS_REBOUGHT) from this shrunk repurchase rate.
REBUY_THRESHOLD = 0.10

# What Recommend does with items a shopper bought (PurchasedPolicy in the contract).
INCLUDE, EXCLUDE, EXCLUDE_UNLESS_REBOUGHT = "include", "exclude", "exclude_unless_rebought"
PURCHASED_POLICIES = (INCLUDE, EXCLUDE, EXCLUDE_UNLESS_REBOUGHT)
DEFAULT_PURCHASED_POLICY = EXCLUDE_UNLESS_REBOUGHT


def compatible(given: str, candidate: str) -> bool:
    if given in COMPATIBLE and candidate in COMPATIBLE:
        return candidate in COMPATIBLE[given]
    return given != candidate


@dataclass(frozen=True)
class Filter:
    categories: tuple[str, ...] = ()
    size: str = ""
    min_price: float | None = None
    max_price: float | None = None
    colours: tuple[str, ...] = ()
    # One of PURCHASED_POLICIES, or "" for the tenant's setting (default EXCLUDE_UNLESS_REBOUGHT).
    purchased: str = ""


@dataclass(frozen=True)
class Scored:
    item_id: str
    score: float
    reason: str
    category: str
    source: str = ""


@dataclass
class RecommendResult:
    items: list[Scored]
    model_version: int
    cold_start: bool


class CatalogIndex:
    """The catalogue as arrays: masks per value, prices, L2-normalised one-hot attributes."""

    def __init__(self, items: Sequence[CatalogItem]) -> None:
        self.items = list(items)
        n = len(self.items)
        self.item_ids = np.array([it.item_id for it in self.items], dtype=object)
        self.index = {it.item_id: i for i, it in enumerate(self.items)}
        self.categories = np.array([it.category for it in self.items], dtype=object)
        self.category_masks = self._masks(lambda it: [it.category])
        self.size_masks = self._masks(lambda it: it.sizes_in_stock)
        self.colour_masks = self._masks(lambda it: sorted(it.all_colours))
        self.prices = np.array(
            [np.nan if it.price is None else it.price for it in self.items], dtype=np.float64
        )
        self.none = np.zeros(n, bool)
        self.features = self._features()
        # Filters already combined into one mask (most requests repeat a few size/category
        # choices): a request copies one array instead of ANDing several catalogue-long ones.
        self._filter_masks: dict[tuple[object, ...], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _masks(self, values_of: object) -> dict[str, np.ndarray]:
        masks: dict[str, np.ndarray] = {}
        for i, it in enumerate(self.items):
            for value in values_of(it):  # type: ignore[operator]
                masks.setdefault(value, np.zeros(len(self.items), bool))[i] = True
        return masks

    def _features(self) -> sp.csr_matrix:
        vocab: dict[str, int] = {}
        rows, cols = [], []
        priced = self.prices[~np.isnan(self.prices)]
        edges = np.quantile(priced, [0.2, 0.4, 0.6, 0.8]) if len(priced) else np.zeros(0)
        for i, it in enumerate(self.items):
            tokens = [f"category={it.category}"] + [f"colour={c}" for c in sorted(it.all_colours)]
            tokens += [
                f"{k}={v}"
                for k, v in (("style", it.style), ("silhouette", it.silhouette), ("material", it.material))
                if v
            ]
            tokens += [f"{k}={v}" for k, v in sorted(it.attributes.items())]
            if it.price is not None:
                tokens.append(f"price_band={int(np.searchsorted(edges, it.price))}")
            for token in tokens:
                rows.append(i)
                cols.append(vocab.setdefault(token, len(vocab)))
        self.feature_names = list(vocab)
        m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(self.items), len(vocab)))
        m.sum_duplicates()
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        return (sp.diags(1.0 / np.maximum(norms, 1e-9)) @ m).tocsr().astype(np.float32)

    def attribute_similarity(self, rows: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Cosine similarity of every item to the (weighted) mean attribute profile of rows."""
        if len(rows) == 0 or self.features.shape[1] == 0:
            return np.zeros(len(self.items), np.float32)
        profile = self.features[rows]
        if weights is not None:
            profile = sp.diags(weights.astype(np.float32)) @ profile
        vector = np.asarray(profile.sum(axis=0)).ravel()
        norm = np.linalg.norm(vector)
        if norm == 0:
            return np.zeros(len(self.items), np.float32)
        return np.asarray(self.features @ (vector / norm), dtype=np.float32).ravel()

    def mask(self, flt: Filter) -> np.ndarray:
        """Items that pass the filter (a fresh array the caller may change)."""
        key = (flt.categories, flt.size, flt.colours, flt.min_price, flt.max_price)
        found = self._filter_masks.get(key)
        if found is None:
            found = self._combined_mask(flt)
            if len(self._filter_masks) >= MAX_CACHED_FILTERS:
                self._filter_masks.clear()  # price bounds can vary without end: start again
            self._filter_masks[key] = found
        return found.copy()

    def _combined_mask(self, flt: Filter) -> np.ndarray:
        mask = np.ones(len(self.items), bool)
        if flt.categories:
            any_cat = self.none.copy()
            for c in flt.categories:
                any_cat |= self.category_masks.get(c, self.none)
            mask &= any_cat
        if flt.size:
            mask &= self.size_masks.get(flt.size, self.none)
        if flt.colours:
            any_colour = self.none.copy()
            for c in flt.colours:
                any_colour |= self.colour_masks.get(c, self.none)
            mask &= any_colour
        if flt.min_price is not None:
            mask &= self.prices >= flt.min_price  # unpriced items (NaN) fail both bounds
        if flt.max_price is not None:
            mask &= self.prices <= flt.max_price
        return mask


def _to_catalog_space(
    m: sp.csr_matrix, perm: np.ndarray, n_items: int, axis_both: bool = False
) -> sp.csr_matrix:
    """Re-index columns (and rows when axis_both) from the artefact's item order to the catalogue's."""
    coo = m.tocoo()
    cols = perm[coo.col]
    keep = cols >= 0
    rows = coo.row[keep]
    if axis_both:
        rows = perm[rows]
        keep2 = rows >= 0
        return sp.csr_matrix(
            (coo.data[keep][keep2], (rows[keep2], cols[keep][keep2])), shape=(n_items, n_items)
        )
    return sp.csr_matrix((coo.data[keep], (rows, cols[keep])), shape=(m.shape[0], n_items))


def _remap_vector(v: np.ndarray, perm: np.ndarray, n_items: int) -> np.ndarray:
    out = np.zeros((n_items, *v.shape[1:]), dtype=v.dtype)
    keep = perm >= 0
    out[perm[keep]] = v[keep]
    return out


class TenantState:
    """One tenant's serving state for one (catalogue, model version) pair."""

    def __init__(
        self,
        catalog: CatalogIndex,
        artefact: Artefact,
        version: int,
        algorithm: str,
        segments: dict[str, str],
        weights: EventWeights,
    ) -> None:
        started = time.monotonic()
        self.catalog = catalog
        self.version = version
        self.algorithm = algorithm
        self.weights = weights.array()
        self.segments = dict(segments)
        self.last_seq = artefact.max_event_seq
        n = len(catalog)
        perm = np.array([catalog.index.get(i, -1) for i in artefact.item_ids], dtype=np.int64)
        self.user_index = {u: k for k, u in enumerate(artefact.user_ids)}
        self.history = _to_catalog_space(artefact.confidence, perm, n)
        self.bought = _to_catalog_space(artefact.bought, perm, n)
        # Canonical rows (sorted, no duplicates): requests slice them without a dict or a union.
        self.history.sum_duplicates()
        self.bought.sum_duplicates()
        self.copurchase = _to_catalog_space(artefact.copurchase, perm, n, axis_both=True).tocsr()
        self.cobuy = (
            _to_catalog_space(artefact.cobuy, perm, n, axis_both=True).tocsr()
            if artefact.cobuy is not None
            else sp.csr_matrix((n, n), dtype=np.float32)
        )
        self.buyers = np.asarray((self.bought > 0).sum(axis=0)).ravel().astype(np.float32)
        self.rebought = (
            _remap_vector(artefact.rebuy_rate, perm, n) >= REBUY_THRESHOLD
            if artefact.rebuy_rate is not None
            else np.zeros(n, bool)
        )
        # Returned items are never "rebought" for this shopper: kept to exclude them.
        self.ranked_index: dict[str, int] = {}
        self.ranked_items = np.zeros((0, 0), np.int32)
        self.ranked_scores = np.zeros((0, 0), np.float32)
        self.ranked_sources = np.zeros((0, 0), np.int8)
        self.ranked_partners: np.ndarray | None = None
        ranker = artefact.ranker
        if ranker is not None and ranker.ranker:
            rperm = np.array([catalog.index.get(i, -1) for i in ranker.item_ids], dtype=np.int64)
            items = ranker.ranked_items
            # Precomputed at training time; remapped once here into catalogue order.
            self.ranked_items = np.where(items >= 0, rperm[np.maximum(items, 0)], -1).astype(np.int32)
            self.ranked_scores = ranker.ranked_scores
            self.ranked_sources = ranker.ranked_sources
            self.ranked_index = {u: k for k, u in enumerate(ranker.user_ids)}
            if ranker.partners is not None:
                # In the artefact's item space: into catalogue order; an item no longer in the
                # catalogue is left to the request (another liked item may explain it).
                p = ranker.partners
                mapped = np.where(p >= 0, perm[np.maximum(p, 0)], p)
                self.ranked_partners = np.where((p >= 0) & (mapped < 0), reasons.UNKNOWN, mapped).astype(
                    np.int32
                )
        self.popularity = self._unit(_remap_vector(artefact.popularity, perm, n))
        self.segment_index = {s: k for k, s in enumerate(artefact.segment_names)}
        self.segment_popularity = (
            np.stack([self._unit(_remap_vector(row, perm, n)) for row in artefact.segment_popularity])
            if len(artefact.segment_names)
            else np.zeros((0, n), np.float32)
        )
        self.has_model = artefact.item_factors.size > 0
        self.user_factors = artefact.user_factors
        self.fold_model = None
        if self.has_model:
            trained = _remap_vector(artefact.item_factors, perm, n)
            self.item_factors = self._fill_new_items(trained, perm)
            norms = np.linalg.norm(self.item_factors, axis=1, keepdims=True)
            self.item_unit = (self.item_factors / np.maximum(norms, 1e-9)).astype(np.float32)
            if algorithm == "als":
                from implicit.cpu.als import AlternatingLeastSquares

                params = artefact.params
                # implicit's own fold-in (recalculate_user) against the trained items only: a filled
                # new item has no observed confidence, so it must not shape YtY.
                with warnings.catch_warnings():
                    # implicit warns about a multi-threaded OpenBLAS; fold-in solves on one thread with
                    # small matrices, so the warning does not apply here.
                    warnings.filterwarnings(
                        "ignore", message="OpenBLAS is configured", category=RuntimeWarning
                    )
                    self.fold_model = AlternatingLeastSquares(
                        factors=trained.shape[1],
                        regularization=float(params.get("regularization", 0.05)),  # type: ignore[arg-type]
                        num_threads=1,
                    )
                self.fold_model.item_factors = np.ascontiguousarray(trained)
        else:
            self.item_factors = np.zeros((n, 0), np.float32)
            self.item_unit = self.item_factors
        # Fold-in state since the model was trained (guarded by Engine's per-tenant lock).
        self.overrides: dict[str, np.ndarray] = {}
        self.extra: dict[str, dict[int, float]] = {}
        self.extra_bought: dict[str, set[int]] = {}
        BUILD_SECONDS.observe(time.monotonic() - started)

    @staticmethod
    def _unit(v: np.ndarray) -> np.ndarray:
        top = float(v.max()) if v.size else 0.0
        return (v / top).astype(np.float32) if top > 0 else v.astype(np.float32)

    def _fill_new_items(self, trained: np.ndarray, perm: np.ndarray) -> np.ndarray:
        """Items newer than the model get the mean factors of their attribute neighbours."""
        n = len(self.catalog)
        has = np.zeros(n, bool)
        has[perm[perm >= 0]] = True
        new = np.flatnonzero(~has)
        if len(new) == 0 or not has.any():
            return trained
        filled = trained.copy()
        feats = self.catalog.features
        old = np.flatnonzero(has)
        sims = (feats[new] @ feats[old].T).toarray()
        k = min(NEW_ITEM_NEIGHBOURS, len(old))
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        w = np.take_along_axis(sims, top, axis=1)
        total = w.sum(axis=1, keepdims=True)
        filled[new] = np.einsum("nk,nkf->nf", w / np.maximum(total, 1e-9), trained[old[top]]) * (total > 0)
        return filled

    # -- fold-in ------------------------------------------------------------------------------

    def user_row(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The user's (item indices, confidences): trained history plus events since."""
        k = self.user_index.get(user_id)
        extra = self.extra.get(user_id)
        if not extra:
            # No events since training (most requests): the trained row as it is, no dict.
            if k is None:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            start, end = self.history.indptr[k], self.history.indptr[k + 1]
            return (
                self.history.indices[start:end].astype(np.int64),
                self.history.data[start:end].astype(np.float32),
            )
        conf: dict[int, float] = {}
        if k is not None:
            start, end = self.history.indptr[k], self.history.indptr[k + 1]
            conf.update(
                zip(
                    self.history.indices[start:end].tolist(),
                    self.history.data[start:end].tolist(),
                    strict=True,
                )
            )
        for i, w in dict(extra).items():  # a copy: fold-in may add meanwhile
            conf[i] = conf.get(i, 0.0) + w
        if not conf:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        idx = np.fromiter(conf.keys(), np.int64, len(conf))
        return idx, np.fromiter(conf.values(), np.float32, len(conf))

    def bought_by(self, user_id: str) -> np.ndarray:
        k = self.user_index.get(user_id)
        rows = (
            self.bought.indices[self.bought.indptr[k] : self.bought.indptr[k + 1]].astype(np.int64)
            if k is not None
            else np.zeros(0, np.int64)
        )
        extra = self.extra_bought.get(user_id)
        if not extra:
            return rows  # CSR column indices: sorted and unique already
        extra = set(extra)
        return np.union1d(rows, np.fromiter(extra, np.int64, len(extra)))

    def returned(
        self, user_id: str, items: np.ndarray, row: tuple[np.ndarray, np.ndarray] | None = None
    ) -> np.ndarray:
        """Per item of items: whether the shopper's returns outweigh the rest (net confidence < 0).

        row: the shopper's user_row when the caller has it already."""
        idx, w = row if row is not None else self.user_row(user_id)
        negative = idx[w < 0]
        return np.isin(items, negative) if len(negative) else np.zeros(len(items), bool)

    def fold(self, events: Sequence[Event]) -> int:
        """Add events to users' histories and recompute those users' factors. Returns users folded."""
        touched: set[str] = set()
        for e in events:
            i = self.catalog.index.get(e.item_id)
            if i is None:
                continue  # unknown item: stored, used once the item is in the catalogue
            row = self.extra.setdefault(e.user_id, {})
            # Newest events: no recency decay.
            row[i] = row.get(i, 0.0) + float(self.weights[int(e.type)]) * float(
                quantity_factor(np.array([e.quantity]))[0]
            )
            if e.type in (EventType.PURCHASE, EventType.RETURN):
                self.extra_bought.setdefault(e.user_id, set()).add(i)
            touched.add(e.user_id)
        if not self.has_model or not touched:
            return 0
        users = sorted(touched)
        rows = [self.user_row(u) for u in users]
        if self.fold_model is not None:
            indptr = np.cumsum([0] + [len(r[0]) for r in rows])
            matrix = sp.csr_matrix(
                (np.concatenate([r[1] for r in rows]), np.concatenate([r[0] for r in rows]), indptr),
                shape=(len(users), len(self.catalog)),
                dtype=np.float32,
            )
            factors = self.fold_model.recalculate_user(np.arange(len(users)), matrix)
        else:
            # implicit's BPR has no recalculate_user: a user is the confidence-weighted mean of the
            # items they liked (the bias column, last, stays 1 as in BPR's user factors).
            factors = np.zeros((len(users), self.item_factors.shape[1]), np.float32)
            for k, (idx, w) in enumerate(rows):
                pos = w > 0
                if pos.any():
                    factors[k] = (w[pos, None] * self.item_factors[idx[pos]]).sum(0) / w[pos].sum()
                    factors[k, -1] = 1.0
        for u, f in zip(users, factors, strict=True):
            self.overrides[u] = np.asarray(f, np.float32)
        FOLD_IN.inc(len(users))
        return len(users)

    def user_vector(self, user_id: str) -> np.ndarray | None:
        if not self.has_model:
            return None
        vec = self.overrides.get(user_id)
        if vec is not None:
            return vec
        k = self.user_index.get(user_id)
        return None if k is None else self.user_factors[k]


def _top(scores: np.ndarray, mask: np.ndarray, count: int) -> np.ndarray:
    """Indices of the count best masked scores, best first."""
    valid = np.flatnonzero(mask)
    if len(valid) == 0:
        return valid
    s = scores[valid]
    if len(valid) > count:
        part = np.argpartition(-s, count - 1)[:count]
        valid, s = valid[part], s[part]
    return valid[np.argsort(-s, kind="stable")]


def _diversify(candidates: np.ndarray, scores: np.ndarray, categories: np.ndarray, n: int) -> np.ndarray:
    """Re-rank candidates (sorted by score, best first) so each further item of a category costs
    a share of the score spread; see _diversify_order."""
    if len(candidates) <= 1:
        return candidates[:n]
    return candidates[_diversify_order(scores[candidates], categories[candidates], n)]


def _diversify_order(s: np.ndarray, cats: np.ndarray, n: int) -> np.ndarray:
    """Positions of the n items to show, given their scores s (best first) and categories.

    Equivalent to the greedy "best score minus penalty x items already chosen from its category":
    within a category items are taken in score order, so the k-th best of a category always
    carries k penalties, and sorting by that adjusted score gives the greedy order.
    """
    spread = float(s[0] - s[-1])
    penalty = 0.35 * (spread if spread > 0 else 1.0)
    rank_in_category = np.zeros(len(s), np.int64)
    seen: dict[str, int] = {}
    for j, c in enumerate(cats.tolist()):  # sorted by score already
        rank_in_category[j] = seen.get(c, 0)
        seen[c] = rank_in_category[j] + 1
    return np.argsort(-(s - penalty * rank_in_category), kind="stable")[:n]


def _merge(items: Sequence[CatalogItem], changed: dict[str, CatalogItem]) -> list[CatalogItem]:
    """The catalogue after upserts; an upsert without a photo keeps the colours of the earlier photo."""
    out = []
    for item in items:
        new = changed.get(item.item_id)
        if new is None:
            out.append(item)
            continue
        out.append(new if new.had_image else replace(new, image_colours=item.image_colours))
    known = {item.item_id for item in items}
    out.extend(new for item_id, new in sorted(changed.items()) if item_id not in known)
    return out


# How often a serving replica looks for a model version another replica activated (hot swap).
MODEL_CHECK_S = 2.0


class Engine:
    """Serving states of every tenant, built from the store and model artefacts."""

    def __init__(
        self, store: RecsStore, weights: EventWeights | None = None, artefacts: ArtefactStore | None = None
    ) -> None:
        self.store = store
        self.artefacts = artefacts if artefacts is not None else DatabaseArtefacts(store.store)
        # Per tenant: the active version last seen in the store, and when to look again.
        self._seen_version: dict[str, int] = {}
        self._check_at: dict[str, float] = {}
        self.weights = weights or EventWeights()
        self._states: dict[str, TenantState] = {}
        self._fold_locks: dict[str, threading.Lock] = {}
        self._build_locks: dict[str, threading.Lock] = {}
        self._artefacts: dict[str, Artefact] = {}
        self._guard = threading.Lock()
        # Upserted items not yet in the serving state, per tenant.
        self._pending: dict[str, dict[str, CatalogItem]] = {}
        self._dirty: set[str] = set()
        self._policies: dict[str, str] = {}

    def _locks(self, tenant: str) -> tuple[threading.Lock, threading.Lock]:
        with self._guard:
            return (
                self._build_locks.setdefault(tenant, threading.Lock()),
                self._fold_locks.setdefault(tenant, threading.Lock()),
            )

    def load_all(self) -> None:
        for tenant in self.store.tenants():
            self.rebuild(tenant, "load")

    def state(self, tenant: str) -> TenantState:
        state = self._states.get(tenant)
        if state is None or tenant in self._dirty:
            # The first query after a catalogue change rebuilds (once, however many upserts came).
            state = self.rebuild(tenant, "catalogue" if state is not None else "first use")
        else:
            now = time.monotonic()
            if now >= self._check_at.get(tenant, 0.0):
                self._check_at[tenant] = now + MODEL_CHECK_S
                state = self._catch_up(tenant, state)
        return state

    def _catch_up(self, tenant: str, state: TenantState) -> TenantState:
        """What other replicas (or processes) committed since: a newly activated version is swapped
        in, events recorded through them are folded in (each replica reads the shared store)."""
        active = self.store.active_version(tenant)
        if (int(active["version"]) if active else 0) != self._seen_version.get(tenant, 0):
            return self.rebuild(tenant, "new model")
        _, fold_lock = self._locks(tenant)
        with fold_lock:
            self._replay(tenant, self._states.get(tenant, state))
        return self._states.get(tenant, state)

    def items_changed(self, tenant: str, items: Sequence[CatalogItem]) -> None:
        """Committed catalogue upserts: the next query sees them (bulk loads rebuild once, not per batch)."""
        _, fold_lock = self._locks(tenant)
        with fold_lock:
            pending = self._pending.setdefault(tenant, {})
            for item in items:
                pending[item.item_id] = item
            self._dirty.add(tenant)

    def _artefact(self, path: str) -> Artefact:
        artefact = self._artefacts.get(path)
        if artefact is None:
            # path: the artefact's key (a file path for versions trained before the artefact store).
            artefact = artefact_from_bytes(get_or_legacy_file(self.artefacts, path, Path(path)), path)
            self._artefacts = {path: artefact}  # keep only the newest: old versions are in the store
        return artefact

    def rebuild(self, tenant: str, reason: str, version: dict[str, object] | None = None) -> TenantState:
        """Build a state from the store (active or given version) and publish it atomically."""
        build_lock, fold_lock = self._locks(tenant)
        with build_lock:
            previous = self._states.get(tenant)
            if reason in ("catalogue", "first use") and previous is not None and tenant not in self._dirty:
                return previous  # another request rebuilt it while this one waited
            with fold_lock:
                pending = self._pending.pop(tenant, {})
                self._dirty.discard(tenant)
            if previous is None:
                catalog = CatalogIndex(self.store.load_items(tenant))
            elif pending:
                catalog = CatalogIndex(_merge(previous.catalog.items, pending))
            else:
                catalog = previous.catalog  # a model swap: the catalogue arrays are reused as they are
            segments = self.store.segments(tenant)
            row = version or self.store.active_version(tenant)
            self._seen_version[tenant] = int(str(row["version"])) if row is not None else 0
            artefact: Artefact | None = None
            if row is not None:
                try:
                    artefact = self._artefact(str(row["path"]))
                except ArtefactNotFound:
                    log.error(
                        "model artefact %s of %s is missing; serving popularity only", row["path"], tenant
                    )
            if row is not None and artefact is not None:
                number, algorithm = int(str(row["version"])), str(row["algorithm"])
            else:
                artefact = self._popularity_only(tenant, catalog, segments)
                number, algorithm = 0, ""
            state = TenantState(catalog, artefact, number, algorithm, segments, self.weights)
            self._replay(tenant, state)
            with fold_lock:
                self._replay(tenant, state)  # events committed while this state was built
                self._states[tenant] = state
        SWAPS.labels(reason).inc()
        log.info("serving %s: %d items, model version %d (%s)", tenant, len(catalog), number, reason)
        return state

    def _popularity_only(self, tenant: str, catalog: CatalogIndex, segments: dict[str, str]) -> Artefact:
        max_seq = self.store.max_event_seq(tenant)
        inter = build_interactions(
            self.store.load_events(tenant, upto_seq=max_seq),
            catalog.item_ids,
            segments,
            self.weights,
            half_life_days=60.0,
        )
        empty = np.zeros((0, 0), np.float32)
        return Artefact(
            "",
            inter.user_ids,
            inter.item_ids,
            empty,
            empty,
            inter.popularity,
            inter.segment_names,
            inter.segment_popularity,
            inter.confidence,
            inter.bought,
            inter.copurchase,
            inter.newest_time_s,
            max_seq,
            {},
            rebuy_rate=inter.rebuy_rate,
        )

    def _replay(self, tenant: str, state: TenantState) -> int:
        arrays = self.store.load_events(tenant, after_seq=state.last_seq)
        if len(arrays) == 0:
            return 0
        from datetime import UTC, datetime

        assert arrays.quantities is not None
        events = [
            Event(f"seq:{s}", u, i, EventType(int(t)), datetime.fromtimestamp(ts, UTC), quantity=float(q))
            for s, u, i, t, ts, q in zip(
                arrays.seq,
                arrays.user_ids,
                arrays.item_ids,
                arrays.types,
                arrays.times_s,
                arrays.quantities,
                strict=True,
            )
        ]
        folded = state.fold(events)
        state.last_seq = int(arrays.seq[-1])
        return folded

    def record(self, tenant: str, events: Sequence[Event]) -> int:
        """Fold committed events into the live state; returns how many users were refolded."""
        if tenant not in self._states:
            return 0  # the first request builds the state from the store, these events included
        _, fold_lock = self._locks(tenant)
        with fold_lock:
            state = self._states[tenant]
            for e in events:
                if e.segment:
                    state.segments[e.user_id] = e.segment
            # Replaying by seq (not the request's events) folds each stored event exactly once, also
            # when a concurrent rebuild already saw some of them.
            return self._replay(tenant, state)

    # -- queries -------------------------------------------------------------------------------

    def purchased_policy(self, tenant: str) -> str:
        policy = self._policies.get(tenant)
        if policy is None:
            policy = self.store.purchased_policy(tenant) or DEFAULT_PURCHASED_POLICY
            self._policies[tenant] = policy
        return policy

    def set_purchased_policy(self, tenant: str, policy: str) -> None:
        self.store.set_purchased_policy(tenant, policy)
        self._policies[tenant] = policy

    def recommend(
        self, tenant: str, user_id: str, n: int, flt: Filter, segment: str = "", diversify: bool = False
    ) -> RecommendResult:
        """Top n: the ranked list precomputed at training, else ALS, else popularity (cold start)."""
        state = self.state(tenant)
        catalog = state.catalog
        mask = catalog.mask(flt)  # a fresh array: changed in place below
        policy = flt.purchased or self.purchased_policy(tenant)
        bought = state.bought_by(user_id)
        hist_idx, hist_w = state.user_row(user_id)
        if policy != INCLUDE and len(bought):
            drop = (
                bought
                if policy == EXCLUDE
                else bought[~state.rebought[bought] | state.returned(user_id, bought, (hist_idx, hist_w))]
            )
            mask[drop] = False
        pool = n * 4 if diversify else n
        # The answer so far, best first: catalogue indices, scores, source names. Whole arrays,
        # not a loop per item: this path runs on every call.
        idx = np.zeros(0, np.int64)
        vals = np.zeros(0, np.float64)
        sources: list[str] = []
        # Each answer item's reason partner where training precomputed it (reasons.UNKNOWN: not).
        partner = np.zeros(0, np.int64)
        row = state.ranked_index.get(user_id)
        if row is not None and user_id not in state.extra:
            # Precomputed by the ranker at training time; events since then send the shopper to
            # the fold-in path below, which sees them.
            items = state.ranked_items[row]
            ok = np.flatnonzero((items >= 0) & mask[np.maximum(items, 0)])[:pool]
            idx = items[ok].astype(np.int64)
            vals = state.ranked_scores[row][ok].astype(np.float64)
            sources = [SOURCES[s] for s in state.ranked_sources[row][ok].tolist()]
            partner = (
                state.ranked_partners[row][ok].astype(np.int64)
                if state.ranked_partners is not None
                else np.full(len(idx), reasons.UNKNOWN, np.int64)
            )
        cold = False
        if len(idx) < pool:
            mask[idx] = False  # the rest of the catalogue
            vector = state.user_vector(user_id)
            content: np.ndarray | None = None
            if vector is not None:
                scores = state.item_factors @ vector
                source = "als"
            else:
                cold = not len(idx)
                if cold:
                    COLD_START.inc()
                seg = segment or state.segments.get(user_id, "")
                k = state.segment_index.get(seg)
                popular = state.segment_popularity[k] if k is not None else state.popularity
                positive = hist_w > 0
                if positive.any():
                    content = catalog.attribute_similarity(hist_idx[positive], hist_w[positive])
                    scores = 0.5 * popular + 0.5 * content
                else:
                    scores = popular.copy()
                source = "segment" if k is not None else "popular"
            top = _top(scores, mask, pool - len(idx))
            if len(top):
                top_scores = scores[top]
                if len(idx):
                    # Below every ranked score: the ranker's list comes first.
                    floor = float(vals.min())
                    spread = float(top_scores.max() - top_scores.min())
                    below = (top_scores[0] - top_scores).astype(np.float64) / spread if spread > 0 else 0.0
                    added = floor - 1.0 - below * np.ones(len(top))
                else:
                    added = top_scores.astype(np.float64)
                added_sources = [source] * len(top)
                if content is not None:
                    for j in np.flatnonzero(content[top] >= popular[top]).tolist():
                        added_sources[j] = "attributes"
                idx = np.concatenate([idx, top.astype(np.int64)])
                vals = np.concatenate([vals, added])
                partner = np.concatenate([partner, np.full(len(top), reasons.UNKNOWN, np.int64)])
                sources += added_sources
        order = (
            _diversify_order(vals, catalog.categories[idx], n)
            if diversify and len(idx) > 1
            else np.arange(min(len(idx), n))
        )
        picked, picked_sources = idx[order], [sources[k] for k in order.tolist()]
        seg_name = segment or state.segments.get(user_id, "")
        texts = self._reasons(
            state, picked.tolist(), picked_sources, hist_idx, hist_w, seg_name, bought, partner[order]
        )
        return RecommendResult(
            [
                Scored(item_id, score, reason, category, src)
                for item_id, score, reason, category, src in zip(
                    catalog.item_ids[picked].tolist(),
                    vals[order].tolist(),
                    texts,
                    catalog.categories[picked].tolist(),
                    picked_sources,
                    strict=True,
                )
            ],
            state.version,
            cold,
        )

    @staticmethod
    def _reasons(
        state: TenantState,
        items: list[int],
        sources: list[str],
        hist_idx: np.ndarray,
        hist_w: np.ndarray,
        segment: str,
        bought_items: np.ndarray,
        precomputed: np.ndarray | None = None,
    ) -> list[str]:
        """Each item's reason, from the source that proposed it and the shopper's own events.
        precomputed: each item's partner where the training job stored it (reasons.UNKNOWN: not)."""
        catalog = state.catalog
        bought = set(bought_items.tolist())
        liked = reasons.liked_items(hist_idx, hist_w)
        touched = set(hist_idx.tolist())
        cols = np.asarray(items, dtype=np.int64)
        # Does the shopper like anything besides the answer item itself (per answer item)?
        has_others = (liked[:, None] != cols[None, :]).any(axis=0).tolist()
        # Per answer item, the liked item that explains it (reasons.NONE: none): precomputed at
        # training for a known shopper's ranked list, else for the whole answer at once here.
        partner = (
            np.asarray(precomputed, dtype=np.int64)
            if precomputed is not None
            else np.full(len(cols), reasons.UNKNOWN, np.int64)
        )
        todo = np.flatnonzero(partner == reasons.UNKNOWN)
        if len(todo):
            partner[todo] = reasons.partners(
                liked,
                cols[todo],
                [sources[k] for k in todo.tolist()],
                state.cobuy,
                state.copurchase,
                state.item_unit if state.has_model else None,
                catalog.features,
            )
        names = catalog.item_ids[np.maximum(partner, 0)].tolist()
        out = []
        for k, (i, src) in enumerate(zip(items, sources, strict=True)):
            if i in touched:
                # What the shopper did with this very item, whatever source proposed it.
                out.append(
                    "you bought it before" if i in bought else "you viewed it or put it in your cart before"
                )
            elif src in ("cobuy", "basket") and has_others[k]:
                if partner[k] >= 0:
                    out.append(
                        f"shoppers who bought {names[k]} also bought it"
                        if src == "cobuy"
                        else f"often in the same basket as {names[k]}"
                    )
                else:
                    out.append("bought by shoppers with your taste")
            elif src == "coview" and has_others[k]:
                out.append("often viewed together with items you looked at")
            elif src == "style" and has_others[k]:
                style = catalog.items[i].style
                same = [o for o in liked[liked != i].tolist() if style and catalog.items[o].style == style]
                out.append(
                    f"the same style as {catalog.item_ids[same[0]]}, another variant"
                    if same
                    else "in a style you buy"
                )
            elif src == "als" and has_others[k]:
                closest = names[k] if state.has_model else catalog.item_ids[liked[liked != i][0]]
                out.append(f"shoppers who like {closest} like it too")
            elif src == "attributes" and has_others[k]:
                out.append(f"similar to {names[k]}")
            elif src == "segment" and segment:
                out.append(f"popular in your segment {segment}")
            elif src == "category":
                out.append(f"popular in {catalog.categories[i]}, a category you buy")
            else:
                out.append("popular with shoppers now")
        return out

    def similar_items(self, tenant: str, item_id: str, n: int, flt: Filter) -> list[Scored]:
        """Items like this one: shoppers' behaviour where there is enough of it, attributes otherwise.

        behaviour = the shopper co-occurrence similarity (pairs liked by >= 2 shoppers, cosine
        shrunk by support; training.shopper_similarity), scaled to the best neighbour, plus a
        little of the latent-factor cosine shrunk by the candidate's own buyer count (a one-buyer
        item's factors are noise). The share of behaviour grows with the query item's buyers.
        """
        state = self.state(tenant)
        catalog = state.catalog
        i = catalog.index[item_id]
        attr = catalog.attribute_similarity(np.array([i]))
        co = state.cobuy[i].toarray().ravel()
        co_unit = co / co.max() if co.max() > 0 else co
        if state.has_model and np.any(state.item_unit[i]):
            latent = np.clip(state.item_unit @ state.item_unit[i], 0, None)
            latent = latent * state.buyers / (state.buyers + SIMILAR_SHRINKAGE)
        else:
            latent = np.zeros_like(attr)
        behaviour = 0.8 * co_unit + 0.2 * latent
        alpha = float(state.buyers[i] / (state.buyers[i] + SIMILAR_SHRINKAGE))
        scores = alpha * behaviour + (1 - alpha) * attr
        mask = catalog.mask(flt)
        mask[i] = False
        top = _top(scores, mask, n)
        out = []
        for j in top:
            if alpha * 0.8 * co_unit[j] >= (1 - alpha) * attr[j] and co[j] > 0:
                reason, source = f"bought by the same shoppers as {item_id}", "cobuy"
            elif alpha * behaviour[j] > (1 - alpha) * attr[j]:
                reason, source = f"liked by shoppers with the same taste as buyers of {item_id}", "taste"
            else:
                shared = self._shared_attributes(catalog, i, int(j))
                reason = f"shares {', '.join(shared)} with {item_id}" if shared else f"similar to {item_id}"
                source = "attributes"
            out.append(Scored(catalog.item_ids[j], float(scores[j]), reason, catalog.categories[j], source))
        return out

    @staticmethod
    def _shared_attributes(catalog: CatalogIndex, a: int, b: int) -> list[str]:
        fa = set(catalog.features[a].indices.tolist())
        shared = [catalog.feature_names[k] for k in catalog.features[b].indices if k in fa]
        return [s.replace("=", " ") for s in shared if not s.startswith("price_band")][:3]

    def complete_the_look(self, tenant: str, item_ids: Sequence[str], n: int, flt: Filter) -> list[Scored]:
        state = self.state(tenant)
        catalog = state.catalog
        given = np.array([catalog.index[i] for i in item_ids], dtype=np.int64)
        given_cats = {catalog.categories[g] for g in given}
        allowed = catalog.none.copy()
        for category, cmask in catalog.category_masks.items():
            if all(compatible(g, category) for g in given_cats):
                allowed |= cmask
        mask = catalog.mask(flt) & allowed
        mask[given] = False
        co = np.asarray(state.copurchase[given].sum(axis=0)).ravel() / len(given)
        co_unit = co / co.max() if co.max() > 0 else co
        # Little basket data for an item: fall back on taste (factors) and style (attributes).
        if state.has_model:
            centre = state.item_unit[given].mean(axis=0)
            taste = np.clip(state.item_unit @ centre, 0, None)
        else:
            taste = np.zeros(len(catalog), np.float32)
        style = catalog.attribute_similarity(given)
        scores = 0.6 * co_unit + 0.2 * taste + 0.1 * style + 0.1 * state.popularity
        top = _diversify(_top(scores, mask, n * 4), scores, catalog.categories, n)
        out = []
        for j in top:
            if co[j] > 0:
                partner = given[int(np.argmax(state.copurchase[given, j].toarray().ravel()))]
                reason, source = f"bought together with {catalog.item_ids[partner]}", "basket"
            else:
                reason, source = f"goes with your {' and '.join(sorted(given_cats))}", "attributes"
            out.append(Scored(catalog.item_ids[j], float(scores[j]), reason, catalog.categories[j], source))
        return out
