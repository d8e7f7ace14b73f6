"""The recommendations service's registration with the runtime (placeholder until issue #7 lands).

Every RPC answers UNIMPLEMENTED with a message naming the issue; health reports SERVING so
`make run` shows the platform up, and no RPC returns made-up data.
"""

from __future__ import annotations

from atelier.recommendations.v1 import recommendations_pb2, recommendations_pb2_grpc
from atelier.runtime.server import Runtime, ServiceSpec, unimplemented_servicer

SERVICE_NAME = recommendations_pb2.DESCRIPTOR.services_by_name["RecommendationsService"].full_name


def build(runtime: Runtime) -> ServiceSpec:
    servicer = unimplemented_servicer(recommendations_pb2_grpc.RecommendationsServiceServicer, SERVICE_NAME, "#7")
    return ServiceSpec(
        name="recommendations",
        servicers=[(recommendations_pb2_grpc.add_RecommendationsServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
    )
