"""The nesting gRPC servicer: protobuf <-> domain, validation once at the boundary, jobs."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2
from prometheus_client import Counter, Histogram
from shapely.geometry import Polygon
from shapely.validation import explain_validity

from atelier.common.v1 import geometry_pb2, progress_pb2
from atelier.nesting import formats, mtm
from atelier.nesting.domain import (
    DEFAULT_TIME_BUDGET_S,
    MAX_COORDINATE_MM,
    MAX_FABRIC_LENGTH_MM,
    MAX_FABRIC_WIDTH_MM,
    MAX_PIECE_TYPES,
    MAX_PLACED_PIECES,
    MAX_RATIO_COUNT,
    MAX_SIZES,
    MAX_TIME_BUDGET_S,
    MAX_VERTICES,
    FabricSpec,
    FlawZone,
    Grain,
    Marker,
    MarkerRequest,
    Mirror,
    PieceSpec,
    PlacedPiece,
    min_extent_y_mm,
    piece_area_mm2,
    placed_count,
)
from atelier.nesting.engine import make_marker
from atelier.nesting.library import PatternLibrary
from atelier.nesting.v1 import nesting_pb2 as pb
from atelier.nesting.v1 import nesting_pb2_grpc
from atelier.runtime import limits
from atelier.runtime.context import current_tenant
from atelier.runtime.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, Violations
from atelier.runtime.jobs import JobHandle, JobManager
from atelier.runtime.status import cancellation_from

GRAIN_FROM_PROTO = {
    pb.GRAIN_RULE_UNSPECIFIED: Grain.WOVEN,
    pb.GRAIN_RULE_WOVEN: Grain.WOVEN,
    pb.GRAIN_RULE_FIXED: Grain.FIXED,
    pb.GRAIN_RULE_FOUR_WAY: Grain.FOUR_WAY,
    pb.GRAIN_RULE_FREE: Grain.FREE,
    pb.GRAIN_RULE_STEP: Grain.STEP,
}
GRAIN_TO_PROTO = {v: k for k, v in GRAIN_FROM_PROTO.items() if k != pb.GRAIN_RULE_UNSPECIFIED}
MIRROR_FROM_PROTO = {
    pb.MIRROR_RULE_UNSPECIFIED: Mirror.NONE,
    pb.MIRROR_RULE_NONE: Mirror.NONE,
    pb.MIRROR_RULE_PAIR: Mirror.PAIR,
    pb.MIRROR_RULE_ALLOWED: Mirror.ALLOWED,
}
MIRROR_TO_PROTO = {v: k for k, v in MIRROR_FROM_PROTO.items() if k != pb.MIRROR_RULE_UNSPECIFIED}
OPERATION_PREFIX = "operations/nesting/"

markers_total = Counter("atelier_nesting_markers_total", "Marker jobs finished, by outcome", ["outcome"])
marker_efficiency = Histogram(
    "atelier_nesting_marker_efficiency_ratio",
    "Efficiency (piece area / fabric area used) of finished markers",
    buckets=(0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.95, 1.0),
)
marker_solve_seconds = Histogram(
    "atelier_nesting_marker_solve_seconds",
    "Wall time of marker jobs",
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
marker_fabric_length = Histogram(
    "atelier_nesting_marker_length_meters",
    "Length of finished markers",
    buckets=(0.5, 1, 2, 3, 5, 8, 12, 20, 40),
)


# -- protobuf <-> domain --------------------------------------------------------------------------


def polygon_points(polygon: geometry_pb2.PolygonMm) -> tuple[tuple[float, float], ...]:
    return tuple((p.x_mm, p.y_mm) for p in polygon.points)


def to_polygon(points: Any) -> geometry_pb2.PolygonMm:
    return geometry_pb2.PolygonMm(points=[geometry_pb2.PointMm(x_mm=x, y_mm=y) for x, y in points])


def to_points(points: Any) -> list[geometry_pb2.PointMm]:
    return [geometry_pb2.PointMm(x_mm=x, y_mm=y) for x, y in points]


def to_polyline(points: Any) -> pb.PolylineMm:
    return pb.PolylineMm(points=to_points(points))


def from_points(points: Any) -> tuple[tuple[float, float], ...]:
    return tuple((p.x_mm, p.y_mm) for p in points)


def piece_to_proto(piece: PieceSpec) -> pb.Piece:
    return pb.Piece(
        id=piece.id,
        outline=to_polygon(piece.outline_mm),
        quantity=piece.quantity,
        grain=GRAIN_TO_PROTO[piece.grain],
        rotation_step_deg=piece.rotation_step_deg,
        mirror=MIRROR_TO_PROTO[piece.mirror],
        size=piece.size,
        name=piece.name,
        notches=to_points(piece.notches_mm),
        drill_holes=to_points(piece.drills_mm),
        internal_lines=[to_polyline(line) for line in piece.internal_lines_mm],
        grain_line=to_polyline(piece.grain_line_mm) if piece.grain_line_mm else None,
        category=piece.category,
        material=piece.material,
        annotation=piece.annotation,
    )


def piece_features(msg: pb.Piece) -> dict[str, Any]:
    """The features a piece carries onto the marker (validated finite by check_features)."""
    return {
        "notches_mm": from_points(msg.notches),
        "drills_mm": from_points(msg.drill_holes),
        "internal_lines_mm": tuple(from_points(line.points) for line in msg.internal_lines),
        "grain_line_mm": from_points(msg.grain_line.points),
        "category": msg.category,
        "material": msg.material,
        "annotation": msg.annotation,
    }


def flaw_points(flaw: pb.FlawZone) -> tuple[tuple[float, float], ...]:
    if flaw.WhichOneof("zone") == "rect":
        r = flaw.rect
        return (
            (r.x_mm, r.y_mm),
            (r.x_mm + r.width_mm, r.y_mm),
            (r.x_mm + r.width_mm, r.y_mm + r.height_mm),
            (r.x_mm, r.y_mm + r.height_mm),
        )
    return polygon_points(flaw.polygon)


def fabric_to_proto(fabric: FabricSpec) -> pb.Fabric:
    return pb.Fabric(
        width_mm=fabric.width_mm,
        max_length_mm=fabric.max_length_mm,
        edge_margin_mm=fabric.edge_margin_mm,
        end_margin_mm=fabric.end_margin_mm,
        flaws=[pb.FlawZone(polygon=to_polygon(f.outline_mm), reason=f.reason) for f in fabric.flaws],
    )


def marker_to_proto(marker: Marker) -> pb.Marker:
    return pb.Marker(
        name=marker.name,
        length_mm=marker.length_mm,
        width_mm=marker.width_mm,
        efficiency=marker.efficiency,
        piece_area_mm2=marker.piece_area_mm2,
        waste_area_mm2=marker.waste_area_mm2,
        final=marker.final,
        elapsed_s=marker.elapsed_s,
        seed=marker.seed,
        notes=marker.notes,
        spacing_mm=marker.spacing_mm,
        fabric=fabric_to_proto(marker.fabric) if marker.fabric else None,
        ratios=[pb.SizeRatio(size=k, count=v) for k, v in marker.ratios.items()],
        pattern_id=marker.pattern_id,
        placements=[
            pb.Placement(
                piece_id=p.piece_id,
                copy=p.copy,
                size=p.size,
                x_mm=p.x_mm,
                y_mm=p.y_mm,
                rotation_deg=p.rotation_deg,
                mirrored=p.mirrored,
                outline=to_polygon(p.outline_mm),
                name=p.name,
                notches=to_points(p.notches_mm),
                drill_holes=to_points(p.drills_mm),
                internal_lines=[to_polyline(line) for line in p.internal_lines_mm],
                grain_line=to_polyline(p.grain_line_mm) if p.grain_line_mm else None,
            )
            for p in marker.placements
        ],
    )


def marker_from_proto(msg: pb.Marker) -> Marker:
    fabric = FabricSpec(
        width_mm=msg.fabric.width_mm or msg.width_mm,
        max_length_mm=msg.fabric.max_length_mm,
        edge_margin_mm=msg.fabric.edge_margin_mm,
        end_margin_mm=msg.fabric.end_margin_mm,
        flaws=tuple(FlawZone(flaw_points(f), f.reason) for f in msg.fabric.flaws),
    )
    return Marker(
        name=msg.name,
        length_mm=msg.length_mm,
        width_mm=msg.width_mm,
        piece_area_mm2=msg.piece_area_mm2,
        final=msg.final,
        elapsed_s=msg.elapsed_s,
        seed=msg.seed,
        spacing_mm=msg.spacing_mm,
        fabric=fabric,
        notes=list(msg.notes),
        ratios={r.size: r.count for r in msg.ratios},
        pattern_id=msg.pattern_id,
        placements=[
            PlacedPiece(
                p.piece_id,
                p.copy,
                p.size,
                p.x_mm,
                p.y_mm,
                p.rotation_deg,
                p.mirrored,
                polygon_points(p.outline),
                name=p.name,
                notches_mm=from_points(p.notches),
                drills_mm=from_points(p.drill_holes),
                internal_lines_mm=tuple(from_points(line.points) for line in p.internal_lines),
                grain_line_mm=from_points(p.grain_line.points),
            )
            for p in msg.placements
        ],
    )


# -- validation -----------------------------------------------------------------------------------


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def check_outline(points: tuple[tuple[float, float], ...], path: str, v: Violations) -> bool:
    if not v.check(
        3 <= len(points) <= MAX_VERTICES, path, f"needs 3..{MAX_VERTICES} points, got {len(points)}"
    ):
        return False
    if not v.check(all(_finite(x, y) for x, y in points), path, "coordinates must be finite numbers"):
        return False
    if not v.check(
        all(abs(x) <= MAX_COORDINATE_MM and abs(y) <= MAX_COORDINATE_MM for x, y in points),
        path,
        f"coordinates must be within +-{MAX_COORDINATE_MM:g} mm",
    ):
        return False
    poly = Polygon(points)
    # Collinear points make an invalid polygon too; name the real problem first.
    if not v.check(poly.convex_hull.area > 1e-9, path, "has zero area (its points are collinear)"):
        return False
    return v.check(
        poly.is_valid,
        path,
        f"is not a simple polygon ({explain_validity(poly)}): self-intersecting outlines cannot be cut",
    )


def _check_imported(imported: formats.ImportedPieces) -> None:
    """What a file says must fit the same bounds as a request (and the int32 fields of the reply)."""
    v = Violations()
    for i, piece in enumerate(imported.pieces):
        if not all(_finite(x, y) and max(abs(x), abs(y)) <= MAX_COORDINATE_MM for x, y in piece.outline_mm):
            v.add("content", f"piece {i} ({piece.id[:40]!r}): coordinates beyond +-{MAX_COORDINATE_MM:g} mm")
        if not 1 <= piece.quantity <= MAX_PLACED_PIECES:
            v.add("content", f"piece {i} ({piece.id[:40]!r}): quantity must be 1..{MAX_PLACED_PIECES}")
        if len(v.items) >= 5:
            break
    width = imported.fabric_width_mm
    v.check(_finite(width) and 0 <= width <= MAX_FABRIC_WIDTH_MM, "content", "fabric width beyond the limit")
    v.raise_if_any("the file's pieces are out of bounds")


FIT_MARGIN_MM = 0.01


def check_features(msg: pb.Piece, path: str, v: Violations) -> bool:
    points = [*msg.notches, *msg.drill_holes, *msg.grain_line.points]
    points += [p for line in msg.internal_lines for p in line.points]
    return v.check(
        all(_finite(p.x_mm, p.y_mm) and max(abs(p.x_mm), abs(p.y_mm)) <= MAX_COORDINATE_MM for p in points),
        path,
        f"notches, drill holes, internal and grain lines need finite coordinates within +-{MAX_COORDINATE_MM:g} mm",
    )


def validate_create(
    request: pb.CreateMarkerRequest, pattern_pieces: list[pb.Piece] | None = None
) -> MarkerRequest:
    """Every violation of the request at once, or the domain request (pattern_pieces: the stored
    pattern's pieces when the request names one that exists)."""
    v = Violations()
    fabric_msg = request.fabric
    width = fabric_msg.width_mm
    width_ok = _finite(width) and 0 < width <= MAX_FABRIC_WIDTH_MM
    v.check(width_ok, "fabric.width_mm", f"must be > 0 and at most {MAX_FABRIC_WIDTH_MM:g} mm")
    for name in ("max_length_mm", "edge_margin_mm", "end_margin_mm"):
        value = getattr(fabric_msg, name)
        v.check(
            _finite(value) and 0 <= value <= MAX_FABRIC_LENGTH_MM,
            f"fabric.{name}",
            f"must be >= 0 and at most {MAX_FABRIC_LENGTH_MM:g} mm",
        )
    margin = fabric_msg.edge_margin_mm
    if width_ok and _finite(margin) and margin >= 0:
        v.check(
            2 * margin < width,
            "fabric.edge_margin_mm",
            f"two margins of {margin} mm leave no width of {width} mm",
        )
    spacing = request.spacing_mm
    # Compared with the width only when the width itself is valid (a NaN width is one violation).
    v.check(
        _finite(spacing) and spacing >= 0 and (not width_ok or spacing < width),
        "spacing_mm",
        "must be >= 0 and < the width",
    )
    budget = request.time_budget_s or DEFAULT_TIME_BUDGET_S
    v.check(
        _finite(budget) and 0 < budget <= MAX_TIME_BUDGET_S,
        "time_budget_s",
        f"must be 1..{MAX_TIME_BUDGET_S} s (0 means {DEFAULT_TIME_BUDGET_S} s)",
    )

    ratios: dict[str, int] = {}
    v.check(len(request.ratios) <= MAX_SIZES, "ratios", f"at most {MAX_SIZES} sizes")
    for i, ratio in enumerate(request.ratios):
        if not v.check(bool(ratio.size), f"ratios[{i}].size", "required"):
            continue
        v.check(ratio.size not in ratios, f"ratios[{i}].size", f"size {ratio.size!r} is listed twice")
        v.check(1 <= ratio.count <= MAX_RATIO_COUNT, f"ratios[{i}].count", f"must be 1..{MAX_RATIO_COUNT}")
        ratios[ratio.size] = ratio.count

    source = list(request.pieces)
    notes: list[str] = []
    mtm_wanted = request.HasField("made_to_measure")
    if mtm_wanted:
        v.check(bool(request.pattern_id), "made_to_measure", "only with a pattern_id")
        v.check(not request.ratios, "ratios", "give ratios or made_to_measure, not both")
    if request.pattern_id:
        v.check(not source, "pattern_id", "give pieces or a pattern_id, not both")
        if pattern_pieces is None:
            v.add("pattern_id", f"no pattern {request.pattern_id!r} in this tenant's library (ListPatterns)")
        elif mtm_wanted:
            names = set(request.piece_names)
            unknown = sorted(names - {p.name or p.id for p in pattern_pieces})
            v.check(not unknown, "piece_names", f"pieces {unknown} are not in the pattern")
            made = _made_to_measure(request.made_to_measure, pattern_pieces, v)
            if made is not None:
                blended, label, garments, notes = made
                ratios = {label: garments}
                source = [piece_to_proto(p) for p in blended if not names or (p.name or p.id) in names]
        else:
            # The sizes the ratios name, or every size; the pieces named, or every piece.
            names = set(request.piece_names)
            source = [
                p
                for p in pattern_pieces
                if (not ratios or p.size in ratios) and (not names or (p.name or p.id) in names)
            ]
            missing = sorted(set(ratios) - {p.size for p in pattern_pieces})
            v.check(not missing, "ratios", f"sizes {missing} are not in the pattern")
            unknown = sorted(names - {p.name or p.id for p in pattern_pieces})
            v.check(not unknown, "piece_names", f"pieces {unknown} are not in the pattern")
    else:
        v.check(len(source) > 0, "pieces", "at least one piece is required")
        v.check(not request.piece_names, "piece_names", "only with a pattern_id")
    v.check(len(source) <= MAX_PIECE_TYPES, "pieces", f"at most {MAX_PIECE_TYPES} pieces per request")
    usable = width - 2 * margin
    pieces: list[PieceSpec] = []
    ids: set[str] = set()
    for i, msg in enumerate(source[:MAX_PIECE_TYPES]):
        path = f"pieces[{i}]"
        ok = v.check(bool(msg.id), f"{path}.id", "required")
        ok &= v.check(msg.id not in ids, f"{path}.id", f"id {msg.id!r} is used by another piece")
        ids.add(msg.id)
        ok &= v.check(msg.quantity >= 1, f"{path}.quantity", f"must be >= 1, got {msg.quantity}")
        points = polygon_points(msg.outline)
        ok &= check_outline(points, f"{path}.outline", v)
        grain = GRAIN_FROM_PROTO.get(msg.grain)
        ok &= v.check(grain is not None, f"{path}.grain", f"unknown grain rule {msg.grain}")
        mirror = MIRROR_FROM_PROTO.get(msg.mirror)
        ok &= v.check(mirror is not None, f"{path}.mirror", f"unknown mirror rule {msg.mirror}")
        step = msg.rotation_step_deg
        if grain is Grain.STEP:
            divides = _finite(step) and step > 0 and abs(360.0 / step - round(360.0 / step)) < 1e-9
            ok &= v.check(
                divides and round(360.0 / step) <= 360,
                f"{path}.rotation_step_deg",
                "must divide 360 (e.g. 90, 45, 15) and be >= 1",
            )
        if ratios:
            ok &= v.check(
                msg.size in ratios,
                f"{path}.size",
                f"size {msg.size!r} has no ratio; ratios name {sorted(ratios)}",
            )
        ok &= check_features(msg, path, v)
        if not ok:
            continue
        assert grain is not None and mirror is not None
        piece = PieceSpec(
            id=msg.id,
            outline_mm=points,
            quantity=msg.quantity,
            grain=grain,
            rotation_step_deg=step,
            mirror=mirror,
            size=msg.size,
            name=msg.name,
            **piece_features(msg),
        )
        if width_ok and usable > 0 and _finite(spacing) and spacing >= 0:
            narrowest, angle = min_extent_y_mm(piece)
            # The solver computes in float32 and treats a piece exactly as wide as the strip as
            # not fitting (it panics): demand FIT_MARGIN_MM of play, so that what passes here solves.
            v.check(
                narrowest <= usable - FIT_MARGIN_MM,
                f"{path}.outline",
                f"{narrowest:.3f} mm across the roll at best ({angle:g} deg, grain {grain.value}); "
                f"the usable width is {usable:.3f} mm and a piece needs {FIT_MARGIN_MM} mm of play",
            )
        pieces.append(piece)

    flaws: list[FlawZone] = []
    for k, flaw in enumerate(fabric_msg.flaws):
        path = f"fabric.flaws[{k}]"
        kind = flaw.WhichOneof("zone")
        if not v.check(kind is not None, path, "a rect or a polygon is required"):
            continue
        if kind == "rect" and not v.check(
            flaw.rect.width_mm > 0 and flaw.rect.height_mm > 0,
            f"{path}.rect",
            "width_mm and height_mm must be > 0",
        ):
            continue
        points = flaw_points(flaw)
        if not check_outline(points, f"{path}.{kind}", v):
            continue
        x0, y0, x1, y1 = Polygon(points).bounds
        limit = fabric_msg.max_length_mm
        inside = x0 >= 0 and y0 >= 0 and y1 <= width and (limit <= 0 or x1 <= limit)
        v.check(
            inside,
            f"{path}.{kind}",
            f"lies outside the roll (x {x0:g}..{x1:g}, y {y0:g}..{y1:g}; the roll is y 0..{width:g}"
            + (f", x 0..{limit:g})" if limit > 0 else ", x >= 0)"),
        )
        flaws.append(FlawZone(points, flaw.reason))

    fabric = FabricSpec(
        width_mm=width,
        max_length_mm=fabric_msg.max_length_mm,
        edge_margin_mm=margin,
        end_margin_mm=fabric_msg.end_margin_mm,
        flaws=tuple(flaws),
    )
    domain = MarkerRequest(
        pieces=tuple(pieces),
        fabric=fabric,
        spacing_mm=spacing,
        ratios=ratios,
        time_budget_s=max(1, round(budget)) if _finite(budget) else 1,
        seed=request.seed,
        name=request.marker_name,
        pattern_id=request.pattern_id,
        notes=tuple(notes),
    )
    if not v and pieces:
        count = placed_count(domain)
        v.check(
            count <= MAX_PLACED_PIECES,
            "pieces",
            f"{count} pieces to place (quantities x ratios x mirrored pairs); the limit is {MAX_PLACED_PIECES}",
        )
        limit = fabric.max_length_mm
        if limit > 0 and usable > 0:
            needed = piece_area_mm2(domain) / usable + 2 * fabric.end_margin_mm
            v.check(
                needed <= limit,
                "fabric.max_length_mm",
                f"the pieces need at least {needed:.0f} mm of fabric even at 100% efficiency",
            )
    v.raise_if_any("the marker request is invalid")
    return domain


def _spec(msg: pb.Piece) -> PieceSpec:
    """A stored pattern piece as a domain piece, for grading (validated with the marker's pieces)."""
    return PieceSpec(
        id=msg.id,
        outline_mm=polygon_points(msg.outline),
        quantity=msg.quantity,
        grain=GRAIN_FROM_PROTO.get(msg.grain, Grain.WOVEN),
        rotation_step_deg=msg.rotation_step_deg,
        mirror=MIRROR_FROM_PROTO.get(msg.mirror, Mirror.NONE),
        size=msg.size,
        name=msg.name,
        **piece_features(msg),
    )


def _made_to_measure(
    msg: pb.MadeToMeasure, pattern_pieces: list[pb.Piece], v: Violations
) -> tuple[list[PieceSpec], str, int, list[str]] | None:
    """The customer's pieces from the pattern's graded sizes, their size label, the garment
    count and notes; None (with violations) when the request cannot be met."""
    path = "made_to_measure"
    sizes = list(dict.fromkeys(p.size for p in pattern_pieces))
    garments = msg.garments or 1
    ok = v.check(1 <= garments <= MAX_RATIO_COUNT, f"{path}.garments", f"must be 1..{MAX_RATIO_COUNT}")
    how = ""
    kind = msg.WhichOneof("size_from")
    if kind == "recommendation":
        rec = msg.recommendation
        size, toward = rec.best.size, rec.second.size
        where, where_toward = f"{path}.recommendation.best.size", f"{path}.recommendation.second.size"
        second = {z.measurement: z.difference_cm for z in rec.second.zones}
        zones = [
            mtm.ZoneDifference(z.measurement, z.difference_cm, second[z.measurement])
            for z in rec.best.zones
            if z.measurement in second
        ]
        finite = all(_finite(z.best_cm, z.second_cm) for z in zones)
        ok &= v.check(finite, f"{path}.recommendation", "zone differences must be finite")
        fraction, how = mtm.fraction_from_zones(zones) if finite and toward else (0.0, "")
    elif kind == "blend":
        size, toward, fraction = msg.blend.size, msg.blend.toward_size, msg.blend.fraction
        where, where_toward = f"{path}.blend.size", f"{path}.blend.toward_size"
        ok &= v.check(_finite(fraction) and 0.0 <= fraction <= 1.0, f"{path}.blend.fraction", "must be 0..1")
    else:
        v.add(path, "a recommendation (BodyService RecommendSize's reply) or a blend is required")
        return None
    ok &= v.check(size in sizes, where, f"size {size!r} is not one of the pattern's sizes {sizes}")
    if toward:
        ok &= v.check(
            toward in sizes, where_toward, f"size {toward!r} is not one of the pattern's sizes {sizes}"
        )
        ok &= v.check(toward != size, where_toward, "must differ from the nearest size")
    if not ok:
        return None
    pieces, label, notes = mtm.made_to_measure([_spec(p) for p in pattern_pieces], size, toward, fraction)
    if how:
        notes.insert(1, f"made to measure: position between the sizes per zone: {how}")
    return pieces, label, garments, notes


def check_operation(name: str) -> None:
    if not name.startswith(OPERATION_PREFIX):
        raise InvalidArgumentError.for_field(
            "operation", f"must be an operation name from CreateMarker ({OPERATION_PREFIX}...), got {name!r}"
        )


# -- the servicer ---------------------------------------------------------------------------------


class NestingServicer(nesting_pb2_grpc.NestingServiceServicer):
    def __init__(self, jobs: JobManager, solver_workers: int | None, library: PatternLibrary) -> None:
        self.jobs = jobs
        self.solver_workers = solver_workers
        self.library = library

    def _pattern_pieces(self, pattern_id: str) -> list[pb.Piece] | None:
        stored = self.library.get(current_tenant(), pattern_id) if pattern_id else None
        if stored is None:
            return None
        return list(pb.Pattern.FromString(stored.content).pieces)

    def CreateMarker(
        self, request: pb.CreateMarkerRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        domain = validate_create(request, self._pattern_pieces(request.pattern_id))
        workers = self.solver_workers

        def run(handle: JobHandle) -> pb.Marker:
            improvements = 0

            def on_progress(marker: Marker) -> None:
                nonlocal improvements
                improvements += 1
                handle.progress(
                    min(0.99, marker.elapsed_s / domain.time_budget_s),
                    f"efficiency {marker.efficiency * 100:.2f}%, length {marker.length_mm:.1f} mm",
                    steps_done=improvements,
                    partial=marker_to_proto(marker),
                )

            handle.progress(0.0, f"solving {placed_count(domain)} pieces for {domain.time_budget_s} s")
            with marker_solve_seconds.time():
                try:
                    marker = make_marker(domain, handle.cancellation, on_progress, workers)
                except Exception as exc:
                    markers_total.labels(type(exc).__name__).inc()
                    raise
            markers_total.labels("ok").inc()
            marker_efficiency.observe(marker.efficiency)
            marker_fabric_length.observe(marker.length_mm / 1000.0)
            return marker_to_proto(marker)

        return self.jobs.get(self.jobs.submit("marker", run))

    def _marker(self, operation: str) -> pb.Marker:
        check_operation(operation)
        packed = self.jobs.partial(operation)
        if packed is None:
            op = self.jobs.get(operation)
            why = op.error.message if op.HasField("error") else "no layout found yet; watch or retry"
            raise FailedPreconditionError(f"operation {operation!r} has no marker: {why}")
        marker = pb.Marker()
        packed.Unpack(marker)
        return marker

    def GetMarker(self, request: pb.GetMarkerRequest, context: grpc.ServicerContext) -> pb.Marker:
        return self._marker(request.operation)

    def WatchMarker(
        self, request: pb.WatchMarkerRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchMarkerResponse]:
        check_operation(request.operation)
        for op in self.jobs.watch(request.operation, cancellation_from(context), interval_s=0.5):
            meta = progress_pb2.OperationMetadata()
            op.metadata.Unpack(meta)
            reply = pb.WatchMarkerResponse(progress=meta.progress)
            packed = self.jobs.partial(request.operation)
            if packed is not None:
                packed.Unpack(reply.marker)
            yield reply

    def ImportPieces(
        self, request: pb.ImportPiecesRequest, context: grpc.ServicerContext
    ) -> pb.ImportPiecesResponse:
        v = Violations()
        v.check(request.format in (pb.FILE_FORMAT_DXF, pb.FILE_FORMAT_JSON), "format", "must be DXF or JSON")
        v.check(len(request.content) > 0, "content", "the file is empty")
        v.check(
            _finite(request.unit_mm) and request.unit_mm >= 0, "unit_mm", "must be >= 0 (0: the file's units)"
        )
        v.check(request.pairs in PAIR_MODES, "pairs", f"unknown pair mode {request.pairs}")
        v.check(len(request.pattern_name) <= 256, "pattern_name", "at most 256 characters")
        v.check(
            not request.grade_rules or request.format == pb.FILE_FORMAT_DXF,
            "grade_rules",
            "a RUL file goes with a DXF pattern",
        )
        v.raise_if_any("the import request is invalid")
        try:
            if request.format == pb.FILE_FORMAT_DXF:
                imported = formats.import_dxf(
                    request.content,
                    request.unit_mm,
                    pairs=request.pairs != pb.PAIR_MODE_SAME_HAND,
                    grade_rules=request.grade_rules,
                )
            else:
                imported = formats.import_json(request.content, request.unit_mm)
        except (formats.ImportError_, KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError.for_field(
                "content", f"cannot read pieces: {formats.printable(str(exc), 300)}"
            ) from None
        _check_imported(imported)
        reply = pb.ImportPiecesResponse(
            pieces=[piece_to_proto(p) for p in imported.pieces],
            fabric_width_mm=imported.fabric_width_mm,
            warnings=imported.warnings,
            sizes=imported.sizes or list(dict.fromkeys(p.size for p in imported.pieces)),
            style_name=imported.style,
            sample_size=imported.sample_size,
            units=imported.units,
        )
        if request.save_pattern:
            reply.pattern_id = self._save_pattern(reply, request.pattern_name)
        return reply

    def _save_pattern(self, imported: pb.ImportPiecesResponse, name: str) -> str:
        pattern = pb.Pattern(
            id=PatternLibrary.new_id(),
            name=name or imported.style_name or "pattern",
            style_name=imported.style_name,
            sizes=imported.sizes,
            sample_size=imported.sample_size,
            units=imported.units,
            warnings=imported.warnings,
            piece_count=len({p.name or p.id for p in imported.pieces}),
        )
        summary = pattern.SerializeToString()
        pattern.pieces.extend(imported.pieces)
        created = self.library.add(
            current_tenant(), pattern.id, pattern.name, summary, pattern.SerializeToString()
        )
        del created  # stored rows carry it; GetPattern reads it back
        return pattern.id

    @staticmethod
    def _with_time(data: bytes, created: Any) -> pb.Pattern:
        pattern = pb.Pattern.FromString(data)
        pattern.create_time.FromDatetime(created)
        return pattern

    def ListPatterns(
        self, request: pb.ListPatternsRequest, context: grpc.ServicerContext
    ) -> pb.ListPatternsResponse:
        v = Violations()
        v.check(0 <= request.page_size <= 100, "page_size", "must be 0..100 (0 means 50)")
        # str.isdigit() accepts '²' and other digits int() refuses (the fuzz found it): the runtime's helper.
        offset = limits.page_offset(v, request.page_token)
        v.raise_if_any("the list request is invalid")
        size = request.page_size or 50
        rows = self.library.list(current_tenant(), offset, size + 1)
        return pb.ListPatternsResponse(
            patterns=[self._with_time(r.summary, r.create_time) for r in rows[:size]],
            next_page_token=str(offset + size) if len(rows) > size else "",
        )

    def GetPattern(self, request: pb.GetPatternRequest, context: grpc.ServicerContext) -> pb.Pattern:
        if not request.id:
            raise InvalidArgumentError.for_field("id", "required")
        stored = self.library.get(current_tenant(), request.id)
        if stored is None:
            raise NotFoundError(f"no pattern {request.id!r} in this tenant's library")
        return self._with_time(stored.content, stored.create_time)

    def DeletePattern(
        self, request: pb.DeletePatternRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        if not request.id:
            raise InvalidArgumentError.for_field("id", "required")
        if not self.library.delete(current_tenant(), request.id):
            raise NotFoundError(f"no pattern {request.id!r} in this tenant's library")
        return empty_pb2.Empty()

    def ExportMarker(
        self, request: pb.ExportMarkerRequest, context: grpc.ServicerContext
    ) -> pb.ExportMarkerResponse:
        if request.format not in WRITERS:
            raise InvalidArgumentError.for_field("format", "must be SVG, DXF, HPGL, GCODE, HTML or JSON")
        marker = marker_from_proto(self._marker(request.operation))
        write, mime, ext = WRITERS[request.format]
        stem = marker.name or request.operation.rsplit("/", 1)[-1]
        return pb.ExportMarkerResponse(content=write(marker), mime_type=mime, file_name=f"{stem}.{ext}")

    def ImportMarker(
        self, request: pb.ImportMarkerRequest, context: grpc.ServicerContext
    ) -> pb.ImportMarkerResponse:
        v = Violations()
        v.check(request.format == pb.FILE_FORMAT_DXF, "format", "must be DXF (an AAMA/ASTM marker file)")
        v.check(len(request.content) > 0, "content", "the file is empty")
        v.check(
            _finite(request.unit_mm) and request.unit_mm >= 0, "unit_mm", "must be >= 0 (0: the file's units)"
        )
        v.raise_if_any("the marker import request is invalid")
        try:
            marker, warnings = formats.import_marker_dxf(request.content, request.unit_mm)
        except (formats.ImportError_, ValueError) as exc:
            raise InvalidArgumentError.for_field(
                "content", f"cannot read a marker: {formats.printable(str(exc), 300)}"
            ) from None
        return pb.ImportMarkerResponse(marker=marker_to_proto(marker), warnings=warnings)


PAIR_MODES = (pb.PAIR_MODE_UNSPECIFIED, pb.PAIR_MODE_MIRRORED, pb.PAIR_MODE_SAME_HAND)
WRITERS: dict[int, tuple[Callable[[Marker], bytes], str, str]] = {
    pb.FILE_FORMAT_SVG: (formats.export_svg, "image/svg+xml", "svg"),
    pb.FILE_FORMAT_DXF: (formats.export_dxf, "image/vnd.dxf", "dxf"),
    pb.FILE_FORMAT_HPGL: (formats.export_hpgl, "application/vnd.hp-hpgl", "plt"),
    pb.FILE_FORMAT_GCODE: (formats.export_gcode, "text/x-gcode", "nc"),
    pb.FILE_FORMAT_HTML: (formats.export_report_html, "text/html", "html"),
    pb.FILE_FORMAT_JSON: (
        lambda m: json.dumps(formats.marker_json(m), indent=1).encode(),
        "application/json",
        "json",
    ),
}
