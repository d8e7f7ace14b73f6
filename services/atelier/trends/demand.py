"""Per-SKU demand forecasts for replenishment, intermittent demand included (no gRPC).

Each series is put in a Syntetos-Boylan class from its history: ADI (mean interval between
non-zero periods) and CV² (squared coefficient of variation of the non-zero sizes), cut-offs
1.32 and 0.49. Smooth and erratic demand get the trend models (MSTL with two seasons of history,
non-seasonal ETS otherwise, intervals from the model); intermittent demand gets Croston-SBA and
lumpy demand ADIDA (statsforecast). Those give a mean rate only, so their intervals come from the
per-period demand distribution: a period has demand with probability p = rate / mean size, and
then a size drawn from the sizes observed; the interval is that mixture's quantiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from atelier.runtime.context import Cancellation
from atelier.trends.forecasting import FitPool, Prediction, predict

ADI_CUTOFF = 1.32
CV2_CUTOFF = 0.49
INTERMITTENT_MODELS = {"intermittent": "croston_sba", "lumpy": "adida"}


@dataclass(frozen=True)
class DemandProfile:
    demand_class: str  # smooth | erratic | intermittent | lumpy | zero
    adi_periods: float
    cv2: float


def profile(history: np.ndarray) -> DemandProfile:
    nonzero = np.flatnonzero(history > 0)
    if len(nonzero) == 0:
        return DemandProfile("zero", float("inf"), 0.0)
    adi = len(history) / len(nonzero)
    sizes = history[nonzero]
    cv2 = float((sizes.std() / sizes.mean()) ** 2) if sizes.mean() > 0 else 0.0
    if adi < ADI_CUTOFF:
        return DemandProfile("smooth" if cv2 < CV2_CUTOFF else "erratic", adi, cv2)
    return DemandProfile("intermittent" if cv2 < CV2_CUTOFF else "lumpy", adi, cv2)


def mixture_interval(rate: np.ndarray, sizes: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantiles of 'demand with probability p, else 0' where p = rate / mean(sizes)."""
    p = np.clip(rate / sizes.mean(), 0.0, 1.0)
    tail = (1 - level / 100) / 2

    def quantile(q: float) -> np.ndarray:
        # P(D <= 0) = 1 - p; above that, the sizes' own quantiles.
        inner = np.where(p > 0, (q - (1 - p)) / np.where(p > 0, p, 1), 0.0)
        return np.where(q <= 1 - p, 0.0, np.quantile(sizes, np.clip(inner, 0.0, 1.0)))

    return quantile(tail), quantile(1 - tail)


def forecast_demand(
    histories: Sequence[np.ndarray],
    season: int,
    horizon: int,
    levels: Sequence[int],
    pool: FitPool,
    cancellation: Cancellation | None = None,
    covariates: Sequence[dict[str, np.ndarray]] | None = None,
    planned: Sequence[dict[str, np.ndarray]] | None = None,
) -> list[tuple[Prediction, DemandProfile]]:
    """covariates / planned: as forecasting.predict's. Smooth and erratic series get MSTL, or the
    ensemble (whose global model uses the inputs) when any of them has inputs; the intermittent
    methods take none."""
    profiles = [profile(y) for y in histories]
    out: list[tuple[Prediction, DemandProfile] | None] = [None] * len(histories)
    smooth = [i for i, p in enumerate(profiles) if p.demand_class in ("smooth", "erratic")]
    if smooth:
        past = [covariates[i] if covariates is not None else {} for i in smooth]
        plans = [planned[i] if planned is not None else {} for i in smooth]
        with_inputs = any(past) or any(plans)
        predictions = predict(
            [histories[i] for i in smooth],
            [None] * len(smooth),
            season,
            horizon,
            levels,
            "ensemble" if with_inputs else "mstl",
            [True] * len(smooth),
            pool,
            cancellation=cancellation,
            covariates=past if with_inputs else None,
            planned=plans if with_inputs else None,
        )
        for i, prediction in zip(smooth, predictions, strict=True):
            prediction.model = f"{profiles[i].demand_class}:{prediction.model}"
            out[i] = (prediction, profiles[i])
    for demand_class, model in INTERMITTENT_MODELS.items():
        members = [i for i, p in enumerate(profiles) if p.demand_class == demand_class]
        if not members:
            continue
        future = pool.submit(model, season, False, [histories[i] for i in members], horizon, [])
        try:
            fitted = pool.result(future, cancellation)
        except BaseException:
            pool.abandon([future])
            raise
        for i, (mean, _, fallback) in zip(members, fitted, strict=True):
            sizes = histories[i][histories[i] > 0]
            mean = np.maximum(mean, 0.0)
            intervals = {lv: mixture_interval(mean, sizes, lv) for lv in levels}
            notes = [
                f"ADI {profiles[i].adi_periods:.2f} periods, CV² {profiles[i].cv2:.2f}: {demand_class} demand; "
                "intervals from the per-period demand distribution (occurrence x observed sizes)"
            ] + ([fallback] if fallback else [])
            out[i] = (Prediction(mean, intervals, f"{demand_class}:{model}", notes), profiles[i])
    for i, p in enumerate(profiles):
        if p.demand_class == "zero":
            zeros = np.zeros(horizon)
            out[i] = (
                Prediction(
                    zeros,
                    {lv: (zeros, zeros) for lv in levels},
                    "zero:none",
                    ["no demand in the whole history: forecast 0"],
                ),
                p,
            )
    return [o for o in out if o is not None]
