"""Pieces in (DXF, JSON) and markers out (SVG, DXF, HPGL/PLT, JSON). No gRPC here.

DXF in, AAMA/ASTM D6673 style: each piece is a BLOCK inserted in model space; its boundary is
the closed polyline on layer "1" (the AAMA cut line; else the largest closed polyline of the
block); TEXT/MTEXT in the block carry "Piece Name: ...", "Size: ...", "Quantity: ...", and the
Atelier extensions "Grain: woven|fixed|four_way|free|step:<deg>" and "Mirror: none|pair|allowed".
A file without blocks is read as one piece per closed polyline of model space.
Units: ``unit_mm`` when given, else the header's $INSUNITS (mm when unset).
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import ezdxf
from ezdxf import path as ezpath
from shapely.geometry import Polygon

from atelier.nesting.domain import MAX_PLACED_PIECES, FabricSpec, Grain, Marker, Mirror, PieceSpec, Point

# ezdxf $INSUNITS codes -> millimetres.
INSUNITS_MM = {0: 1.0, 1: 25.4, 2: 304.8, 4: 1.0, 5: 10.0, 6: 1000.0}
FLATTEN_MM = 0.5  # chord error when arcs and bulges become vertices


class ImportError_(ValueError):
    """The file cannot be read as pieces (the servicer reports it as INVALID_ARGUMENT on content)."""


@dataclass
class ImportedPieces:
    pieces: list[PieceSpec]
    fabric_width_mm: float = 0.0
    warnings: list[str] = field(default_factory=list)


# -- import -------------------------------------------------------------------------------------


def parse_grain(text: str) -> tuple[Grain, float]:
    value = text.strip().lower().replace("-", "_").replace(" ", "_")
    if value.startswith("step"):
        return Grain.STEP, float(value.split(":", 1)[1])
    return Grain(value), 0.0


def grain_from_orientations(orientations: list[float] | None) -> tuple[Grain, float]:
    """The instance format's allowed_orientations -> a grain rule (None: free rotation)."""
    if orientations is None:
        return Grain.FREE, 0.0
    angles = sorted({round(a % 360.0, 6) for a in orientations}) or [0.0]
    if angles == [0.0]:
        return Grain.FIXED, 0.0
    if angles == [0.0, 180.0]:
        return Grain.WOVEN, 0.0
    if angles == [0.0, 90.0, 180.0, 270.0]:
        return Grain.FOUR_WAY, 0.0
    step = 360.0 / len(angles)
    if all(abs(a - i * step) < 1e-6 for i, a in enumerate(angles)):
        return Grain.STEP, step
    raise ImportError_(
        f"allowed_orientations {orientations} are not a grain rule (0, 0/180, 4-way, free, step)"
    )


def import_json(content: bytes, unit_mm: float = 0.0) -> ImportedPieces:
    """Atelier pieces JSON ({"pieces": [...]}) or the jagua-rs/sparrow instance format."""
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImportError_(f"not JSON: {exc}") from None
    except RecursionError:
        raise ImportError_("not JSON we read: nested too deeply") from None
    scale = unit_mm or 1.0
    try:
        if isinstance(data, dict) and "items" in data and "strip_height" in data:
            return _import_instance(data, scale)
        if not isinstance(data, dict) or "pieces" not in data:
            raise ImportError_('expected {"pieces": [...]} or an instance with "items" and "strip_height"')
        pieces = []
        for i, p in enumerate(_list(data["pieces"], "pieces")):
            p = _object(p, f"pieces[{i}]")
            grain, step = parse_grain(str(p.get("grain", "woven")))
            pieces.append(
                PieceSpec(
                    id=str(p.get("id", f"piece{i}")),
                    outline_mm=_scaled(p.get("outline"), scale, f"pieces[{i}].outline"),
                    quantity=_int(p.get("quantity", 1), f"pieces[{i}].quantity"),
                    grain=grain,
                    rotation_step_deg=_number(p.get("rotation_step_deg", step), f"pieces[{i}].rotation_step_deg"),
                    mirror=Mirror(p.get("mirror", "none")),
                    size=str(p.get("size", "")),
                    name=str(p.get("name", "")),
                )
            )
        return ImportedPieces(pieces, _number(data.get("fabric_width_mm", 0.0), "fabric_width_mm") * scale)
    except ImportError_:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # Whatever shape a hand-written file has, it is the file's fault: say so, never INTERNAL.
        raise ImportError_(f"unexpected structure ({type(exc).__name__}: {exc})") from None


