"""The recommendations service's registration with the runtime.

Health turns SERVING once every tenant's serving state (catalogue, active model, fold-in of the
events since that model) is in memory.
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits

from atelier.recommendations.engine import Engine
from atelier.recommendations.servicer import RecommendationsServicer
from atelier.recommendations.store import RecsStore
from atelier.recommendations.v1 import recommendations_pb2, recommendations_pb2_grpc
from atelier.runtime.server import Runtime, ServiceSpec

SERVICE_NAME = recommendations_pb2.DESCRIPTOR.services_by_name["RecommendationsService"].full_name


def build(runtime: Runtime) -> ServiceSpec:
    # Requests are one matrix-vector product each and run concurrently on the RPC threads; a BLAS
    # thread pool per call would only fight them for the cores (implicit recommends the same).
    import implicit.cpu.als  # noqa: F401  (loads its BLAS first, so the limit covers it)

    threadpool_limits(1, "blas")
    store = RecsStore(runtime.store)
    engine = Engine(store, artefacts=runtime.artefacts)
    models_dir = runtime.config.setting("MODELS_DIR", str(runtime.data_dir / "models"))
    servicer = RecommendationsServicer(store, engine, runtime.jobs(), runtime.config.database_url, models_dir)
    return ServiceSpec(
        name="recommendations",
        servicers=[(recommendations_pb2_grpc.add_RecommendationsServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
        load=engine.load_all,
    )
