"""Ops material in deploy/: promtool checks the rules and config and runs the rule unit tests, every
metric named in rules and dashboards is exported by a running service, and a real Prometheus
server scrapes running services and answers PromQL over its HTTP API.

promtool and prometheus come from Debian's `prometheus` package (.ci/ensure-services.sh installs
it and sets ATELIER_REQUIRE_PROMETHEUS=1, so in CI these tests fail instead of skipping).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from atelier.runtime.registry import SERVICES
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
# Series no Atelier process exports: `up` is written by Prometheus per target; the DCGM_* GPU
# figures by NVIDIA's dcgm-exporter (GPU operator) on GPU nodes.
EXTERNAL = {"up", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"}

ServiceProcess = Callable[..., tuple[subprocess.Popen[bytes], int, int]]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed: apt-get install prometheus (Debian), or run .ci/run"
        if os.environ.get("ATELIER_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


# -- promtool -------------------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    result = run(tool("promtool"), "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_config() -> None:
    result = run(tool("promtool"), "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests() -> None:
    result = run(tool("promtool"), "test", "rules", "tests/alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: sum(rate(x[5m])\n")
    result = run(tool("promtool"), "check", "rules", str(bad))
    assert result.returncode != 0


# -- metric names in rules and dashboards ------------------------------------------------------------

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "le",
}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or labels."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\$\w+", " ", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function or aggregation, or a keyword
        if re.fullmatch(r"\d+[smhdwy]?", word) or (match.start() > 0 and text[match.start() - 1].isdigit()):
            continue
        names.add(word)
    return names


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (svc, le) (rate(grpc_server_handling_seconds_bucket"
        '{grpc_service!~"a|b"}[5m]))) > 2.5 and on (x) up == 0 unless atelier_x_total offset 5m'
    )
    assert metric_names(expr) == {"grpc_server_handling_seconds_bucket", "up", "atelier_x_total"}


def rule_metric_names() -> set[str]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    names: set[str] = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            names |= metric_names(rule["expr"])
    return names


def dashboard_metric_names() -> dict[str, set[str]]:
    result: dict[str, set[str]] = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        names: set[str] = set()
        for panel in board["panels"]:
            for target in panel["targets"]:
                names |= metric_names(target["expr"])
        result[path.name] = names
    return result


def hpa_metric_names() -> set[str]:
    """Custom metrics the HorizontalPodAutoscalers of the shipped values files scale on."""
    names: set[str] = set()
    for path in (REPO / "charts" / "atelier" / "values.yaml", REPO / "deploy" / "values-gpu-production.yaml"):
        for svc in yaml.safe_load(path.read_text())["services"].values():
            for metric in (svc.get("autoscaling") or {}).get("metrics") or []:
                spec = metric.get("pods") or metric.get("object") or metric.get("external") or {}
                if "metric" in spec:
                    names.add(spec["metric"]["name"])
    return names


def test_dashboards_are_generated_and_well_formed() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "grafana" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    names = {p.name for p in DASHBOARDS.glob("*.json")}
    assert names == {"atelier-platform.json", *(f"atelier-{s}.json" for s in SERVICES)}
    for path in DASHBOARDS.glob("*.json"):
        board = json.loads(path.read_text())
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in board["panels"]:
            assert panel["targets"], panel["title"]
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def exported_names(text: str) -> set[str]:
    """Every series name a /metrics page can hold (histograms expand to _bucket/_sum/_count)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind == "summary":
                names |= {f"{name}_sum", f"{name}_count"}
            elif kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
            elif kind == "info":
                names.add(f"{name}_info")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


