"""A lost database: calls answer UNAVAILABLE (retryable), readiness goes NOT_SERVING while liveness
stays SERVING, and both recover on their own when the database is back.

The database is a private PostgreSQL cluster (its own initdb, on its own port) that the test stops
and starts: never the machine's shared server.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from atelier.runtime.readiness import READINESS
from atelier.runtime.server import Server
from tests.conftest import free_port, wait_serving
from tests.integration.test_lifecycle import retry_delay_s
from tests.integration.test_runtime_server import build_echo, echo, metric_value, scrape


class PrivatePostgres:
    def __init__(self, bindir: Path, root: Path, port: int, as_user: list[str]) -> None:
        self.bindir, self.root, self.port, self.as_user = bindir, root, port, as_user
        self.data = root / "data"
        self.url = f"postgresql://atelier@127.0.0.1:{port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / args[0]), *args[1:]], check=True, capture_output=True
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "atelier", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin) for a private cluster")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="atelier-pg-"))
    if os.geteuid() == 0:  # initdb refuses root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start a private PostgreSQL")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    root.chmod(0o755)
    pg = PrivatePostgres(Path(found[-1]).parent, root, free_port(), as_user)
    try:
        pg.init()
        pg.start()
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start a private PostgreSQL: {exc.stderr.decode(errors='replace')[-500:]}")
    yield pg
    with contextlib.suppress(subprocess.CalledProcessError):
        pg.stop()
    shutil.rmtree(root, ignore_errors=True)


def health_status(channel: grpc.Channel, name: str) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
    return int(reply.status)


def wait_status(channel: grpc.Channel, name: str, status: int, timeout_s: float) -> float:
    started = time.monotonic()
    while health_status(channel, name) != status:
        assert time.monotonic() - started < timeout_s, f"{name or 'liveness'} did not become {status}"
        time.sleep(0.05)
    return time.monotonic() - started


def test_database_outage_is_unavailable_and_readiness_follows_it(
    private_postgres: PrivatePostgres, start_server: Callable[..., Server]
) -> None:
    pb2, pb2_grpc = echo()
    server = start_server("echo", build_echo, database_url=private_postgres.url)
    address = f"127.0.0.1:{server.port}"
    wait_serving(address, READINESS, timeout_s=10)
    channel = grpc.insecure_channel(address)
    echo_stub: Any = pb2_grpc.EchoServiceStub(channel)
    echo_stub.StartJob(pb2.StartJobRequest(steps=1, step_s=0.01), timeout=10)  # uses the database

    private_postgres.stop()
    try:
        with pytest.raises(grpc.RpcError) as lost:
            echo_stub.StartJob(pb2.StartJobRequest(steps=1, step_s=0.01), timeout=15)
        assert lost.value.code() == grpc.StatusCode.UNAVAILABLE, lost.value.details()
        assert "database is unreachable" in (lost.value.details() or "")
        assert retry_delay_s(lost.value)
        NOT_SERVING, SERVING = (
            health_pb2.HealthCheckResponse.NOT_SERVING,
            health_pb2.HealthCheckResponse.SERVING,
        )
        assert wait_status(channel, READINESS, NOT_SERVING, timeout_s=5) < 5
        # Alive: Kubernetes must take the pod out of rotation, not restart it.
        assert health_status(channel, "") == SERVING
        assert health_status(channel, "grpc.health.v1.Health") == SERVING
        # Calls that do not need the database still work.
        assert echo_stub.Echo(pb2.EchoRequest(text="hi"), timeout=5).text == "hi"
    finally:
        private_postgres.start()
    recovered_s = wait_status(channel, READINESS, SERVING, timeout_s=10)
    assert recovered_s < 5
    echo_stub.StartJob(pb2.StartJobRequest(steps=1, step_s=0.01), timeout=10)
    text = scrape(server.metrics_port)
    assert (
        metric_value(text, "grpc_server_handled_total", grpc_method="StartJob", grpc_code="UNAVAILABLE") >= 1
    )
    assert metric_value(text, "grpc_server_handled_total", grpc_method="StartJob", grpc_code="INTERNAL") == 0
