"""Nesting benchmark: marker density through the gRPC API against spyrrow called directly.

    flock /tmp/atelier-bench.lock .venv/bin/python bench/nesting.py [--plan '10:1,2,3;60:1']

For each ESICUP garment instance (shared/benchmarks/nesting) and budget, the same run measures
(a) spyrrow 0.9 called in this process (StripPackingConfig(total_computation_time=T,
num_workers=2, seed=s, early_termination=False)) and (b) the nesting service over gRPC
(ImportPieces of the instance JSON, CreateMarker with the same budget and seed, 2 solver
workers), one after the other, never at the same time. Then a garment case: a shirt pattern
in AAMA-style DXF, sizes S-XL with ratios, 1500 mm woven fabric, grain 0/180, 5 mm spacing.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import ezdxf
import grpc
import spyrrow
from google.longrunning import operations_pb2, operations_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from atelier.nesting.server import build  # noqa: E402
from atelier.nesting.v1 import nesting_pb2 as pb  # noqa: E402
from atelier.nesting.v1 import nesting_pb2_grpc  # noqa: E402
from atelier.runtime.server import Server  # noqa: E402
from bench.report import bench_config, write_section  # noqa: E402

DATA = ROOT.parent / "shared" / "benchmarks" / "nesting" / "instances"
BEST_KNOWN = {"shirts": 90.920, "trousers": 92.615, "swim": 79.826, "albano": 89.821}


def direct(instance: dict, budget_s: int, seed: int) -> tuple[float, float]:
    items = [
        spyrrow.Item(
            str(it["id"]),
            [tuple(p) for p in it["shape"]["data"]],
            it["demand"],
            it.get("allowed_orientations"),
        )
        for it in instance["items"]
    ]
    problem = spyrrow.StripPackingInstance(instance["name"], instance["strip_height"], items)
    config = spyrrow.StripPackingConfig(
        total_computation_time=budget_s, num_workers=2, seed=seed, early_termination=False
    )
    started = time.monotonic()
    solution = problem.solve(config)
    return solution.density * 100.0, time.monotonic() - started


def via_service(
    stub: nesting_pb2_grpc.NestingServiceStub,
    ops: operations_pb2_grpc.OperationsStub,
    request: pb.CreateMarkerRequest,
) -> tuple[pb.Marker, float]:
    started = time.monotonic()
    op = stub.CreateMarker(request)
    while not op.done:
        op = ops.WaitOperation(operations_pb2.WaitOperationRequest(name=op.name, timeout={"seconds": 5}))
    wall = time.monotonic() - started
    if op.HasField("error"):
        raise RuntimeError(f"marker job failed: {op.error.message}")
    marker = pb.Marker()
    op.response.Unpack(marker)
    return marker, wall


# -- a shirt pattern (synthetic, proportionally graded), in mm; x along the grain ------------------


def _arc(
    cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 8
) -> list[tuple[float, float]]:
    return [
        (
            cx + rx * math.cos(math.radians(a0 + (a1 - a0) * i / n)),
            cy + ry * math.sin(math.radians(a0 + (a1 - a0) * i / n)),
        )
        for i in range(n + 1)
    ]


def shirt_pieces() -> dict[str, tuple[list[tuple[float, float]], int, str]]:
    """name -> (outline in mm for size M, quantity per garment, mirror rule)."""
    half_back = [
        (0.0, 0.0),
        (520.0, 0.0),
        *_arc(520.0, 60.0, 180.0, 60.0, -90, -30)[1:],
        (740.0, 190.0),
        *_arc(740.0, 280.0, 20.0, 90.0, -90, 0)[1:],
    ]
    back = half_back + [(x, 560.0 - y) for x, y in reversed(half_back[:-1])]
    front = [
        (0.0, 0.0),
        (520.0, 0.0),
        *_arc(520.0, 60.0, 180.0, 60.0, -90, -30)[1:],
        (740.0, 190.0),
        *_arc(740.0, 300.0, 80.0, 110.0, -90, -180)[1:],
        (0.0, 300.0),
    ]
    sleeve = [
        (0.0, 95.0),
        (0.0, 355.0),
        (420.0, 450.0),
        *_arc(420.0, 240.0, 180.0, 210.0, 90, 0)[1:],
        *_arc(420.0, 240.0, 180.0, 240.0, 0, -90)[1:],
    ]
    yoke = [(0.0, 0.0), (110.0, 20.0), (120.0, 240.0), (110.0, 460.0), (0.0, 480.0)]
    collar = [(0.0, 0.0), (70.0, -15.0), (90.0, 210.0), (70.0, 435.0), (0.0, 420.0)]
    stand = [*_arc(20.0, 20.0, 20.0, 20.0, 180, 360, 6), *_arc(20.0, 400.0, 20.0, 20.0, 0, 180, 6)]
    cuff = [
        *_arc(10.0, 10.0, 10.0, 10.0, 180, 270, 3),
        (70.0, 0.0),
        (70.0, 260.0),
        *_arc(10.0, 250.0, 10.0, 10.0, 90, 180, 3),
    ]
    pocket = [(0.0, 20.0), (20.0, 0.0), (150.0, 0.0), (150.0, 130.0), (20.0, 130.0), (0.0, 110.0)]
    return {
        "FRONT": (front, 1, "pair"),
        "BACK": (back, 1, "none"),
        "SLEEVE": (sleeve, 1, "pair"),
        "YOKE": (yoke, 2, "none"),
        "COLLAR": (collar, 2, "none"),
        "STAND": (stand, 2, "none"),
        "CUFF": (cuff, 4, "none"),
        "POCKET": (pocket, 1, "none"),
    }


GRADES = {"S": 0.95, "M": 1.0, "L": 1.05, "XL": 1.10}


def shirt_dxf() -> bytes:
    doc = ezdxf.new("R2010")
    doc.header["$INSUNITS"] = 4
    msp = doc.modelspace()
    for size, scale in GRADES.items():
        for name, (outline, qty, mirror) in shirt_pieces().items():
            block = doc.blocks.new(name=f"{name}-{size}")
            block.add_lwpolyline(
                [(x * scale, y * scale) for x, y in outline], close=True, dxfattribs={"layer": "1"}
            )
            for i, text in enumerate(
                (
                    f"Piece Name: {name}",
                    f"Size: {size}",
                    f"Quantity: {qty}",
                    f"Mirror: {mirror}",
                    "Grain: woven",
                )
            ):
                block.add_text(text, height=5, dxfattribs={"layer": "1"}).set_placement((40, 40 + 8 * i))
            msp.add_blockref(f"{name}-{size}", (0, 0))
    stream = io.StringIO()
    doc.write(stream)
    return stream.getvalue().encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plan", default="10:1,2,3;60:1,2,3", help="budget:seeds;budget:seeds")
    parser.add_argument("--instances", default="shirts,trousers,swim,albano")
    parser.add_argument("--garment-budget", type=int, default=60)
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    args = parser.parse_args()
    plan = [
        (int(b), [int(s) for s in seeds.split(",")])
        for b, seeds in (part.split(":") for part in args.plan.split(";"))
    ]
    load_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        config = bench_config("nesting", Path(tmp))
        server = Server(config, build)
        server.start(metrics_port=0)
        server.ready.wait(30)
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        stub = nesting_pb2_grpc.NestingServiceStub(channel)
        ops = operations_pb2_grpc.OperationsStub(channel)
        for name in args.instances.split(","):
            path = DATA / f"{name}.json"
            content = path.read_bytes()
            instance = json.loads(content)
            imported = stub.ImportPieces(pb.ImportPiecesRequest(format=pb.FILE_FORMAT_JSON, content=content))
            for budget, seeds in plan:
                for seed in seeds:
                    d_density, d_wall = direct(instance, budget, seed)
                    marker, s_wall = via_service(
                        stub,
                        ops,
                        pb.CreateMarkerRequest(
                            pieces=imported.pieces,
                            fabric=pb.Fabric(width_mm=imported.fabric_width_mm),
                            time_budget_s=budget,
                            seed=seed,
                            marker_name=name,
                        ),
                    )
                    s_density = marker.efficiency * 100.0
                    row = (
                        name,
                        budget,
                        seed,
                        s_density,
                        d_density,
                        s_density / d_density,
                        s_density / BEST_KNOWN[name] * 100.0,
                        s_wall,
                        d_wall,
                    )
                    rows.append(row)
                    print(
                        "| {} | {} | {} | {:.2f} | {:.2f} | {:.4f} | {:.1f} | {:.1f} | {:.1f} |".format(*row),
                        flush=True,
                    )
        # The garment case.
        imported = stub.ImportPieces(pb.ImportPiecesRequest(format=pb.FILE_FORMAT_DXF, content=shirt_dxf()))
        ratios = {"S": 1, "M": 2, "L": 2, "XL": 1}
        garment, g_wall = via_service(
            stub,
            ops,
            pb.CreateMarkerRequest(
                pieces=imported.pieces,
                fabric=pb.Fabric(width_mm=1500.0),
                spacing_mm=5.0,
                ratios=[pb.SizeRatio(size=s, count=c) for s, c in ratios.items()],
                time_budget_s=args.garment_budget,
                seed=1,
                marker_name="shirt S-XL",
            ),
        )
        print(
            f"garment: {len(garment.placements)} pieces, length {garment.length_mm:.1f} mm, "
            f"efficiency {garment.efficiency * 100:.2f}%, wall {g_wall:.1f} s",
            flush=True,
        )
        channel.close()
        server.stop(grace_s=1)
    load_end = os.getloadavg()

    lines = [
        "Density (piece area / strip width x used length) on the ESICUP garment instances, through the",
        "service's gRPC API (ImportPieces of the instance JSON, CreateMarker, wait) and spyrrow 0.9 called",
        "directly in the same process with the same budget and seed (2 solver threads each), one after the",
        "other. Best known: sparrow's records (shared/benchmarks/nesting/README.md). Wall times include the",
        "service's worker start, verification and storage.",
        "",
        "| instance | budget s | seed | service % | spyrrow direct % | ratio | service / best known % "
        "| service wall s | direct wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        "| {} | {} | {} | {:.2f} | {:.2f} | {:.4f} | {:.1f} | {:.1f} | {:.1f} |".format(*r) for r in rows
    ]
    lines += [
        "",
        "Means over the seeds of each budget:",
        "",
        "| instance | budget s | seeds | service mean % | direct mean % | ratio of means | service / best known % |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in args.instances.split(","):
        for budget, _seeds in plan:
            mine = [r for r in rows if r[0] == name and r[1] == budget]
            s_mean = sum(r[3] for r in mine) / len(mine)
            d_mean = sum(r[4] for r in mine) / len(mine)
            lines.append(
                f"| {name} | {budget} | {len(mine)} | {s_mean:.2f} | {d_mean:.2f} | {s_mean / d_mean:.4f} "
                f"| {s_mean / BEST_KNOWN[name] * 100:.1f} |"
            )
    lines += [
        "",
        f"Garment case: a synthetic shirt pattern (front and sleeve as mirrored pairs, back, 2 yokes, 2 collars,"
        f" 2 stands, 4 cuffs, pocket; proportionally graded S 0.95 / M 1.00 / L 1.05 / XL 1.10) written as an"
        f" AAMA-style DXF, imported with ImportPieces; ratios S=1, M=2, L=2, XL=1; fabric 1500 mm, grain 0/180,"
        f" spacing 5 mm, budget {args.garment_budget} s, seed 1: **{len(garment.placements)} pieces, marker"
        f" {garment.length_mm:.1f} mm, efficiency {garment.efficiency * 100:.2f}%**, {g_wall:.1f} s wall.",
        "",
        f"Load average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/{load_start[2]:.2f}, "
        f"at end {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f} (2 cores shared with other work).",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        command = "flock /tmp/atelier-bench.lock .venv/bin/python bench/nesting.py " + shlex.join(
            sys.argv[1:]
        )
        write_section("nesting", body, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
