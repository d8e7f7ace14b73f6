"""AAMA / ASTM D6673 pattern files (DXF) as CAD systems write them -> pieces. No gRPC here.

What the exporters write (Gerber AccuMark in both flavours, CLO, Optitex, Lectra...):
- DXF R12 (or later), one BLOCK per piece and size inserted in model space, or no blocks at all;
- layers numbered, never named (the AAMA table): 1 boundary (the cut line) and piece text,
  2 turn points, 3 curve points, 4 notches, 5 grade reference, 6 mirror (fold) line, 7 grain line,
  8 internal lines, 9/10 stripe and plaid reference, 11 internal cutouts, 13 drill holes,
  14 sew lines, 15 annotation text, 80-83 T/castle/check/U notches, 84-87 ASTM quality-validation
  copies of layers 1/8/11/14;
- the boundary as one closed polyline (CLO) or as several open POLYLINEs that meet end to end
  (AccuMark: one per segment between turn points);
- piece text "Key: value" on layer 1: Piece Name, Size, Quantity ("n" or the ASTM "n,m"),
  Category, Annotation, Material/Fabric; style text in model space: Style Name, Sample Size,
  Units (ENGLISH = inches, METRIC = mm), Grading Rule Table;
- graded files: every size is a block; attributes (quantity, category...) and the notches are often
  written only in the sample size's block.

Every assumption the reader makes is added to ``warnings`` (the reply and the CLI show them).
The domain's conventions: x runs along the roll, so a piece is turned until its grain line lies
along x; a mirror line is unfolded (the piece cut flat, not on a folded fabric).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ezdxf import path as ezpath
from ezdxf.math import Matrix44, Vec3
from shapely.geometry import LineString, MultiPolygon, Polygon
from shapely.geometry import Point as ShapelyPoint
from shapely.ops import polygonize, unary_union
from shapely.validation import explain_validity, make_valid

from atelier.nesting.domain import MAX_VERTICES, Grain, Mirror, PieceSpec, Point

BOUNDARY, NOTCH, MIRROR_LINE, GRAIN_LINE, INTERNAL, CUTOUT, DRILL, ANNOTATION = (
    "1",
    "4",
    "6",
    "7",
    "8",
    "11",
    "13",
    "15",
)
NOTCH_LAYERS = {NOTCH, "80", "81", "82", "83"}
INTERNAL_LAYERS = {INTERNAL, CUTOUT}
FLATTEN_MM = 0.5  # chord error when arcs, splines and bulges become vertices
JOIN_TOL_MM = 0.05  # boundary segments closer than this meet
# A slit drawn out and back along the cut line: AccuMark's graded sizes come back up to 0.05 mm
# beside where they left (GMH1006F18's fronts, sizes 62-70).
SPIKE_TOL_MM = 0.1
# A self-crossing cut line is repaired only when the loops it makes are this small a share of it.
REPAIR_SHARE = 0.002
INSUNITS_MM = {1: 25.4, 2: 304.8, 4: 1.0, 5: 10.0, 6: 1000.0}
UNITS_TEXT_MM = {"ENGLISH": 25.4, "INCH": 25.4, "INCHES": 25.4, "METRIC": 1.0, "MM": 1.0, "CM": 10.0}

PIECE_KEYS = {
    "piece name": "name",
    "piece": "name",
    "size": "size",
    "quantity": "quantity",
    "qty": "quantity",
    "category": "category",
    "annotation": "annotation",
    "material": "material",
    "fabric": "material",
    "grain": "grain",
    "mirror": "mirror",
    # What the marker DXF (formats.export_dxf) writes per placed piece.
    "piece id": "piece_id",
    "copy": "copy",
    "mirrored": "mirrored",
    "rotation": "rotation",
    "placement": "placement",
}
STYLE_KEYS = {
    "style name": "style",
    "sample size": "sample_size",
    "units": "units",
    "grading rule table": "rule_table",
    "author": "author",
}
# Attributes AccuMark writes only in the sample size's block; the other sizes take them from it.
SHARED_KEYS = ("quantity", "category", "annotation", "material", "grain", "mirror")


class PatternError(ValueError):
    """The file holds no pieces that can be read."""


@dataclass
class RawPiece:
    """One block (piece x size) in file units and coordinates, before scaling and unfolding."""

    key: str
    boundary: list[Point]
    fields: dict[str, str] = field(default_factory=dict)
    notches: list[Point] = field(default_factory=list)
    # Slits drawn into the cut line (out and back on layer 1), read as notches: kept apart from
    # the layer notches, which graded sizes take from the sample size when they have none.
    slits: list[Point] = field(default_factory=list)
    drills: list[Point] = field(default_factory=list)
    internal: list[list[Point]] = field(default_factory=list)
    grain: tuple[Point, Point] | None = None
    mirror: tuple[Point, Point] | None = None
    annotations: list[str] = field(default_factory=list)
    # Grade points: "# n" text at a turn or curve point (layers 2, 3; layer 1 in the ASTM flavour).
    rule_points: list[tuple[Point, int]] = field(default_factory=list)
    # Where the cut line's segments meet (AccuMark writes one POLYLINE per segment between turn
    # points), in ring order from its first vertex: every graded size has the same ones.
    turns: list[Point] = field(default_factory=list)
    # Repairs of the cut line: (area change mm2, largest move mm) each.
    repairs: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Pattern:
    pieces: list[PieceSpec]
    sizes: list[str]
    style: str = ""
    sample_size: str = ""
    unit_mm: float = 1.0
    units: str = ""
    warnings: list[str] = field(default_factory=list)


def read_pattern(
    doc: Any, unit_mm: float = 0.0, pairs: bool = True, rules: GradeRules | None = None
) -> Pattern:
    """An ezdxf document -> graded pieces (mm). pairs: quantity 2 means a left/right pair.
    rules: the RUL file beside the DXF; pieces present in the sample size only are graded with it."""
    warnings: list[str] = []
    msp = doc.modelspace()
    style = _style_fields(e for e in msp if e.dxftype() in ("TEXT", "MTEXT"))
    scale, units = _units(doc, style, unit_mm, warnings)
    inserts = [e for e in msp if e.dxftype() == "INSERT"]
    raws: list[RawPiece] = []
    if inserts:
        seen: dict[str, int] = {}
        for insert in inserts:
            seen[insert.dxf.name] = seen.get(insert.dxf.name, 0) + 1
        first = {e.dxf.name: e for e in reversed(inserts)}
        for name, count in seen.items():
            for key, entities, insert in piece_blocks(doc, first[name], warnings):
                raw = _raw_piece(key, entities, scale, warnings)
                if raw is None:
                    continue
                # Some exporters put the piece text in the INSERT's attributes instead of the block.
                for attrib in insert.attribs:
                    kv = key_value(f"{attrib.dxf.tag}: {attrib.dxf.get('text', '')}")
                    if kv and kv[0] in PIECE_KEYS and kv[1]:
                        raw.fields[PIECE_KEYS[kv[0]]] = kv[1]  # the INSERT's value beats the ATTDEF default
                if count > 1 and "quantity" not in raw.fields:
                    raw.fields["quantity"] = str(count)
                    warnings.append(f"block {name!r} is inserted {count} times: quantity {count}")
                raws.append(raw)
    else:
        raws = _model_space_pieces(list(msp), scale, warnings)
    if not raws:
        raise PatternError(
            "no piece boundary found (AAMA/ASTM: a closed cut line on layer 1 in each piece block, "
            "or closed polylines in model space)"
        )
    if rules is not None:
        raws = grade_with_rules(raws, rules, style.get("sample_size", ""), scale, warnings)
    _share_sample_fields(raws, style.get("sample_size", ""), scale, warnings)
    _report_repairs(raws, warnings)
    pieces = [_piece(raw, scale, pairs, warnings) for raw in raws]
    sizes = list(dict.fromkeys(p.size for p in pieces))
    if rules is not None:  # the rule table's order (small to large), sizes it does not name last
        order = {s: i for i, s in enumerate(rules.sizes)}
        sizes.sort(key=lambda s: order.get(s, len(order)))
    ids = [p.id for p in pieces]
    if len(set(ids)) != len(ids):
        raise PatternError("two pieces share one block name")
    return Pattern(
        pieces=pieces,
        sizes=sizes,
        style=style.get("style", ""),
        sample_size=style.get("sample_size", ""),
        unit_mm=scale,
        units=units,
        warnings=_dedupe(warnings),
    )


def _report_repairs(raws: list[RawPiece], warnings: list[str]) -> None:
    turned = [(r.key, change, moved) for r in raws for change, moved in r.repairs]
    if not turned:
        return
    key, change, _ = max(turned, key=lambda t: abs(t[1]))
    moved = max(t[2] for t in turned)
    warnings.append(
        f"{len(turned)} cut lines turn back on themselves (a line drawn a little past its corner and "
        f"back): the tips are removed, moving the cut line by at most "
        f"{moved:.3f} mm (largest area change {change:+.4f} mm2, {key!r})"
    )


# -- units and text ---------------------------------------------------------------------------------


def _text_of(entity: Any) -> str:
    kind = entity.dxftype()
    if kind == "MTEXT":
        return str(entity.plain_text())
    if kind in ("ATTDEF", "ATTRIB"):
        return f"{entity.dxf.tag}: {entity.dxf.get('text', '')}"
    return str(entity.dxf.get("text", ""))


def key_value(text: str) -> tuple[str, str] | None:
    m = re.match(r"\s*([A-Za-z][A-Za-z ]*?)\s*:\s*(.*?)\s*$", text)
    return (m.group(1).lower(), m.group(2)) if m else None


def _style_fields(texts: Iterable[Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in texts:
        kv = key_value(_text_of(e))
        if kv and kv[0] in STYLE_KEYS:
            out[STYLE_KEYS[kv[0]]] = kv[1]
    return out


def _units(doc: Any, style: dict[str, str], unit_mm: float, warnings: list[str]) -> tuple[float, str]:
    if unit_mm:
        return unit_mm, f"{unit_mm:g} mm (given)"
    insunits = int(doc.header.get("$INSUNITS", 0) or 0)
    text = style.get("units", "").strip().upper()
    if insunits in INSUNITS_MM:
        if text and UNITS_TEXT_MM.get(text, INSUNITS_MM[insunits]) != INSUNITS_MM[insunits]:
            warnings.append(f"$INSUNITS {insunits} and the text 'Units: {text}' disagree; $INSUNITS used")
        return INSUNITS_MM[insunits], f"$INSUNITS {insunits}"
    if text in UNITS_TEXT_MM:
        scale = UNITS_TEXT_MM[text]
        what = "inches" if scale == 25.4 else ("cm" if scale == 10.0 else "mm")
        warnings.append(f"units from the text 'Units: {text}' (no $INSUNITS): coordinates read as {what}")
        return scale, text
    if insunits:
        warnings.append(f"$INSUNITS {insunits} is not a length unit this reader knows; read as mm")
    else:
        warnings.append("the file states no units ($INSUNITS or 'Units:' text); coordinates read as mm")
    return 1.0, "mm (assumed)"


# -- blocks ----------------------------------------------------------------------------------------

MAX_BLOCK_DEPTH = 8  # nested INSERTs followed this deep (a block inserting itself is cut off too)
Placed = tuple[Any, "Matrix44 | None"]  # an entity and the transform from its block to model space


def block_entities(
    doc: Any, insert: Any, matrix: Matrix44, warnings: list[str], path: tuple[str, ...] = ()
) -> list[Placed]:
    """The entities of an INSERT's block with the transform of each to model space, nested
    INSERTs followed (their transforms compose: the inner INSERT's, then the outer's)."""
    name = insert.dxf.name
    block = doc.blocks.get(name)
    if block is None:
        warnings.append(f"block {name!r} is inserted but not defined; skipped")
        return []
    if name in path or len(path) >= MAX_BLOCK_DEPTH:
        warnings.append(
            f"block {name!r} inserts itself, or blocks nest deeper than {MAX_BLOCK_DEPTH}; cut off"
        )
        return []
    out: list[Placed] = []
    for e in block:
        if e.dxftype() == "INSERT":
            # ezdxf's matrices act on row vectors: v @ inner @ outer is inner first.
            out.extend(block_entities(doc, e, e.matrix44() @ matrix, warnings, (*path, name)))
            out.extend((a, matrix) for a in e.attribs)  # in the outer block's coordinates
        else:
            out.append((e, matrix))
    return out


def _has_cut_line(entities: Iterable[Placed]) -> bool:
    return any(e.dxftype() != "INSERT" and str(e.dxf.get("layer", "0")) == BOUNDARY for e, _ in entities)


def piece_blocks(doc: Any, insert: Any, warnings: list[str]) -> list[tuple[str, list[Placed], Any]]:
    """The pieces one model-space INSERT stands for: (key, entities with transforms, the INSERT
    whose attributes carry piece text). A block with its own cut line is one piece, whatever it
    inserts (notch or drill symbols, a cut line kept in a block of its own); a block without one
    that inserts several blocks with cut lines (a style block holding its pieces) is one piece
    per inserted block."""
    block = doc.blocks.get(insert.dxf.name)
    if block is None:
        return []
    matrix = insert.matrix44()
    own = [(e, matrix) for e in block if e.dxftype() != "INSERT"]
    nested = [e for e in block if e.dxftype() == "INSERT"]
    if nested and not _has_cut_line(own):
        parts = [
            (e, block_entities(doc, e, e.matrix44() @ matrix, warnings, (insert.dxf.name,))) for e in nested
        ]
        with_cut = [(e, ents) for e, ents in parts if _has_cut_line(ents)]
        if len(with_cut) > 1:
            warnings.append(
                "blocks that insert several piece blocks (nested INSERTs) are read one piece per block"
            )
            names = [e.dxf.name for e, _ in with_cut]
            return [
                (e.dxf.name if names.count(e.dxf.name) == 1 else f"{e.dxf.name}-{i + 1}", ents + own, e)
                for i, (e, ents) in enumerate(with_cut)
            ]
    entities = block_entities(doc, insert, matrix, warnings)
    if nested:
        warnings.append("nested INSERTs inside a piece block are read as part of the piece")
    return [(insert.dxf.name, entities, insert)]


# -- one block --------------------------------------------------------------------------------------


def _points(entity: Any, matrix: Matrix44 | None, scale: float) -> list[Point] | None:
    """Vertices of a curve entity (bulges, arcs and splines flattened), in file units."""
    kind = entity.dxftype()
    try:
        if kind == "LINE":
            pts = [Vec3(entity.dxf.start), Vec3(entity.dxf.end)]
        elif kind in ("LWPOLYLINE", "POLYLINE", "SPLINE", "CIRCLE", "ELLIPSE", "ARC"):
            if kind == "POLYLINE" and (entity.is_poly_face_mesh or entity.is_polygon_mesh):
                return None
            pts = list(ezpath.make_path(entity).flattening(FLATTEN_MM / scale))
            closed = (kind == "LWPOLYLINE" and entity.closed) or (kind == "POLYLINE" and entity.is_closed)
            if closed and pts and not pts[0].isclose(pts[-1]):
                pts.append(pts[0])
        else:
            return None
    except Exception:  # ezdxf raises several types on degenerate curves
        return None
    if matrix is not None:
        pts = list(matrix.transform_vertices(pts))
    out: list[Point] = []
    for v in pts:
        p = (float(v.x), float(v.y))
        if not out or math.dist(out[-1], p) > 1e-9:
            out.append(p)
    return out


def _location(entity: Any, matrix: Matrix44 | None) -> Point | None:
    kind = entity.dxftype()
    if kind == "POINT":
        v = Vec3(entity.dxf.location)
    elif kind in ("CIRCLE", "ARC"):
        v = Vec3(entity.dxf.center)
    elif kind in ("TEXT", "MTEXT", "ATTDEF", "ATTRIB"):
        v = Vec3(entity.dxf.insert)
    else:
        return None
    if matrix is not None:
        v = matrix.transform(v)
    return (float(v.x), float(v.y))


def _raw_piece(key: str, entities: list[Placed], scale: float, warnings: list[str]) -> RawPiece | None:
    """One piece from its block's entities, each with its transform to model space."""
    curves: list[list[Point]] = []
    raw = RawPiece(key, [])
    for e, matrix in entities:
        layer = str(e.dxf.get("layer", "0"))
        kind = e.dxftype()
        if kind in ("TEXT", "MTEXT", "ATTDEF", "ATTRIB"):
            text = _text_of(e)
            kv = key_value(text)
            rule = re.fullmatch(r"\s*#\s*(\d+)\s*", text)
            if rule and layer in (BOUNDARY, "2", "3") and (loc := _location(e, matrix)) is not None:
                raw.rule_points.append((loc, int(rule.group(1))))
            elif layer == ANNOTATION:
                raw.annotations.append(text.strip())
            elif kv and kv[0] in PIECE_KEYS and kv[1]:
                raw.fields.setdefault(PIECE_KEYS[kv[0]], kv[1])
            continue
        if layer == BOUNDARY:
            pts = _points(e, matrix, scale)
            if pts and len(pts) >= 2:
                curves.append(pts)
        elif layer in NOTCH_LAYERS:
            loc = _location(e, matrix)
            if loc is not None:
                raw.notches.append(loc)
            elif (pts := _points(e, matrix, scale)) is not None:
                raw.notches.append(pts[0])  # a slit notch: resolved onto the cut line below
        elif layer == DRILL:
            loc = _location(e, matrix)
            if loc is not None:
                raw.drills.append(loc)
        elif layer in INTERNAL_LAYERS:
            pts = _points(e, matrix, scale)
            if pts and len(pts) >= 2:
                raw.internal.append(pts)
        elif layer in (GRAIN_LINE, MIRROR_LINE):
            pts = _points(e, matrix, scale)
            if pts and len(pts) >= 2 and math.dist(pts[0], pts[-1]) > 1e-9:
                setattr(raw, "grain" if layer == GRAIN_LINE else "mirror", (pts[0], pts[-1]))
    if not curves:
        # Not AAMA layering: the block's largest closed curve is the boundary.
        for e, matrix in entities:
            pts = _points(e, matrix, scale)
            if pts and len(pts) >= 4 and math.dist(pts[0], pts[-1]) < 1e-9:
                curves.append(pts)
        if not curves:
            warnings.append(f"block {key!r} has no boundary (layer 1 or a closed curve); skipped")
            return None
        curves = [max(curves, key=lambda c: Polygon(c).area if len(c) >= 4 else 0.0)]
        warnings.append(f"block {key!r}: no layer 1 cut line; its largest closed curve is the boundary")
    boundary = join_boundary(curves, JOIN_TOL_MM / scale)
    if boundary is None:
        warnings.append(f"block {key!r}: the layer 1 lines do not close into a cut line; skipped")
        return None
    drawn = boundary
    boundary, slits = remove_spikes(boundary, SPIKE_TOL_MM / scale)
    tips = len(drawn) - len(boundary) - 2 * len(slits)
    if tips:
        # Reported once for the file by read_pattern (how many, the largest change).
        raw.repairs.append(
            (
                (abs(Polygon(boundary).area) - abs(Polygon(drawn).area)) * scale * scale,
                LineString([*drawn, drawn[0]]).hausdorff_distance(LineString([*boundary, boundary[0]]))
                * scale,
            )
        )
    if slits:
        raw.slits = slits
        warnings.append("slits drawn into the cut line (out and back on layer 1) are read as notches")
    raw.boundary = boundary
    ring = LineString([*boundary, boundary[0]])
    if raw.notches:  # a slit notch drawn as a line counts where it meets the cut line
        raw.notches = [_on_ring(ring, p) for p in raw.notches]
    if len(curves) > 1:
        raw.turns = _turns(ring, [p for c in curves for p in (c[0], c[-1])], JOIN_TOL_MM / scale)
    return raw


