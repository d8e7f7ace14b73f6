"""The cutting room over gRPC: the bugs of issue 20, marker files a cutter and a plotter take, the
pattern library, and a marker of one size set from a real graded file."""

from __future__ import annotations

import math
import os
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from shapely.geometry import LineString, Point, Polygon

from atelier.nesting.server import build
from atelier.nesting.v1 import nesting_pb2 as pb
from atelier.nesting.v1 import nesting_pb2_grpc
from atelier.runtime.server import Server
from atelier.runtime.status import field_violations
from tests.conftest import SHARED_BENCHMARKS
from tests.nesting.aama_files import bowtie_dxf, lwpolyline_model_space, r12_graded_inches
from tests.nesting.garment import piece

PATTERNS = Path(os.environ.get("ATELIER_SHARED_BENCHMARKS", SHARED_BENCHMARKS)) / "patterns" / "dxf"
Stubs = tuple[nesting_pb2_grpc.NestingServiceStub, operations_pb2_grpc.OperationsStub]


@pytest.fixture
def nesting(start_server: Callable[..., Server]) -> Iterator[Stubs]:
    server = start_server("nesting", build)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield nesting_pb2_grpc.NestingServiceStub(channel), operations_pb2_grpc.OperationsStub(channel)


def wait_done(
    ops: operations_pb2_grpc.OperationsStub, name: str, metadata: tuple = (), timeout_s: float = 60.0
) -> operations_pb2.Operation:
    deadline = time.monotonic() + timeout_s
    op = ops.GetOperation(operations_pb2.GetOperationRequest(name=name), metadata=metadata)
    while not op.done and time.monotonic() < deadline:
        time.sleep(0.2)
        op = ops.GetOperation(operations_pb2.GetOperationRequest(name=name), metadata=metadata)
    assert op.done, f"{name} not done after {timeout_s} s"
    return op


def solved(stubs: Stubs, request: pb.CreateMarkerRequest, metadata: tuple = ()) -> tuple[str, pb.Marker]:
    stub, ops = stubs
    op = stub.CreateMarker(request, metadata=metadata)
    done = wait_done(ops, op.name, metadata)
    assert done.HasField("response"), done.error
    marker = pb.Marker()
    done.response.Unpack(marker)
    return op.name, marker


def pts(msg: object) -> list[tuple[float, float]]:
    return [(p.x_mm, p.y_mm) for p in msg]  # type: ignore[attr-defined]


# -- the bugs ---------------------------------------------------------------------------------------


