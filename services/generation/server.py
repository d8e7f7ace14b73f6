"""The generation service's registration with the runtime (placeholder until issue #8 lands).

Every RPC answers UNIMPLEMENTED with a message naming the issue; health reports SERVING so
`make run` shows the platform up, and no RPC returns made-up data.
"""

from __future__ import annotations

from atelier.generation.v1 import generation_pb2, generation_pb2_grpc
from atelier.runtime.server import Runtime, ServiceSpec, unimplemented_servicer

SERVICE_NAME = generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name


def build(runtime: Runtime) -> ServiceSpec:
    servicer = unimplemented_servicer(generation_pb2_grpc.GenerationServiceServicer, SERVICE_NAME, "#8")
    return ServiceSpec(
        name="generation",
        servicers=[(generation_pb2_grpc.add_GenerationServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
    )
