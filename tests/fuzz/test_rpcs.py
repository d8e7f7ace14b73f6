"""Every RPC of every service, with requests drawn from its descriptor (valid-shaped and malformed):
the status is never INTERNAL or UNKNOWN, jobs the fuzz started never fail with INTERNAL, and every
server stays healthy."""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.longrunning import operations_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given

from tests.fuzz.conftest import SERVICES
from tests.fuzz.strategies import message_class, requests

CALL_TIMEOUT_S = 30.0
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
JOB_SERVICES = ("nesting", "trends", "recommendations")


def _rpcs() -> Iterator[tuple[str, Any]]:
    for service in SERVICES:
        module = importlib.import_module(f"atelier.{service}.v1.{service}_pb2")
        for svc in module.DESCRIPTOR.services_by_name.values():
            for method in svc.methods:
                yield service, method
    operations = operations_pb2.DESCRIPTOR.services_by_name["Operations"]
    for service in JOB_SERVICES:
        for method in operations.methods:
            yield service, method


RPCS = list(_rpcs())


def call(channel: grpc.Channel, method: Any, request: Any) -> grpc.StatusCode:
    path = f"/{method.containing_service.full_name}/{method.name}"
    out = message_class(method.output_type)
    kwargs = dict(request_serializer=lambda m: m.SerializeToString(), response_deserializer=out.FromString)
    metadata = (("x-request-id", "fuzz"),)
    try:
        if method.client_streaming and method.server_streaming:
            list(
                channel.stream_stream(path, **kwargs)(
                    iter([request, request]), timeout=CALL_TIMEOUT_S, metadata=metadata
                )
            )
        elif method.client_streaming:
            channel.stream_unary(path, **kwargs)(
                iter([request, request]), timeout=CALL_TIMEOUT_S, metadata=metadata
            )
        elif method.server_streaming:
            for _ in channel.unary_stream(path, **kwargs)(request, timeout=CALL_TIMEOUT_S, metadata=metadata):
                pass
        else:
            channel.unary_unary(path, **kwargs)(request, timeout=CALL_TIMEOUT_S, metadata=metadata)
    except grpc.RpcError as exc:
        code = exc.code()
        assert code not in BAD, (
            f"{path} answered {code.name}: {exc.details()}\nrequest: {str(request)[:2000]}"
        )
        return code  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("service", "method"), RPCS, ids=[f"{s}.{m.containing_service.name}.{m.name}" for s, m in RPCS]
)
def test_rpc_never_answers_internal(platform: dict[str, grpc.Channel], service: str, method: Any) -> None:
    strategy = requests(message_class(method.input_type))

    @given(request=strategy)
    def run(request: Any) -> None:
        call(platform[service], method, request)

    run()


@pytest.mark.parametrize("service", SERVICES)
def test_zz_servers_stay_healthy_and_jobs_fail_in_words(
    platform: dict[str, grpc.Channel], service: str
) -> None:
    """Runs after the fuzz (test order in the file): health, and every finished job's error."""
    health = health_pb2_grpc.HealthStub(platform[service])
    assert (
        health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    if service not in JOB_SERVICES:
        return
    from google.longrunning import operations_pb2_grpc

    ops = operations_pb2_grpc.OperationsStub(platform[service])
    deadline = time.monotonic() + 20
    token = ""
    seen = 0
    while True:
        page = ops.ListOperations(
            operations_pb2.ListOperationsRequest(page_size=200, page_token=token), timeout=10
        )
        for op in page.operations:
            seen += 1
            if not op.done and time.monotonic() < deadline:
                op = ops.WaitOperation(
                    operations_pb2.WaitOperationRequest(name=op.name, timeout={"seconds": 5}), timeout=10
                )
            if not op.done:
                ops.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name), timeout=10)
                continue
            assert op.error.code != grpc.StatusCode.INTERNAL.value[0], f"{op.name}: {op.error.message}"
            assert "Traceback" not in op.error.message and ".py" not in op.error.message, op.error.message
        token = page.next_page_token
        if not token:
            break
