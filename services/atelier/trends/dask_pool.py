"""The per-series fits of a forecast sharded over a Dask cluster (dask.distributed), instead of
this process's own worker processes.

A large forecast is mostly per-series model fitting: forecasting.predict cuts the series into
chunks and hands each chunk to a pool (FitPool: local worker processes). DaskPool is the same
interface over an existing Dask scheduler, so the chunks run on the cluster's workers, as many
at once as the cluster has threads, and each worker runs exactly the same function
(forecasting.fit_chunk) on the same chunk: the results are identical to a local run. The global
model (one LightGBM model across all series) still trains in the service's process meanwhile.

Off by default: ATELIER_TRENDS_DASK_SCHEDULER=tcp://scheduler:8786 turns it on (server.py). The
workers need this package importable (the same image as the service) and must see the scheduler;
nothing here starts or scales a cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from atelier.runtime.context import Cancellation
from atelier.trends import forecasting

# How long connecting to the scheduler may take before the service reports it unreachable.
CONNECT_TIMEOUT_S = 30


class DaskPool:
    """forecasting.FitPool's interface over a dask.distributed Client."""

    def __init__(self, address: str | None = None, client: Any = None) -> None:
        """address: the scheduler's (tcp://host:8786); or an existing client (tests: LocalCluster)."""
        self.address = address
        self._client = client
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._client is None:
                from distributed import Client

                self._client = Client(self.address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
            return self._client

    @property
    def workers(self) -> int:
        """Threads of the cluster's workers: forecasting.predict cuts at least this many chunks."""
        return max(1, sum(self._get().nthreads().values()))

    def warm(self) -> None:
        """Connects, and has every worker import and compile the models (as FitPool.warm)."""
        client = self._get()
        client.run(forecasting.warm_worker)

    def submit(self, *args: object) -> Any:
        # pure=False: two equal chunks of two requests are two tasks (no shared key to cancel).
        return self._get().submit(forecasting.fit_chunk, *args, pure=False)

    def submit_with_holdout(self, *args: object) -> Any:
        return self._get().submit(forecasting.fit_chunk_with_holdout, *args, pure=False)

    def result(self, future: Any, cancellation: Cancellation | None) -> Any:
        """The chunk's result (a worker's error is raised here); stops waiting when cancellation
        fires (the caller then abandons its futures)."""
        if cancellation is None:
            return future.result()
        while True:
            cancellation.check()
            try:
                return future.result(timeout=forecasting.CANCEL_POLL_S)
            except TimeoutError:
                continue

    def abandon(self, futures: Iterable[Any]) -> None:
        """Cancels the tasks on the cluster (a task already running finishes there unread)."""
        pending = [f for f in futures if not f.done()]
        if pending and self._client is not None:
            self._client.cancel(pending)

    def running(self) -> int:
        if self._client is None:
            return 0
        return sum(len(tasks) for tasks in self._client.processing().values())

    def pids(self) -> list[int]:
        return []  # the workers are the cluster's, not this process's children

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self.address is not None:
                self._client.close()  # a client handed in (tests) is its owner's to close
                self._client = None
