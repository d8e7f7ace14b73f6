"""The runtime over real sockets: health, reflection, metrics, errors, deadlines, drain, jobs."""

from __future__ import annotations

import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from atelier.common.v1 import progress_pb2
from atelier.runtime.keys import Role, new_key, write_keys_file
from atelier.runtime.server import Server
from atelier.runtime.status import field_violations
from tests.conftest import wait_serving


def echo() -> Any:
    import echo_pb2  # type: ignore[import-not-found]
    import echo_pb2_grpc  # type: ignore[import-not-found]

    return echo_pb2, echo_pb2_grpc


def build_echo(runtime: Any) -> Any:
    import echo_service  # type: ignore[import-not-found]

    return echo_service.build(runtime)


@pytest.fixture
def echo_server(start_server: Callable[..., Server]) -> Server:
    return start_server("echo", build_echo)


def stub(server_or_port: Server | int) -> Any:
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
    _, pb2_grpc = echo()
    return pb2_grpc.EchoServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def metric_value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_bad_field_is_invalid_argument_with_field_violations(echo_server: Server) -> None:
    pb2, _ = echo()
    with pytest.raises(grpc.RpcError) as err:
        stub(echo_server).Echo(pb2.EchoRequest(text="", repeat=99))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = dict(field_violations(err.value))
    assert violations == {"text": "required", "repeat": "must be 0..10"}
    assert "text: required" in err.value.details()


def test_tenant_and_request_id_metadata(echo_server: Server) -> None:
    pb2, _ = echo()
    reply, call = stub(echo_server).Echo.with_call(
        pb2.EchoRequest(text="hi"), metadata=[("x-atelier-tenant", "acme"), ("x-request-id", "req-1")]
    )
    assert reply.tenant == "acme"
    assert ("x-request-id", "req-1") in tuple(call.trailing_metadata())
    with pytest.raises(grpc.RpcError) as err:
        stub(echo_server).Echo(pb2.EchoRequest(text="hi"), metadata=[("x-atelier-tenant", "Bad Tenant!")])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_domain_error_in_a_stream_maps_to_its_code(echo_server: Server) -> None:
    pb2, _ = echo()
    values = []
    with pytest.raises(grpc.RpcError) as err:
        for reply in stub(echo_server).Count(pb2.CountRequest(to=13)):
            values.append(reply.value)
    assert values == [0, 1, 2]
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == "13 is unlucky"
    total = stub(echo_server).Sum(iter([pb2.CountResponse(value=v) for v in (1, 2, 3)]))
    assert total.value == 6


