"""The front widths at their own depth: a cross-section ahead of or behind the plane where the
front photo's height scale holds is seen wider or narrower (atelier.body.photo's perspective step)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from atelier.body import camera, photo
from atelier.body.photo import (
    ViewResult,
    forward_offsets_cm,
    measure,
    perspective_width_cm,
    scale_plane_share,
)
from atelier.body.pose import Landmark, PoseModel
from atelier.body.scene import Camera, project, render_scene
from atelier.body.statmodel import BodyModel
from tests.body.test_service import BODY


def _seen_width_cm(breadth: float, depth: float, forward: float, distance: float) -> float:
    """What a pinhole camera ``distance`` from the scale's plane shows of an elliptical section
    ``forward`` nearer than the plane, in the plane's cm (sampled, not the closed form)."""
    t = np.linspace(0, 2 * np.pi, 200_001)
    x = breadth / 2 * np.cos(t)
    z = forward + depth / 2 * np.sin(t)
    return float(np.ptp(x / (distance - z))) * distance


@pytest.mark.parametrize("forward", [-4.0, 0.0, 3.0])
def test_the_breadth_is_found_back_from_the_seen_width(forward: float) -> None:
    breadth, depth, distance = 36.0, 25.0, 180.0
    seen = _seen_width_cm(breadth, depth, forward, distance)
    assert perspective_width_cm(seen, forward, depth, distance) == pytest.approx(breadth, abs=0.005)
    # What the correction is worth here: the seat 4 cm behind the plane reads 0.8 cm narrow.
    if forward == -4.0:
        assert breadth - seen > 0.6


def test_the_horizon_row_as_taken_and_levelled() -> None:
    cam = Camera(
        height_cm=140, distance_cm=220, pitch_deg=12.0, focal_px=0.78 * 960, width_px=720, height_px=960
    )
    # Points at the camera's height far and near lie on the horizon.
    (far, near), _ = project(np.array([[0, 140.0, -5000.0], [30, 140.0, 0.0]]), cam)
    row = camera.horizon_row((960, 720, 3), 12.0, levelled=False)
    assert far[1] == pytest.approx(row, abs=0.5) and near[1] == pytest.approx(row, abs=0.5)
    _, hom = camera.level_photo(np.zeros((960, 720, 3), np.uint8), 12.0)
    p = hom @ np.array([near[0], near[1], 1.0])
    assert p[1] / p[2] == pytest.approx(camera.horizon_row((960, 720, 3), 12.0, levelled=True), abs=0.5)


def test_a_steep_ultra_wide_photo_is_levelled_with_the_body_in_it() -> None:
    """A 0.5x lens (13 mm equivalent) at 152 cm, 85 cm away, pointed 40 degrees down: the photo's
    bottom edge looks past straight down, where a level camera's row is at infinity (the levelled
    photo was 1.6x the height of streaks, the body not in it). Levelled, the rays are kept within
    camera.MAX_RAY_DEG of the horizon: head top and heels land inside the new photo, and points are
    mapped as level_rows maps rows. The pitch is found back from the body with the lens known
    (searched to 45 degrees), not with a main camera's assumed (searched to 30)."""
    cam = Camera(
        height_cm=152, distance_cm=85, pitch_deg=40.0, focal_px=0.375 * 960, width_px=720, height_px=960
    )
    shape = (960, 720, 3)
    (top, acr, heel), _ = project(np.array([[0, 165.0, 0], [0, 135.0, 0], [8, 0, 0]]), cam)
    assert top[1] > 0 and heel[1] < 960
    level, hom = camera.level_photo(np.zeros(shape, np.uint8), 40.0, cam.focal_35mm)
    assert level.shape[0] <= 1.6 * 960
    for point in (top, heel):
        p = hom @ np.array([point[0], point[1], 1.0])
        assert 0 <= p[0] / p[2] < level.shape[1] and 0 <= p[1] / p[2] < level.shape[0]
    f = camera.focal_px(shape, cam.focal_35mm)
    moved = camera.level_points(np.array([top, heel]), 40.0, f, (360.0, 480.0))
    assert moved[:, 1] == pytest.approx(camera.level_rows(np.array([top[1], heel[1]]), 40.0, f, 480.0))
    cues = [(acr[1], 135 / 165, 0.012)]
    pitch, _ = camera.estimate_pitch_deg(top[1], heel[1], cues, shape, cam.focal_35mm)
    assert abs(pitch - 40.0) < 3.0
    assumed, _ = camera.estimate_pitch_deg(top[1], heel[1], cues, shape)
    assert assumed <= camera.MAX_ASSUMED_LENS_PITCH_DEG


