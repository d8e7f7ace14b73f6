"""The inspection service's registration with the runtime.

Settings (env ATELIER_INSPECTION_<NAME>): THREADS (CPU threads for OpenCV and torch, default 2),
CONCURRENCY (images inspected at once, default 2).
"""

from __future__ import annotations

import cv2
import torch

from atelier.inspection.profiles import ProfileStore
from atelier.inspection.servicer import InspectionServicer
from atelier.inspection.v1 import inspection_pb2, inspection_pb2_grpc
from atelier.runtime.server import Runtime, ServiceSpec

SERVICE_NAME = inspection_pb2.DESCRIPTOR.services_by_name["InspectionService"].full_name


def build(runtime: Runtime) -> ServiceSpec:
    profiles = ProfileStore(runtime.store, runtime.data_dir, runtime.artefacts)
    servicer = InspectionServicer(profiles, concurrency=int(runtime.config.setting("CONCURRENCY", "2")))

    def load() -> None:
        threads = int(runtime.config.setting("THREADS", "2"))
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        profiles.migrate()

    return ServiceSpec(
        name="inspection",
        servicers=[(inspection_pb2_grpc.add_InspectionServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
        load=load,
    )
