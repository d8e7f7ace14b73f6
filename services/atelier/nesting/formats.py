"""Pieces in (DXF, JSON) and markers out (SVG, DXF, HPGL/PLT, G-code, HTML report, JSON). No gRPC.

DXF in is an AAMA/ASTM D6673 pattern file as CAD systems write it (see :mod:`atelier.nesting.aama`);
DXF out is an AAMA-layered marker file that :func:`import_marker_dxf` reads back."""

from __future__ import annotations

import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

import ezdxf
from ezdxf.document import Drawing
from ezdxf.lldxf.tagger import binary_tags_loader
from shapely.errors import GEOSException
from shapely.geometry import Point as ShapelyPoint
from shapely.geometry import Polygon

from atelier.nesting import aama
from atelier.nesting.aama import parse_grain
from atelier.nesting.domain import (
    MAX_PLACED_PIECES,
    FabricSpec,
    Grain,
    Marker,
    Mirror,
    PieceSpec,
    PlacedPiece,
    Point,
)


class ImportError_(ValueError):
    """The file cannot be read as pieces (the servicer reports it as INVALID_ARGUMENT on content)."""


@dataclass
class ImportedPieces:
    pieces: list[PieceSpec]
    fabric_width_mm: float = 0.0
    warnings: list[str] = field(default_factory=list)
    sizes: list[str] = field(default_factory=list)
    style: str = ""
    sample_size: str = ""
    units: str = ""


log = logging.getLogger(__name__)


# -- import -------------------------------------------------------------------------------------


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
                    rotation_step_deg=_number(
                        p.get("rotation_step_deg", step), f"pieces[{i}].rotation_step_deg"
                    ),
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


def import_dxf(
    content: bytes, unit_mm: float = 0.0, pairs: bool = True, grade_rules: bytes = b""
) -> ImportedPieces:
    """An AAMA/ASTM D6673 pattern file (or any DXF with closed outlines) -> pieces in mm;
    grade_rules: the RUL file beside it (pieces in the sample size only are graded with it)."""
    doc = _read_doc(content)
    try:
        rules = aama.read_rul(grade_rules) if grade_rules else None
        pattern = aama.read_pattern(doc, unit_mm, pairs, rules)
    except aama.PatternError as exc:
        raise ImportError_(str(exc)) from None
    except (ArithmeticError, AttributeError, IndexError, TypeError, GEOSException) as exc:
        # Geometry or entities this reader did not foresee: the caller's file, said as such (the
        # traceback goes to the log, so the reader can learn the case).
        log.warning("a DXF pattern could not be read", exc_info=True)
        raise ImportError_(
            f"the pattern could not be read ({type(exc).__name__}: {printable(str(exc))})"
        ) from None
    return ImportedPieces(
        pattern.pieces,
        0.0,
        pattern.warnings,
        sizes=pattern.sizes,
        style=pattern.style,
        sample_size=pattern.sample_size,
        units=pattern.units,
    )


def printable(text: str, limit: int = 120) -> str:
    """An error message that quotes file content: control and binary characters escaped, cut short."""
    clean = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return clean if len(clean) <= limit else clean[:limit] + "..."


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


def _label(p: PlacedPiece) -> str:
    return f"{p.name or p.piece_id} {p.size} #{p.copy + 1}{' M' if p.mirrored else ''}".strip()


def _label_spot(p: PlacedPiece) -> tuple[float, float, float]:
    """Where a label goes inside a placed piece, and a text height that fits it."""
    poly = Polygon(p.outline_mm)
    spot = poly.representative_point() if poly.is_valid else poly.centroid
    # Labels stay inside: about a sixth of the narrower side of the piece's box, at most 12 mm.
    x0, y0, x1, y1 = poly.bounds
    height = max(1.5, min(12.0, min(x1 - x0, y1 - y0) / 6.0))
    return spot.x, spot.y, height


