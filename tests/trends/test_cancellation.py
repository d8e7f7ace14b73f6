"""Deadlines and cancels reach the forecasting work: the fitting pool's worker is freed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
import psutil
import pytest

from atelier.runtime.context import Cancellation
from atelier.runtime.errors import CancelledError
from atelier.runtime.server import Server
from atelier.trends import forecasting
from atelier.trends.server import build
from atelier.trends.v1 import trends_pb2, trends_pb2_grpc
from tests.trends.test_service import seasonal_series, weekly


def _alive(pids: set[int]) -> set[int]:
    return {p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}


def test_forecast_past_its_deadline_frees_its_workers_within_a_second(
    start_server: Callable[..., Server],
) -> None:
    server = start_server("trends", build)
    pool: forecasting.FitPool = server.spec.servicers[0][1].pool
    stub = trends_pb2_grpc.TrendsServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    observations = []
    for i in range(120):
        observations += weekly(f"s{i:03d}", seasonal_series(i, weeks=260))
    stub.IngestObservations(trends_pb2.IngestObservationsRequest(observations=observations), timeout=60)
    workers = set(pool.pids())
    assert workers, "the fitting workers are started when the service is ready"
    most = 0
    watching = threading.Event()

    def watch() -> None:
        nonlocal most
        while not watching.is_set():
            most = max(most, pool.running())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    request = trends_pb2.ForecastRequest(horizon=52, model="ensemble")
    try:
        with pytest.raises(grpc.RpcError) as late:
            stub.Forecast(request, timeout=3.0)  # a full forecast of 120 series takes far longer here
        expired = time.monotonic()
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        while (pool.running() or server.admission.active) and time.monotonic() - expired < 1.0:
            time.sleep(0.01)
        freed_s = time.monotonic() - expired
    finally:
        watching.set()
        watcher.join()
    assert most > 0, "the deadline passed before any fit started: the test proves nothing"
    assert pool.running() == 0, (
        f"fitting workers still busy {freed_s:.2f} s after the deadline "
        f"(the RPC is {'still' if server.admission.active else 'no longer'} running)"
    )
    assert server.admission.active == 0, "the RPC thread is still working"
    assert workers - _alive(workers), "the workers running the abandoned fits were stopped"
    # The pool replaces the workers it stopped: the next forecast works.
    one = stub.Forecast(
        trends_pb2.ForecastRequest(horizon=4, filter=trends_pb2.SeriesFilter(series=["s000"])), timeout=120
    )
    assert len(one.forecasts) == 1 and len(one.forecasts[0].mean) == 4


def test_predict_stops_when_cancelled() -> None:
    pool = forecasting.shared_pool(forecasting.default_workers())
    histories = [seasonal_series(i, weeks=260) for i in range(60)]
    token = Cancellation()
    token.cancel("the caller went away")
    with pytest.raises(CancelledError):
        forecasting.predict(
            histories, [None] * 60, 52, 52, [80], "ensemble", [True] * 60, pool, cancellation=token
        )
    # Cancelled half way through the global model: it stops at the next boosting round.
    token = Cancellation(deadline_monotonic=time.monotonic() + 0.3)
    started = time.monotonic()
    with pytest.raises(Exception) as stopped:
        forecasting.predict(
            histories, [None] * 60, 52, 52, [80], "ensemble", [True] * 60, pool, cancellation=token
        )
    assert type(stopped.value).__name__ == "DeadlineExceededError"
    assert time.monotonic() - started < 1.3
