"""Server construction and lifecycle, the same for every service.

    python -m atelier.runtime.server nesting           # one service, configured from the env
    python -m atelier.runtime.server --spec mod:build  # any build() function (tests use this)

Lifecycle: metrics up; servicers, health, reflection and operations registered; port bound;
health NOT_SERVING while ``ServiceSpec.load`` runs (models, profiles, indexes), SERVING after.
The health name ``atelier.readiness`` also needs the database to answer (runtime.readiness).
Calls over the concurrency limits are refused with RESOURCE_EXHAUSTED and RetryInfo
(runtime.shedding).

On SIGTERM or SIGINT health flips to NOT_SERVING, new calls are refused, in-flight calls and
running jobs get ``ATELIER_GRACE_SECONDS`` to finish; then the calls are cancelled (their
Cancellation fires, so the work stops), jobs are cancelled, close() runs, child processes are
killed, and the process exits within grace + 5 s even if a call is stuck (runtime.shutdown).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from atelier.runtime import logs, metrics, shutdown, tls
from atelier.runtime.artefacts import ArtefactStore, open_artefacts
from atelier.runtime.auth import Authoriser, InsecureConfigError, load_key_store, startup_checks
from atelier.runtime.config import ServiceConfig
from atelier.runtime.errors import UnimplementedError
from atelier.runtime.interceptor import ServerInterceptor
from atelier.runtime.jobs import DEFAULT_LEASE_S, JobManager, default_replica_id
from atelier.runtime.operations import OperationsServicer
from atelier.runtime.readiness import READINESS, Readiness
from atelier.runtime.shedding import Admission, Limits, thread_pool_size
from atelier.runtime.storage import Store

log = logging.getLogger("atelier.server")

OPERATIONS_SERVICE = operations_pb2.DESCRIPTOR.services_by_name["Operations"].full_name


class Runtime:
    """What the runtime offers a service's build(): its configuration, store and jobs."""

    def __init__(
        self, config: ServiceConfig, authoriser: Authoriser | None = None, admission: Admission | None = None
    ) -> None:
        self.config = config
        # The gRPC port's key check and load shedder, for a second transport of the same service
        # (generation's A1111-compatible HTTP port) to admit its calls the same way.
        self.authoriser = authoriser or Authoriser(None, config.default_tenant, config.reflection)
        self.admission = admission
        self._jobs: JobManager | None = None
        self._health: health.HealthServicer | None = None

    def set_health(self, name: str, serving: bool) -> None:
        """Sets one of ServiceSpec.health_names (e.g. a model's) SERVING or NOT_SERVING."""
        if self._health is not None:
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if serving
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            self._health.set(name, status)

    @cached_property
    def store(self) -> Store:
        return Store(self.config.database_url)

    @cached_property
    def artefacts(self) -> ArtefactStore:
        """Where trained models and produced files go: shared by every replica, kept across restarts
        (ATELIER_ARTEFACTS_URL: the database by default, or s3://bucket/prefix)."""
        store = open_artefacts(
            self.store,
            self.config.setting("ARTEFACTS_URL", ""),
            self.config.setting("S3_ENDPOINT_URL", ""),
            self.config.setting("S3_REGION", ""),
        )
        log.info("%s keeps artefacts in %s", self.config.service, store.location)
        return store

    @cached_property
    def replica_id(self) -> str:
        """This process among the service's replicas (ATELIER_REPLICA_ID; unique per process)."""
        return self.config.setting("REPLICA_ID", "") or default_replica_id()

    @property
    def data_dir(self) -> Path:
        """Scratch: local to this pod and lost with it. What must outlive it goes to artefacts."""
        path = self.config.service_data_dir
        path.mkdir(parents=True, exist_ok=True)
        return path

    def jobs(self, workers: int | None = None) -> JobManager:
        if self._jobs is None:
            count = workers or int(self.config.setting("JOB_WORKERS", "2"))
            lease_s = float(self.config.setting("JOB_LEASE_SECONDS", str(DEFAULT_LEASE_S)))
            self._jobs = JobManager(
                self.store, self.config.service, workers=count, owner=self.replica_id, lease_s=lease_s
            )
        return self._jobs

    @property
    def job_manager(self) -> JobManager | None:
        return self._jobs


