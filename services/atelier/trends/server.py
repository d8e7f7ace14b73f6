"""The trends service's registration with the runtime.

Settings (environment):
  ATELIER_TRENDS_FIT_WORKERS   worker processes fitting per-series models (default: the cores
                               this process may use)
  ATELIER_TRENDS_DASK_SCHEDULER
                               address of a Dask scheduler (tcp://host:8786): the per-series fits
                               run on that cluster's workers instead (dask_pool.py); empty (the
                               default): local worker processes
"""

from __future__ import annotations

from atelier.runtime.server import Runtime, ServiceSpec
from atelier.trends import global_model
from atelier.trends.dask_pool import DaskPool
from atelier.trends.forecasting import FitPool, default_workers, shared_pool
from atelier.trends.servicer import TrendsServicer
from atelier.trends.store import TrendsStore
from atelier.trends.v1 import trends_pb2, trends_pb2_grpc

SERVICE_NAME = trends_pb2.DESCRIPTOR.services_by_name["TrendsService"].full_name


def build(runtime: Runtime) -> ServiceSpec:
    store = TrendsStore(runtime.store)
    scheduler = runtime.config.setting("DASK_SCHEDULER", "")
    pool: FitPool | DaskPool = (
        DaskPool(scheduler)
        if scheduler
        else shared_pool(int(runtime.config.setting("FIT_WORKERS", str(default_workers()))))
    )
    servicer = TrendsServicer(store, pool, runtime.jobs())

    def load() -> None:
        pool.warm()
        global_model.preload()

    return ServiceSpec(
        name="trends",
        servicers=[(trends_pb2_grpc.add_TrendsServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
        # SERVING once the fitting workers have started and compiled their models, and the global
        # model's library is imported.
        load=load,
    )
