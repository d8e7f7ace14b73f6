"""Camera pitch: estimated from the body's own proportions and removed by a rotation of the photo.

A phone pitched down at the body maps heights on the body onto the photo unevenly (rows are
``f * tan(angle - pitch)``): at 17 degrees and 1.6 m the hip came out 14 cm away from where the
height scale put it on the renders, although head and heels were exact. A level camera maps a
vertical plane linearly. So the photo is turned into the photo a level camera at the same place
would have taken (the homography ``K R K^-1``), where the height scale is linear again.

The pitch is found from where the acromions (the outline's shoulder points) lie between the head
top and the heels: ANSUR II's acromial height over stature varies little (about 0.82, sd 0.01) and
the statistical model predicts it for the stated height and weight; the pitch that puts them at
that share is the camera's, shrunk towards level by a prior (a shoulder point 2 cm off is about 4
degrees). A misplaced shoulder point (a raised shoulder, padding) tilts the correction: unverified
on real photos, which come without the camera's pitch. The focal length is the photo's own where it
is known (its 35 mm equivalent: the caller's, or the front photo's EXIF FocalLengthIn35mmFilm, which
phones write: 13 mm for a 0.5x lens, 24-26 for the main camera, 48-77 for 2x-3x), else a phone main
camera's (0.78 of the photo's long side, 27 mm on a 4:3 photo). Lens distortion of phone cameras is
corrected on the phone before the JPEG is written, and is not modelled.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

FOCAL_SHARE = 0.78  # focal length / long side of the photo when it is not known (27 mm equivalent at 4:3)
# The 35 mm equivalent focal length is the focal length a 36 x 24 mm frame (43.27 mm diagonal) would
# need for the same angle of view across the diagonal (CIPA DC-008's definition, which EXIF uses).
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)
# 35 mm equivalents a phone or camera photo can have (a 1000 mm sports telephoto at most): outside
# them a stated or EXIF value is not a full-body photo's lens (or the tag is wrong) and is not used.
FOCAL_35MM_RANGE = (8.0, 1000.0)


def plausible_focal_35mm(value: float) -> bool:
    """Whether ``value`` (mm, a 35 mm equivalent) is a focal length a photo of a person can have."""
    return FOCAL_35MM_RANGE[0] <= value <= FOCAL_35MM_RANGE[1]


# The pitch found from the body is searched this far where the photo's lens is known (0.5x renders
# are pointed up to 47 degrees down from under a metre), and to MAX_ASSUMED_LENS_PITCH_DEG where it
# is assumed to be a main camera's: through that lens from where it frames a whole person, phones
# are pointed at most about 30 degrees down (the renderer's draw: the body's middle from 1.6 m),
# and a steeper pitch is more likely another lens. Searched to 45 with the lens assumed, 0.5x
# photos without EXIF read the men's waist 3.02 cm off (MAE), against 2.71 to 30 (BENCHMARKS "issue 18t").
MAX_PITCH_DEG = 45.0
MAX_ASSUMED_LENS_PITCH_DEG = 30.0
# Phones are held about level or aimed at the body: pitches beyond 20 degrees are rare.
PRIOR_SD_DEG = 15.0
# Cues whose own pitches differ by more than this do not describe one camera: no levelling.
MAX_DISAGREEMENT_DEG = 6.0
# Below this the photo is left alone (a level camera within a degree maps heights within ~1 mm).
MIN_PITCH_DEG = 1.0
# The levelled photo keeps rays at most this far above or below the horizon (see _level_homography).
MAX_RAY_DEG = 75.0


def focal_px(shape: tuple[int, ...], focal_35mm: float | None = None) -> float:
    """The focal length in pixels of a photo of ``shape``: from its 35 mm equivalent where that is known
    (the same for the photo at any size, as long as it is not cropped), else FOCAL_SHARE."""
    if focal_35mm is None:
        return FOCAL_SHARE * max(shape[0], shape[1])
    return focal_35mm / FULL_FRAME_DIAGONAL_MM * math.hypot(shape[0], shape[1])


def assumed_focal_35mm(shape: tuple[int, ...]) -> float:
    """The 35 mm equivalent of the focal length assumed for a photo of ``shape`` (FOCAL_SHARE)."""
    return focal_px(shape) * FULL_FRAME_DIAGONAL_MM / math.hypot(shape[0], shape[1])


def level_rows(rows: np.ndarray, pitch_deg: float, f: float, cy: float) -> np.ndarray:
    """Rows of a photo pitched down by ``pitch_deg`` -> rows a level camera would have seen."""
    t = (np.asarray(rows, float) - cy) / f
    th = math.radians(pitch_deg)
    return cy + f * (t * math.cos(th) + math.sin(th)) / (math.cos(th) - t * math.sin(th))


def level_points(xy: np.ndarray, pitch_deg: float, f: float, centre: tuple[float, float]) -> np.ndarray:
    """Points (x, y; n x 2) of a photo pitched down by ``pitch_deg`` -> where a level camera at the
    same place would have seen them, about the principal point ``centre``."""
    s, t = ((np.asarray(xy, float) - centre) / f).T
    th = math.radians(pitch_deg)
    w = math.cos(th) - t * math.sin(th)
    return np.column_stack([centre[0] + f * s / w, centre[1] + f * (t * math.cos(th) + math.sin(th)) / w])


def estimate_pitch_deg(
    top_px: float,
    heel_px: float,
    cues: list[tuple[float, float, float]],
    shape: tuple[int, ...],
    focal_35mm: float | None = None,
) -> tuple[float, float]:
    """(pitch in degrees, positive: pointing down; how far apart the cues' own pitches are).

    ``cues``: (row, expected share of the height from the heels, sd of that share). The pitch is the
    one whose levelled rows put every cue nearest its share (least squares in sd units), with a
    prior of 0 +- PRIOR_SD_DEG: a cue a few cm off moves it by degrees. With two or more cues their
    separate pitches are returned apart, so a caller can refuse to level when they disagree. Searched
    to MAX_PITCH_DEG where ``focal_35mm`` is known, else to MAX_ASSUMED_LENS_PITCH_DEG.
    """
    f, cy = focal_px(shape, focal_35mm), shape[0] / 2
    bound = MAX_PITCH_DEG if focal_35mm is not None else MAX_ASSUMED_LENS_PITCH_DEG
    grid = np.arange(-bound, bound + 1e-9, 0.25)
    rows = np.array([top_px, heel_px, *(c[0] for c in cues)])
    expected = np.array([c[1] for c in cues])
    sd = np.array([c[2] for c in cues])
    shares = np.empty((grid.size, len(cues)))
    for i, pitch in enumerate(grid):
        top, heel, *levels = level_rows(rows, float(pitch), f, cy)
        shares[i] = (heel - np.array(levels)) / (heel - top)
    z = (shares - expected) / sd
    cost = (z**2).sum(axis=1) + (grid / PRIOR_SD_DEG) ** 2
    pitch = float(grid[int(np.argmin(cost))])
    alone = [float(grid[int(np.argmin(z[:, j] ** 2))]) for j in range(len(cues))]
    return pitch, (max(alone) - min(alone)) if len(alone) > 1 else 0.0


def level_photo(
    image_rgb: np.ndarray, pitch_deg: float, focal_35mm: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(the photo a level camera would have taken, the 3x3 homography from old to new pixels).

    The new photo keeps the width and grows in height so that nothing of the old one is lost.
    """
    hom, new_h = _level_homography(image_rgb.shape, pitch_deg, focal_35mm)
    out = cv2.warpPerspective(
        image_rgb, hom, (image_rgb.shape[1], new_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return out, hom


def _level_homography(
    shape: tuple[int, ...], pitch_deg: float, focal_35mm: float | None = None
) -> tuple[np.ndarray, int]:
    h, w = shape[:2]
    f = focal_px(shape, focal_35mm)
    cy = h / 2
    k = np.array([[f, 0, w / 2], [0, f, cy], [0, 0, 1.0]])
    th = math.radians(pitch_deg)
    # A pixel's ray in the pitched camera, expressed in the level camera's frame.
    rot = np.array([[1, 0, 0], [0, math.cos(th), math.sin(th)], [0, -math.sin(th), math.cos(th)]])
    hom = k @ rot @ np.linalg.inv(k)
    # A level camera maps a row of the photo to one row whatever the column; the new photo spans
    # the rows of the old one's top and bottom edges, each ray taken at most MAX_RAY_DEG from the
    # horizon (an ultra-wide lens pitched 40 degrees down sees the floor under the phone, where the
    # level camera's row is at infinity).
    edges = np.degrees(np.arctan((np.array([0.0, h]) - cy) / f)) + pitch_deg
    top, bottom = cy + f * np.tan(np.radians(np.clip(edges, -MAX_RAY_DEG, MAX_RAY_DEG)))
    new_h = min(math.ceil(bottom - top), int(1.6 * h))
    shift = np.array([[1, 0, 0], [0, 1, -top], [0, 0, 1.0]])
    return shift @ hom, new_h


def horizon_row(
    shape: tuple[int, ...], pitch_deg: float, levelled: bool, focal_35mm: float | None = None
) -> float:
    """The row of the horizon (points at the camera's height): in the photo as taken (``levelled``
    False) or in the one :func:`level_photo` made of it, where it is the level camera's principal row."""
    h = shape[0]
    f = focal_px(shape, focal_35mm)
    row = h / 2 - f * math.tan(math.radians(pitch_deg))
    if not levelled:
        return row
    hom, _ = _level_homography(shape, pitch_deg, focal_35mm)
    p = hom @ np.array([shape[1] / 2, row, 1.0])
    return float(p[1] / p[2])
