"""From an anomaly map to defect regions: outline, size, score and a defect type.

Axes: image rows (y) run along the roll (a line camera adds one row per scan line), columns
(x) across it. So a warp-direction line (broken end) is long in y, a weft-direction line
(broken pick) long in x. Roll coordinates in mm follow atelier.common.v1: x along the roll,
y across it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import cv2
import numpy as np

MAX_REGIONS = 100
MIN_AREA_PX = 16
# Gaps up to this size inside one defect (a broken pick seen in pieces) are closed.
JOIN_GAP_PX = 9
LINE_ELONGATION = 3.0
LINE_MIN_LENGTH_PX = 40
# A line within this angle (degrees) of an axis runs along it; between the two it is diagonal.
AXIS_TOLERANCE_DEG = 25.0
KNOT_MAX_LENGTH_PX = 32
EDGE_DISTANCE_PX = 24
HOLE_CONTRAST = 4.0
HOLE_TEXTURE_RATIO = 0.5
STAIN_CONTRAST = 1.5
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


def find_regions(anomaly: np.ndarray, threshold: float, grey: np.ndarray, pad: np.ndarray) -> list[Region]:
    hot = (anomaly > threshold).astype(np.uint8)
    if not hot.any():
        return []
    hot = cv2.morphologyEx(hot, cv2.MORPH_CLOSE, np.ones((JOIN_GAP_PX, JOIN_GAP_PX), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
    fabric = grey[~pad] if (~pad).any() else grey.ravel()
    median = float(np.median(fabric))
    spread = 1.4826 * float(np.median(np.abs(fabric.astype(np.float32) - median))) + 1e-3
    fabric_std = float(fabric.std()) + 1e-3
    edge_near = _near_fabric_edge(pad)
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
        values = grey[y : y + h, x : x + w][component].astype(np.float32)
        kind = classify(
            long_px=max(rw, rh),
            short_px=max(min(rw, rh), 1.0),
            angle_from_x_deg=_long_axis_angle(rw, rh, angle),
            contrast=abs(float(values.mean()) - median) / spread,
            texture_ratio=float(values.std()) / fabric_std,
            at_edge=bool(edge_near[y : y + h, x : x + w][component].any()),
        )
        found.append(Region(x, y, w, h, polygon, peak, kind, float(max(rw, rh, 1.0)), area))
    found.sort(key=lambda r: r.score, reverse=True)
    return found[:MAX_REGIONS]


def _long_axis_angle(rw: float, rh: float, angle: float) -> float:
    """Angle of the rectangle's long side from the image x axis, 0..90 degrees."""
    a = angle if rw >= rh else angle + 90.0
    a = abs(a) % 180.0
    return 180.0 - a if a > 90.0 else a


def _near_fabric_edge(pad: np.ndarray) -> np.ndarray:
    if not pad.any():
        return np.zeros_like(pad)
    size = 2 * EDGE_DISTANCE_PX + 1
    # The scored area already stops short of the padding (texture margin), so measure from there.
    grown = cv2.dilate(pad.astype(np.uint8), np.ones((size, size), np.uint8), iterations=3)
    return grown.astype(bool)


def classify(
    long_px: float,
    short_px: float,
    angle_from_x_deg: float,
    contrast: float,
    texture_ratio: float,
    at_edge: bool,
) -> DefectKind:
    """A defect type from shape, direction and appearance; a heuristic, documented in the README."""
    if at_edge:
        return DefectKind.EDGE
    if long_px >= LINE_MIN_LENGTH_PX and long_px / short_px >= LINE_ELONGATION:
        if angle_from_x_deg >= 90.0 - AXIS_TOLERANCE_DEG:
            return DefectKind.WARP_LINE  # along y, the roll direction
        if angle_from_x_deg <= AXIS_TOLERANCE_DEG:
            return DefectKind.WEFT_LINE  # along x, across the roll
        return DefectKind.CREASE  # long and diagonal: a fold or crease line
    if contrast >= HOLE_CONTRAST and texture_ratio <= HOLE_TEXTURE_RATIO:
        return DefectKind.HOLE  # far from fabric brightness and no weave texture inside
    if long_px <= KNOT_MAX_LENGTH_PX:
        return DefectKind.KNOT
    if contrast >= STAIN_CONTRAST:
        return DefectKind.STAIN
    return DefectKind.OTHER
