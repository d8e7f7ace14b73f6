"""Made to measure from a graded pattern: one customer's pieces between two graded sizes. No gRPC.

A graded pattern (AccuMark writes every size with the same vertices in the same order) is a
family of shapes indexed by size. A customer between two sizes gets each piece interpolated
point by point between the two sizes' pieces: cut line, notches, drill holes, internal lines and
grain line. Linear interpolation of corresponding points is what grading itself does between
grade points, so halfway between 50 and 52 is the 51 the grader would have drawn. Where the two
sizes do not correspond (different vertex or feature counts, or vertices that do not match up)
the nearest size is cut as graded, and the note says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from shapely.geometry import Polygon

from atelier.nesting.domain import PieceSpec, Point

# The interpolated cut line's area must lie between the two sizes' areas, within this share of
# their difference plus 0.5% (a polygon whose vertices do not correspond folds or shrinks).
AREA_SLACK = 0.005


@dataclass(frozen=True)
class ZoneDifference:
    """One body zone of a size recommendation: body minus the middle of each size's range, in cm."""

    measurement: str
    best_cm: float
    second_cm: float


def fraction_from_zones(zones: Sequence[ZoneDifference]) -> tuple[float, str]:
    """Where the customer lies from the best size (0) toward the second (1), and how it was found.

    Per zone, the two sizes' range middles are m_b = body - d_b and m_s = body - d_s, so the body
    lies at t = (body - m_b) / (m_s - m_b) = d_b / (d_b - d_s) between them. Zones whose middles
    coincide (they do not grade between the two sizes) say nothing and are skipped."""
    parts: list[tuple[str, float]] = []
    for z in zones:
        step = z.best_cm - z.second_cm
        if abs(step) > 1e-9:
            parts.append((z.measurement, z.best_cm / step))
    if not parts:
        return 0.0, "no zone grades between the two sizes: the nearest size as graded"
    mean = sum(t for _, t in parts) / len(parts)
    t = min(1.0, max(0.0, mean))
    how = ", ".join(f"{name} {value:.2f}" for name, value in parts)
    if t != mean:
        how += f"; mean {mean:.2f} clamped to {t:.2f}"
    return t, how


def _lerp(a: Sequence[Point], b: Sequence[Point], t: float) -> tuple[Point, ...]:
    return tuple((ax + t * (bx - ax), ay + t * (by - ay)) for (ax, ay), (bx, by) in zip(a, b, strict=True))


def _centred(points: Sequence[Point]) -> list[Point]:
    cx = sum(p[0] for p in points) / len(points)
    cy = sum(p[1] for p in points) / len(points)
    return [(x - cx, y - cy) for x, y in points]


def aligned(a: PieceSpec, b: PieceSpec) -> PieceSpec:
    """b's cut line started at the vertex that corresponds to a's first vertex. Graded sizes keep
    their vertices in order, but a cut line rebuilt by unfolding a fold line (a union) may start
    elsewhere in each size: the cyclic shift with the least squared distance about the centroids
    is the correspondence (same direction of travel only; a reversed ring is not a graded size)."""
    if len(a.outline_mm) != len(b.outline_mm) or len(a.outline_mm) < 3:
        return b
    pa = np.asarray(_centred(a.outline_mm))
    pb = np.asarray(_centred(b.outline_mm))
    # sum_i |a_i - b_(i+k)|^2 = const - 2 sum_i a_i . b_(i+k): the largest circular cross-correlation.
    corr = np.real(np.fft.ifft(np.conj(np.fft.fft(pa[:, 0])) * np.fft.fft(pb[:, 0])))
    corr += np.real(np.fft.ifft(np.conj(np.fft.fft(pa[:, 1])) * np.fft.fft(pb[:, 1])))
    shift = int(np.argmax(corr))
    if shift == 0:
        return b
    outline = b.outline_mm[shift:] + b.outline_mm[:shift]
    return replace(b, outline_mm=outline)