def _notch_tick(p: PlacedPiece, notch: Point, length_mm: float = 3.0) -> tuple[Point, Point]:
    """A slit notch: from the cut line into the piece, square to the nearest edge."""
    pts = p.outline_mm
    n = len(pts)
    best = min(range(n), key=lambda i: _seg_dist(notch, pts[i], pts[(i + 1) % n]))
    (ax, ay), (bx, by) = pts[best], pts[(best + 1) % n]
    dx, dy = bx - ax, by - ay
    norm = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / norm, dx / norm
    poly = Polygon(pts)
    probe = (notch[0] + nx * 0.1, notch[1] + ny * 0.1)
    if poly.is_valid and not poly.contains(ShapelyPoint(probe)):
        nx, ny = -nx, -ny
    return notch, (notch[0] + nx * length_mm, notch[1] + ny * length_mm)


def _seg_dist(p: Point, a: Point, b: Point) -> float:
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    d2 = dx * dx + dy * dy
    t = 0.0 if d2 == 0 else max(0.0, min(1.0, ((p[0] - ax) * dx + (p[1] - ay) * dy) / d2))
    return math.hypot(p[0] - ax - t * dx, p[1] - ay - t * dy)


def export_svg(marker: Marker) -> bytes:
    """The layout to scale (1 user unit = 1 mm) with each piece's name, size and copy written on it,
    notches, drill holes and internal lines; name, length and efficiency above."""
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
        for line in p.internal_lines_mm:
            out.append(
                f'<polyline points="{_pts(line)}" fill="none" stroke="#333" '
                f'stroke-dasharray="{stroke * 4:.3f}" stroke-width="{stroke:.3f}"/>'
            )
        if p.grain_line_mm:
            out.append(
                f'<polyline class="grain" points="{_pts(p.grain_line_mm)}" fill="none" stroke="#222" '
                f'stroke-width="{stroke:.3f}"/>'
            )
        for notch in p.notches_mm:
            a, b = _notch_tick(p, notch)
            out.append(
                f'<line class="notch" x1="{a[0]:.3f}" y1="{a[1]:.3f}" x2="{b[0]:.3f}" y2="{b[1]:.3f}" '
                f'stroke="black" stroke-width="{stroke * 2:.3f}"/>'
            )
        for x, y in p.drills_mm:
            out.append(
                f'<circle class="drill" cx="{x:.3f}" cy="{y:.3f}" r="1.5" fill="none" stroke="black" '
                f'stroke-width="{stroke:.3f}"/>'
            )
    out.append("</g>")
    # Labels outside the flipped group, so the text reads the right way up.
    for p in marker.placements:
        x, y, h = _label_spot(p)
        out.append(
            f'<text class="label" x="{x:.3f}" y="{width - y:.3f}" font-family="sans-serif" '
            f'font-size="{h:.3f}" text-anchor="middle" dominant-baseline="middle">{_esc(_label(p))}</text>'
        )
    out.append("</svg>")
    return "\n".join(out).encode()


def _pts(outline: tuple[Point, ...]) -> str:
    return " ".join(f"{x:.3f},{y:.3f}" for x, y in outline)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


# -- AAMA/ASTM marker DXF -----------------------------------------------------------------------------

MARKER_KEYS = ("Marker Name", "Marker Width", "Marker Length", "Spacing", "Efficiency", "Units")


