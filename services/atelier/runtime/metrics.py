"""Prometheus metrics: the go-grpc-prometheus names (so existing dashboards work) plus the
runtime's own. Each service process serves them over HTTP on its metrics port."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

import atelier

# Latency buckets from 1 ms (a cached recommendation) to 10 min (a long generation or marker).
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
)

_RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")

started_total = Counter("grpc_server_started_total", "RPCs started on the server.", _RPC_LABELS)
handled_total = Counter(
    "grpc_server_handled_total", "RPCs completed on the server, by status code.", (*_RPC_LABELS, "grpc_code")
)
handling_seconds = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its end, in seconds.",
    _RPC_LABELS,
    buckets=LATENCY_BUCKETS,
)
msg_received_total = Counter("grpc_server_msg_received_total", "Stream messages received.", _RPC_LABELS)
msg_sent_total = Counter("grpc_server_msg_sent_total", "Stream messages sent.", _RPC_LABELS)
malformed_requests_total = Counter(
    "atelier_malformed_requests_total",
    "Request messages whose bytes did not parse (answered INVALID_ARGUMENT).",
    _RPC_LABELS,
)

service_ready = Gauge(
    "atelier_service_ready",
    "1 when the service has loaded what it needs and reports SERVING, else 0.",
    ("service",),
)
build_info = Info("atelier_build", "Version of the running service.")

jobs_total = Counter(
    "atelier_jobs_total", "Long-running jobs that ended, by final state.", ("service", "kind", "state")
)
jobs_running = Gauge("atelier_jobs_running", "Long-running jobs running now.", ("service", "kind"))
job_seconds = Histogram(
    "atelier_job_seconds",
    "Duration of long-running jobs, in seconds.",
    ("service", "kind"),
    buckets=LATENCY_BUCKETS,
)


def start_metrics_server(service: str, host: str, port: int) -> int:
    """Serve /metrics; returns the bound port (useful when port is 0)."""
    build_info.info({"version": atelier.__version__, "service": service})
    service_ready.labels(service).set(0)
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)
