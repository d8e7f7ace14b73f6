"""The six services on real sockets, once for the fuzz tests, and the Hypothesis profiles.

`make test` runs the "fast" profile (a few examples per RPC and parser); `make fuzz` runs the
"long" one (ATELIER_FUZZ_PROFILE=long, ATELIER_FUZZ_EXAMPLES examples per test).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, settings

from atelier.runtime.config import ServiceConfig
from atelier.runtime.server import Server
from tests.conftest import wait_serving

SERVICES = ("generation", "body", "nesting", "inspection", "trends", "recommendations")

_common = dict(
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile("fast", max_examples=6, **_common)  # type: ignore[arg-type]
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("ATELIER_FUZZ_EXAMPLES", "300")),
    **_common,  # type: ignore[arg-type]
)
settings.load_profile(os.environ.get("ATELIER_FUZZ_PROFILE", "fast"))


def _build(service: str):  # type: ignore[no-untyped-def]
    module = __import__(f"atelier.{service}.server", fromlist=["build"])
    return module.build


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, grpc.Channel]]:
    """One in-process server per service (SQLite, local files), and a channel to each."""
    root = tmp_path_factory.mktemp("fuzz")
    env = {
        # No pose model: the GrabCut path; no generation models: Generate answers NOT_FOUND quickly.
        "ATELIER_BODY_POSE_MODEL": str(root / "absent.task"),
        "ATELIER_GENERATION_MODELS_DIR": str(root / "models"),
        "ATELIER_GENERATION_DEVICE": "cpu",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    servers: dict[str, Server] = {}
    channels: dict[str, grpc.Channel] = {}
    try:
        for service in SERVICES:
            config = ServiceConfig(
                service=service,
                host="127.0.0.1",
                port=0,
                metrics_port=0,
                data_dir=root / "data",
                database_url=f"sqlite:///{root / 'data' / (service + '.db')}",
                log_format="text",
                grace_s=2.0,
            )
            server = Server(config, _build(service))
            server.start(metrics_port=0)
            servers[service] = server
        for service, server in servers.items():
            wait_serving(f"127.0.0.1:{server.port}", timeout_s=120)
            channels[service] = grpc.insecure_channel(
                f"127.0.0.1:{server.port}", options=[("grpc.max_receive_message_length", 256 << 20)]
            )
        yield channels
    finally:
        for channel in channels.values():
            channel.close()
        for server in servers.values():
            server.stop(grace_s=1)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_files")
