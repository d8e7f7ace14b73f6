"""AAMA/ASTM pattern import, on the shared real exports and on files built to the standard."""

from __future__ import annotations

import functools
import io
import math
import os
from pathlib import Path

import ezdxf
import pytest
from shapely.geometry import LineString, Point, Polygon
from shapely.ops import polygonize, unary_union

from atelier.nesting import aama, formats
from atelier.nesting.domain import Grain, Mirror, place_piece, transform
from tests.conftest import SHARED_BENCHMARKS
from tests.nesting.aama_files import (
    HALF_BACK,
    PANEL,
    PANEL_DRILL,
    PANEL_NOTCHES,
    bowtie_dxf,
    lwpolyline_model_space,
    r12_graded_inches,
    rotate,
    sample_only_with_rules,
)

PATTERNS = Path(os.environ.get("ATELIER_SHARED_BENCHMARKS", SHARED_BENCHMARKS)) / "patterns" / "dxf"
INCH = 25.4

# The README's table: pieces x sizes and units.
REAL_FILES = {
    "GMX1016S18_AAMA.DXF": (10, 15, "METRIC"),
    "GMX1016S18_ASTM.DXF": (10, 15, "METRIC"),
    "GMH1006F18_AAMA.DXF": (6, 15, "METRIC"),
    "WM_SLIM_TANK.DXF": (2, 14, "ENGLISH"),
    "simple.DXF": (4, 14, "ENGLISH"),
    "mirrored.DXF": (17, 15, "METRIC"),
    "drill-holes.DXF": (8, 15, "METRIC"),
    "annotation.DXF": (17, 15, "METRIC"),
    "clo-pattern.dxf": (9, 1, "METRIC"),
}


def _real(name: str) -> bytes:
    path = PATTERNS / name
    if not path.exists():
        pytest.skip(f"shared pattern files not found at {path}")
    return path.read_bytes()


def _flat(points: object) -> list[float]:
    return [c for p in points for c in p]  # type: ignore[attr-defined]


@functools.cache
def _imported(name: str) -> formats.ImportedPieces:
    """Each real file read once for the module (reading all nine takes seconds)."""
    return formats.import_dxf(_real(name))


def _on_outline(outline: tuple[tuple[float, float], ...], p: tuple[float, float], tol: float = 1e-6) -> bool:
    return LineString([*outline, outline[0]]).distance(Point(p)) <= tol


@pytest.mark.parametrize("name", list(REAL_FILES))
def test_every_shared_real_file_imports_with_its_pieces_sizes_and_units(name: str) -> None:
    pieces_per_size, sizes, units = REAL_FILES[name]
    imported = _imported(name)
    assert len({p.name for p in imported.pieces}) == pieces_per_size
    assert len(imported.sizes) == sizes and len(imported.pieces) == pieces_per_size * sizes
    assert imported.units == units
    # Units: a garment piece is centimetres to a metre or so, whatever the file's unit was (inch
    # files read as mm would be 25 times too small, mm as inches 25 times too big).
    for p in imported.pieces:
        x0, y0, x1, y1 = Polygon(p.outline_mm).bounds
        assert 15.0 < max(x1 - x0, y1 - y0) < 2000.0, (p.id, x1 - x0, y1 - y0)
    # Every grain line now runs along the roll (x), the piece turned with it.
    with_grain = [p for p in imported.pieces if p.grain_line_mm]
    assert len(with_grain) == len(imported.pieces)
    for p in with_grain:
        (gx0, gy0), (gx1, gy1) = p.grain_line_mm
        assert abs(gy1 - gy0) < 1e-6 * max(1.0, abs(gx1 - gx0)) and p.grain is Grain.WOVEN
    # Notches are kept and lie on the cut line; outlines that are not simple are reported.
    assert sum(len(p.notches_mm) for p in imported.pieces) > 0
    for p in imported.pieces:
        assert all(_on_outline(p.outline_mm, n, 0.05) for n in p.notches_mm), p.id
        if not Polygon(p.outline_mm).is_valid:
            assert any(p.id in w and "not a simple polygon" in w for w in imported.warnings)
    assert any("units" in w for w in imported.warnings)


