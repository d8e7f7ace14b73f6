"""Pattern files written to the AAMA/ASTM D6673 layout, for the cases the shared real files lack
(R12 POLYLINE segments, inches given only as 'Units: ENGLISH', a grain line at 45 degrees,
LWPOLYLINE without blocks, a mirror line, drill holes, notches, quantity 2)."""

from __future__ import annotations

import io
import math

import ezdxf

Point = tuple[float, float]

# An asymmetric panel (inches): 10 x 6 with a slanted top, so a mirror image differs from any turn.
PANEL: tuple[Point, ...] = ((0.0, 0.0), (10.0, 0.0), (10.0, 5.0), (6.0, 6.0), (0.0, 4.0))
PANEL_NOTCHES: tuple[Point, ...] = ((5.0, 0.0), (10.0, 2.5))  # on the bottom and right edges
PANEL_DRILL: Point = (3.0, 2.0)
# Half a back (inches), folded along its bottom edge y = 0 (the mirror line).
HALF_BACK: tuple[Point, ...] = ((0.0, 0.0), (12.0, 0.0), (12.0, 5.0), (8.0, 7.0), (0.0, 6.0))


def rotate(points: tuple[Point, ...] | list[Point], angle_deg: float) -> list[Point]:
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return [(c * x - s * y, s * x + c * y) for x, y in points]


def _segments(block: object, ring: list[Point]) -> None:
    """The cut line as AccuMark writes it: one open R12 POLYLINE per edge, end to end."""
    for i, p in enumerate(ring):
        q = ring[(i + 1) % len(ring)]
        block.add_polyline2d([p, q], dxfattribs={"layer": "1"})  # type: ignore[attr-defined]


def r12_graded_inches(grain_deg: float = 45.0, sizes: dict[str, float] | None = None) -> bytes:
    """R12, no $INSUNITS, 'Units: ENGLISH'; a PANEL turned by grain_deg (its grain line too) per
    size, quantity 2 written only in the sample size's block; a HALF_BACK with a mirror line."""
    sizes = sizes or {"S": 0.9, "M": 1.0, "L": 1.1}
    doc = ezdxf.new("R12")
    msp = doc.modelspace()
    for i, text in enumerate(("Style Name: TEST STYLE", "Sample Size: M", "Units: ENGLISH")):
        msp.add_text(text, height=0.2, dxfattribs={"layer": "1"}).set_placement((0, -2 - i))
    for size, k in sizes.items():
        block = doc.blocks.new(name=f"PANEL_{size}")
        ring = rotate([(x * k, y * k) for x, y in PANEL], grain_deg)
        _segments(block, ring)
        if size == "M":  # AccuMark writes notches and piece attributes in the sample size only
            for n in rotate([(x * k, y * k) for x, y in PANEL_NOTCHES], grain_deg):
                block.add_point(n, dxfattribs={"layer": "4"})
            for text in ("Quantity: 2", "CATEGORY: FRONT", "Material: SHELL"):
                block.add_text(text, height=0.2, dxfattribs={"layer": "1"}).set_placement((1, 1))
        (dx, dy) = rotate([(PANEL_DRILL[0] * k, PANEL_DRILL[1] * k)], grain_deg)[0]
        block.add_point((dx, dy), dxfattribs={"layer": "13"})
        g0, g1 = rotate([(2.0 * k, 1.0 * k), (8.0 * k, 1.0 * k)], grain_deg)
        block.add_line(g0, g1, dxfattribs={"layer": "7"})
        for text in ("Piece Name: PANEL", f"SIZE: {size}"):
            block.add_text(text, height=0.2, dxfattribs={"layer": "1"}).set_placement((1, 2))
        msp.add_blockref(f"PANEL_{size}", (0, 0))

        back = doc.blocks.new(name=f"BACK_{size}")
        ring = [(x * k + 20, y * k) for x, y in HALF_BACK]
        _segments(back, ring)
        back.add_line((20.0, 0.0), (20.0 + 12.0 * k, 0.0), dxfattribs={"layer": "6"})  # fold
        back.add_line((22.0, 3.0), (30.0, 3.0), dxfattribs={"layer": "7"})
        back.add_point((20.0, 0.0), dxfattribs={"layer": "4"})  # a notch where the fold meets the cut line
        back.add_point((20.0 + 12.0 * k, 2.0 * k), dxfattribs={"layer": "4"})
        back.add_line((24.0, 1.0), (24.0, 4.0), dxfattribs={"layer": "8"})  # a dart leg
        for text in ("Piece Name: BACK", f"SIZE: {size}", "Quantity: 1"):
            back.add_text(text, height=0.2, dxfattribs={"layer": "1"}).set_placement((21, 2))
        msp.add_blockref(f"BACK_{size}", (0, 0))
    stream = io.StringIO()
    doc.write(stream)
    return stream.getvalue().encode()


