"""Unit tests of the garment layer: expansion, verification, flaw clearing, formats."""

from __future__ import annotations

import json

import pytest
from shapely.geometry import Polygon

from atelier.nesting import formats
from atelier.nesting.domain import (
    FabricSpec,
    FlawZone,
    Grain,
    Marker,
    MarkerRequest,
    Mirror,
    PieceSpec,
    PlacedPiece,
    expand_items,
    min_extent_y_mm,
    mirror_outline,
    placed_count,
    transform,
)
from atelier.nesting.engine import SolverLayout, solver_job, to_marker
from atelier.nesting.verify import VerificationError, verify_marker
from atelier.runtime.storage import Store
from tests.conftest import SHARED_BENCHMARKS
from tests.nesting.garment import CUFF, FRONT, SLEEVE, shirt_dxf, signed_area

SQUARE = ((0.0, 0.0), (100.0, 0.0), (100.0, 100.0), (0.0, 100.0))


def test_expand_items_ratios_and_mirrors() -> None:
    pieces = (
        PieceSpec("front", FRONT, quantity=1, mirror=Mirror.PAIR, size="S"),
        PieceSpec("cuff", CUFF, quantity=2, size="M"),
        PieceSpec("sleeve", SLEEVE, quantity=3, mirror=Mirror.ALLOWED, size="M"),
    )
    req = MarkerRequest(pieces, FabricSpec(500.0), ratios={"S": 2, "M": 3})
    items = {it.key: it for it in expand_items(req)}
    assert items["p0"].demand == 2 and items["p0m"].demand == 2  # pair: S x 2 -> 2 drawn + 2 mirrored
    assert items["p1"].demand == 6 and "p1m" not in items  # cuff: 2 x M 3
    assert items["p2"].demand == 5 and items["p2m"].demand == 4  # allowed: 9 copies, floor(9/2) mirrored
    assert items["p2m"].first_copy == 5
    assert items["p0m"].outline_mm == mirror_outline(FRONT)
    assert signed_area(items["p0m"].outline_mm) == pytest.approx(-signed_area(FRONT))
    assert placed_count(req) == 4 + 6 + 9


def test_grain_rotations_and_narrowest_width() -> None:
    assert PieceSpec("a", SQUARE, grain=Grain.WOVEN).allowed_rotations_deg() == [0.0, 180.0]
    assert PieceSpec("a", SQUARE, grain=Grain.STEP, rotation_step_deg=45).allowed_rotations_deg() == [
        0,
        45,
        90,
        135,
        180,
        225,
        270,
        315,
    ]
    assert PieceSpec("a", SQUARE, grain=Grain.FREE).allowed_rotations_deg() is None
    long = ((0.0, 0.0), (600.0, 0.0), (600.0, 50.0), (0.0, 50.0))
    # Woven keeps the 600 mm side along the roll: 50 mm across; fixed too.
    assert min_extent_y_mm(PieceSpec("l", long, grain=Grain.WOVEN))[0] == pytest.approx(50.0)
    standing = ((0.0, 0.0), (50.0, 0.0), (50.0, 600.0), (0.0, 600.0))
    assert min_extent_y_mm(PieceSpec("s", standing, grain=Grain.WOVEN))[0] == pytest.approx(600.0)
    assert min_extent_y_mm(PieceSpec("s", standing, grain=Grain.FOUR_WAY))[0] == pytest.approx(50.0)
    diagonal = tuple(transform(long, 30.0, 0, 0))
    assert min_extent_y_mm(PieceSpec("d", diagonal, grain=Grain.FREE))[0] == pytest.approx(50.0)


def _two_squares(
    spacing: float,
    dx: float,
    rotation: float = 0.0,
    fabric: FabricSpec | None = None,
    grain: Grain = Grain.WOVEN,
) -> tuple[MarkerRequest, Marker]:
    fabric = fabric or FabricSpec(300.0)
    req = MarkerRequest((PieceSpec("sq", SQUARE, quantity=2, grain=grain),), fabric, spacing_mm=spacing)
    placed = [
        PlacedPiece("sq", 0, "", 10.0, 10.0, 0.0, False, transform(SQUARE, 0.0, 10.0, 10.0)),
        PlacedPiece(
            "sq", 1, "", 10.0 + dx, 10.0, rotation, False, transform(SQUARE, rotation, 10.0 + dx, 10.0)
        ),
    ]
    length = max(max(x for x, _ in p.outline_mm) for p in placed) + fabric.end_margin_mm
    return req, Marker("t", placed, length, fabric.width_mm, 2 * 100.0 * 100.0, fabric=fabric)


