"""A forecast's per-series fits sharded over a Dask cluster of worker processes give the same
numbers as the local pool."""

from __future__ import annotations

import time

import numpy as np
import pytest

from atelier.runtime.context import Cancellation
from atelier.runtime.errors import CancelledError
from atelier.trends import forecasting
from atelier.trends.dask_pool import DaskPool
from tests.trends.test_service import seasonal_series


def test_dask_cluster_gives_the_single_process_results() -> None:
    distributed = pytest.importorskip("distributed")
    histories = [seasonal_series(seed, weeks=120 + 10 * seed, growth=0.1 * seed) for seed in range(6)]
    args = (histories, [None] * 6, 52, 8, [80, 95], "ensemble", [True] * 6)
    local = forecasting.FitPool(2)
    try:
        expected = forecasting.predict(*args, local)
    finally:
        local.close()
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        pool = DaskPool(client=client)
        assert pool.workers == 2
        got = forecasting.predict(*args, pool)
        # The chunks ran on the cluster's two worker processes, not here.
        assert len({pid for pid in client.run(lambda: __import__("os").getpid()).values()}) == 2
        for e, g in zip(expected, got, strict=True):
            assert g.model == e.model == "ensemble"
            np.testing.assert_array_equal(g.mean, e.mean)
            for lv in (80, 95):
                np.testing.assert_array_equal(g.intervals[lv][0], e.intervals[lv][0])
                np.testing.assert_array_equal(g.intervals[lv][1], e.intervals[lv][1])
        # A request cancelled midway stops waiting and cancels its tasks on the cluster.
        # Cancelled once the first chunk's result is in (not on a timer: on a quiet machine the warm
        # workers finished all chunks within a timer's 0.5 s and nothing was left to cancel).
        cancellation = Cancellation()
        read_result = pool.result

        def result_then_cancel(future: object, c: Cancellation | None) -> object:
            out = read_result(future, c)
            cancellation.cancel("test")
            return out

        pool.result = result_then_cancel  # type: ignore[method-assign]
        with pytest.raises(CancelledError):
            forecasting.predict(*args, pool, cancellation=cancellation)
        deadline = time.monotonic() + 60
        while pool.running() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pool.running() == 0
