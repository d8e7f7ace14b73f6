"""Rolling-origin backtest: how good each model is on a tenant's own series (no gRPC)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from atelier.runtime.context import Cancellation
from atelier.trends.evaluation import mase, smape, trend_class, yoy_change
from atelier.trends.forecasting import FitPool, ProgressFn, predict


@dataclass(frozen=True)
class Score:
    model: str
    mase: float
    class_accuracy: float
    smape: float
    series_count: int


def backtest(
    histories: Sequence[np.ndarray],
    externals: Sequence[np.ndarray | None],
    season: int,
    year_periods: int,
    horizon: int,
    windows: int,
    models: Sequence[str],
    non_negative: Sequence[bool],
    pool: FitPool,
    progress: ProgressFn | None = None,
    cancellation: Cancellation | None = None,
    covariates: Sequence[dict[str, np.ndarray]] | None = None,
) -> list[Score]:
    """Window k (1..windows) forecasts y[n-k*h : n-(k-1)*h] from y[:n-k*h] with every model.

    covariates: per series, its inputs over the whole history (prices, promotions, holidays):
    each window's forecast gets those before its cut as history and those of the window itself
    as the plan (what was planned is known ahead; the backtest scores the model given it).
    """
    scores = []
    total = len(models) * windows
    for m_index, model in enumerate(models):
        mases, hits, smapes = [], [], []
        for k in range(1, windows + 1):
            cuts = [len(y) - k * horizon for y in histories]
            train = [y[:c] for y, c in zip(histories, cuts, strict=True)]
            actual = [y[c : c + horizon] for y, c in zip(histories, cuts, strict=True)]
            ext = [None if x is None else x[:c] for x, c in zip(externals, cuts, strict=True)]
            inputs = {}
            if covariates is not None and any(covariates):
                inputs = {
                    "covariates": [
                        {n: v[:c] for n, v in cov.items()} for cov, c in zip(covariates, cuts, strict=True)
                    ],
                    "planned": [
                        {n: v[c : c + horizon] for n, v in cov.items()}
                        for cov, c in zip(covariates, cuts, strict=True)
                    ],
                }
            # Scores use the mean only: no interval calibration (it would fit every model twice).
            predictions = predict(
                train,
                ext,
                season,
                horizon,
                [80],
                model,
                non_negative,
                pool,
                calibrate=False,
                cancellation=cancellation,
                **inputs,  # type: ignore[arg-type]
            )
            for y_train, y_true, p in zip(train, actual, predictions, strict=True):
                value = mase(y_train, y_true, p.mean, season)
                if np.isfinite(value):
                    mases.append(value)
                smapes.append(smape(y_true, p.mean))
                last = y_train[-year_periods:]
                hits.append(trend_class(yoy_change(last, p.mean)) == trend_class(yoy_change(last, y_true)))
            if progress:
                progress((m_index * windows + k) / total, f"{model}: window {k} of {windows}")
        scores.append(
            Score(
                model,
                float(np.mean(mases)) if mases else float("nan"),
                float(np.mean(hits)),
                float(np.mean(smapes)),
                len(histories),
            )
        )
    return scores
