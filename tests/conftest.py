"""Fixtures every test folder can use: servers on real sockets, stores on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from atelier.runtime.config import ServiceConfig
from atelier.runtime.server import Runtime, Server, ServiceSpec
from atelier.runtime.storage import Store

REPO = Path(__file__).resolve().parent.parent
SHARED_BENCHMARKS = REPO.parent / "shared" / "benchmarks"


_GIVEN: set[int] = set()
PICK_FROM = 20000  # free_port()'s ports lie from here to the ephemeral range's start


def _ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux; 49152, IANA's, elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


def free_port() -> int:
    """A port nobody listens on, for a server a test starts later, chosen below the kernel's
    ephemeral range. A port from that range (what binding port 0 gives) can be handed to an
    outgoing connection between the moment it is picked and the moment the server binds it: the
    test's own health checks of the services started first can take a port picked for one started
    later, which then fails to bind ("Address already in use": `atelier serve` with 12 ports picked
    in advance failed so once in CI). Below the range, from 20000 up, no outgoing connection takes
    it, and no server this machine runs (PostgreSQL, Redis, Prometheus, the platform's own 50051+
    and 9101+) listens there. A port is handed out once per test session."""
    low = _ephemeral_low()
    for _ in range(200 if low - PICK_FROM >= 1000 else 0):
        port = random.randrange(PICK_FROM, low)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    with socket.socket() as s:  # everything below the range is taken: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(address: str, service: str = "", timeout_s: float = 180.0) -> None:
    """Block until the server at address reports SERVING for service (a cold trends server
    compiles its models first: over a minute on a loaded 2-core machine)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                last = exc.code().name
            time.sleep(0.1)
    raise TimeoutError(f"{address} did not become SERVING within {timeout_s} s (last: {last})")


@pytest.fixture
def service_config(tmp_path: Path) -> Callable[..., ServiceConfig]:
    """A ServiceConfig on free ports with a data dir under tmp_path."""

    def make(service: str, **overrides: object) -> ServiceConfig:
        values: dict[str, object] = dict(
            service=service,
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            data_dir=tmp_path / "data",
            database_url=f"sqlite:///{tmp_path / 'data' / (service + '.db')}",
            log_format="text",
            grace_s=5.0,
        )
        values.update(overrides)
        return ServiceConfig(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def start_server(service_config: Callable[..., ServiceConfig]) -> Iterator[Callable[..., Server]]:
    """Starts an in-process server for a build() function on a free port; stops it after the test.

    server = start_server("nesting", build)      # waits until SERVING
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    """
    servers: list[Server] = []

    def start(
        service: str, build: Callable[[Runtime], ServiceSpec], wait: bool = True, **overrides: object
    ) -> Server:
        server = Server(service_config(service, **overrides), build)
        server.start(metrics_port=0)
        servers.append(server)
        if wait:
            wait_serving(f"127.0.0.1:{server.port}")
        return server

    yield start
    for server in servers:
        server.stop(grace_s=1)


@pytest.fixture
def service_process(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], int, int]]]:
    """Starts a service in a child process (`python -m atelier.runtime.server`), as production does.

    Returns (process, grpc_port, metrics_port); the process is terminated after the test.
    """
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        service: str, spec: str | None = None, env: dict[str, str] | None = None, wait: bool = True
    ) -> tuple[subprocess.Popen[bytes], int, int]:
        port, metrics_port = free_port(), free_port()
        child_env = {
            **os.environ,
            "ATELIER_DATA_DIR": str(tmp_path / "data"),
            f"ATELIER_{service.upper()}_PORT": str(port),
            f"ATELIER_{service.upper()}_METRICS_PORT": str(metrics_port),
            "ATELIER_LOG_FORMAT": "text",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            **(env or {}),
        }
        args = [sys.executable, "-m", "atelier.runtime.server", service]
        if spec:
            args += ["--spec", spec]
        proc = subprocess.Popen(args, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(proc)
        if wait:
            try:
                wait_serving(f"127.0.0.1:{port}")
            except TimeoutError:
                proc.kill()
                output = proc.communicate()[0].decode(errors="replace")
                raise TimeoutError(f"{service} did not start:\n{output}") from None
        return proc, port, metrics_port

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _postgres_url() -> str | None:
    url = os.environ.get("ATELIER_TEST_POSTGRES_URL")
    required = os.environ.get("ATELIER_REQUIRE_POSTGRES") == "1"
    if not url:
        if required:
            pytest.fail("ATELIER_REQUIRE_POSTGRES=1 but ATELIER_TEST_POSTGRES_URL is not set")
        return None
    try:
        store = Store(url)
        with store.engine.connect():
            pass
        store.dispose()
    except Exception as exc:
        if required:
            pytest.fail(f"PostgreSQL at {url} is required but unreachable: {exc}")
        return None
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh Store on SQLite and on PostgreSQL (each test runs on both).

    PostgreSQL comes from ATELIER_TEST_POSTGRES_URL (.ci/run sets it up); each test gets its
    own schema, dropped afterwards. Without a server the PostgreSQL case is skipped with the
    reason shown (`pytest -rs`), and fails instead when ATELIER_REQUIRE_POSTGRES=1 (CI).
    """
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'test.db'}")
        yield s
        s.dispose()
        return
    url = _postgres_url()
    if url is None:
        pytest.skip("PostgreSQL not available: set ATELIER_TEST_POSTGRES_URL (see .ci/ensure-services.sh)")
    import sqlalchemy as sa

    schema = f"t_{os.getpid()}_{time.monotonic_ns()}"
    admin = Store(url)
    with admin.engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    s = Store(url, schema=schema)
    yield s
    s.dispose()
    with admin.engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3-compatible server in its own process (server mode, plain HTTP); its endpoint URL.

    Credentials are moto's dummies, set in the environment so child processes inherit them.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    saved = {
        k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto's server did not start (is moto[server] installed?)") from None
            time.sleep(0.1)
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server: str) -> dict[str, str]:
    """A fresh bucket on the moto server: {"endpoint": ..., "bucket": ...}."""
    import boto3

    bucket = f"atelier-{os.getpid()}-{time.monotonic_ns()}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    return {"endpoint": s3_server, "bucket": bucket}


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database of its own (created on ATELIER_TEST_POSTGRES_URL's server, dropped
    after): what several server processes of one service share, as replicas do in the chart."""
    url = _postgres_url()
    if url is None:
        pytest.skip("PostgreSQL not available: set ATELIER_TEST_POSTGRES_URL (see .ci/ensure-services.sh)")
    import sqlalchemy as sa

    name = f"atelier_t_{os.getpid()}_{time.monotonic_ns()}"
    from atelier.runtime.storage import normalise_url

    admin = sa.create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield sa.engine.make_url(normalise_url(url)).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
