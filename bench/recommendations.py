"""Recommendations benchmark: quality, training time, gRPC serving latency.

    flock /tmp/atelier-bench.lock .venv/bin/python bench/recommendations.py --data ../shared/benchmarks [--quick]
        [--online-retail FOLDER_OR_CSV]   # the full UCI Online Retail export instead of the sample

Quality: the service's own offline evaluation (evaluation.evaluate, what EvaluateModel runs) on
two real retailers (../shared/benchmarks/recommendations/online_retail_sample.csv, UCI Online
Retail, CC BY 4.0; ../shared/benchmarks/retail-journey/, 84.51 Complete Journey, CC0; loaders in
bench/retail_data.py) and on the simulated retailer (atelier.recommendations.simulate). As in the
H&M Kaggle task: train on everything before the last 14 days, score MAP@12 / recall@12 / NDCG@12
against each shopper's purchases in those days, beside popularity, repurchase, item-kNN and
plain ALS baselines trained on the same events in the same run.
Training time: our fit (training.fit_factors) against raw implicit on the same matrix, and the
ranker (ranking.fit_two_stage) as TrainModel runs it.
Serving: a real server process, model artefact at 100k users x 20k items, concurrent gRPC clients.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402

K = 12


def quality(name: str, events, items, segments, max_users: int = 5000) -> dict:  # type: ignore[no-untyped-def]
    """The service's evaluation (EvaluateModel's domain function) on one retailer's events."""
    from atelier.recommendations.evaluation import evaluate

    started = time.perf_counter()
    report = evaluate(events, items, segments, test_days=14, k=K, max_users=max_users)
    out = report.as_dict()
    out["name"] = name
    out["wall_s"] = time.perf_counter() - started
    out["events"] = len(events)
    print(json.dumps(out)[:2000], flush=True)
    return out


