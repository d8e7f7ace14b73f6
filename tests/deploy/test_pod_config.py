"""What the chart configures, tried on real processes: the TLS exec probe against a service serving
TLS with a CA-signed certificate, and a service on PostgreSQL through ATELIER_DATABASE_URL (the
database option deploy/README.md documents)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from tests.conftest import _postgres_url, wait_serving

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")

REPO = Path(__file__).resolve().parents[2]
ServiceProcess = Callable[..., tuple[subprocess.Popen[bytes], int, int]]


def make_certificates(directory: Path, dns_name: str) -> None:
    """A CA and a server certificate for dns_name, laid out as cert-manager writes a TLS Secret."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=atelier-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    run(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        f"/CN={dns_name}",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
    )
    (directory / "san.cnf").write_text(f"subjectAltName=DNS:{dns_name}\n")
    run(
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        "-out",
        "tls.crt",
    )


def rendered_probes(service: str) -> dict[str, Any]:
    chart = helm.Chart.load(str(REPO / "charts" / "atelier"))
    manifests = chart.render(
        {"tls": {"enabled": True, "secretName": "atelier-tls"}}, name="atelier", namespace="atelier"
    )
    for doc in yaml.safe_load_all(manifests["atelier/templates/deployment.yaml"]):
        if doc and doc["metadata"]["name"] == f"atelier-{service}":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            return {kind: container[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    raise AssertionError(f"no deployment for {service}")


def probe_script(probe: dict[str, Any], tls_dir: Path, chart_port: int, port: int) -> list[str]:
    command = list(probe["exec"]["command"])
    assert command[:2] == ["python", "-c"]
    script = (
        command[2]
        .replace("/etc/atelier/tls/", f"{tls_dir}/")
        .replace(f"127.0.0.1:{chart_port}", f"127.0.0.1:{port}")
    )
    return [sys.executable, "-c", script]


@pytest.mark.slow
def test_tls_exec_probe_checks_a_real_tls_server(service_process: ServiceProcess, tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    tls.mkdir()
    make_certificates(tls, "atelier-trends")
    proc, port, _metrics = service_process(
        "trends",
        env={"ATELIER_TLS_CERT_FILE": str(tls / "tls.crt"), "ATELIER_TLS_KEY_FILE": str(tls / "tls.key")},
        wait=False,
    )
    probes = rendered_probes("trends")
    readiness = probe_script(probes["readinessProbe"], tls, 50055, port)
    deadline = time.monotonic() + 60
    while True:
        result = subprocess.run(readiness, capture_output=True, text=True, timeout=30, check=False)
        if result.returncode == 0:
            break
        assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")[-2000:]
        assert time.monotonic() < deadline, f"TLS readiness probe never passed: {result.stderr[-1000:]}"
        time.sleep(0.5)
    liveness = probe_script(probes["livenessProbe"], tls, 50055, port)
    assert subprocess.run(liveness, capture_output=True, timeout=30, check=False).returncode == 0
    # The probe really checks: a certificate for another name is refused.
    wrong_name = [arg.replace('"atelier-trends"', '"atelier-body"') for arg in readiness]
    assert subprocess.run(wrong_name, capture_output=True, timeout=30, check=False).returncode != 0
    # And a plaintext probe (what the native grpc probe would do) does not reach a TLS server.
    with pytest.raises(TimeoutError):
        wait_serving(f"127.0.0.1:{port}", timeout_s=2)


@pytest.mark.slow
def test_service_on_postgresql_from_the_database_url(service_process: ServiceProcess) -> None:
    url = _postgres_url()
    if url is None:
        pytest.skip("PostgreSQL not available: set ATELIER_TEST_POSTGRES_URL (see .ci/ensure-services.sh)")
    database = f"atelier_deploy_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    service_url = url.rsplit("/", 1)[0] + f"/{database}"
    try:
        # As the chart sets it: ATELIER_DATABASE_URL from the Secret, a postgresql:// URL.
        proc, port, _metrics = service_process("nesting", env={"ATELIER_DATABASE_URL": service_url})
        engine = sa.create_engine(service_url.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.connect() as conn:
            components = {
                row[0] for row in conn.execute(sa.text("select component from atelier_schema_versions"))
            }
        engine.dispose()
        # The operations table of long-running jobs, among the tables the service migrated there.
        assert "runtime.jobs" in components, components
        proc.terminate()
        proc.wait(timeout=15)
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    f"select pg_terminate_backend(pid) from pg_stat_activity where datname = '{database}'"
                )
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}"'))
        admin.dispose()
    assert port > 0 and os.path.basename(service_url) == database


@pytest.mark.slow
def test_helm_test_hook_script_against_running_services(service_process: ServiceProcess) -> None:
    chart = helm.Chart.load(str(REPO / "charts" / "atelier"))
    manifests = chart.render({}, name="atelier", namespace="atelier")
    pod = yaml.safe_load(manifests["atelier/templates/tests/test-health.yaml"])
    container = pod["spec"]["containers"][0]
    assert container["command"][:2] == ["python", "-c"]
    script = [sys.executable, "-c", container["command"][2]]
    _proc, port, _metrics = service_process("nesting")
    env = {**os.environ, "TLS": "0", "TARGETS": f"127.0.0.1:{port}=atelier.nesting.v1.NestingService"}
    result = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "atelier.nesting.v1.NestingService: SERVING" in result.stdout
    # A service that does not answer fails the test hook.
    env["TARGETS"] += f",127.0.0.1:{port}=atelier.trends.v1.TrendsService"
    result = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "atelier.trends.v1.TrendsService: NOT_FOUND" in result.stdout


@pytest.mark.slow
def test_helm_test_hook_presents_the_release_certificate_under_mtls(
    service_process: ServiceProcess, tmp_path: Path
) -> None:
    from tests.conftest import free_port
    from tests.integration.certs import make_certs

    certs = make_certs(tmp_path)
    tls = tmp_path / "tls"  # laid out as the release's TLS Secret
    tls.mkdir()
    for source, name in (
        (certs.ca_crt, "ca.crt"),
        (certs.server_crt, "tls.crt"),
        (certs.server_key, "tls.key"),
    ):
        shutil.copy(source, tls / name)
    chart = helm.Chart.load(str(REPO / "charts" / "atelier"))
    values = {"tls": {"enabled": True, "secretName": "atelier-tls", "clientAuth": {"enabled": True}}}
    pod = yaml.safe_load(
        chart.render(values, name="atelier", namespace="atelier")["atelier/templates/tests/test-health.yaml"]
    )
    script = [
        sys.executable,
        "-c",
        pod["spec"]["containers"][0]["command"][2].replace("/etc/atelier/tls/", f"{tls}/"),
    ]
    health_port = free_port()
    _proc, port, _metrics = service_process(
        "nesting",
        env={
            "ATELIER_TLS_CERT_FILE": str(tls / "tls.crt"),
            "ATELIER_TLS_KEY_FILE": str(tls / "tls.key"),
            "ATELIER_TLS_CLIENT_CA_FILE": str(tls / "ca.crt"),
            "ATELIER_TLS_CLIENT_AUTH": "1",
            "ATELIER_HEALTH_PORT": str(health_port),
        },
        wait=False,
    )
    wait_serving(f"127.0.0.1:{health_port}", "atelier.nesting.v1.NestingService")  # what the probes ask
    env = {
        **os.environ,
        "TLS": "1",
        "MTLS": "1",
        "TARGETS": f"localhost:{port}=atelier.nesting.v1.NestingService",
    }
    result = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # Without the certificate the mTLS server refuses the handshake.
    env["MTLS"] = "0"
    result = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1 and "UNAVAILABLE" in result.stdout
