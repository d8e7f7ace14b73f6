"""Trends benchmark: the HERMES protocol on the shared Heuritech sample, through the gRPC API.

    flock /tmp/atelier-bench.lock .venv/bin/python bench/trends.py
    flock /tmp/atelier-bench.lock .venv/bin/python bench/trends.py --scale-only --series 10000 --weeks 156

(--scale-only: only the scale part, written to its own section of BENCHMARKS.md.)

100 weekly fashion-trend series (2015-2019) with their fashion-forward influencer signal. The
first 209 weeks (2015-2018) are ingested over gRPC, the last 52 (2019) forecast with Forecast
and scored: seasonal MASE (m = 52) and the accuracy of the year-on-year class (5% threshold).
Also run: the Backtest RPC on the ingested part (forecast 2018 from 2015-2017), which is how the
default model was chosen; the 2019 test year played no part in that choice.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import timestamp_pb2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atelier.runtime.server import Server  # noqa: E402
from atelier.trends.evaluation import class_accuracy, mase  # noqa: E402
from atelier.trends.global_model import MAX_TRAINING_ROWS  # noqa: E402
from atelier.trends.server import build  # noqa: E402
from atelier.trends.v1 import trends_pb2, trends_pb2_grpc  # noqa: E402
from bench.report import bench_config, write_section  # noqa: E402
from tests.conftest import SHARED_BENCHMARKS, wait_serving  # noqa: E402

DATA = SHARED_BENCHMARKS / "trends"
HORIZON = 52
SCALE_SERIES, SCALE_WEEKS = 2000, 209
COMMAND = "flock /tmp/atelier-bench.lock .venv/bin/python bench/trends.py"
COMPARED = ["snaive", "ets", "theta", "mstl", "gbm", "ensemble"]
# Published on this sample (HERMES and f1fashiondataset READMEs).
PUBLISHED = [("tbats", 0.745), ("HERMES (tbats + RNN corrector, weak signal), 10 seeds", 0.7368)]


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process (the server runs in it) and its live children
    (the fitting workers), so a figure taken on a loaded machine says how much work was done."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a worker that just exited
            total += sum(child.cpu_times()[:2])
    return total


def scale_run(
    channel: grpc.Channel,
    stub: trends_pb2_grpc.TrendsServiceStub,
    series: int = SCALE_SERIES,
    weeks: int = SCALE_WEEKS,
) -> tuple[int, float, float, int, float]:
    """Scale: `series` simulated weekly series of `weeks` weeks in another tenant, streamed in and
    forecast 52 weeks ahead as one StartForecast operation, polled to the end. Returns the count,
    ingest s, forecast wall s, peak MB and the forecast's CPU s (server process and workers)."""
    SCALE_SERIES, SCALE_WEEKS = series, weeks  # the module defaults, overridden
    rng = np.random.default_rng(0)
    t = np.arange(SCALE_WEEKS)
    md = (("x-atelier-tenant", "bench-scale"),)
    start_s = 1_420_416_000  # 2015-01-05

    def batches():  # type: ignore[no-untyped-def]
        for first in range(0, SCALE_SERIES, 200):
            request = trends_pb2.StreamObservationsRequest()
            for k in range(first, min(first + 200, SCALE_SERIES)):
                level, amplitude = rng.uniform(5, 50), rng.uniform(0.5, 5)
                y = (
                    level * (1 + rng.normal(0, 0.1) * t / 52)
                    + amplitude * np.sin(2 * np.pi * t / 52 + rng.uniform(0, 6))
                    + rng.normal(0, 1, SCALE_WEEKS)
                )
                for week, value in enumerate(np.maximum(y, 0)):
                    request.observations.append(
                        trends_pb2.Observation(
                            series=f"sim{k}",
                            time=timestamp_pb2.Timestamp(seconds=start_s + week * 7 * 86_400),
                            value=float(value),
                        )
                    )
            yield request

    t0 = time.perf_counter()
    stub.StreamObservations(batches(), metadata=md)
    ingest_s = time.perf_counter() - t0
    operations = operations_pb2_grpc.OperationsStub(channel)
    t0, cpu0 = time.perf_counter(), _cpu_s()
    op = stub.StartForecast(trends_pb2.StartForecastRequest(horizon=HORIZON), metadata=md)
    while not op.done:
        time.sleep(0.5)
        op = operations.GetOperation(operations_pb2.GetOperationRequest(name=op.name), metadata=md)
    forecast_s, forecast_cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    result = trends_pb2.ForecastResponse()
    op.response.Unpack(result)
    print(f"scale: {len(result.forecasts)} series forecast in {forecast_s:.1f} s", flush=True)
    return (
        len(result.forecasts),
        ingest_s,
        forecast_s,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        forecast_cpu,
    )


