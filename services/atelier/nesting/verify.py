"""Independent check of a marker with shapely, before anyone sees it.

The solver computes in float32, so the checks allow a tolerance that grows with the marker's
size: TOLERANCE_MM plus 1e-6 of the larger fabric dimension (0.011 mm on a 10 m marker);
an overlap may be at most that thickness along the shorter of the two perimeters.
"""

from __future__ import annotations

import math
from collections import Counter

from shapely import STRtree
from shapely.geometry import Polygon

from atelier.nesting.domain import Marker, MarkerRequest, Mirror, copies_of, mirror_outline, transform

TOLERANCE_MM = 1e-3


class VerificationError(Exception):
    """The marker breaks a rule; it must not be returned."""


def tolerance_mm(marker: Marker) -> float:
    return TOLERANCE_MM + 1e-6 * max(marker.width_mm, marker.length_mm)


def verify_marker(request: MarkerRequest, marker: Marker) -> None:
    """Raises VerificationError naming the first broken rule."""
    tol = tolerance_mm(marker)
    fabric = request.fabric
    pieces = {p.id: p for p in request.pieces}
    expected: Counter[tuple[str, bool]] = Counter()
    for piece in request.pieces:
        total = copies_of(piece, request.ratios)
        if piece.mirror is Mirror.PAIR:
            expected[(piece.id, False)] += total
            expected[(piece.id, True)] += total
        elif piece.mirror is Mirror.ALLOWED:
            expected[(piece.id, True)] += total // 2
            expected[(piece.id, False)] += total - total // 2
        else:
            expected[(piece.id, False)] += total
    found = Counter((p.piece_id, p.mirrored) for p in marker.placements)
    if +found != +expected:
        raise VerificationError(f"placed copies {dict(+found)} differ from the demand {dict(+expected)}")
    seen: set[tuple[str, bool, int]] = set()
    polys: list[Polygon] = []
    for pl in marker.placements:
        piece = pieces[pl.piece_id]
        key = (pl.piece_id, pl.mirrored, pl.copy)
        if key in seen:
            raise VerificationError(f"copy {pl.copy} of piece {pl.piece_id!r} placed twice")
        seen.add(key)
        allowed = piece.allowed_rotations_deg()
        if allowed is not None and not any(
            abs(((pl.rotation_deg - a + 180) % 360) - 180) < 1e-6 for a in allowed
        ):
            raise VerificationError(
                f"piece {pl.piece_id!r} rotated {pl.rotation_deg} deg, grain allows {allowed}"
            )
        # The outline must be what the placement fields say (so exports and cutters agree).
        base = mirror_outline(piece.outline_mm) if pl.mirrored else piece.outline_mm
        expect = transform(base, pl.rotation_deg, pl.x_mm, pl.y_mm)
        if len(expect) != len(pl.outline_mm) or any(
            math.dist(a, b) > tol for a, b in zip(expect, pl.outline_mm, strict=True)
        ):
            raise VerificationError(
                f"outline of piece {pl.piece_id!r} copy {pl.copy} does not match its placement"
            )
        poly = Polygon(pl.outline_mm)
        x0, y0, x1, y1 = poly.bounds
        if (
            x0 < fabric.end_margin_mm - tol
            or y0 < fabric.edge_margin_mm - tol
            or y1 > fabric.width_mm - fabric.edge_margin_mm + tol
            or x1 > marker.length_mm - fabric.end_margin_mm + tol
        ):
            raise VerificationError(
                f"piece {pl.piece_id!r} copy {pl.copy} lies outside the fabric or its margins "
                f"(bounds {x0:.3f},{y0:.3f}-{x1:.3f},{y1:.3f})"
            )
        polys.append(poly)
    spacing = request.spacing_mm
    tree = STRtree(polys)
    for i, poly in enumerate(polys):
        for j in tree.query(poly.buffer(max(spacing, tol), join_style="mitre")):
            if j <= i:
                continue
            _check_pair(poly, polys[j], spacing, tol, f"pieces {_name(marker, i)} and {_name(marker, j)}")
    for k, flaw in enumerate(fabric.flaws):
        zone = Polygon(flaw.outline_mm)
        for j in tree.query(zone.buffer(max(spacing, tol), join_style="mitre")):
            _check_pair(zone, polys[j], spacing, tol, f"flaw zone {k} and piece {_name(marker, j)}")


def _check_pair(a: Polygon, b: Polygon, spacing: float, tol: float, what: str) -> None:
    if spacing > 0:
        gap = a.distance(b)
        if gap < spacing - tol:
            raise VerificationError(f"{what} are {gap:.3f} mm apart, spacing is {spacing} mm")
    else:
        overlap = a.intersection(b).area
        if overlap > tol * min(a.length, b.length):
            raise VerificationError(f"{what} overlap by {overlap:.4f} mm2")


def _name(marker: Marker, index: int) -> str:
    pl = marker.placements[index]
    return f"{pl.piece_id!r}#{pl.copy}{'m' if pl.mirrored else ''}"
