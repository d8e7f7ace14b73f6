"""The inspection service's registration with the runtime (placeholder until issue #4 lands).

Every RPC answers UNIMPLEMENTED with a message naming the issue; health reports SERVING so
`make run` shows the platform up, and no RPC returns made-up data.
"""

from __future__ import annotations

from atelier.inspection.v1 import inspection_pb2, inspection_pb2_grpc
from atelier.runtime.server import Runtime, ServiceSpec, unimplemented_servicer

SERVICE_NAME = inspection_pb2.DESCRIPTOR.services_by_name["InspectionService"].full_name


def build(runtime: Runtime) -> ServiceSpec:
    servicer = unimplemented_servicer(inspection_pb2_grpc.InspectionServiceServicer, SERVICE_NAME, "#4")
    return ServiceSpec(
        name="inspection",
        servicers=[(inspection_pb2_grpc.add_InspectionServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
    )
