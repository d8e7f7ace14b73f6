"""Per-request context: request id, tenant, and cancellation that long work can check.

Nothing here imports gRPC, so domain code can take a :class:`Cancellation` and stay pure.
The interceptor fills the context variables; servicers read ``current_tenant()``.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable

from atelier.runtime.errors import CancelledError, DeadlineExceededError

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("atelier_request_id", default="")
tenant_var: contextvars.ContextVar[str] = contextvars.ContextVar("atelier_tenant", default="default")
method_var: contextvars.ContextVar[str] = contextvars.ContextVar("atelier_method", default="")


def current_tenant() -> str:
    return tenant_var.get()


def current_request_id() -> str:
    return request_id_var.get()


class Cancellation:
    """A cancellation signal with an optional deadline, for loops in long work.

    Call :meth:`check` between units of work (a solver iteration, a denoising step, a tile);
    it raises CancelledError or DeadlineExceededError so the work stops promptly.
    """

    def __init__(
        self,
        deadline_monotonic: float | None = None,
        is_active: Callable[[], bool] | None = None,
    ) -> None:
        self._event = threading.Event()
        self._deadline = deadline_monotonic
        self._is_active = is_active
        self.reason = ""

    @classmethod
    def never(cls) -> Cancellation:
        return cls()

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._event.set()

    def time_remaining_s(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    @property
    def cancelled(self) -> bool:
        if self._event.is_set():
            return True
        if self._is_active is not None and not self._is_active():
            self.cancel("the client went away")
            return True
        return False

    def check(self) -> None:
        if self.cancelled:
            raise CancelledError(self.reason or "cancelled")
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise DeadlineExceededError("the call's deadline passed before the work finished")

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when cancelled meanwhile."""
        return self._event.wait(seconds)
