"""Load shedding: a service works on at most so many calls at once, and one tenant on at most a
share of them; the rest are refused at once with RESOURCE_EXHAUSTED and a ``google.rpc.RetryInfo``
saying when to come back (gRPC clients and Envoy honour it).

Why here and not grpcio's ``maximum_concurrent_rpcs``: grpcio refuses without RetryInfo, refuses
health checks too (an overloaded pod would be restarted by its liveness probe), and its refusals
never reach the interceptor, so ``grpc_server_handled_total`` does not count them.

What is never refused: health and reflection (probes and tools), and polling of long-running
operations (Get/List/Cancel/DeleteOperation: cheap reads a client must be able to make while the
service is busy, or it could not see its own work finish). WaitOperation and a service's Watch*
streams (WatchMarker) hold a thread while they wait on a job, so they have a small budget of their
own instead of being free, and do not take the slots of the work they wait for.

The server's thread pool is sized from these limits (:func:`thread_pool_size`): every admitted
call and waiter has a thread, and spare threads remain for probes, polls and refusals, so a
refusal never queues behind the work it refuses.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from atelier.runtime.errors import ResourceExhaustedError

# Calls that are always admitted and not counted.
EXEMPT_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
OPERATIONS_SERVICE = "google.longrunning.Operations"
OPERATIONS_WAIT = "WaitOperation"
# Threads kept free beyond the admitted calls, for probes, polls and refusals.
SPARE_THREADS = 16
# WaitOperation calls at once (each holds a thread up to its timeout).
DEFAULT_WAITERS = 8
# Bounds of the suggested retry delay, in seconds.
MIN_RETRY_S = 0.1
MAX_RETRY_S = 30.0

shed_total = Counter(
    "atelier_rpc_shed_total",
    "Calls refused with RESOURCE_EXHAUSTED by the load shedder, by the limit that was reached.",
    ("service", "limit"),
)
admitted_now = Gauge(
    "atelier_rpc_admitted", "Calls being worked on now (shedding counts these).", ("service",)
)


@dataclass(frozen=True)
class Limits:
    """service: calls at once; per_tenant: calls at once of one tenant; waiters: WaitOperation calls."""

    service: int
    per_tenant: int
    waiters: int = DEFAULT_WAITERS

    @classmethod
    def default_per_tenant(cls, service: int) -> int:
        # Three quarters: a lone tenant still gets most of the service, and whatever one tenant
        # sends, a quarter of the capacity stays for the others.
        return max(1, math.ceil(service * 0.75))

    def validate(self) -> None:
        if self.service < 1 or self.per_tenant < 1 or self.waiters < 1:
            raise ValueError(
                "ATELIER_MAX_CONCURRENT_RPCS, ATELIER_MAX_CONCURRENT_RPCS_PER_TENANT and "
                f"ATELIER_MAX_WAITING_RPCS must be >= 1, got {self.service}, {self.per_tenant}, {self.waiters}"
            )


def thread_pool_size(limits: Limits, configured: int) -> int:
    """RPC threads: at least one per admitted call and waiter, plus the spare ones."""
    return max(configured, limits.service + limits.waiters + SPARE_THREADS)


class Ticket:
    """An admitted call; release() when it ends (idempotent)."""

    __slots__ = ("_kind", "_owner", "_released", "_started", "_tenant")

    def __init__(self, owner: Admission | None, kind: str, tenant: str) -> None:
        self._owner = owner
        self._kind = kind
        self._tenant = tenant
        self._started = time.monotonic()
        self._released = False

    def release(self) -> None:
        if self._released or self._owner is None:
            return
        self._released = True
        self._owner._release(self._kind, self._tenant, time.monotonic() - self._started)


_FREE = Ticket(None, "", "")


class Admission:
    """Counts the calls a server is working on and refuses those over the limits."""

    def __init__(self, service: str, limits: Limits) -> None:
        limits.validate()
        self.service = service
        self.limits = limits
        self._admitted_now = admitted_now.labels(service)  # looked up once, set twice per call
        self._lock = threading.Lock()
        self._active = 0
        self._waiting = 0
        self._per_tenant: dict[str, int] = {}
        # Smoothed duration of admitted calls: a refused client is told to come back after about
        # the time one call takes, when a slot is likely to be free.
        self._mean_s = 1.0

    def admit(self, grpc_service: str, grpc_method: str, tenant: str) -> Ticket:
        """A ticket for the call, or ResourceExhaustedError (with a retry delay) when over a limit."""
        if grpc_service in EXEMPT_SERVICES:
            return _FREE
        waiting = grpc_method.startswith("Watch") or (
            grpc_service == OPERATIONS_SERVICE and grpc_method == OPERATIONS_WAIT
        )
        if grpc_service == OPERATIONS_SERVICE and not waiting:
            return _FREE
        if waiting:
            with self._lock:
                if self._waiting < self.limits.waiters:
                    self._waiting += 1
                    return Ticket(self, "wait", tenant)
            self._refuse(
                "waiters",
                f"{self.limits.waiters} WaitOperation or Watch calls are waiting already; poll "
                "with GetOperation or wait again later",
            )
        with self._lock:
            held = self._per_tenant.get(tenant, 0)
            if self._active >= self.limits.service:
                reason = (
                    "service",
                    f"the {self.service} service is working on {self._active} calls, its limit",
                )
            elif held >= self.limits.per_tenant:
                reason = ("tenant", f"tenant {tenant!r} has {held} calls in progress, the limit per tenant")
            else:
                self._active += 1
                self._per_tenant[tenant] = held + 1
                self._admitted_now.set(self._active)
                return Ticket(self, "work", tenant)
        self._refuse(*reason)
        raise AssertionError("unreachable")  # _refuse raises

    def retry_after_s(self) -> float:
        return min(MAX_RETRY_S, max(MIN_RETRY_S, self._mean_s))

    def _refuse(self, limit: str, message: str) -> None:
        shed_total.labels(self.service, limit).inc()
        delay = self.retry_after_s()
        raise ResourceExhaustedError(f"overloaded: {message}; retry after {delay:.1f} s", retry_after_s=delay)

    def _release(self, kind: str, tenant: str, elapsed_s: float) -> None:
        with self._lock:
            if kind == "wait":
                self._waiting -= 1
                return
            self._active -= 1
            held = self._per_tenant.get(tenant, 1) - 1
            if held:
                self._per_tenant[tenant] = held
            else:
                self._per_tenant.pop(tenant, None)
            self._admitted_now.set(self._active)
            self._mean_s = 0.8 * self._mean_s + 0.2 * elapsed_s

    @property
    def active(self) -> int:
        return self._active
