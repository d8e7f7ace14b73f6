"""Pattern-file benchmark: real AAMA/ASTM exports in, a marker of one size set out, over gRPC.

    flock /tmp/atelier-bench.lock .venv/bin/python bench/patterns.py [--data DIR] [--budget 30]

DIR is shared/benchmarks/patterns/dxf. For each file: ImportPieces over gRPC (wall and the
server's CPU time), pieces x sizes, units, notches, drill holes, warnings. Then markers of one size
set laid from the pattern library by id (ImportPieces save_pattern -> CreateMarker pattern_id):
GMX1016S18 (AAMA, mm) sizes 46:1, 50:2, 54:1 (its shell-fabric pieces), WM SLIM TANK (inches)
36:2, 40:2, GMH1006F18 48:1, 50:1, 54:1, and one made-to-measure GMX1016S18 garment (CreateMarker
made_to_measure: 0.4 of the way from 50 to 52) on 1500 mm woven fabric, 2 mm spacing, 5 mm selvage
margins; each exported as AAMA marker DXF, HPGL, G-code and the HTML report, and the DXF read back
with ImportMarker (largest vertex deviation).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from atelier.nesting.server import build  # noqa: E402
from atelier.nesting.v1 import nesting_pb2 as pb  # noqa: E402
from atelier.nesting.v1 import nesting_pb2_grpc  # noqa: E402
from atelier.runtime.server import Server  # noqa: E402
from bench.report import bench_config, write_section  # noqa: E402

DATA = ROOT.parent / "shared" / "benchmarks" / "patterns" / "dxf"
# (file, size ratios, the pieces cut from the shell fabric: the GMX file also holds rib, interlining
# and a cuffed-sleeve variant, which go on other markers).
GMX_SHELL = ["GMX1016S18FR", "GMX1016S18BK", "GMX1016S18SS", "GMX1016S18YL", "GMX1016S18YP"]
# Size ratios, or a made-to-measure blend (nearest size, the other size, how far toward it) for
# one garment.
MARKERS: list[tuple[str, dict[str, int] | tuple[str, str, float], list[str]]] = [
    ("GMX1016S18_AAMA.DXF", {"46": 1, "50": 2, "54": 1}, GMX_SHELL),
    ("WM_SLIM_TANK.DXF", {"36": 2, "40": 2}, []),
    # Its sleeves crossed themselves (a line drawn past its corner and back) and were refused.
    ("GMH1006F18_AAMA.DXF", {"48": 1, "50": 1, "54": 1}, []),
    ("GMX1016S18_AAMA.DXF", ("50", "52", 0.4), GMX_SHELL),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA, help="folder of AAMA/ASTM DXF files")
    parser.add_argument("--budget", type=int, default=30, help="solver seconds per marker")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    args = parser.parse_args()
    files = sorted(p for p in args.data.iterdir() if p.suffix.lower() == ".dxf")
    if not files:
        print(f"no DXF files in {args.data}")
        return 2
    load = os.getloadavg()[0]
    rows = [
        "| file | pieces x sizes | units | notches | drill holes | warnings | import wall s | import CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    marker_rows = [
        "| pattern | sizes | placed | width mm | length mm | efficiency | fabric per garment | "
        "exports (DXF/PLT/NC/HTML bytes) | round trip max dev mm |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(bench_config("nesting", Path(tmp)), build)
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = nesting_pb2_grpc.NestingServiceStub(channel)
                ops = operations_pb2_grpc.OperationsStub(channel)
                ids: dict[str, pb.ImportPiecesResponse] = {}
                for path in files:
                    cpu0, t0 = time.process_time(), time.monotonic()
                    reply = stub.ImportPieces(
                        pb.ImportPiecesRequest(
                            format=pb.FILE_FORMAT_DXF, content=path.read_bytes(), save_pattern=True
                        ),
                        timeout=300,
                    )
                    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
                    ids[path.name] = reply
                    names = len({p.name for p in reply.pieces})
                    rows.append(
                        f"| {path.name} | {names} x {len(reply.sizes)} | {reply.units} | "
                        f"{sum(len(p.notches) for p in reply.pieces)} | "
                        f"{sum(len(p.drill_holes) for p in reply.pieces)} | {len(reply.warnings)} | "
                        f"{wall:.2f} | {cpu:.2f} |"
                    )
                    print(rows[-1], flush=True)
                for name, sizing, pieces in MARKERS:
                    if name not in ids:
                        continue
                    marker_rows.append(_marker(stub, ops, name, ids[name], sizing, pieces, args.budget))
                    print(marker_rows[-1], flush=True)
        finally:
            server.stop(grace_s=1)
    body = (
        f"Load average at the start: {load:.2f} (the machine is shared; wall times are noisy, CPU "
        "time is the server process's, which runs in this process).\n\n"
        "Import over gRPC (`ImportPieces`, `save_pattern`), every shared real export:\n\n"
        + "\n".join(rows)
        + f"\n\nMarkers of one size set, laid from the pattern library by id ({args.budget} s, 2 solver "
        "workers, 1500 mm woven fabric, 2 mm spacing, 5 mm margins; quantity 0 pieces cut once, "
        "fold lines unfolded, quantity 2 as left/right pairs; the last is one made-to-measure "
        "garment, every piece interpolated 0.4 of the way from size 50 to 52):\n\n" + "\n".join(marker_rows)
    )
    print(body)
    if not args.no_write:
        command = "flock /tmp/atelier-bench.lock .venv/bin/python bench/patterns.py " + shlex.join(
            [f"--budget={args.budget}"]
        )
        write_section("patterns", body, command)
    return 0


def _marker(
    stub: nesting_pb2_grpc.NestingServiceStub,
    ops: operations_pb2_grpc.OperationsStub,
    name: str,
    imported: pb.ImportPiecesResponse,
    sizing: dict[str, int] | tuple[str, str, float],
    pieces: list[str],
    budget: int,
) -> str:
    request = pb.CreateMarkerRequest(
        pattern_id=imported.pattern_id,
        fabric=pb.Fabric(width_mm=1500.0, edge_margin_mm=5.0),
        spacing_mm=2.0,
        time_budget_s=budget,
        seed=1,
        piece_names=pieces,
    )
    if isinstance(sizing, dict):
        ratios = sizing
        request.ratios.extend(pb.SizeRatio(size=s, count=c) for s, c in ratios.items())
    else:
        size, toward, fraction = sizing
        request.made_to_measure.blend.CopyFrom(pb.SizeBlend(size=size, toward_size=toward, fraction=fraction))
        request.made_to_measure.garments = 1
        ratios = {f"made to measure {size}>{toward}@{fraction:.2f}": 1}
    request.marker_name = f"{imported.style_name} {' '.join(f'{s}:{c}' for s, c in ratios.items())}"
    op = stub.CreateMarker(request, timeout=60)
    while not op.done:
        op = ops.WaitOperation(operations_pb2.WaitOperationRequest(name=op.name, timeout={"seconds": 5}))
    if op.HasField("error"):
        return f"| {name} | {ratios} | failed: {op.error.message} |"
    marker = pb.Marker()
    op.response.Unpack(marker)
    sizes = {}
    for fmt in (pb.FILE_FORMAT_DXF, pb.FILE_FORMAT_HPGL, pb.FILE_FORMAT_GCODE, pb.FILE_FORMAT_HTML):
        sizes[fmt] = stub.ExportMarker(
            pb.ExportMarkerRequest(operation=op.name, format=fmt), timeout=60
        ).content
    back = stub.ImportMarker(
        pb.ImportMarkerRequest(format=pb.FILE_FORMAT_DXF, content=sizes[pb.FILE_FORMAT_DXF]), timeout=120
    ).marker
    by_key = {(p.piece_id, p.copy, p.mirrored): p for p in back.placements}
    dev = 0.0
    for p in marker.placements:
        q = by_key[(p.piece_id, p.copy, p.mirrored)]
        for a, b in zip(p.outline.points, q.outline.points, strict=True):
            dev = max(dev, math.dist((a.x_mm, a.y_mm), (b.x_mm, b.y_mm)))
    garments = sum(ratios.values())
    exports = "/".join(str(len(c)) for c in sizes.values())
    return (
        f"| {imported.style_name} ({name}{', ' + str(len(pieces)) + ' shell pieces' if pieces else ''}) | "
        f"{', '.join(f'{s}:{c}' for s, c in ratios.items())} | "
        f"{len(marker.placements)} | {marker.width_mm:.0f} | {marker.length_mm:.1f} | "
        f"{marker.efficiency * 100:.2f}% | {marker.length_mm / garments / 1000:.3f} m | {exports} | {dev:.2e} |"
    )


if __name__ == "__main__":
    sys.exit(main())
