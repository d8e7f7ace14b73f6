"""Hierarchies of series (SKU -> style -> category -> total; store -> region -> total) and
forecasts reconciled so that every level adds up.

The bottom series carry labels; a hierarchy is a list of label keys from the top level down
(e.g. ``["department", "category"]``). Every node above the bottom is the sum of the bottom
series under it: the total, each department, each (department, category) pair, then the
bottom series themselves. Base forecasts are made for every node independently (so each level
gets the model its own history supports), then reconciled with Nixtla's
``hierarchicalforecast`` (Apache-2.0; the field's implementation of MinT and friends, rather
than our own linear algebra):

- ``mint_shrink`` (default): MinT with the shrunk covariance of in-sample one-step errors
  (Wickramasuriya, Athanasopoulos & Hyndman 2019). We do not keep fitted values of every base
  model, so the in-sample errors are those of a seasonal naive model (a naive one for histories
  under two seasons): the covariance between nodes is what MinT needs from them, and the
  naive errors carry it.
- ``wls_struct`` (weights by the number of bottom series under a node), ``ols``, ``bottom_up``.

Intervals: reconciled under a normal approximation, each base interval's half-width giving
that node's standard deviation (hierarchicalforecast's ``Normality``).

The summing matrix is sparse (scipy CSR: one non-zero per bottom series and level, so 10,000
series under 3 levels take ~0.5 MB where the dense matrix took 0.8 GB). Up to MAX_MINT_NODES
nodes reconciliation is as before (dense classes, Normality intervals). Above it, ``bottom_up``,
``ols`` and ``wls_struct`` use hierarchicalforecast's sparse classes (``BottomUpSparse``,
``MinTraceSparse``) for the means and the bottom-up normal formula for the intervals (see
_reconcile_sparse); ``mint_shrink`` needs the dense nodes x nodes covariance, so it is refused
there and the default becomes ``wls_struct``.

Pure domain: arrays in, arrays out.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.stats import norm

from atelier.runtime.errors import InvalidArgumentError

METHODS = ("mint_shrink", "wls_struct", "ols", "bottom_up")
DEFAULT_METHOD = "mint_shrink"
# mint_shrink's dense (nodes x nodes) matrices: at 3,000 nodes each is 72 MB, and it holds a few.
MAX_MINT_NODES = 3000
LARGE_DEFAULT_METHOD = "wls_struct"
TOTAL = "total"
BOTTOM_LEVEL = "series"


@dataclass(frozen=True)
class Hierarchy:
    nodes: list[
        str
    ]  # every node's name: "total", "department=A", "department=A/category=B", ..., bottom names
    node_levels: list[str]  # the level of each node: "total", each label key, then "series"
    summing: sparse.csr_matrix  # S: (nodes, bottom) of 0/1
    bottom: list[str]  # the bottom series' names, in S's column order

    @property
    def bottom_index(self) -> np.ndarray:
        return np.arange(len(self.nodes) - len(self.bottom), len(self.nodes))

    def aggregate(self, bottom_values: np.ndarray) -> np.ndarray:
        """Every node's values from the bottom series' (bottom, T) -> (nodes, T)."""
        return np.asarray(self.summing @ bottom_values)


def build(bottom: Sequence[str], labels: Sequence[Mapping[str, str]], levels: Sequence[str]) -> Hierarchy:
    """The hierarchy of `bottom` series by the label keys `levels`, top level first.

    Every bottom series must carry every level's label. A bottom series that is alone under its
    parent is still its own node (the summing matrix has the duplicate row; reconciliation keeps
    the two equal).
    """
    if not levels:
        raise InvalidArgumentError.for_field("hierarchy", "name at least one label key, top level first")
    if len(set(levels)) != len(levels):
        raise InvalidArgumentError.for_field("hierarchy", "a label key appears twice")
    missing = [
        (name, key) for name, lab in zip(bottom, labels, strict=True) for key in levels if not lab.get(key)
    ]
    if missing:
        shown = ", ".join(f"{n!r} has no {k!r}" for n, k in missing[:5])
        raise InvalidArgumentError.for_field(
            "hierarchy", f"every series needs each level's label: {shown} (label them, or filter them out)"
        )
    n = len(bottom)
    # (row, column) of every 1: the total's row, each level's nodes, then the identity.
    row_parts, col_parts = [np.zeros(n, dtype=np.int64)], [np.arange(n)]
    nodes, node_levels = [TOTAL], [TOTAL]
    for depth, key in enumerate(levels):
        paths = ["/".join(f"{k}={lab[k]}" for k in levels[: depth + 1]) for lab in labels]
        unique, index = np.unique(np.array(paths, dtype=object), return_inverse=True)
        row_parts.append(len(nodes) + index.astype(np.int64))
        col_parts.append(np.arange(n))
        nodes.extend(str(u) for u in unique)
        node_levels.extend([key] * len(unique))
    row_parts.append(len(nodes) + np.arange(n))
    col_parts.append(np.arange(n))
    nodes.extend(bottom)
    node_levels.extend([BOTTOM_LEVEL] * n)
    rows, cols = np.concatenate(row_parts), np.concatenate(col_parts)
    summing = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(nodes), n))
    return Hierarchy(nodes, node_levels, summing, list(bottom))


def default_method(hierarchy: Hierarchy) -> str:
    """mint_shrink, or wls_struct for a hierarchy too large for its dense covariance."""
    return DEFAULT_METHOD if len(hierarchy.nodes) <= MAX_MINT_NODES else LARGE_DEFAULT_METHOD


def naive_insample(values: np.ndarray, season: int) -> np.ndarray:
    """One-step 'fitted values' of a seasonal naive model (naive under two seasons); NaN where undefined."""
    lag = season if values.shape[1] >= 2 * season else 1
    fitted = np.full(values.shape, np.nan)
    fitted[:, lag:] = values[:, :-lag]
    return fitted


def reconcile(
    hierarchy: Hierarchy,
    mean: np.ndarray,
    history: np.ndarray,
    season: int,
    method: str = DEFAULT_METHOD,
    intervals: Mapping[int, tuple[np.ndarray, np.ndarray]] | None = None,
    non_negative: bool = False,
) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Coherent forecasts of every node from base forecasts of every node.

    mean: (nodes, h) base means; history: (nodes, T) the nodes' own histories (aggregated);
    intervals: level -> (lower, upper), each (nodes, h), the base intervals.
    Returns the reconciled means and intervals (each level's bounds).
    """
    from hierarchicalforecast.methods import BottomUp, MinTrace

    if method not in METHODS:
        raise InvalidArgumentError.for_field(
            "reconciliation", f"unknown method {method!r}; choose from {', '.join(METHODS)}"
        )
    if non_negative and method == "bottom_up":
        # Sums of non-negative bottom forecasts stay coherent; clipping the sums afterwards would not.
        mean = np.maximum(mean, 0.0)
    large = len(hierarchy.nodes) > MAX_MINT_NODES
    if method == "mint_shrink" and large:
        raise InvalidArgumentError.for_field(
            "reconciliation",
            f"mint_shrink needs dense {len(hierarchy.nodes)} x {len(hierarchy.nodes)} matrices; at most "
            f"{MAX_MINT_NODES} nodes (use wls_struct, the default for larger hierarchies)",
        )
    levels = sorted(intervals or {})
    sigmah = None
    if levels and intervals is not None:
        # The widest level's half-width as a normal standard deviation for every node and step.
        widest = levels[-1]
        lo, hi = intervals[widest]
        sigmah = np.maximum((hi - lo) / (2 * norm.ppf(0.5 + widest / 200)), 1e-9)
    if large:
        return _reconcile_sparse(hierarchy, mean, method, levels, sigmah, non_negative)
    # Small hierarchies: the dense classes, intervals by hierarchicalforecast's Normality.
    reconciler = BottomUp() if method == "bottom_up" else MinTrace(method=method, nonnegative=non_negative)
    kwargs: dict[str, object] = {}
    # BottomUp takes S's last columns' rows as the bottom: build() puts the bottom series last.
    if method == "mint_shrink":
        fitted = naive_insample(history, season)
        usable = np.isfinite(fitted).all(axis=0)
        kwargs["y_insample"] = history[:, usable]
        kwargs["y_hat_insample"] = fitted[:, usable]
    if sigmah is not None:
        kwargs.update(sigmah=sigmah, level=levels, intervals_method="normality")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # qpsolvers' sparse-conversion notices (non-negative MinT)
        result = reconciler.fit_predict(S=hierarchy.summing.toarray(), y_hat=mean, **kwargs)
    # The reconciled standard deviation of every node and step (normal approximation).
    sigma = np.asarray(result["sigmah"], dtype=float) if levels else None
    return _normal_intervals(np.asarray(result["mean"], dtype=float), sigma, levels, non_negative)