def export_dxf(marker: Marker) -> bytes:
    """The marker as an AAMA/ASTM D6673 DXF (R12, mm): one BLOCK per placed piece, inserted at the
    origin with its entities at their placed positions: layer 1 the cut line and the piece text,
    4 notches (POINT), 7 the grain line, 8 internal lines, 13 drill holes (POINT). Model space holds
    the marker text (name, width, length, units) and the fabric rectangle (layer FABRIC)."""
    doc = ezdxf.new("R12")
    msp = doc.modelspace()
    L, W = marker.length_mm, marker.width_mm
    msp.add_polyline2d([(0, 0), (L, 0), (L, W), (0, W)], close=True, dxfattribs={"layer": "FABRIC"})
    for flaw in _fabric(marker).flaws:
        msp.add_polyline2d(list(flaw.outline_mm), close=True, dxfattribs={"layer": "FLAWS"})
    lines = [
        f"Marker Name: {marker.name or 'marker'}",
        f"Marker Width: {W!r}",
        f"Marker Length: {L!r}",
        f"Spacing: {marker.spacing_mm!r}",
        f"Efficiency: {marker.efficiency * 100:.2f}%",
        "Units: METRIC",
    ]
    for i, text in enumerate(lines):
        msp.add_text(text, height=5.0, dxfattribs={"layer": "1"}).set_placement(
            (0, W + 10 + 8 * (len(lines) - i))
        )
    used: set[str] = set()
    for p in marker.placements:
        base = re.sub(r"[^A-Za-z0-9_-]", "_", f"{p.piece_id}_{p.copy}{'_M' if p.mirrored else ''}")
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        block = doc.blocks.new(name=name)
        block.add_polyline2d(list(p.outline_mm), close=True, dxfattribs={"layer": "1"})
        for x, y in p.notches_mm:
            block.add_point((x, y), dxfattribs={"layer": "4"})
        for x, y in p.drills_mm:
            block.add_point((x, y), dxfattribs={"layer": "13"})
        for line in p.internal_lines_mm:
            block.add_polyline2d(list(line), dxfattribs={"layer": "8"})
        if len(p.grain_line_mm) >= 2:
            block.add_line(p.grain_line_mm[0], p.grain_line_mm[-1], dxfattribs={"layer": "7"})
        x, y, h = _label_spot(p)
        texts = [
            f"Piece Name: {p.name or p.piece_id}",
            f"Size: {p.size}",
            f"Piece Id: {p.piece_id}",
            f"Copy: {p.copy}",
            f"Mirrored: {'yes' if p.mirrored else 'no'}",
            f"Rotation: {p.rotation_deg!r}",
            f"Placement: {p.x_mm!r},{p.y_mm!r}",
        ]
        for i, text in enumerate(texts):
            block.add_text(text, height=h / 2, dxfattribs={"layer": "1"}).set_placement((x, y - i * h * 0.6))
        msp.add_blockref(name, (0, 0))
    stream = io.StringIO()
    doc.write(stream)
    return stream.getvalue().encode()


BINARY_DXF_SENTINEL = b"AutoCAD Binary DXF\r\n\x1a\x00"


def _read_doc(content: bytes) -> Any:
    """An ASCII or binary DXF -> ezdxf document; other content refused in one short sentence
    (never echoed: it may be kilobytes of bytes that are not text)."""
    if content.startswith(BINARY_DXF_SENTINEL):
        try:
            return Drawing.load(binary_tags_loader(content))
        except Exception as exc:  # ezdxf raises several types for broken files
            raise ImportError_(
                f"not a readable binary DXF ({len(content)} bytes): {printable(str(exc))}"
            ) from None
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        # R12 files are often in the Windows code page (ANSI_1252): every byte is a character.
        text = content.decode("cp1252", errors="replace")
    controls = sum(1 for c in text if c < " " and c not in "\r\n\t")
    if controls > len(text) // 100:
        raise ImportError_(
            f"not a DXF file ({len(content)} bytes, {controls} control characters, and no binary DXF "
            "header); export it as DXF (AAMA/ASTM)"
        )
    try:
        return ezdxf.read(io.StringIO(text))
    except Exception as exc:  # ezdxf raises several types for broken files
        raise ImportError_(f"not a readable DXF: {printable(str(exc))}") from None


