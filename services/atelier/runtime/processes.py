"""A pool of worker processes whose running tasks can be cancelled, by killing their worker.

``concurrent.futures.ProcessPoolExecutor`` cannot stop a task once it runs: a forecast whose caller
gave up (deadline, cancel, shutdown) kept a fitting worker of the pool every tenant shares busy for
minutes. Here each worker process runs one task at a time for one dispatcher thread, so the pool
knows which process runs which task, and :meth:`ProcessPool.abandon` kills exactly that process;
a fresh one takes its place (and runs the initializer again) for the next task.

Workers start with forkserver: forking a process that runs gRPC threads can deadlock the child.
Functions and arguments must be picklable (module-level functions).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError, Future
from multiprocessing.connection import Connection, wait
from typing import Any

log = logging.getLogger(__name__)

# How often a dispatcher looks for an abandoned task while its worker computes.
POLL_S = 0.05


class WorkerDied(RuntimeError):
    """The worker process ended while it ran the task (killed, out of memory, crashed)."""


def _worker_main(conn: Connection, initializer: Callable[[], None] | None) -> None:
    parent = os.getppid()

    def orphan_watch() -> None:
        # The service died without killing us: stop burning its CPU.
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=orphan_watch, daemon=True).start()
    if initializer is not None:
        initializer()
    conn.send(("ready", None))
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            result: tuple[str, Any] = ("ok", fn(*args))
        except BaseException as exc:
            result = ("error", exc)
        try:
            conn.send(result)
        except Exception as exc:  # an unpicklable result or exception
            conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))


def _settle(future: Future[Any], ok: bool, value: Any) -> None:
    """Set a future's outcome unless close() got there first."""
    try:
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    except Exception:  # InvalidStateError: already settled
        pass


class _Task:
    __slots__ = ("abandoned", "args", "fn", "future")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.future: Future[Any] = Future()
        self.abandoned = threading.Event()


class _Worker:
    """One process and the dispatcher thread that feeds it."""

    def __init__(self, pool: ProcessPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.process: Any = None
        self.conn: Connection | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"{pool.name}-dispatch-{index}", daemon=True)

    def _start_process(self) -> None:
        ctx = multiprocessing.get_context("forkserver")
        parent_conn, child_conn = ctx.Pipe()
        process = ctx.Process(
            target=_worker_main,
            args=(child_conn, self.pool.initializer),
            name=f"{self.pool.name}-{self.index}",
            daemon=True,
        )
        process.start()
        child_conn.close()
        self.process, self.conn = process, parent_conn

    def kill(self) -> None:
        process, conn = self.process, self.conn
        self.process, self.conn = None, None
        self.ready.clear()
        if process is not None and process.is_alive():
            process.kill()
        if process is not None:
            process.join(5)
        if conn is not None:
            conn.close()

    def _await(self, task: _Task | None) -> tuple[str, Any] | None:
        """The worker's next message; None when the task was abandoned (the worker is killed)."""
        assert self.conn is not None and self.process is not None
        while True:
            if task is not None and task.abandoned.is_set():
                self.kill()
                return None
            if self.pool.closed.is_set():
                self.kill()
                return ("error", CancelledError("the pool was closed"))
            ready = wait([self.conn, self.process.sentinel], timeout=POLL_S)
            if self.conn in ready:
                try:
                    return self.conn.recv()  # type: ignore[no-any-return]
                except (EOFError, OSError):
                    pass
            if ready:
                code = self.process.exitcode
                self.kill()
                return (
                    "error",
                    WorkerDied(f"the worker process ended (exit code {code}) while it ran the task"),
                )

    def _ensure_process(self) -> bool:
        if self.process is not None:
            return True
        self._start_process()
        message = self._await(None)
        if message is None or message[0] != "ready":
            if not self.pool.closed.is_set():
                log.error("%s: a worker failed to start: %s", self.pool.name, message and message[1])
            self.kill()
            return False
        self.ready.set()
        return True

    def _run(self) -> None:
        while not self.pool.closed.is_set():
            # Eager pools keep a warm worker ready, also after one was killed for an abandoned task.
            if self.pool.start_eagerly and self.process is None:
                self._ensure_process()
            try:
                task = self.pool._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if task is None:
                break
            if task.abandoned.is_set() or not task.future.set_running_or_notify_cancel():
                continue
            if not self._ensure_process():
                _settle(task.future, False, WorkerDied("a worker process could not start"))
                continue
            assert self.conn is not None
            try:
                self.conn.send((task.fn, task.args))
            except Exception as exc:
                _settle(task.future, False, exc)
                continue
            message = self._await(task)
            if message is None:
                _settle(task.future, False, CancelledError("abandoned: its worker was stopped"))
                log.info("%s: stopped a worker running an abandoned task", self.pool.name)
            else:
                _settle(task.future, message[0] == "ok", message[1])
        self.kill()


class ProcessPool:
    """workers processes; submit() returns a Future; abandon() stops tasks, running or not."""

    def __init__(
        self,
        workers: int,
        name: str = "workers",
        initializer: Callable[[], None] | None = None,
        start_eagerly: bool = False,
    ) -> None:
        self.workers = max(1, workers)
        self.name = name
        self.initializer = initializer
        self.start_eagerly = start_eagerly
        self.closed = threading.Event()
        self._queue: queue.Queue[_Task | None] = queue.Queue()
        self._tasks: dict[Future[Any], _Task] = {}
        self._lock = threading.Lock()
        self._workers = [_Worker(self, i) for i in range(self.workers)]
        for worker in self._workers:
            worker.thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        if self.closed.is_set():
            raise RuntimeError(f"{self.name}: the pool is closed")
        task = _Task(fn, args)
        with self._lock:
            self._tasks[task.future] = task
        task.future.add_done_callback(self._forget)
        self._queue.put(task)
        return task.future

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._tasks.pop(future, None)

    def abandon(self, futures: Iterable[Future[Any]]) -> None:
        """Nobody wants these results any more: queued ones never run, running ones are killed."""
        for future in futures:
            with self._lock:
                task = self._tasks.get(future)
            if task is None:
                continue
            task.abandoned.set()
            future.cancel()  # succeeds only while queued

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """True when every worker has started (and run the initializer)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for worker in self._workers:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not worker.ready.wait(remaining):
                return False
        return True

    def running(self) -> int:
        """Tasks a worker is running now."""
        with self._lock:
            return sum(1 for f in self._tasks if f.running())

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process is not None and w.process.pid]

    def close(self) -> None:
        """Kill every worker; queued and running tasks end with CancelledError."""
        self.closed.set()
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.thread.join(5)
        with self._lock:
            left = list(self._tasks.values())
        for task in left:
            if not task.future.done() and not task.future.cancel():
                _settle(task.future, False, CancelledError("the pool was closed"))