def _turns(ring: LineString, ends: list[Point], tol: float) -> list[Point]:
    """The segment ends that lie on the cut line, once each, in order along it."""
    at: dict[int, Point] = {}
    step = max(tol, 1e-9)
    for p in ends:
        pt = ShapelyPoint(p)
        if ring.distance(pt) <= tol:
            s = ring.project(pt)
            key = round(s / step)
            if not any(abs(key - k) <= 1 for k in at):
                at[key] = p
    return [at[k] for k in sorted(at)]


def join_boundary(curves: list[list[Point]], tol: float) -> list[Point] | None:
    """Open segments that meet end to end (AccuMark writes one per segment) -> one closed ring,
    in the file's order; a closed curve is taken as is (the largest, if several)."""
    closed = [c for c in curves if len(c) >= 4 and math.dist(c[0], c[-1]) <= tol]
    if closed:
        ring = max(closed, key=lambda c: abs(Polygon(c).area))
        return ring[:-1]
    remaining = list(curves)
    ring = list(remaining.pop(0))
    while remaining and math.dist(ring[0], ring[-1]) > tol:
        end = ring[-1]
        best = min(
            range(len(remaining)),
            key=lambda i: min(math.dist(end, remaining[i][0]), math.dist(end, remaining[i][-1])),
        )
        seg = remaining[best]
        if math.dist(end, seg[0]) <= tol:
            ring.extend(seg[1:])
        elif math.dist(end, seg[-1]) <= tol:
            ring.extend(list(reversed(seg))[1:])
        else:
            break
        remaining.pop(best)
    if math.dist(ring[0], ring[-1]) <= tol and len(ring) >= 4:
        return ring[:-1]
    # Segments out of order or with branches: let shapely find the faces of the line work.
    faces = list(polygonize(unary_union([LineString(c) for c in curves])))
    if not faces:
        return None
    face = max(faces, key=lambda f: f.area)
    return list(face.exterior.coords)[:-1]