@pytest.mark.slow
def test_every_metric_in_rules_and_dashboards_is_exported(service_process: ServiceProcess) -> None:
    started = {service: service_process(service, wait=False) for service in SERVICES}
    exported: set[str] = set()
    pending = set(SERVICES)
    deadline = time.monotonic() + 120
    # A service registers its domain metrics in build(), before /metrics answers; wait for
    # readiness anyway so metrics registered while loading are there too.
    while pending and time.monotonic() < deadline:
        for service in sorted(pending):
            proc, _port, metrics_port = started[service]
            assert proc.poll() is None, (
                f"{service} exited: {proc.communicate()[0].decode(errors='replace')[-2000:]}"
            )
            try:
                text = scrape(metrics_port)
            except (OSError, http.client.HTTPException):  # not up yet, or a port reused by another process
                continue
            if f'atelier_service_ready{{service="{service}"}} 1.0' in text:
                exported |= exported_names(text)
                pending.discard(service)
        time.sleep(0.3)
    assert not pending, f"not ready within 120 s: {sorted(pending)}"
    assert {
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "atelier_service_ready",
        "atelier_jobs_total",
        "atelier_build_info",
    } <= exported
    missing_in_rules = rule_metric_names() - exported - EXTERNAL
    assert not missing_in_rules, f"alert rules name metrics no service exports: {sorted(missing_in_rules)}"
    missing_in_hpa = hpa_metric_names() - exported
    assert not missing_in_hpa, f"autoscalers scale on metrics no service exports: {sorted(missing_in_hpa)}"
    for dashboard, names in dashboard_metric_names().items():
        missing = names - exported - EXTERNAL
        assert not missing, f"{dashboard} names metrics no service exports: {sorted(missing)}"


# -- a real Prometheus server --------------------------------------------------------------------------


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator[Callable[[list[tuple[str, int]]], str]]:
    """Starts Debian's prometheus on a free port scraping the given (service, metrics port) targets
    every second with deploy/prometheus/alerts.yml loaded; stopped by the fixture."""
    binary = tool("prometheus")
    procs: list[subprocess.Popen[bytes]] = []

    def start(targets: list[tuple[str, int]]) -> str:
        shutil.copy(PROMETHEUS_DIR / "alerts.yml", tmp_path / "alerts.yml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [
                {
                    "job_name": "atelier",
                    "honor_labels": True,
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{port}"], "labels": {"atelier_service": service}}
                        for service, port in targets
                    ],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return url
            except (OSError, http.client.HTTPException):  # not up yet, or a port reused by another process
                pass
            time.sleep(0.2)
        pytest.fail("prometheus did not become ready within 30 s")

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def api(url: str, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url}/api/v1/{path}{query}", timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def query_until(
    url: str, promql: str, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 60
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = api(url, "query", query=promql)["result"]
        if done(result):
            return result
        time.sleep(0.5)
    raise AssertionError(f"{promql} never met the condition within {timeout_s} s; last result {result}")


@pytest.mark.slow
def test_real_prometheus_scrapes_running_services(
    service_process: ServiceProcess, prometheus_server: Callable[[list[tuple[str, int]]], str]
) -> None:
    _nesting, nesting_port, nesting_metrics = service_process("nesting")
    _trends, _trends_port, trends_metrics = service_process("trends")
    url = prometheus_server([("nesting", nesting_metrics), ("trends", trends_metrics)])

    # Real calls, so the gRPC metrics have something to count.
    with grpc.insecure_channel(f"127.0.0.1:{nesting_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(7):
            stub.Check(health_pb2.HealthCheckRequest(service="atelier.nesting.v1.NestingService"), timeout=5)

    ready = query_until(url, "atelier_service_ready", lambda r: len(r) == 2)
    assert {(s["metric"]["service"], s["metric"]["atelier_service"], s["value"][1]) for s in ready} == {
        ("nesting", "nesting", "1"),
        ("trends", "trends", "1"),
    }

    handled = query_until(
        url,
        'sum by (atelier_service, grpc_code) (grpc_server_handled_total{grpc_service="grpc.health.v1.Health"})',
        lambda r: any(float(s["value"][1]) >= 7 for s in r),
    )
    nesting = [s for s in handled if s["metric"]["atelier_service"] == "nesting"]
    assert nesting and nesting[0]["metric"]["grpc_code"] == "OK"
    assert float(nesting[0]["value"][1]) >= 7

    # Every target is up, and the alert rules evaluate cleanly against real data with nothing firing.
    up = api(url, "query", query='up{job="atelier"}')["result"]
    assert sorted((s["metric"]["atelier_service"], s["value"][1]) for s in up) == [
        ("nesting", "1"),
        ("trends", "1"),
    ]
    deadline = time.monotonic() + 30
    while True:
        groups = api(url, "rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if rules and all(rule.get("lastEvaluation", "").startswith("20") for rule in rules):
            break
        assert time.monotonic() < deadline, "rules were not evaluated within 30 s"
        time.sleep(0.5)
    expected = sum(
        len(g["rules"]) for g in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    )
    assert len(rules) == expected
    assert {rule["health"] for rule in rules} == {"ok"}, [r for r in rules if r["health"] != "ok"]
    assert api(url, "alerts")["alerts"] == []
