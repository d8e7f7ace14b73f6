"""The matte model's second opinion on the torso's outline (atelier.body.matte)."""

from __future__ import annotations

import numpy as np
import pytest

from atelier.body import matte, photo
from atelier.body.photo import ViewResult, measure, segment
from atelier.body.pose import Landmark, PoseModel
from atelier.body.scene import Camera, render_scene
from atelier.body.statmodel import BodyModel
from bench.body_budget import edge_errors
from tests.body.test_outline_scenes import _as_the_bench_renders
from tests.body.test_service import BODY

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


@pytest.mark.parametrize(
    ("index", "background"),
    [(3015, "archsearch_pexels_brick_buildings_11.jpg"), (3242, "archsearch_pexels_glass_steel_09.jpg")],
)
def test_the_learned_outlines_run_into_the_facade_is_trimmed_by_the_matte(
    pose: PoseModel, ansur: dict, index: int, background: str
) -> None:
    """ANSUR men #3015 (before a brick building) and #3242 (before glass and steel) as bench/body.py
    renders them: the pose model's outline runs off the torso's flank into the facade (14-16 of the
    torso rows' edges more than 8 px off the renderer's coverage, as bench/body_budget.py counts
    them); with the matte's second opinion at most 2 are."""
    _, front, _ = _as_the_bench_renders(ansur, index, background)
    second, pose.matte = pose.matte, None
    try:
        assert segment(front.image_rgb, pose, "front", "front").matte is None
        alone = np.abs(edge_errors(front, "front", pose))
    finally:
        pose.matte = second
    assert segment(front.image_rgb, pose, "front", "front").matte is not None
    both = np.abs(edge_errors(front, "front", pose))
    assert alone.size == both.size > 50  # the same torso rows, each edge against the coverage
    assert (alone > 8).sum() >= 8
    assert (both > 8).sum() <= 2


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


def test_a_person_at_the_photos_edge_gets_a_map_of_the_photos_size(pose: PoseModel) -> None:
    """The square crop around a box at the photo's corner reaches past the photo: the map is still
    the photo's size, in 0..1, zero outside the crop."""
    assert pose.matte is not None
    photo = np.full((300, 200, 3), 200, np.uint8)
    photo[20:280, 0:60] = (40, 60, 90)  # a dark figure against the left edge
    soft = pose.matte.soft(photo, (0, 20, 60, 280))
    assert soft.shape == (300, 200) and soft.dtype == np.float32
    assert soft.min() >= 0.0 and soft.max() <= 1.0
    assert not soft[:, 175:].any()  # the square (286 px) centred on the box stops at column 173


def test_a_damaged_matte_file_stops_the_start_with_what_to_do(tmp_path) -> None:  # type: ignore[no-untyped-def]
    damaged = tmp_path / matte.MODEL_NAME
    damaged.write_bytes(b"\x08\x07not an onnx graph" * 100)
    with pytest.raises(RuntimeError, match=r"setup_models --force.*ATELIER_BODY_MATTE_MODEL="):
        matte.load_matte(damaged)