def remove_spikes(ring: list[Point], tol: float) -> tuple[list[Point], list[Point]]:
    """A cut line that runs out and back along itself (a slit notch drawn into the boundary, as
    AccuMark writes some) is not a simple polygon: drop the spike, keep its base as a notch."""
    pts = list(ring)
    bases: list[Point] = []
    changed = True
    while changed and len(pts) > 3:
        changed = False
        n = len(pts)
        for i in range(n):
            a, b, c = pts[i - 1], pts[i], pts[(i + 1) % n]
            if math.dist(a, c) <= tol and math.dist(a, b) > tol:
                bases.append(a)
                # b and c go; c coincides with a.
                drop = {i, (i + 1) % n}
                pts = [p for k, p in enumerate(pts) if k not in drop]
                changed = True
                break
            if _retraces(a, b, c, tol):
                # The line turns back on itself at b (a slit drawn out and back with more vertices
                # on the way back): the tip goes; the rest folds up on the next passes.
                pts = [p for k, p in enumerate(pts) if k != i]
                changed = True
                break
    return pts, bases


def _retraces(a: Point, b: Point, c: Point, tol: float) -> bool:
    """Whether a -> b -> c goes out and comes back along the same line (c within tol of it)."""
    ux, uy = b[0] - a[0], b[1] - a[1]
    vx, vy = c[0] - b[0], c[1] - b[1]
    length = math.hypot(ux, uy)
    if length <= tol or (vx == 0.0 and vy == 0.0):
        return False
    return ux * vx + uy * vy < 0 and abs(ux * vy - uy * vx) / length <= tol