def correspond(a: PieceSpec, b: PieceSpec) -> str:
    """Why two sizes of a piece cannot be interpolated point by point ('' when they can)."""
    if len(a.outline_mm) != len(b.outline_mm):
        return f"cut lines of {len(a.outline_mm)} and {len(b.outline_mm)} vertices"
    if len(a.notches_mm) != len(b.notches_mm) or len(a.drills_mm) != len(b.drills_mm):
        return "different notch or drill counts"
    if [len(x) for x in a.internal_lines_mm] != [len(x) for x in b.internal_lines_mm]:
        return "different internal lines"
    if len(a.grain_line_mm) != len(b.grain_line_mm):
        return "a grain line in one size only"
    # Sizes are drawn at different places: compare the shapes about their vertex centroids. Graded
    # neighbours move each vertex by a few mm to a few cm; a shifted start vertex moves it by a
    # large part of the piece.
    ca, cb = _centred(a.outline_mm), _centred(b.outline_mm)
    x0, y0, x1, y1 = Polygon(a.outline_mm).bounds
    size = math.hypot(x1 - x0, y1 - y0)
    worst = max(math.dist(p, q) for p, q in zip(ca, cb, strict=True))
    if worst > 0.15 * size:
        return f"vertices that do not correspond (one moves {worst:.0f} mm of a {size:.0f} mm piece)"
    return ""


def interpolate(a: PieceSpec, b: PieceSpec, t: float, size: str) -> tuple[PieceSpec | None, str]:
    """Piece a (t = 0) toward piece b (t = 1), or None and why not."""
    b = aligned(a, b)
    why = correspond(a, b)
    if why:
        return None, why
    outline = _lerp(a.outline_mm, b.outline_mm, t)
    poly = Polygon(outline)
    area_a, area_b = abs(Polygon(a.outline_mm).area), abs(Polygon(b.outline_mm).area)
    low, high = min(area_a, area_b), max(area_a, area_b)
    slack = (high - low) * 0.5 + AREA_SLACK * high
    if not poly.is_valid or not (low - slack <= poly.area <= high + slack):
        return None, "the interpolated cut line is not a simple polygon between the two sizes"
    piece = replace(
        a,
        id=f"{a.id}>{b.size}@{t:.2f}",
        outline_mm=outline,
        size=size,
        notches_mm=_lerp(a.notches_mm, b.notches_mm, t),
        drills_mm=_lerp(a.drills_mm, b.drills_mm, t),
        internal_lines_mm=tuple(
            _lerp(x, y, t) for x, y in zip(a.internal_lines_mm, b.internal_lines_mm, strict=True)
        ),
        grain_line_mm=_lerp(a.grain_line_mm, b.grain_line_mm, t),
    )
    return piece, ""


def size_label(size: str, toward: str, t: float) -> str:
    """The marker's size name for one customer: '50' as graded, '50>52@0.37' between two sizes."""
    return size if not toward or t == 0.0 else f"{size}>{toward}@{t:.2f}"


def made_to_measure(
    pieces: Sequence[PieceSpec], size: str, toward: str, t: float
) -> tuple[list[PieceSpec], str, list[str]]:
    """The customer's pieces (every piece of `size`, each interpolated toward its `toward` size by
    t), the size label they carry, and notes for the marker. Pieces are matched by name."""
    label = size_label(size, toward, t)
    base = [p for p in pieces if p.size == size]
    if not toward or t == 0.0:
        return [replace(p, size=label) for p in base], label, [f"made to measure: size {size} as graded"]
    other = {p.name or p.id: p for p in pieces if p.size == toward}
    out: list[PieceSpec] = []
    blended = 0
    notes: list[str] = []
    for p in base:
        q = other.get(p.name or p.id)
        if q is None:
            out.append(replace(p, size=label))
            notes.append(f"piece {p.name or p.id!r}: no size {toward}; size {size} as graded")
            continue
        piece, why = interpolate(p, q, t, label)
        if piece is None:
            out.append(replace(p, size=label))
            notes.append(f"piece {p.name or p.id!r}: {why}; size {size} as graded")
            continue
        out.append(piece)
        blended += 1
    notes.insert(
        0,
        f"made to measure: {blended} of {len(base)} pieces interpolated {t:.2f} of the way from size "
        f"{size} to size {toward}",
    )
    return out, label, notes
