"""Forecasts with prediction intervals: statsforecast models per series, a global LightGBM
model across series, and their ensemble (the default, chosen by backtest; see README.md).

Pure domain: arrays in, arrays out, no gRPC. Fitting of the per-series models runs in a pool of
worker processes (one per core by default); the global model trains in the calling process at
the same time, so both cores of a small machine are busy. A Cancellation (the caller's deadline
or cancel, or the service stopping) stops both: the global model between boosting rounds, the
pool's tasks by killing the worker that runs them (runtime.processes).
"""

from __future__ import annotations

import atexit
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from atelier.runtime.context import Cancellation
from atelier.runtime.errors import InvalidArgumentError
from atelier.runtime.processes import ProcessPool
from atelier.trends import global_model

# "auto" means this. Chosen by backtest on the Heuritech sample's training part (forecasting
# 2018 from 2015-2017, never the 2019 test year): (2 x gbm + mstl) / 3 scored seasonal MASE
# 0.658 there, gbm alone 0.673, mstl 0.752, seasonal naive 0.826.
DEFAULT_MODEL = "ensemble"
MODELS = ("ensemble", "gbm", "mstl", "theta", "ets", "snaive", "naive")
# Fewer periods than this cannot be forecast at all (no model estimates anything from less).
MIN_HISTORY = 8
DEFAULT_LEVELS = (80, 95)
# Weight of the global model in the ensemble (the rest is MSTL), from the same backtest.
ENSEMBLE_GBM_WEIGHT = 2 / 3
# Interval calibration (see _calibrate): at least this many holdout points per request and
# model family, and the widening/narrowing factor kept within these bounds.
CALIBRATION_MIN_POINTS = 30
CALIBRATION_BOUNDS = (0.5, 4.0)
# The factors are one per request and level, so a spread sample of the series estimates them as
# well as all of them: with more series than this, only every k-th chunk is refitted on its
# holdout (the second fit was half the cost of a large forecast).
CALIBRATION_SERIES = 400


@dataclass
class Prediction:
    mean: np.ndarray
    intervals: dict[int, tuple[np.ndarray, np.ndarray]]
    model: str
    notes: list[str] = field(default_factory=list)


ProgressFn = Callable[[float, str], None]


# -- the per-series statsforecast models, fitted in worker processes ---------------------------


def _statsforecast_model(name: str, season: int | tuple[int, ...], seasonal: bool):  # type: ignore[no-untyped-def]
    from statsforecast.models import ADIDA, MSTL, TSB, AutoETS, AutoTheta, CrostonSBA, Naive, SeasonalNaive

    # Intermittent-demand models (no intervals of their own; see demand.py).
    if name == "croston_sba":
        return CrostonSBA(alias="m")
    if name == "adida":
        return ADIDA(alias="m")
    if name == "tsb":
        return TSB(alpha_d=0.1, alpha_p=0.1, alias="m")
    if not seasonal:
        # Too short for a seasonal model: non-seasonal ETS (level and damped or no trend).
        return {"naive": Naive(alias="m"), "snaive": Naive(alias="m")}.get(
            name, AutoETS(model="ZZN", alias="m")
        )
    if name in ("mstl", "ensemble", "gbm"):
        # A tuple is several seasonalities (daily data: the week and the year).
        length = list(season) if isinstance(season, tuple) else season
        return MSTL(season_length=length, trend_forecaster=AutoETS(model="ZZN"), alias="m")
    if isinstance(season, tuple):
        season = season[0]
    if name == "theta":
        return AutoTheta(season_length=season, alias="m")
    if name == "ets":
        # statsforecast's ETS, like R's, keeps seasonal states only up to 24 periods.
        return AutoETS(season_length=season if season <= 24 else 1, alias="m")
    if name == "snaive":
        return SeasonalNaive(season_length=season, alias="m")
    return Naive(alias="m")


class SeriesFit(NamedTuple):
    """One series' statistical fit: mean, intervals per level, and why the fallback model was used
    ('' when the requested model fitted)."""

    mean: np.ndarray
    intervals: dict[int, tuple[np.ndarray, np.ndarray]]
    fallback: str = ""


