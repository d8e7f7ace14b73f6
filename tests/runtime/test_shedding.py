"""The load shedder's arithmetic: which calls count, against which limit, and what a refusal says."""

from __future__ import annotations

import pytest

from atelier.runtime.errors import ResourceExhaustedError
from atelier.runtime.shedding import MAX_RETRY_S, MIN_RETRY_S, Admission, Limits, thread_pool_size

SERVICE = "atelier.nesting.v1.NestingService"


def test_service_and_tenant_limits_and_release() -> None:
    admission = Admission("nesting", Limits(service=4, per_tenant=3, waiters=1))
    a = [admission.admit(SERVICE, "CreateMarker", "a") for _ in range(3)]
    with pytest.raises(ResourceExhaustedError, match="tenant 'a'") as per_tenant:
        admission.admit(SERVICE, "CreateMarker", "a")
    assert per_tenant.value.retry_after_s is not None
    b = admission.admit(SERVICE, "GetMarker", "b")  # the slot tenant a cannot take
    with pytest.raises(ResourceExhaustedError, match="working on 4 calls"):
        admission.admit(SERVICE, "GetMarker", "c")
    a[0].release()
    a[0].release()  # idempotent: one call frees one slot
    assert admission.active == 4 - 1
    admission.admit(SERVICE, "GetMarker", "c")
    b.release()
    assert admission.active == 3


def test_probes_and_polls_are_free_and_waits_have_their_own_budget() -> None:
    admission = Admission("nesting", Limits(service=1, per_tenant=1, waiters=1))
    admission.admit(SERVICE, "CreateMarker", "a")
    for _ in range(50):  # never refused, never counted
        admission.admit("grpc.health.v1.Health", "Check", "a")
        admission.admit("google.longrunning.Operations", "GetOperation", "a")
        admission.admit("google.longrunning.Operations", "CancelOperation", "a")
    assert admission.active == 1
    waiting = admission.admit(SERVICE, "WatchMarker", "a")  # does not take the work's slot
    with pytest.raises(ResourceExhaustedError, match="waiting already"):
        admission.admit("google.longrunning.Operations", "WaitOperation", "a")
    waiting.release()
    admission.admit("google.longrunning.Operations", "WaitOperation", "a")


def test_retry_delay_follows_call_durations_within_bounds() -> None:
    admission = Admission("nesting", Limits(service=1, per_tenant=1))
    assert admission.retry_after_s() == 1.0  # before any call has ended
    for _ in range(40):
        admission.admit(SERVICE, "GetMarker", "a").release()  # microsecond calls
    assert admission.retry_after_s() == MIN_RETRY_S
    admission._release("work", "a", 10_000.0)
    admission._active += 1  # balance the direct _release above
    assert admission.retry_after_s() == MAX_RETRY_S


def test_thread_pool_leaves_spare_threads_and_limits_are_validated() -> None:
    assert thread_pool_size(Limits(service=16, per_tenant=12, waiters=8), configured=16) == 16 + 8 + 16
    assert Limits.default_per_tenant(16) == 12 and Limits.default_per_tenant(1) == 1
    with pytest.raises(ValueError, match="must be >= 1"):
        Admission("x", Limits(service=0, per_tenant=1))
