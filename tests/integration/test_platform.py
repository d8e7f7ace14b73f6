"""The whole platform as `make run` starts it: `atelier serve`, six processes, each answering
health and reflection for its own contract, with metrics served beside it; Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from atelier.runtime.registry import GRPC_SERVICES, SERVICES
from tests.conftest import free_port, wait_serving

pytestmark = pytest.mark.slow


def test_atelier_serve_starts_every_service(tmp_path: Path) -> None:
    ports = {name: (free_port(), free_port()) for name in SERVICES}
    env = {**os.environ, "ATELIER_DATA_DIR": str(tmp_path / "data"), "ATELIER_LOG_FORMAT": "text"}
    for name, (port, metrics_port) in ports.items():
        env[f"ATELIER_{name.upper()}_PORT"] = str(port)
        env[f"ATELIER_{name.upper()}_METRICS_PORT"] = str(metrics_port)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "atelier.cli.main", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        for name, (port, metrics_port) in ports.items():
            try:
                wait_serving(f"127.0.0.1:{port}", GRPC_SERVICES[name], timeout_s=180)
            except TimeoutError as exc:
                pytest.fail(f"{name}: {exc}\n{log_path.read_text(errors='replace')[-4000:]}")
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
            )
            listed = {s.name for r in replies for s in r.list_services_response.service}
            assert {GRPC_SERVICES[name], "grpc.health.v1.Health"} <= listed, (name, listed)
            metrics = (
                urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
            )
            assert f'atelier_service_ready{{service="{name}"}} 1.0' in metrics
        status = subprocess.run(
            [sys.executable, "-m", "atelier.cli.main", "status"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("SERVING") == len(SERVICES)
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log_path.read_text(errors="replace")[-4000:]
    deadline = time.monotonic() + 10
    for port, _ in ports.values():
        while time.monotonic() < deadline:
            try:
                grpc.channel_ready_future(grpc.insecure_channel(f"127.0.0.1:{port}")).result(timeout=0.2)
            except grpc.FutureTimeoutError:
                break
        else:
            pytest.fail(f"port {port} still answers after Ctrl-C")