def _side_view(facing: float, head_x: float, shin_x: float, torso_x: float) -> ViewResult:
    """A side outline 900 px tall (5 px per cm of a 180 cm person): a round head, a torso, lower legs."""
    mask = np.zeros((1000, 600), bool)
    yy, xx = np.mgrid[:1000, :600]
    mask |= (xx - head_x) ** 2 + ((yy - 160) / 1.2) ** 2 < 45**2  # head top at row 106
    mask[200:560, round(torso_x) - 60 : round(torso_x) + 60] = True
    mask[560:1000, round(shin_x) - 25 : round(shin_x) + 25] = True
    lms = {
        "nose": Landmark("nose", head_x + 40 * facing, 160, 1.0),
        "left_ear": Landmark("left_ear", head_x, 160, 1.0),
        "left_heel": Landmark("left_heel", shin_x - 20 * facing, 995, 1.0),
        "left_foot_index": Landmark("left_foot_index", shin_x + 60 * facing, 995, 1.0),
    }
    return ViewResult(mask, 106.0, 1006.0, shin_x, lms, "test")


@pytest.mark.parametrize("facing", [1.0, -1.0])
def test_offsets_from_the_side_outline(facing: float) -> None:
    """The seat 20 px (4 cm) behind the head and the legs, whichever way the person faces."""
    side = _side_view(facing, head_x=300, shin_x=300, torso_x=300 - 20 * facing)
    got = forward_offsets_cm(side, {"hip": (220 - 20 * facing, 380 - 20 * facing)}, 180.0, 0.6)
    assert got["hip"] == pytest.approx(-4.0, abs=0.2)


def test_the_scale_plane_lies_between_head_and_ankles_by_the_cameras_height() -> None:
    """Head 10 px ahead of the legs; a camera at 0.75 of the stature puts the plane 3/4 of the way
    towards the legs, so a section straight above the legs is 0.25 * 2 cm behind the plane."""
    side = _side_view(1.0, head_x=310, shin_x=300, torso_x=300)
    front = ViewResult(np.zeros((10, 10), bool), 100.0, 900.0, 5.0, {}, "test")
    share = scale_plane_share(front, horizon_px=300.0)
    assert share == pytest.approx(0.75)
    got = forward_offsets_cm(side, {"waist": (240.0, 360.0)}, 180.0, share)
    assert got["waist"] == pytest.approx(-0.5, abs=0.1)


def test_without_the_facing_no_offsets() -> None:
    side = _side_view(1.0, head_x=300, shin_x=300, torso_x=300)
    side.landmarks = {}
    assert forward_offsets_cm(side, {"hip": (240.0, 360.0)}, 180.0, 0.6) == {}


def test_a_render_close_up_reads_the_seat_at_its_own_depth(pose: PoseModel, monkeypatch) -> None:
    """The renders put the seat's centre 0.1 hip depth behind the line of head and ankles and the
    chest's 0.06 chest depth ahead: from 1.85 m the hip width is seen 1.6% narrow, the chest's 1% wide.
    The correction widens the one and narrows the other by about that (the offsets read off the
    side outline, the distance from the assumed focal length)."""
    cam = Camera(
        height_cm=100, distance_cm=185, pitch_deg=0.0, focal_px=0.78 * 960, width_px=720, height_px=960
    )
    front = render_scene(BODY, "front", cam, "drawn", arm_angle_deg=32, seed=11).image_rgb
    side = render_scene(BODY, "side", cam, "drawn", seed=12).image_rgb
    model = BodyModel.load()
    on = measure(front, side, 176, 82, "male", model, pose).observed_cm
    monkeypatch.setattr(photo, "_correct_front_perspective", lambda *args: None)
    off = measure(front, side, 176, 82, "male", model, pose).observed_cm
    zref = (1 - 100 / 176) * 1.0 + 100 / 176 * (-0.03 * BODY["hip_depth"])
    hip_ratio = (185 - zref) / math.sqrt((185 + 0.1 * BODY["hip_depth"]) ** 2 - (BODY["hip_depth"] / 2) ** 2)
    assert on["hip_width"] / off["hip_width"] == pytest.approx(1 / hip_ratio, abs=0.006)
    assert on["hip_width"] > off["hip_width"] and on["chest_width"] < off["chest_width"]
    assert on["waist_width"] == pytest.approx(off["waist_width"], abs=0.3)
    assert abs(on["hip_width"] - BODY["hip_width"]) < abs(off["hip_width"] - BODY["hip_width"])