def _forecast(
    model: Any, histories: list[np.ndarray], horizon: int, levels: Sequence[int]
) -> list[tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]]:
    import pandas as pd
    from statsforecast import StatsForecast

    frame = pd.DataFrame(
        {
            "unique_id": np.concatenate([np.full(len(y), i) for i, y in enumerate(histories)]),
            "ds": np.concatenate([np.arange(len(y)) for y in histories]),
            "y": np.concatenate(histories),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = StatsForecast(models=[model], freq=1, n_jobs=1).forecast(
            df=frame,
            h=horizon,
            **({"level": list(levels)} if levels else {}),  # type: ignore[arg-type]
        )
    out = []
    for i in range(len(histories)):
        rows = result[result["unique_id"] == i]
        intervals = {
            lv: (rows[f"m-lo-{lv}"].to_numpy(float), rows[f"m-hi-{lv}"].to_numpy(float)) for lv in levels
        }
        out.append((rows["m"].to_numpy(float), intervals))
    return out


def fit_chunk(
    name: str,
    season: int | tuple[int, ...],
    seasonal: bool,
    histories: list[np.ndarray],
    horizon: int,
    levels: Sequence[int],
) -> list[SeriesFit]:
    """Fits one model per series of a chunk (runs in a worker process).

    A series whose model fails (raises, or forecasts a non-finite mean) gets the naive model
    instead, with the reason in SeriesFit.fallback: one bad series must not fail the whole chunk,
    and with it every other series of a multi-series forecast (issue 14). When the chunk's fit
    raises, its series are fitted one by one to find the failing ones.
    """
    model = _statsforecast_model(name, season, seasonal)
    failed: dict[int, str] = {}
    fits: list[tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]] | None]
    try:
        fits = list(_forecast(model, histories, horizon, levels))
    except Exception:
        fits = []
        for i, y in enumerate(histories):
            try:
                fits.append(_forecast(_statsforecast_model(name, season, seasonal), [y], horizon, levels)[0])
            except Exception as exc:  # the reason goes to the caller in words, the class only (no paths)
                fits.append(None)
                failed[i] = f"{name} failed on this series ({type(exc).__name__})"
    for i, fit in enumerate(fits):
        if fit is not None and not np.isfinite(fit[0]).all():
            failed[i] = f"{name} forecast non-finite values for this series"
    out = []
    for i, fit in enumerate(fits):
        if i in failed or fit is None:
            from statsforecast.models import Naive

            mean, intervals = _forecast(Naive(alias="m"), [histories[i]], horizon, levels)[0]
            out.append(SeriesFit(mean, intervals, f"{failed[i]}: naive used in its place"))
        else:
            out.append(SeriesFit(*fit))
    return out


def fit_chunk_with_holdout(
    name: str,
    season: int | tuple[int, ...],
    seasonal: bool,
    histories: list[np.ndarray],
    horizon: int,
    levels: Sequence[int],
    holdout: int,
    holdout_min_train: int,
) -> tuple[list[SeriesFit], dict[int, np.ndarray]]:
    """fit_chunk, plus the model's interval errors on a holdout of the last `holdout` periods.

    For each level, the ratios |actual - mean| / half-width of the interval over every holdout
    point of every series long enough to hold one out (train part >= holdout_min_train). With
    calibrated intervals the level's quantile of these ratios is 1.
    """
    fits = fit_chunk(name, season, seasonal, histories, horizon, levels)
    long_enough = [y for y in histories if len(y) - holdout >= holdout_min_train]
    ratios: dict[int, np.ndarray] = {lv: np.empty(0) for lv in levels}
    if long_enough and holdout > 0 and levels:
        held = fit_chunk(name, season, seasonal, [y[:-holdout] for y in long_enough], holdout, levels)
        # The model's own errors: a series that fell back to naive says nothing about them.
        kept = [(y, fit) for y, fit in zip(long_enough, held, strict=True) if not fit.fallback]
        held = [fit for _, fit in kept]
        if not held:
            return fits, ratios
        actual = np.concatenate([y[-holdout:] for y, _ in kept])
        mean = np.concatenate([fit.mean for fit in held])
        for lv in levels:
            half = np.concatenate([(hi - lo) / 2 for fit in held for lo, hi in [fit.intervals[lv]]])
            ok = np.isfinite(half) & (half > 0) & np.isfinite(mean)
            ratios[lv] = np.abs(actual - mean)[ok] / half[ok]
    return fits, ratios


