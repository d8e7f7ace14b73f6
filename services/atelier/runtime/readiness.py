"""Readiness: whether this process should get traffic now, apart from whether it is alive.

The health name ``atelier.readiness`` is SERVING when the service has loaded what it needs, its
dependencies (the database) answer, and it is not shutting down. The chart's readiness probe asks
for it, so a pod whose database is gone leaves the Service's endpoints until the database is back;
the liveness probe asks the health service itself, which stays SERVING, so the pod is not
restarted for an outage a restart cannot fix. Both recover on their own: a monitor thread pings
each dependency every few seconds, and a call that meets an outage asks for a check at once.

:func:`outage_error` is the other half: the interceptor turns a lost database into UNAVAILABLE
(retryable, with RetryInfo) instead of INTERNAL.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable

import sqlalchemy as sa
from prometheus_client import Gauge

from atelier.runtime.errors import AtelierError, UnavailableError

log = logging.getLogger("atelier.readiness")

READINESS = "atelier.readiness"
CHECK_INTERVAL_S = 2.0
# What a client refused for an outage is told to wait before trying again.
OUTAGE_RETRY_S = 1.0

dependency_up = Gauge(
    "atelier_dependency_up",
    "1 when the dependency answered its last check, else 0.",
    ("service", "dependency"),
)

_monitors: weakref.WeakSet[Readiness] = weakref.WeakSet()

# SQLite's OperationalError also covers programming errors ("no such table"); only these are outages.
_SQLITE_OUTAGES = (
    "database is locked",
    "unable to open database",
    "disk i/o error",
    "database or disk is full",
)


def _is_outage(exc: BaseException) -> bool:
    if isinstance(exc, sa.exc.DisconnectionError | sa.exc.TimeoutError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa.exc.InterfaceError):
            return True
        if isinstance(exc, sa.exc.OperationalError):
            module = type(exc.orig).__module__ if exc.orig is not None else ""
            if module.startswith("sqlite3"):
                return any(text in str(exc.orig).lower() for text in _SQLITE_OUTAGES)
            return True  # psycopg: connection refused, server closed the connection, admin shutdown...
    return False


def outage_error(exc: BaseException) -> AtelierError | None:
    """UnavailableError when exc (or what caused it) is a lost dependency, else None."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 4:
        if _is_outage(current):
            for monitor in list(_monitors):
                monitor.poke()
            first_line = (
                str(current).strip().splitlines()[0] if str(current).strip() else type(current).__name__
            )
            return UnavailableError(
                f"the database is unreachable ({first_line[:200]}); retry later", retry_after_s=OUTAGE_RETRY_S
            )
        current = current.__cause__ or current.__context__
        seen += 1
    return None


class Readiness:
    """Keeps one health name SERVING while loaded, not stopping, and every check passes."""

    def __init__(
        self,
        service: str,
        publish: Callable[[bool], None],
        checks: dict[str, Callable[[], None]],
        interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        """checks: dependency name -> a function that raises when the dependency is down."""
        self.service = service
        self._publish = publish
        self._checks = checks
        self._interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._loaded = False
        self._up = dict.fromkeys(checks, True)
        self._published: bool | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        _monitors.add(self)

    @property
    def ready(self) -> bool:
        return self._loaded and not self._stop.is_set() and all(self._up.values())

    def start(self) -> None:
        self._publish_now()
        if self._checks:
            self._thread = threading.Thread(target=self._run, name=f"{self.service}-readiness", daemon=True)
            self._thread.start()

    def loaded(self) -> None:
        self._loaded = True
        self.poke()
        self._publish_now()

    def stop(self) -> None:
        """Shutting down: NOT_SERVING from now on."""
        self._stop.set()
        self._wake.set()
        self._publish_now()

    def poke(self) -> None:
        """Check now (a call met an outage)."""
        self._wake.set()

    def check_now(self) -> bool:
        for name, check in self._checks.items():
            try:
                check()
                up = True
            except Exception as exc:
                up = False
                if self._up.get(name, True):
                    log.warning("%s: %s is unreachable, readiness NOT_SERVING: %s", self.service, name, exc)
            if up and not self._up.get(name, True):
                log.info("%s: %s is back", self.service, name)
            self._up[name] = up
            dependency_up.labels(self.service, name).set(1 if up else 0)
        self._publish_now()
        return self.ready

    def _publish_now(self) -> None:
        with self._lock:
            ready = self.ready
            if ready != self._published:
                self._published = ready
                self._publish(ready)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check_now()
            # While a dependency is down, check more often: readiness comes back within a second.
            self._wake.wait(self._interval_s if all(self._up.values()) else min(self._interval_s, 0.5))
            self._wake.clear()