def import_marker_dxf(content: bytes, unit_mm: float = 0.0) -> tuple[Marker, list[str]]:
    """A marker DXF (as export_dxf writes it, or another system's: one block or closed cut line
    per placed piece) -> Marker. Placement text (piece id, copy, rotation, x/y) is read when
    present; without it a piece is recorded as placed where it lies (rotation 0, x = y = 0)."""
    doc = _read_doc(content)
    warnings: list[str] = []
    msp = doc.modelspace()
    texts = {}
    for e in msp:
        if e.dxftype() in ("TEXT", "MTEXT"):
            kv = aama.key_value(aama._text_of(e))
            if kv:
                texts[kv[0]] = kv[1]
    scale, _ = aama._units(doc, {"units": texts.get("units", "")}, unit_mm, warnings)
    raws: list[aama.RawPiece] = []
    for insert in (e for e in msp if e.dxftype() == "INSERT"):
        block = doc.blocks.get(insert.dxf.name)
        if block is None:
            continue
        raw = aama._raw_piece(
            insert.dxf.name, aama.block_entities(doc, insert, insert.matrix44(), warnings), scale, warnings
        )
        if raw is not None:
            raws.append(raw)
    if not raws:
        raws = aama._model_space_pieces(
            [e for e in msp if e.dxf.get("layer") not in ("FABRIC", "FLAWS")], scale, warnings
        )
    if not raws:
        raise ImportError_("no placed pieces found (one block or closed cut line on layer 1 per piece)")

    def mm(points: Any) -> tuple[Point, ...]:
        return tuple((x * scale, y * scale) for x, y in points)

    placements: list[PlacedPiece] = []
    copies: dict[str, int] = {}
    missing = 0
    for raw in raws:
        f = raw.fields
        piece_id = f.get("piece_id") or f.get("name") or raw.key
        try:
            copy = int(f["copy"]) if "copy" in f else copies.get(piece_id, 0)
            rotation = float(f.get("rotation", "0"))
            x, y = (float(v) for v in f.get("placement", "0,0").split(","))
        except ValueError:
            raise ImportError_(f"block {raw.key!r}: placement text is not numbers") from None
        if "placement" not in f:
            missing += 1
        copies[piece_id] = copy + 1
        placements.append(
            PlacedPiece(
                piece_id,
                copy,
                f.get("size", ""),
                x * scale,
                y * scale,
                rotation,
                f.get("mirrored", "no").strip().lower() in ("yes", "true", "1"),
                mm(raw.boundary),
                name=f.get("name", piece_id),
                notches_mm=mm(raw.notches),
                drills_mm=mm(raw.drills),
                internal_lines_mm=tuple(mm(line) for line in raw.internal),
                grain_line_mm=mm(raw.grain) if raw.grain else (),
            )
        )
    if missing:
        warnings.append(f"{missing} pieces carry no placement text: recorded where they lie, rotation 0")
    max_x = max(max(x for x, _ in p.outline_mm) for p in placements)
    max_y = max(max(y for _, y in p.outline_mm) for p in placements)

    def number(key: str, fallback: float, what: str) -> float:
        try:
            return float(texts[key]) * scale
        except (KeyError, ValueError):
            warnings.append(f"no number in a '{key.title()}:' text; the {what} is taken from the pieces")
            return fallback

    width = number("marker width", max_y, "width")
    length = number("marker length", max_x, "length")
    marker = Marker(
        name=texts.get("marker name", ""),
        placements=placements,
        length_mm=length,
        width_mm=width,
        piece_area_mm2=sum(Polygon(p.outline_mm).area for p in placements),
        final=True,
        spacing_mm=float(texts.get("spacing", "0") or 0) * scale,
        fabric=FabricSpec(width_mm=width),
        notes=["imported from a marker file"],
    )
    return marker, warnings


# -- plotter and cutter ------------------------------------------------------------------------------

HPGL_UNITS_PER_MM = 40  # 1 plotter unit = 0.025 mm
# Pens: 1 cut lines, 2 the fabric edges, 3 internal and grain lines, 4 notches, 5 drill marks,
# 6 labels (a cutting plotter maps pens to tools: knife for 1 and 4, punch for 5, pen for the rest).
PEN_CUT, PEN_FABRIC, PEN_LINES, PEN_NOTCH, PEN_DRILL, PEN_LABEL = 1, 2, 3, 4, 5, 6
DRILL_MARK_MM = 2.0


