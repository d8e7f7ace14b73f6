"""Held-out accuracy of the body model on ANSUR II (5-fold CV per sex), beside a plain OLS.

Used by bench/body.py and tests/body. The conditional Gaussian with a fixed known set is linear
in the known log-values, so a whole fold is predicted with one matrix product.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from atelier.body.statmodel import (
    ELLIPSES,
    MEASUREMENTS,
    VARIABLES,
    design_matrix,
    ellipse_perimeter_cm,
    fit_sex,
)

TARGETS = ("chest_girth", "waist_girth", "hip_girth", "inseam", "sleeve_length", "neck_girth")
KNOWN_A = ("height", "weight_kg", "log_weight_sq", "log_height_x_log_weight")
PHOTO_VARIABLES = ("chest_width", "chest_depth", "waist_width", "waist_depth", "hip_width", "hip_depth")
KNOWN_B = (*KNOWN_A, *PHOTO_VARIABLES, *(f"ellipse_{g}" for g in ELLIPSES))


@dataclass(frozen=True)
class CvResult:
    sex: str
    target: str
    model_mae_cm: float
    ols_mae_cm: float


def _ols_features(columns: Mapping[str, np.ndarray], with_photo: bool, girth: str) -> np.ndarray:
    """The anchors' plain least squares: height, weight (and the girth's ellipse perimeter)."""
    cols = [columns["height"], columns["weight_kg"]]
    if with_photo and girth in ELLIPSES:
        w, d = ELLIPSES[girth]
        cols.append(ellipse_perimeter_cm(columns[w], columns[d]))
    return np.column_stack([np.ones(len(cols[0])), *cols])


def cv_predictions(
    columns: Mapping[str, np.ndarray],
    known: Sequence[str],
    targets: Sequence[str],
    folds: int = 5,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Held-out predictions (cm) and their sd for every row: each fold predicted by a model fitted without it."""
    n = len(columns["height"])
    fold = np.random.default_rng(seed).permutation(n) % folds
    x = design_matrix(columns)
    index = {v: i for i, v in enumerate(VARIABLES)}
    k = [index[v] for v in known]
    pred = {t: np.zeros(n) for t in targets}
    sd = {t: np.zeros(n) for t in targets}
    for f in range(folds):
        train, test = fold != f, fold == f
        model = fit_sex({name: columns[name][train] for name in MEASUREMENTS})
        gain = np.linalg.solve(model.cov[np.ix_(k, k)], model.cov[k, :]).T
        mean = model.mean + (x[test][:, k] - model.mean[k]) @ gain.T
        var = np.diag(model.cov - gain @ model.cov[k, :])
        for t in targets:
            pred[t][test] = np.exp(mean[:, index[t]])
            sd[t][test] = pred[t][test] * np.sqrt(max(var[index[t]], 0.0))
    return pred, sd


def cross_validate(
    columns: Mapping[str, np.ndarray],
    sex: str,
    known: Sequence[str],
    targets: Sequence[str],
    folds: int = 5,
    seed: int = 0,
    with_photo: bool = False,
) -> list[CvResult]:
    """MAE of the model's held-out predictions beside a plain OLS on the same folds."""
    n = len(columns["height"])
    fold = np.random.default_rng(seed).permutation(n) % folds
    pred, _ = cv_predictions(columns, known, targets, folds, seed)
    ols_pred = {t: np.zeros(n) for t in targets}
    for f in range(folds):
        train, test = fold != f, fold == f
        for t in targets:
            feats = _ols_features(columns, with_photo, t)
            beta = np.linalg.lstsq(feats[train], columns[t][train], rcond=None)[0]
            ols_pred[t][test] = feats[test] @ beta
    return [
        CvResult(
            sex, t, float(np.abs(pred[t] - columns[t]).mean()), float(np.abs(ols_pred[t] - columns[t]).mean())
        )
        for t in targets
    ]
