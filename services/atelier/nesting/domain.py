"""The garment layer of marker making: pieces, fabric, rules, and the marker a job returns.

Pure Python (shapely for geometry): no gRPC here. Units are millimetres and degrees.
x runs along the roll (the marker length), y across it (the fabric width).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from enum import Enum

from shapely.geometry import Polygon

Point = tuple[float, float]

# Documented limits (proto comments and README.md); validation enforces them.
MAX_PLACED_PIECES = 1000
MAX_PIECE_TYPES = 500
MAX_VERTICES = 1000
MAX_TIME_BUDGET_S = 3600
DEFAULT_TIME_BUDGET_S = 30
MAX_SIZES = 50
MAX_RATIO_COUNT = 100
# Coordinates and fabric sizes: 1 km / 100 m are far beyond any piece or roll, and keep the geometry
# far from where float arithmetic overflows (a 1e300 mm coordinate squared is infinite).
MAX_COORDINATE_MM = 1_000_000.0
MAX_FABRIC_WIDTH_MM = 100_000.0
MAX_FABRIC_LENGTH_MM = 10_000_000.0


class Grain(Enum):
    FIXED = "fixed"  # 0 only
    WOVEN = "woven"  # 0/180: grain line parallel to the selvage
    FOUR_WAY = "four_way"  # 0/90/180/270
    FREE = "free"  # any angle
    STEP = "step"  # multiples of rotation_step_deg


class Mirror(Enum):
    NONE = "none"
    PAIR = "pair"  # every copy is a left/right pair
    ALLOWED = "allowed"  # fixed split: floor(n/2) mirrored (the solver cannot choose flips)


@dataclass(frozen=True)
class PieceSpec:
    id: str
    outline_mm: tuple[Point, ...]
    quantity: int = 1
    grain: Grain = Grain.WOVEN
    rotation_step_deg: float = 0.0
    mirror: Mirror = Mirror.NONE
    size: str = ""
    name: str = ""
    # What travels with the piece onto the marker (same coordinates as the outline): notch
    # positions on the cut line, drill holes, internal lines (marked, not cut), the grain line.
    notches_mm: tuple[Point, ...] = ()
    drills_mm: tuple[Point, ...] = ()
    internal_lines_mm: tuple[tuple[Point, ...], ...] = ()
    grain_line_mm: tuple[Point, ...] = ()
    category: str = ""
    material: str = ""
    annotation: str = ""

    def allowed_rotations_deg(self) -> list[float] | None:
        """The rotations the grain rule allows; None means any angle."""
        if self.grain is Grain.FIXED:
            return [0.0]
        if self.grain is Grain.WOVEN:
            return [0.0, 180.0]
        if self.grain is Grain.FOUR_WAY:
            return [0.0, 90.0, 180.0, 270.0]
        if self.grain is Grain.STEP:
            count = round(360.0 / self.rotation_step_deg)
            return [i * self.rotation_step_deg for i in range(count)]
        return None


@dataclass(frozen=True)
class FlawZone:
    outline_mm: tuple[Point, ...]
    reason: str = ""


@dataclass(frozen=True)
class FabricSpec:
    width_mm: float
    max_length_mm: float = 0.0  # 0: unlimited
    edge_margin_mm: float = 0.0  # along both selvages (y = 0 and y = width)
    end_margin_mm: float = 0.0  # at the start and end of the marker
    flaws: tuple[FlawZone, ...] = ()


@dataclass(frozen=True)
class MarkerRequest:
    pieces: tuple[PieceSpec, ...]
    fabric: FabricSpec
    spacing_mm: float = 0.0
    ratios: dict[str, int] = field(default_factory=dict)
    time_budget_s: int = DEFAULT_TIME_BUDGET_S
    seed: int = 0
    name: str = ""
    pattern_id: str = ""  # the library pattern the pieces came from
    notes: tuple[str, ...] = ()  # what was done before the solver (made to measure), for the marker


@dataclass(frozen=True)
class ItemType:
    """One shape the solver places: a piece as drawn or its mirror image."""

    key: str  # the solver's item id
    piece_index: int
    mirrored: bool
    outline_mm: tuple[Point, ...]  # mirrored about the x axis when mirrored
    demand: int
    rotations_deg: list[float] | None
    first_copy: int  # copy number of the first placed instance


@dataclass(frozen=True)
class PlacedPiece:
    piece_id: str
    copy: int
    size: str
    x_mm: float
    y_mm: float
    rotation_deg: float
    mirrored: bool
    outline_mm: tuple[Point, ...]
    # The piece's notches, drill holes, internal lines and grain line at their placed positions.
    name: str = ""
    notches_mm: tuple[Point, ...] = ()
    drills_mm: tuple[Point, ...] = ()
    internal_lines_mm: tuple[tuple[Point, ...], ...] = ()
    grain_line_mm: tuple[Point, ...] = ()

    def shifted(self, dx_mm: float) -> PlacedPiece:
        """The same placement moved dx_mm along the roll (features included)."""

        def move(points: tuple[Point, ...]) -> tuple[Point, ...]:
            return tuple((x + dx_mm, y) for x, y in points)

        return replace(
            self,
            x_mm=self.x_mm + dx_mm,
            outline_mm=move(self.outline_mm),
            notches_mm=move(self.notches_mm),
            drills_mm=move(self.drills_mm),
            internal_lines_mm=tuple(move(line) for line in self.internal_lines_mm),
            grain_line_mm=move(self.grain_line_mm),
        )


def place_piece(
    piece: PieceSpec, copy: int, mirrored: bool, rotation_deg: float, x_mm: float, y_mm: float
) -> PlacedPiece:
    """The piece mirrored (about the x axis) when asked, rotated, translated: outline and features."""

    def put(points: tuple[Point, ...]) -> tuple[Point, ...]:
        return transform(mirror_outline(points) if mirrored else points, rotation_deg, x_mm, y_mm)

    return PlacedPiece(
        piece.id,
        copy,
        piece.size,
        x_mm,
        y_mm,
        rotation_deg,
        mirrored,
        put(piece.outline_mm),
        name=piece.name,
        notches_mm=put(piece.notches_mm),
        drills_mm=put(piece.drills_mm),
        internal_lines_mm=tuple(put(line) for line in piece.internal_lines_mm),
        grain_line_mm=put(piece.grain_line_mm),
    )


@dataclass
class Marker:
    name: str
    placements: list[PlacedPiece]
    length_mm: float
    width_mm: float
    piece_area_mm2: float
    final: bool = False
    elapsed_s: float = 0.0
    seed: int = 0
    spacing_mm: float = 0.0
    fabric: FabricSpec | None = None
    notes: list[str] = field(default_factory=list)
    ratios: dict[str, int] = field(default_factory=dict)  # garments per size, for the report
    pattern_id: str = ""

    @property
    def efficiency(self) -> float:
        used = self.width_mm * self.length_mm
        return self.piece_area_mm2 / used if used > 0 else 0.0

    @property
    def waste_area_mm2(self) -> float:
        return max(0.0, self.width_mm * self.length_mm - self.piece_area_mm2)


def mirror_outline(outline: tuple[Point, ...]) -> tuple[Point, ...]:
    """Reflection about the x axis (y -> -y): the other half of a left/right pair."""
    return tuple((x, -y) for x, y in outline)


def copies_of(piece: PieceSpec, ratios: dict[str, int]) -> int:
    """How many copies of the piece the marker holds (size ratio times quantity)."""
    return piece.quantity * (ratios[piece.size] if ratios else 1)


def expand_items(request: MarkerRequest) -> list[ItemType]:
    """Pieces -> solver item types: size ratios multiply, mirrored copies become their own type."""
    items: list[ItemType] = []
    for index, piece in enumerate(request.pieces):
        total = copies_of(piece, request.ratios)
        rotations = piece.allowed_rotations_deg()
        if piece.mirror is Mirror.PAIR:
            drawn, mirrored, mirrored_first = total, total, 0
        elif piece.mirror is Mirror.ALLOWED:
            mirrored = total // 2
            drawn, mirrored_first = total - mirrored, total - mirrored
        else:
            drawn, mirrored, mirrored_first = total, 0, 0
        if drawn:
            items.append(ItemType(f"p{index}", index, False, piece.outline_mm, drawn, rotations, 0))
        if mirrored:
            items.append(
                ItemType(
                    f"p{index}m",
                    index,
                    True,
                    mirror_outline(piece.outline_mm),
                    mirrored,
                    rotations,
                    mirrored_first,
                )
            )
    return items


def transform(outline: tuple[Point, ...], rotation_deg: float, x_mm: float, y_mm: float) -> tuple[Point, ...]:
    """Rotate about the origin, then translate (the solver's convention)."""
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    return tuple((c * px - s * py + x_mm, s * px + c * py + y_mm) for px, py in outline)


def extent_y_mm(outline: tuple[Point, ...], rotation_deg: float) -> float:
    ys = [p[1] for p in transform(outline, rotation_deg, 0.0, 0.0)]
    return max(ys) - min(ys)


def min_extent_y_mm(piece: PieceSpec) -> tuple[float, float]:
    """The smallest width across the roll the piece can take under its grain rule, and at which angle."""
    rotations = piece.allowed_rotations_deg()
    if rotations is None:
        # Free rotation: the narrowest direction of a convex hull is along one of its edges.
        hull = Polygon(piece.outline_mm).convex_hull.exterior.coords
        rotations = []
        for (x0, y0), (x1, y1) in itertools.pairwise(hull):
            rotations.append(-math.degrees(math.atan2(y1 - y0, x1 - x0)))
    return min((extent_y_mm(piece.outline_mm, r), r) for r in rotations)


def piece_area_mm2(request: MarkerRequest) -> float:
    return sum(
        Polygon(p.outline_mm).area * copies_of(p, request.ratios) * (2 if p.mirror is Mirror.PAIR else 1)
        for p in request.pieces
    )


def placed_count(request: MarkerRequest) -> int:
    return sum(copies_of(p, request.ratios) * (2 if p.mirror is Mirror.PAIR else 1) for p in request.pieces)
