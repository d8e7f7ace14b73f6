"""The body service's registration with the runtime (placeholder until issue #5 lands).

Every RPC answers UNIMPLEMENTED with a message naming the issue; health reports SERVING so
`make run` shows the platform up, and no RPC returns made-up data.
"""

from __future__ import annotations

from atelier.body.v1 import body_pb2, body_pb2_grpc
from atelier.runtime.server import Runtime, ServiceSpec, unimplemented_servicer

SERVICE_NAME = body_pb2.DESCRIPTOR.services_by_name["BodyService"].full_name


def build(runtime: Runtime) -> ServiceSpec:
    servicer = unimplemented_servicer(body_pb2_grpc.BodyServiceServicer, SERVICE_NAME, "#5")
    return ServiceSpec(
        name="body",
        servicers=[(body_pb2_grpc.add_BodyServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
    )