def export_hpgl(marker: Marker) -> bytes:
    """HPGL/PLT for a plotter: the fabric, every cut line, internal and grain lines, notches as
    3 mm slits square to the cut line, drill holes as crosses, and a label (LB) in each piece."""

    def pu(x: float, y: float) -> str:
        return f"{round(x * HPGL_UNITS_PER_MM)},{round(y * HPGL_UNITS_PER_MM)}"

    def path(points: Any, close: bool = False) -> str:
        pts = [*points, points[0]] if close else list(points)
        return f"PU{pu(*pts[0])};PD{','.join(pu(*q) for q in pts[1:])};"

    out = ["IN;", "DT\x03;", f"SP{PEN_FABRIC};"]
    L, W = marker.length_mm, marker.width_mm
    out.append(path([(0, 0), (L, 0), (L, W), (0, W)], close=True))
    out.append(f"SP{PEN_CUT};")
    for p in marker.placements:
        out.append(path(p.outline_mm, close=True))
    out.append(f"SP{PEN_LINES};")
    for p in marker.placements:
        out.extend(path(line) for line in p.internal_lines_mm if len(line) >= 2)
        if len(p.grain_line_mm) >= 2:
            out.append(path(p.grain_line_mm))
    out.append(f"SP{PEN_NOTCH};")
    for p in marker.placements:
        out.extend(path(_notch_tick(p, n)) for n in p.notches_mm)
    out.append(f"SP{PEN_DRILL};")
    d = DRILL_MARK_MM
    for p in marker.placements:
        for x, y in p.drills_mm:
            out.append(path([(x - d, y), (x + d, y)]) + path([(x, y - d), (x, y + d)]))
    out.append(f"SP{PEN_LABEL};")
    for p in marker.placements:
        x, y, h = _label_spot(p)
        # SI: character width and height in cm; labels are plain ASCII (LB ends at the terminator).
        text = _label(p).encode("ascii", "replace").decode().replace("\x03", " ")
        out.append(
            f"SI{h * 0.06:.3f},{h * 0.1:.3f};PU{pu(x - len(text) * h * 0.3, y - h * 0.5)};LB{text}\x03"
        )
    out.append("PU;SP0;")
    return "\n".join(out).encode()


def export_gcode(marker: Marker, feed_mm_min: float = 20000.0) -> bytes:
    """ISO 6983 (RS-274) G-code for a cutter, in mm: tool T1 (knife) cuts each cut line and the
    notches (3 mm slits), tool T2 (drill or punch) makes each drill hole with a G81 cycle.
    M3 lowers or starts the tool, M5 lifts it; G0 moves with the tool up, G1 cuts.

    Read by controllers that take ISO 6983 / RS-274 NGC: LinuxCNC, Mach3/4, GRBL-based knife,
    drag-knife, laser and plasma cutters. Industrial single-ply textile cutters (Gerber, Lectra,
    Zund) take their own formats, HPGL/PLT or the AAMA DXF: use those for them."""
    out = [
        "%",
        f"(marker {_gcode_comment(marker.name or 'marker')}: {marker.length_mm:.1f} x {marker.width_mm:.1f} mm)",
        "G21 G90 G17",  # mm, absolute, XY plane
        "T1 M6 (knife)",
    ]

    def cut(points: Any, close: bool) -> None:
        pts = [*points, points[0]] if close else list(points)
        out.append(f"G0 X{pts[0][0]:.3f} Y{pts[0][1]:.3f}")
        out.append("M3")
        out.append(f"G1 X{pts[1][0]:.3f} Y{pts[1][1]:.3f} F{feed_mm_min:.0f}")
        out.extend(f"G1 X{x:.3f} Y{y:.3f}" for x, y in pts[2:])
        out.append("M5")

    for p in marker.placements:
        out.append(f"({_gcode_comment(_label(p))})")
        cut(p.outline_mm, close=True)
        for n in p.notches_mm:
            cut(_notch_tick(p, n), close=False)
    drills = [(x, y) for p in marker.placements for x, y in p.drills_mm]
    if drills:
        out.append("T2 M6 (drill)")
        out.append("M3")
        for x, y in drills:
            out.append(f"G81 X{x:.3f} Y{y:.3f} Z-1.000 R1.000")
        out.append("G80")
        out.append("M5")
    out += ["G0 X0.000 Y0.000", "M30", "%"]
    return "\n".join(out).encode()


