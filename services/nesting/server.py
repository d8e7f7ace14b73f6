"""The nesting service's registration with the runtime (placeholder until issue #3 lands).

Every RPC answers UNIMPLEMENTED with a message naming the issue; health reports SERVING so
`make run` shows the platform up, and no RPC returns made-up data.
"""

from __future__ import annotations

from atelier.nesting.v1 import nesting_pb2, nesting_pb2_grpc
from atelier.runtime.server import Runtime, ServiceSpec, unimplemented_servicer

SERVICE_NAME = nesting_pb2.DESCRIPTOR.services_by_name["NestingService"].full_name


def build(runtime: Runtime) -> ServiceSpec:
    servicer = unimplemented_servicer(nesting_pb2_grpc.NestingServiceServicer, SERVICE_NAME, "#3")
    return ServiceSpec(
        name="nesting",
        servicers=[(nesting_pb2_grpc.add_NestingServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
    )
