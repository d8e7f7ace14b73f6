"""The nesting gRPC servicer: protobuf <-> domain, validation once at the boundary, jobs."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import grpc
from google.longrunning import operations_pb2
from prometheus_client import Counter, Histogram
from shapely.geometry import Polygon
from shapely.validation import explain_validity

from atelier.common.v1 import geometry_pb2, progress_pb2
from atelier.nesting import formats
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
from atelier.nesting.v1 import nesting_pb2 as pb
from atelier.nesting.v1 import nesting_pb2_grpc
from atelier.runtime.errors import FailedPreconditionError, InvalidArgumentError, Violations
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
    )


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


def validate_create(request: pb.CreateMarkerRequest) -> MarkerRequest:
    """Every violation of the request at once, or the domain request."""
    v = Violations()
    fabric_msg = request.fabric
    width = fabric_msg.width_mm
    v.check(
        _finite(width) and 0 < width <= MAX_FABRIC_WIDTH_MM,
        "fabric.width_mm",
        f"must be > 0 and at most {MAX_FABRIC_WIDTH_MM:g} mm",
    )
    for name in ("max_length_mm", "edge_margin_mm", "end_margin_mm"):
        value = getattr(fabric_msg, name)
        v.check(
            _finite(value) and 0 <= value <= MAX_FABRIC_LENGTH_MM,
            f"fabric.{name}",
            f"must be >= 0 and at most {MAX_FABRIC_LENGTH_MM:g} mm",
        )
    margin = fabric_msg.edge_margin_mm
    if width > 0 and margin >= 0:
        v.check(
            2 * margin < width,
            "fabric.edge_margin_mm",
            f"two margins of {margin} mm leave no width of {width} mm",
        )
    spacing = request.spacing_mm
    v.check(
        _finite(spacing) and spacing >= 0 and (width <= 0 or spacing < width),
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

    v.check(len(request.pieces) > 0, "pieces", "at least one piece is required")
    v.check(len(request.pieces) <= MAX_PIECE_TYPES, "pieces", f"at most {MAX_PIECE_TYPES} pieces per request")
    usable = width - 2 * margin
    pieces: list[PieceSpec] = []
    ids: set[str] = set()
    for i, msg in enumerate(request.pieces[:MAX_PIECE_TYPES]):
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
        )
        if usable > 0 and spacing >= 0:
            narrowest, angle = min_extent_y_mm(piece)
            v.check(
                narrowest <= usable + 1e-9,
                f"{path}.outline",
                f"{narrowest:.1f} mm across the roll at best ({angle:g} deg, grain {grain.value}); "
                f"the usable width is {usable:.1f} mm",
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


def check_operation(name: str) -> None:
    if not name.startswith(OPERATION_PREFIX):
        raise InvalidArgumentError.for_field(
            "operation", f"must be an operation name from CreateMarker ({OPERATION_PREFIX}...), got {name!r}"
        )


# -- the servicer ---------------------------------------------------------------------------------


class NestingServicer(nesting_pb2_grpc.NestingServiceServicer):
    def __init__(self, jobs: JobManager, solver_workers: int | None) -> None:
        self.jobs = jobs
        self.solver_workers = solver_workers

    def CreateMarker(
        self, request: pb.CreateMarkerRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        domain = validate_create(request)
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
        v.raise_if_any("the import request is invalid")
        reader = formats.import_dxf if request.format == pb.FILE_FORMAT_DXF else formats.import_json
        try:
            imported = reader(request.content, request.unit_mm)
        except (formats.ImportError_, KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError.for_field("content", f"cannot read pieces: {exc}") from None
        _check_imported(imported)
        return pb.ImportPiecesResponse(
            pieces=[piece_to_proto(p) for p in imported.pieces],
            fabric_width_mm=imported.fabric_width_mm,
            warnings=imported.warnings,
        )

    def ExportMarker(
        self, request: pb.ExportMarkerRequest, context: grpc.ServicerContext
    ) -> pb.ExportMarkerResponse:
        writers = {
            pb.FILE_FORMAT_SVG: (formats.export_svg, "image/svg+xml", "svg"),
            pb.FILE_FORMAT_DXF: (formats.export_dxf, "image/vnd.dxf", "dxf"),
            pb.FILE_FORMAT_HPGL: (formats.export_hpgl, "application/vnd.hp-hpgl", "plt"),
            pb.FILE_FORMAT_JSON: (
                lambda m: formats.json.dumps(formats.marker_json(m), indent=1).encode(),
                "application/json",
                "json",
            ),
        }
        if request.format not in writers:
            raise InvalidArgumentError.for_field("format", "must be SVG, DXF, HPGL or JSON")
        marker = marker_from_proto(self._marker(request.operation))
        write, mime, ext = writers[request.format]
        stem = marker.name or request.operation.rsplit("/", 1)[-1]
        return pb.ExportMarkerResponse(content=write(marker), mime_type=mime, file_name=f"{stem}.{ext}")
