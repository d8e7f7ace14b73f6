"""The learned outline and the framing checks on 3D renders in scenes, and on the shared real photos.

Renders come from atelier.body.scene (a known body, camera and background), so the outline, the
shoulder points and the camera pitch have ground truth. Each test renders one or two small photos.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from atelier.body import camera
from atelier.body.outline import ANKLE_SHARE, _complete_feet, acromion_points, wrist_point_px
from atelier.body.photo import PhotoError, armpit_edges_px, grabcut_mask, measure, segment, side_view_verdict
from atelier.body.pose import Landmark, PoseModel
from atelier.body.scene import (
    Camera,
    SceneRender,
    _profile,
    project,
    random_camera,
    random_outfit,
    render_scene,
)
from atelier.body.statmodel import MEASUREMENTS, BodyModel, Observation
from tests.body.test_service import BODY
from tests.conftest import SHARED_BENCHMARKS

PHOTOS = SHARED_BENCHMARKS / "body" / "photos"
KEPT = Path(__file__).parent / "photos"  # real photos kept with the tests (see its README)
BACKGROUNDS = SHARED_BENCHMARKS / "body" / "backgrounds"
CAM = Camera(height_cm=120.0, distance_cm=235.0, pitch_deg=0.0, focal_px=640.0, width_px=540, height_px=720)


def _shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found (shared benchmark data absent)")
    return path


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_outline_on_a_cluttered_background(pose: PoseModel) -> None:
    """On a street photo (windows, a door, paving) the outline is the person, not the building."""
    scene = _shared(BACKGROUNDS / "archsearch_pexels_stone_facades_10.jpg")
    r = render_scene(BODY, "front", CAM, scene, arm_angle_deg=30, seed=4)
    view = segment(r.image_rgb, pose, "front")
    assert view.method == "mediapipe-segmentation"
    assert _iou(view.mask, r.mask) > 0.93
    # What the outline adds is at most a seam along the person, never a piece of the scene. (Here
    # the model itself is sure of a strip of the dark door beside one leg, 10 px or 3.7 cm at its
    # widest (8 px before the renderer stopped drawing the person a pixel too wide): colour cannot
    # overrule it, as the door is nearer the jeans' colour than the wall's. Nothing thicker.)
    extra = (view.mask & ~r.mask).astype(np.uint8)
    assert extra.sum() < 0.06 * r.mask.sum()
    assert cv2.morphologyEx(extra, cv2.MORPH_OPEN, np.ones((12, 12), np.uint8)).sum() == 0


def test_grabcut_outlines_do_not_depend_on_what_ran_before() -> None:
    """GrabCut's colour models start from k-means on OpenCV's random state: whatever the process ran
    before, one photo gives one outline, for the colour-only fallback and for the feet box (on this
    render the two differed by 12 and 3 px with the state left at 1 or 2)."""
    r = render_scene(BODY, "front", CAM, "drawn", arm_angle_deg=30, seed=4)
    ys = np.nonzero(r.mask)[0]
    shins = r.mask & (np.arange(r.mask.shape[0])[:, None] < ys.max() - 12)  # a mask that lost the feet
    outlines, feet = [], []
    for state in (1, 2):
        cv2.setRNGSeed(state)
        outlines.append(grabcut_mask(r.image_rgb))
        cv2.setRNGSeed(state)
        feet.append(_complete_feet(r.image_rgb, shins, int(ys.max() - ys.min())))
    assert (outlines[0] == outlines[1]).all()
    assert (feet[0] == feet[1]).all()
    assert feet[0].sum() > shins.sum()  # the box did add the feet


def test_the_shadow_stays_out_of_the_outline(pose: PoseModel) -> None:
    """A dark soft shadow on the floor beside and behind the feet is not part of the person."""
    r = render_scene(BODY, "front", CAM, "drawn", arm_angle_deg=30, seed=2, light_deg=45, shadow=True)
    view = segment(r.image_rgb, pose, "front")
    feet_row = int(np.nonzero(r.mask)[0].max())
    below = view.mask[feet_row + 3 :]
    assert below.sum() == 0
    # Beside the feet (where the cast shadow falls) nothing outside the person is taken either.
    band = slice(feet_row - 40, feet_row + 1)
    assert (
        view.mask[band] & ~cv2.dilate(r.mask[band].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    ).sum() < 30


def test_an_object_held_is_not_the_person(pose: PoseModel) -> None:
    """A suitcase standing on the floor, its handle in the person's hand, stays out of the outline."""
    r = render_scene(BODY, "front", CAM, "drawn", arm_angle_deg=18, seed=5)
    image = r.image_rgb.copy()
    lm = segment(r.image_rgb, pose, "front").landmarks["left_index"]  # the hand on the image's right
    hand_y, hand_x = round(lm.y_px), round(lm.x_px)
    feet = int(np.nonzero(r.mask)[0].max())
    box = (slice(hand_y + 4, feet), slice(hand_x - 10, min(image.shape[1] - 1, hand_x + 70)))
    image[box] = (120, 40, 30)
    image[hand_y - 6 : hand_y + 6, hand_x - 3 : hand_x + 3] = (30, 30, 30)  # the handle
    case = np.zeros(r.mask.shape, bool)
    case[box] = True
    case &= ~r.mask
    view = segment(image, pose, "front")
    assert (view.mask & case).sum() < 0.05 * case.sum()
    assert _iou(view.mask, r.mask) > 0.9


def test_cut_off_is_refused_and_a_tight_frame_is_not(pose: PoseModel) -> None:
    r = render_scene(BODY, "front", CAM, "drawn", arm_angle_deg=30, seed=1)
    ys = np.nonzero(r.mask)[0]
    top, bottom = int(ys.min()), int(ys.max())
    with pytest.raises(PhotoError) as err:
        segment(r.image_rgb[: top + int(0.75 * (bottom - top))], pose, "front")
    assert "feet outside" in err.value.reason and "include both feet" in err.value.reason
    with pytest.raises(PhotoError) as err:
        segment(r.image_rgb[top + int(0.05 * (bottom - top)) :], pose, "front")
    assert "head outside" in err.value.reason and "top of the head" in err.value.reason
    # Framed tightly, a few pixels around head and feet: measured, not refused; the outline starts at
    # the head top. (Its feet: see the next test.)
    tight = r.image_rgb[max(0, top - 6) : bottom + 7]
    view = segment(tight, pose, "front")
    assert abs(int(np.nonzero(view.mask)[0].min()) - 6) <= 2


