"""From an anomaly map to defect regions: outline, size, score and a defect type.

Axes: image rows (y) run along the roll (a line camera adds one row per scan line), columns
(x) across it. So a warp-direction line (broken end) is long in y, a weft-direction line
(broken pick) long in x. Roll coordinates in mm follow atelier.common.v1: x along the roll,
y across it.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

import cv2
import numpy as np

from atelier.inspection.fabric import selvage_zone

MAX_REGIONS = 100
MIN_AREA_PX = 16
# Gaps up to this size inside one defect (a broken pick seen in pieces) are closed.
JOIN_GAP_PX = 9
LINE_ELONGATION = 3.0
LINE_MIN_LENGTH_PX = 40
# A line within this angle (degrees) of an axis runs along it; between the two it is diagonal.
AXIS_TOLERANCE_DEG = 25.0
# Hole: its core is at least HOLE_CONTRAST robust spreads (MAD) from the cloth's median brightness
# and flat (its spread under HOLE_TEXTURE_RATIO of the cloth's): light through the opening, or the
# bed or backing behind it, never the weave.
HOLE_CONTRAST = 6.0
HOLE_TEXTURE_RATIO = 0.35
HOLE_MIN_CORE_PX = 16
# A hole is an opening, not a thread: a flat bright core longer than this many times its width is a
# broken or loose yarn seen against the light (AITEX 02's broken yarns: 4.6 MADs, 87-240 x 5-10 px).
HOLE_MAX_ELONGATION = 5.0
# Small defects by the size of their core (pixels that stand out of the local weave).
NEP_MAX_LENGTH_PX = 32  # neps and fuzzyballs: about 8-30 px
KNOT_MAX_LENGTH_PX = 64
SLUB_ELONGATION = 2.0  # a slub or thick place follows its yarn: longer than wide
STAIN_CONTRAST = 1.5
CONTAMINATION_TEXTURE_RATIO = 1.5
# A pixel belongs to a defect's core when it is this many MADs from the local background (3x3 mean
# against a 31 px median: the weave's own texture stays under it).
CORE_DEVIATION = 3.0
POLYGON_TOLERANCE_PX = 1.5


class DefectKind(enum.Enum):
    HOLE = "hole"
    STAIN = "stain"
    WARP_LINE = "warp_line"
    WEFT_LINE = "weft_line"
    KNOT = "knot"
    CREASE = "crease"
    EDGE = "edge"
    OTHER = "other"
    CONTAMINATION = "contamination"
    SLUB = "slub"
    NEP = "nep"


@dataclass(frozen=True)
class Region:
    x_px: int
    y_px: int
    width_px: int
    height_px: int
    polygon_px: list[tuple[float, float]]
    score: float  # peak anomaly score in the region (same scale as the profile threshold)
    kind: DefectKind
    length_px: float  # longest extent (minimum-area rectangle's long side)
    area_px: int


COMPACT_KINDS = frozenset({DefectKind.HOLE, DefectKind.NEP, DefectKind.KNOT, DefectKind.SLUB})


@dataclass(frozen=True)
class Measures:
    """What a region measures, in image pixels; what classify() types it by."""

    long_px: float  # the anomalous region's minimum-area rectangle
    short_px: float
    angle_from_x_deg: float  # its long side's angle from the image x axis (across the roll), 0..90
    core_long_px: float  # the core (pixels standing out of the local weave), 0 when there is none
    core_short_px: float
    core_px: int
    core_angle_from_x_deg: float  # the core's long side from the image x axis, 0..90
    contrast: float  # core's mean brightness minus the cloth median, in MADs (signed: polarity)
    texture_ratio: float  # core's spread / the cloth's spread (a flat hole ~0, contamination high)
    at_selvage: bool
    # The region's strongest 15 px average brightness against the cloth median, in MADs (signed):
    # a diffuse stain has no core but shifts the brightness over an area.
    area_contrast: float = 0.0


def find_regions(anomaly: np.ndarray, threshold: float, grey: np.ndarray, pad: np.ndarray) -> list[Region]:
    """Regions of `anomaly` above `threshold`, typed; `pad` is the off-fabric mask (bed, padding)."""
    hot = (anomaly > threshold).astype(np.uint8)
    if not hot.any():
        return []
    hot = cv2.morphologyEx(hot, cv2.MORPH_CLOSE, np.ones((JOIN_GAP_PX, JOIN_GAP_PX), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
    fabric = grey[~pad] if (~pad).any() else grey.ravel()
    median = float(np.median(fabric))
    spread = 1.4826 * float(np.median(np.abs(fabric.astype(np.float32) - median))) + 1e-3
    fabric_std = float(fabric.std()) + 1e-3
    selvage = selvage_zone(pad)
    found: list[Region] = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < MIN_AREA_PX:
            continue
        component = labels[y : y + h, x : x + w] == label
        peak = float(anomaly[y : y + h, x : x + w][component].max())
        contours, _ = cv2.findContours(component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contour = max(contours, key=cv2.contourArea)
        (_, _), (rw, rh), angle = cv2.minAreaRect(contour)
        approx = cv2.approxPolyDP(contour, POLYGON_TOLERANCE_PX, True).reshape(-1, 2)
        polygon = [(float(px + x), float(py + y)) for px, py in approx]
        measures = measure(grey, pad, component, (x, y, w, h), median, spread, fabric_std)
        measures = dataclasses.replace(
            measures,
            long_px=float(max(rw, rh)),
            short_px=float(max(min(rw, rh), 1.0)),
            angle_from_x_deg=_long_axis_angle(rw, rh, angle),
            at_selvage=bool(selvage[y : y + h, x : x + w][component].any()),
        )
        kind = classify(measures)
        length = float(max(rw, rh, 1.0))
        if kind in COMPACT_KINDS and measures.core_px >= 3:
            # Compact defects are measured on their core: the anomaly region around them is wider by
            # the feature grid and its blur (a 20 px hole would otherwise grade as over 1 inch).
            length = max(measures.core_long_px, 1.0)
        found.append(Region(x, y, w, h, polygon, peak, kind, length, area))
    found.sort(key=lambda r: r.score, reverse=True)
    return found[:MAX_REGIONS]


def measure(
    grey: np.ndarray,
    pad: np.ndarray,
    component: np.ndarray,
    box: tuple[int, int, int, int],
    median: float,
    spread: float,
    fabric_std: float,
) -> Measures:
    """Core, contrast and texture of one region (its shape is filled in by the caller).

    The core is the strongest connected set of pixels inside the region that stand out of the local
    weave (3x3 mean against a 31 px median, CORE_DEVIATION MADs, one polarity): a nep, a hole, a slub
    themselves rather than the anomaly halo around them. A diffuse stain has no core (the median
    follows it): its contrast is the region's mean against the cloth's median.
    """
    x, y, w, h = box
    reach = 16  # context around the box for the local background
    top, left = max(0, y - reach), max(0, x - reach)
    bottom, right = min(grey.shape[0], y + h + reach), min(grey.shape[1], x + w + reach)
    patch = grey[top:bottom, left:right].astype(np.float32)
    background = cv2.medianBlur(grey[top:bottom, left:right], 31).astype(np.float32)
    deviation = (cv2.blur(patch, (3, 3)) - background) / spread
    inside = np.zeros(patch.shape, bool)
    inside[y - top : y - top + h, x - left : x - left + w] = component
    inside &= ~pad[top:bottom, left:right]
    region_values = patch[inside]
    core = np.zeros(patch.shape, bool)
    strength = np.abs(deviation) * (inside & (np.abs(deviation) >= CORE_DEVIATION))
    if strength.any():
        # Pieces of one defect broken up by the weave running through it (a slub's yarn) are one core.
        joined = cv2.morphologyEx((strength > 0).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        count, labels = cv2.connectedComponents(joined & inside.astype(np.uint8), connectivity=8)
        sums = np.bincount(labels.ravel(), weights=strength.ravel(), minlength=count)
        sums[0] = 0.0
        core = labels == int(sums.argmax())
    core_px = int(core.sum())
    core_angle = 0.0
    if core_px >= 3:
        points = np.argwhere(core)[:, ::-1].astype(np.float32)
        (_, _), (cw, ch), core_rect_angle = cv2.minAreaRect(points)
        core_long, core_short = float(max(cw, ch)) + 1.0, float(min(cw, ch)) + 1.0
        core_angle = _long_axis_angle(cw, ch, core_rect_angle)
    else:
        core_long = core_short = 0.0
    # Brightness and flatness of the core's interior (its rim is blurred by the optics), else the region.
    interior = cv2.erode(core.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    values = patch[interior] if interior.sum() >= HOLE_MIN_CORE_PX else region_values
    contrast = (float(values.mean()) - median) / spread if values.size else 0.0
    smooth = (cv2.blur(patch, (15, 15))[inside] - median) / spread
    area_contrast = float(smooth[np.abs(smooth).argmax()]) if smooth.size else 0.0
    return Measures(
        long_px=0.0,
        short_px=1.0,
        angle_from_x_deg=0.0,
        core_long_px=core_long,
        core_short_px=core_short,
        core_px=core_px,
        core_angle_from_x_deg=core_angle,
        contrast=contrast,
        texture_ratio=float(values.std()) / fabric_std if values.size > 1 else 1.0,
        at_selvage=False,
        area_contrast=area_contrast,
    )


def _long_axis_angle(rw: float, rh: float, angle: float) -> float:
    """Angle of the rectangle's long side from the image x axis, 0..90 degrees."""
    a = angle if rw >= rh else angle + 90.0
    a = abs(a) % 180.0
    return 180.0 - a if a > 90.0 else a


