"""Made to measure from the pattern library: the body service's size recommendation in, one
customer's garment laid from the pattern's graded sizes out, over gRPC."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from shapely.geometry import LineString, Point, Polygon

from atelier.body.server import build as build_body
from atelier.body.v1 import body_pb2, body_pb2_grpc
from atelier.nesting import formats, mtm
from atelier.nesting.domain import PieceSpec
from atelier.nesting.server import build as build_nesting
from atelier.nesting.v1 import nesting_pb2 as pb
from atelier.nesting.v1 import nesting_pb2_grpc
from atelier.runtime.server import Server
from atelier.runtime.status import field_violations
from tests.nesting.aama_files import PANEL, r12_graded_inches
from tests.nesting.test_cutting_room import PATTERNS, solved

INCH = 25.4
# The test file's sizes: PANEL scaled by these factors (about the origin, then turned 45 degrees).
SCALES = {"S": 0.9, "M": 1.0, "L": 1.1}


def _chart() -> body_pb2.SizeChart:
    def size(label: str, lo: float) -> body_pb2.Size:
        return body_pb2.Size(
            label=label,
            ranges=[
                body_pb2.SizeRange(measurement="chest_girth", min_cm=lo, max_cm=lo + 8),
                body_pb2.SizeRange(measurement="waist_girth", min_cm=lo - 12, max_cm=lo - 4),
            ],
        )

    return body_pb2.SizeChart(
        display_name="test shirts", sizes=[size("S", 84), size("M", 92), size("L", 100)]
    )


def test_a_customer_between_two_sizes_is_cut_from_both(start_server: Callable[..., Server]) -> None:
    body_server = start_server("body", build_body)
    nesting_server = start_server("nesting", build_nesting)
    with (
        grpc.insecure_channel(f"127.0.0.1:{body_server.port}") as body_channel,
        grpc.insecure_channel(f"127.0.0.1:{nesting_server.port}") as channel,
    ):
        body = body_pb2_grpc.BodyServiceStub(body_channel)
        stub = nesting_pb2_grpc.NestingServiceStub(channel)
        from google.longrunning import operations_pb2_grpc

        stubs = (stub, operations_pb2_grpc.OperationsStub(channel))
        saved = stub.ImportPieces(
            pb.ImportPiecesRequest(format=pb.FILE_FORMAT_DXF, content=r12_graded_inches(), save_pattern=True)
        )
        # The customer measured (MeasureBody or a tape): at the top of M (chest 92-100, waist 80-88).
        rec = body.RecommendSize(
            body_pb2.RecommendSizeRequest(
                chart=_chart(),
                measurements=[
                    body_pb2.Measurement(name="chest_girth", value_cm=99.8, stddev_cm=1.0),
                    body_pb2.Measurement(name="waist_girth", value_cm=87.8, stddev_cm=1.0),
                ],
            )
        )
        assert (rec.best.size, rec.second.size) == ("M", "L")
        # Each zone lies 3.8 cm past M's middle, of the 8 cm between M's and L's middles.
        t = ((99.8 - 96.0) / 8.0 + (87.8 - 84.0) / 8.0) / 2
        _, marker = solved(
            stubs,
            pb.CreateMarkerRequest(
                pattern_id=saved.pattern_id,
                fabric=pb.Fabric(width_mm=1000.0),
                spacing_mm=2.0,
                time_budget_s=1,
                made_to_measure=pb.MadeToMeasure(recommendation=rec, garments=1),
            ),
        )
        label = f"M>L@{t:.2f}"
        assert [(r.size, r.count) for r in marker.ratios] == [(label, 1)]
        assert any("2 of 2 pieces interpolated" in n for n in marker.notes), marker.notes
        panels = [p for p in marker.placements if p.name == "PANEL"]
        # Quantity 2 in the file: one left/right pair of the customer's panel.
        assert len(panels) == 2 and {p.mirrored for p in panels} == {False, True}
        k = SCALES["M"] + t * (SCALES["L"] - SCALES["M"])
        want = Polygon(PANEL).area * (k * INCH) ** 2
        for p in panels:
            placed = Polygon([(q.x_mm, q.y_mm) for q in p.outline.points])
            assert placed.area == pytest.approx(want, rel=1e-6)
            ring = LineString(placed.exterior.coords)
            assert len(p.notches) == 2 and all(ring.distance(Point(q.x_mm, q.y_mm)) < 1e-6 for q in p.notches)
            assert p.size == label and p.piece_id.endswith(f">L@{t:.2f}")

        # By hand: size S exactly as graded, three garments.
        _, by_hand = solved(
            stubs,
            pb.CreateMarkerRequest(
                pattern_id=saved.pattern_id,
                fabric=pb.Fabric(width_mm=1000.0),
                time_budget_s=1,
                piece_names=["PANEL"],
                made_to_measure=pb.MadeToMeasure(blend=pb.SizeBlend(size="S"), garments=3),
            ),
        )
        assert len(by_hand.placements) == 6 and {p.size for p in by_hand.placements} == {"S"}
        want_s = Polygon(PANEL).area * (SCALES["S"] * INCH) ** 2
        for p in by_hand.placements:
            assert Polygon([(q.x_mm, q.y_mm) for q in p.outline.points]).area == pytest.approx(
                want_s, rel=1e-6
            )

        def violations(mtm_msg: pb.MadeToMeasure, **extra: object) -> list[tuple[str, str]]:
            request = pb.CreateMarkerRequest(
                fabric=pb.Fabric(width_mm=1000.0), made_to_measure=mtm_msg, **extra
            )
            with pytest.raises(grpc.RpcError) as err:
                stub.CreateMarker(request)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            return field_violations(err.value)

        pid = saved.pattern_id
        fields = [f for f, _ in violations(pb.MadeToMeasure(blend=pb.SizeBlend(size="M")))]
        assert "made_to_measure" in fields  # no pattern (and no pieces)
        fields = [
            f
            for f, _ in violations(
                pb.MadeToMeasure(blend=pb.SizeBlend(size="XL", toward_size="M", fraction=1.5), garments=101),
                pattern_id=pid,
                ratios=[pb.SizeRatio(size="M", count=1)],
            )
        ]
        assert sorted(fields) == [
            "made_to_measure.blend.fraction",
            "made_to_measure.blend.size",
            "made_to_measure.garments",
            "ratios",
        ]
        fields = [f for f, _ in violations(pb.MadeToMeasure(), pattern_id=pid)]
        assert fields == ["made_to_measure"]
        same = pb.MadeToMeasure(blend=pb.SizeBlend(size="M", toward_size="M", fraction=0.5))
        assert [f for f, _ in violations(same, pattern_id=pid)] == ["made_to_measure.blend.toward_size"]
        # A NaN is refused by the runtime's limits before the service looks at the request.
        nan = pb.MadeToMeasure(blend=pb.SizeBlend(size="M", toward_size="L", fraction=math.nan))
        assert [f for f, _ in violations(nan, pattern_id=pid)] == ["made_to_measure.blend.fraction"]
        other_tenant = (("x-atelier-tenant", "other"),)
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateMarker(
                pb.CreateMarkerRequest(
                    pattern_id=pid,
                    fabric=pb.Fabric(width_mm=1000.0),
                    made_to_measure=pb.MadeToMeasure(blend=pb.SizeBlend(size="M")),
                ),
                metadata=other_tenant,
            )
        assert [f for f, _ in field_violations(err.value)] == ["pattern_id"]


def test_the_position_between_sizes_comes_from_every_zone_that_grades() -> None:
    zones = [
        mtm.ZoneDifference("chest_girth", 2.0, -6.0),  # 2 of 8 cm: 0.25
        mtm.ZoneDifference("waist_girth", 4.0, -4.0),  # 0.5
        mtm.ZoneDifference("inseam", 1.0, 1.0),  # the same middle in both sizes: says nothing
    ]
    t, how = mtm.fraction_from_zones(zones)
    assert t == pytest.approx(0.375) and "inseam" not in how
    assert mtm.fraction_from_zones([mtm.ZoneDifference("chest_girth", -3.0, -11.0)])[0] == 0.0  # clamped
    assert mtm.fraction_from_zones([])[0] == 0.0


def test_sizes_that_do_not_correspond_are_cut_as_the_nearest_size() -> None:
    square = ((0.0, 0.0), (100.0, 0.0), (100.0, 100.0), (0.0, 100.0))
    pentagon = ((0.0, 0.0), (110.0, 0.0), (110.0, 110.0), (55.0, 120.0), (0.0, 110.0))
    a = PieceSpec("A_M", square, size="M", name="A")
    b = PieceSpec("A_L", pentagon, size="L", name="A")
    pieces, label, notes = mtm.made_to_measure([a, b], "M", "L", 0.5)
    assert label == "M>L@0.50" and pieces[0].outline_mm == square
    assert "4 and 5 vertices" in notes[1]
    # The same square started at another corner is the same shape: it is aligned, not refused.
    c = PieceSpec("A_L", ((110.0, 0.0), (110.0, 110.0), (0.0, 110.0), (0.0, 0.0)), size="L", name="A")
    pieces, _, notes = mtm.made_to_measure([a, c], "M", "L", 0.5)
    assert Polygon(pieces[0].outline_mm).area == pytest.approx(105.0**2)
    assert notes == ["made to measure: 1 of 1 pieces interpolated 0.50 of the way from size M to size L"]


@pytest.mark.parametrize("name", ["GMX1016S18_AAMA.DXF", "mirrored.DXF"])
def test_halfway_between_two_real_sizes_is_close_to_the_size_the_grader_drew(name: str) -> None:
    """Interpolating the real sizes on either side of a graded size reproduces that size within a
    few mm (grading is not linear between size breaks: the figure is what made to measure costs)."""
    path = Path(PATTERNS) / name
    if not path.exists():
        pytest.skip(f"shared pattern files not found at {path}")
    imported = formats.import_dxf(path.read_bytes())
    lo, mid, hi = imported.sizes[5:8]
    pieces, _, notes = mtm.made_to_measure(imported.pieces, lo, hi, 0.5)
    assert notes[0].startswith(f"made to measure: {len(pieces)} of {len(pieces)} pieces interpolated")
    real = {p.name: p for p in imported.pieces if p.size == mid}
    compared = 0
    for p in pieces:
        drawn = mtm.aligned(p, real[p.name])
        if len(drawn.outline_mm) != len(p.outline_mm):
            continue  # the grader drew this size with other vertices (AccuMark does, now and then)
        compared += 1
        worst = max(
            math.dist(u, v)
            for u, v in zip(mtm._centred(p.outline_mm), mtm._centred(drawn.outline_mm), strict=True)
        )
        assert worst < 6.0, (p.id, worst)
        assert Polygon(p.outline_mm).area == pytest.approx(Polygon(drawn.outline_mm).area, rel=0.01)
    assert compared >= len(pieces) - 2