def quality_rows(q: dict) -> list[str]:  # type: ignore[type-arg]
    lines = [
        f"**{q['name']}**: {q['events']} events, {q['items']} items; last {q['test_days']:g} days held out, "
        f"{q['users_evaluated']} shoppers who bought in them and had events before; "
        f"evaluation {q['wall_s']:.0f} s.",
        "",
        f"| method | MAP@{K} | recall@{K} | NDCG@{K} | coverage | novelty bits | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in q["methods"]:
        lines.append(
            f"| {m['name']} | {m[f'map@{K}']:.4f} | {m[f'recall@{K}']:.4f} | {m[f'ndcg@{K}']:.4f} | "
            f"{m['coverage']:.3f} | {m['novelty_bits']:.2f} | {m['seconds']:.1f} |"
        )
    low, high = q["lift_ci95"]
    lines += [
        "",
        f"MAP@{K} lift over the best baseline ({q['best_baseline']}): **{q['lift']:+.1%}**, bootstrap 95 % "
        f"interval {low:+.1%} .. {high:+.1%} (2000 resamples of the shoppers). Ranker trained on "
        f"{q['info'].get('train_groups', 0)} shopper-windows; top features by gain: "
        + ", ".join(f"{k} {v:.2f}" for k, v in list(q["info"].get("feature_importance", {}).items())[:5])
        + ".",
        "",
    ]
    return lines


def training_time(n_users: int, n_items: int, repeats: int = 2) -> dict:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from atelier.recommendations.simulate import simulate
    from atelier.recommendations.training import (
        EventWeights,
        TrainParams,
        build_interactions,
        fit_factors,
        save_artefact,
    )

    started = time.perf_counter()
    shop = simulate(n_users, n_items, n_clusters=20, interactions_per_user=10, seed=5)
    item_ids = np.array([it.item_id for it in shop.items], dtype=object)
    segments = dict(zip(shop.user_ids, shop.user_segment, strict=True))
    agg_started = time.perf_counter()
    inter = build_interactions(shop.events, item_ids, segments, EventWeights(), half_life_days=60)
    aggregate_s = time.perf_counter() - agg_started
    sim_s = time.perf_counter() - started
    params = TrainParams(factors=64, iterations=15, regularization=0.05)
    ours, raw, ours_cpu, raw_cpu = [], [], [], []

    def run_raw() -> None:
        t, c = time.perf_counter(), time.process_time()
        with threadpool_limits(1, "blas"):  # what implicit itself asks for
            model = AlternatingLeastSquares(
                factors=64, iterations=15, regularization=0.05, random_state=42, calculate_training_loss=False
            )
            model.fit(inter.confidence, show_progress=False)
        raw.append(time.perf_counter() - t)
        raw_cpu.append(time.process_time() - c)

    # Alternating order, best of `repeats` each: the machine is shared, so single runs are noisy.
    for k in range(repeats):
        if k % 2:
            run_raw()
        t, c = time.perf_counter(), time.process_time()
        uf, itf = fit_factors(inter.confidence, params)
        ours.append(time.perf_counter() - t)
        ours_cpu.append(time.process_time() - c)
        if not k % 2:
            run_raw()
    # The ranker as TrainModel fits it (ALS factors reused), with its ranked lists for every shopper.
    from atelier.recommendations.ranking import RankerParams, fit_two_stage

    t, c = time.perf_counter(), time.process_time()
    ranker = fit_two_stage(
        shop.events,
        shop.items,
        segments,
        # The default windows: training_windows picks as many as max_train_users needs.
        RankerParams(als=params),
        serving_factors=(uf, itf),
    )
    ranker_s, ranker_cpu = time.perf_counter() - t, time.process_time() - c
    return {
        "ranker": ranker,
        "ranker_s": ranker_s,
        "ranker_cpu": ranker_cpu,
        "shop": shop,
        "inter": inter,
        "uf": uf,
        "itf": itf,
        "params": params,
        "ours": min(ours),
        "raw": min(raw),
        "ours_cpu": min(ours_cpu),
        "raw_cpu": min(raw_cpu),
        "aggregate_s": aggregate_s,
        "sim_s": sim_s,
        "events": len(shop.events),
        "save": save_artefact,
    }


def _requests(users: int, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    """The bench's request mix: bought items left out unless rebought, 50 % size filter,
    30 % category filter, 30 % diversified, n=12."""
    from atelier.recommendations.v1 import recommendations_pb2 as pb

    while True:
        flt = pb.Filter(purchased=pb.PURCHASED_POLICY_EXCLUDE_UNLESS_REBOUGHT)
        if rng.random() < 0.5:
            flt.size = ["S", "M", "L"][int(rng.integers(3))]
        if rng.random() < 0.3:
            flt.categories.append(["tops", "bottoms", "shoes"][int(rng.integers(3))])
        yield pb.RecommendRequest(
            user_id=f"u{int(rng.integers(users))}", n=12, filter=flt, diversify=bool(rng.random() < 0.3)
        )


def _client(port: int, users: int, seconds: float, threads: int, seed: int, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    """Sync gRPC clients: `threads` threads in this process, one call in flight each."""
    import threading

    import grpc

    from atelier.recommendations.v1 import recommendations_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.RecommendationsServiceStub(channel)
    cpu_started = time.process_time()
    lat: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds

    def run(k: int) -> None:
        requests = _requests(users, np.random.default_rng(seed * 100 + k))
        while time.perf_counter() < deadline:
            request = next(requests)
            t = time.perf_counter()
            try:
                stub.Recommend(request, timeout=5)
                lat.append(time.perf_counter() - t)
            except grpc.RpcError:
                errors[0] += 1

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    queue.put((lat, errors[0], time.process_time() - cpu_started))


def _aio_client(port: int, users: int, seconds: float, concurrent: int, seed: int, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    """asyncio gRPC clients (grpc.aio): `concurrent` closed-loop callers on one event loop and one
    channel, one call in flight each. The same request mix and the same closed loop as _client,
    with less of the shared cores spent by the load generator itself (no thread per caller)."""
    import asyncio

    import grpc

    from atelier.recommendations.v1 import recommendations_pb2_grpc as pb_grpc

    cpu_started = time.process_time()
    lat: list[float] = []
    errors = [0]

    async def main() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.RecommendationsServiceStub(channel)
            deadline = time.perf_counter() + seconds

            async def run(k: int) -> None:
                requests = _requests(users, np.random.default_rng(seed * 100 + k))
                while time.perf_counter() < deadline:
                    request = next(requests)
                    t = time.perf_counter()
                    try:
                        await stub.Recommend(request, timeout=5)
                        lat.append(time.perf_counter() - t)
                    except grpc.RpcError:
                        errors[0] += 1

            await asyncio.gather(*(run(k) for k in range(concurrent)))

    asyncio.run(main())
    queue.put((lat, errors[0], time.process_time() - cpu_started))


def serving(
    trained: dict,
    seconds: float,
    concurrency: list[tuple[int, int]],
    with_ranker: bool = True,
    client: str = "sync",
) -> list[dict]:
    """A server on the trained model; concurrency: (client processes, callers per process) per row.
    client: "sync" (threads of blocking stubs) or "aio" (grpc.aio callers on one event loop)."""
    data_dir = serving_data(trained, with_ranker)
    rows = [(client, processes, callers) for processes, callers in concurrency]
    return serve_and_load(data_dir, len(trained["shop"].user_ids), seconds, rows)


def serving_data(trained: dict, with_ranker: bool = True) -> Path:
    """A data folder (catalogue, model artefact, active version) for a server to load."""
    from atelier.recommendations.store import RecsStore
    from atelier.runtime.storage import Store

    shop, inter = trained["shop"], trained["inter"]
    tmp = Path(tempfile.mkdtemp(prefix="recs-bench-"))
    data_dir = tmp / "data"
    store = RecsStore(Store(f"sqlite:///{data_dir / 'recommendations.db'}"))
    for start in range(0, len(shop.items), 5000):
        store.upsert_items("default", shop.items[start : start + 5000])
    path = data_dir / "recommendations" / "models" / "default" / "bench.npz"
    from atelier.recommendations.training import artefact_arrays

    trained["save"](
        path,
        artefact_arrays(
            inter,
            trained["uf"],
            trained["itf"],
            trained["params"],
            0,
            ranker=trained["ranker"] if with_ranker else None,
        ),
    )
    version = store.add_version(
        "default",
        {
            "algorithm": "als",
            "path": str(path),
            "users": len(inter.user_ids),
            "items": len(shop.items),
            "interactions": int(inter.confidence.nnz),
            "factors": 64,
            "train_seconds": trained["ours"],
            "max_event_seq": 0,
            "params": json.dumps({"ranked_users": int((trained["ranker"].ranked_items[:, 0] >= 0).sum())}),
        },
    )
    store.activate("default", version)
    store.store.dispose()
    return data_dir


def serve_and_load(
    data_dir: Path,
    users: int,
    seconds: float,
    concurrency: list[tuple[str, int, int]],
    server_argv: list[str] | None = None,
) -> list[dict]:
    """One server process on data_dir, then one row per (client kind, processes, callers per process).
    server_argv: another server to load instead of the service (bench/grpc_floor.py)."""
    from tests.conftest import free_port, wait_serving

    port = free_port()
    env = {
        **os.environ,
        "ATELIER_DATA_DIR": str(data_dir),
        "ATELIER_RECOMMENDATIONS_PORT": str(port),
        "ATELIER_RECOMMENDATIONS_METRICS_PORT": str(free_port()),
        "ATELIER_LOG_LEVEL": "WARNING",
        "ATELIER_MAX_WORKERS": "8",
        # This checkout's code (services/ is the source root): with the repository root alone,
        # the server imported whatever `atelier` the virtualenv's editable install points at.
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "services"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    proc = subprocess.Popen(
        server_argv or [sys.executable, "-m", "atelier.runtime.server", "recommendations"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    rows = []
    import psutil

    server = psutil.Process(proc.pid)
    try:
        load_started = time.perf_counter()
        wait_serving(f"127.0.0.1:{port}", timeout_s=300)
        load_s = time.perf_counter() - load_started
        queue: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        # Warm-up (first calls build lazy structures, open connections).
        _client(port, users, 2.0, 2, 99, queue)
        queue.get()
        for client, processes, threads in concurrency:
            target = {"sync": _client, "aio": _aio_client}[client]
            procs = [
                mp.Process(target=target, args=(port, users, seconds, threads, p, queue))
                for p in range(processes)
            ]
            started = time.perf_counter()
            cpu_before = server.cpu_times()
            for p in procs:
                p.start()
            results = [queue.get() for _ in procs]
            for p in procs:
                p.join()
            wall = time.perf_counter() - started
            cpu_after = server.cpu_times()
            server_cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
            lat = np.concatenate([np.asarray(r[0]) for r in results]) * 1000
            rows.append(
                {
                    "clients": processes * threads,
                    "client": client,
                    "calls": len(lat),
                    "errors": sum(r[1] for r in results),
                    "p50": float(np.percentile(lat, 50)),
                    "p99": float(np.percentile(lat, 99)),
                    "rps": len(lat) / wall,
                    "load_s": load_s,
                    # The server process's CPU per answered call (gRPC, protobuf and the engine):
                    # less sensitive to a shared machine's load than the latencies.
                    "server_cpu_ms": server_cpu / max(len(lat), 1) * 1000,
                    # The load generator's own CPU per call (all client processes): what it takes
                    # from the same 2 cores.
                    "client_cpu_ms": sum(r[2] for r in results) / max(len(lat), 1) * 1000,
                    "load_1min": os.getloadavg()[0],
                }
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--quick", action="store_true", help="small sizes (a smoke run, not for BENCHMARKS.md)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT.parent / "shared" / "benchmarks",
        help="folder holding recommendations/ and retail-journey/ (../shared/benchmarks)",
    )
    parser.add_argument(
        "--online-retail",
        type=Path,
        help="the UCI Online Retail data to use instead of the shared sample: a folder holding "
        "'Online Retail.csv' (or OnlineRetail.csv, online_retail.csv) or the CSV file itself",
    )
    parser.add_argument("--skip-serving", action="store_true", help="quality only")
    parser.add_argument(
        "--quality-md",
        type=Path,
        help="with --skip-serving: write the quality part here; with --reuse-quality: read it from here "
        "(quality figures do not depend on machine load, so they may run outside the bench lock)",
    )
    parser.add_argument(
        "--reuse-quality", action="store_true", help="take the quality part from --quality-md"
    )
    args = parser.parse_args()

    q_users, q_items = (3000, 800) if args.quick else (10000, 2000)
    s_users, s_items = (5000, 1000) if args.quick else (100000, 20000)
    seconds = 3.0 if args.quick else 12.0
    load_before = os.getloadavg()

    lines = [
        "Offline evaluation (`atelier recs evaluate`, the EvaluateModel job's function "
        "`evaluation.evaluate`) on two real retailers and the simulated one. Every method is "
        "trained on the same events before the held-out days and scored on the same shoppers; "
        "the two-stage model's settings are the defaults, the same for all three.",
        "",
    ]
    if args.reuse_quality:
        lines = [*args.quality_md.read_text().splitlines(), ""]
    else:
        lines += quality_part(args.data, q_users, q_items, args.online_retail)
    if args.skip_serving and args.quality_md:
        args.quality_md.write_text("\n".join(lines))
        print("\n".join(lines))
        return 0
    if not args.skip_serving:
        lines += serving_section(s_users, s_items, seconds)
    load_after = os.getloadavg()
    lines += [
        f"Load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (1 min, 2 cores shared)."
    ]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.quick:
        write_section(
            "recommendations",
            markdown,
            "flock /tmp/atelier-bench.lock .venv/bin/python bench/recommendations.py --data ../shared/benchmarks",
        )
    return 0


def quality_part(data: Path, q_users: int, q_items: int, online_retail_data: Path | None = None) -> list[str]:
    from atelier.recommendations.simulate import simulate
    from bench.retail_data import complete_journey, online_retail, online_retail_file

    retail = online_retail_data or data / "recommendations"
    retail_name = (
        "UCI Online Retail sample (real, UK gifts)"
        if online_retail_data is None
        else f"UCI Online Retail ({online_retail_file(retail).name}, real, UK gifts)"
    )
    qualities = []
    for name, loader, folder in (
        (retail_name, online_retail, retail),
        ("Complete Journey sample (real, US grocery)", complete_journey, data / "retail-journey"),
    ):
        events, items, segments = loader(folder)
        qualities.append(quality(name, events, items, segments))
    shop = simulate(q_users, q_items, n_clusters=20, interactions_per_user=12, seed=0)
    qualities.append(
        quality(
            f"Simulated retailer ({q_users} shoppers, {q_items} items)",
            shop.events,
            shop.items,
            dict(zip(shop.user_ids, shop.user_segment, strict=True)),
        )
    )
    lines: list[str] = []
    for q in qualities:
        lines += quality_rows(q)
    return lines


def serving_section(s_users: int, s_items: int, seconds: float) -> list[str]:
    trained = training_time(s_users, s_items)
    users = len(trained["shop"].user_ids)
    rows = serve_and_load(
        serving_data(trained),
        users,
        seconds,
        [("sync", 1, 1), ("sync", 1, 4), ("sync", 2, 4), ("aio", 1, 8)],
    )
    als_only = serving(trained, seconds, [(2, 4)], with_ranker=False)
    ranker = trained["ranker"]
    header = [
        "| concurrent clients | load generator | calls | errors | p50 ms | p99 ms | requests/s | "
        "server CPU ms/call | client CPU ms/call | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    kinds = {"sync": "sync stubs, threads", "aio": "grpc.aio, 1 process"}

    def row(r: dict, suffix: str = "") -> str:  # type: ignore[type-arg]
        return (
            f"| {r['clients']}{suffix} | {kinds[r['client']]} | {r['calls']} | {r['errors']} | {r['p50']:.2f} | "
            f"{r['p99']:.2f} | {r['rps']:.0f} | {r['server_cpu_ms']:.2f} | {r['client_cpu_ms']:.2f} | "
            f"{r['load_1min']:.1f} |"
        )

    return [
        f"Training at {s_users} users x {s_items} items ({trained['events']} events, "
        f"{trained['inter'].confidence.nnz} user-item pairs), ALS 64 factors, 15 iterations, best of 2 (alternating order):",
        "",
        "| | wall s | CPU s (all threads) |",
        "|---|---|---|",
        f"| this service's fit (training.fit_factors) | {trained['ours']:.2f} | {trained['ours_cpu']:.2f} |",
        f"| raw implicit AlternatingLeastSquares.fit, same matrix | {trained['raw']:.2f} | {trained['raw_cpu']:.2f} |",
        f"| ratio | {trained['ours'] / trained['raw']:.3f}x | {trained['ours_cpu'] / trained['raw_cpu']:.3f}x |",
        f"| events -> confidence matrix, popularity, co-purchase (build_interactions) | {trained['aggregate_s']:.2f} | |",
        f"| ranker ({ranker.info.get('train_groups', 0)} shopper-windows), then ranked lists for "
        f"every shopper (ranking.fit_two_stage) | {trained['ranker_s']:.1f} | {trained['ranker_cpu']:.1f} |",
        "",
        f"Serving over gRPC: one server process (the runtime's RPC thread pool) holding the {s_users} x {s_items} "
        f"model with the ranker's lists (precomputed at training, {int((ranker.ranked_items[:, 0] >= 0).sum())} "
        f"shoppers x {ranker.ranked_items.shape[1]} items); closed-loop clients (one call in flight each) in "
        f"separate processes on the same 2 cores; n=12, bought items left out unless rebought, 50 % size filter, "
        f"30 % category filter, 30 % diversified; {seconds:.0f} s per row. Two load generators: blocking stubs "
        f"on threads (the 8-client row: 2 processes x 4 threads) and grpc.aio callers on one event loop "
        f"(8 coroutines, 1 process); the client CPU column is what each load generator itself takes from the shared cores. "
        f"State load to SERVING: {rows[0]['load_s']:.1f} s.",
        "",
        *header,
        *[row(r) for r in rows],
        "",
        "The same server and clients without the ranker's lists (every shopper on the ALS path, as before "
        "this model), run right after, for a side-by-side ratio on the same loaded machine:",
        "",
        *header,
        *[row(r, " (ALS only)") for r in als_only],
        "",
    ]


if __name__ == "__main__":
    sys.exit(main())
