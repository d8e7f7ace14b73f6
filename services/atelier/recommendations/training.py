"""Training: events -> confidence matrix -> implicit ALS/BPR -> a model artefact.

``train(store_url, tenant, params)`` is a plain function with no service state, so it can run in
the service's job thread, in a child process or in a Kubernetes Job against the same database.
It puts one ``.npz`` artefact (factors, id maps, popularity by segment, co-purchase, who bought
what) in the artefact store (atelier.runtime.artefacts: the database or S3, shared by every
replica) and a (not yet active) row in ``recs_model_versions`` whose ``path`` is the artefact's
key; the service activates it.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from atelier.recommendations.store import EventArrays, EventType, RecsStore
from atelier.runtime.artefacts import ArtefactStore, artefacts_from_env, safe_part
from atelier.runtime.storage import Store

if TYPE_CHECKING:
    from atelier.recommendations.ranking import TwoStageModel

log = logging.getLogger(__name__)

DAY_S = 86400.0
MAX_SEGMENTS = 500
MAX_BASKET_ITEMS = 50


@dataclass(frozen=True)
class EventWeights:
    """Confidence an event type adds to a (user, item) pair; a return takes confidence away."""

    view: float = 1.0
    add_to_cart: float = 4.0
    purchase: float = 10.0
    return_: float = -10.0

    def array(self) -> np.ndarray:
        # Indexed by EventType value (0 unused).
        return np.array([0.0, self.view, self.add_to_cart, self.purchase, self.return_], dtype=np.float32)


@dataclass
class TrainParams:
    algorithm: str = "als"  # "als" or "bpr"
    factors: int = 64
    iterations: int = 15
    regularization: float = 0.05
    learning_rate: float = 0.01  # BPR only
    recency_half_life_days: float = 60.0
    weights: EventWeights = field(default_factory=EventWeights)
    # Unused since models are artefacts (kept so callers and stored params keep their shape).
    models_dir: str = ".atelier/recommendations/models"
    num_threads: int = 0  # 0: every core
    random_seed: int = 42
    ranker: bool = True  # also train the two-stage ranker (ranking.py) and precompute ranked lists


@dataclass
class Interactions:
    """Events of one tenant aggregated over the catalogue's items, plus what is learned without a model."""

    user_ids: np.ndarray  # object: row -> user id
    item_ids: np.ndarray  # object: column -> item id
    confidence: sp.csr_matrix  # users x items, float32, decayed and weighted; may hold negatives
    bought: sp.csr_matrix  # users x items, 1 where purchased or returned
    popularity: np.ndarray  # items, float32: decayed positive weight over every user
    segment_names: list[str]
    segment_popularity: np.ndarray  # segments x items, float32
    copurchase: sp.csr_matrix  # items x items, basket co-occurrence (support >= 2, shrunk cosine)
    newest_time_s: float
    rebuy_rate: np.ndarray | None = None  # items, float32: shrunk share of buyers who rebuy


def quantity_factor(quantities: np.ndarray | None) -> np.ndarray | float:
    """How much more a multi-unit event weighs than a single unit: 1 + ln(units).

    Logarithmic, because 24 tea lights bought at once say more than one, but not 24 times more
    about taste (wholesale buyers would otherwise drown everyone else). A return of q units takes
    back exactly what a purchase of q units gave.
    """
    if quantities is None:
        return 1.0
    return (1.0 + np.log(np.maximum(quantities, 1.0))).astype(np.float32)