def _line(angle_from_x_deg: float) -> DefectKind:
    if angle_from_x_deg >= 90.0 - AXIS_TOLERANCE_DEG:
        return DefectKind.WARP_LINE  # along y, the roll direction
    if angle_from_x_deg <= AXIS_TOLERANCE_DEG:
        return DefectKind.WEFT_LINE  # along x, across the roll
    return DefectKind.CREASE  # long and diagonal: a fold or crease line


def classify(m: Measures) -> DefectKind:
    """A defect type from what the region measures; the rules and their order are in the README.

    Holes come first: the 4-point system scores them by their own rule, so a hole is never typed
    as anything else (not even at the selvage or when it is long).
    """
    core_elongation = m.core_long_px / max(m.core_short_px, 1.0) if m.core_px else 0.0
    if (
        m.core_px >= HOLE_MIN_CORE_PX
        and abs(m.contrast) >= HOLE_CONTRAST
        and m.texture_ratio <= HOLE_TEXTURE_RATIO
        and core_elongation <= HOLE_MAX_ELONGATION
    ):
        return DefectKind.HOLE
    if m.at_selvage:
        return DefectKind.EDGE
    # A line: the region is long and thin, or its core is (a strong yarn line whose anomaly halo is wide).
    if m.long_px >= LINE_MIN_LENGTH_PX and m.long_px / m.short_px >= LINE_ELONGATION:
        return _line(m.angle_from_x_deg)
    if m.core_long_px > KNOT_MAX_LENGTH_PX and core_elongation >= LINE_ELONGATION:  # shorter: a slub
        return _line(m.core_angle_from_x_deg)
    size = m.core_long_px if m.core_px else m.long_px
    if size <= NEP_MAX_LENGTH_PX:
        return DefectKind.NEP
    if size <= KNOT_MAX_LENGTH_PX:
        elongated = m.core_px and m.core_long_px / max(m.core_short_px, 1.0) >= SLUB_ELONGATION
        return DefectKind.SLUB if elongated else DefectKind.KNOT
    if m.core_px and abs(m.contrast) >= STAIN_CONTRAST and m.texture_ratio >= CONTAMINATION_TEXTURE_RATIO:
        return DefectKind.CONTAMINATION  # a large, sharp foreign thing
    if abs(m.area_contrast) >= STAIN_CONTRAST or abs(m.contrast) >= STAIN_CONTRAST:
        return DefectKind.STAIN
    return DefectKind.OTHER
