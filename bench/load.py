"""Load driver: `make load` (loopback only, bounded in time and count).

Starts each service as production does (`python -m atelier.runtime.server <service>`, SQLite in a
temporary data dir, 127.0.0.1 on free ports), prepares a little data through its API, then runs
concurrent clients against its main read and write RPCs and prints requests/s, p50, p99 and the
errors by status code. A last phase overloads one service (more clients than its concurrency
limit) and checks that every refusal is RESOURCE_EXHAUSTED with a google.rpc.RetryInfo.

    python bench/load.py [--clients 8] [--seconds 8] [--max-requests 2000] [--only trends,body] [--no-write]

The clients are Python threads in one process (gRPC's sync stubs), so on a small machine the
client shares the CPU with the servers: the figures are a floor for the servers, not a ceiling.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section

from atelier.common.v1 import geometry_pb2, image_pb2

REPO = Path(__file__).resolve().parent.parent
TENANT = (("x-atelier-tenant", "load"),)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Result:
    label: str
    clients: int
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    refusals_without_retry_info: int = 0
    elapsed_s: float = 0.0

    def row(self) -> str:
        ok = sorted(self.latencies_s)
        total = len(ok) + sum(self.errors.values())
        p50 = ok[len(ok) // 2] * 1000 if ok else float("nan")
        p99 = ok[min(len(ok) - 1, int(len(ok) * 0.99))] * 1000 if ok else float("nan")
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "0"
        return (
            f"| {self.label} | {self.clients} | {total} | {total / self.elapsed_s:.1f} | "
            f"{p50:.1f} | {p99:.1f} | {errors} |"
        )


def retry_delay_s(error: grpc.RpcError) -> float | None:
    """The delay of the google.rpc.RetryInfo in the error's details, None without one."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToTimedelta().total_seconds())
    return None


def drive(
    label: str,
    call: Callable[[int], Any],
    clients: int,
    seconds: float,
    max_requests: int,
    honour_retry_info: bool = False,
) -> Result:
    """clients threads call call(i) with i = 0, 1, 2... until seconds or max_requests are reached.

    honour_retry_info: a refused client waits the delay the server asked for, as a well-behaved one does.
    """
    result = Result(label, clients)
    lock = threading.Lock()
    counter = iter(range(max_requests))
    stop_at = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < stop_at:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            started = time.perf_counter()
            try:
                call(i)
                elapsed = time.perf_counter() - started
                with lock:
                    result.latencies_s.append(elapsed)
            except grpc.RpcError as exc:
                code = exc.code().name
                delay = retry_delay_s(exc) if code == "RESOURCE_EXHAUSTED" else None
                with lock:
                    result.errors[code] += 1
                    if code == "RESOURCE_EXHAUSTED" and delay is None:
                        result.refusals_without_retry_info += 1
                if honour_retry_info and delay:
                    time.sleep(min(delay, max(0.0, stop_at - time.monotonic())))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.elapsed_s = time.monotonic() - started
    return result


class Service:
    def __init__(self, name: str, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = free_port()
        child_env = {
            **os.environ,
            "ATELIER_DATA_DIR": str(data_dir),
            f"ATELIER_{name.upper()}_PORT": str(self.port),
            f"ATELIER_{name.upper()}_METRICS_PORT": str(free_port()),
            "ATELIER_HOST": "127.0.0.1",
            "ATELIER_LOG_LEVEL": "WARNING",
            "ATELIER_LOG_FORMAT": "text",
            **(env or {}),
        }
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir / f"{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "atelier.runtime.server", name],
            env=child_env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self._wait_serving()

    def _wait_serving(self, timeout_s: float = 300) -> None:
        stub = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service="atelier.readiness"), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} did not become ready")

    def stop(self) -> float:
        started = time.monotonic()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.channel.close()
        return time.monotonic() - started


