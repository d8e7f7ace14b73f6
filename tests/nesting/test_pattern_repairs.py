"""What the pattern reader makes of files that are drawn less tidily: graded sizes drawn with
other vertices (notches by turn points), cut lines that cross themselves a little, nested
blocks, binary DXF. Built files for each case, then the shared real files."""

from __future__ import annotations

from pathlib import Path

import pytest
from shapely.geometry import LineString, Point, Polygon

from atelier.nesting import aama, formats
from atelier.nesting.v1 import nesting_pb2 as pb
from tests.nesting.aama_files import crossing_cut_lines, nested_blocks, regraded_vertices
from tests.nesting.test_cutting_room import PATTERNS, Stubs, nesting, solved  # noqa: F401 (fixture)

REAL = ["GMH1006F18_AAMA.DXF", "GMX1016S18_AAMA.DXF", "annotation.DXF", "mirrored.DXF"]


def _pieces(content: bytes) -> dict[str, object]:
    return {p.id: p for p in formats.import_dxf(content).pieces}


def test_a_size_drawn_with_other_vertices_takes_the_notches_between_the_same_turn_points() -> None:
    imported = formats.import_dxf(regraded_vertices())
    pieces = {p.size: p for p in imported.pieces}
    assert len(pieces["L"].outline_mm) == 7 and len(pieces["M"].outline_mm) == 4
    # L is inserted at x = 300 and 1.2 times M: halfway along its bottom, a quarter up its right side.
    assert sorted(pieces["L"].notches_mm) == [pytest.approx((360.0, 0.0)), pytest.approx((420.0, 15.0))]
    assert any("same share of the cut line between the same two turn points" in w for w in imported.warnings)


def test_a_size_drawn_without_the_sample_slit_takes_it_with_the_notches() -> None:
    pieces = {p.size: p for p in formats.import_dxf(regraded_vertices(slit=True)).pieces}
    # The slit is folded out of the cut line (its base stays as a vertex on the top edge).
    assert (40.0, 45.0) not in pieces["M"].outline_mm and Polygon(pieces["M"].outline_mm).area == 5000.0
    assert sorted(pieces["M"].notches_mm) == [(40.0, 50.0), (50.0, 0.0), (100.0, 12.5)]
    # In L the slit keeps its share of the top, between the same turn points: 60 of its 100 mm
    # from the corner (100, 50) in M, 72 of 120 mm from (420, 60) in L.
    assert sorted(pieces["L"].notches_mm) == [
        pytest.approx((348.0, 60.0)),
        pytest.approx((360.0, 0.0)),
        pytest.approx((420.0, 15.0)),
    ]


def test_turn_points_that_do_not_correspond_give_no_notches_and_say_so() -> None:
    sample = aama.RawPiece("A_M", [(0, 0), (100, 0), (100, 50), (0, 50)], notches=[(50.0, 0.0)])
    sample.turns = [(0, 0), (100, 0), (100, 50), (0, 50)]
    # The same rectangle, its turn points listed from another corner: not the same pairing.
    other = aama.RawPiece("A_L", [(0, 0), (60, 0), (120, 0), (120, 60), (0, 60)])
    other.turns = [(120, 60), (0, 60), (0, 0), (120, 0)]
    assert aama._notches_by_turns(sample, other) is None
    other.turns = [(0, 0), (120, 0), (120, 60), (0, 60)]
    assert aama._notches_by_turns(sample, other) == [pytest.approx((60.0, 0.0))]


def test_small_self_crossings_are_repaired_with_the_area_change_reported() -> None:
    imported = formats.import_dxf(crossing_cut_lines())
    pieces = {p.name: p for p in imported.pieces}
    for piece in pieces.values():
        assert Polygon(piece.outline_mm).is_valid
    # TIP: the bottom edge runs to (100, 0) and no further.
    assert max(x for x, _ in pieces["TIP"].outline_mm) == pytest.approx(100.0)
    assert 100 * 50 - 2.0 < Polygon(pieces["TIP"].outline_mm).area < 100 * 50
    # LOOP: the loop inside the piece is cut off; the sliver outside it stays (0.5 mm2).
    assert Polygon(pieces["LOOP"].outline_mm).area == pytest.approx(100 * 100 + 0.5)
    text = " ".join(imported.warnings)
    assert "turn back on themselves" in text and "largest area change" in text
    assert "'LOOP_M': the cut line crosses itself in a small loop" in text and "-0.25" in text
    # A bow tie is not a small loop: it stays a warning, and CreateMarker refuses it.
    bow = Polygon([(0, 0), (100, 100), (100, 0), (0, 100)])
    assert aama.repair_small_crossing(bow) is None