def test_verify_accepts_a_good_marker_and_rejects_each_broken_rule() -> None:
    verify_marker(*_two_squares(spacing=5.0, dx=105.0))
    with pytest.raises(VerificationError, match="overlap"):
        verify_marker(*_two_squares(spacing=0.0, dx=90.0))
    with pytest.raises(VerificationError, match="apart, spacing is 5"):
        verify_marker(*_two_squares(spacing=5.0, dx=103.0))
    with pytest.raises(VerificationError, match="grain allows"):
        verify_marker(*_two_squares(spacing=0.0, dx=210.0, rotation=90.0))
    with pytest.raises(VerificationError, match="outside the fabric"):
        verify_marker(*_two_squares(spacing=0.0, dx=105.0, fabric=FabricSpec(300.0, edge_margin_mm=20.0)))
    req, marker = _two_squares(spacing=0.0, dx=105.0)
    marker.placements.pop()
    with pytest.raises(VerificationError, match="differ from the demand"):
        verify_marker(req, marker)
    req, marker = _two_squares(
        spacing=0.0,
        dx=105.0,
        fabric=FabricSpec(
            300.0, flaws=(FlawZone(((150.0, 50.0), (160.0, 50.0), (160.0, 60.0), (150.0, 60.0))),)
        ),
    )
    with pytest.raises(VerificationError, match="flaw zone 0"):
        verify_marker(req, marker)


def test_flaw_zone_shifts_pieces_rigidly_past_it() -> None:
    flaw = ((150.0, 200.0), (170.0, 200.0), (170.0, 230.0), (150.0, 230.0))
    fabric = FabricSpec(300.0, flaws=(FlawZone(flaw, "hole"),))
    req = MarkerRequest((PieceSpec("sq", SQUARE, quantity=4),), fabric, spacing_mm=2.0)
    # Solver coordinates carry the spacing offset (strip edges keep the separation too).
    layout = SolverLayout(
        0.0,
        [
            ("p0", 0.0, 2.0, 2.0),
            ("p0", 0.0, 104.0, 2.0),
            ("p0", 0.0, 104.0, 104.0),
            ("p0", 180.0, 306.0, 204.0),
        ],
        True,
        1.0,
    )
    marker = to_marker(req, expand_items(req), layout)
    verify_marker(req, marker)
    zone = Polygon(flaw)
    assert all(Polygon(p.outline_mm).distance(zone) >= 2.0 - 1e-9 for p in marker.placements)
    # The first piece (x 0..100) stays; the others start 2 mm past the flaw's end.
    xs = sorted(min(x for x, _ in p.outline_mm) for p in marker.placements)
    assert xs[0] == pytest.approx(0.0) and xs[1] == pytest.approx(172.0)
    assert marker.notes and "3 pieces shifted" in marker.notes[0]


def test_dxf_import_reads_blocks_sizes_quantities_and_units() -> None:
    imported = formats.import_dxf(shirt_dxf({"S": 0.9, "M": 1.0}, insunits=5))  # cm file
    by_id = {p.id: p for p in imported.pieces}
    assert len(by_id) == 8
    front = by_id["FRONT-M"]
    assert (
        front.size == "M"
        and front.mirror is Mirror.PAIR
        and front.quantity == 1
        and front.grain is Grain.WOVEN
    )
    assert by_id["CUFF-S"].quantity == 2
    # The boundary (layer 1), not the drill hole; cm -> mm.
    assert Polygon(front.outline_mm).area == pytest.approx(Polygon(FRONT).area * 100.0, rel=1e-6)


def test_json_import_of_the_shared_instance_format() -> None:
    path = SHARED_BENCHMARKS / "nesting" / "instances" / "shirts.json"
    if not path.exists():
        pytest.skip(f"shared benchmark data not found at {path}")
    imported = formats.import_json(path.read_bytes())
    assert imported.fabric_width_mm == 40.0
    assert len(imported.pieces) == 8 and sum(p.quantity for p in imported.pieces) == 99
    assert all(p.grain is Grain.WOVEN for p in imported.pieces)
    assert formats.grain_from_orientations([0, 90, 180, 270]) == (Grain.FOUR_WAY, 0.0)
    assert formats.grain_from_orientations(None) == (Grain.FREE, 0.0)
    with pytest.raises(formats.ImportError_):
        formats.grain_from_orientations([0, 10])