def test_real_mirror_lines_unfold_and_drill_holes_and_pairs_are_kept() -> None:
    imported = _imported("drill-holes.DXF")
    # Two pieces of this style carry one drill hole in every size.
    assert sum(len(p.drills_mm) for p in imported.pieces) == 30
    assert {p.mirror for p in imported.pieces if p.quantity == 1 and p.mirror is Mirror.PAIR}
    # GMX back: half a back drawn with its fold line on layer 6; the piece is the whole back.
    content = _real("GMX1016S18_AAMA.DXF")
    back = next(p for p in _imported("GMX1016S18_AAMA.DXF").pieces if p.id == "GMX1016S18BK_50")
    doc = ezdxf.read(io.StringIO(content.decode()))
    block = doc.blocks.get("GMX1016S18BK_50")
    lines = [
        LineString([(v.dxf.location.x, v.dxf.location.y) for v in e.vertices])
        for e in block
        if e.dxftype() == "POLYLINE" and e.dxf.layer == "1"
    ]
    half = max(polygonize(unary_union(lines)), key=lambda f: f.area)
    assert Polygon(back.outline_mm).area == pytest.approx(2 * half.area, rel=1e-6)
    fold = next(e for e in block if e.dxftype() == "LINE" and e.dxf.layer == "6")
    assert Polygon(back.outline_mm).bounds[3] - Polygon(back.outline_mm).bounds[1] == pytest.approx(
        2 * (half.bounds[3] - fold.dxf.start.y), rel=1e-6
    )
    # Graded sizes keep the sample size's attributes.
    assert {p.category for p in _imported("GMX1016S18_AAMA.DXF").pieces if p.name == "GMX1016S18BK"} == {
        "BACK"
    }


def test_r12_polylines_in_inches_with_a_45_degree_grain_line() -> None:
    imported = formats.import_dxf(r12_graded_inches(grain_deg=45.0))
    by_id = {p.id: p for p in imported.pieces}
    assert imported.sizes == ["S", "M", "L"] and len(imported.pieces) == 6
    assert imported.units == "ENGLISH" and any("Units: ENGLISH" in w for w in imported.warnings)
    for size, k in (("S", 0.9), ("M", 1.0), ("L", 1.1)):
        panel = by_id[f"PANEL_{size}"]
        # Area from the file's geometry, in mm2.
        assert Polygon(panel.outline_mm).area == pytest.approx(
            Polygon(PANEL).area * (k * INCH) ** 2, rel=1e-9
        )
        # The grain line was at 45 degrees: the piece is turned by -45 so that it runs along x.
        assert panel.outline_mm[0] == pytest.approx((0.0, 0.0), abs=1e-9)
        assert panel.outline_mm[1] == pytest.approx((10.0 * k * INCH, 0.0), abs=1e-6)
        (gx0, gy0), (gx1, gy1) = panel.grain_line_mm
        assert gy0 == pytest.approx(gy1, abs=1e-9) and gx1 - gx0 == pytest.approx(6.0 * k * INCH)
        # Quantity 2 (written in the sample size only) is a left/right pair.
        assert panel.quantity == 1 and panel.mirror is Mirror.PAIR
        assert panel.category == "FRONT" and panel.material == "SHELL"
        # Notches: the sample size's at the same place along the same edge in every size.
        expected = sorted((x * k * INCH, y * k * INCH) for x, y in PANEL_NOTCHES)
        assert _flat(sorted(panel.notches_mm)) == pytest.approx(_flat(expected), abs=1e-6)
        assert _flat(panel.drills_mm) == pytest.approx([PANEL_DRILL[0] * k * INCH, PANEL_DRILL[1] * k * INCH])
        # The back's fold line is unfolded: twice the half, symmetric about the fold.
        back = by_id[f"BACK_{size}"]
        poly = Polygon(back.outline_mm)
        assert poly.area == pytest.approx(2 * Polygon(HALF_BACK).area * (k * INCH) ** 2, rel=1e-9)
        assert poly.bounds[1] == pytest.approx(-poly.bounds[3], abs=1e-6)
        # Its notch at the end of the fold stays once; the side notch is mirrored to the other half.
        assert len(back.notches_mm) == 3 and len(back.internal_lines_mm) == 2
    assert any("unfolded" in w for w in imported.warnings)
    assert any("turned" in w for w in imported.warnings)


def test_notches_and_drills_travel_with_the_piece_through_rotation_and_mirroring() -> None:
    panel = next(p for p in formats.import_dxf(r12_graded_inches()).pieces if p.id == "PANEL_M")
    for mirrored in (False, True):
        for rotation in (0.0, 90.0, 180.0):
            placed = place_piece(panel, 0, mirrored, rotation, 1234.5, 67.8)
            for notch in placed.notches_mm:
                assert _on_outline(placed.outline_mm, notch)
            assert Polygon(placed.outline_mm).contains(Point(placed.drills_mm[0]))
            # The drill hole keeps its distance to every corner (a rigid motion).
            for corner_before, corner_after in zip(panel.outline_mm, placed.outline_mm, strict=True):
                assert math.dist(panel.drills_mm[0], corner_before) == pytest.approx(
                    math.dist(placed.drills_mm[0], corner_after)
                )
    flipped = place_piece(panel, 0, True, 0.0, 0.0, 0.0)
    assert flipped.grain_line_mm[0][1] == pytest.approx(flipped.grain_line_mm[1][1])
    assert transform(panel.notches_mm, 90.0, 0.0, 0.0) == place_piece(panel, 0, False, 90.0, 0, 0).notches_mm


