"""Security over real sockets: keys bound to tenants, malformed bytes, TLS, mTLS, the health port,
and the settings that refuse to start (in process and as `python -m atelier.runtime.server`)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from atelier.runtime.auth import InsecureConfigError
from atelier.runtime.keys import Role, new_key, write_keys_file
from atelier.runtime.server import Server
from tests.conftest import REPO, free_port, wait_serving
from tests.integration.certs import Certs, make_certs
from tests.integration.test_runtime_server import build_echo, echo, metric_value, scrape

ECHO = "/atelier.testing.v1.EchoService/Echo"
SUM = "/atelier.testing.v1.EchoService/Sum"


@dataclass
class Keys:
    path: Path
    a: str
    a_read: str
    operator: str


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    a, rec_a = new_key(["tenant-a"], Role.WRITE)
    a_read, rec_r = new_key(["tenant-a"], Role.READ)
    operator, rec_o = new_key(["tenant-a", "tenant-b"], Role.ADMIN)
    path = tmp_path / "keys.json"
    write_keys_file(path, [rec_a, rec_r, rec_o])
    return Keys(path, a, a_read, operator)


def md(key: str, tenant: str = "") -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")] + ([("x-atelier-tenant", tenant)] if tenant else [])


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()  # type: ignore[no-any-return]


def test_keys_select_only_their_tenants_and_roles(
    start_server: Callable[..., Server], keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    pb2, pb2_grpc = echo()
    server = start_server("echo", build_echo, api_keys_file=str(keys.path))
    stub = pb2_grpc.EchoServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    hi = pb2.EchoRequest(text="hi")
    assert code_of(lambda: stub.Echo(hi)) == grpc.StatusCode.UNAUTHENTICATED
    assert (
        code_of(lambda: stub.Echo(hi, metadata=md("atk_000000000000_" + "x" * 43)))
        == grpc.StatusCode.UNAUTHENTICATED
    )
    assert stub.Echo(hi, metadata=md(keys.a)).tenant == "tenant-a"
    assert (
        code_of(lambda: stub.Echo(hi, metadata=md(keys.a, "tenant-b"))) == grpc.StatusCode.PERMISSION_DENIED
    )
    with caplog.at_level(logging.INFO, logger="atelier.rpc"):
        assert stub.Echo(hi, metadata=md(keys.operator, "tenant-b")).tenant == "tenant-b"
    (line,) = [r for r in caplog.records if r.name == "atelier.rpc"]
    assert line.key_id == keys.operator.split("_")[1]  # type: ignore[attr-defined]  # the audit trail
    assert code_of(lambda: stub.Echo(hi, metadata=md(keys.operator))) == grpc.StatusCode.INVALID_ARGUMENT
    # Echo is in no role table: it needs write, so a read-only key is refused.
    assert code_of(lambda: stub.Echo(hi, metadata=md(keys.a_read))) == grpc.StatusCode.PERMISSION_DENIED
    # Probes and (by default) reflection need no key.
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING


def _list_services(port: int, metadata: list[tuple[str, str]] | None = None) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata, timeout=5
    )
    return [s.name for r in replies for s in r.list_services_response.service]


def test_reflection_open_keyed_or_off(start_server: Callable[..., Server], keys: Keys) -> None:
    keyed = start_server("echo", build_echo, api_keys_file=str(keys.path), reflection="key")
    assert code_of(lambda: _list_services(keyed.port)) == grpc.StatusCode.UNAUTHENTICATED
    assert "atelier.testing.v1.EchoService" in _list_services(keyed.port, md(keys.a_read))
    off = start_server("echo", build_echo, api_keys_file=str(keys.path), reflection="off")
    assert code_of(lambda: _list_services(off.port)) == grpc.StatusCode.UNIMPLEMENTED


def test_malformed_bytes_are_invalid_argument_after_auth(
    start_server: Callable[..., Server], keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server("echo", build_echo, api_keys_file=str(keys.path))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    raw = channel.unary_unary(ECHO)  # no serializers: bytes go out as they are
    garbage = b"\x0a\xff\xff\xff\xff\x0f"  # field 1, length far beyond the message
    before = metric_value(scrape(server.metrics_port), "atelier_malformed_requests_total", grpc_method="Echo")
    # Without a key the caller learns nothing, not even that the bytes were bad.
    assert code_of(lambda: raw(garbage)) == grpc.StatusCode.UNAUTHENTICATED
    caplog.clear()
    with caplog.at_level(logging.INFO), pytest.raises(grpc.RpcError) as info:
        raw(garbage, metadata=md(keys.a))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "do not parse" in info.value.details()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING, [r.getMessage() for r in warnings]
    after = metric_value(scrape(server.metrics_port), "atelier_malformed_requests_total", grpc_method="Echo")
    assert after == before + 1
    # A client stream with one bad message among good ones.
    pb2, _ = echo()
    sum_raw = channel.stream_unary(SUM)
    good = pb2.CountResponse(value=2).SerializeToString()
    assert (
        code_of(lambda: sum_raw(iter([good, garbage]), metadata=md(keys.a)))
        == grpc.StatusCode.INVALID_ARGUMENT
    )


# -- fail closed --------------------------------------------------------------------------------------


def test_half_configured_security_refuses_to_start(
    service_config: Callable[..., Any], tmp_path: Path, certs: Certs, keys: Keys
) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tls_cert_file": str(certs.server_crt)}, "ATELIER_TLS_KEY_FILE is not set"),
        ({"tls_key_file": str(certs.server_key)}, "ATELIER_TLS_CERT_FILE is not set"),
        ({"api_keys_file": str(empty)}, "is empty"),
        ({"api_keys_file": str(tmp_path / "absent.json")}, "cannot be read"),
        ({"tls_client_ca_file": str(certs.ca_crt)}, "need server TLS"),
        (
            {
                "tls_cert_file": str(certs.server_crt),
                "tls_key_file": str(certs.server_key),
                "tls_client_auth": True,
            },
            "ATELIER_TLS_CLIENT_CA_FILE is not set",
        ),
        (
            {
                "tls_cert_file": str(certs.server_crt),
                "tls_key_file": str(certs.server_key),
                "tls_client_ca_file": str(tmp_path / "no-ca.pem"),
            },
            "cannot be read",
        ),
        (
            {"tls_cert_file": str(certs.server_key), "tls_key_file": str(certs.server_key)},
            "no PEM CERTIFICATE",
        ),
        ({"host": "0.0.0.0"}, "ATELIER_INSECURE=1"),
    ]
    for overrides, message in cases:
        with pytest.raises(InsecureConfigError, match=message):
            Server(service_config("echo", **overrides), build_echo)
    server = Server(service_config("echo", host="0.0.0.0", insecure=True), build_echo)
    server.grpc_server.stop(0)
    server = Server(service_config("echo", host="0.0.0.0", api_keys_file=str(keys.path)), build_echo)
    server.grpc_server.stop(0)


def _child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "ATELIER_DATA_DIR": str(tmp_path / "data"),
        "ATELIER_ECHO_PORT": str(free_port()),
        "ATELIER_ECHO_METRICS_PORT": str(free_port()),
        "ATELIER_LOG_FORMAT": "text",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


def test_the_server_process_says_what_to_fix(tmp_path: Path, certs: Certs) -> None:
    args = [sys.executable, "-m", "atelier.runtime.server", "echo", "--spec", "echo_service:build"]
    half = subprocess.run(
        args,
        env=_child_env(tmp_path, ATELIER_TLS_CERT_FILE=str(certs.server_crt)),
        capture_output=True,
        timeout=60,
    )
    assert half.returncode == 2
    assert b"ATELIER_TLS_KEY_FILE is not set" in half.stderr and b"Traceback" not in half.stderr
    flat = subprocess.run(
        args, env=_child_env(tmp_path, ATELIER_API_KEYS="k1,k2"), capture_output=True, timeout=60
    )
    assert flat.returncode == 2 and b"atelier keys create" in flat.stderr


def test_localhost_without_keys_says_so_in_its_first_log_line(tmp_path: Path) -> None:
    env = _child_env(tmp_path)
    env.pop("ATELIER_API_KEYS_FILE", None)
    args = [sys.executable, "-m", "atelier.runtime.server", "echo", "--spec", "echo_service:build"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "WARNING" in first and "WITHOUT API keys" in first and "ATELIER_API_KEYS_FILE" in first


# -- TLS and mTLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def _secure_stub(port: int, certs: Certs, client: tuple[Path, Path] | None = None) -> Any:
    _, pb2_grpc = echo()
    key, chain = (client[1].read_bytes(), client[0].read_bytes()) if client else (None, None)
    credentials = grpc.ssl_channel_credentials(certs.ca_crt.read_bytes(), key, chain)
    return pb2_grpc.EchoServiceStub(grpc.secure_channel(f"localhost:{port}", credentials))


def test_tls_handshake_and_plaintext_refused(start_server: Callable[..., Server], certs: Certs) -> None:
    pb2, pb2_grpc = echo()
    health_port = free_port()
    server = start_server(
        "echo",
        build_echo,
        wait=False,
        tls_cert_file=str(certs.server_crt),
        tls_key_file=str(certs.server_key),
        health_port=health_port,
    )
    wait_serving(f"127.0.0.1:{health_port}")  # probes: plaintext health on its own port
    assert _secure_stub(server.port, certs).Echo(pb2.EchoRequest(text="hi"), timeout=10).text == "hi"
    plain = pb2_grpc.EchoServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    assert code_of(lambda: plain.Echo(pb2.EchoRequest(text="hi"), timeout=5)) == grpc.StatusCode.UNAVAILABLE
    # The health port answers health only.
    on_health_port = pb2_grpc.EchoServiceStub(grpc.insecure_channel(f"127.0.0.1:{health_port}"))
    assert (
        code_of(lambda: on_health_port.Echo(pb2.EchoRequest(text="hi"), timeout=5))
        == grpc.StatusCode.UNIMPLEMENTED
    )


def test_mtls_requires_a_client_certificate_from_the_ca(
    start_server: Callable[..., Server], certs: Certs, keys: Keys
) -> None:
    pb2, _ = echo()
    health_port = free_port()
    server = start_server(
        "echo",
        build_echo,
        wait=False,
        tls_cert_file=str(certs.server_crt),
        tls_key_file=str(certs.server_key),
        tls_client_ca_file=str(certs.ca_crt),
        tls_client_auth=True,
        api_keys_file=str(keys.path),
        health_port=health_port,
    )
    wait_serving(f"127.0.0.1:{health_port}")
    hi = pb2.EchoRequest(text="hi")
    with_cert = _secure_stub(server.port, certs, (certs.client_crt, certs.client_key))
    assert with_cert.Echo(hi, metadata=md(keys.a), timeout=10).tenant == "tenant-a"
    # The certificate proves the client; the key still decides the tenant.
    assert code_of(lambda: with_cert.Echo(hi, timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
    without = _secure_stub(server.port, certs)
    assert code_of(lambda: without.Echo(hi, metadata=md(keys.a), timeout=5)) == grpc.StatusCode.UNAVAILABLE
    stranger = _secure_stub(server.port, certs, (certs.stranger_crt, certs.stranger_key))
    assert code_of(lambda: stranger.Echo(hi, metadata=md(keys.a), timeout=5)) == grpc.StatusCode.UNAVAILABLE
    # Metrics stay plain HTTP on their own port (Prometheus scrapes them).
    assert (
        "grpc_server_handled_total"
        in urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5)
        .read()
        .decode()
    )


def test_cli_channel_sends_the_key_and_speaks_mtls(
    start_server: Callable[..., Server], certs: Certs, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atelier.cli import client

    pb2, pb2_grpc = echo()
    health_port = free_port()
    server = start_server(
        "echo",
        build_echo,
        wait=False,
        tls_cert_file=str(certs.server_crt),
        tls_key_file=str(certs.server_key),
        tls_client_ca_file=str(certs.ca_crt),
        api_keys_file=str(keys.path),
        health_port=health_port,
    )
    wait_serving(f"127.0.0.1:{health_port}")
    monkeypatch.setenv("ATELIER_SERVER_CA_FILE", str(certs.ca_crt))
    monkeypatch.setenv("ATELIER_CLIENT_CERT_FILE", str(certs.client_crt))
    monkeypatch.setenv("ATELIER_CLIENT_KEY_FILE", str(certs.client_key))
    monkeypatch.setenv("ATELIER_SERVER_NAME", "localhost")
    hi = pb2.EchoRequest(text="hi")
    anonymous = pb2_grpc.EchoServiceStub(client.channel(f"127.0.0.1:{server.port}"))
    assert code_of(lambda: anonymous.Echo(hi, timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
    monkeypatch.setenv("ATELIER_API_KEY", keys.a)
    with client.channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb2_grpc.EchoServiceStub(channel)
        assert stub.Echo(hi, timeout=10).tenant == "tenant-a"
        assert stub.Sum(iter([pb2.CountResponse(value=v) for v in (1, 2)]), timeout=10).value == 3
        assert [r.value for r in stub.Count(pb2.CountRequest(to=2), timeout=10)] == [0, 1]
    monkeypatch.delenv("ATELIER_CLIENT_KEY_FILE")
    with pytest.raises(SystemExit, match="both ATELIER_CLIENT_CERT_FILE"):
        client.channel(f"127.0.0.1:{server.port}")
