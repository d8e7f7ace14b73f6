"""The nesting service over real gRPC sockets: each garment rule checked on the returned geometry."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator

import ezdxf
import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from shapely.geometry import Polygon, box

from atelier.common.v1 import geometry_pb2, progress_pb2
from atelier.nesting.server import build
from atelier.nesting.v1 import nesting_pb2 as pb
from atelier.nesting.v1 import nesting_pb2_grpc
from atelier.runtime.server import Server
from atelier.runtime.status import field_violations
from tests.nesting.garment import CUFF, FRONT, POCKET, SLEEVE, outline, piece, shirt_dxf, signed_area

TOL_MM = 0.02
Stubs = tuple[nesting_pb2_grpc.NestingServiceStub, operations_pb2_grpc.OperationsStub]


@pytest.fixture
def nesting(
    start_server: Callable[..., Server],
) -> Iterator[tuple[nesting_pb2_grpc.NestingServiceStub, operations_pb2_grpc.OperationsStub]]:
    server = start_server("nesting", build)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield nesting_pb2_grpc.NestingServiceStub(channel), operations_pb2_grpc.OperationsStub(channel)


def wait_done(
    ops: operations_pb2_grpc.OperationsStub, name: str, timeout_s: float = 30.0
) -> operations_pb2.Operation:
    op = ops.WaitOperation(
        operations_pb2.WaitOperationRequest(name=name, timeout={"seconds": int(timeout_s)})
    )
    deadline = time.monotonic() + timeout_s
    while not op.done and time.monotonic() < deadline:
        time.sleep(0.2)
        op = ops.GetOperation(operations_pb2.GetOperationRequest(name=name))
    assert op.done, f"{name} not done after {timeout_s} s"
    return op


def result(op: operations_pb2.Operation) -> pb.Marker:
    assert op.HasField("response"), f"operation failed: {op.error}"
    marker = pb.Marker()
    op.response.Unpack(marker)
    return marker


def test_marker_holds_grain_mirror_ratio_spacing_and_margin_rules(nesting: Stubs) -> None:
    stub, ops = nesting
    pieces = [
        piece("front-S", tuple((x * 0.9, y * 0.9) for x, y in FRONT), size="S", mirror=pb.MIRROR_RULE_PAIR),
        piece("front-M", FRONT, size="M", mirror=pb.MIRROR_RULE_PAIR),
        piece("sleeve-M", SLEEVE, size="M", grain=pb.GRAIN_RULE_FOUR_WAY),
        piece("cuff-M", CUFF, quantity=2, size="M", grain=pb.GRAIN_RULE_FIXED),
        piece("pocket-S", POCKET, size="S", grain=pb.GRAIN_RULE_STEP, step=45.0),
    ]
    fabric = pb.Fabric(width_mm=500.0, edge_margin_mm=10.0, end_margin_mm=15.0)
    op = stub.CreateMarker(
        pb.CreateMarkerRequest(
            pieces=pieces,
            fabric=fabric,
            spacing_mm=5.0,
            time_budget_s=2,
            seed=7,
            marker_name="rules",
            ratios=[pb.SizeRatio(size="S", count=2), pb.SizeRatio(size="M", count=3)],
        )
    )
    assert op.name.startswith("operations/nesting/") and not op.done
    marker = result(wait_done(ops, op.name))
    assert marker.final and marker.name == "rules"

    # Size ratios counted: S x 2, M x 3, times quantity, times 2 for mirrored pairs.
    counts = Counter((p.piece_id, p.mirrored) for p in marker.placements)
    assert counts == {
        ("front-S", False): 2,
        ("front-S", True): 2,
        ("front-M", False): 3,
        ("front-M", True): 3,
        ("sleeve-M", False): 3,
        ("cuff-M", False): 6,
        ("pocket-S", False): 2,
    }
    assert all(p.size == p.piece_id.split("-")[1] for p in marker.placements)
    originals = {p.id: [(q.x_mm, q.y_mm) for q in p.outline.points] for p in pieces}
    allowed = {
        "front-S": {0, 180},
        "front-M": {0, 180},
        "sleeve-M": {0, 90, 180, 270},
        "cuff-M": {0},
        "pocket-S": {0, 45, 90, 135, 180, 225, 270, 315},
    }
    polys = []
    for p in marker.placements:
        # Grain: the rotation is one the rule allows.
        assert round(p.rotation_deg, 6) % 360 in allowed[p.piece_id], (p.piece_id, p.rotation_deg)
        # Mirroring: a reflection flips the outline's orientation; a rotation keeps it.
        area = signed_area(outline(p))
        assert area == pytest.approx(
            -signed_area(originals[p.piece_id]) if p.mirrored else signed_area(originals[p.piece_id]),
            rel=1e-6,
        )
        polys.append(Polygon(outline(p)))
    # Margins: every piece inside the fabric less the edge and end margins.
    inner = box(15.0 - TOL_MM, 10.0 - TOL_MM, marker.length_mm - 15.0 + TOL_MM, 490.0 + TOL_MM)
    assert all(inner.contains(poly) for poly in polys)
    # Spacing: 5 mm between any two pieces.
    gaps = [a.distance(b) for i, a in enumerate(polys) for b in polys[i + 1 :]]
    assert min(gaps) >= 5.0 - TOL_MM
    # The reported figures agree with the geometry.
    area = sum(poly.area for poly in polys)
    assert marker.piece_area_mm2 == pytest.approx(area, rel=1e-9)
    assert marker.efficiency == pytest.approx(area / (500.0 * marker.length_mm), rel=1e-9)
    assert marker.length_mm == pytest.approx(max(poly.bounds[2] for poly in polys) + 15.0, rel=1e-9)
    # A sane layout, not a line of pieces: 25 pieces of ~0.46 m2 on 0.5 m width.
    assert marker.efficiency > 0.5


def test_flaw_zones_stay_empty(nesting: Stubs) -> None:
    stub, ops = nesting
    flaws = [
        pb.FlawZone(
            rect=geometry_pb2.RectMm(x_mm=100.0, y_mm=150.0, width_mm=40.0, height_mm=60.0), reason="hole"
        ),
        pb.FlawZone(
            polygon=geometry_pb2.PolygonMm(
                points=[
                    geometry_pb2.PointMm(x_mm=420.0, y_mm=10.0),
                    geometry_pb2.PointMm(x_mm=450.0, y_mm=10.0),
                    geometry_pb2.PointMm(x_mm=435.0, y_mm=380.0),
                ]
            ),
            reason="stain",
        ),
    ]
    op = stub.CreateMarker(
        pb.CreateMarkerRequest(
            pieces=[piece("cuff", CUFF, quantity=12), piece("pocket", POCKET, quantity=6)],
            fabric=pb.Fabric(width_mm=400.0, flaws=flaws),
            spacing_mm=2.0,
            time_budget_s=1,
            seed=1,
        )
    )
    marker = result(wait_done(ops, op.name))
    zones = [box(100.0, 150.0, 140.0, 210.0), Polygon([(420.0, 10.0), (450.0, 10.0), (435.0, 380.0)])]
    for p in marker.placements:
        for zone in zones:
            assert Polygon(outline(p)).distance(zone) >= 2.0 - TOL_MM
    assert len(marker.placements) == 18
    # The layout reaches past the first flaw, so the service had to move pieces around it.
    assert marker.length_mm > 140.0 and marker.notes
    assert len(marker.fabric.flaws) == 2


def test_watch_streams_markers_and_cancel_stops_the_solver(nesting: Stubs) -> None:
    stub, ops = nesting
    op = stub.CreateMarker(
        pb.CreateMarkerRequest(
            pieces=[
                piece("front", FRONT, quantity=10, mirror=pb.MIRROR_RULE_PAIR),
                piece("cuff", CUFF, quantity=20),
            ],
            fabric=pb.Fabric(width_mm=600.0),
            time_budget_s=60,
            seed=3,
        )
    )
    seen: list[pb.WatchMarkerResponse] = []
    for reply in stub.WatchMarker(pb.WatchMarkerRequest(operation=op.name), timeout=30):
        if reply.marker.placements:
            seen.append(reply)
        if len(seen) >= 2:
            break
    assert len(seen[-1].marker.placements) == 40 and not seen[-1].marker.final
    assert seen[-1].marker.length_mm <= seen[0].marker.length_mm
    assert "efficiency" in seen[-1].progress.message
    partial = stub.GetMarker(pb.GetMarkerRequest(operation=op.name))
    assert len(partial.placements) == 40
    started = time.monotonic()
    ops.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name))
    done = wait_done(ops, op.name, timeout_s=10)
    assert time.monotonic() - started < 3.0  # the solver process is killed, not waited for
    assert done.error.code == grpc.StatusCode.CANCELLED.value[0]
    meta = progress_pb2.OperationMetadata()
    done.metadata.Unpack(meta)
    assert meta.progress.state == progress_pb2.JOB_STATE_CANCELLED
    # The best marker so far stays readable after the cancel.
    assert len(stub.GetMarker(pb.GetMarkerRequest(operation=op.name)).placements) == 40


def test_finished_markers_survive_a_restart(start_server: Callable[..., Server]) -> None:
    server = start_server("nesting", build)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = nesting_pb2_grpc.NestingServiceStub(channel)
        op = stub.CreateMarker(
            pb.CreateMarkerRequest(
                pieces=[piece("cuff", CUFF, quantity=5)], fabric=pb.Fabric(width_mm=200.0), time_budget_s=1
            )
        )
        first = result(wait_done(operations_pb2_grpc.OperationsStub(channel), op.name))
    server.stop(grace_s=1)
    again = start_server("nesting", build)  # same data dir and database
    with grpc.insecure_channel(f"127.0.0.1:{again.port}") as channel:
        stub = nesting_pb2_grpc.NestingServiceStub(channel)
        assert stub.GetMarker(pb.GetMarkerRequest(operation=op.name)) == first
        exported = stub.ExportMarker(pb.ExportMarkerRequest(operation=op.name, format=pb.FILE_FORMAT_JSON))
        assert len(json.loads(exported.content)["placements"]) == 5
        with pytest.raises(grpc.RpcError) as err:
            stub.GetMarker(pb.GetMarkerRequest(operation="operations/nesting/nope"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_dxf_in_marker_out_round_trip(nesting: Stubs) -> None:
    stub, ops = nesting
    imported = stub.ImportPieces(
        pb.ImportPiecesRequest(format=pb.FILE_FORMAT_DXF, content=shirt_dxf({"S": 0.9, "M": 1.0}))
    )
    assert len(imported.pieces) == 8
    assert {p.size for p in imported.pieces} == {"S", "M"}
    assert {p.mirror for p in imported.pieces if p.name == "FRONT"} == {pb.MIRROR_RULE_PAIR}
    op = stub.CreateMarker(
        pb.CreateMarkerRequest(
            pieces=imported.pieces,
            fabric=pb.Fabric(width_mm=600.0),
            time_budget_s=1,
            marker_name="shirt",
            ratios=[pb.SizeRatio(size="S", count=1), pb.SizeRatio(size="M", count=2)],
        )
    )
    marker = result(wait_done(ops, op.name))
    # Per size ratio unit: front pair (2) + sleeve pair (2) + 2 cuffs + 1 pocket = 7; S x 1 + M x 2.
    assert len(marker.placements) == 21
    dxf = stub.ExportMarker(pb.ExportMarkerRequest(operation=op.name, format=pb.FILE_FORMAT_DXF))
    assert dxf.file_name == "shirt.dxf"
    doc = ezdxf.read(io.StringIO(dxf.content.decode()))
    msp = doc.modelspace()
    inserts = [e for e in msp if e.dxftype() == "INSERT"]
    assert len(inserts) == 21
    outlines = [
        next(e for e in doc.blocks.get(i.dxf.name) if e.dxftype() == "POLYLINE" and e.dxf.layer == "1")
        for i in inserts
    ]
    fabric = next(e for e in msp if e.dxf.layer == "FABRIC")
    assert max(v.dxf.location.x for v in fabric.vertices) == pytest.approx(marker.length_mm)
    # The DXF outlines are the marker's outlines.
    dxf_areas = sorted(
        round(Polygon([(v.dxf.location.x, v.dxf.location.y) for v in e.vertices]).area, 3) for e in outlines
    )
    assert dxf_areas == sorted(round(Polygon(outline(p)).area, 3) for p in marker.placements)
    svg = stub.ExportMarker(
        pb.ExportMarkerRequest(operation=op.name, format=pb.FILE_FORMAT_SVG)
    ).content.decode()
    assert svg.count("<polygon") == 21 and f"efficiency {marker.efficiency * 100:.2f}%" in svg
    plt = stub.ExportMarker(
        pb.ExportMarkerRequest(operation=op.name, format=pb.FILE_FORMAT_HPGL)
    ).content.decode()
    # Fabric + 21 cut lines + each piece's grain line + a drill cross (two strokes) per piece (the
    # test garment has one drill circle on layer 13), and one label each.
    assert plt.startswith("IN;") and plt.count("PD") == 1 + 21 + 21 + 2 * 21 and plt.count("LB") == 21


def test_marker_longer_than_max_length_fails_the_job(nesting: Stubs) -> None:
    stub, ops = nesting
    # Three 100 mm squares on 150 mm: the area bound (200 mm) passes validation, but no layout is
    # shorter than 300 mm, so the job must fail rather than return a marker past the limit.
    square = ((0.0, 0.0), (100.0, 0.0), (100.0, 100.0), (0.0, 100.0))
    op = stub.CreateMarker(
        pb.CreateMarkerRequest(
            pieces=[piece("sq", square, quantity=3)],
            fabric=pb.Fabric(width_mm=150.0, max_length_mm=250.0),
            time_budget_s=1,
        )
    )
    done = wait_done(ops, op.name)
    assert done.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "max_length_mm" in done.error.message


def _request(mutate: Callable[[pb.CreateMarkerRequest], object]) -> pb.CreateMarkerRequest:
    """A valid request with one thing broken by mutate."""
    req = pb.CreateMarkerRequest(
        pieces=[piece("front", FRONT, quantity=2), piece("cuff", CUFF)],
        fabric=pb.Fabric(width_mm=500.0),
        time_budget_s=1,
    )
    mutate(req)
    return req


BOWTIE = ((0.0, 0.0), (100.0, 100.0), (100.0, 0.0), (0.0, 100.0))
LINE = ((0.0, 0.0), (50.0, 0.0), (100.0, 0.0))
BAD_REQUESTS = {
    "too wide under every rotation": (
        lambda r: r.pieces[0].outline.CopyFrom(
            piece("x", ((0.0, 0.0), (100.0, 0.0), (100.0, 600.0), (0.0, 600.0))).outline
        ),
        "pieces[0].outline",
        "usable width",
    ),
    "self-intersecting": (
        lambda r: r.pieces[1].outline.CopyFrom(piece("x", BOWTIE).outline),
        "pieces[1].outline",
        "self-intersect",
    ),
    "zero area": (
        lambda r: r.pieces[0].outline.CopyFrom(piece("x", LINE).outline),
        "pieces[0].outline",
        "zero area",
    ),
    "quantity 0": (lambda r: setattr(r.pieces[1], "quantity", 0), "pieces[1].quantity", ">= 1"),
    "width 0": (lambda r: setattr(r.fabric, "width_mm", 0.0), "fabric.width_mm", "> 0"),
    "more pieces than the limit": (
        lambda r: setattr(r.pieces[1], "quantity", 999),
        "pieces",
        "limit is 1000",
    ),
    "flaw outside the roll": (
        lambda r: r.fabric.flaws.add(
            rect=geometry_pb2.RectMm(x_mm=10.0, y_mm=480.0, width_mm=20.0, height_mm=40.0)
        ),
        "fabric.flaws[0].rect",
        "outside the roll",
    ),
    "size without a ratio": (lambda r: r.ratios.add(size="M", count=1), "pieces[0].size", "no ratio"),
    "bad rotation step": (
        lambda r: (
            setattr(r.pieces[0], "grain", pb.GRAIN_RULE_STEP),
            setattr(r.pieces[0], "rotation_step_deg", 7.0),
        ),
        "pieces[0].rotation_step_deg",
        "divide 360",
    ),
    "duplicate id": (lambda r: setattr(r.pieces[1], "id", "front"), "pieces[1].id", "used by another"),
    "negative spacing": (lambda r: setattr(r, "spacing_mm", -1.0), "spacing_mm", ">= 0"),
    "budget too long": (lambda r: setattr(r, "time_budget_s", 7200.0), "time_budget_s", "1..3600"),
    "max length too short": (
        lambda r: setattr(r.fabric, "max_length_mm", 50.0),
        "fabric.max_length_mm",
        "at least",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_name_the_field(nesting: Stubs, case: str) -> None:
    stub, _ = nesting
    mutate, field, words = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateMarker(_request(mutate))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(err.value)
    assert any(f == field and words in d for f, d in violations), violations


def test_bad_imports_and_operation_names(nesting: Stubs) -> None:
    stub, _ = nesting
    with pytest.raises(grpc.RpcError) as err:
        stub.ImportPieces(pb.ImportPiecesRequest(format=pb.FILE_FORMAT_DXF, content=b"not a dxf"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value)[0][0] == "content"
    with pytest.raises(grpc.RpcError) as err:
        stub.GetMarker(pb.GetMarkerRequest(operation="operations/trends/x"))
    assert field_violations(err.value)[0][0] == "operation"