def wait_operation(channel: grpc.Channel, name: str, timeout_s: float = 300) -> Any:
    ops = operations_pb2_grpc.OperationsStub(channel)
    op = ops.WaitOperation(
        operations_pb2.WaitOperationRequest(name=name, timeout={"seconds": int(timeout_s)}),
        metadata=TENANT,
        timeout=timeout_s + 10,
    )
    if not op.done or op.HasField("error"):
        raise RuntimeError(f"operation {name} did not succeed: {op}")
    return op


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def weave(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 128 + 25 * np.sin(2 * np.pi * x / 6) * np.sin(2 * np.pi * y / 6)
    return np.clip(base + rng.normal(0, 6, (h, w)), 0, 249).astype(np.uint8)


# -- one function per service: prepare data, return {label: call(i)} --------------------------------


def trends_calls(channel: grpc.Channel) -> dict[str, Callable[[int], Any]]:
    from atelier.trends.v1 import trends_pb2 as pb
    from atelier.trends.v1 import trends_pb2_grpc

    stub = trends_pb2_grpc.TrendsServiceStub(channel)
    week, start = 7 * 86_400, 1_420_416_000
    rng = np.random.default_rng(0)
    observations = []
    for s in range(20):
        t = np.arange(200)
        values = 10 + 3 * np.sin(2 * np.pi * t / 52) + rng.normal(0, 0.5, 200)
        observations += [
            pb.Observation(series=f"s{s:02d}", time={"seconds": start + k * week}, value=float(v))
            for k, v in enumerate(values)
        ]
    stub.IngestObservations(
        pb.IngestObservationsRequest(observations=observations), metadata=TENANT, timeout=60
    )
    return {
        "trends GetSeries (read)": lambda i: stub.GetSeries(
            pb.GetSeriesRequest(series=f"s{i % 20:02d}"), metadata=TENANT, timeout=30
        ),
        "trends Forecast 1 series, h=8 (read)": lambda i: stub.Forecast(
            pb.ForecastRequest(filter=pb.SeriesFilter(series=[f"s{i % 20:02d}"]), horizon=8, model="mstl"),
            metadata=TENANT,
            timeout=60,
        ),
        "trends IngestObservations 10 obs (write)": lambda i: stub.IngestObservations(
            pb.IngestObservationsRequest(
                observations=[
                    pb.Observation(
                        series=f"w{i % 50:02d}", time={"seconds": start + (i * 10 + k) * week}, value=1.0
                    )
                    for k in range(10)
                ]
            ),
            metadata=TENANT,
            timeout=30,
        ),
    }


def body_calls(channel: grpc.Channel) -> dict[str, Callable[[int], Any]]:
    from atelier.body.v1 import body_pb2 as pb
    from atelier.body.v1 import body_pb2_grpc

    stub = body_pb2_grpc.BodyServiceStub(channel)
    sizes = [
        pb.Size(
            label=label,
            ranges=[
                pb.SizeRange(measurement="chest_girth", min_cm=88 + 8 * i, max_cm=96 + 8 * i),
                pb.SizeRange(measurement="waist_girth", min_cm=76 + 8 * i, max_cm=84 + 8 * i),
            ],
        )
        for i, label in enumerate(("S", "M", "L", "XL"))
    ]
    return {
        "body PredictMeasurements (read)": lambda i: stub.PredictMeasurements(
            pb.PredictMeasurementsRequest(height_cm=160 + i % 30, weight_kg=60 + i % 25, sex=pb.SEX_MALE),
            metadata=TENANT,
            timeout=30,
        ),
        "body CreateSizeChart (write)": lambda i: stub.CreateSizeChart(
            pb.CreateSizeChartRequest(
                chart=pb.SizeChart(display_name=f"load {i}", system="EN 13402", sizes=sizes)
            ),
            metadata=TENANT,
            timeout=30,
        ),
    }


def recommendations_calls(channel: grpc.Channel) -> dict[str, Callable[[int], Any]]:
    from atelier.recommendations.v1 import recommendations_pb2 as pb
    from atelier.recommendations.v1 import recommendations_pb2_grpc

    stub = recommendations_pb2_grpc.RecommendationsServiceStub(channel)
    items = [
        pb.Item(item_id=f"i{k}", category=("tops", "bottoms", "shoes")[k % 3], sizes_in_stock=["M"])
        for k in range(60)
    ]
    stub.UpsertItems(pb.UpsertItemsRequest(items=items), metadata=TENANT, timeout=60)
    rng = np.random.default_rng(1)

    def event(event_id: str, user: int, item: int) -> Any:
        e = pb.Event(event_id=event_id, user_id=f"u{user}", item_id=f"i{item}", type=pb.EVENT_TYPE_PURCHASE)
        e.time.FromSeconds(1_700_000_000 + len(event_id))
        return e

    events = [event(f"e{k}", int(rng.integers(80)), int(rng.integers(60))) for k in range(1500)]
    stub.RecordEvents(pb.RecordEventsRequest(events=events), metadata=TENANT, timeout=60)
    op = stub.TrainModel(pb.TrainModelRequest(factors=16, iterations=5), metadata=TENANT, timeout=30)
    wait_operation(channel, op.name)
    return {
        "recommendations Recommend (read)": lambda i: stub.Recommend(
            pb.RecommendRequest(user_id=f"u{i % 80}", n=10), metadata=TENANT, timeout=30
        ),
        "recommendations RecordEvents 5 events (write)": lambda i: stub.RecordEvents(
            pb.RecordEventsRequest(events=[event(f"l{i}-{k}", i % 80, (i + k) % 60) for k in range(5)]),
            metadata=TENANT,
            timeout=30,
        ),
    }


def inspection_calls(channel: grpc.Channel) -> dict[str, Callable[[int], Any]]:
    from atelier.inspection.v1 import inspection_pb2 as pb
    from atelier.inspection.v1 import inspection_pb2_grpc

    stub = inspection_pb2_grpc.InspectionServiceStub(channel)
    goods = [image_pb2.Image(data=png(weave(128, 512, s)), mime_type="image/png") for s in range(4)]
    stub.CreateProfile(
        pb.CreateProfileRequest(article="load", good_images=goods), metadata=TENANT, timeout=120
    )
    probe = image_pb2.Image(data=png(weave(128, 512, 99)), mime_type="image/png")
    return {
        "inspection InspectImage 128x512 (read)": lambda i: stub.InspectImage(
            pb.InspectImageRequest(article="load", image=probe), metadata=TENANT, timeout=60
        ),
        "inspection CreateProfile 4 images (write)": lambda i: stub.CreateProfile(
            pb.CreateProfileRequest(article=f"load-{i % 5}", good_images=goods), metadata=TENANT, timeout=120
        ),
    }


def nesting_calls(channel: grpc.Channel) -> dict[str, Callable[[int], Any]]:
    from atelier.nesting.v1 import nesting_pb2 as pb
    from atelier.nesting.v1 import nesting_pb2_grpc

    stub = nesting_pb2_grpc.NestingServiceStub(channel)
    cuff = geometry_pb2.PolygonMm(
        points=[geometry_pb2.PointMm(x_mm=x, y_mm=y) for x, y in ((0, 0), (120, 0), (120, 40), (0, 40))]
    )

    def create(i: int) -> Any:
        return stub.CreateMarker(
            pb.CreateMarkerRequest(
                pieces=[pb.Piece(id="cuff", outline=cuff, quantity=4, grain=pb.GRAIN_RULE_WOVEN)],
                fabric=pb.Fabric(width_mm=300.0),
                time_budget_s=1,
                seed=i,
            ),
            metadata=TENANT,
            timeout=30,
        )

    done = create(0)
    wait_operation(channel, done.name)
    return {
        "nesting GetMarker (read)": lambda i: stub.GetMarker(
            pb.GetMarkerRequest(operation=done.name), metadata=TENANT, timeout=30
        ),
        "nesting CreateMarker, returns the operation (write)": create,
    }


def generation_calls(channel: grpc.Channel) -> dict[str, Callable[[int], Any]]:
    from atelier.generation.v1 import generation_pb2 as pb
    from atelier.generation.v1 import generation_pb2_grpc

    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    return {
        "generation ListModels (read)": lambda i: stub.ListModels(
            pb.ListModelsRequest(), metadata=TENANT, timeout=30
        ),
    }


SCENARIOS: dict[str, Callable[[grpc.Channel], dict[str, Callable[[int], Any]]]] = {
    "body": body_calls,
    "nesting": nesting_calls,
    "inspection": inspection_calls,
    "trends": trends_calls,
    "recommendations": recommendations_calls,
    "generation": generation_calls,
}
# Writes that are slow by nature get fewer requests (each trains a model or starts a solver job).
SLOW_MAX_REQUESTS = {
    "inspection CreateProfile 4 images (write)": 40,
    "nesting CreateMarker, returns the operation (write)": 60,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients per RPC (default 8)")
    parser.add_argument("--seconds", type=float, default=8.0, help="time per RPC (default 8)")
    parser.add_argument(
        "--max-requests", type=int, default=2000, help="requests per RPC at most (default 2000)"
    )
    parser.add_argument("--only", default="", help="comma-separated services (default all)")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    chosen = [s for s in SCENARIOS if not args.only or s in args.only.split(",")]
    load_before = os.getloadavg()
    rows: list[Result] = []
    stops: list[str] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="atelier-load-") as tmp:
        for name in chosen:
            service = Service(name, Path(tmp) / name)
            try:
                calls = SCENARIOS[name](service.channel)
                for label, call in calls.items():
                    limit = SLOW_MAX_REQUESTS.get(label, args.max_requests)
                    result = drive(label, call, args.clients, args.seconds, limit)
                    print(result.row(), flush=True)
                    rows.append(result)
                    failed |= bool(result.errors)
            finally:
                stops.append(f"{name} {service.stop():.1f} s")

        # Overload: 4 calls at once allowed (3 per tenant), 24 clients of one tenant.
        overload_dir = Path(tmp) / "overload"
        service = Service("trends", overload_dir, env={"ATELIER_TRENDS_MAX_CONCURRENT_RPCS": "4"})
        try:
            forecast = trends_calls(service.channel)["trends Forecast 1 series, h=8 (read)"]
            over = drive(
                "trends Forecast, limit 4 (3 per tenant), 24 clients waiting out RetryInfo",
                forecast,
                24,
                args.seconds,
                args.max_requests,
                honour_retry_info=True,
            )
        finally:
            stops.append(f"trends (overload) {service.stop():.1f} s")
    print(over.row(), flush=True)
    only_shed = set(over.errors) <= {"RESOURCE_EXHAUSTED"} and over.refusals_without_retry_info == 0
    print(
        f"overload: refusals {over.errors.get('RESOURCE_EXHAUSTED', 0)}, without RetryInfo "
        f"{over.refusals_without_retry_info}, other errors {sum(v for k, v in over.errors.items() if k != 'RESOURCE_EXHAUSTED')}"
    )
    load_after = os.getloadavg()
    header = "| RPC | clients | requests | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|---|"
    body = "\n".join(
        [
            f"Each service as its own process on 127.0.0.1 (SQLite, default limits: 16 calls at once, 12 per "
            f"tenant), {args.clients} concurrent clients per RPC (one tenant), up to {args.seconds:.0f} s or "
            f"{args.max_requests} requests each; clients are threads of one Python process on the same machine. "
            f"Load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (`uptime`, shared machine).",
            "",
            header,
            *(r.row() for r in rows),
            "",
            "Overload: the trends service started with `ATELIER_TRENDS_MAX_CONCURRENT_RPCS=4`; every error must "
            "be RESOURCE_EXHAUSTED with RetryInfo"
            f" ({'yes' if only_shed else 'NO'}: {over.refusals_without_retry_info} refusals without RetryInfo).",
            "",
            header,
            over.row(),
            "",
            "From SIGTERM to exit (grace 30 s; queued jobs are drained within it, which is what nesting spent its time on): "
            + ", ".join(stops)
            + ".",
        ]
    )
    print(body)
    if not args.no_write:
        write_section("load", body, "make load")
    return 0 if not failed and only_shed else 1


if __name__ == "__main__":
    sys.exit(main())
