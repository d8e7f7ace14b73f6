"""The nesting service's registration with the runtime: marker jobs on spyrrow, imports, exports."""

from __future__ import annotations

import importlib.util

from atelier.nesting.library import PatternLibrary
from atelier.nesting.servicer import NestingServicer
from atelier.nesting.v1 import nesting_pb2, nesting_pb2_grpc
from atelier.runtime.server import Runtime, ServiceSpec

SERVICE_NAME = nesting_pb2.DESCRIPTOR.services_by_name["NestingService"].full_name


def build(runtime: Runtime) -> ServiceSpec:
    # Solver threads per marker job (ATELIER_NESTING_SOLVER_WORKERS); 0 lets spyrrow use every core.
    workers = int(runtime.config.setting("SOLVER_WORKERS", "2")) or None
    servicer = NestingServicer(runtime.jobs(), workers, PatternLibrary(runtime.store))

    def load() -> None:
        # Ready means the solver can run: spyrrow is importable (the worker process imports it).
        if importlib.util.find_spec("spyrrow") is None:
            raise RuntimeError("spyrrow is not installed; the nesting service cannot solve markers")

    return ServiceSpec(
        name="nesting",
        servicers=[(nesting_pb2_grpc.add_NestingServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
        load=load,
    )
