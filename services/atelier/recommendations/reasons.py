"""Which of a shopper's liked items explains each recommended item (its "reason partner").

One function for both places that need it: the training job, which stores the partner of every
item on each known shopper's precomputed ranked list (``ranker_partners`` in the artefact), and
the engine, which computes it per request for what was not precomputed (shoppers with events
since training, fold-in and cold-start items, old artefacts). Per request it was about half of
Recommend's own CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

# How many of the shopper's most liked items are considered as partners.
MAX_LIKED = 50
# Partner codes besides an item index.
NONE = -1  # no liked item explains it
UNKNOWN = -2  # not precomputed: compute at request time


def liked_items(hist_idx: np.ndarray, hist_w: np.ndarray) -> np.ndarray:
    """The shopper's most liked items (positive confidence, strongest first, at most MAX_LIKED)."""
    positive = hist_w > 0
    liked = hist_idx[positive]
    return liked[np.argsort(-hist_w[positive], kind="stable")[:MAX_LIKED]]


def block(m: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """m[rows][:, cols] as a dense array, in plain numpy (scipy's fancy indexing costs ~0.3 ms)."""
    out = np.zeros((len(rows), len(cols)), np.float32)
    if len(rows) == 0 or len(cols) == 0:
        return out
    starts, ends = m.indptr[rows], m.indptr[rows + 1]
    lengths = ends - starts
    flat = np.repeat(starts - np.cumsum(np.r_[0, lengths[:-1]]), lengths) + np.arange(int(lengths.sum()))
    which_row = np.repeat(np.arange(len(rows)), lengths)
    order = np.argsort(cols)
    sorted_cols = cols[order]
    found = np.searchsorted(sorted_cols, m.indices[flat])
    hit = (found < len(cols)) & (sorted_cols[np.minimum(found, len(cols) - 1)] == m.indices[flat])
    out[which_row[hit], order[found[hit]]] = m.data[flat][hit]
    return out


def partners(
    liked: np.ndarray,
    cols: np.ndarray,
    sources: Sequence[str],
    cobuy: sp.csr_matrix,
    copurchase: sp.csr_matrix,
    item_unit: np.ndarray | None,
    features: sp.csr_matrix | None,
) -> np.ndarray:
    """Per item in cols, the liked item (other than itself) that explains it, by its source:
    cobuy/basket: the strongest co-occurrence (NONE when none co-occurs); als: the closest in
    the latent space (item_unit; None: no model); attributes: the closest by attributes
    (features; None: left UNKNOWN for the caller). Other sources need no partner (NONE)."""
    partner = np.full(len(cols), NONE, np.int64)
    if not len(liked) or not len(cols):
        return partner
    source_of = np.asarray(sources, dtype=object)
    # The shopper's liked items other than the item itself, per item (columns).
    other = liked[:, None] != cols[None, :]
    for src, sim in (("cobuy", cobuy), ("basket", copurchase)):
        sel = source_of == src
        if sel.any():
            weights = np.where(other[:, sel], block(sim, liked, cols[sel]), 0.0)
            best = weights.argmax(axis=0)
            found = weights[best, np.arange(len(best))] > 0
            partner[np.flatnonzero(sel)[found]] = liked[best[found]]
    for src in ("als", "attributes"):
        sel = source_of == src
        if not sel.any() or (src == "als" and item_unit is None):
            continue
        if src == "attributes" and features is None:
            partner[sel] = UNKNOWN
            continue
        if src == "als":
            assert item_unit is not None
            sims = item_unit[liked] @ item_unit[cols[sel]].T
        else:
            assert features is not None
            sims = (features[liked] @ features[cols[sel]].T).toarray()
        sims = np.where(other[:, sel], sims, -np.inf)
        partner[np.flatnonzero(sel)] = liked[sims.argmax(axis=0)]
    return partner


def ranked_partners(
    ranked_items: np.ndarray,
    ranked_sources: np.ndarray,
    user_rows: np.ndarray,
    item_map: np.ndarray,
    confidence: sp.csr_matrix,
    cobuy: sp.csr_matrix,
    copurchase: sp.csr_matrix,
    item_unit: np.ndarray | None,
    source_names: Sequence[str],
) -> np.ndarray:
    """Partners for every precomputed ranked list, at training time, in the interactions' item
    space (confidence's columns). ranked_items/ranked_sources: users x keep in the ranker's item
    space (-1 pad); user_rows: each ranked user's row in confidence (-1: none); item_map: ranker
    item -> confidence column (-1: none). Attribute partners depend on the catalogue at serving
    time and are left UNKNOWN, as are items the interactions do not know."""
    out = np.full(ranked_items.shape, NONE, np.int32)
    names = np.asarray(source_names, dtype=object)
    for r in range(ranked_items.shape[0]):
        ok = np.flatnonzero(ranked_items[r] >= 0)
        u = int(user_rows[r])
        if not len(ok) or u < 0:
            continue
        cols = item_map[ranked_items[r, ok]].astype(np.int64)
        start, end = confidence.indptr[u], confidence.indptr[u + 1]
        liked = liked_items(confidence.indices[start:end].astype(np.int64), confidence.data[start:end])
        known = cols >= 0
        found = np.full(len(cols), UNKNOWN, np.int64)
        found[known] = partners(
            liked,
            cols[known],
            names[ranked_sources[r, ok][known]].tolist(),
            cobuy,
            copurchase,
            item_unit,
            None,
        )
        out[r, ok] = found
    return out