def _gcode_comment(text: str) -> str:
    return re.sub(r"[()\r\n]", " ", text)


# -- the marker report ---------------------------------------------------------------------------------


def bundles(marker: Marker) -> dict[tuple[str, int], int]:
    """(size, bundle number) -> placed pieces: a bundle is one garment of a size. A piece's copies
    run over the bundles in order (quantity per garment = copies / garments of its size)."""
    ratios = marker.ratios
    copies: dict[str, int] = {}
    for p in marker.placements:
        copies[p.piece_id] = max(copies.get(p.piece_id, 0), p.copy + 1)
    out: dict[tuple[str, int], int] = {}
    for p in marker.placements:
        garments = ratios.get(p.size, 1) if ratios else 1
        per_garment = max(1, copies[p.piece_id] // max(1, garments))
        key = (p.size, min(garments, p.copy // per_garment + 1))
        out[key] = out.get(key, 0) + 1
    return out


def export_report_html(marker: Marker) -> bytes:
    """The marker report: name, width, length, efficiency, pieces per size and bundle, fabric per
    garment, and the layout picture. One self-contained HTML page (opens in any browser, prints
    to PDF)."""
    garments = sum(marker.ratios.values()) if marker.ratios else 0
    rows = "".join(
        f"<tr><td>{_esc(size or '-')}</td><td>{bundle}</td><td>{count}</td></tr>"
        for (size, bundle), count in sorted(bundles(marker).items())
    )
    per_size: dict[str, int] = {}
    for p in marker.placements:
        per_size[p.size] = per_size.get(p.size, 0) + 1
    size_rows = "".join(
        f"<tr><td>{_esc(size or '-')}</td><td>{marker.ratios.get(size, '') if marker.ratios else ''}</td>"
        f"<td>{count}</td></tr>"
        for size, count in sorted(per_size.items())
    )
    fabric_m2 = marker.length_mm * marker.width_mm / 1e6
    per_garment = (
        f"{marker.length_mm / garments / 1000:.3f} m ({fabric_m2 / garments:.3f} m&sup2;)"
        if garments
        else "n/a"
    )
    svg = export_svg(marker).decode()
    notes = "".join(f"<li>{_esc(n)}</li>" for n in marker.notes)
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Marker report: {_esc(marker.name or "marker")}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #999;padding:2px 8px;text-align:right}} th{{background:#eee}}
svg{{width:100%;height:auto;border:1px solid #ccc}}</style></head><body>
<h1>Marker report: {_esc(marker.name or "marker")}</h1>
<table id="figures">
<tr><th>marker name</th><td id="name">{_esc(marker.name or "marker")}</td></tr>
<tr><th>width</th><td id="width">{marker.width_mm:.1f} mm</td></tr>
<tr><th>length</th><td id="length">{marker.length_mm:.1f} mm</td></tr>
<tr><th>efficiency</th><td id="efficiency">{marker.efficiency * 100:.2f}%</td></tr>
<tr><th>fabric used</th><td id="fabric">{fabric_m2:.3f} m&sup2;</td></tr>
<tr><th>pieces</th><td id="pieces">{len(marker.placements)}</td></tr>
<tr><th>garments</th><td id="garments">{garments or "n/a"}</td></tr>
<tr><th>fabric per garment</th><td id="per-garment">{per_garment}</td></tr>
<tr><th>spacing</th><td>{marker.spacing_mm:g} mm</td></tr>
</table>
<h2>Pieces per size</h2>
<table id="sizes"><tr><th>size</th><th>garments</th><th>pieces</th></tr>{size_rows}</table>
<h2>Pieces per bundle</h2>
<table id="bundles"><tr><th>size</th><th>bundle</th><th>pieces</th></tr>{rows}</table>
{"<h2>Notes</h2><ul>" + notes + "</ul>" if notes else ""}
<h2>Layout</h2>
{svg[svg.index("<svg") :]}
</body></html>
"""
    return html.encode()