def test_a_piece_exactly_as_wide_as_the_usable_fabric_is_refused_up_front(nesting: Stubs) -> None:
    # Before: accepted, then the solver panicked and the job failed INTERNAL with a traceback.
    stub, _ = nesting
    strip = ((0.0, 0.0), (100.0, 0.0), (100.0, 480.0), (0.0, 480.0))
    request = pb.CreateMarkerRequest(
        pieces=[piece("strip", strip, grain=pb.GRAIN_RULE_FIXED)],
        fabric=pb.Fabric(width_mm=500.0, edge_margin_mm=10.0),
        time_budget_s=1,
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateMarker(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert any(f == "pieces[0].outline" and "play" in d for f, d in field_violations(err.value))
    # 0.05 mm of play solves.
    request.fabric.width_mm = 500.05
    _, marker = solved(nesting, request)
    assert len(marker.placements) == 1


def test_grain_step_without_an_angle_and_binary_files_are_invalid_argument(nesting: Stubs) -> None:
    stub, _ = nesting
    with pytest.raises(grpc.RpcError) as err:
        stub.ImportPieces(
            pb.ImportPiecesRequest(
                format=pb.FILE_FORMAT_DXF, content=lwpolyline_model_space(("Grain: step",))
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "step:<degrees>" in err.value.details()
    noise = bytes((i * 7919 + 13) % 256 for i in range(4096))
    with pytest.raises(grpc.RpcError) as err:
        stub.ImportPieces(pb.ImportPiecesRequest(format=pb.FILE_FORMAT_DXF, content=noise))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details() + " ".join(d for _, d in field_violations(err.value))
    # Before: 250 characters of the binary echoed back.
    assert details.isprintable() and "\ufffd" not in details and len(details) < 400
    with pytest.raises(grpc.RpcError) as err:
        stub.ImportMarker(pb.ImportMarkerRequest(format=pb.FILE_FORMAT_DXF, content=noise))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_nan_width_is_one_violation(nesting: Stubs) -> None:
    stub, _ = nesting
    square = ((0.0, 0.0), (50.0, 0.0), (50.0, 50.0), (0.0, 50.0))
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateMarker(
            pb.CreateMarkerRequest(
                pieces=[piece("sq", square)],
                fabric=pb.Fabric(width_mm=math.nan),
                spacing_mm=2.0,
                time_budget_s=1,
            )
        )
    # Before: a second, wrong violation on spacing_mm ("must be < the width").
    assert [f for f, _ in field_violations(err.value)] == ["fabric.width_mm"]


def test_self_intersecting_outlines_are_reported_at_import(nesting: Stubs) -> None:
    stub, _ = nesting
    reply = stub.ImportPieces(pb.ImportPiecesRequest(format=pb.FILE_FORMAT_DXF, content=bowtie_dxf()))
    assert any("BOW_M" in w and "not a simple polygon" in w for w in reply.warnings)


# -- outputs ----------------------------------------------------------------------------------------


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, str] = {}
        self._id: str | None = None
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("meta", "br", "img", "line", "circle", "rect", "polygon", "polyline"):
            self.open.append(tag)
        self._id = dict(attrs).get("id")

    def handle_endtag(self, tag: str) -> None:
        self._id = None
        if self.open and self.open[-1] == tag:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        if self._id:
            self.cells[self._id] = self.cells.get(self._id, "") + data


def hpgl_strokes(plt: str) -> dict[int, list[list[tuple[float, float]]]]:
    """Parses IN/SP/PU/PD/LB back: the strokes drawn with each pen, in mm; labels under key -pen."""
    pen, strokes, labels = 0, {}, {}
    pos: tuple[float, float] = (0.0, 0.0)
    for m in re.finditer(r"(SP|PU|PD|LB|SI|IN|DT)([^;\x03]*)[;\x03]", plt):
        cmd, arg = m.group(1), m.group(2)
        if cmd == "SP":
            pen = int(arg or 0)
        elif cmd in ("PU", "PD") and arg:
            nums = [int(v) / 40.0 for v in arg.split(",")]
            coords = list(zip(nums[::2], nums[1::2], strict=True))
            if cmd == "PU":
                pos = coords[-1]
            else:
                strokes.setdefault(pen, []).append([pos, *coords])
                pos = coords[-1]
        elif cmd == "LB":
            labels.setdefault(pen, []).append(arg)
    return {**strokes, **{-k: v for k, v in labels.items()}}  # type: ignore[dict-item]


def test_marker_files_for_the_cutting_room_carry_notches_drills_and_labels(nesting: Stubs) -> None:
    stub, _ = nesting
    imported = stub.ImportPieces(
        pb.ImportPiecesRequest(format=pb.FILE_FORMAT_DXF, content=r12_graded_inches())
    )
    name, marker = solved(
        nesting,
        pb.CreateMarkerRequest(
            pieces=imported.pieces,
            fabric=pb.Fabric(width_mm=700.0, edge_margin_mm=5.0),
            spacing_mm=2.0,
            time_budget_s=2,
            marker_name="panel set",
            ratios=[
                pb.SizeRatio(size="S", count=1),
                pb.SizeRatio(size="M", count=2),
                pb.SizeRatio(size="L", count=1),
            ],
        ),
    )
    # Per garment: a left/right pair of panels and one back; 4 garments.
    assert len(marker.placements) == 12
    pieces = {p.id: p for p in imported.pieces}
    for pl in marker.placements:
        # Grain: woven, so the placed grain line still runs along the roll.
        (_, y0), (_, y1) = pts(pl.grain_line.points)
        assert abs(y1 - y0) < 1e-6 and pl.rotation_deg % 180 == pytest.approx(0.0, abs=1e-9)
        # Notches: as many as the piece has, on the placed cut line.
        ring = LineString([*pts(pl.outline.points), pts(pl.outline.points)[0]])
        assert len(pl.notches) == len(pieces[pl.piece_id].notches)
        assert all(ring.distance(Point(n)) < 1e-6 for n in pts(pl.notches))
        assert all(Polygon(pts(pl.outline.points)).contains(Point(d)) for d in pts(pl.drill_holes))
    notches = sum(len(p.notches) for p in marker.placements)
    drills = sum(len(p.drill_holes) for p in marker.placements)
    assert notches > 0 and drills == 8  # one drill hole per panel

    def export(fmt: int) -> pb.ExportMarkerResponse:
        return stub.ExportMarker(pb.ExportMarkerRequest(operation=name, format=fmt))

    # AAMA marker DXF -> ImportMarker: the same pieces at the same places (0.01 mm).
    dxf = export(pb.FILE_FORMAT_DXF)
    back = stub.ImportMarker(pb.ImportMarkerRequest(format=pb.FILE_FORMAT_DXF, content=dxf.content)).marker
    assert back.name == "panel set" and back.width_mm == pytest.approx(marker.width_mm, abs=0.01)
    assert back.length_mm == pytest.approx(marker.length_mm, abs=0.01)
    assert len(back.placements) == len(marker.placements)
    by_key = {(p.piece_id, p.copy, p.mirrored): p for p in back.placements}
    for pl in marker.placements:
        got = by_key[(pl.piece_id, pl.copy, pl.mirrored)]
        assert got.size == pl.size and got.rotation_deg == pytest.approx(pl.rotation_deg, abs=1e-6)
        assert (got.x_mm, got.y_mm) == pytest.approx((pl.x_mm, pl.y_mm), abs=0.01)
        assert len(got.outline.points) == len(pl.outline.points)
        assert (
            max(math.dist(a, b) for a, b in zip(pts(got.outline.points), pts(pl.outline.points), strict=True))
            < 0.01
        )
        assert len(got.notches) == len(pl.notches)
        assert all(min(math.dist(a, b) for b in pts(got.notches)) < 0.01 for a in pts(pl.notches))
        assert len(got.drill_holes) == len(pl.drill_holes)

    # HPGL parsed back: every cut line, a slit per notch, a cross per drill hole, a label per piece.
    plt = export(pb.FILE_FORMAT_HPGL).content.decode("ascii")
    strokes = hpgl_strokes(plt)
    assert len(strokes[1]) == len(marker.placements)
    # Plotter units are 0.025 mm: the areas agree to that rounding.
    cut_areas = sorted(Polygon(s).area for s in strokes[1])
    assert cut_areas == pytest.approx(
        sorted(Polygon(pts(p.outline.points)).area for p in marker.placements), rel=1e-4
    )
    assert len(strokes[4]) == notches and all(
        math.dist(*s) == pytest.approx(3.0, abs=0.05) for s in strokes[4]
    )
    assert len(strokes[5]) == 2 * drills
    labels = strokes[-6]
    assert len(labels) == len(marker.placements) and Counter(label.split()[0] for label in labels) == {
        "PANEL": 8,
        "BACK": 4,
    }

    # G-code: a tool-down cut per piece and per notch, one G81 per drill hole, mm and absolute.
    nc = export(pb.FILE_FORMAT_GCODE).content.decode()
    assert "G21" in nc and "G90" in nc and nc.strip().endswith("%")
    lines = nc.splitlines()
    assert lines.count("M3") == len(marker.placements) + notches + 1 and nc.count("G81") == drills
    first = [tuple(map(float, m)) for m in re.findall(r"G[01] X(-?[\d.]+) Y(-?[\d.]+)", nc)][
        : len(marker.placements[0].outline.points) + 1
    ]
    assert (
        max(math.dist(a, b) for a, b in zip(first, pts(marker.placements[0].outline.points), strict=False))
        < 0.001
    )

    # SVG: well formed, a readable label per piece.
    svg = ET.fromstring(export(pb.FILE_FORMAT_SVG).content)
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text") if t.get("class") == "label"]
    assert len(texts) == 12 and all(t and ("PANEL" in t or "BACK" in t) for t in texts)

    # The report: the marker's figures.
    report = export(pb.FILE_FORMAT_HTML)
    assert report.file_name == "panel set.html" and report.mime_type == "text/html"
    parser = _Html()
    parser.feed(report.content.decode())
    cells = parser.cells
    assert cells["efficiency"] == f"{marker.efficiency * 100:.2f}%"
    assert cells["length"] == f"{marker.length_mm:.1f} mm" and cells["width"] == "700.0 mm"
    assert cells["garments"] == "4" and cells["pieces"] == "12"
    assert cells["per-garment"].startswith(f"{marker.length_mm / 4 / 1000:.3f} m")
    assert parser.open == []  # every element closed


# -- the pattern library and a real graded marker -----------------------------------------------------


def test_pattern_library_per_tenant_and_a_real_size_set_marker(nesting: Stubs, tmp_path: Path) -> None:
    stub, _ = nesting
    path = PATTERNS / "GMX1016S18_AAMA.DXF"
    if not path.exists():
        pytest.skip(f"shared pattern files not found at {path}")
    acme = (("x-atelier-tenant", "acme"),)
    other = (("x-atelier-tenant", "other"),)
    reply = stub.ImportPieces(
        pb.ImportPiecesRequest(format=pb.FILE_FORMAT_DXF, content=path.read_bytes(), save_pattern=True),
        metadata=acme,
    )
    assert reply.pattern_id and len(reply.sizes) == 15 and reply.style_name == "GMX1016S18"
    listed = stub.ListPatterns(pb.ListPatternsRequest(), metadata=acme)
    assert [p.id for p in listed.patterns] == [reply.pattern_id] and not listed.patterns[0].pieces
    assert listed.patterns[0].piece_count == 10 and listed.patterns[0].name == "GMX1016S18"
    assert not stub.ListPatterns(pb.ListPatternsRequest(), metadata=other).patterns
    with pytest.raises(grpc.RpcError) as err:
        stub.GetPattern(pb.GetPatternRequest(id=reply.pattern_id), metadata=other)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    pattern = stub.GetPattern(pb.GetPatternRequest(id=reply.pattern_id), metadata=acme)
    assert len(pattern.pieces) == 150 and list(pattern.sizes) == list(reply.sizes)

    # One size set of the graded style, laid from the library by id: 46:1, 50:2, 54:1, the
    # shell-fabric pieces only (the file also holds rib, interlining and a cuffed-sleeve variant).
    ratios = {"46": 1, "50": 2, "54": 1}
    shell = ["GMX1016S18FR", "GMX1016S18BK", "GMX1016S18SS", "GMX1016S18YL", "GMX1016S18YP"]
    name, marker = solved(
        nesting,
        pb.CreateMarkerRequest(
            pattern_id=reply.pattern_id,
            fabric=pb.Fabric(width_mm=1500.0, edge_margin_mm=5.0),
            spacing_mm=2.0,
            time_budget_s=3,
            marker_name="GMX1016S18 46-50x2-54",
            ratios=[pb.SizeRatio(size=s, count=c) for s, c in ratios.items()],
            piece_names=shell,
        ),
        metadata=acme,
    )
    assert marker.pattern_id == reply.pattern_id
    per_size = Counter(p.size for p in marker.placements)
    garment = sum(
        p.quantity * (2 if p.mirror == pb.MIRROR_RULE_PAIR else 1)
        for p in pattern.pieces
        if p.size == "50" and p.name in shell
    )
    assert {p.piece_id.rsplit("_", 1)[0] for p in marker.placements} == set(shell)
    assert per_size == {s: garment * c for s, c in ratios.items()}
    assert 0.5 < marker.efficiency <= 1.0
    for fmt, ext in (
        (pb.FILE_FORMAT_DXF, "dxf"),
        (pb.FILE_FORMAT_HPGL, "plt"),
        (pb.FILE_FORMAT_HTML, "html"),
    ):
        out = stub.ExportMarker(pb.ExportMarkerRequest(operation=name, format=fmt), metadata=acme)
        assert out.file_name.endswith(ext) and len(out.content) > 1000
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateMarker(
            pb.CreateMarkerRequest(
                pattern_id=reply.pattern_id,
                fabric=pb.Fabric(width_mm=1500.0),
                ratios=[pb.SizeRatio(size="99", count=1)],
            ),
            metadata=acme,
        )
    assert any(f == "ratios" for f, _ in field_violations(err.value))
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateMarker(
            pb.CreateMarkerRequest(
                pattern_id=reply.pattern_id, fabric=pb.Fabric(width_mm=1500.0), piece_names=["NOPE"]
            ),
            metadata=acme,
        )
    assert any(f == "piece_names" and "NOPE" in d for f, d in field_violations(err.value))
    stub.DeletePattern(pb.DeletePatternRequest(id=reply.pattern_id), metadata=acme)
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateMarker(
            pb.CreateMarkerRequest(pattern_id=reply.pattern_id, fabric=pb.Fabric(width_mm=1500.0)),
            metadata=acme,
        )
    assert any(f == "pattern_id" for f, _ in field_violations(err.value))
    with pytest.raises(grpc.RpcError) as err:
        stub.DeletePattern(pb.DeletePatternRequest(id=reply.pattern_id), metadata=acme)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.ListPatterns(pb.ListPatternsRequest(page_token="abc"), metadata=acme)
    assert field_violations(err.value)[0][0] == "page_token"
