"""A tiny service on the runtime, for the runtime's own tests (contract: echo.proto).

It is what a real service looks like: a thin servicer validating its input with Violations,
raising domain errors, and running long work as a job.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Iterator
from typing import Any

import echo_pb2  # type: ignore[import-not-found]  # compiled by tests/runtime/conftest.py
import echo_pb2_grpc  # type: ignore[import-not-found]

from atelier.runtime.context import current_tenant
from atelier.runtime.errors import FailedPreconditionError, Violations
from atelier.runtime.jobs import JobHandle
from atelier.runtime.server import Runtime, ServiceSpec
from atelier.runtime.status import cancellation_from

SERVICE = "atelier.testing.v1.EchoService"
MAX_REPEAT = 10


class EchoServicer(echo_pb2_grpc.EchoServiceServicer):  # type: ignore[misc]
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def Echo(self, request: Any, context: Any) -> Any:
        v = Violations()
        v.check(bool(request.text), "text", "required")
        v.check(0 <= request.repeat <= MAX_REPEAT, "repeat", f"must be 0..{MAX_REPEAT}")
        v.raise_if_any()
        return echo_pb2.EchoResponse(text=request.text * max(1, request.repeat), tenant=current_tenant())

    def Sleep(self, request: Any, context: Any) -> Any:
        token = cancellation_from(context)
        started = time.monotonic()
        cancelled = token.wait(request.seconds)
        return echo_pb2.SleepResponse(slept_s=time.monotonic() - started, cancelled=cancelled)

    def Count(self, request: Any, context: Any) -> Iterator[Any]:
        for i in range(request.to):
            if i == 3 and request.to == 13:
                raise FailedPreconditionError("13 is unlucky")
            yield echo_pb2.CountResponse(value=i)

    def Sum(self, request_iterator: Any, context: Any) -> Any:
        return echo_pb2.CountResponse(value=sum(r.value for r in request_iterator))

    def StartJob(self, request: Any, context: Any) -> Any:
        def work(job: JobHandle) -> Any:
            for step in range(request.steps):
                job.progress(
                    (step + 1) / request.steps,
                    f"step {step + 1}",
                    step + 1,
                    request.steps,
                    partial=echo_pb2.CountResponse(value=step + 1),
                )
                time.sleep(request.step_s)
                if request.fail:
                    raise FailedPreconditionError("asked to fail")
            return echo_pb2.CountResponse(value=request.steps)

        name = self.runtime.jobs().submit("count", work)
        return self.runtime.jobs().get(name)


def build(runtime: Runtime) -> ServiceSpec:
    load_s = float(os.environ.get("ECHO_LOAD_SECONDS", "0"))
    runtime.jobs()
    return ServiceSpec(
        name="echo",
        servicers=[(echo_pb2_grpc.add_EchoServiceServicer_to_server, EchoServicer(runtime))],
        service_names=[SERVICE],
        load=(lambda: time.sleep(load_s)) if load_s else None,
        close=_close,
    )


def _close() -> None:
    # Like MediaPipe's close(), this needs a thread pool: it fails once interpreter shutdown has begun.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(time.sleep, 0.2).result()
    print("echo closed cleanly", flush=True)