@dataclass
class ServiceSpec:
    """One service as the runtime sees it."""

    name: str
    # (add_XServicer_to_server, servicer instance) pairs.
    servicers: list[tuple[Callable[[Any, grpc.Server], None], Any]]
    # Full names of the gRPC services, e.g. "atelier.nesting.v1.NestingService".
    service_names: list[str]
    # Work to finish before the service reports SERVING (load models, warm caches).
    load: Callable[[], None] | None = None
    # Called once on shutdown, after in-flight calls finished.
    close: Callable[[], None] | None = None
    # Extra health names the service sets itself (e.g. one per model), initially NOT_SERVING.
    health_names: list[str] = field(default_factory=list)
    # A second listener of the service (generation's HTTP port): started after the gRPC port,
    # told to stop accepting when the drain begins (its in-flight calls finish; close() joins it).
    start: Callable[[], None] | None = None
    drain: Callable[[], None] | None = None
    # Ports of such listeners by name (logged at start; tests connect to them).
    ports: dict[str, int] = field(default_factory=dict)


def unimplemented_servicer(base: type, service_full_name: str, issue: str) -> Any:
    """A servicer whose every RPC answers UNIMPLEMENTED, naming what is missing and where it is tracked."""

    def make(method: str) -> Callable[..., Any]:
        def rpc(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            raise UnimplementedError(
                f"{service_full_name}/{method} is not built yet (tracked in issue {issue}); "
                "the contract is final enough to code against"
            )

        return rpc

    methods = {name: make(name) for name in dir(base) if name[:1].isupper()}
    return type(f"Unimplemented{base.__name__}", (base,), methods)()


class Server:
    """A running gRPC server for one ServiceSpec."""

    def __init__(self, config: ServiceConfig, build: Callable[[Runtime], ServiceSpec]) -> None:
        self.config = config
        # Security settings first: a half-configured one refuses to start before anything loads.
        keys = load_key_store(config)
        auth_line = startup_checks(config, keys)
        credentials = tls.server_credentials(config)
        log.log(logging.INFO if keys is not None else logging.WARNING, "%s: %s", config.service, auth_line)
        per_tenant = config.setting("MAX_CONCURRENT_RPCS_PER_TENANT", "")
        self.limits = Limits(
            service=config.max_concurrent_rpcs,
            per_tenant=int(per_tenant)
            if per_tenant
            else Limits.default_per_tenant(config.max_concurrent_rpcs),
            waiters=int(config.setting("MAX_WAITING_RPCS", "8")),
        )
        self.admission = Admission(config.service, self.limits)
        authoriser = Authoriser(keys, config.default_tenant, config.reflection)
        self.runtime = Runtime(config, authoriser, self.admission)
        self.spec = build(self.runtime)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self.runtime._health = self.health
        self.ready = threading.Event()
        self.load_error: BaseException | None = None
        self._stopped = threading.Event()
        threads = thread_pool_size(self.limits, config.max_workers)
        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"{config.service}-rpc"),
            interceptors=[ServerInterceptor(config.service, authoriser, self.admission)],
            options=options,
            # Only a backstop against an unbounded queue: the shedder refuses (with RetryInfo) long
            # before this, and each refusal takes microseconds of a spare thread.
            maximum_concurrent_rpcs=threads * 8,
        )
        for add, servicer in self.spec.servicers:
            add(servicer, self.grpc_server)
        names = list(self.spec.service_names)
        if self.runtime.job_manager is not None:
            operations_pb2_grpc.add_OperationsServicer_to_server(
                OperationsServicer(self.runtime.job_manager), self.grpc_server
            )
            names.append(OPERATIONS_SERVICE)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc_server)
        names.append(health.SERVICE_NAME)
        if config.reflection != "off":
            reflection.enable_server_reflection((*names, reflection.SERVICE_NAME), self.grpc_server)
        self.service_names = names
        for name in ("", *self.spec.service_names, *self.spec.health_names, READINESS):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.health.set(health.SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        # The database is a dependency only of services that opened the store in build().
        checks = {"database": self.runtime.store.ping} if "store" in self.runtime.__dict__ else {}
        self.readiness = Readiness(config.service, self._publish_readiness, checks)
        self.port = self._bind(credentials)
        self.metrics_port = 0
        self.health_server: grpc.Server | None = None
        self.health_port = 0
        if config.health_port:  # plaintext, health only: for probes that cannot do (m)TLS
            self.health_server, self.health_port = tls.health_only_server(
                self.health, config.host, config.health_port
            )

    def _publish_readiness(self, ready: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set(READINESS, status)

    def _bind(self, credentials: grpc.ServerCredentials | None) -> int:
        address = f"{self.config.host}:{self.config.port}"
        if credentials is not None:
            port = self.grpc_server.add_secure_port(address, credentials)
        else:
            port = self.grpc_server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"could not bind {address}: is another process using the port?")
        return port

    def start(self, metrics_port: int | None = None) -> None:
        port = self.config.metrics_port if metrics_port is None else metrics_port
        self.metrics_port = metrics.start_metrics_server(self.config.service, self.config.host, port)
        self.grpc_server.start()
        if self.health_server is not None:
            self.health_server.start()
        if self.spec.start is not None:
            self.spec.start()
        self.readiness.start()
        log.info(
            "%s listening on %s:%d, %s (metrics on :%d%s)",
            self.config.service,
            self.config.host,
            self.port,
            tls.describe(self.config),
            self.metrics_port,
            f", plaintext health on :{self.health_port}" if self.health_server is not None else "",
            extra={"port": self.port, "metrics_port": self.metrics_port, **self.spec.ports},
        )
        threading.Thread(target=self._load, name=f"{self.config.service}-load", daemon=True).start()

    def _load(self) -> None:
        try:
            if self.spec.load is not None:
                self.spec.load()
        except BaseException as exc:
            self.load_error = exc
            log.exception("%s failed to load; health stays NOT_SERVING", self.config.service)
            return
        if self._stopped.is_set():
            return
        for name in ("", *self.spec.service_names):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        metrics.service_ready.labels(self.config.service).set(1)
        self.readiness.loaded()
        self.ready.set()
        log.info("%s is ready", self.config.service)

    def stop(self, grace_s: float | None = None) -> bool:
        """Drain: NOT_SERVING, refuse new calls, let in-flight calls and jobs finish for the grace
        period, then cancel them and close. Every step is bounded: returns within grace +
        shutdown.HARD_MARGIN_S - 1 s, True when everything ended cleanly."""
        if self._stopped.is_set():
            return True
        self._stopped.set()
        grace = self.config.grace_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace + shutdown.HARD_MARGIN_S - 1.0
        log.info("%s shutting down (grace %.0f s)", self.config.service, grace)
        self.readiness.stop()
        self.health.enter_graceful_shutdown()
        metrics.service_ready.labels(self.config.service).set(0)
        if self.spec.drain is not None:
            self.spec.drain()
        # After the grace grpc cancels the calls still running: their Cancellation tokens fire.
        drained = self.grpc_server.stop(grace)
        if self.health_server is not None:
            self.health_server.stop(0)
        clean = True
        if self.runtime.job_manager is not None:
            # Jobs get the same grace, counted from the signal, then are cancelled.
            clean &= self.runtime.job_manager.shutdown(wait_s=grace, join_s=1.0)
        clean &= drained.wait(max(0.0, deadline - time.monotonic() - 1.5))
        if self.spec.close is not None:
            closer = threading.Thread(
                target=self.spec.close, name=f"{self.config.service}-close", daemon=True
            )
            closer.start()
            closer.join(max(0.1, deadline - time.monotonic()))
            clean &= not closer.is_alive()
        log.info("%s stopped%s", self.config.service, "" if clean else " (some work did not end in time)")
        return clean

    def wait(self) -> None:
        self.grpc_server.wait_for_termination()


def load_build(target: str) -> Callable[[Runtime], ServiceSpec]:
    """'nesting' -> atelier.nesting.server:build; 'pkg.mod:func' -> that function."""
    module_name, _, func = (
        target.partition(":") if ":" in target else (f"atelier.{target}.server", "", "build")
    )
    build = getattr(importlib.import_module(module_name), func or "build")
    return build  # type: ignore[no-any-return]


def serve(service: str, target: str | None = None) -> int:
    try:
        config = ServiceConfig.from_env(service)
    except ValueError as exc:
        print(f"atelier {service}: not starting: {exc}", file=sys.stderr)
        return 2
    logs.configure(service, config.log_level, config.log_format)
    try:
        server = Server(config, load_build(target or service))
    except InsecureConfigError as exc:
        log.error("%s is not starting: %s", service, exc)
        return 2
    server.start()
    stopped = threading.Event()
    watchdog = shutdown.Watchdog()

    def stop() -> None:
        server.stop()
        stopped.set()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if watchdog.armed:
            return
        log.info("received %s", signal.Signals(signum).name)
        watchdog.arm(config.grace_s + shutdown.HARD_MARGIN_S)
        threading.Thread(target=stop, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # The main thread waits for stop() to have closed the service (jobs, models), not only for the
    # gRPC server: interpreter shutdown would tear down the executors close() still needs. Short
    # waits, so the signal handler runs promptly.
    while not stopped.wait(0.5):
        pass
    # Calls that ignored their cancellation would keep the interpreter waiting for their threads.
    # The watchdog stays armed: it also bounds this step and the interpreter's own exit.
    shutdown.finish(0, wait_s=0.5)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one Atelier service.")
    parser.add_argument("service", help="service name, e.g. nesting")
    parser.add_argument(
        "--spec", help="module:function returning a ServiceSpec (default atelier.<service>.server:build)"
    )
    args = parser.parse_args(argv)
    return serve(args.service, args.spec)


if __name__ == "__main__":
    sys.exit(main())
