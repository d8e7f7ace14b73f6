"""Mapping of domain errors to gRPC status codes with ``google.rpc`` details."""

from __future__ import annotations

import time

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from atelier.runtime.context import Cancellation
from atelier.runtime.errors import (
    AtelierError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _retry_info(seconds: float) -> any_pb2.Any:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    return _pack(error_details_pb2.RetryInfo(retry_delay=delay))


def to_status(error: AtelierError) -> status_pb2.Status:
    """The google.rpc.Status for a domain error, details included."""
    code = code_pb2.Code.Value(error.code_name)
    status = status_pb2.Status(code=code, message=error.message)
    if isinstance(error, InvalidArgumentError) and error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.violations
            ]
        )
        status.details.append(_pack(bad_request))
    elif isinstance(error, NotFoundError) and (error.resource_type or error.resource_name):
        info = error_details_pb2.ResourceInfo(
            resource_type=error.resource_type, resource_name=error.resource_name, description=error.message
        )
        status.details.append(_pack(info))
    elif isinstance(error, ResourceExhaustedError | UnavailableError) and error.retry_after_s:
        status.details.append(_retry_info(error.retry_after_s))
    return status


def abort(context: grpc.ServicerContext, error: AtelierError) -> None:
    """Ends the RPC with the error's status (raises, as ``context.abort`` does)."""
    context.abort_with_status(rpc_status.to_status(to_status(error)))


def cancellation_from(context: grpc.ServicerContext) -> Cancellation:
    """A Cancellation that fires when the client cancels or the call's deadline passes."""
    remaining = context.time_remaining()
    deadline = None if remaining is None else time.monotonic() + remaining
    token = Cancellation(deadline_monotonic=deadline, is_active=context.is_active)
    context.add_callback(
        lambda: token.cancel("the call ended (cancelled by the client or past its deadline)")
    )
    return token


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """Client side: the (field, description) pairs of a BadRequest in an error's details."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    found: list[tuple[str, str]] = []
    if status is None:
        return found
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.extend((v.field, v.description) for v in bad_request.field_violations)
    return found