def test_a_tight_frame_keeps_the_feet(pose: PoseModel) -> None:
    """Framed 7 px below the shoes, the learned mask alone stops at the ankles (the black shoes
    dropped, 13 cm) and the pose model puts the ankles up the shins, so the floor was 13 cm high.
    A mask near the photo's bottom edge is found again with the edge rows repeated below it
    (pose.FEET_PAD_SHARE): the shoes are kept, and the height scale is the loosely framed photo's
    (474.7 and 476.2 px here; 13 cm short, it was 8% small)."""
    r = render_scene(BODY, "front", CAM, "drawn", arm_angle_deg=30, seed=1)
    ys = np.nonzero(r.mask)[0]
    top, bottom = int(ys.min()), int(ys.max())
    view = segment(r.image_rgb[max(0, top - 6) : bottom + 7], pose, "front")
    assert abs(int(np.nonzero(view.mask)[0].max()) - (bottom - top + 6)) <= 3
    loose = segment(r.image_rgb, pose, "front")
    assert (view.bottom_px - view.top_px) / (loose.bottom_px - loose.top_px) == pytest.approx(1, abs=0.015)


def test_shoulder_points_are_the_acromions(pose: PoseModel) -> None:
    """The outline's shoulder points lie within 1.5 cm of the rendered acromions on each of four
    renders (outfits and light differ), and the shoulder width between them is within 1.5 cm on
    average. (The issue's 1 cm target for the bias is measured where it can be, on bench/body.py's
    200 people per sex: -0.68 / -0.48 cm, BENCHMARKS 18n. On these four renders of one body the
    mean was -0.86 cm on one machine and -1.18 on another, whose pose model's float arithmetic
    differs: too few and too alike to pin a 1 cm bias.)"""
    cam = Camera(
        height_cm=95.0, distance_cm=230.0, pitch_deg=0.0, focal_px=800.0, width_px=720, height_px=960
    )
    width_errors = []
    for seed in (1, 2, 3, 4):
        r = render_scene(BODY, "front", cam, None, arm_angle_deg=30, seed=seed)
        view = segment(r.image_rgb, pose, "front")
        points = acromion_points(view.mask, view.landmarks, r.px_per_cm)
        assert set(points) == {"left", "right"}
        truth = sorted(r.acromion_px)
        found = sorted(points.values())
        for (x, y), (tx, ty) in zip(found, truth, strict=True):
            assert abs(x - tx) < 1.5 * r.px_per_cm and abs(y - ty) < 1.5 * r.px_per_cm
        width_errors.append(((found[1][0] - found[0][0]) - (truth[1][0] - truth[0][0])) / r.px_per_cm)
    assert abs(float(np.mean(width_errors))) < 1.5


def test_pitch_is_found_from_the_body_and_levelled() -> None:
    """Rows of head top, acromion and heels seen by a camera pitched 15 degrees give back the pitch;
    levelled, a body point's row is linear in its height again."""
    cam = Camera(
        height_cm=150, distance_cm=200, pitch_deg=15.0, focal_px=0.78 * 960, width_px=720, height_px=960
    )
    pts = np.array([[0, 176.0, 0], [0, 144.0, 0], [0, 0, 0], [0, 105.0, 0], [0, 49.0, 0]])
    (top, acr, heel, waist, knee), _ = project(pts, cam)
    cues = [(acr[1], 144 / 176, 0.012), (knee[1], 49 / 176, 0.016)]
    pitch, apart = camera.estimate_pitch_deg(top[1], heel[1], cues, (960, 720))
    assert abs(pitch - 15.0) < 1.5 and apart < 0.5
    # A knee 8 cm off (a bent leg) disagrees with the shoulders: the caller does not level.
    _, apart = camera.estimate_pitch_deg(
        top[1], heel[1], [cues[0], (knee[1] - 8 * 4, 49 / 176, 0.016)], (960, 720)
    )
    assert apart > camera.MAX_DISAGREEMENT_DEG
    lt, lw, lh = camera.level_rows(np.array([top[1], waist[1], heel[1]]), pitch, 0.78 * 960, 480)
    assert abs((lh - lw) / (lh - lt) * 176 - 105.0) < 1.0  # the prior shrinks the pitch a little
    # Unlevelled, the same row would put the waist 6 cm off.
    assert abs((heel[1] - waist[1]) / (heel[1] - top[1]) * 176 - 105.0) > 4


def test_a_wide_lens_pitch_is_found_with_its_own_focal_length() -> None:
    """A 0.5x lens (13 mm equivalent) pitched 20 degrees from 1.15 m: with its focal length the rows of
    head top, acromion and heels give the pitch back; taken for a main camera's, they do not."""
    cam = Camera(
        height_cm=140, distance_cm=115, pitch_deg=20.0, focal_px=0.39 * 960, width_px=720, height_px=960
    )
    assert 12 < cam.focal_35mm < 15
    (top, acr, heel), _ = project(np.array([[0, 176.0, 0], [0, 144.0, 0], [0, 0, 0]]), cam)
    cues = [(acr[1], 144 / 176, 0.012)]
    pitch, _ = camera.estimate_pitch_deg(top[1], heel[1], cues, (960, 720), cam.focal_35mm)
    assert abs(pitch - 20.0) < 1.5
    assumed, _ = camera.estimate_pitch_deg(top[1], heel[1], cues, (960, 720))
    assert abs(assumed - 20.0) > 5
    # The focal length in pixels follows the 35 mm equivalent at any size of the photo.
    assert camera.focal_px((960, 720), cam.focal_35mm) == pytest.approx(cam.focal_px, rel=1e-6)
    assert camera.focal_px((480, 360), cam.focal_35mm) == pytest.approx(cam.focal_px / 2, rel=1e-6)


