"""The matte model's second opinion on the torso's outline (atelier.body.matte)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from atelier.body import matte
from atelier.body.photo import run_width_px, segment
from atelier.body.pose import Landmark, PoseModel
from tests.body.test_outline_scenes import _as_the_bench_renders

H, W = 600, 400


def _landmarks(shoulder_row: float = 120.0, hip_row: float = 300.0) -> dict[str, Landmark]:
    return {
        "left_shoulder": Landmark("left_shoulder", 190.0, shoulder_row, 0.99),
        "right_shoulder": Landmark("right_shoulder", 110.0, shoulder_row, 0.99),
        "left_hip": Landmark("left_hip", 175.0, hip_row, 0.99),
        "right_hip": Landmark("right_hip", 125.0, hip_row, 0.99),
    }


def _person() -> np.ndarray:
    """A head (rows 40-100), a torso (100-420) and legs (420-580), columns 100-200."""
    mask = np.zeros((H, W), bool)
    mask[40:100, 130:170] = True
    mask[100:420, 100:200] = True
    mask[420:580, 110:190] = True
    return mask


def test_a_bulge_off_the_torsos_flank_that_the_matte_calls_background_is_taken_out() -> None:
    person = _person()
    truth = person.copy()
    person[200:260, 200:230] = True  # background of the clothes' tone, stuck to the flank
    second = truth.astype(np.float32)
    out = matte.trim(person, second, _landmarks())
    assert (out == truth).all()


def test_only_the_torsos_rows_are_trimmed() -> None:
    """Above the shoulders (the head top sets the scale and the framing check) and below the seat
    the pose model's outline stands, whatever the matte says."""
    person = _person()
    second = person.astype(np.float32)
    second[40:115, :] = 0.0  # the matte lost the head and the neck
    second[500:, :] = 0.0  # and the feet
    second[200:210, 100:110] = 0.0  # and a notch in the torso's flank
    out = matte.trim(person, second, _landmarks())
    assert (out[:120] == person[:120]).all()
    assert (out[373:] == person[373:]).all()
    assert not out[200:210, 100:110].any()
    assert out[200:210, 110:200].all()


def test_a_hole_the_matte_sees_inside_the_outline_is_not_cut() -> None:
    """A piece the matte misses in the middle of the torso (a print, a shadow) would break the run
    every width is read on: only pieces that reach the outline's outside are taken."""
    person = _person()
    second = person.astype(np.float32)
    second[220:260, 130:170] = 0.0
    assert (matte.trim(person, second, _landmarks()) == person).all()


def test_a_matte_that_picked_something_else_is_not_used() -> None:
    person = _person()
    second = np.zeros((H, W), np.float32)
    second[:, :150] = person[:, :150]  # half the torso
    assert (matte.trim(person, second, _landmarks()) == person).all()


def test_without_shoulders_and_hips_nothing_is_trimmed() -> None:
    person = _person()
    second = np.zeros((H, W), np.float32)
    assert (matte.trim(person, second, {}) == person).all()
    upside_down = _landmarks(shoulder_row=300.0, hip_row=120.0)
    assert (matte.trim(person, second, upside_down) == person).all()


def _torso_edges_off(render, seen, threshold_px: float = 8.0) -> int:  # type: ignore[no-untyped-def]
    """How many of the outline's two edges on the torso rows (30-50% of the height from the head
    top, every third row) lie more than ``threshold_px`` from the renderer's coverage."""
    ys = np.nonzero(render.mask)[0]
    top, bottom = int(ys.min()), int(ys.max())
    off = 0
    for row in range(top + int(0.3 * (bottom - top)), top + int(0.5 * (bottom - top)), 3):
        line = render.coverage[row]
        centre = round(seen.centre_x_px)
        if line[centre] < 0.99:
            continue
        left = centre
        while left > 0 and line[left - 1] > 0:
            left -= 1
        right = centre
        while right < line.size - 1 and line[right + 1] > 0:
            right += 1
        if right - left > 0.2 * (bottom - top):
            continue  # an arm joins the torso's run there
        true_left = centre - float(line[left:centre].sum())
        true_right = centre + float(line[centre : right + 1].sum())
        x0, x1 = run_width_px(seen.mask, row, centre, render.image_rgb)
        if math.isnan(x0):
            off += 2
            continue
        off += int(abs(true_left - x0) > threshold_px) + int(abs(x1 - true_right) > threshold_px)
    return off


@pytest.mark.parametrize(
    ("index", "background"),
    [(3015, "archsearch_pexels_brick_buildings_11.jpg"), (3242, "archsearch_pexels_glass_steel_09.jpg")],
)
def test_the_learned_outlines_run_into_the_facade_is_trimmed_by_the_matte(
    pose: PoseModel, ansur: dict, index: int, background: str
) -> None:
    """ANSUR men #3015 (before a brick building) and #3242 (before glass and steel) as bench/body.py
    renders them: the pose model's outline runs off the torso's flank into the facade (14-16 of the
    torso rows' edges more than 8 px off the renderer's coverage); with the matte's second opinion
    at most 2 are."""
    _, front, _ = _as_the_bench_renders(ansur, index, background)
    second, pose.matte = pose.matte, None
    try:
        alone = segment(front.image_rgb, pose, "front", "front")
    finally:
        pose.matte = second
    both = segment(front.image_rgb, pose, "front", "front")
    assert alone.matte is None and both.matte is not None
    assert _torso_edges_off(front, alone) >= 8
    assert _torso_edges_off(front, both) <= 2


def test_the_matte_is_loaded_beside_the_bundle_unless_turned_off(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ATELIER_BODY_MATTE_MODEL as the service reads it: unset, the bundle folder's u2net.onnx;
    empty, none; a missing file, none (with a warning), so the outline is the pose model's alone."""
    from atelier.body.pose import default_bundle_path, load_pose_model

    for setting, expected in ((None, True), ("", False), (str(tmp_path / "absent.onnx"), False)):
        model = load_pose_model(default_bundle_path(), setting)
        assert model is not None
        try:
            assert (model.matte is not None) is expected, setting
        finally:
            model.close()