@pytest.mark.parametrize("binary", [False, True])
def test_nested_blocks_compose_their_transforms(binary: bool) -> None:
    content = nested_blocks(binary)
    assert content.startswith(b"AutoCAD Binary DXF") == binary
    imported = formats.import_dxf(content)
    pieces = {p.name: p for p in imported.pieces}
    assert set(pieces) == {"FRONT", "BACK"} and imported.units == "$INSUNITS 4"

    # STYLE_M is turned 90 degrees and moved to (1000, 500); each piece is then turned back so
    # that its grain line runs along x: a point (x, y) of STYLE_M ends at (500 + x, y - 1000).
    def final(x: float, y: float) -> tuple[float, float]:
        return (500.0 + x, y - 1000.0)

    front = [final(x + 10, y) for x, y in ((0, 0), (200, 0), (200, 100), (0, 100))]
    back = [final(300 + 2 * x, 2 * y) for x, y in ((0, 0), (100, 0), (100, 40), (0, 40))]
    for piece, corners, notch in (
        (pieces["FRONT"], front, final(110, 0)),
        (pieces["BACK"], back, final(500, 40)),
    ):
        assert {(round(x, 6), round(y, 6)) for x, y in piece.outline_mm} == set(corners)
        assert piece.notches_mm == (pytest.approx(notch),)
        (gx0, gy0), (gx1, gy1) = piece.grain_line_mm
        assert abs(gy1 - gy0) < 1e-9 and abs(gx1 - gx0) > 0
    assert any("nested INSERTs" in w for w in imported.warnings)


def test_a_block_that_inserts_itself_is_cut_off_not_followed_forever() -> None:
    import io

    import ezdxf

    doc = ezdxf.new("R2010")
    loop = doc.blocks.new(name="LOOP")
    loop.add_lwpolyline([(0, 0), (50, 0), (50, 50), (0, 50)], close=True, dxfattribs={"layer": "1"})
    loop.add_blockref("LOOP", (10, 10))
    doc.modelspace().add_blockref("LOOP", (0, 0))
    stream = io.StringIO()
    doc.write(stream)
    imported = formats.import_dxf(stream.getvalue().encode(), unit_mm=1.0)
    assert len(imported.pieces) == 1 and Polygon(imported.pieces[0].outline_mm).area == pytest.approx(2500.0)
    assert any("inserts itself" in w for w in imported.warnings)


def test_a_broken_binary_dxf_is_one_short_sentence() -> None:
    content = nested_blocks(True)[:300]
    with pytest.raises(formats.ImportError_) as err:
        formats.import_dxf(content)
    assert str(err.value).startswith("not a readable binary DXF") and str(err.value).isprintable()


@pytest.mark.parametrize("name", REAL)
def test_real_graded_sizes_all_get_their_notches_and_no_cut_line_crosses_itself(name: str) -> None:
    path = Path(PATTERNS) / name
    if not path.exists():
        pytest.skip(f"shared pattern files not found at {path}")
    imported = formats.import_dxf(path.read_bytes())
    assert not [w for w in imported.warnings if "no notches for it" in w]
    assert not [w for w in imported.warnings if "not a simple polygon" in w]
    by_name: dict[str, list[object]] = {}
    for p in imported.pieces:
        assert Polygon(p.outline_mm).is_valid, p.id
        ring = LineString([*p.outline_mm, p.outline_mm[0]])
        assert all(ring.distance(Point(n)) < 0.06 for n in p.notches_mm), p.id
        by_name.setdefault(p.name, []).append(p)
    # Every graded size of a piece has as many notches as its sample size (pieces unfolded about a
    # fold line lose the notches between the fold's ends in every size alike).
    for name_, sizes in by_name.items():
        counts = {len(p.notches_mm) for p in sizes}  # type: ignore[attr-defined]
        assert len(counts) == 1, (name_, counts)


def test_the_real_sleeves_that_crossed_themselves_are_laid(nesting: Stubs) -> None:  # noqa: F811
    path = Path(PATTERNS) / "GMH1006F18_AAMA.DXF"
    if not path.exists():
        pytest.skip(f"shared pattern files not found at {path}")
    stub, _ = nesting
    saved = stub.ImportPieces(
        pb.ImportPiecesRequest(format=pb.FILE_FORMAT_DXF, content=path.read_bytes(), save_pattern=True)
    )
    ratios = {"48": 1, "50": 1, "54": 1}  # before: 'Self-intersection' at CreateMarker for each
    _, marker = solved(
        nesting,
        pb.CreateMarkerRequest(
            pattern_id=saved.pattern_id,
            fabric=pb.Fabric(width_mm=1500.0),
            spacing_mm=2.0,
            time_budget_s=1,
            ratios=[pb.SizeRatio(size=s, count=c) for s, c in ratios.items()],
            piece_names=["GMH1006FLS"],
        ),
    )
    assert {p.size for p in marker.placements} == set(ratios)
    assert all(p.name == "GMH1006FLS" for p in marker.placements) and marker.efficiency > 0.3