def test_a_wide_lens_photo_is_measured_with_its_focal_length(pose: PoseModel) -> None:
    """The same 0.5x camera: given the lens (as the photo's EXIF gives it), the photos are levelled at
    the true pitch and the torso widths come out within 1.5 cm; taken for a main camera's, the pitch
    ran to the search's end (30 degrees) and the waist and hip read 3 cm narrow (checked)."""
    cam = Camera(
        height_cm=140, distance_cm=115, pitch_deg=20.0, focal_px=0.39 * 720, width_px=540, height_px=720
    )
    front = render_scene(BODY, "front", cam, "drawn", arm_angle_deg=30, seed=8).image_rgb
    side = render_scene(BODY, "side", cam, "drawn", seed=9).image_rgb
    model = BodyModel.load()
    result = measure(front, side, 176, 82, "male", model, pose, focal_35mm=cam.focal_35mm)
    assert abs(result.camera_pitch_deg - 20.0) < 2.0
    for name in ("waist_width", "hip_width"):
        assert abs(result.observed_cm[name] - BODY[name]) < 1.5, name
    with pytest.raises(PhotoError, match="8-1000 mm"):
        measure(front, None, 176, 82, "male", model, pose, focal_35mm=2.0)


def test_the_phones_own_pitch_is_used_where_it_is_given(pose: PoseModel) -> None:
    """The phone's motion sensor gives its pitch: the photos are levelled with it, not with the one
    found from the body; a pitch no standing person can be measured at is refused."""
    cam = Camera(
        height_cm=150, distance_cm=230, pitch_deg=14.0, focal_px=0.78 * 720, width_px=540, height_px=720
    )
    front = render_scene(BODY, "front", cam, "drawn", arm_angle_deg=30, seed=8).image_rgb
    side = render_scene(BODY, "side", cam, "drawn", seed=9).image_rgb
    model = BodyModel.load()
    result = measure(front, side, 176, 82, "male", model, pose, phone_pitch_deg=14.0)
    assert result.camera_pitch_deg == 14.0
    for name in ("waist_width", "hip_width", "waist_depth", "hip_depth"):
        assert abs(result.observed_cm[name] - BODY[name]) < 1.5, name
    with pytest.raises(PhotoError, match="within \\+-45 degrees"):
        measure(front, None, 176, 82, "male", model, pose, phone_pitch_deg=60.0)


def test_a_side_photo_through_another_lens_is_levelled_with_its_own(pose: PoseModel) -> None:
    """The front through the main camera from 2.3 m, the side through the 0.5x lens from 1.15 m, both
    pitched 20 degrees: with the side's own focal length (its EXIF) its depths come out within 1 cm;
    levelled with the front's they were 2.5 cm off at the chest and the waist (checked)."""
    front_cam = Camera(
        height_cm=140, distance_cm=230, pitch_deg=20.0, focal_px=0.78 * 720, width_px=540, height_px=720
    )
    side_cam = Camera(
        height_cm=140, distance_cm=115, pitch_deg=20.0, focal_px=0.39 * 720, width_px=540, height_px=720
    )
    front = render_scene(BODY, "front", front_cam, "drawn", arm_angle_deg=30, seed=8).image_rgb
    side = render_scene(BODY, "side", side_cam, "drawn", seed=9).image_rgb
    result = measure(
        front,
        side,
        176,
        82,
        "male",
        BodyModel.load(),
        pose,
        focal_35mm=front_cam.focal_35mm,
        side_focal_35mm=side_cam.focal_35mm,
    )
    for name in ("chest_depth", "waist_depth", "hip_depth"):
        assert abs(result.observed_cm[name] - BODY[name]) < 1.0, name


def test_pitched_render_is_measured_after_levelling(pose: PoseModel) -> None:
    cam = Camera(
        height_cm=150, distance_cm=230, pitch_deg=14.0, focal_px=0.78 * 720, width_px=540, height_px=720
    )
    front = render_scene(BODY, "front", cam, "drawn", arm_angle_deg=30, seed=8).image_rgb
    side = render_scene(BODY, "side", cam, "drawn", seed=9).image_rgb
    result = measure(front, side, 176, 82, "male", BodyModel.load(), pose)
    assert 9 < result.camera_pitch_deg < 19
    got = result.observed_cm
    assert abs(got["hip_width"] - BODY["hip_width"]) < 2.0
    assert abs(got["waist_depth"] - BODY["waist_depth"]) < 2.0
    assert abs(got["shoulder_width"] - BODY["shoulder_width"]) < 2.0
    assert result.front_quality is not None and 0 < result.front_quality.score <= 1


def test_where_the_legs_part_only_bounds_the_inseam_from_below(
    pose: PoseModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The legs part below the crotch where the thighs touch: a gap top below what the other values
    predict leaves the inseam predicted (with a note naming the lower bound); one above it counts."""
    from atelier.body import photo

    cam = Camera(height_cm=110, distance_cm=240, pitch_deg=0.0, focal_px=800.0, width_px=720, height_px=960)
    front = render_scene(BODY, "front", cam, "drawn", arm_angle_deg=30, seed=3).image_rgb
    side = render_scene(BODY, "side", cam, "drawn", seed=4).image_rgb
    model = BodyModel.load()
    results = {}
    for gap_cm in (77.0, 90.0):
        monkeypatch.setattr(photo, "crotch_height_cm", lambda *a, gap=gap_cm, **k: gap)
        results[gap_cm] = measure(front, side, 176, 82, "male", model, pose)
    low = {m.name: m for m in results[77.0].measurements}["inseam"]
    high = {m.name: m for m in results[90.0].measurements}["inseam"]
    assert low.method.startswith("model(") and low.value_cm > 75
    assert "inseam" not in results[77.0].observed_cm
    assert any(name == "inseam" and "lower bound" in text for name, text in results[77.0].warnings)
    assert high.method == "photo+model" and high.value_cm > low.value_cm + 2
    assert results[90.0].observed_cm["inseam"] == 90.0


def test_real_photos(pose: PoseModel) -> None:
    """The shared real photos: the man's outline against his reference mask; the woman hugged by a
    dog and the footballer with a second player behind him are measured; so are the skiers (not
    refused as a group, nor for the chosen skier's 225 px)."""
    ryota = cv2.imread(str(_shared(PHOTOS / "pifu_ryota.png")), cv2.IMREAD_COLOR)[..., ::-1].copy()
    reference = cv2.imread(str(PHOTOS / "pifu_ryota_mask.png"), cv2.IMREAD_GRAYSCALE) > 127
    view = segment(ryota, pose, "front")
    assert _iou(view.mask, reference) > 0.95
    model = BodyModel.load()
    dog = cv2.imread(str(PHOTOS / "maxobjdet_pexels_dog-human.jpg"), cv2.IMREAD_COLOR)[..., ::-1].copy()
    result = measure(dog, None, 165, 0, None, model, pose)
    assert result.front_quality is not None and any(
        "face the camera" in i for i in result.front_quality.issues
    )
    # The dog (right half of the photo, beyond her hand) is not in the outline.
    view = segment(dog, pose, "front")
    assert not view.mask[:, int(0.75 * dog.shape[1]) :].any()
    soccer = cv2.imread(str(PHOTOS / "openpifpaf_wholebody_soccer.jpeg"), cv2.IMREAD_COLOR)[..., ::-1].copy()
    result = measure(soccer, None, 180, 0, "male", model, pose)
    assert result.photo_values_used > 0
    skiers = cv2.imread(str(PHOTOS / "openpifpaf_coco_000000541055_skiers.jpg"), cv2.IMREAD_COLOR)[..., ::-1]
    # Five skiers, two found by the pose model, standing apart: not refused as a group; the one seen
    # whole (the man on the right) is chosen. He is 225 px tall in this 640 x 360 photo, over the
    # 200 px minimum: measured, with a low quality score that says to step closer.
    result = measure(np.ascontiguousarray(skiers), None, 175, 0, None, model, pose)
    assert result.photo_values_used > 0
    assert result.front_quality is not None and result.front_quality.score < 0.5
    assert any("225 px tall: step closer" in i for i in result.front_quality.issues)


def _kept(name: str) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(KEPT / name), cv2.IMREAD_COLOR)[..., ::-1])


