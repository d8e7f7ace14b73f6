"""The runtime under load and faults: SIGTERM with stuck work, load shedding, deadlines that stop work."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from atelier.runtime.server import Server
from tests.integration.test_runtime_server import build_echo, echo, metric_value, scrape, stub


def retry_delay_s(error: grpc.RpcError) -> float | None:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_sigterm_exits_within_grace_with_a_stuck_call_and_a_stuck_worker_process(
    service_process: Callable[..., Any], tmp_path: Path
) -> None:
    pb2, _ = echo()
    markers = tmp_path / "markers"
    markers.mkdir()
    grace = 2.0
    proc, port, _ = service_process(
        "echo",
        spec="stuck_service:build",
        env={"ATELIER_ECHO_GRACE_SECONDS": str(grace), "STUCK_MARKER_DIR": str(markers)},
    )
    errors: list[grpc.StatusCode] = []

    def call(fn: Callable[[], Any]) -> None:
        try:
            fn()
        except grpc.RpcError as exc:
            errors.append(exc.code())

    calls = [
        threading.Thread(target=call, args=(lambda: stub(port).Sleep(pb2.SleepRequest(seconds=3600)),)),
        threading.Thread(target=call, args=(lambda: stub(port).Echo(pb2.EchoRequest(text="spin")),)),
    ]
    for thread in calls:
        thread.start()
    wait_for(lambda: (markers / "thread").exists() and (markers / "spinner").exists(), 60, "stuck calls")
    spinner = psutil.Process(int((markers / "spinner").read_text()))
    children = psutil.Process(proc.pid).children(recursive=True)
    assert spinner in children and spinner.is_running()

    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=grace + 10)
    elapsed = time.monotonic() - signalled
    assert elapsed <= grace + 5, f"the process took {elapsed:.1f} s to exit after SIGTERM"
    assert elapsed >= grace - 0.5  # in-flight calls had their grace period
    # No child outlives the service: the spinning worker and the forkserver are gone.
    _, alive = psutil.wait_procs(children, timeout=2)
    assert not alive, alive
    for thread in calls:
        thread.join(timeout=5)
    # The callers were told (the calls were cancelled or the connection went), not left hanging.
    assert len(errors) == 2 and set(errors) <= {grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE}
    output = proc.communicate()[0].decode(errors="replace")
    assert "killed" in output and "abandoned calls" in output, output[-3000:]


def test_overload_is_refused_with_retry_info_while_health_and_polling_answer(
    start_server: Callable[..., Server],
) -> None:
    pb2, _ = echo()
    server = start_server("echo", build_echo, max_concurrent_rpcs=3)
    assert server.limits.per_tenant == 3  # ceil(0.75 x 3)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    from echo_pb2_grpc import EchoServiceStub  # type: ignore[import-not-found]

    echo_stub = EchoServiceStub(channel)
    job = echo_stub.StartJob(pb2.StartJobRequest(steps=1, step_s=0.01))
    busy: list[Any] = [
        echo_stub.Sleep.future(pb2.SleepRequest(seconds=3), timeout=20, metadata=[("x-atelier-tenant", "a")])
        for _ in range(3)
    ]
    wait_for(lambda: server.admission.active == 3, 10, "three calls admitted")

    with pytest.raises(grpc.RpcError) as refused:
        echo_stub.Echo(pb2.EchoRequest(text="one too many"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    delay = retry_delay_s(refused.value)
    assert delay is not None and 0.1 <= delay <= 30, delay
    assert "overloaded" in (refused.value.details() or "")

    # Probes and operation polls still answer at once.
    health = health_pb2_grpc.HealthStub(channel)
    started = time.monotonic()
    assert (
        health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    ops = operations_pb2_grpc.OperationsStub(channel)
    ops.GetOperation(operations_pb2.GetOperationRequest(name=job.name), timeout=2)
    assert time.monotonic() - started < 1.0

    text = scrape(server.metrics_port)
    assert (
        metric_value(text, "grpc_server_handled_total", grpc_method="Echo", grpc_code="RESOURCE_EXHAUSTED")
        >= 1
    )
    assert metric_value(text, "atelier_rpc_shed_total", service="echo", limit="service") >= 1
    for future in busy:
        assert future.result().slept_s >= 2.9  # the admitted calls were not disturbed
    # Capacity is back once they end.
    assert echo_stub.Echo(pb2.EchoRequest(text="again"), timeout=5).text == "again"


def test_one_tenant_cannot_take_every_slot(start_server: Callable[..., Server]) -> None:
    pb2, _ = echo()
    server = start_server("echo", build_echo, max_concurrent_rpcs=4)
    assert server.limits.per_tenant == 3
    from echo_pb2_grpc import EchoServiceStub  # type: ignore[import-not-found]

    echo_stub = EchoServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    greedy = [("x-atelier-tenant", "greedy")]
    busy = [
        echo_stub.Sleep.future(pb2.SleepRequest(seconds=2), timeout=20, metadata=greedy) for _ in range(3)
    ]
    wait_for(lambda: server.admission.active == 3, 10, "three calls admitted")
    with pytest.raises(grpc.RpcError) as refused:
        echo_stub.Echo(pb2.EchoRequest(text="x"), timeout=5, metadata=greedy)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "tenant 'greedy'" in (refused.value.details() or "") and retry_delay_s(refused.value)
    # Another tenant still gets the slot the greedy one cannot take.
    reply = echo_stub.Echo(pb2.EchoRequest(text="y"), timeout=5, metadata=[("x-atelier-tenant", "polite")])
    assert reply.tenant == "polite"
    assert (
        metric_value(scrape(server.metrics_port), "atelier_rpc_shed_total", service="echo", limit="tenant")
        >= 1
    )
    for future in busy:
        future.result()
