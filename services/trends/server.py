"""The trends service's registration with the runtime (placeholder until issue #6 lands).

Every RPC answers UNIMPLEMENTED with a message naming the issue; health reports SERVING so
`make run` shows the platform up, and no RPC returns made-up data.
"""

from __future__ import annotations

from atelier.trends.v1 import trends_pb2, trends_pb2_grpc
from atelier.runtime.server import Runtime, ServiceSpec, unimplemented_servicer

SERVICE_NAME = trends_pb2.DESCRIPTOR.services_by_name["TrendsService"].full_name


def build(runtime: Runtime) -> ServiceSpec:
    servicer = unimplemented_servicer(trends_pb2_grpc.TrendsServiceServicer, SERVICE_NAME, "#6")
    return ServiceSpec(
        name="trends",
        servicers=[(trends_pb2_grpc.add_TrendsServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
    )