def test_real_photos_kept_with_the_tests(pose: PoseModel) -> None:
    """Every real photo with the person's head and feet in view is measured, none refused: the man
    front-on twice (5 and 6 photo values), the skier (3), the man leaning side-on on a bollard (2:
    measured as a front photo his turned chest reads 39 cm, over 4 sd, and the waist, 2.2 sd over,
    goes with it as the same outline). The astronaut, whose face is a mirrored visor, is found by no
    pose model pass and is refused with what to retake."""
    model = BodyModel.load()
    for name, values in (
        ("yogait_tada.jpg", 5),
        ("yogait_t5.jpg", 5),
        ("coco_000000000785_skier.jpg", 3),
        ("coco_000000234748_leaning.jpg", 2),
    ):
        result = measure(_kept(name), None, 175, 0, None, model, pose)
        assert result.photo_values_used >= values, name
    with pytest.raises(PhotoError) as err:
        measure(_kept("nasa_as11-40-5903_astronaut.jpg"), None, 175, 0, None, model, pose)
    assert (
        "found no person" in err.value.reason and "retake it with the whole body in view" in err.value.reason
    )
    # Not the colour outline's guess (it found the boots "outside the photo"): a fix that is wrong.
    assert "outside the photo" not in err.value.reason


def test_a_loose_tops_widths_go_together(pose: PoseModel) -> None:
    """A slim man in a boxy T-shirt (stated 178 cm, 70 kg): the hip width is far too wide for his
    height and weight (7.2 sd), and so is the chest width (36.7 cm for 27.5 +- 1.2, declared with
    the noise of the torso below the armpits); the waist width, 3.3 sd over, is the same garment's
    outline: none is used, so the girths are what height and weight predict (before, the waist
    width stayed and added 8 cm to the waist girth)."""
    model = BodyModel.load()
    known = {"height": Observation(178.0), "weight_kg": Observation(70.0)}
    prior = model.predict(known, "male").estimates
    result = measure(_kept("yogait_t5.jpg"), None, 178, 70, "male", model, pose)
    assert not {"chest_width", "waist_width", "hip_width"} & set(result.observed_cm)
    said = {name: w for name, w in result.warnings if name in ("chest_width", "waist_width")}
    assert all("close-fitting clothes" in w for w in said.values()) and len(said) == 2
    assert "loose garment" in said["waist_width"]
    got = {m.name: m.value_cm for m in result.measurements}
    assert abs(got["waist_girth"] - prior["waist_girth"].value_cm) < 1.0


@pytest.mark.parametrize(
    "path", [KEPT / "yogait_tada.jpg", KEPT / "yogait_t5.jpg", PHOTOS / "maxobjdet_pexels_dog-human.jpg"]
)
def test_real_photo_cut_off_both_ways_and_framed_tightly(pose: PoseModel, path: Path) -> None:
    """A real photo cut through the hair (2% of the person's height), the forehead or the eyes, or
    above the toes (1.5%), the ankles or the shins, is refused with the fix; framed 3 or 12 px
    around head and feet it is measured, and its height scale is the loose frame's within 1%
    (0.2-0.4% on these three; a shortened scale is the tight frame's usual failure). The woman with
    the dog framed 3 px was refused as "head outside the photo": the colour step grew the outline
    over the 3 px of background above her hair to the top edge, where the model's own mask stops
    short of it."""
    image = np.ascontiguousarray(cv2.imread(str(_shared(path)), cv2.IMREAD_COLOR)[..., ::-1])
    loose = segment(image, pose, "front")
    ys = np.nonzero(loose.mask)[0]
    top, bottom = int(ys.min()), int(ys.max())
    tall = bottom - top
    for share in (0.02, 0.04, 0.06):
        with pytest.raises(PhotoError) as err:
            segment(image[top + int(share * tall) :], pose, "front")
        assert "head outside" in err.value.reason and "top of the head" in err.value.reason
    for share in (0.985, 0.95, 0.85):
        with pytest.raises(PhotoError) as err:
            segment(image[: top + int(share * tall)], pose, "front")
        assert "feet outside" in err.value.reason and "include both feet" in err.value.reason
    scale = loose.bottom_px - loose.top_px
    for margin in (3, 12):
        tight = segment(image[max(0, top - margin) : bottom + margin + 1], pose, "front")
        assert (tight.bottom_px - tight.top_px) / scale == pytest.approx(1, abs=0.01)