def test_exports_carry_the_layout() -> None:
    _req, marker = _two_squares(spacing=0.0, dx=105.0)
    svg = formats.export_svg(marker).decode()
    assert svg.count("<polygon") == 2 and "efficiency" in svg and f"length {marker.length_mm:.1f} mm" in svg
    # The AAMA marker DXF read back: the second square where it was placed.
    back, _warnings = formats.import_marker_dxf(formats.export_dxf(marker))
    assert len(back.placements) == 2 and back.width_mm == marker.width_mm
    assert {tuple(map(round, p)) for p in back.placements[1].outline_mm} == {
        (115, 10),
        (215, 10),
        (215, 110),
        (115, 110),
    }
    hpgl = formats.export_hpgl(marker).decode()
    assert hpgl.startswith("IN;") and hpgl.count("PD") == 3 and "PU4600,400;" in hpgl  # 115 mm x 40 units
    data = json.loads(json.dumps(formats.marker_json(marker)))
    assert data["efficiency"] == pytest.approx(20000.0 / (300.0 * 215.0))


def test_outlines_far_from_the_origin_are_placed_where_the_solver_put_them() -> None:
    far = tuple((x + 50_000.0, y - 20_000.0) for x, y in SQUARE)
    req = MarkerRequest(
        (PieceSpec("far", far, quantity=1, grain=Grain.WOVEN),), FabricSpec(300.0, edge_margin_mm=5.0)
    )
    items = expand_items(req)
    job = solver_job(req, items, workers=1)
    # The solver sees the outline moved to (0, 0); float32 keeps its precision there.
    assert (
        min(x for x, _ in job["items"][0]["shape"]) == 0.0
        and min(y for _, y in job["items"][0]["shape"]) == 0.0
    )
    # Rotated 180 about the origin the square spans -100..0, so the solver translates it by 100.
    marker = to_marker(req, items, SolverLayout(100.0, [("p0", 180.0, 100.0, 100.0)], True, 1.0))
    verify_marker(req, marker)
    xs = [x for x, _ in marker.placements[0].outline_mm]
    ys = [y for _, y in marker.placements[0].outline_mm]
    assert (min(xs), max(xs), min(ys), max(ys)) == pytest.approx((0.0, 100.0, 5.0, 105.0))
    placed = marker.placements[0]
    expected = transform(far, 180.0, placed.x_mm, placed.y_mm)
    assert [c for p in placed.outline_mm for c in p] == pytest.approx([c for p in expected for c in p])


def test_a_solver_panic_on_a_too_wide_piece_is_the_callers_not_internal() -> None:
    from atelier.nesting.engine import SolverError, solver_failure
    from atelier.runtime.errors import FailedPreconditionError

    panic = (
        "Traceback (most recent call last):\n  File x\npyo3_runtime.PanicException: strip-width is "
        "running away (>515.978), item 0 does not seem to fit into the strip\n"
    )
    err = solver_failure(1, panic)
    assert isinstance(err, FailedPreconditionError) and "Traceback" not in str(err)
    other = solver_failure(-9, "Traceback (most recent call last):\n  File y\nMemoryError\n")
    assert isinstance(other, SolverError) and str(other).endswith("MemoryError")


def test_pattern_library_on_sqlite_and_postgresql(store: Store) -> None:
    from atelier.nesting.library import PatternLibrary

    library = PatternLibrary(store)
    first, second = library.new_id(), library.new_id()
    library.add("acme", first, "polo", b"summary-1", b"\x00\x01content")
    library.add("acme", second, "tank", b"summary-2", b"content-2")
    library.add("other", library.new_id(), "skirt", b"s", b"c")
    got = library.get("acme", first)
    assert got is not None and got.content == b"\x00\x01content" and got.name == "polo"
    assert library.get("other", first) is None
    listed = library.list("acme", 0, 10)
    assert {p.pattern_id for p in listed} == {first, second} and all(p.content == b"" for p in listed)
    assert [p.pattern_id for p in library.list("acme", 1, 10)] == [listed[1].pattern_id]
    assert library.delete("acme", first) and not library.delete("acme", first)
    assert not library.delete("other", second) and library.get("acme", second) is not None
    # Migrations are idempotent: a second service on the same store finds the table.
    assert PatternLibrary(store).get("acme", second) is not None