def lwpolyline_model_space(extra_text: tuple[str, ...] = ()) -> bytes:
    """R2010 in mm ($INSUNITS 4), no blocks: two closed LWPOLYLINE pieces on layer 1 with their
    text, notches and drill holes in model space beside them."""
    doc = ezdxf.new("R2010")
    doc.header["$INSUNITS"] = 4
    msp = doc.modelspace()
    for n, (x0, name) in enumerate(((0.0, "CUFF"), (400.0, "YOKE"))):
        ring = [(x0, 0.0), (x0 + 250.0, 0.0), (x0 + 250.0, 80.0 + 40 * n), (x0, 80.0)]
        msp.add_lwpolyline(ring, close=True, dxfattribs={"layer": "1"})
        msp.add_point((x0 + 125.0, 0.0), dxfattribs={"layer": "4"})
        msp.add_circle((x0 + 50.0, 40.0), 2.0, dxfattribs={"layer": "13"})
        msp.add_line((x0 + 20.0, 30.0), (x0 + 220.0, 30.0), dxfattribs={"layer": "7"})
        for i, text in enumerate((f"Piece Name: {name}", "Size: M", "Quantity: 1", *extra_text)):
            msp.add_text(text, height=5, dxfattribs={"layer": "1"}).set_placement((x0 + 60, 50 - 7 * i))
    stream = io.StringIO()
    doc.write(stream)
    return stream.getvalue().encode()


def bowtie_dxf() -> bytes:
    """A block whose cut line crosses itself."""
    doc = ezdxf.new("R12")
    block = doc.blocks.new(name="BOW_M")
    block.add_polyline2d([(0, 0), (100, 100), (100, 0), (0, 100)], close=True, dxfattribs={"layer": "1"})
    block.add_text("Piece Name: BOW", dxfattribs={"layer": "1"})
    doc.modelspace().add_blockref("BOW_M", (0, 0))
    stream = io.StringIO()
    doc.write(stream)
    return stream.getvalue().encode()


def sample_only_with_rules() -> tuple[bytes, bytes]:
    """A sample-size-only DXF (mm) whose corners carry grade points ('# n' on layer 2), and the RUL
    file beside it: sizes S M L XL, sample M; rule 1 keeps (0, 0) fixed, rule 2 grows x by 10 mm
    per size, rule 3 grows x by 10 and y by 5, rule 4 grows y by 5."""
    doc = ezdxf.new("R12")
    msp = doc.modelspace()
    for i, text in enumerate(("Style Name: RULED", "Sample Size: M", "Units: METRIC")):
        msp.add_text(text, height=2, dxfattribs={"layer": "1"}).set_placement((0, -10 - 5 * i))
    block = doc.blocks.new(name="PANEL_M")
    ring = [(0.0, 0.0), (100.0, 0.0), (100.0, 50.0), (0.0, 50.0)]
    # The bottom edge has a middle vertex without a rule: it follows by arc length.
    _segments(block, [(0.0, 0.0), (50.0, 0.0), (100.0, 0.0), (100.0, 50.0), (0.0, 50.0)])
    for (x, y), rule in zip(ring, (1, 2, 3, 4), strict=True):
        block.add_point((x, y), dxfattribs={"layer": "2"})
        block.add_text(f"# {rule}", height=1, dxfattribs={"layer": "2"}).set_placement((x, y))
    block.add_point((100.0, 25.0), dxfattribs={"layer": "4"})  # a notch halfway up the right edge
    block.add_line((10.0, 25.0), (90.0, 25.0), dxfattribs={"layer": "7"})
    for text in ("Piece Name: PANEL", "SIZE: M", "Quantity: 1"):
        block.add_text(text, height=2, dxfattribs={"layer": "1"}).set_placement((20, 20))
    msp.add_blockref("PANEL_M", (0, 0))
    stream = io.StringIO()
    doc.write(stream)
    rul = "\n".join(
        [
            "ASTM/D13Proposal 1 Version: D 6673-04",
            "UNITS: METRIC",
            "GRADE RULE TABLE: TEST",
            "NUMBER OF SIZES: 4",
            "SIZE LIST: S M L XL",
            "SAMPLE SIZE: M",
            "RULE: DELTA 1",
            "0,0 0,0 0,0 0,0",
            "RULE: DELTA 2",
            "0,0 10,0 10,0 10,0",
            "RULE: DELTA 3",
            "0,0 10,5 10,5",
            "10,5",
            "RULE: DELTA 4",
            "0,0 0,5 0,5 0,5",
            "END",
        ]
    )
    return stream.getvalue().encode(), rul.encode()


def _write(doc: object, binary: bool = False) -> bytes:
    if binary:
        out = io.BytesIO()
        doc.write(out, fmt="bin")  # type: ignore[attr-defined]
        return out.getvalue()
    stream = io.StringIO()
    doc.write(stream)  # type: ignore[attr-defined]
    return stream.getvalue().encode()