def _normal_intervals(
    mean: np.ndarray, sigma: np.ndarray | None, levels: list[int], non_negative: bool
) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Normal intervals mean +- z sigma for each level (none without sigma), clipped at 0 with the mean
    when the series cannot go negative."""
    intervals: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if sigma is not None:
        for level in levels:
            z = float(norm.ppf(0.5 + level / 200))
            intervals[level] = (mean - z * sigma, mean + z * sigma)
    if non_negative:
        mean = np.maximum(mean, 0.0)
        intervals = {lv: (np.maximum(lo, 0.0), np.maximum(hi, 0.0)) for lv, (lo, hi) in intervals.items()}
    return mean, intervals


def _reconcile_sparse(
    hierarchy: Hierarchy,
    mean: np.ndarray,
    method: str,
    levels: list[int],
    sigmah: np.ndarray | None,
    non_negative: bool,
) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Large hierarchies: the means by hierarchicalforecast's sparse classes; the intervals by the
    bottom-up normal formula (a node's variance is the sum of its bottom series' base variances,
    errors independent), centred on the reconciled means. hierarchicalforecast's Normality builds
    a dense nodes x nodes covariance per step (6 GB and more at 10,000 series), so it is not used
    here; for bottom_up the formula is what Normality gives, for ols/wls_struct it is wider."""
    from hierarchicalforecast.methods import BottomUpSparse, MinTraceSparse

    reconciler = (
        BottomUpSparse() if method == "bottom_up" else MinTraceSparse(method=method, nonnegative=non_negative)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = reconciler.fit_predict(S=hierarchy.summing, y_hat=mean)
    sigma = None if sigmah is None else np.sqrt(hierarchy.aggregate(sigmah[hierarchy.bottom_index] ** 2))
    return _normal_intervals(np.asarray(result["mean"], dtype=float), sigma, levels, non_negative)


def incoherence(hierarchy: Hierarchy, values: np.ndarray) -> float:
    """Largest absolute gap between a node and the sum of the bottom series under it."""
    bottom = values[hierarchy.bottom_index]
    return float(np.max(np.abs(hierarchy.aggregate(bottom) - values))) if values.size else 0.0


# Periods whose mean units weigh a bottom series in its parents' planned inputs.
RECENT_PERIODS = 13


def aggregate_inputs(
    hierarchy: Hierarchy,
    units: np.ndarray,
    past: Sequence[Mapping[str, np.ndarray]],
    planned: Sequence[Mapping[str, np.ndarray]],
    horizon: int,
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """Every node's exogenous inputs (price, discount, promotion) from its bottom series'.

    units: (bottom, T) the bottom series on the common grid; past: per bottom series its inputs
    over that grid (T values; a missing name: none); planned: per bottom series its planned
    inputs over the horizon (empty or missing names: the defaults, see global_model.with_future).
    A node's promotion and discount are its children's weighted by units: in the history by each
    period's units (the share of the node's units sold on promotion), over the horizon by each
    child's mean units of its last RECENT_PERIODS periods. Its price is a price index: each
    child's price over the child's own mean price, weighted the same way (SKUs of different prices
    cannot be averaged, their changes can). The bottom series keep their own inputs. Returns the
    nodes' past (T values) and planned (horizon values) inputs, in hierarchy.nodes order.
    """
    from atelier.trends import global_model

    n_bottom, length = units.shape
    names = sorted({name for p in past for name in p} | {name for p in planned for name in p})
    node_past: list[dict[str, np.ndarray]] = [{} for _ in hierarchy.nodes]
    node_plan: list[dict[str, np.ndarray]] = [{} for _ in hierarchy.nodes]
    if not names:
        return node_past, node_plan
    recent = np.maximum(units[:, -RECENT_PERIODS:].mean(axis=1), 1e-9)
    for name in names:
        full = np.zeros((n_bottom, length + horizon))
        known = np.zeros((n_bottom, length + horizon), dtype=bool)
        for j in range(n_bottom):
            # Each child's inputs over history and horizon, the defaults filled in.
            series = global_model.with_future(dict(past[j]), dict(planned[j]), length, horizon).get(name)
            if series is None:
                if name == "price":
                    continue  # no price known: left out of its parents' price index
                series = np.zeros(length + horizon)  # never on promotion or discount: zeros
            values = np.asarray(series, float)
            if name == "price":
                reference = np.nanmean(values[:length]) if np.isfinite(values[:length]).any() else np.nan
                values = values / reference if np.isfinite(reference) and reference > 0 else values * np.nan
            known[j] = np.isfinite(values)
            full[j] = np.where(known[j], values, 0.0)
        weights = np.concatenate([units, np.repeat(recent[:, None], horizon, axis=1)], axis=1) * known
        numerator = hierarchy.aggregate(weights * full)
        denominator = hierarchy.aggregate(weights)
        with np.errstate(invalid="ignore", divide="ignore"):
            nodes = np.where(denominator > 0, numerator / denominator, np.nan if name == "price" else 0.0)
        if name == "price":
            # A node without a priced sale in a period keeps its neighbours' index.
            nodes = np.vstack([_filled(row) for row in nodes])
        for k in range(len(hierarchy.nodes)):
            node_past[k][name] = nodes[k, :length]
            node_plan[k][name] = nodes[k, length:]
    for k, j in enumerate(hierarchy.bottom_index):
        node_past[j], node_plan[j] = dict(past[k]), dict(planned[k])
    return node_past, node_plan


def _filled(row: np.ndarray) -> np.ndarray:
    ok = np.isfinite(row)
    if not ok.any():
        return np.ones_like(row)
    return np.interp(np.arange(len(row)), np.flatnonzero(ok), row[ok])