def test_pairs_can_be_same_hand_and_lwpolyline_files_without_blocks_read() -> None:
    same = formats.import_dxf(r12_graded_inches(), pairs=False)
    assert {(p.quantity, p.mirror) for p in same.pieces if p.name == "PANEL"} == {(2, Mirror.NONE)}
    flat = formats.import_dxf(lwpolyline_model_space())
    assert sorted(p.name for p in flat.pieces) == ["CUFF", "YOKE"]
    cuff = next(p for p in flat.pieces if p.name == "CUFF")
    assert Polygon(cuff.outline_mm).area == pytest.approx(250.0 * 80.0)
    assert cuff.notches_mm == ((125.0, 0.0),) and cuff.drills_mm == ((50.0, 40.0),)
    assert cuff.size == "M" and flat.units == "$INSUNITS 4"


def test_import_reports_what_it_cannot_use() -> None:
    bow = formats.import_dxf(bowtie_dxf())
    assert any("BOW_M" in w and "not a simple polygon" in w for w in bow.warnings)
    with pytest.raises(ValueError, match="step:<degrees>"):
        formats.import_dxf(lwpolyline_model_space(("Grain: step",)))
    assert aama.parse_quantity("2,1") == (2, 1) and aama.parse_quantity("x") is None
    assert aama.remove_spikes([(0, 0), (10, 0), (10, 5), (15, 5), (10, 5), (0, 5)], 1e-6) == (
        [(0, 0), (10, 0), (10, 5), (0, 5)],
        [(10, 5)],
    )
    assert rotate([(1.0, 0.0)], 90.0)[0] == pytest.approx((0.0, 1.0))


def test_a_sample_size_file_is_graded_with_the_rul_file_beside_it() -> None:
    dxf, rul = sample_only_with_rules()
    imported = formats.import_dxf(dxf, grade_rules=rul)
    by_size = {p.size: p for p in imported.pieces}
    assert imported.sizes == ["S", "M", "L", "XL"] and set(by_size) == {"S", "M", "L", "XL"}
    # DELTA rules are increments from the size before: S is M less one step, XL two steps more.
    for size, steps in (("S", -1), ("M", 0), ("L", 1), ("XL", 2)):
        piece = by_size[size]
        w, h = 100.0 + 10.0 * steps, 50.0 + 5.0 * steps
        assert Polygon(piece.outline_mm).area == pytest.approx(w * h)
        # The unruled middle vertex of the bottom edge stays halfway along it.
        assert (w / 2, 0.0) in [tuple(round(c, 9) for c in p) for p in piece.outline_mm]
        # The notch stays halfway up the right edge; the grain line along x.
        assert _flat(piece.notches_mm) == pytest.approx([w, h / 2])
        (_, gy0), (_, gy1) = piece.grain_line_mm
        assert gy0 == pytest.approx(gy1)
        assert piece.name == "PANEL" and piece.quantity == 1
    assert any("graded from the RUL" in w for w in imported.warnings)
    with pytest.raises(ValueError, match="numbers for 4 sizes"):
        formats.import_dxf(dxf, grade_rules=rul.replace(b"0,0 0,5 0,5 0,5", b"0,0 0,5"))


def test_piece_text_in_insert_attributes_is_read() -> None:
    doc = ezdxf.new("R2010")
    doc.header["$INSUNITS"] = 4
    block = doc.blocks.new(name="B1")
    block.add_lwpolyline([(0, 0), (200, 0), (200, 100), (0, 100)], close=True, dxfattribs={"layer": "1"})
    block.add_line((20, 50), (180, 50), dxfattribs={"layer": "7"})
    for tag in ("PIECE NAME", "SIZE", "QTY"):
        block.add_attdef(tag, (0, 0))
    ref = doc.modelspace().add_blockref("B1", (1000, 0))
    ref.add_auto_attribs({"PIECE NAME": "YOKE", "SIZE": "L", "QTY": "4"})
    stream = io.StringIO()
    doc.write(stream)
    (yoke,) = formats.import_dxf(stream.getvalue().encode()).pieces
    assert (yoke.name, yoke.size, yoke.quantity, yoke.mirror) == ("YOKE", "L", 2, Mirror.PAIR)
    # The INSERT's placement applies: the piece is where the file shows it.
    assert Polygon(yoke.outline_mm).bounds == pytest.approx((1000.0, 0.0, 1200.0, 100.0))