def _two_people(gap_px: int) -> tuple[np.ndarray, np.ndarray]:
    """The same render twice side by side on one plain photo, ``gap_px`` between their outlines
    (negative: overlapping); and the left person's true mask."""
    cam = Camera(
        height_cm=120.0, distance_cm=235.0, pitch_deg=0.0, focal_px=640.0, width_px=900, height_px=720
    )
    r = render_scene(BODY, "front", cam, None, arm_angle_deg=30, seed=6, shadow=False)
    xs = np.nonzero(r.mask.any(axis=0))[0]
    shift = int(xs.max() - xs.min()) + gap_px
    left = np.zeros_like(r.mask)
    left[:, : r.mask.shape[1] - shift // 2] = r.mask[:, shift // 2 :]
    right = np.zeros_like(r.mask)
    right[:, shift - shift // 2 :] = r.mask[:, : r.mask.shape[1] - (shift - shift // 2)]
    image = r.image_rgb.copy()
    image[:, : r.mask.shape[1] - shift // 2][left[:, : r.mask.shape[1] - shift // 2]] = r.image_rgb[
        :, shift // 2 :
    ][r.mask[:, shift // 2 :]]
    image[:, shift - shift // 2 :][right[:, shift - shift // 2 :]] = r.image_rgb[
        :, : r.mask.shape[1] - (shift - shift // 2)
    ][r.mask[:, : r.mask.shape[1] - (shift - shift // 2)]]
    image[~(left | right)] = r.image_rgb[0, 0]
    return image, left


def test_two_people_apart_one_is_measured_with_a_warning(pose: PoseModel) -> None:
    """Two people of the same size standing apart: one is measured (its own outline, not the other's)
    and the photo's quality names the others; in contact, the photo is refused with what to do."""
    image, left = _two_people(60)
    view = segment(image, pose, "front")
    assert any("people of similar size" in i and "was measured" in i for i in view.issues)
    half = image.shape[1] // 2
    assert not (view.mask[:, :half].any() and view.mask[:, half:].any())  # one person only
    chosen = left if view.mask[:, :half].any() else left[:, ::-1]
    assert view.mask.sum() > 0.8 * chosen.sum()
    image, _ = _two_people(-25)
    with pytest.raises(PhotoError) as err:
        segment(image, pose, "front")
    assert "in contact" in err.value.reason and "step out of the picture" in err.value.reason


def test_a_side_view_is_told_from_a_front_view(pose: PoseModel) -> None:
    """From the landmarks: the face in profile or the shoulders one behind the other is a side view,
    a frontal face with the shoulders apart is not (whatever the torso's depth)."""
    front = segment(
        render_scene(BODY, "front", CAM, "drawn", arm_angle_deg=30, seed=1).image_rgb, pose, "front"
    )
    side = segment(render_scene(BODY, "side", CAM, "drawn", seed=2).image_rgb, pose, "side")
    px_front = (front.bottom_px - front.top_px) / BODY["height"]
    px_side = (side.bottom_px - side.top_px) / BODY["height"]
    spread = abs(front.landmarks["left_shoulder"].x_px - front.landmarks["right_shoulder"].x_px) / px_front
    assert side_view_verdict(side.landmarks, px_side, spread) is True
    assert side_view_verdict(front.landmarks, px_front, spread) is False


def test_floor_under_a_front_view_from_the_ankles(pose: PoseModel) -> None:
    """The scale's floor row in a front photo is within 3 cm of the floor under the body (the heel
    landmarks, hidden behind the feet, were 4-5 cm above it on such renders)."""
    cam = Camera(
        height_cm=120.0, distance_cm=300.0, pitch_deg=0.0, focal_px=640.0, width_px=540, height_px=720
    )
    r = render_scene(BODY, "front", cam, "drawn", arm_angle_deg=30, seed=1)
    view = segment(r.image_rgb, pose, "front", ankle_share=ANKLE_SHARE["male"])
    (floor,), _ = project(np.array([[0.0, 0.0, 0.0]]), cam)
    assert view.floor_by == "ankle landmarks"
    assert abs(view.bottom_px - floor[1]) < 3.0 * r.px_per_cm


def test_armpit_edges_stop_the_chest_width_at_the_torso() -> None:
    """An arm lying against the chest down to the armpit: the chest width is the torso's, taken just
    below the armpit, not the run out to the arm's outer edge."""
    mask = np.zeros((200, 200), bool)
    mask[20:200, 70:130] = True  # the torso, 60 px wide
    mask[20:60, 50:70] = True  # an upper arm against it on the left, down to row 60
    mask[60:120, 40:60] = True  # below the armpit the arm hangs apart (a 10 px gap)
    edges = armpit_edges_px(mask, 45.0, 100.0, 2.0)
    assert edges is not None and abs(edges[0] - 70) <= 1 and abs(edges[1] - 130) <= 1
    free = np.zeros((200, 200), bool)
    free[20:200, 70:130] = True
    assert armpit_edges_px(free, 45.0, 100.0, 2.0) is None


def test_armpit_edges_skip_the_bent_top_of_the_gap() -> None:
    """A mask that closes the gap's top over a few rows (the wedge between arm and torso): the edge
    below the armpit is read where it has settled, not carried up along the bend (which put the
    chest edge further out than the arm's start on renders)."""
    mask = np.zeros((200, 200), bool)
    mask[20:200, 70:130] = True
    mask[20:60, 50:70] = True  # the upper arm against the chest, down to row 60
    mask[60, 64:70] = True  # the wedge's last rows, closing over 1 cm (2 px at 2 px/cm)
    mask[61, 67:70] = True
    mask[60:120, 40:58] = True  # the arm hanging apart below
    edges = armpit_edges_px(mask, 45.0, 100.0, 2.0)
    assert edges is not None and abs(edges[0] - 70) <= 0.5 and abs(edges[1] - 130) <= 0.5


def test_armpit_edges_are_read_below_background_taken_in_between_arm_and_torso() -> None:
    """Background of the clothes' tone that the mask took in beside the torso: on the left a wedge
    between the upper arm and the chest whose bottom slopes inward over 10 cm, on the right a strip
    5 cm wide and 7 cm long down from the armpit that tapers back to the torso. Neither ends in a
    step (each row moves the edge 1 px at 2 px/cm), but no torso's side moves inward that fast:
    both edges are read below them, on the torso."""
    mask = np.zeros((200, 200), bool)
    mask[20:200, 70:130] = True  # the torso, 60 px wide
    mask[20:120, 40:50] = True  # arms hanging apart on both sides
    mask[20:120, 150:160] = True
    for row in range(45, 65):  # the wedge: from the arm's inner edge at the chest row, 1 px a row
        mask[row, 50 + (row - 45) : 70] = True
    mask[45:60, 130:140] = True  # the strip, then its taper back to the torso
    for row in range(60, 70):
        mask[row, 130 : 140 - (row - 60)] = True
    edges = armpit_edges_px(mask, 45.0, 100.0, 2.0)
    assert edges is not None and abs(edges[0] - 70) <= 0.5 and abs(edges[1] - 130) <= 0.5


def test_wrist_is_the_outline_narrowing_between_forearm_and_hand() -> None:
    """A vertical forearm tapering to the wrist at row 120, then a wider hand: the wrist is found at
    the narrowing from a landmark 2 cm up the forearm; with no narrowing the landmark is kept."""
    px_per_cm = 5.0
    mask = np.zeros((240, 200), bool)
    for row in range(20, 120):
        half = 17 - 4 * (row - 20) / 100  # forearm: 34 px wide at the elbow, 26 px at the wrist
        mask[row, round(100 - half) : round(100 + half)] = True
    cv2.ellipse(mask.view(np.uint8), (100, 165), (22, 45), 0, 0, 360, 1, -1)  # hand, 44 px wide
    mask[120:124] = False  # the hand's narrow start just below the forearm's end
    mask[120:124, 90:110] = True
    elbow = Landmark("left_elbow", 100.0, 20.0, 1.0)
    wrist = Landmark("left_wrist", 100.0, 110.0, 1.0)
    x, y = wrist_point_px(mask, elbow, wrist, px_per_cm)
    assert x == pytest.approx(100.0) and 119 <= y <= 124
    straight = np.zeros((240, 200), bool)
    straight[20:220, 85:115] = True
    assert wrist_point_px(straight, elbow, wrist, px_per_cm) == (100.0, 110.0)


def test_the_wrist_is_found_where_the_hand_widens_only_past_the_search_of_old() -> None:
    """A forearm tapering to a 24 px wrist at rows 120-123, the hand widening slowly from there (26 px
    at row 124, 44 px 6 cm further), the landmark 3.5 cm up the forearm. Within 4 cm towards the hand
    the outline was no wider than the wrist, and the landmark was kept: the sleeve 3.5 cm short. The
    search now reaches 6 cm towards the hand and finds the wrist."""
    px_per_cm = 5.0
    mask = np.zeros((260, 200), bool)
    for row in range(20, 240):
        if row < 120:
            half = 17 - 4 * (row - 20) / 100  # forearm: 34 px wide at the elbow, 26 px at the wrist
        elif row < 124:
            half = 12.0  # the wrist
        else:
            half = 13 + 9 * min(1.0, (row - 124) / 30) ** 2  # the hand: 44 px wide 6 cm past the wrist
        mask[row, round(100 - half) : round(100 + half)] = True
    elbow = Landmark("left_elbow", 100.0, 20.0, 1.0)
    wrist = Landmark("left_wrist", 100.0, 102.5, 1.0)
    x, y = wrist_point_px(mask, elbow, wrist, px_per_cm)
    assert x == pytest.approx(100.0) and 119 <= y <= 124


def test_strips_find_a_person_the_whole_photo_hides(pose: PoseModel) -> None:
    """A slim side view before a busy facade: the person found in a strip of the photo comes back in
    the photo's own coordinates (landmarks and mask on the person)."""
    scene = _shared(BACKGROUNDS / "archsearch_pexels_stone_facades_03.jpg")
    r = render_scene(BODY, "side", CAM, scene, seed=2)
    poses = pose._detect_in_strips(r.image_rgb)
    assert poses
    found = poses[0]
    assert found.soft is not None and _iou(found.soft > 0.5, r.mask) > 0.7
    nose = found.landmarks["nose"]
    assert r.mask[round(nose.y_px), max(0, round(nose.x_px) - 15) : round(nose.x_px) + 15].any()


def _as_the_bench_renders(
    ansur: dict,
    index: int,
    background: str,
    sex: str = "male",
    smooth_torso: bool = False,
    same_spot: bool = False,
    lens: float = 1.0,
) -> tuple[dict, SceneRender, SceneRender]:
    """ANSUR person ``index``'s measurements (of ``sex``) and the front and side renders on
    ``background`` as bench/body.py draws them (camera and arm angle from the person's seed;
    ``same_spot``: as ``--same-spot`` does, the side with the front's background and clothes;
    ``lens``: as ``--lens`` does)."""
    scene = _shared(BACKGROUNDS / background)
    body = {m: float(ansur[sex][m][index]) for m in MEASUREMENTS}
    rng = np.random.default_rng(index + (0 if sex == "male" else 100_000))
    cam = random_camera(rng, body["height"], lens=lens)
    arm = float(rng.uniform(25, 40))
    front = render_scene(body, "front", cam, scene, arm_angle_deg=arm, seed=index, smooth_torso=smooth_torso)
    side = render_scene(
        body,
        "side",
        cam,
        scene,
        seed=index + 1,
        smooth_torso=smooth_torso,
        background_seed=index if same_spot else None,
        outfit=random_outfit(np.random.default_rng(index)) if same_spot else None,
    )
    return body, front, side


def test_a_head_cut_through_is_refused_where_the_mask_lost_the_crown(pose: PoseModel, ansur: dict) -> None:
    """ANSUR woman #579 as bench/body.py renders her through a 0.5x lens (92 cm away, the phone at
    146 cm pitched 35 degrees down) before red brick: seen from above, the pose model's mask leaves
    out the crown (her hair), so cut 2% of her height from the top, the outline stopped about 30 px
    below the edge, nothing touched it, and the crop was measured. The matte holds the head's
    columns along the top row: the head goes on past the edge. Whole, she is measured."""
    _, front, _ = _as_the_bench_renders(
        ansur, 579, "archsearch_pexels_brick_buildings_01.jpg", sex="female", lens=0.5
    )
    ys = np.nonzero(front.mask)[0]
    top, bottom = int(ys.min()), int(ys.max())
    crop = np.ascontiguousarray(front.image_rgb[top + int(0.02 * (bottom - top)) :])
    outline_only = segment(crop, pose, "front", check_framing=False)
    assert np.nonzero(outline_only.mask)[0].min() > 10  # the outline stops short of the edge
    with pytest.raises(PhotoError) as err:
        segment(crop, pose, "front")
    assert "head outside" in err.value.reason and "top of the head" in err.value.reason
    segment(front.image_rgb, pose, "front")  # whole: measured
    segment(np.ascontiguousarray(front.image_rgb[max(0, top - 4) :]), pose, "front")  # 4 px above: too


def test_a_side_outline_that_lost_the_legs_keeps_its_depths(pose: PoseModel, ansur: dict) -> None:
    """ANSUR man #976 as bench/body.py renders him before the grey brick wall (CC0): the side
    photo's learned mask loses his legs below the knees against the bricks, and MediaPipe fits a
    whole, shorter person into what is left (heels at the mask's end): the side's own pixels per
    cm were 35% small, and a 46 cm waist depth (true 30.8) dropped the side photo. His head top
    lies on the front photo's row, so the side takes the front's scale and its three depths are
    used, each within 0.5 cm of the body's (0.0-0.2 cm)."""
    body, front_r, side_r = _as_the_bench_renders(ansur, 976, "skimage_cc0_brick_gray.png")
    front = front_r.image_rgb
    side = segment(side_r.image_rgb, pose, "side", "side")
    drawn = np.nonzero(side_r.mask)[0]
    outlined = np.nonzero(side.mask)[0]
    assert outlined.max() < drawn.max() - 0.2 * (drawn.max() - drawn.min())  # the legs are lost
    model = BodyModel.load()
    result = measure(front, side_r.image_rgb, body["height"], body["weight_kg"], "male", model, pose)
    for level in ("chest", "waist", "hip"):
        got, want = result.observed_cm.get(f"{level}_depth"), body[f"{level}_depth"]
        assert got is not None and abs(got - want) < 0.5, (level, got, want)


def test_a_front_view_sent_as_the_side_photo_is_told_to_turn(pose: PoseModel) -> None:
    """The front photo sent again as the side photo: its "depths" are the front's runs (the chest's
    with the arms), so its retake is to turn 90 degrees, and no depth is used."""
    r = render_scene(BODY, "front", CAM, "drawn", arm_angle_deg=30, seed=4)
    result = measure(r.image_rgb, r.image_rgb, 175.0, 75.0, "male", BodyModel.load(), pose)
    assert not any(name.endswith("_depth") for name in result.observed_cm)
    assert any("looks like a front or back view" in text for _, text in result.warnings)
    assert result.side_quality is not None
    assert any("turn 90 degrees" in issue for issue in result.side_quality.issues)


def test_a_side_outline_far_wider_than_the_front_is_told_to_find_a_plainer_background(
    pose: PoseModel, ansur: dict
) -> None:
    """ANSUR man #4020 as bench/body.py renders him before a stone facade: the side outline takes in
    the facade (a 52 cm chest depth for 24), and the landmarks fitted to it look frontal. A depth
    more than 1.3 times the front outline's run at its level is no view of a body: the retake is a
    plainer background, not "turn 90 degrees" (he stood side-on)."""
    body, front, side = _as_the_bench_renders(ansur, 4020, "archsearch_pexels_stone_facades_03.jpg")
    model = BodyModel.load()
    result = measure(front.image_rgb, side.image_rgb, body["height"], body["weight_kg"], "male", model, pose)
    assert not any(name.endswith("_depth") for name in result.observed_cm)
    assert not any("front or back view" in text for _, text in result.warnings)
    assert result.side_quality is not None
    assert any("plainer background" in issue for issue in result.side_quality.issues)
    assert not any("turn 90 degrees" in issue for issue in result.side_quality.issues)


def test_a_side_outline_with_no_run_through_the_hips_is_not_used(pose: PoseModel, ansur: dict) -> None:
    """ANSUR man #1517 as bench/body.py renders him before a dark station hall (a black top and
    trousers): the side's learned outline has no run through the body's centre on most rows about
    the hip level, and a 1-px sliver on two. That gave a hip depth of 0.2 cm declared +-8 cm (the
    profile's spread), which passed the implausibility tests and put the hip girth 18 cm low. The
    side photo is not used, with a retake hint, and the girths rest on the widths."""
    body, front, side = _as_the_bench_renders(ansur, 1517, "archsearch_pexels_glass_steel_10.jpg")
    result = measure(
        front.image_rgb, side.image_rgb, body["height"], body["weight_kg"], "male", BodyModel.load(), pose
    )
    assert not any(name.endswith("_depth") for name in result.observed_cm)
    assert result.side_quality is not None
    # Which check drops it depends on the pose model's arithmetic on the machine (its float path):
    # on one the broken run (the rule, unit-tested in test_side_outline_check), on another the
    # side outline read as a front view after the levelling failed. Either names a retake.
    assert any(
        "no outline through the body" in i or "turn 90 degrees" in i for i in result.side_quality.issues
    )
    hip = next(m for m in result.measurements if m.name == "hip_girth")
    assert abs(hip.value_cm - body["hip_girth"]) < 3 * hip.stddev_cm


def test_a_side_photo_without_a_person_is_dropped_not_refused(pose: PoseModel) -> None:
    """A side photo in which the pose model finds nobody (here: the empty room) is not used, with a
    warning and a side quality of 0 naming the retake; the front photo is still measured."""
    front = render_scene(BODY, "front", CAM, "drawn", arm_angle_deg=30, seed=1).image_rgb
    empty = render_scene(BODY, "side", CAM, "drawn", seed=2)
    room = empty.image_rgb.copy()
    room[empty.mask] = room[0, 0]  # the person painted out: a wall colour where they stood
    result = measure(front, room, 176, 82, "male", BodyModel.load(), pose)
    assert result.side_quality is not None and result.side_quality.score == 0.0
    assert "side photo not used" in result.side_quality.issues[0]
    assert not any(k.endswith("_depth") for k in result.observed_cm)
    assert "waist_width" in result.observed_cm


@pytest.mark.parametrize("view", ["front", "side"])
def test_the_render_is_as_wide_as_the_body(view: str) -> None:
    """The test set's person, as drawn into the photo, has the body's own widths and depths.

    cv2 fills a polygon's boundary pixels too, which made every drawn width and depth one
    supersampled pixel (0.1-0.2 cm) too large. Rows between the waist and chest levels, where the
    torso's profile is a straight line, so their mean is the profile's value at the middle row; the
    width is the person's coverage summed across the torso's run (what the colours show).
    """
    cam = Camera(
        height_cm=110.0, distance_cm=260.0, pitch_deg=0.0, focal_px=900.0, width_px=720, height_px=960
    )
    r = render_scene(BODY, view, cam, None, arm_angle_deg=35, seed=3, shadow=False)
    assert r.coverage is not None
    key = "width" if view == "front" else "depth"
    mid = (BODY["waist_height"] + BODY["chest_height"]) / 2
    rows = np.arange(-10, 11) + round(float(project(np.array([[0.0, mid, 0.0]]), cam)[0][0, 1]))
    heights = cam.height_cm - (rows + 0.5 - cam.height_px / 2) * cam.distance_cm / cam.focal_px
    share = (heights - BODY["waist_height"]) / (BODY["chest_height"] - BODY["waist_height"])
    expected = BODY[f"waist_{key}"] + share * (BODY[f"chest_{key}"] - BODY[f"waist_{key}"])
    px = cam.focal_px / cam.distance_cm
    centre = cam.width_px // 2
    widths = []
    for row in rows:
        line = r.coverage[row]
        left = centre - int(np.argmax(line[centre::-1] == 0))  # the first empty pixel either side
        right = centre + int(np.argmax(line[centre:] == 0))
        widths.append(float(line[left:right].sum()))
    assert np.mean(widths) / px == pytest.approx(np.mean(expected), abs=0.1)


def test_an_outline_run_into_a_wall_below_the_feet_is_not_a_cut_off(pose: PoseModel, ansur: dict) -> None:
    """ANSUR woman #348 as bench/body.py renders her (smooth torso) behind a low stone wall: the
    learned mask runs from her shoes down the wall to the bottom edge (26 px along it), which was
    refused as "feet outside the photo" although both feet are in it (1 of 200 women in the
    bench with --smooth-torso). The pose model sees both feet whole, well above that edge, so she
    is measured; the same photo cut through the shins is still refused."""
    body, front_r, side_r = _as_the_bench_renders(
        ansur, 348, "archsearch_pexels_stone_facades_03.jpg", sex="female", smooth_torso=True
    )
    front = front_r.image_rgb
    view = segment(front, pose, "front", "front")
    assert np.nonzero(view.mask[-3:])[0].size > 0  # the outline reaches the bottom edge
    result = measure(
        front, side_r.image_rgb, body["height"], body["weight_kg"], "female", BodyModel.load(), pose
    )
    # The height scale is the body's: the floor row from the ankles lies within 1% of her height of
    # the rendered heels, not at the outline's end on the photo's edge (12% lower). (Single values
    # are no check of it: chest and waist widths are off by 3-6 cm for her drawn as straight
    # segments too, her chest 4.5 cm narrower than her waist; her sleeve, within 1.5 cm on one
    # machine, came out 2.1 cm short on another whose pose model's float arithmetic differs.) The side photo, which the
    # wall does not reach, gives her hip depth.
    ys_drawn = np.nonzero(front_r.mask)[0]
    height_px = ys_drawn.max() - ys_drawn.min()
    assert abs(view.bottom_px - front_r.heel_px[1]) < 0.01 * height_px
    assert abs(result.observed_cm["hip_depth"] - body["hip_depth"]) < 1.5
    ys = np.nonzero(front_r.mask)[0]
    shins = front[: ys.min() + int(0.85 * (ys.max() - ys.min()))]
    with pytest.raises(PhotoError, match="feet outside the photo"):
        measure(shins, None, body["height"], body["weight_kg"], "female", BodyModel.load(), pose)


def test_a_photo_cut_through_the_ankles_is_refused_though_the_model_infers_whole_feet(
    pose: PoseModel, ansur: dict
) -> None:
    """ANSUR man #1935 as bench/body.py renders him before a glass facade, cut through the ankles
    (95% of his height from the top, bench/body_cutoff.py): the outline runs off the bottom edge
    with both legs, but the pose model places both feet whole, heels and toes seen at visibility
    0.6-0.8, 13-23 px above the edge, and the exception for an outline run on below whole feet
    (woman #348's wall) let the photo be measured. The legs meet the edge as wide as they are at
    the ankles: refused, while the wall test above still passes."""
    _, front_r, _ = _as_the_bench_renders(ansur, 1935, "archsearch_pexels_glass_steel_09.jpg")
    ys = np.nonzero(front_r.mask)[0]
    ankles = front_r.image_rgb[: ys.min() + int(0.95 * (ys.max() - ys.min()))]
    with pytest.raises(PhotoError, match="feet outside the photo"):
        segment(np.ascontiguousarray(ankles), pose, "front")


def test_a_smooth_torso_passes_through_its_levels_and_is_flat_at_the_narrowest() -> None:
    """bench/body.py --smooth-torso: the torso carried between its measured levels by a monotone
    cubic (no corner at the navel) instead of straight segments."""
    levels = [(80.0, 36.0), (100.0, 30.0), (120.0, 34.0)]
    heights = np.array([80.0, 97.0, 100.0, 103.0, 120.0])
    straight, smooth = _profile(levels, heights), _profile(levels, heights, smooth=True)
    assert smooth[[0, 2, 4]] == pytest.approx([36.0, 30.0, 34.0])
    assert straight[[1, 3]] == pytest.approx([30.9, 30.6])  # the corner: 0.3 and 0.2 cm per cm
    assert np.all(smooth[[1, 3]] >= 30.0)  # no overshoot below the narrowest level
    assert np.all(smooth[[1, 3]] - 30.0 < 0.5 * (straight[[1, 3]] - 30.0))  # flat there


def test_the_side_photo_from_the_same_spot_takes_the_front_outlines_run_into_the_facade_out(
    pose: PoseModel, ansur: dict
) -> None:
    """ANSUR man #3242 as bench/body.py --same-spot renders him before a glass-and-steel facade:
    the phone stayed where it was while he turned, so both photos share the background. The front
    photo's learned outline ran off his flanks into the facade (chest width 3.2 cm, waist width
    4.5 cm too wide); the side photo shows that very background there, and the plate step
    (atelier.body.plate) takes the run out: both widths within 2.2 cm of his."""
    body, front_r, side_r = _as_the_bench_renders(
        ansur, 3242, "archsearch_pexels_glass_steel_09.jpg", same_spot=True
    )
    result = measure(
        front_r.image_rgb, side_r.image_rgb, body["height"], body["weight_kg"], "male", BodyModel.load(), pose
    )
    for name in ("chest_width", "waist_width"):
        assert abs(result.observed_cm[name] - body[name]) < 2.2, (name, result.observed_cm[name], body[name])
