"""Writes the Grafana dashboards in deploy/grafana/dashboards/ (one for the platform, one per service).

    .venv/bin/python deploy/grafana/generate.py          # rewrite the JSON files
    .venv/bin/python deploy/grafana/generate.py --check  # fail when the files are stale (a test runs this)

The dashboards are data: the panels below name only metrics the services export (a test scrapes
running services and compares) plus NVIDIA dcgm-exporter's GPU metrics, which the GPU operator
exports on GPU nodes. Import them in Grafana (Dashboards > Import) or mount them with a
dashboard provisioning ConfigMap; each asks for a Prometheus data source.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
SERVICES = ("generation", "body", "nesting", "inspection", "trends", "recommendations")
DS = {"type": "prometheus", "uid": "${datasource}"}
SERVER_ERRORS = 'grpc_code=~"UNKNOWN|INTERNAL|UNAVAILABLE|DATA_LOSS|DEADLINE_EXCEEDED"'
# Health checks and blocking WaitOperation calls would drown the latency of real calls.
REAL_CALLS = 'grpc_service!~"grpc.health.v1.Health|google.longrunning.Operations"'
# GPU figures: NVIDIA dcgm-exporter (GPU operator), not an Atelier process.
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
GPU_MEM_USED = "DCGM_FI_DEV_FB_USED"


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    description: str = ""


def q(quantile: float, metric: str, by: str, selector: str = "") -> str:
    return (
        f"histogram_quantile({quantile}, sum by ({by}, le) "
        f"(rate({metric}_bucket{{{selector}}}[$__rate_interval])))"
    )


def rpc_panels(svc: str) -> list[Panel]:
    sel = f'atelier_service="{svc}"'
    return [
        Panel(
            "Requests by method",
            (
                (
                    f"sum by (grpc_method) (rate(grpc_server_handled_total{{{sel}, {REAL_CALLS}}}"
                    "[$__rate_interval]))",
                    "{{grpc_method}}",
                ),
            ),
            "reqps",
        ),
        Panel(
            "Responses by code",
            (
                (
                    f"sum by (grpc_code) (rate(grpc_server_handled_total{{{sel}}}[$__rate_interval]))",
                    "{{grpc_code}}",
                ),
            ),
            "reqps",
        ),
        Panel(
            "Server error ratio",
            (
                (
                    f"sum(rate(grpc_server_handled_total{{{sel}, {SERVER_ERRORS}}}[$__rate_interval]))"
                    f" / sum(rate(grpc_server_handled_total{{{sel}}}[$__rate_interval]))",
                    "errors",
                ),
            ),
            "percentunit",
            description="UNKNOWN, INTERNAL, UNAVAILABLE, DATA_LOSS, DEADLINE_EXCEEDED over all calls",
        ),
        Panel(
            "Latency p50 / p99 by method",
            (
                (
                    q(0.5, "grpc_server_handling_seconds", "grpc_method", f"{sel}, {REAL_CALLS}"),
                    "p50 {{grpc_method}}",
                ),
                (
                    q(0.99, "grpc_server_handling_seconds", "grpc_method", f"{sel}, {REAL_CALLS}"),
                    "p99 {{grpc_method}}",
                ),
            ),
            "s",
        ),
        Panel(
            "Ready (model loaded)",
            ((f'min(atelier_service_ready{{service="{svc}"}})', "ready"),),
            "bool",
            "stat",
        ),
        Panel(
            "In-flight calls started - handled",
            (
                (
                    f"sum(rate(grpc_server_started_total{{{sel}}}[$__rate_interval])) - "
                    f"sum(rate(grpc_server_handled_total{{{sel}}}[$__rate_interval]))",
                    "backlog growth",
                ),
            ),
            "reqps",
        ),
        Panel("Jobs running", ((f'sum by (kind) (atelier_jobs_running{{service="{svc}"}})', "{{kind}}"),)),
        Panel(
            "Jobs ended by state",
            (
                (
                    f'sum by (kind, state) (increase(atelier_jobs_total{{service="{svc}"}}[1h]))',
                    "{{kind}} {{state}}",
                ),
            ),
            "short",
            description="per hour",
        ),
        Panel(
            "Job duration p90",
            ((q(0.9, "atelier_job_seconds", "kind", f'service="{svc}"'), "{{kind}}"),),
            "s",
        ),
    ]


GPU_PANELS = [
    Panel(
        "GPU utilisation",
        ((f"avg by (Hostname, gpu) ({GPU_UTIL})", "{{Hostname}} GPU {{gpu}}"),),
        "percent",
        description="dcgm-exporter (NVIDIA GPU operator)",
    ),
    Panel(
        "GPU memory used",
        ((f"sum by (Hostname, gpu) ({GPU_MEM_USED}) * 1048576", "{{Hostname}} GPU {{gpu}}"),),
        "bytes",
        description="dcgm-exporter reports MiB",
    ),
]

# Each service's own figures; only metrics its code defines (tests/deploy/test_metrics.py checks).
DOMAIN: dict[str, list[Panel]] = {
    "generation": [
        Panel(
            "Queue depth (jobs waiting for the device)",
            (("sum by (instance, device) (atelier_generation_queue_depth)", "{{instance}} {{device}}"),),
        ),
        Panel(
            "Images per second by mode",
            (("sum by (mode) (rate(atelier_generation_images_total[$__rate_interval]))", "{{mode}}"),),
            "ops",
        ),
        Panel(
            "Seconds per image p50 / p90",
            (
                (q(0.5, "atelier_generation_image_seconds", "instance"), "p50 {{instance}}"),
                (q(0.9, "atelier_generation_image_seconds", "instance"), "p90 {{instance}}"),
            ),
            "s",
        ),
        Panel(
            "Generate job time p90 by mode",
            ((q(0.9, "atelier_generation_seconds", "mode"), "{{mode}}"),),
            "s",
        ),
        Panel(
            "Denoising steps per second",
            (("sum(rate(atelier_generation_steps_total[$__rate_interval]))", "steps"),),
            "ops",
        ),
        Panel(
            "Model memory",
            (("sum by (instance) (atelier_generation_model_memory_bytes)", "{{instance}}"),),
            "bytes",
        ),
        Panel(
            "Rejected or stopped jobs",
            (("sum by (reason) (rate(atelier_generation_rejected_total[$__rate_interval]))", "{{reason}}"),),
            "ops",
        ),
        Panel(
            "Model loads",
            (("sum by (result) (increase(atelier_generation_model_loads_total[1h]))", "{{result}}"),),
        ),
        Panel(
            "Tile seam error p90",
            ((q(0.9, "atelier_generation_tile_seam_error", "instance"), "{{instance}}"),),
            description="0..255, lower is better",
        ),
        *GPU_PANELS,
    ],
    "body": [
        Panel(
            "Measurements by outcome",
            (("sum by (outcome) (rate(atelier_body_measure_total[$__rate_interval]))", "{{outcome}}"),),
            "ops",
        ),
        Panel(
            "MeasureBody time p50 / p90",
            (
                (q(0.5, "atelier_body_measure_seconds", "atelier_service"), "p50"),
                (q(0.9, "atelier_body_measure_seconds", "atelier_service"), "p90"),
            ),
            "s",
        ),
        Panel(
            "Prediction uncertainty (chest sd) median",
            ((q(0.5, "atelier_body_prediction_stddev_centimetres", "atelier_service"), "median sd"),),
            "short",
            description="centimetres; lower means more confident measurements",
        ),
        Panel(
            "Photo values rejected as implausible",
            (
                (
                    "sum by (measurement) (rate(atelier_body_photo_observations_rejected_total[$__rate_interval]))",
                    "{{measurement}}",
                ),
            ),
            "ops",
        ),
        Panel(
            "Lens focal length source (assumed: no EXIF, a main camera taken)",
            (
                (
                    "sum by (source) (rate(atelier_body_measure_focal_length_total[$__rate_interval]))",
                    "{{source}}",
                ),
            ),
            "ops",
        ),
        Panel(
            "Size recommendations (between sizes or not)",
            (
                (
                    "sum by (between_sizes) (rate(atelier_body_recommendations_total[$__rate_interval]))",
                    "between sizes: {{between_sizes}}",
                ),
            ),
            "ops",
        ),
    ],
    "nesting": [
        Panel(
            "Marker efficiency p10 / median",
            (
                (q(0.1, "atelier_nesting_marker_efficiency_ratio", "atelier_service"), "p10"),
                (q(0.5, "atelier_nesting_marker_efficiency_ratio", "atelier_service"), "median"),
            ),
            "percentunit",
            description="piece area / fabric area used",
        ),
        Panel(
            "Markers by outcome",
            (("sum by (outcome) (increase(atelier_nesting_markers_total[1h]))", "{{outcome}}"),),
            description="per hour",
        ),
        Panel(
            "Marker solve time p50 / p90",
            (
                (q(0.5, "atelier_nesting_marker_solve_seconds", "atelier_service"), "p50"),
                (q(0.9, "atelier_nesting_marker_solve_seconds", "atelier_service"), "p90"),
            ),
            "s",
        ),
        Panel(
            "Marker length median",
            ((q(0.5, "atelier_nesting_marker_length_meters", "atelier_service"), "median"),),
            "lengthm",
        ),
    ],
    "recommendations": [
        Panel(
            "Recommendation latency p50 / p99 by query",
            (
                (q(0.5, "atelier_recommendations_query_seconds", "query"), "p50 {{query}}"),
                (q(0.99, "atelier_recommendations_query_seconds", "query"), "p99 {{query}}"),
            ),
            "s",
            description="scoring time in the domain, per query kind",
        ),
        Panel(
            "Events accepted by type",
            (("sum by (type) (rate(atelier_recommendations_events_total[$__rate_interval]))", "{{type}}"),),
            "ops",
        ),
        Panel(
            "Duplicate and unknown-item events",
            (
                ("sum(rate(atelier_recommendations_duplicate_events_total[$__rate_interval]))", "duplicates"),
                (
                    "sum(rate(atelier_recommendations_unknown_item_events_total[$__rate_interval]))",
                    "unknown items",
                ),
            ),
            "ops",
        ),
        Panel(
            "Cold-start answers and fold-ins",
            (
                ("sum(rate(atelier_recommendations_cold_start_total[$__rate_interval]))", "cold start"),
                (
                    "sum(rate(atelier_recommendations_fold_in_users_total[$__rate_interval]))",
                    "users folded in",
                ),
            ),
            "ops",
        ),
        Panel(
            "Serving state builds",
            ((q(0.9, "atelier_recommendations_state_build_seconds", "atelier_service"), "build time p90"),),
            "s",
        ),
        Panel(
            "Serving state swaps",
            (("sum by (reason) (increase(atelier_recommendations_state_swaps_total[1h]))", "{{reason}}"),),
        ),
        Panel(
            "Colour extractions",
            (("sum(rate(atelier_recommendations_colour_extractions_total[$__rate_interval]))", "photos"),),
            "ops",
        ),
    ],
}

PLATFORM = [
    Panel("Services ready", (("min by (service) (atelier_service_ready)", "{{service}}"),), "bool", "stat"),
    Panel(
        "Requests per second by service",
        (
            (
                f"sum by (atelier_service) (rate(grpc_server_handled_total{{{REAL_CALLS}}}"
                "[$__rate_interval]))",
                "{{atelier_service}}",
            ),
        ),
        "reqps",
    ),
    Panel(
        "Server error ratio by service",
        (
            (
                f"sum by (atelier_service) (rate(grpc_server_handled_total{{{SERVER_ERRORS}}}[$__rate_interval])) / "
                "sum by (atelier_service) (rate(grpc_server_handled_total[$__rate_interval]))",
                "{{atelier_service}}",
            ),
        ),
        "percentunit",
    ),
    Panel(
        "Latency p99 by service",
        ((q(0.99, "grpc_server_handling_seconds", "atelier_service", REAL_CALLS), "{{atelier_service}}"),),
        "s",
    ),
    Panel("Jobs running by service", (("sum by (service) (atelier_jobs_running)", "{{service}}"),)),
    Panel(
        "Failed jobs per hour",
        (
            (
                'sum by (service, kind) (increase(atelier_jobs_total{state="JOB_STATE_FAILED"}[1h]))',
                "{{service}} {{kind}}",
            ),
        ),
    ),
    Panel("Generation queue depth", (("sum by (device) (atelier_generation_queue_depth)", "{{device}}"),)),
    *GPU_PANELS,
    Panel(
        "Marker efficiency (median)",
        ((q(0.5, "atelier_nesting_marker_efficiency_ratio", "atelier_service"), "nesting"),),
        "percentunit",
    ),
    Panel(
        "Recommendation latency p99",
        ((q(0.99, "atelier_recommendations_query_seconds", "atelier_service"), "recommendations"),),
        "s",
    ),
    Panel(
        "Running versions",
        (("count by (version, service) (atelier_build_info)", "{{service}} {{version}}"),),
        kind="table",
    ),
]


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    width, height = (6, 4) if panel.kind == "stat" else (12, 8)
    body: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "datasource": DS,
        "gridPos": {"h": height, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {},
        "targets": [
            {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }
    if panel.description:
        body["description"] = panel.description
    if panel.kind == "table":
        body["targets"][0]["instant"] = True
        body["targets"][0]["format"] = "table"
    return body


def dashboard(uid: str, title: str, panels: list[Panel], tags: list[str]) -> dict[str, Any]:
    laid_out: list[dict[str, Any]] = []
    x = y = 0
    row_height = 0
    for i, panel in enumerate(panels, start=1):
        body = panel_json(panel, i, x, y)
        w, h = body["gridPos"]["w"], body["gridPos"]["h"]
        if x + w > 24:
            x, y = 0, y + row_height
            row_height = 0
            body["gridPos"].update(x=x, y=y)
        laid_out.append(body)
        x += w
        row_height = max(row_height, h)
    return {
        "uid": uid,
        "title": title,
        "tags": ["atelier", *tags],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": laid_out,
    }


def dashboards() -> dict[str, dict[str, Any]]:
    result = {
        "atelier-platform.json": dashboard("atelier-platform", "Atelier / Platform", PLATFORM, ["platform"])
    }
    for svc in SERVICES:
        panels = rpc_panels(svc) + DOMAIN.get(svc, [])
        result[f"atelier-{svc}.json"] = dashboard(f"atelier-{svc}", f"Atelier / {svc}", panels, [svc])
    return result


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 when a dashboard file is stale")
    args = parser.parse_args(argv)
    stale = []
    boards = dashboards()
    for name, board in boards.items():
        path = OUT / name
        text = render(board)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    extra = sorted(p.name for p in OUT.glob("*.json") if p.name not in boards) if OUT.exists() else []
    if args.check and (stale or extra):
        print(f"stale dashboards: {stale + extra}; run {Path(__file__).name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