def regraded_vertices(slit: bool = False) -> bytes:
    """Two sizes (mm) of a panel drawn as AccuMark does, one POLYLINE per stretch between turn
    points: (0,0) (100,0) (100,50) (0,50). The sample M has a notch halfway along the bottom and
    one a quarter of the way up the right side (and with slit, a 5 mm slit drawn out and back into
    its top at x = 40). Size L (x 1.2) is drawn with other vertices (its bottom has two extra
    points, its right side one), and no notches or slits."""
    doc = ezdxf.new("R12")
    msp = doc.modelspace()
    for i, text in enumerate(("Style Name: REGRADED", "Sample Size: M", "Units: METRIC")):
        msp.add_text(text, height=2, dxfattribs={"layer": "1"}).set_placement((0, -10 - 5 * i))
    stretches = {
        "M": [[(0, 0), (100, 0)], [(100, 0), (100, 50)], [(100, 50), (0, 50)], [(0, 50), (0, 0)]],
        "L": [
            [(0, 0), (30, 0), (70, 0), (120, 0)],
            [(120, 0), (120, 20), (120, 60)],
            [(120, 60), (0, 60)],
            [(0, 60), (0, 0)],
        ],
    }
    if slit:
        top = [(100, 50), (40, 50)], [(40, 50), (40, 45)], [(40, 45), (40, 50)], [(40, 50), (0, 50)]
        stretches["M"] = [*stretches["M"][:2], *top, stretches["M"][3]]
    for size, lines in stretches.items():
        block = doc.blocks.new(name=f"PANEL_{size}")
        for line in lines:
            block.add_polyline2d(line, dxfattribs={"layer": "1"})
        if size == "M":
            block.add_point((50.0, 0.0), dxfattribs={"layer": "4"})
            block.add_point((100.0, 12.5), dxfattribs={"layer": "4"})
        for text in ("Piece Name: PANEL", f"Size: {size}"):
            block.add_text(text, height=2, dxfattribs={"layer": "1"}).set_placement((20, 20))
        msp.add_blockref(f"PANEL_{size}", (0, 0) if size == "M" else (300, 0))
    return _write(doc)


def crossing_cut_lines() -> bytes:
    """Cut lines (mm) that cross themselves a little, as CAD exports do: TIP has a bottom edge
    drawn 0.5 mm past its corner and back (0.02 mm below itself); LOOP has a 1 x 1 mm loop where
    its right side runs back across itself."""
    doc = ezdxf.new("R12")
    msp = doc.modelspace()
    msp.add_text("Units: METRIC", height=2, dxfattribs={"layer": "1"}).set_placement((0, -10))
    rings = {
        "TIP": [(0, 0), (100.5, 0), (99.9, -0.02), (100, 50), (0, 50)],
        "LOOP": [(0, 0), (100, 0), (100, 50), (101, 51), (99, 51), (100, 50.5), (100, 100), (0, 100)],
    }
    for name, ring in rings.items():
        block = doc.blocks.new(name=f"{name}_M")
        _segments(block, ring)
        for text in (f"Piece Name: {name}", "Size: M"):
            block.add_text(text, height=2, dxfattribs={"layer": "1"}).set_placement((20, 20))
        msp.add_blockref(f"{name}_M", (0, 0))
    return _write(doc)


def nested_blocks(binary: bool = False) -> bytes:
    """Nested INSERTs (mm): model space inserts STYLE_M at (1000, 500) turned 90 degrees; STYLE_M
    (no cut line of its own) inserts FRONT_M at (0, 0) and BACK_M at (300, 0) scaled by 2. FRONT_M
    keeps its cut line in a block of its own (CUT_FRONT, inserted at (10, 0)) beside its notch and
    text. Written as binary DXF when asked."""
    doc = ezdxf.new("R2010")
    doc.header["$INSUNITS"] = 4
    cut = doc.blocks.new(name="CUT_FRONT")
    cut.add_lwpolyline([(0, 0), (200, 0), (200, 100), (0, 100)], close=True, dxfattribs={"layer": "1"})
    front = doc.blocks.new(name="FRONT_M")
    front.add_blockref("CUT_FRONT", (10, 0))
    front.add_point((110, 0), dxfattribs={"layer": "4"})  # halfway along the bottom, after the shift
    front.add_line((30, 50), (190, 50), dxfattribs={"layer": "7"})
    for text in ("Piece Name: FRONT", "Size: M"):
        front.add_text(text, height=2, dxfattribs={"layer": "1"}).set_placement((50, 50))
    back = doc.blocks.new(name="BACK_M")
    back.add_lwpolyline([(0, 0), (100, 0), (100, 40), (0, 40)], close=True, dxfattribs={"layer": "1"})
    back.add_point((100, 20), dxfattribs={"layer": "4"})
    back.add_line((10, 20), (90, 20), dxfattribs={"layer": "7"})
    for text in ("Piece Name: BACK", "Size: M"):
        back.add_text(text, height=2, dxfattribs={"layer": "1"}).set_placement((20, 20))
    style = doc.blocks.new(name="STYLE_M")
    style.add_blockref("FRONT_M", (0, 0))
    style.add_blockref("BACK_M", (300, 0), dxfattribs={"xscale": 2.0, "yscale": 2.0})
    doc.modelspace().add_blockref("STYLE_M", (1000, 500), dxfattribs={"rotation": 90.0})
    return _write(doc, binary)