def scale_only(series: int, weeks: int) -> int:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(bench_config("trends", Path(tmp)), build)
        server.start(metrics_port=0)
        address = f"127.0.0.1:{server.port}"
        try:
            wait_serving(address, timeout_s=300)
            options = [("grpc.max_receive_message_length", 256 << 20)]
            with grpc.insecure_channel(address, options=options) as channel:
                stub = trends_pb2_grpc.TrendsServiceStub(channel)
                count, ingest_s, forecast_s, peak_mb, cpu_s = scale_run(channel, stub, series, weeks)
        finally:
            server.stop(grace_s=1)
    load_after = os.getloadavg()
    markdown = (
        f"{count} simulated weekly series of {weeks} weeks (level, drift, yearly season, noise) streamed "
        f"in over gRPC in {ingest_s:.1f} s, then forecast {HORIZON} weeks ahead with the default model "
        f"as one `StartForecast` operation: **{forecast_s:.1f} s wall, {cpu_s:.1f} CPU-seconds** (the "
        f"server process and its fitting workers; on 2 cores the wall time without other load would be "
        f"about CPU-seconds / 2 at best). Peak memory of the benchmark process (server inside) {peak_mb} MB.\n\n"
        f"Load average (1/5/15 min) before: {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
        f"after: {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} (the machine is shared)."
    )
    print(markdown)
    write_section(
        f"trends-scale-{count}",
        markdown,
        f"{COMMAND} --scale-only --series {series} --weeks {weeks}",
    )
    return 0


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--scale-only", action="store_true")
    parser.add_argument("--series", type=int, default=SCALE_SERIES)
    parser.add_argument("--weeks", type=int, default=SCALE_WEEKS)
    args = parser.parse_args()
    if args.scale_only:
        return scale_only(args.series, args.weeks)
    main_csv = DATA / "f1_main_100_sequences.csv"
    if not main_csv.exists():
        print(f"benchmark data missing: {main_csv}")
        return 1
    y = pd.read_csv(main_csv, index_col=0, parse_dates=True)
    ext = pd.read_csv(DATA / "f1_fashion_forward_100_sequences.csv", index_col=0, parse_dates=True)[y.columns]
    cut = len(y) - HORIZON
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        config = bench_config("trends", Path(tmp))
        started = time.perf_counter()
        server = Server(config, build)
        server.start(metrics_port=0)
        address = f"127.0.0.1:{server.port}"
        wait_serving(address, timeout_s=300)
        start_s = time.perf_counter() - started
        options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        with grpc.insecure_channel(address, options=options) as channel:
            stub = trends_pb2_grpc.TrendsServiceStub(channel)
            request = trends_pb2.IngestObservationsRequest()
            for name in y.columns:
                market, gender, category, _ = name.split("_")
                request.series.append(
                    trends_pb2.SeriesInfo(
                        series=name,
                        labels={"market": market, "gender": gender, "category": category},
                        frequency=trends_pb2.FREQUENCY_WEEKLY,
                        kind=trends_pb2.VALUE_KIND_SHARE,
                    )
                )
                for when, value, signal in zip(
                    y.index[:cut], y[name].to_numpy()[:cut], ext[name].to_numpy()[:cut], strict=True
                ):
                    request.observations.append(
                        trends_pb2.Observation(
                            series=name,
                            time=timestamp_pb2.Timestamp(seconds=int(when.timestamp())),
                            value=float(value),
                            external=float(signal),
                        )
                    )
            t0 = time.perf_counter()
            ingested = stub.IngestObservations(request)
            ingest_s = time.perf_counter() - t0
            rows = []
            train = [y[n].to_numpy()[:cut] for n in y.columns]
            actual = [y[n].to_numpy()[cut:] for n in y.columns]
            for model in COMPARED:
                t0 = time.perf_counter()
                reply = stub.Forecast(
                    trends_pb2.ForecastRequest(horizon=HORIZON, levels=[80, 95], model=model)
                )
                seconds = time.perf_counter() - t0
                by = {f.series: f for f in reply.forecasts}
                forecast = [np.array(by[n].mean) for n in y.columns]
                score = float(
                    np.mean([mase(a, b, c, 52) for a, b, c in zip(train, actual, forecast, strict=True)])
                )
                accuracy = class_accuracy(train, actual, forecast, 52)
                cover = {
                    lv: float(
                        np.mean(
                            [
                                np.mean(
                                    (a >= np.array(by[n].intervals[k].lower))
                                    & (a <= np.array(by[n].intervals[k].upper))
                                )
                                for n, a in zip(y.columns, actual, strict=True)
                            ]
                        )
                    )
                    for k, lv in enumerate((80, 95))
                }
                rows.append((model, score, accuracy, cover[80], cover[95], seconds))
                print(f"{model}: MASE {score:.4f}, accuracy {accuracy:.3f}, {seconds:.1f} s", flush=True)
            t0 = time.perf_counter()
            classes = stub.ClassifyTrends(trends_pb2.ClassifyTrendsRequest())
            classify_s = time.perf_counter() - t0
            truth = {}
            for n, a, b in zip(y.columns, train, actual, strict=True):
                change = (b.mean() - a[-52:].mean()) / a[-52:].mean()
                truth[n] = 1 if change > 0.05 else 3 if change < -0.05 else 2
            classify_accuracy = float(np.mean([truth[t.series] == t.trend for t in classes.trends]))
            t0 = time.perf_counter()
            backtest = stub.Backtest(trends_pb2.BacktestRequest(horizon=HORIZON, windows=1))
            backtest_s = time.perf_counter() - t0
            scale = scale_run(channel, stub)
        server.stop(grace_s=1)
    load_after = os.getloadavg()
    auto = next(r for r in rows if r[0] == "ensemble")
    lines = [
        "HERMES protocol on the 100-series Heuritech sample (`../shared/benchmarks/trends`): 2015-2018 "
        "ingested over gRPC with the influencer signal, 2019 (52 weeks) forecast with `Forecast`, "
        "seasonal MASE (m = 52) and year-on-year class accuracy (5% threshold) computed from the replies.",
        "",
        "| model | seasonal MASE | class accuracy | 80% interval coverage | 95% interval coverage | Forecast RPC, s |",
        "|---|---|---|---|---|---|",
    ]
    for model, score, accuracy, c80, c95, seconds in rows:
        label = f"{model} (default, `auto`)" if model == "ensemble" else model
        lines.append(f"| {label} | {score:.4f} | {accuracy:.3f} | {c80:.3f} | {c95:.3f} | {seconds:.1f} |")
    for model, score in PUBLISHED:
        lines.append(f"| published: {model} | {score:.4f} | | | | |")
    lines += [
        "",
        "Target: seasonal MASE below 0.73 through the gRPC API in under a minute on 2 cores. On the full "
        "10,000 series (not available here) the published figures are snaive 0.881, ets 0.807, HERMES 0.7132. "
        "`ets` here is statsforecast's AutoETS, which (like R's ets) keeps no season longer than 24 periods, "
        "so on weekly data it is non-seasonal: not the published seasonal ets. Interval coverage: share of "
        "the 2019 weeks inside the calibrated interval.",
        "",
        f"- default pipeline through gRPC: ingest {ingested.inserted} observations in {ingest_s:.1f} s, "
        f"fit + forecast of 100 series in {auto[5]:.1f} s: **{ingest_s + auto[5]:.1f} s** in all, "
        f"MASE **{auto[1]:.4f}**, class accuracy {auto[2]:.3f}",
        f"- `ClassifyTrends` (forecasts the next 52 weeks itself): {classify_s:.1f} s, class accuracy "
        f"{classify_accuracy:.3f} against the 2019 truth",
        f"- server start until SERVING (fitting workers started and warmed): {start_s:.1f} s",
        f"- scale: {scale[0]} simulated weekly series of {SCALE_WEEKS} weeks (another tenant) streamed in "
        f"in {scale[1]:.1f} s and forecast 52 weeks ahead as one `StartForecast` operation in "
        f"**{scale[2]:.1f} s** (default model; the global model's training rows capped at "
        f"{MAX_TRAINING_ROWS:,}); peak memory of the benchmark process (the server runs in it; the fitting worker processes not counted) {scale[3]} MB",
        "- model choice, `Backtest` RPC on the ingested part (forecast 2018 from 2015-2017), "
        f"{backtest_s:.1f} s; best: **{backtest.best_model}**",
        "",
        "| model | backtest MASE 2018 | class accuracy | sMAPE |",
        "|---|---|---|---|",
        *[f"| {s.model} | {s.mase:.4f} | {s.class_accuracy:.3f} | {s.smape:.3f} |" for s in backtest.scores],
        "",
        f"Load average (1/5/15 min) before: {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
        f"after: {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} (the machine is shared).",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    write_section("trends", markdown, COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