def test_a_side_outline_run_into_the_facade_is_measured_where_the_matte_agrees(
    pose: PoseModel, ansur: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ANSUR man #2555 before a stone facade, as bench/body.py renders him: the side outline runs
    into the wall behind his back (a chest depth of 41 cm is implausible), so without the matte the
    side photo is dropped and the girths rest on the front widths. Trimmed where the matte calls it
    background, the side passes the same checks and each depth is within 1 cm of his."""
    body, front, side = _as_the_bench_renders(ansur, 2555, "archsearch_pexels_stone_facades_03.jpg")
    model = BodyModel.load()
    result = measure(front.image_rgb, side.image_rgb, body["height"], body["weight_kg"], "male", model, pose)
    for level in ("chest", "waist", "hip"):
        assert abs(result.observed_cm[f"{level}_depth"] - body[f"{level}_depth"]) < 1.0
    assert result.side_quality is not None
    assert any("ran into the background" in issue for issue in result.side_quality.issues)
    monkeypatch.setattr(photo, "_matte_trimmed_side", lambda *args: None)
    alone = measure(front.image_rgb, side.image_rgb, body["height"], body["weight_kg"], "male", model, pose)
    assert not any(name.endswith("_depth") for name in alone.observed_cm)
    assert any("side photo not used" in message for _, message in alone.warnings)


class _BleedMatte:
    """A matte that calls background exactly what the test stuck onto the side outline (and
    nothing on any other photo)."""

    def __init__(self) -> None:
        self.image: np.ndarray | None = None
        self.bleed: np.ndarray | None = None

    def soft(self, image_rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        if image_rgb is self.image and self.bleed is not None:
            return (~self.bleed).astype(np.float32)
        return np.ones(image_rgb.shape[:2], np.float32)

    around = matte.Matte.around


def test_a_broken_side_outline_is_trimmed_and_measured_again_through_the_same_checks(
    pose: PoseModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slab of background 20 cm deep stuck to the back of the side outline at the chest (as a
    wall of the clothes' tone does) makes the chest depth implausible and drops the side photo. With
    a matte that calls the slab background, the pair is measured again on the trimmed outline: every
    depth within 1.5 cm of the body's, the side's quality lowered and the reason named. A matte
    that calls nothing background leaves the side dropped."""
    cam = Camera(
        height_cm=120, distance_cm=240, pitch_deg=0.0, focal_px=0.78 * 960, width_px=720, height_px=960
    )
    front = render_scene(BODY, "front", cam, "drawn", arm_angle_deg=32, seed=21).image_rgb
    side = render_scene(BODY, "side", cam, "drawn", seed=22).image_rgb
    fake = _BleedMatte()
    original = photo.segment

    def segment_with_a_bleed(image_rgb: np.ndarray, *args: object, **kwargs: object) -> ViewResult:
        view = original(image_rgb, *args, **kwargs)  # type: ignore[arg-type]
        if args[2] != "side":
            return view
        rows = np.nonzero(view.mask.any(axis=1))[0]
        top, bottom = int(rows[0]), int(rows[-1])
        px = (bottom - top) / BODY["height"]
        row = round(bottom - BODY["chest_height"] * px)
        cols = np.nonzero(view.mask[row])[0]
        sign = photo.facing_sign(view.landmarks)
        assert sign is not None
        back = int(cols.min()) if sign > 0 else int(cols.max())
        bleed = np.zeros_like(view.mask)
        x0, x1 = (back - round(20 * px), back) if sign > 0 else (back + 1, back + 1 + round(20 * px))
        bleed[row - round(6 * px) : row + round(6 * px), x0:x1] = True
        bleed &= ~view.mask
        fake.image, fake.bleed = image_rgb, bleed
        view.mask = view.mask | bleed
        return view

    monkeypatch.setattr(photo, "segment", segment_with_a_bleed)
    monkeypatch.setattr(pose, "matte", fake)
    model = BodyModel.load()
    result = measure(front, side, 176, 82, "male", model, pose)
    for level in ("chest", "waist", "hip"):
        assert abs(result.observed_cm[f"{level}_depth"] - BODY[f"{level}_depth"]) < 1.5
    assert result.side_quality is not None and result.side_quality.score < 0.81
    assert any("ran into the background (a chest depth" in i for i in result.side_quality.issues)
    fake.soft = lambda image_rgb, box: np.ones(image_rgb.shape[:2], np.float32)  # type: ignore[method-assign]
    dropped = measure(front, side, 176, 82, "male", model, pose)
    assert not any(name.endswith("_depth") for name in dropped.observed_cm)


def test_a_side_outline_that_lost_the_feet_is_not_trimmed_in_vain(
    pose: PoseModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trim changes only the torso's rows, so a side dropped for feet below its outline is not
    sent through the matte again (it would fail the same check, after a second of network)."""
    cam = Camera(
        height_cm=120, distance_cm=240, pitch_deg=0.0, focal_px=0.78 * 960, width_px=720, height_px=960
    )
    front = render_scene(BODY, "front", cam, "drawn", arm_angle_deg=32, seed=21).image_rgb
    side = render_scene(BODY, "side", cam, "drawn", seed=22).image_rgb
    monkeypatch.setattr(photo, "side_outline_problem", lambda *args: photo.FEET_BELOW)
    tried: list[object] = []
    monkeypatch.setattr(photo, "_matte_trimmed_side", lambda *args: tried.append(args))
    result = measure(front, side, 176, 82, "male", BodyModel.load(), pose)
    assert not tried
    assert not any(name.endswith("_depth") for name in result.observed_cm)
