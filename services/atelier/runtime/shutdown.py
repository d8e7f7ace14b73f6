"""The end of a service process: it must be gone within grace + 5 s of SIGTERM, whatever its calls do.

A clean drain is the normal case (calls finish or see their cancellation, jobs stop, close() runs).
This module is for the rest: a call stuck in a library that never checks for cancellation keeps a
non-daemon RPC thread alive, and Python waits for such threads at exit, forever; a fitting worker
in the middle of a model keeps computing after its parent has stopped caring. So the last step of
a stop kills the process's children (fitting pools, solver processes, the forkserver) and, if
threads are still stuck, ends the process with ``os._exit`` after flushing the logs; a watchdog
armed at the signal does the same if the stop itself hangs.
"""

from __future__ import annotations

import concurrent.futures.thread
import contextlib
import logging
import os
import sys
import threading
import time

import psutil

log = logging.getLogger("atelier.shutdown")

# The watchdog ends the process this long after the grace period at the latest (killing children
# takes up to 0.4 s more): gone within grace + 5 s.
HARD_MARGIN_S = 4.0


def kill_children(wait_s: float = 0.5) -> int:
    """SIGTERM every descendant process, SIGKILL those still alive after wait_s; returns how many."""
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _gone, alive = psutil.wait_procs(children, timeout=wait_s)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(alive, timeout=wait_s)
    return len(children)


def stuck_threads() -> list[threading.Thread]:
    """The threads interpreter exit would wait for: non-daemon ones, and every thread of a
    concurrent.futures thread pool (joined at exit even when daemonic, which they are when a
    daemon thread such as gRPC's created them)."""
    me = threading.current_thread()
    pool_threads = set(getattr(concurrent.futures.thread, "_threads_queues", {}).keys())
    return [
        t
        for t in threading.enumerate()
        if t.is_alive()
        and (not t.daemon or t in pool_threads)
        and t is not me
        and t is not threading.main_thread()
    ]


def flush() -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def exit_now(code: int) -> None:
    """Children killed, logs flushed, process ended without waiting for stuck threads."""
    kill_children(wait_s=0.2)
    flush()
    os._exit(code)


def finish(code: int, wait_s: float) -> None:
    """After a stop: kill leftover children; exit at once if threads are stuck, else return."""
    killed = kill_children()
    if killed:
        log.warning("killed %d child processes that were still running", killed)
    deadline = time.monotonic() + max(0.0, wait_s)
    while stuck_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    stuck = stuck_threads()
    if stuck:
        log.warning(
            "exiting with %d threads still in abandoned calls (already cancelled): %s",
            len(stuck),
            ", ".join(t.name for t in stuck[:8]),
        )
        exit_now(code)


class Watchdog:
    """Ends the process at a deadline unless disarmed: the stop itself must not hang."""

    def __init__(self) -> None:
        self._disarmed = threading.Event()
        self.armed = False

    def arm(self, after_s: float) -> None:
        self.armed = True
        threading.Thread(target=self._run, args=(after_s,), name="shutdown-watchdog", daemon=True).start()

    def disarm(self) -> None:
        self._disarmed.set()

    def _run(self, after_s: float) -> None:
        if self._disarmed.wait(after_s):
            return
        log.error("the stop did not finish within %.1f s of the signal: forcing the process to exit", after_s)
        exit_now(1)
