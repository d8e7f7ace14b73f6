"""Outline measurement helpers of the photo path: sub-pixel edges, level search, per-photo noise."""

from __future__ import annotations

import numpy as np

from atelier.body.photo import ViewResult, _pose_fits_outline, _sharpest_bend, outline_sd_cm, run_width_px
from atelier.body.pose import Landmark

BG = np.array([236.0, 236.0, 232.0])
FG = np.array([70.0, 80.0, 120.0])


def _row_with_edges(left: float, right: float, width_px: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """One image row of a person from ``left`` to ``right`` (px, fractional), area-sampled."""
    x = np.arange(width_px, dtype=float)
    cover = np.clip(np.minimum(x + 1 - left, right - x), 0.0, 1.0)
    colours = BG + cover[:, None] * (FG - BG)
    mask = cover > 0.5
    return colours[None].round().astype(np.uint8), mask[None]


def test_sub_pixel_edges_recover_a_fractional_width() -> None:
    for left, right in ((50.3, 140.8), (60.5, 121.1), (40.9, 160.2)):
        image, mask = _row_with_edges(left, right)
        x0, x1 = run_width_px(mask[0:1], 0, 100.0, image)
        assert abs(x0 - left) < 0.05 and abs(x1 - right) < 0.05
        # Whole pixels only: off by up to half a pixel per edge.
        m0, m1 = run_width_px(mask[0:1], 0, 100.0)
        assert abs(m0 - left) <= 0.5 and abs(m1 - right) <= 0.5


def test_sub_pixel_edge_ignores_a_neighbour_in_the_background_reference() -> None:
    image, mask = _row_with_edges(50.3, 140.8)
    # An arm 2 px right of the torso: its colour must not pass for the background.
    image[0, 143:150] = (176, 128, 104)
    mask[0, 143:150] = True
    x0, x1 = run_width_px(mask[0:1], 0, 100.0, image)
    assert abs(x0 - 50.3) < 0.05
    assert x1 == 141.0  # the mask's own edge: no colour pair to place it by


def test_sharpest_bend_finds_a_corner_and_a_minimum() -> None:
    heights = np.arange(90.0, 110.0 + 1e-9, 0.5)
    corner = np.where(heights < 101.0, 25.0 - 0.3 * (heights - 101.0), 25.0 + 0.02 * (heights - 101.0))
    assert abs(_sharpest_bend(heights, corner) - 101.0) <= 0.5  # type: ignore[operator]
    v_shape = 20.0 + 0.25 * np.abs(heights - 97.0)
    assert abs(_sharpest_bend(heights, v_shape) - 97.0) <= 0.5  # type: ignore[operator]
    assert _sharpest_bend(heights, 20.0 + 0.1 * heights) is None  # straight: nothing stands out
    with_gap = v_shape.copy()
    with_gap[5] = np.nan
    assert _sharpest_bend(heights, with_gap) is None


def test_outline_noise_grows_where_the_body_widens_fast() -> None:
    h_px, px_per_cm = 1000, 5.0
    mask = np.zeros((h_px, 400), bool)
    for row in range(h_px):
        height_cm = (h_px - 1 - row) / px_per_cm
        half = (15.0 + (0.0 if height_cm < 100 else 0.5 * (height_cm - 100))) * px_per_cm
        mask[row, round(200 - half) : round(200 + half)] = True
    view = ViewResult(mask, 0, h_px - 1, 200.0, {}, "test")
    height = (h_px - 1) / px_per_cm
    flat = outline_sd_cm(view, height, 60.0, 2.0)
    steep = outline_sd_cm(view, height, 130.0, 2.0)
    free = outline_sd_cm(view, height, 130.0, 2.0, level_free=True)
    assert 0.5 <= flat < 0.6  # edges + clothing only
    assert steep > 1.5 * flat  # +-2 cm of level moves this width by +-2 cm
    assert free == flat


def test_a_skeleton_too_small_for_the_outline_is_rejected() -> None:
    person = np.zeros((1000, 400), bool)
    person[70:930, 150:250] = True  # 860 px tall

    def pose(shoulder_y: float, hip_y: float) -> dict[str, Landmark]:
        points = {"left_shoulder": (230, shoulder_y), "right_shoulder": (170, shoulder_y)}
        points |= {"left_hip": (220, hip_y), "right_hip": (180, hip_y)}
        return {n: Landmark(n, x, y, 1.0) for n, (x, y) in points.items()}

    assert _pose_fits_outline(pose(240.0, 470.0), person)  # torso 0.27 of the height
    assert not _pose_fits_outline(pose(270.0, 334.0), person)  # 0.07: a skeleton of part of the body
    assert _pose_fits_outline({}, person)  # no landmarks: nothing to compare