def build_interactions(
    events: EventArrays,
    item_ids: np.ndarray,
    segments: dict[str, str],
    weights: EventWeights,
    half_life_days: float,
) -> Interactions:
    """Aggregate raw events into the matrices training and serving use (pure numpy/scipy)."""
    item_index = {item: i for i, item in enumerate(item_ids)}
    cols = np.fromiter((item_index.get(i, -1) for i in events.item_ids), dtype=np.int64, count=len(events))
    keep = cols >= 0  # events of items not (yet) in the catalogue wait for the item
    cols = cols[keep]
    users_raw = events.user_ids[keep]
    types = events.types[keep].astype(np.int64)
    times = events.times_s[keep]
    baskets = events.basket_ids[keep]
    user_ids, rows = (
        np.unique(users_raw.astype(str), return_inverse=True)
        if len(users_raw)
        else (np.zeros(0, dtype=str), np.zeros(0, dtype=np.int64))
    )
    user_ids = user_ids.astype(object)
    n_users, n_items = len(user_ids), len(item_ids)
    newest = float(times.max()) if len(times) else 0.0
    decay = np.power(0.5, (newest - times) / (half_life_days * DAY_S)).astype(np.float32)
    w = weights.array()[types] * decay * quantity_factor(events.quantities[keep])
    confidence = sp.csr_matrix((w, (rows, cols)), shape=(n_users, n_items), dtype=np.float32)
    confidence.sum_duplicates()
    confidence.eliminate_zeros()
    is_bought = (types == EventType.PURCHASE) | (types == EventType.RETURN)
    bought = sp.csr_matrix(
        (np.ones(int(is_bought.sum()), np.float32), (rows[is_bought], cols[is_bought])),
        shape=(n_users, n_items),
    )
    bought.sum_duplicates()
    bought.data[:] = 1.0

    positive = np.maximum(w, 0.0)
    popularity = np.bincount(cols, weights=positive, minlength=n_items).astype(np.float32)
    seg_of_user = np.array([segments.get(u, "") for u in user_ids], dtype=object)
    names, counts = (
        np.unique(seg_of_user[seg_of_user != ""].astype(str), return_counts=True)
        if n_users
        else (np.zeros(0, str), np.zeros(0))
    )
    segment_names = [str(s) for s in names[np.argsort(-counts)][:MAX_SEGMENTS]]
    seg_index = {s: k for k, s in enumerate(segment_names)}
    seg_rows = np.array([seg_index.get(s, -1) for s in seg_of_user], dtype=np.int64)
    ev_seg = seg_rows[rows] if n_users else np.zeros(0, np.int64)
    has_seg = ev_seg >= 0
    segment_popularity = sp.csr_matrix(
        (positive[has_seg], (ev_seg[has_seg], cols[has_seg])),
        shape=(len(segment_names), n_items),
        dtype=np.float32,
    ).toarray()

    copurchase = _copurchase(rows, cols, types, times, baskets, n_items)
    rebuy = rebuy_rates(rows, cols, types, times, n_items)
    return Interactions(
        user_ids,
        np.asarray(item_ids, dtype=object),
        confidence,
        bought,
        popularity,
        segment_names,
        segment_popularity,
        copurchase,
        newest,
        rebuy,
    )


COPURCHASE_MIN_SUPPORT = 2  # baskets that must share two items before they count as "bought together"
COPURCHASE_SHRINKAGE = 10.0


def _copurchase(
    rows: np.ndarray,
    cols: np.ndarray,
    types: np.ndarray,
    times: np.ndarray,
    baskets: np.ndarray,
    n_items: int,
) -> sp.csr_matrix:
    """Item-item co-occurrence in baskets (cart or purchase): cosine shrunk by support.

    An event without a basket id belongs to the basket "that user, that day". Pairs seen in
    fewer than COPURCHASE_MIN_SUPPORT baskets are dropped (see ranking.cooccurrence).
    """
    from atelier.recommendations.ranking import basket_incidence, cooccurrence

    sel = (types == EventType.ADD_TO_CART) | (types == EventType.PURCHASE)
    if not sel.any():
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    incidence = basket_incidence(rows[sel], cols[sel], times[sel], baskets[sel], n_items)
    sizes = np.diff(incidence.indptr)
    incidence = incidence[(sizes >= 2) & (sizes <= MAX_BASKET_ITEMS)]
    return cooccurrence(incidence, COPURCHASE_MIN_SUPPORT, COPURCHASE_SHRINKAGE, neighbours=100)


def shopper_similarity(confidence: sp.csr_matrix, bought: sp.csr_matrix) -> sp.csr_matrix:
    """Items liked by the same shoppers (positive confidence), with minimum support and shrinkage."""
    from atelier.recommendations.ranking import cooccurrence

    liked = confidence.copy()
    liked.data = (liked.data > 0).astype(np.float32)
    liked.eliminate_zeros()
    return cooccurrence(liked, COPURCHASE_MIN_SUPPORT, COPURCHASE_SHRINKAGE, neighbours=100)