def _import_instance(data: dict[str, Any], scale: float) -> ImportedPieces:
    pieces = []
    for i, item in enumerate(_list(data["items"], "items")):
        item = _object(item, f"items[{i}]")
        grain, step = grain_from_orientations(item.get("allowed_orientations"))
        shape = _object(item.get("shape"), f"items[{i}].shape")
        if shape.get("type", "simple_polygon") != "simple_polygon":
            raise ImportError_(f"item {item.get('id')}: shape type {shape.get('type')!r} is not supported")
        pieces.append(
            PieceSpec(
                id=str(item.get("id", f"item{i}")),
                outline_mm=_scaled(shape.get("data"), scale, f"items[{i}].shape.data"),
                quantity=_int(item.get("demand", 1), f"items[{i}].demand"),
                grain=grain,
                rotation_step_deg=step,
                name=str(item.get("dxf", "")),
            )
        )
    return ImportedPieces(pieces, _number(data["strip_height"], "strip_height") * scale)


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ImportError_(f"{where} must be a list, not {type(value).__name__}")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ImportError_(f"{where} must be an object, not {type(value).__name__}")
    return value


def _number(value: Any, where: str) -> float:
    """A finite JSON number (1e400 parses as infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ImportError_(f"{where} must be a finite number, not {str(value)[:40]}")
    return float(value)


def _int(value: Any, where: str) -> int:
    number = _number(value, where)
    if number != int(number) or not 1 <= number <= MAX_PLACED_PIECES:
        raise ImportError_(f"{where} must be a whole number 1..{MAX_PLACED_PIECES}, not {number:g}")
    return int(number)


def _scaled(points: Any, scale: float, where: str = "outline") -> tuple[Point, ...]:
    out = []
    for k, point in enumerate(_list(points, where)):
        if not isinstance(point, list) or len(point) != 2:
            raise ImportError_(f"{where}[{k}] must be a point [x, y]")
        out.append((_number(point[0], f"{where}[{k}]") * scale, _number(point[1], f"{where}[{k}]") * scale))
    return tuple(out)


TEXT_KEYS = {
    "piece name": "name",
    "piece": "name",
    "size": "size",
    "quantity": "quantity",
    "grain": "grain",
    "mirror": "mirror",
}


def import_dxf(content: bytes, unit_mm: float = 0.0) -> ImportedPieces:
    try:
        doc = ezdxf.read(io.StringIO(content.decode("utf-8", errors="replace")))
    except Exception as exc:  # ezdxf raises several types for broken files
        raise ImportError_(f"not a readable DXF: {exc}") from None
    warnings: list[str] = []
    scale = unit_mm or INSUNITS_MM.get(int(doc.header.get("$INSUNITS", 0)), 0.0)
    if not scale:
        scale = 1.0
        warnings.append(f"$INSUNITS {doc.header.get('$INSUNITS')} is not a length unit; read as mm")
    msp = doc.modelspace()
    inserts = [e for e in msp if e.dxftype() == "INSERT"]
    pieces: list[PieceSpec] = []
    if inserts:
        counts: dict[str, int] = {}
        for insert in inserts:
            counts[insert.dxf.name] = counts.get(insert.dxf.name, 0) + 1
        for block_name, inserted in counts.items():
            block = doc.blocks.get(block_name)
            piece = _piece_from_entities(list(block), block_name, scale, warnings)
            if piece is not None:
                if inserted > 1 and piece.quantity == 1:
                    piece = _with(piece, quantity=inserted)
                pieces.append(piece)
    else:
        for i, entity in enumerate(e for e in msp if _closed_outline(e, 1.0) is not None):
            outline = _closed_outline(entity, scale)
            assert outline is not None
            pieces.append(PieceSpec(id=f"{entity.dxf.layer}-{i}", outline_mm=outline, name=entity.dxf.layer))
    if not pieces:
        raise ImportError_(
            "no closed polylines found (pieces are blocks with a boundary on layer 1, "
            "or closed polylines in model space)"
        )
    return ImportedPieces(pieces, 0.0, warnings)


def _with(piece: PieceSpec, **changes: Any) -> PieceSpec:
    values = {**piece.__dict__, **changes}
    return PieceSpec(**values)


def _closed_outline(entity: Any, scale: float) -> tuple[Point, ...] | None:
    kind = entity.dxftype()
    if kind == "LWPOLYLINE" and not entity.closed:
        return None
    if kind == "POLYLINE" and not entity.is_closed:
        return None
    if kind not in ("LWPOLYLINE", "POLYLINE", "SPLINE", "CIRCLE", "ELLIPSE"):
        return None
    try:
        points = [(v.x * scale, v.y * scale) for v in ezpath.make_path(entity).flattening(FLATTEN_MM / scale)]
    except Exception:
        return None
    if len(points) > 1 and math.dist(points[0], points[-1]) < 1e-9:
        points = points[:-1]
    return tuple(points) if len(points) >= 3 else None


def _piece_from_entities(
    entities: list[Any], block_name: str, scale: float, warnings: list[str]
) -> PieceSpec | None:
    outlines = [(e.dxf.layer, o) for e in entities if (o := _closed_outline(e, scale)) is not None]
    if not outlines:
        warnings.append(f"block {block_name!r} has no closed boundary; skipped")
        return None
    on_layer_1 = [o for layer, o in outlines if layer == "1"]
    candidates = on_layer_1 or [o for _, o in outlines]
    outline = max(candidates, key=lambda o: Polygon(o).area)
    fields: dict[str, str] = {}
    for e in entities:
        if e.dxftype() in ("TEXT", "MTEXT", "ATTDEF"):
            text = (
                e.plain_text()
                if e.dxftype() == "MTEXT"
                else (e.dxf.text if e.dxftype() == "TEXT" else e.dxf.tag)
            )
            m = re.match(r"\s*([A-Za-z ]+?)\s*:\s*(.*?)\s*$", text)
            if m and m.group(1).lower() in TEXT_KEYS:
                fields[TEXT_KEYS[m.group(1).lower()]] = m.group(2)
    grain, step = parse_grain(fields["grain"]) if "grain" in fields else (Grain.WOVEN, 0.0)
    try:
        quantity = int(fields.get("quantity", "1"))
    except ValueError:
        warnings.append(f"block {block_name!r}: quantity {fields['quantity']!r} is not a number; 1 used")
        quantity = 1
    return PieceSpec(
        id=block_name,
        outline_mm=outline,
        quantity=quantity,
        grain=grain,
        rotation_step_deg=step,
        mirror=Mirror(fields.get("mirror", "none").lower()),
        size=fields.get("size", ""),
        name=fields.get("name", block_name),
    )


# -- export -------------------------------------------------------------------------------------

SIZE_COLOURS = [
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
]


def marker_json(marker: Marker) -> dict[str, Any]:
    return {
        "name": marker.name,
        "length_mm": marker.length_mm,
        "width_mm": marker.width_mm,
        "efficiency": marker.efficiency,
        "piece_area_mm2": marker.piece_area_mm2,
        "waste_area_mm2": marker.waste_area_mm2,
        "spacing_mm": marker.spacing_mm,
        "seed": marker.seed,
        "final": marker.final,
        "elapsed_s": marker.elapsed_s,
        "notes": marker.notes,
        "flaws": [list(map(list, f.outline_mm)) for f in (marker.fabric.flaws if marker.fabric else ())],
        "placements": [
            {
                "piece_id": p.piece_id,
                "copy": p.copy,
                "size": p.size,
                "x_mm": p.x_mm,
                "y_mm": p.y_mm,
                "rotation_deg": p.rotation_deg,
                "mirrored": p.mirrored,
                "outline_mm": [list(q) for q in p.outline_mm],
            }
            for p in marker.placements
        ],
    }


def _fabric(marker: Marker) -> FabricSpec:
    return marker.fabric or FabricSpec(width_mm=marker.width_mm)


def export_svg(marker: Marker) -> bytes:
    """The layout to scale (1 user unit = 1 mm), with name, length and efficiency written on it."""
    fabric = _fabric(marker)
    length, width = marker.length_mm, marker.width_mm
    head = max(width * 0.08, 12.0)
    font = head * 0.45
    sizes = sorted({p.size for p in marker.placements})
    colour = {s: SIZE_COLOURS[i % len(SIZE_COLOURS)] for i, s in enumerate(sizes)}
    stroke = max(width, length) / 2000.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 {-head:.3f} {length:.3f} {width + head:.3f}" '
        f'width="{min(2000.0, length):.0f}" height="{min(2000.0, length) * (width + head) / max(length, 1e-9):.0f}">',
        f'<text x="0" y="{-head * 0.35:.3f}" font-family="sans-serif" font-size="{font:.3f}">'
        f"{_esc(marker.name or 'marker')}: length {length:.1f} mm, width {width:.1f} mm, "
        f"efficiency {marker.efficiency * 100:.2f}%, {len(marker.placements)} pieces</text>",
        # y up in marker coordinates: flip so that y = 0 (one selvage) is at the bottom.
        f'<g transform="translate(0 {width:.3f}) scale(1 -1)">',
        f'<rect x="0" y="0" width="{length:.3f}" height="{width:.3f}" fill="#f4f1ea" stroke="black" '
        f'stroke-width="{stroke:.3f}"/>',
    ]
    if fabric.edge_margin_mm > 0 or fabric.end_margin_mm > 0:
        out.append(
            f'<rect x="{fabric.end_margin_mm:.3f}" y="{fabric.edge_margin_mm:.3f}" '
            f'width="{length - 2 * fabric.end_margin_mm:.3f}" height="{width - 2 * fabric.edge_margin_mm:.3f}" '
            f'fill="none" stroke="#888" stroke-dasharray="{stroke * 6:.3f}" stroke-width="{stroke:.3f}"/>'
        )
    for flaw in fabric.flaws:
        out.append(
            f'<polygon points="{_pts(flaw.outline_mm)}" fill="#d62728" fill-opacity="0.5" stroke="#d62728" '
            f'stroke-width="{stroke:.3f}"><title>flaw {_esc(flaw.reason)}</title></polygon>'
        )
    for p in marker.placements:
        label = f"{p.piece_id} #{p.copy}{' (mirrored)' if p.mirrored else ''} {p.size} {p.rotation_deg:g} deg"
        out.append(
            f'<polygon points="{_pts(p.outline_mm)}" fill="{colour[p.size]}" fill-opacity="0.75" '
            f'stroke="black" stroke-width="{stroke:.3f}"><title>{_esc(label)}</title></polygon>'
        )
    out.append("</g></svg>")
    return "\n".join(out).encode()


def _pts(outline: tuple[Point, ...]) -> str:
    return " ".join(f"{x:.3f},{y:.3f}" for x, y in outline)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def export_dxf(marker: Marker) -> bytes:
    """Millimetre DXF: layer FABRIC (the marker rectangle), PIECES (one closed polyline per
    placement), LABELS (piece id, copy, size), FLAWS."""
    doc = ezdxf.new("R2010", units=4)
    for name, colour in (("FABRIC", 8), ("PIECES", 7), ("LABELS", 3), ("FLAWS", 1)):
        doc.layers.add(name, color=colour)
    msp = doc.modelspace()
    L, W = marker.length_mm, marker.width_mm
    msp.add_lwpolyline([(0, 0), (L, 0), (L, W), (0, W)], close=True, dxfattribs={"layer": "FABRIC"})
    for flaw in _fabric(marker).flaws:
        msp.add_lwpolyline(flaw.outline_mm, close=True, dxfattribs={"layer": "FLAWS"})
    for p in marker.placements:
        msp.add_lwpolyline(p.outline_mm, close=True, dxfattribs={"layer": "PIECES"})
        c = Polygon(p.outline_mm).representative_point()
        label = f"{p.piece_id}#{p.copy}{'M' if p.mirrored else ''} {p.size}".strip()
        msp.add_text(label, height=max(W / 200, 2.0), dxfattribs={"layer": "LABELS"}).set_placement(
            (c.x, c.y)
        )
    stream = io.StringIO()
    doc.write(stream)
    return stream.getvalue().encode()


HPGL_UNITS_PER_MM = 40  # 1 plotter unit = 0.025 mm


def export_hpgl(marker: Marker) -> bytes:
    """HPGL/PLT: pen 1 draws each piece outline (closed), pen 2 the fabric edges."""

    def pu(x: float, y: float) -> str:
        return f"{round(x * HPGL_UNITS_PER_MM)},{round(y * HPGL_UNITS_PER_MM)}"

    out = ["IN;", "SP2;"]
    L, W = marker.length_mm, marker.width_mm
    out.append(f"PU{pu(0, 0)};PD{pu(L, 0)},{pu(L, W)},{pu(0, W)},{pu(0, 0)};")
    out.append("SP1;")
    for p in marker.placements:
        pts = [*p.outline_mm, p.outline_mm[0]]
        out.append(f"PU{pu(*pts[0])};PD{','.join(pu(*q) for q in pts[1:])};")
    out.append("PU;SP0;")
    return "\n".join(out).encode()
