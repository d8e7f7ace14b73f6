"""Recommend's CPU per call, in-process and over gRPC, on one prepared model (A/B across trees).

    # once: train 100k x 20k (as bench/recommendations.py does) and write a data folder
    nice -n 10 .venv/bin/python bench/recommendations_cpu.py prepare /tmp/recs-model --users 100000 --items 20000
    # the servicer's Recommend in a loop (request parsed, answer serialised): CPU us per call and a
    # digest of the answers (equal digests: the same answers)
    PYTHONPATH=services nice -n 10 .venv/bin/python bench/recommendations_cpu.py inprocess /tmp/recs-model
    # a server on it with both load generators (bench.recommendations.serve_and_load); --floor:
    # the same rows against a bare grpcio server with a fixed answer (bench/grpc_floor.py)
    nice -n 10 .venv/bin/python bench/recommendations_cpu.py serve /tmp/recs-model --floor

On a shared machine the CPU per call of one run swings by 20 % or more: compare trees by running
`inprocess` alternately with PYTHONPATH on each tree's services/ against the same folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def prepare(folder: Path, users: int, items: int) -> None:
    from bench.recommendations import serving_data, training_time

    trained = training_time(users, items, repeats=1)
    data_dir = serving_data(trained)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"data_dir": str(data_dir), "users": len(trained["shop"].user_ids), "items": items}
    (folder / "meta.json").write_text(json.dumps(meta))
    print(json.dumps(meta))


def inprocess(folder: Path, calls: int, loops: int) -> None:
    import implicit.cpu.als  # noqa: F401  (loads its BLAS first, as the server does)
    from threadpoolctl import threadpool_limits

    from atelier.recommendations.engine import Engine
    from atelier.recommendations.servicer import RecommendationsServicer
    from atelier.recommendations.store import RecsStore
    from atelier.recommendations.v1 import recommendations_pb2 as pb
    from atelier.runtime.storage import Store
    from bench.recommendations import _requests

    threadpool_limits(1, "blas")  # as recommendations/server.py sets it
    meta = json.loads((folder / "meta.json").read_text())
    store = RecsStore(Store(f"sqlite:///{Path(meta['data_dir']) / 'recommendations.db'}"))
    engine = Engine(store)
    engine.load_all()
    servicer = RecommendationsServicer(store, engine, None, "", "")  # type: ignore[arg-type]
    requests = _requests(meta["users"], np.random.default_rng(1))
    blobs = [next(requests).SerializeToString() for _ in range(calls)]

    def run() -> list[bytes]:
        return [
            servicer.Recommend(pb.RecommendRequest.FromString(b), None).SerializeToString() for b in blobs
        ]

    run()  # warm
    for _ in range(loops):
        cpu = time.process_time()
        answers = run()
        print(f"servicer Recommend CPU {(time.process_time() - cpu) / calls * 1e6:.0f} us/call", flush=True)
    print("answers sha1", hashlib.sha1(b"".join(answers)).hexdigest())


def serve(folder: Path, seconds: float, floor: bool) -> None:
    from bench.recommendations import serve_and_load

    meta = json.loads((folder / "meta.json").read_text())
    rows = [("sync", 1, 1), ("sync", 1, 4), ("sync", 2, 4), ("aio", 1, 8)]
    servers: list[tuple[str, list[str] | None]] = [("service", None)]
    if floor:
        servers.append(("grpc floor", [sys.executable, str(ROOT / "bench" / "grpc_floor.py")]))
    for name, argv in servers:
        for r in serve_and_load(Path(meta["data_dir"]), meta["users"], seconds, rows, argv):
            r = {"server": name, **r}
            print(
                json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), flush=True
            )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("prepare", "inprocess", "serve"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--users", type=int, default=100000)
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--loops", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument(
        "--floor",
        action="store_true",
        help="serve: also load bench/grpc_floor.py (bare grpcio, a fixed answer) with the same rows",
    )
    args = parser.parse_args()
    if args.mode == "prepare":
        prepare(args.folder, args.users, args.items)
    elif args.mode == "inprocess":
        inprocess(args.folder, args.calls, args.loops)
    else:
        serve(args.folder, args.seconds, args.floor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