REBUY_PRIOR_WEIGHT = 5.0


def rebuy_rates(
    rows: np.ndarray, cols: np.ndarray, types: np.ndarray, times: np.ndarray, n_items: int
) -> np.ndarray:
    """Per item: share of its buyers who bought it on two or more days, shrunk toward the tenant's rate."""
    buy = types == EventType.PURCHASE
    if not buy.any():
        return np.zeros(n_items, np.float32)
    days = np.unique(np.stack([rows[buy], cols[buy], (times[buy] // DAY_S).astype(np.int64)], axis=1), axis=0)
    pairs, per_pair = np.unique(days[:, :2], axis=0, return_counts=True)
    buyers = np.bincount(pairs[:, 1], minlength=n_items).astype(np.float64)
    rebuyers = np.bincount(pairs[:, 1], weights=(per_pair >= 2).astype(np.float64), minlength=n_items)
    prior = rebuyers.sum() / max(buyers.sum(), 1.0)
    return ((rebuyers + REBUY_PRIOR_WEIGHT * prior) / (buyers + REBUY_PRIOR_WEIGHT)).astype(np.float32)


def fit_factors(
    confidence: sp.csr_matrix, params: TrainParams, on_iteration: Callable[[int, float], None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Factorise with implicit (CPU); returns (user_factors, item_factors) as float32 arrays."""
    import implicit.cpu.als  # noqa: F401  (load implicit's BLAS before limiting every BLAS library)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit parallelises itself; BLAS threads on top only contend
        return _fit(confidence, params, on_iteration)


def _fit(
    confidence: sp.csr_matrix, params: TrainParams, on_iteration: Callable[[int, float], None] | None
) -> tuple[np.ndarray, np.ndarray]:
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    def callback(iteration: int, elapsed_s: float, *_rest: object) -> None:
        if on_iteration is not None:
            on_iteration(iteration, elapsed_s)

    if params.algorithm == "bpr":
        # BPR learns from positives only: a pair whose returns outweigh its other events is dropped.
        positive = confidence.copy()
        positive.data[positive.data < 0] = 0
        positive.eliminate_zeros()
        model = BayesianPersonalizedRanking(
            factors=params.factors,
            learning_rate=params.learning_rate,
            regularization=params.regularization,
            iterations=params.iterations,
            num_threads=params.num_threads,
            random_state=params.random_seed,
        )
        model.fit(positive, show_progress=False, callback=callback)
    else:
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            iterations=params.iterations,
            num_threads=params.num_threads,
            random_state=params.random_seed,
            calculate_training_loss=False,
        )
        model.fit(confidence, show_progress=False, callback=callback)
    return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


@dataclass
class Artefact:
    path: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    popularity: np.ndarray
    segment_names: list[str]
    segment_popularity: np.ndarray
    confidence: sp.csr_matrix
    bought: sp.csr_matrix
    copurchase: sp.csr_matrix
    newest_time_s: float
    max_event_seq: int
    params: dict[str, object]
    cobuy: sp.csr_matrix | None = None  # items x items, liked by the same shoppers (support >= 2)
    rebuy_rate: np.ndarray | None = None
    ranker: TwoStageModel | None = None


def artefact_arrays(
    inter: Interactions,
    user_factors: np.ndarray | None,
    item_factors: np.ndarray | None,
    params: TrainParams,
    max_event_seq: int,
    cobuy: sp.csr_matrix | None = None,
    ranker: TwoStageModel | None = None,
) -> dict[str, np.ndarray]:
    """A model version as a dict of plain arrays (no pickle): the one serialisation of a model.

    Whatever stores model versions (a file today, the runtime's artefact store later) stores
    this dict; ``artefact_from_arrays`` reads it back.
    """

    def csr(prefix: str, m: sp.csr_matrix) -> dict[str, Any]:
        return {
            f"{prefix}_data": m.data,
            f"{prefix}_indices": m.indices,
            f"{prefix}_indptr": m.indptr,
            f"{prefix}_shape": np.array(m.shape),
        }

    n_items = len(inter.item_ids)
    if cobuy is None:
        cobuy = sp.csr_matrix((n_items, n_items), dtype=np.float32)
    if ranker is not None and ranker.ranker and ranker.partners is None:
        ranker = replace(ranker, partners=_ranked_partners(inter, item_factors, cobuy, ranker))
    return {
        "user_ids": inter.user_ids.astype(str),
        "item_ids": inter.item_ids.astype(str),
        "user_factors": user_factors if user_factors is not None else np.zeros((0, 0), np.float32),
        "item_factors": item_factors if item_factors is not None else np.zeros((0, 0), np.float32),
        "popularity": inter.popularity,
        "segment_names": np.array(inter.segment_names, dtype=str),
        "segment_popularity": inter.segment_popularity,
        "newest_time_s": np.array(inter.newest_time_s),
        "max_event_seq": np.array(max_event_seq),
        "params": np.array(json.dumps(asdict(params))),
        "rebuy_rate": inter.rebuy_rate if inter.rebuy_rate is not None else np.zeros(n_items, np.float32),
        **csr("confidence", inter.confidence),
        **csr("bought", inter.bought),
        **csr("copurchase", inter.copurchase),
        **csr("cobuy", cobuy),
        **(ranker.to_arrays() if ranker is not None else {}),
    }


def _canonical(m: sp.spmatrix) -> sp.csr_matrix:
    """A CSR copy with sorted, summed indices: each row in the order the engine's rows have."""
    out = sp.csr_matrix(m, copy=True)
    out.sum_duplicates()
    return out


def _ranked_partners(
    inter: Interactions, item_factors: np.ndarray | None, cobuy: sp.csr_matrix, ranker: TwoStageModel
) -> np.ndarray:
    """Each ranked item's reason partner, computed once here instead of on every request."""
    from atelier.recommendations.ranking import SOURCES
    from atelier.recommendations.reasons import ranked_partners

    user_row = {u: k for k, u in enumerate(inter.user_ids.tolist())}
    item_col = {i: k for k, i in enumerate(inter.item_ids.tolist())}
    item_unit = None
    if item_factors is not None and item_factors.size:
        norms = np.linalg.norm(item_factors, axis=1, keepdims=True)
        item_unit = (item_factors / np.maximum(norms, 1e-9)).astype(np.float32)
    return ranked_partners(
        ranker.ranked_items,
        ranker.ranked_sources,
        np.array([user_row.get(u, -1) for u in ranker.user_ids.tolist()], np.int64),
        np.array([item_col.get(i, -1) for i in ranker.item_ids.tolist()], np.int64),
        _canonical(inter.confidence),
        cobuy.tocsr(),
        inter.copurchase.tocsr(),
        item_unit,
        SOURCES,
    )


def artefact_from_arrays(z: Any, path: str = "") -> Artefact:
    def csr(prefix: str) -> sp.csr_matrix:
        return sp.csr_matrix(
            (z[f"{prefix}_data"], z[f"{prefix}_indices"], z[f"{prefix}_indptr"]),
            shape=tuple(z[f"{prefix}_shape"]),
        )

    from atelier.recommendations.ranking import TwoStageModel

    return Artefact(
        path=path,
        user_ids=z["user_ids"].astype(object),
        item_ids=z["item_ids"].astype(object),
        user_factors=z["user_factors"],
        item_factors=z["item_factors"],
        popularity=z["popularity"],
        segment_names=[str(s) for s in z["segment_names"]],
        segment_popularity=z["segment_popularity"],
        confidence=csr("confidence"),
        bought=csr("bought"),
        copurchase=csr("copurchase"),
        newest_time_s=float(z["newest_time_s"]),
        max_event_seq=int(z["max_event_seq"]),
        params=json.loads(str(z["params"])),
        cobuy=csr("cobuy") if "cobuy_data" in z else None,
        rebuy_rate=z.get("rebuy_rate"),
        ranker=TwoStageModel.from_arrays(z),
    )


def save_artefact(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """The artefact as a local file (export, notebooks); the service keeps it in the artefact store."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    tmp.write_bytes(artefact_bytes(arrays))
    tmp.replace(path)  # a reader never sees half a file


def load_artefact(path: str | Path) -> Artefact:
    """An artefact from a local file (see save_artefact)."""
    return artefact_from_bytes(Path(path).read_bytes(), str(path))


def artefact_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The model artefact as bytes (an uncompressed .npz, no pickle): what the artefact store keeps."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def artefact_from_bytes(data: bytes, ref: str) -> Artefact:
    """The inverse of artefact_bytes; ``ref`` (its key or path) is kept as the artefact's name."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return artefact_from_arrays(z, ref)


ProgressFn = Callable[[float, str], None]


def train(
    store_url: str,
    tenant: str,
    params: TrainParams,
    progress: ProgressFn | None = None,
    artefacts: ArtefactStore | None = None,
) -> str:
    """Train one model version for a tenant from the store; returns the artefact's key.

    Reads the catalogue and every event up to now, fits implicit, puts the artefact in
    ``artefacts`` (default: the store ATELIER_ARTEFACTS_URL names, as in a Kubernetes Job) and
    records a (not yet active) row in recs_model_versions. ``progress(fraction, message)`` may
    raise to cancel.
    """
    report = progress or (lambda _f, _m: None)
    started = time.monotonic()
    store = RecsStore(Store(store_url))
    try:
        artefacts = artefacts if artefacts is not None else artefacts_from_env(store.store, "recommendations")
        report(0.0, "loading events")
        max_seq = store.max_event_seq(tenant)
        items = store.load_items(tenant)
        events = store.load_events(tenant, upto_seq=max_seq)
        segments = store.segments(tenant)
        item_ids = np.array([it.item_id for it in items], dtype=object)
        inter = build_interactions(events, item_ids, segments, params.weights, params.recency_half_life_days)
        if inter.confidence.nnz == 0:
            from atelier.runtime.errors import FailedPreconditionError

            raise FailedPreconditionError(
                f"tenant {tenant!r} has no events on catalogue items to learn from; record events first"
            )
        report(
            0.1, f"fitting {params.algorithm.upper()} on {len(inter.user_ids)} users x {len(item_ids)} items"
        )
        fit_started = time.monotonic()

        als_share = 0.3 if params.ranker else 0.85

        def on_iteration(iteration: int, _elapsed: float) -> None:
            report(
                0.1 + als_share * (iteration + 1) / params.iterations,
                f"iteration {iteration + 1}/{params.iterations}",
            )

        user_factors, item_factors = fit_factors(inter.confidence, params, on_iteration)
        fit_s = time.monotonic() - fit_started
        ranker = None
        if params.ranker:
            from atelier.recommendations.ranking import RankerParams, fit_two_stage

            ranker_started = time.monotonic()
            ranker = fit_two_stage(
                events,
                items,
                segments,
                RankerParams(als=params, weights=params.weights, num_threads=params.num_threads),
                progress=lambda f, m: report(0.4 + 0.55 * f, m),
                serving_factors=(user_factors, item_factors),
            )
            log.info("ranker for %s: %s in %.1f s", tenant, ranker.info, time.monotonic() - ranker_started)
        path = f"recommendations/models/{safe_part(tenant)}/model-{uuid.uuid4().hex[:12]}.npz"
        report(0.96, "saving")
        arrays = artefact_arrays(
            inter,
            user_factors,
            item_factors,
            params,
            max_seq,
            cobuy=shopper_similarity(inter.confidence, inter.bought),
            ranker=ranker,
        )
        artefacts.put(path, artefact_bytes(arrays))
        total_s = time.monotonic() - started
        store.add_version(
            tenant,
            {
                "algorithm": params.algorithm,
                "path": path,
                "users": len(inter.user_ids),
                "items": len(item_ids),
                "interactions": int(inter.confidence.nnz),
                "factors": params.factors,
                "train_seconds": total_s,
                "max_event_seq": max_seq,
                "params": json.dumps(
                    {
                        **asdict(params),
                        "fit_seconds": fit_s,
                        "ranked_users": int((ranker.ranked_items[:, 0] >= 0).sum())
                        if ranker and ranker.ranker
                        else 0,
                        "ranker": ranker.info if ranker else {},
                    }
                ),
            },
        )
        log.info("trained %s for %s in %.1f s (fit %.1f s)", path, tenant, total_s, fit_s)
        return path
    finally:
        store.store.dispose()
