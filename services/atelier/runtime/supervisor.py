"""Runs several services as child processes on localhost (``make run``, ``atelier serve``).

Each service is its own process, as in the cluster. Ctrl-C (or SIGTERM) is passed on to every
child as SIGTERM, so each drains its in-flight calls before the supervisor exits.
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

log = logging.getLogger("atelier.supervisor")


def run(services: Sequence[str], grace_s: float = 30.0) -> int:
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
            deadline = deadline or time.monotonic() + grace_s + 5
            if time.monotonic() > deadline:
                for child in children.values():
                    if child.poll() is None:
                        child.kill()
        time.sleep(0.2)
    return exit_code