def warm_worker() -> None:
    """Runs in each worker as it starts: imports statsforecast and compiles its models (seconds)."""
    sample = [np.sin(np.arange(120) * 2 * np.pi / 52) + 2.0]
    fit_chunk("mstl", 52, True, sample, 4, [80])


# How often a caller waiting for the pool looks at its cancellation.
CANCEL_POLL_S = 0.05


class FitPool:
    """Worker processes for model fitting, started once and reused (runtime.processes: a task
    whose caller gave up is stopped by killing its worker, which is then replaced)."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._pool: ProcessPool | None = None
        self._lock = threading.Lock()

    def _get(self) -> ProcessPool:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPool(
                    self.workers, name="trends-fit", initializer=warm_worker, start_eagerly=True
                )
            return self._pool

    def warm(self) -> None:
        """Starts the workers and has each import and compile the models (a few seconds)."""
        self._get().wait_ready()

    def submit(self, *args: object) -> Future[Any]:
        return self._get().submit(fit_chunk, *args)

    def submit_with_holdout(self, *args: object) -> Future[Any]:
        return self._get().submit(fit_chunk_with_holdout, *args)

    def result(self, future: Future[Any], cancellation: Cancellation | None) -> Any:
        """future's result; raises CancelledError/DeadlineExceededError as soon as cancellation fires
        (the caller then abandons its futures)."""
        if cancellation is None:
            return future.result()
        while True:
            cancellation.check()
            try:
                return future.result(timeout=CANCEL_POLL_S)
            except TimeoutError:
                continue

    def abandon(self, futures: Iterable[Future[Any]]) -> None:
        if self._pool is not None:
            self._pool.abandon(futures)

    def running(self) -> int:
        return self._pool.running() if self._pool is not None else 0

    def pids(self) -> list[int]:
        return self._pool.pids() if self._pool is not None else []

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


_shared: dict[int, FitPool] = {}
_shared_lock = threading.Lock()


def shared_pool(workers: int) -> FitPool:
    """One pool per process and size: servers started again in one process (tests) reuse it."""
    with _shared_lock:
        if workers not in _shared:
            _shared[workers] = FitPool(workers)
            atexit.register(_shared[workers].close)
        return _shared[workers]


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# -- one request ---------------------------------------------------------------------------------


def check_histories(names: Sequence[str], lengths: Sequence[int], field_path: str = "filter") -> None:
    """INVALID_ARGUMENT naming every series too short to forecast at all."""
    short = [(n, k) for n, k in zip(names, lengths, strict=True) if k < MIN_HISTORY]
    if short:
        shown = ", ".join(f"{n!r} has {k}" for n, k in short[:5])
        raise InvalidArgumentError.for_field(
            field_path,
            f"too short history: {shown} observations; at least {MIN_HISTORY} are needed to "
            "forecast (a non-seasonal model is used from there up to two seasons)",
        )


def predict(
    histories: Sequence[np.ndarray],
    externals: Sequence[np.ndarray | None],
    season: int,
    horizon: int,
    levels: Sequence[int],
    model: str,
    non_negative: Sequence[bool],
    pool: FitPool,
    progress: ProgressFn | None = None,
    chunk_size: int = 200,
    gbm_config: global_model.GlobalModelConfig | None = None,
    calibrate: bool = True,
    cancellation: Cancellation | None = None,
    seasonalities: Sequence[int] = (),
    covariates: Sequence[dict[str, np.ndarray]] | None = None,
    planned: Sequence[dict[str, np.ndarray]] | None = None,
) -> list[Prediction]:
    """Forecasts every history `horizon` steps ahead. Histories must hold >= MIN_HISTORY values.

    calibrate: scale the statistical models' intervals so that they cover what they claim on a
    holdout of each series' own last periods (costs a second fit of the statistical model;
    callers that use the mean only pass False).
    cancellation: when it fires, the work stops (the pool's tasks are killed) and it raises.
    seasonalities: longer seasonal periods MSTL adds to `season` for the chunks whose every
    series holds two of them (daily data: the year beside the week).
    covariates: per series, its exogenous inputs over the history (store.COVARIATES names; empty:
    none); planned: their planned values over the horizon (empty or missing names: the defaults,
    see global_model.with_future). Used by the global model (gbm and the ensemble): in the
    ensemble the statistical member gets the planned inputs' effect (the global model's forecast
    under the plan minus under the defaults) added, as it cannot use them itself. A series under
    two seasons with covariates gets the global model too (without the last-year features).
    """
    if cancellation is not None:
        cancellation.check()
    model = DEFAULT_MODEL if model in ("", "auto") else model
    levels = sorted(set(levels)) or list(DEFAULT_LEVELS)
    count = len(histories)
    seasonal = [len(y) >= 2 * season for y in histories]
    # The statistical model of each series: itself for statsforecast models, MSTL for gbm/ensemble
    # (for the intervals, and as the ensemble's second member).
    stat_name = model if model not in ("gbm", "ensemble") else "mstl"
    jobs: list[tuple[Future[Any], list[int], bool, bool]] = []
    for flag in (True, False):
        members = [i for i in range(count) if seasonal[i] == flag]
        if not members:
            continue
        # The holdout: up to a season; a quarter of the shortest history for non-seasonal models.
        shortest = min(len(histories[i]) for i in members)
        holdout = min(horizon, season) if flag else max(1, min(horizon, season, shortest // 4))
        min_train = 2 * season if flag else MIN_HISTORY
        # Chunks no larger than an even share per worker, so both cores get work.
        size = max(1, min(chunk_size, math.ceil(len(members) / pool.workers)))
        every = max(1, len(members) // CALIBRATION_SERIES)
        for chunk_index, start in enumerate(range(0, len(members), size)):
            part = members[start : start + size]
            shortest_part = min(len(histories[i]) for i in part)
            extra = tuple(s for s in seasonalities if s > season and shortest_part >= 2 * s)
            model_season = (season, *extra) if flag and extra and stat_name == "mstl" else season
            args = (stat_name, model_season, flag, [histories[i] for i in part], horizon, levels)
            held_out = calibrate and chunk_index % every == 0
            future = pool.submit_with_holdout(*args, holdout, min_train) if held_out else pool.submit(*args)
            jobs.append((future, part, flag, held_out))
    try:
        return _finish_predict(
            histories, externals, season, horizon, levels, model, non_negative, pool, progress,
            gbm_config, calibrate, cancellation, count, seasonal, stat_name, jobs, covariates, planned,
        )  # fmt: skip
    except BaseException:
        # Abandoned (cancelled, past its deadline) or failed: nobody will read the other fits.
        pool.abandon(f for f, _, _, _ in jobs)
        raise


def _finish_predict(
    histories: Sequence[np.ndarray],
    externals: Sequence[np.ndarray | None],
    season: int,
    horizon: int,
    levels: list[int],
    model: str,
    non_negative: Sequence[bool],
    pool: FitPool,
    progress: ProgressFn | None,
    gbm_config: global_model.GlobalModelConfig | None,
    calibrate: bool,
    cancellation: Cancellation | None,
    count: int,
    seasonal: list[bool],
    stat_name: str,
    jobs: list[tuple[Future[Any], list[int], bool, bool]],
    covariates: Sequence[dict[str, np.ndarray]] | None = None,
    planned: Sequence[dict[str, np.ndarray]] | None = None,
) -> list[Prediction]:
    # Meanwhile, the global model in this process.
    gbm: dict[int, np.ndarray] = {}
    # The planned inputs' effect on the global model's forecast (plan minus defaults).
    effect: dict[int, np.ndarray] = {}
    gbm_note = ""
    past = list(covariates) if covariates is not None else [{} for _ in range(count)]
    plans = list(planned) if planned is not None else [{} for _ in range(count)]
    has_cov = [bool(past[i]) or bool(plans[i]) for i in range(count)]
    with_cov = any(has_cov)
    if model in ("gbm", "ensemble"):
        config = gbm_config or global_model.GlobalModelConfig(threads=1)
        # Seasonal histories; and short ones with covariates (their only way to use them).
        for short in (False, True):
            if short:
                usable = [i for i in range(count) if not seasonal[i] and has_cov[i]]
            else:
                usable = [
                    i
                    for i in range(count)
                    if seasonal[i] and global_model.predictable(len(histories[i]), horizon, season)
                ]
            if not any(global_model.trainable(len(histories[i]), horizon, season, short) for i in usable):
                if not short:
                    gbm_note = (
                        f"no series has the {global_model._longest_lag(horizon, season) + 8 + horizon} "
                        f"periods the global model needs to train for horizon {horizon}: mstl used alone"
                    )
                continue
            full = [global_model.with_future(past[i], plans[i], len(histories[i]), horizon) for i in usable]
            # The effect of the plan for a statistical model is measured against the series' usual
            # inputs, which its level already reflects (see global_model.recent_inputs).
            default = [
                global_model.with_future(
                    past[i],
                    global_model.recent_inputs(past[i], len(histories[i]), horizon),
                    len(histories[i]),
                    horizon,
                )
                for i in usable
            ]

            def train(
                usable: list[int] = usable,
                full: list[dict[str, np.ndarray]] = full,
                default: list[dict[str, np.ndarray]] = default,
                short: bool = short,
            ) -> list[np.ndarray]:
                return global_model.fit_predict(
                    [histories[i] for i in usable],
                    [externals[i] for i in usable],
                    horizon,
                    season,
                    config,
                    cancellation,
                    covariates=full if with_cov else None,
                    baselines=default if with_cov else None,
                    short=short,
                )

            values = _watched(train, cancellation)
            gbm.update(zip(usable, values[: len(usable)], strict=True))
            if with_cov:
                effect.update(
                    (i, v - b)
                    for i, v, b in zip(usable, values[: len(usable)], values[len(usable) :], strict=True)
                    if has_cov[i]
                )
        if progress:
            progress(0.5, "global model fitted")
    stats: dict[int, SeriesFit] = {}
    ratios: dict[bool, dict[int, list[np.ndarray]]] = {
        flag: {lv: [] for lv in levels} for flag in (True, False)
    }
    for done, (future, part, flag, held_out) in enumerate(jobs, start=1):
        result = pool.result(future, cancellation)
        if held_out:
            result, held = result
            for lv in levels:
                ratios[flag][lv].append(held[lv])
        for i, value in zip(part, result, strict=True):
            stats[i] = value
        if progress:
            progress(0.5 + 0.5 * done / len(jobs), f"fitted {done} of {len(jobs)} chunks of series")
    factors = {flag: _calibration_factors(ratios[flag], levels) for flag in (True, False)}
    out = []
    for i in range(count):
        mean, intervals, fallback = stats[i]
        notes: list[str] = [fallback] if fallback else []
        if calibrate:
            factor = factors[seasonal[i]]
            if factor is None:
                notes.append(
                    "too little history to hold out for interval calibration: the model's own "
                    "intervals are given uncalibrated"
                )
            else:
                intervals = _scale_intervals(mean, intervals, factor)
        # The label names the model that made the numbers: a short history asked for naive or
        # seasonal naive got naive, not ETS.
        name = stat_name if seasonal[i] else ("naive" if model in ("naive", "snaive") else "ets_nonseasonal")
        if fallback:
            name = "naive"
        if not seasonal[i]:
            notes.append(
                f"history of {len(histories[i])} periods is shorter than two seasons ({2 * season}): "
                "non-seasonal model used" + (" (naive)" if model in ("naive", "snaive") else " (ETS)")
            )
        if not seasonal[i] and i in gbm and model == "ensemble":
            # Short history with inputs: ETS plus the plan's effect from the global model (blending
            # the global model in, as for long histories, cost accuracy on the retail benchmark).
            shift = effect.get(i, np.zeros(horizon))
            mean = mean + shift
            intervals = {lv: (lo + shift, hi + shift) for lv, (lo, hi) in intervals.items()}
            name = "ets_nonseasonal+inputs"
            notes.append(
                "the planned price and promotion inputs' effect (against the series' last 13 periods) "
                "added from the global model"
            )
        elif model in ("gbm", "ensemble") and (seasonal[i] or i in gbm):
            if i in gbm:
                # The statistical member cannot use the inputs: it gets their effect added.
                stat_mean = mean + effect.get(i, 0.0)
                shift = (
                    gbm[i]
                    if model == "gbm"
                    else ENSEMBLE_GBM_WEIGHT * gbm[i] + (1 - ENSEMBLE_GBM_WEIGHT) * stat_mean
                ) - mean
                # Intervals: MSTL's, re-centred on the final mean (the global model gives none).
                mean = mean + shift
                intervals = {lv: (lo + shift, hi + shift) for lv, (lo, hi) in intervals.items()}
                name = model
            else:
                notes.append(
                    gbm_note
                    or f"history too short for the global model at horizon {horizon}: mstl used alone"
                )
        if horizon > len(histories[i]):
            notes.append(
                f"horizon {horizon} is longer than the history ({len(histories[i])} periods): "
                "treat the far end with care"
            )
        if non_negative[i]:
            mean = np.maximum(mean, 0.0)
            intervals = {lv: (np.maximum(lo, 0.0), np.maximum(hi, 0.0)) for lv, (lo, hi) in intervals.items()}
        out.append(Prediction(mean, intervals, name, notes))
    return out


def _watched(work: Callable[[], Any], cancellation: Cancellation | None) -> Any:
    """work() in a thread, the caller returning as soon as cancellation fires.

    The global model checks the cancellation only between its steps, and some steps (LightGBM
    building its dataset) take seconds on a busy machine: the caller (and its RPC thread and
    concurrency slot) need not wait for them; the thread stops at its next check.
    """
    if cancellation is None:
        return work()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="trends-global-model", daemon=True)
    thread.start()
    while thread.is_alive():
        cancellation.check()
        thread.join(CANCEL_POLL_S)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _calibration_factors(
    ratios: dict[int, list[np.ndarray]], levels: Sequence[int]
) -> dict[int, float] | None:
    """Per level, the factor that makes the holdout's interval coverage what the level says.

    Split-conformal scaling: ratios are |error| / half-width on held-out periods, so their
    level-quantile is how much wider (or narrower) the interval must be to cover level% of them.
    Pooled over the series of a request, because one series' holdout is too few points.
    """
    out = {}
    for lv in levels:
        values = np.concatenate(ratios[lv]) if ratios[lv] else np.empty(0)
        if len(values) < CALIBRATION_MIN_POINTS:
            return None
        out[lv] = float(np.clip(np.quantile(values, lv / 100), *CALIBRATION_BOUNDS))
    return out


def _scale_intervals(
    mean: np.ndarray, intervals: dict[int, tuple[np.ndarray, np.ndarray]], factors: dict[int, float]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Scales each level's distances from the mean; a higher level is never narrower than a lower."""
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    below, above = np.zeros_like(mean), np.zeros_like(mean)
    for lv in sorted(intervals):
        lo, hi = intervals[lv]
        below = np.maximum(below, (mean - lo) * factors[lv])
        above = np.maximum(above, (hi - mean) * factors[lv])
        out[lv] = (mean - below, mean + above)
    return out
