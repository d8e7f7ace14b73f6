"""The ``google.longrunning.Operations`` service, served by every server that runs jobs."""

from __future__ import annotations

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import empty_pb2

from atelier.runtime import limits
from atelier.runtime.errors import InvalidArgumentError, Violations
from atelier.runtime.jobs import JobManager
from atelier.runtime.status import cancellation_from

MAX_WAIT_S = 600.0


def _require_name(name: str) -> None:
    v = Violations()
    v.check(bool(name), "name", "required: the operation name returned when the job was started")
    v.check(not name or name.startswith("operations/"), "name", "must look like operations/<service>/<id>")
    v.raise_if_any("the operation name is invalid")


class OperationsServicer(operations_pb2_grpc.OperationsServicer):
    def __init__(self, jobs: JobManager) -> None:
        self.jobs = jobs

    def GetOperation(
        self, request: operations_pb2.GetOperationRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        _require_name(request.name)
        return self.jobs.get(request.name)

    def ListOperations(
        self, request: operations_pb2.ListOperationsRequest, context: grpc.ServicerContext
    ) -> operations_pb2.ListOperationsResponse:
        v = Violations()
        limits.page_offset(v, request.page_token)  # jobs.list reads the offset back from the token
        v.raise_if_any()
        kind = ""
        if request.filter:
            key, _, value = request.filter.partition("=")
            if key.strip() != "kind" or not value.strip():
                raise InvalidArgumentError.for_field("filter", 'only "kind=<kind>" is supported')
            kind = value.strip().strip('"')
        ops, token = self.jobs.list(request.page_size, request.page_token, kind)
        return operations_pb2.ListOperationsResponse(operations=ops, next_page_token=token)

    def DeleteOperation(
        self, request: operations_pb2.DeleteOperationRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        _require_name(request.name)
        self.jobs.delete(request.name)
        return empty_pb2.Empty()

    def CancelOperation(
        self, request: operations_pb2.CancelOperationRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        _require_name(request.name)
        self.jobs.cancel(request.name)
        return empty_pb2.Empty()

    def WaitOperation(
        self, request: operations_pb2.WaitOperationRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        _require_name(request.name)
        timeout = request.timeout.ToTimedelta().total_seconds() if request.HasField("timeout") else MAX_WAIT_S
        if timeout < 0:
            raise InvalidArgumentError.for_field("timeout", "must be >= 0")
        remaining = cancellation_from(context).time_remaining_s()
        if remaining is not None:
            timeout = min(timeout, remaining)
        return self.jobs.wait(request.name, min(timeout, MAX_WAIT_S))
