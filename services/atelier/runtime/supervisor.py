"""Runs several services as child processes on localhost (``make run``, ``atelier serve``).

Each service is its own process, as in the cluster. Ctrl-C (or SIGTERM) is passed on to every
child as SIGTERM, so each drains its in-flight calls before the supervisor exits. A child ends
itself within its grace + 5 s (runtime.shutdown); one that does not is killed then.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from atelier.runtime.config import _env

log = logging.getLogger("atelier.supervisor")


def run(services: Sequence[str], grace_s: float | None = None) -> int:
    if grace_s is None:  # the longest of the children's own grace periods
        grace_s = max((float(_env(name, "GRACE_SECONDS", "30")) for name in services), default=30.0)
    children: dict[str, subprocess.Popen[bytes]] = {}
    for name in services:
        children[name] = subprocess.Popen(
            [sys.executable, "-m", "atelier.runtime.server", name], env=os.environ.copy()
        )
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            print(
                f"\natelier: stopping {len(children)} services (signal {signal.Signals(signum).name})",
                file=sys.stderr,
            )
            for child in children.values():
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    reported: set[str] = set()
    deadline: float | None = None
    while any(c.poll() is None for c in children.values()):
        for name, child in children.items():
            code = child.poll()
            if code is not None and name not in reported:
                reported.add(name)
                if not stopping:
                    print(
                        f"atelier: {name} exited with code {code}; the others keep running", file=sys.stderr
                    )
                    exit_code = exit_code or code or 1
        if stopping:
            deadline = deadline or time.monotonic() + grace_s + 6
            if time.monotonic() > deadline:
                for child in children.values():
                    if child.poll() is None:
                        child.kill()
        time.sleep(0.2)
    return exit_code