def test_deadline_exceeded_and_work_stops(echo_server: Server) -> None:
    pb2, _ = echo()
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        stub(echo_server).Sleep(pb2.SleepRequest(seconds=30), timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5
    # The handler saw the deadline through its Cancellation: the server records the call as ended.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = scrape(echo_server.metrics_port)
        if metric_value(
            text, "grpc_server_handled_total", grpc_method="Sleep", grpc_code="DEADLINE_EXCEEDED"
        ):
            break
        time.sleep(0.1)
    else:
        pytest.fail("Sleep was not recorded as DEADLINE_EXCEEDED:\n" + text)


def test_metrics_count_calls(echo_server: Server) -> None:
    pb2, _ = echo()
    labels = dict(grpc_service="atelier.testing.v1.EchoService", grpc_method="Echo")
    before = scrape(echo_server.metrics_port)
    for _ in range(3):
        stub(echo_server).Echo(pb2.EchoRequest(text="x"))
    with pytest.raises(grpc.RpcError):
        stub(echo_server).Echo(pb2.EchoRequest(text=""))
    after = scrape(echo_server.metrics_port)

    def delta(name: str, **extra: str) -> float:
        return metric_value(after, name, **labels, **extra) - metric_value(before, name, **labels, **extra)

    assert delta("grpc_server_started_total") == 4
    assert delta("grpc_server_handled_total", grpc_code="OK") == 3
    assert delta("grpc_server_handled_total", grpc_code="INVALID_ARGUMENT") == 1
    assert delta("grpc_server_handling_seconds_count") == 4
    assert metric_value(after, "atelier_service_ready", service="echo") == 1


def test_reflection_lists_services(echo_server: Server) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{echo_server.port}")
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {
        "atelier.testing.v1.EchoService",
        "grpc.health.v1.Health",
        "google.longrunning.Operations",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names


def test_health_not_serving_until_loaded(
    start_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECHO_LOAD_SECONDS", "1.5")
    server = start_server("echo", build_echo, wait=False)
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    request = health_pb2.HealthCheckRequest(service="atelier.testing.v1.EchoService")
    assert health.Check(request).status == health_pb2.HealthCheckResponse.NOT_SERVING
    wait_serving(f"127.0.0.1:{server.port}", "atelier.testing.v1.EchoService", timeout_s=10)
    assert health.Check(request).status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_api_keys_required_when_configured(start_server: Callable[..., Server], tmp_path: Path) -> None:
    pb2, _ = echo()
    key, record = new_key(["acme"], Role.WRITE)
    write_keys_file(tmp_path / "keys.json", [record])
    server = start_server("echo", build_echo, api_keys_file=str(tmp_path / "keys.json"))
    with pytest.raises(grpc.RpcError) as err:
        stub(server).Echo(pb2.EchoRequest(text="x"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    reply = stub(server).Echo(pb2.EchoRequest(text="x"), metadata=[("authorization", f"Bearer {key}")])
    assert (reply.text, reply.tenant) == ("x", "acme")  # the key's tenant, no header needed
    # Probes stay open.
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING


def _operation_state(op: operations_pb2.Operation) -> int:
    meta = progress_pb2.OperationMetadata()
    op.metadata.Unpack(meta)
    return meta.progress.state


def test_job_runs_reports_progress_and_result(echo_server: Server) -> None:
    pb2, _ = echo()
    op = stub(echo_server).StartJob(pb2.StartJobRequest(steps=5, step_s=0.05))
    assert op.name.startswith("operations/echo/") and not op.done
    ops = operations_pb2_grpc.OperationsStub(grpc.insecure_channel(f"127.0.0.1:{echo_server.port}"))
    done = ops.WaitOperation(
        operations_pb2.WaitOperationRequest(name=op.name, timeout=duration_pb2.Duration(seconds=10))
    )
    assert done.done and _operation_state(done) == progress_pb2.JOB_STATE_SUCCEEDED
    result = pb2.CountResponse()
    done.response.Unpack(result)
    assert result.value == 5
    listed = ops.ListOperations(operations_pb2.ListOperationsRequest(filter="kind=count"))
    assert op.name in [o.name for o in listed.operations]
    # Other tenants do not see it.
    with pytest.raises(grpc.RpcError) as err:
        ops.GetOperation(
            operations_pb2.GetOperationRequest(name=op.name), metadata=[("x-atelier-tenant", "other")]
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_job_cancel_and_failure(echo_server: Server) -> None:
    pb2, _ = echo()
    ops = operations_pb2_grpc.OperationsStub(grpc.insecure_channel(f"127.0.0.1:{echo_server.port}"))
    op = stub(echo_server).StartJob(pb2.StartJobRequest(steps=200, step_s=0.05))
    time.sleep(0.2)
    ops.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name))
    done = ops.WaitOperation(
        operations_pb2.WaitOperationRequest(name=op.name, timeout=duration_pb2.Duration(seconds=10))
    )
    assert done.done and _operation_state(done) == progress_pb2.JOB_STATE_CANCELLED
    assert done.error.code == grpc.StatusCode.CANCELLED.value[0]

    failed = stub(echo_server).StartJob(pb2.StartJobRequest(steps=3, step_s=0.01, fail=True))
    done = ops.WaitOperation(
        operations_pb2.WaitOperationRequest(name=failed.name, timeout=duration_pb2.Duration(seconds=10))
    )
    assert _operation_state(done) == progress_pb2.JOB_STATE_FAILED
    assert done.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert done.error.message == "asked to fail"
    with pytest.raises(grpc.RpcError) as err:
        ops.GetOperation(operations_pb2.GetOperationRequest(name="nonsense"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_sigterm_drains_in_flight_calls_and_refuses_new_ones(service_process: Callable[..., Any]) -> None:
    pb2, _ = echo()
    proc, port, _metrics_port = service_process(
        "echo", spec="echo_service:build", env={"ATELIER_ECHO_GRACE_SECONDS": "10"}
    )
    results: dict[str, Any] = {}

    def slow_call() -> None:
        try:
            results["reply"] = stub(port).Sleep(pb2.SleepRequest(seconds=1.5), timeout=20)
        except grpc.RpcError as exc:
            results["error"] = exc

    worker = threading.Thread(target=slow_call)
    worker.start()
    time.sleep(0.5)  # the call is in flight
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    with pytest.raises(grpc.RpcError) as refused:
        stub(port).Echo(pb2.EchoRequest(text="late"), timeout=5)
        health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    worker.join(timeout=20)
    assert "error" not in results, results.get("error")
    assert results["reply"].slept_s >= 1.4 and not results["reply"].cancelled
    assert proc.wait(timeout=20) == 0
    output = proc.communicate()[0].decode(errors="replace")
    assert "echo closed cleanly" in output and "Traceback" not in output, output  # close() ran to the end


def test_restart_keeps_finished_jobs_and_fails_interrupted_ones(service_process: Callable[..., Any]) -> None:
    pb2, _ = echo()
    # A job's lease outlives its process by up to a lease (another replica may own a job with the
    # same database): a short one here, so the restarted process fails the job a second later.
    lease = {"ATELIER_ECHO_JOB_LEASE_SECONDS": "1"}
    proc, port, _ = service_process(
        "echo", spec="echo_service:build", env={"ATELIER_ECHO_GRACE_SECONDS": "0", **lease}
    )
    ops = operations_pb2_grpc.OperationsStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    finished = stub(port).StartJob(pb2.StartJobRequest(steps=2, step_s=0.01))
    ops.WaitOperation(
        operations_pb2.WaitOperationRequest(name=finished.name, timeout=duration_pb2.Duration(seconds=10))
    )
    running = stub(port).StartJob(pb2.StartJobRequest(steps=1000, step_s=0.05))
    time.sleep(0.3)
    proc.kill()  # no goodbye: as when a node dies
    proc.wait()

    _, port2, _ = service_process("echo", spec="echo_service:build", env=lease)
    ops2 = operations_pb2_grpc.OperationsStub(grpc.insecure_channel(f"127.0.0.1:{port2}"))
    kept = ops2.GetOperation(operations_pb2.GetOperationRequest(name=finished.name))
    assert kept.done and _operation_state(kept) == progress_pb2.JOB_STATE_SUCCEEDED
    deadline = time.monotonic() + 5
    lost = ops2.GetOperation(operations_pb2.GetOperationRequest(name=running.name))
    while not lost.done and time.monotonic() < deadline:
        time.sleep(0.1)
        lost = ops2.GetOperation(operations_pb2.GetOperationRequest(name=running.name))
    assert lost.done and _operation_state(lost) == progress_pb2.JOB_STATE_FAILED
    assert lost.error.code == grpc.StatusCode.ABORTED.value[0]
    assert "submit it again" in lost.error.message