def _on_ring(ring: LineString, p: Point) -> Point:
    q = ring.interpolate(ring.project(ShapelyPoint(p)))
    return (q.x, q.y) if math.dist(p, (q.x, q.y)) > 1e-9 else p


def _model_space_pieces(entities: list[Any], scale: float, warnings: list[str]) -> list[RawPiece]:
    """No blocks: each closed cut line (layer 1, else any closed curve) is a piece; text, notches,
    drills and lines belong to the piece that contains them."""
    on_layer_1 = [
        pts for e in entities if e.dxf.get("layer") == BOUNDARY and (pts := _points(e, None, scale))
    ]
    loops: list[list[Point]] = []
    if on_layer_1:
        lines = [LineString(c) for c in on_layer_1 if len(c) >= 2]
        loops = [list(f.exterior.coords)[:-1] for f in polygonize(unary_union(lines))]
    else:
        for e in entities:
            pts = _points(e, None, scale)
            if pts and len(pts) >= 4 and math.dist(pts[0], pts[-1]) < 1e-9:
                loops.append(pts[:-1])
        if loops:
            warnings.append(
                "no layer 1 cut lines and no blocks: every closed curve in model space is a piece"
            )
    polys = [Polygon(loop) for loop in loops]
    # A closed curve inside another (a drill circle, a cutout) is not a piece of its own.
    keep = [
        i
        for i, poly in enumerate(polys)
        if poly.area > 0
        and not any(
            j != i and polys[j].area > poly.area and polys[j].contains(poly.representative_point())
            for j in range(len(polys))
        )
    ]
    raws = [RawPiece(f"piece{n + 1}", loops[i]) for n, i in enumerate(keep)]
    shapes = [polys[i] for i in keep]
    if not raws:
        return []

    def owner(p: Point) -> RawPiece:
        pt = ShapelyPoint(p)
        return raws[min(range(len(shapes)), key=lambda k: shapes[k].distance(pt))]

    for e in entities:
        layer = str(e.dxf.get("layer", "0"))
        kind = e.dxftype()
        if kind in ("TEXT", "MTEXT", "ATTDEF"):
            loc = _location(e, None)
            kv = key_value(_text_of(e))
            if loc is None:
                continue
            if layer == ANNOTATION:
                owner(loc).annotations.append(_text_of(e).strip())
            elif (
                kv
                and kv[0] in PIECE_KEYS
                and shapes[raws.index(owner(loc))].buffer(50.0 / scale).contains(ShapelyPoint(loc))
            ):
                owner(loc).fields.setdefault(PIECE_KEYS[kv[0]], kv[1])
        elif layer in NOTCH_LAYERS or layer == DRILL:
            loc = _location(e, None)
            if loc is None and (pts := _points(e, None, scale)):
                loc = pts[0]
            if loc is not None:
                (owner(loc).notches if layer != DRILL else owner(loc).drills).append(loc)
        elif layer in INTERNAL_LAYERS | {GRAIN_LINE, MIRROR_LINE}:
            pts = _points(e, None, scale)
            if not pts or len(pts) < 2:
                continue
            raw = owner(pts[len(pts) // 2])
            if layer in INTERNAL_LAYERS:
                raw.internal.append(pts)
            elif layer == GRAIN_LINE:
                raw.grain = (pts[0], pts[-1])
            else:
                raw.mirror = (pts[0], pts[-1])
    for raw in raws:
        name = raw.fields.get("name")
        if name:
            raw.key = f"{name}_{raw.fields['size']}" if raw.fields.get("size") else name
        ring = LineString([*raw.boundary, raw.boundary[0]])
        raw.notches = [_on_ring(ring, p) for p in raw.notches]
    keys = [r.key for r in raws]
    for r in raws:
        if keys.count(r.key) > 1:
            r.key = f"{r.key}-{raws.index(r) + 1}"
    return raws


# -- graded sizes -----------------------------------------------------------------------------------


def _share_sample_fields(raws: list[RawPiece], sample_size: str, scale: float, warnings: list[str]) -> None:
    """Graded files write quantity, category... and the notches once, in the sample size's block:
    the other sizes of the same piece take them (notches at the same place along the same
    boundary segment, which grading keeps: every size has the same vertices)."""
    groups: dict[str, list[RawPiece]] = defaultdict(list)
    for raw in raws:
        groups[raw.fields.get("name", raw.key)].append(raw)
    shared_fields = shared_notches = by_turns = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        sample = next((r for r in members if r.fields.get("size") == sample_size), None) or max(
            members, key=lambda r: (len(r.fields), len(r.notches))
        )
        for raw in members:
            if raw is sample:
                continue
            for k in SHARED_KEYS:
                if k in sample.fields and k not in raw.fields:
                    raw.fields[k] = sample.fields[k]
                    shared_fields += 1
            bare = not raw.notches and not raw.slits
            if sample.notches and not raw.notches:
                moved = _transfer_notches(sample, raw, JOIN_TOL_MM / scale)
                if moved is None:
                    warnings.append(
                        f"block {raw.key!r} has no notches, and neither its cut line's vertices nor its "
                        f"turn points match the sample size's ({sample.key!r}); no notches for it"
                    )
                else:
                    raw.notches = moved
                    shared_notches += 1
                    by_turns += len(raw.boundary) != len(sample.boundary)
            if sample.slits and bare:
                # A size drawn without the sample's slits (and no notches at all) takes them as
                # notches at the same places.
                raw.slits = (
                    _transfer_notches(replace(sample, notches=sample.slits), raw, JOIN_TOL_MM / scale) or []
                )
            if sample.annotations and not raw.annotations:
                raw.annotations = list(sample.annotations)
    if shared_fields:
        warnings.append(
            "graded sizes without quantity/category/annotation/material text take the sample size's "
            f"({shared_fields} values)"
        )
    if shared_notches:
        warnings.append(
            f"{shared_notches} graded blocks have no notches of their own: the sample size's notches are "
            "placed at the same position along the same cut-line segment"
            + (
                f" ({by_turns} drawn with other vertices: at the same share of the cut line between the "
                "same two turn points)"
                if by_turns
                else ""
            )
        )


def _transfer_notches(sample: RawPiece, target: RawPiece, tol: float) -> list[Point] | None:
    a, b = sample.boundary, target.boundary
    if len(a) != len(b):
        return _notches_by_turns(sample, target)
    out = []
    n = len(a)
    for p in sample.notches:
        # The segment of the sample's cut line the notch lies on, and how far along it.
        _, t, best = min((*_seg_param(p, a[i], a[(i + 1) % n]), i) for i in range(n))
        (x0, y0), (x1, y1) = b[best], b[(best + 1) % n]
        out.append((x0 + t * (x1 - x0), y0 + t * (y1 - y0)))
    return out


def _notches_by_turns(sample: RawPiece, target: RawPiece) -> list[Point] | None:
    """A graded size drawn with other vertices (the grader smoothed a curve) still has the same
    turn points: a notch keeps its relative position between the two turn points around it
    (the share of that stretch of cut line, by arc length). None when the turn points do not
    correspond (other counts, or not the same places on the piece)."""
    # A slit's base is where segments meet too, but sizes drawn without the slit lack it.
    ta = [t for t in sample.turns if all(math.dist(t, b) > 1e-6 for b in sample.slits)]
    tb = [t for t in target.turns if all(math.dist(t, b) > 1e-6 for b in target.slits)]
    if len(ta) < 2 or len(ta) != len(tb):
        return None
    # The same turn points, moved by grading: about their centroids, pairing them in order must
    # fit better than any other cyclic pairing (a ring started at another turn point would not).
    ca, cb = _centred(ta), _centred(tb)
    n = len(ca)

    def misfit(shift: int) -> float:
        return sum(math.dist(ca[i], cb[(i + shift) % n]) ** 2 for i in range(n))

    if min(range(n), key=misfit) != 0:
        return None
    ring_a = LineString([*sample.boundary, sample.boundary[0]])
    ring_b = LineString([*target.boundary, target.boundary[0]])
    sa = [ring_a.project(ShapelyPoint(p)) for p in ta]
    sb = [ring_b.project(ShapelyPoint(p)) for p in tb]
    if sa != sorted(sa) or sb != sorted(sb):
        return None
    la, lb = ring_a.length, ring_b.length
    out = []
    for p in sample.notches:
        s = ring_a.project(ShapelyPoint(p))
        # The stretch [turn k, turn k+1) holding s; the last one wraps past the ring's start.
        k = max((i for i in range(n) if sa[i] <= s), default=n - 1)
        start_a, end_a = sa[k], sa[(k + 1) % n] + (la if k == n - 1 else 0.0)
        start_b, end_b = sb[k], sb[(k + 1) % n] + (lb if k == n - 1 else 0.0)
        s_in = s if s >= start_a else s + la
        f = (s_in - start_a) / (end_a - start_a) if end_a > start_a else 0.0
        q = ring_b.interpolate((start_b + f * (end_b - start_b)) % lb)
        out.append((q.x, q.y))
    return out


def _centred(points: Sequence[Point]) -> list[Point]:
    cx = sum(p[0] for p in points) / len(points)
    cy = sum(p[1] for p in points) / len(points)
    return [(x - cx, y - cy) for x, y in points]


def _seg_param(p: Point, a: Point, b: Point) -> tuple[float, float]:
    """(distance from p to the segment ab, how far along ab its nearest point lies, 0..1)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    d2 = dx * dx + dy * dy
    t = 0.0 if d2 == 0 else max(0.0, min(1.0, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / d2))
    return math.hypot(p[0] - a[0] - t * dx, p[1] - a[1] - t * dy), t


# -- grade rules (the RUL file beside a DXF) --------------------------------------------------------


@dataclass
class GradeRules:
    """An AAMA/ASTM RUL grade-rule table: per rule number, an (x, y) delta for each size."""

    sizes: list[str]
    sample_size: str
    unit_mm: float
    deltas: dict[int, list[Point]]
    name: str = ""


def read_rul(content: bytes) -> GradeRules:
    """Reads the RUL text: 'NUMBER OF SIZES:', 'SIZE LIST:', 'SAMPLE SIZE:', 'UNITS:', then
    'RULE: DELTA n' blocks of one 'x,y' pair per size (in SIZE LIST order), 'END'."""
    text = content.decode("utf-8", errors="replace")
    sizes: list[str] = []
    sample, units, name = "", "", ""
    deltas: dict[int, list[float]] = {}
    current: int | None = None
    for line in text.splitlines():
        kv = key_value(line)
        key = kv[0] if kv else ""
        if key == "rule":
            m = re.search(r"(\d+)\s*$", kv[1]) if kv else None
            if not m or "DELTA" not in kv[1].upper():  # type: ignore[index]
                raise PatternError(f"RUL: only DELTA rules are read, got {line.strip()[:60]!r}")
            current = int(m.group(1))
            deltas[current] = []
        elif key == "size list" and kv:
            sizes = kv[1].split()
        elif key == "sample size" and kv:
            sample = kv[1].strip()
        elif key == "units" and kv:
            units = kv[1].strip().upper()
        elif key == "grade rule table" and kv:
            name = kv[1].strip()
        elif line.strip().upper() == "END":
            current = None
        elif current is not None:
            try:
                deltas[current].extend(float(v) for v in re.split(r"[,\s]+", line.strip()) if v)
            except ValueError:
                raise PatternError(f"RUL rule {current}: {line.strip()[:60]!r} is not numbers") from None
    if not sizes or sample not in sizes:
        raise PatternError("RUL: needs a SIZE LIST and a SAMPLE SIZE from it")
    out: dict[int, list[Point]] = {}
    for rule, values in deltas.items():
        if len(values) != 2 * len(sizes):
            raise PatternError(f"RUL rule {rule}: {len(values)} numbers for {len(sizes)} sizes (x,y each)")
        out[rule] = list(zip(values[::2], values[1::2], strict=True))
    return GradeRules(sizes, sample, UNITS_TEXT_MM.get(units, 0.0), out, name)


def rule_offset(rules: GradeRules, rule: int, size: str) -> Point:
    """Where a grade point of the sample size moves in `size`: DELTA rules are incremental (each
    size's pair is its change from the size before it), summed from the sample size outwards."""
    deltas = rules.deltas[rule]
    s, t = rules.sizes.index(rules.sample_size), rules.sizes.index(size)
    if t >= s:
        picked = deltas[s + 1 : t + 1]
        sign = 1.0
    else:
        picked = deltas[t + 1 : s + 1]
        sign = -1.0
    return (sign * sum(d[0] for d in picked), sign * sum(d[1] for d in picked))


def grade_with_rules(
    raws: list[RawPiece], rules: GradeRules, sample_size: str, scale: float, warnings: list[str]
) -> list[RawPiece]:
    """Pieces the DXF holds in the sample size only become one piece per size of the rule table:
    grade points move by their rule, cut-line vertices between them by arc-length interpolation,
    notches stay at the same place along the same segment, drills and lines move with the
    nearest grade points (inverse-distance weights)."""
    sample = sample_size or rules.sample_size
    if sample != rules.sample_size:
        warnings.append(
            f"the DXF's sample size {sample!r} is not the RUL's {rules.sample_size!r}; the RUL's used"
        )
    factor = (rules.unit_mm / scale) if rules.unit_mm else 1.0
    if not rules.unit_mm:
        warnings.append("the RUL file states no units; its deltas are read in the DXF's units")
    by_name: dict[str, list[RawPiece]] = defaultdict(list)
    for raw in raws:
        by_name[raw.fields.get("name", raw.key)].append(raw)
    out: list[RawPiece] = []
    graded = 0
    for name, members in by_name.items():
        out.extend(members)
        if len(members) != 1 or members[0].fields.get("size", rules.sample_size) != rules.sample_size:
            continue
        base = members[0]
        base.fields.setdefault("size", rules.sample_size)
        missing = sorted({r for _, r in base.rule_points} - set(rules.deltas))
        if missing:
            warnings.append(f"piece {name!r}: rules {missing} are not in the RUL file; not graded")
            continue
        if not base.rule_points:
            warnings.append(f"piece {name!r} has no grade points ('# n' text); not graded")
            continue
        for size in rules.sizes:
            if size == rules.sample_size:
                continue
            out.append(_graded(base, name, size, rules, factor))
        graded += 1
    if graded:
        warnings.append(
            f"{graded} pieces graded from the RUL file (DELTA rules read as increments from the size "
            "before; points between grade points follow by arc length)"
        )
    return out


def _graded(base: RawPiece, name: str, size: str, rules: GradeRules, factor: float) -> RawPiece:
    points = [(p, rule_offset(rules, r, size)) for p, r in base.rule_points]
    points = [(p, (dx * factor, dy * factor)) for p, (dx, dy) in points]
    ring = base.boundary
    n = len(ring)
    tol = max(1e-6, 1e-4 * max(math.dist(ring[0], q) for q in ring))
    known: dict[int, Point] = {}
    for i, v in enumerate(ring):
        near = [off for p, off in points if math.dist(p, v) <= tol]
        if near:
            known[i] = near[0]
    offsets: list[Point] = []
    if not known:
        offsets = [_idw(v, points) for v in ring]
    else:
        anchors = sorted(known)
        lengths = [math.dist(ring[i], ring[(i + 1) % n]) for i in range(n)]
        for i in range(n):
            if i in known:
                offsets.append(known[i])
                continue
            prev = max((a for a in anchors if a < i), default=anchors[-1])
            nxt = min((a for a in anchors if a > i), default=anchors[0])
            before = sum(lengths[k % n] for k in range(prev, i if i > prev else i + n))
            after = sum(lengths[k % n] for k in range(i, nxt if nxt > i else nxt + n))
            t = before / (before + after) if before + after > 0 else 0.0
            (ax, ay), (bx, by) = known[prev], known[nxt]
            offsets.append((ax + t * (bx - ax), ay + t * (by - ay)))
    boundary = [(x + dx, y + dy) for (x, y), (dx, dy) in zip(ring, offsets, strict=True)]

    def moved(pts: Sequence[Point]) -> list[Point]:
        return [(x + o[0], y + o[1]) for (x, y) in pts for o in [_idw((x, y), points)]]

    raw = RawPiece(
        key=f"{name}_{size}",
        boundary=boundary,
        fields={**base.fields, "size": size},
        drills=moved(base.drills),
        internal=[moved(line) for line in base.internal],
        grain=tuple(moved(base.grain)) if base.grain else None,  # type: ignore[arg-type]
        mirror=tuple(moved(base.mirror)) if base.mirror else None,  # type: ignore[arg-type]
        annotations=list(base.annotations),
    )
    raw.notches = _transfer_notches(base, raw, 0.0) or []
    raw.slits = _transfer_notches(replace(base, notches=base.slits), raw, 0.0) or []
    return raw


def _idw(p: Point, points: list[tuple[Point, Point]]) -> Point:
    weights = []
    for q, off in points:
        d = math.dist(p, q)
        if d < 1e-9:
            return off
        weights.append((1.0 / (d * d), off))
    total = sum(w for w, _ in weights)
    return (sum(w * o[0] for w, o in weights) / total, sum(w * o[1] for w, o in weights) / total)


# -- raw piece -> piece spec ------------------------------------------------------------------------


def _reflect(points: Sequence[Point], line: tuple[Point, Point]) -> list[Point]:
    (x0, y0), (x1, y1) = line
    dx, dy = x1 - x0, y1 - y0
    d2 = dx * dx + dy * dy
    out = []
    for x, y in points:
        t = ((x - x0) * dx + (y - y0) * dy) / d2
        fx, fy = x0 + t * dx, y0 + t * dy
        out.append((2 * fx - x, 2 * fy - y))
    return out


def _rotate(points: Sequence[Point], angle_deg: float) -> tuple[Point, ...]:
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return tuple((c * x - s * y, s * x + c * y) for x, y in points)


def _scaled(points: Sequence[Point], scale: float) -> list[Point]:
    return [(x * scale, y * scale) for x, y in points]


def parse_quantity(text: str) -> tuple[int, int] | None:
    """'2' -> (2, 0); the ASTM '2,1' -> (2, 1): copies, and how many of them are flipped."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(float(p)) for p in parts if p]
    except ValueError:
        return None
    if not values or values[0] < 0:
        return None
    return values[0], (values[1] if len(values) > 1 else 0)


def parse_grain(text: str) -> tuple[Grain, float]:
    """Atelier's 'Grain:' text: woven|fixed|four_way|free|step:<deg>."""
    value = text.strip().lower().replace("-", "_").replace(" ", "_")
    if value.startswith("step"):
        _, sep, step = value.partition(":")
        try:
            angle = float(step)
        except ValueError:
            raise ValueError(f"grain {text!r}: write step:<degrees>, e.g. step:45") from None
        if not sep or not math.isfinite(angle) or angle <= 0:
            raise ValueError(f"grain {text!r}: write step:<degrees>, e.g. step:45")
        return Grain.STEP, angle
    try:
        return Grain(value), 0.0
    except ValueError:
        raise ValueError(f"grain {text!r} is not one of woven, fixed, four_way, free, step:<deg>") from None


def _piece(raw: RawPiece, scale: float, pairs: bool, warnings: list[str]) -> PieceSpec:
    name = raw.fields.get("name") or raw.key
    boundary = _scaled(raw.boundary, scale)
    notches = _scaled(raw.notches + raw.slits, scale)
    drills = _scaled(raw.drills, scale)
    internal = [_scaled(line, scale) for line in raw.internal]
    grain_line = _scaled(raw.grain, scale) if raw.grain else []
    poly = Polygon(boundary)
    if not poly.is_valid:
        repaired = repair_small_crossing(poly)
        if repaired is None:
            warnings.append(
                f"piece {raw.key!r}: the cut line is not a simple polygon ({explain_validity(poly)}); "
                "a marker request will reject it"
            )
        else:
            drawn_area = poly.area
            poly = repaired
            boundary = _clean(list(poly.exterior.coords)[:-1])
            warnings.append(
                f"piece {raw.key!r}: the cut line crosses itself in a small loop; the loop is cut off "
                f"(area {abs(drawn_area):.1f} -> {poly.area:.1f} mm2, {poly.area - abs(drawn_area):+.2f})"
            )
    if raw.mirror is not None:
        line = (
            (raw.mirror[0][0] * scale, raw.mirror[0][1] * scale),
            (raw.mirror[1][0] * scale, raw.mirror[1][1] * scale),
        )
        other = Polygon(_reflect(boundary, line))
        whole = unary_union([poly.buffer(0), other.buffer(0)]) if poly.is_valid else None
        if isinstance(whole, MultiPolygon):
            whole = unary_union([whole.buffer(JOIN_TOL_MM, join_style="mitre")]).buffer(
                -JOIN_TOL_MM, join_style="mitre"
            )
        if isinstance(whole, Polygon) and whole.area > poly.area * 1.5:
            boundary = _clean(list(whole.exterior.coords)[:-1])
            on_fold = LineString(line)
            notches += [p for p in _reflect(notches, line) if on_fold.distance(ShapelyPoint(p)) > 0.01]
            # A notch at an end of the fold is where the centre line meets the unfolded cut line:
            # kept, once (its mirror image is itself). A notch along the fold, between its ends,
            # is inside the unfolded piece: a notch is a cut into the edge, and that edge is gone
            # when the piece is cut flat, so there is nothing to cut (a drill there would hole
            # the garment's centre line).
            ring = LineString([*boundary, boundary[0]])
            inside = [p for p in notches if ring.distance(ShapelyPoint(p)) > JOIN_TOL_MM]
            if inside:
                notches = [p for p in notches if p not in inside]
                warnings.append(
                    "notches on a fold line between its ends fall inside the unfolded piece and are "
                    "dropped (notches at the fold's ends are kept)"
                )
            drills += [p for p in _reflect(drills, line) if on_fold.distance(ShapelyPoint(p)) > 0.01]
            internal += [_reflect(seg, line) for seg in internal]
            warnings.append(
                "pieces with a mirror line (layer 6) are unfolded about it and cut flat (not on a fold)"
            )
        else:
            warnings.append(
                f"piece {raw.key!r}: unfolding about its mirror line gave no single piece; kept as drawn"
            )
    grain, step = Grain.WOVEN, 0.0
    if "grain" in raw.fields:
        grain, step = parse_grain(raw.fields["grain"])
    angle = 0.0
    if grain_line:
        (gx0, gy0), (gx1, gy1) = grain_line
        angle = math.degrees(math.atan2(gy1 - gy0, gx1 - gx0))
        # Turn the piece so that its grain line runs along the roll (x); either direction will do
        # for woven grain, so take the smaller turn.
        turn = -angle
        turn = (turn + 90.0) % 180.0 - 90.0
        if abs(turn) > 1e-6:
            boundary, notches, drills = (list(_rotate(pts, turn)) for pts in (boundary, notches, drills))
            internal = [list(_rotate(seg, turn)) for seg in internal]
            grain_line = list(_rotate(grain_line, turn))
            warnings.append(
                "pieces whose grain line (layer 7) is not along x are turned so that it runs along the roll"
            )
    elif "grain" not in raw.fields:
        warnings.append("pieces without a grain line (layer 7) keep their grain along x as drawn")
    if len(boundary) > MAX_VERTICES:
        simplified = Polygon(boundary).simplify(0.05, preserve_topology=True)
        boundary = list(simplified.exterior.coords)[:-1]
        warnings.append(f"piece {raw.key!r}: cut line simplified to {len(boundary)} vertices (0.05 mm)")
    quantity, mirror = 1, Mirror.NONE
    if "mirror" in raw.fields:
        mirror = Mirror(raw.fields["mirror"].strip().lower())
    q = parse_quantity(raw.fields.get("quantity", "1"))
    if q is None:
        warnings.append(f"piece {raw.key!r}: quantity {raw.fields['quantity']!r} is not a number; 1 used")
        q = (1, 0)
    total, flipped = q
    # AccuMark writes the cutting instruction in the annotation ("2XFABRIC", "1XFABRIC 1X
    # INTERLIN") and often leaves Quantity at 0 or 1: a larger first count there is the pieces
    # per garment (two sleeves, two cuffs).
    count = re.match(r"\s*(\d+)\s*X\s*[A-Za-z]", raw.fields.get("annotation", ""))
    if count and int(count.group(1)) > total:
        total = int(count.group(1))
        warnings.append(
            "pieces whose annotation asks for more than their quantity (e.g. '2XFABRIC' with "
            "Quantity 0 or 1) are cut as the annotation says"
        )
    elif total == 0:
        total = 1
        warnings.append("pieces with quantity 0 (not set in the CAD system) are cut once")
    quantity = total
    if "mirror" not in raw.fields and pairs and total >= 2 and total % 2 == 0 and flipped in (0, total // 2):
        quantity, mirror = total // 2, Mirror.PAIR
        warnings.append(
            "pieces with an even quantity are cut as left/right pairs (half as drawn, half mirrored); "
            "ask for same-hand pieces to keep them all as drawn"
        )
    elif flipped and "mirror" not in raw.fields:
        mirror = Mirror.ALLOWED
        warnings.append(
            f"piece {raw.key!r}: quantity {total} with {flipped} flipped is cut with half mirrored"
        )
    if raw.annotations:
        annotation = "; ".join(a for a in [raw.fields.get("annotation", ""), *raw.annotations] if a)
    else:
        annotation = raw.fields.get("annotation", "")
    return PieceSpec(
        id=raw.key,
        outline_mm=tuple(boundary),
        quantity=quantity,
        grain=grain,
        rotation_step_deg=step,
        mirror=mirror,
        size=raw.fields.get("size", ""),
        name=name,
        notches_mm=tuple(notches),
        drills_mm=tuple(drills),
        internal_lines_mm=tuple(tuple(seg) for seg in internal),
        grain_line_mm=tuple(grain_line),
        category=raw.fields.get("category", ""),
        material=raw.fields.get("material", ""),
        annotation=annotation,
    )


def repair_small_crossing(poly: Polygon) -> Polygon | None:
    """A cut line that crosses itself in a small loop (a curve point dragged across its
    neighbour): shapely's make_valid splits it into faces; when everything but the largest face
    is under REPAIR_SHARE of the piece's area, the largest face is the piece. None otherwise (a
    figure eight, a bow tie: the file is wrong and says so)."""
    fixed = make_valid(poly)
    faces = [g for g in getattr(fixed, "geoms", [fixed]) if isinstance(g, Polygon) and g.area > 0]
    if not faces:
        return None
    main = max(faces, key=lambda g: g.area)
    rest = sum(g.area for g in faces) - main.area
    if rest > REPAIR_SHARE * main.area or abs(abs(poly.area) - main.area) > REPAIR_SHARE * main.area:
        return None
    return Polygon(main.exterior.coords)


def _clean(points: list[Point]) -> list[Point]:
    out: list[Point] = []
    for p in points:
        if not out or math.dist(out[-1], p) > 1e-9:
            out.append(p)
    if len(out) > 1 and math.dist(out[0], out[-1]) <= 1e-9:
        out.pop()
    return out


def _dedupe(warnings: list[str]) -> list[str]:
    """A rule applied to many pieces is said once, with how often."""
    counts: dict[str, int] = {}
    for w in warnings:
        counts[w] = counts.get(w, 0) + 1
    return [w if n == 1 else f"{w} ({n} pieces)" for w, n in counts.items()]
