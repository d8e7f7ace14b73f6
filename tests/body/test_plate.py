"""The other photo from the same spot as a clean plate (atelier.body.plate)."""

from __future__ import annotations

import cv2
import numpy as np

from atelier.body.plate import MAX_REMOVED_SHARE, background_run

H, W = 480, 360


def _facade(seed: int = 0) -> np.ndarray:
    """A busy background: blocks of stone-like tones with fine noise, as a facade photo has."""
    rng = np.random.default_rng(seed)
    blocks = rng.uniform(90, 200, (12, 9, 3)).astype(np.float32)
    img = cv2.resize(blocks, (W, H), interpolation=cv2.INTER_NEAREST)
    # Stone grain: sd about 14 after the blur, against the sensor noise's 3.
    img += rng.normal(0, 50, img.shape[:2])[..., None].astype(np.float32)
    return np.clip(cv2.GaussianBlur(img, (0, 0), 1.0), 0, 255)


def _noisy(img: np.ndarray, seed: int) -> np.ndarray:
    """A shot of it: the sensor's own noise on every photo."""
    noise = np.random.default_rng(seed).normal(0, 3, img.shape).astype(np.float32)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _box(x0: int, x1: int, y0: int = 60, y1: int = 440) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _scene(shift_px: tuple[float, float] = (0.0, 0.0), plate_background: np.ndarray | None = None):
    """A front photo (a wide torso, 140-220) whose outline also took in 12 px of the facade beside
    it on 100 rows (220-232), and a side photo from the same spot (a narrow body, 160-200)."""
    facade = _facade()
    front_body, side_body = _box(140, 220), _box(160, 200)
    front = facade.copy()
    front[front_body] = (60, 70, 110)
    side = (facade if plate_background is None else plate_background).copy()
    side[side_body] = (120, 50, 40)
    side_img = _noisy(side, 2)
    if shift_px != (0.0, 0.0):
        m = np.float32([[1, 0, shift_px[0]], [0, 1, shift_px[1]]])
        side_img = cv2.warpAffine(side_img, m, (W, H), borderMode=cv2.BORDER_REPLICATE)
        side_body = cv2.warpAffine(side_body.astype(np.uint8), m, (W, H)).astype(bool)
    bleed = _box(220, 232, 150, 250)
    return _noisy(front, 1), front_body | bleed, bleed, side_img, side_body, front_body


def test_a_run_into_the_background_is_what_the_other_photo_shows_there() -> None:
    front, outline, bleed, side, side_body, body = _scene()
    run = background_run(front, outline, side, side_body)
    assert run is not None
    # The run into the facade goes but for the 2 px next to the body (the 5 x 5 mean mixes the
    # body's colour in there) and the matching test's 1% tail, and none of the body.
    assert (run & bleed)[:, 222:].sum() >= 0.9 * bleed[:, 222:].sum()
    assert (run & body).sum() == 0


def test_a_run_both_outlines_took_in_is_told_by_the_facades_texture() -> None:
    """The pose model runs into the same facade at the same place in both photos: the side
    outline claims most of the run too (6 of its 12 columns, and its margin 4 more), so the plain
    colour match is not enough there (one outfit seen from two sides could match), but the
    facade's grain seen again at the same pixels is, in a run that reaches past the side
    outline's claim."""
    front, outline, bleed, side, side_body, body = _scene()
    run = background_run(front, outline, side, side_body | (bleed & _box(0, 226)))
    assert run is not None
    assert (run & bleed)[:, 222:].sum() >= 0.8 * bleed[:, 222:].sum()
    assert (run & body).sum() == 0


def test_a_phone_that_moved_a_little_between_the_shots_is_aligned_first() -> None:
    front, outline, bleed, side, side_body, body = _scene(shift_px=(4.0, -3.0))
    run = background_run(front, outline, side, side_body)
    assert run is not None
    assert (run & bleed)[:, 222:].sum() >= 0.85 * bleed[:, 222:].sum()
    assert (run & body).sum() <= 0.01 * body.sum()


def test_another_place_is_no_plate() -> None:
    front, outline, _, side, side_body, _ = _scene(plate_background=_facade(seed=9))
    assert background_run(front, outline, side, side_body) is None


def test_clothes_of_the_walls_colour_are_not_carved_away() -> None:
    """A top of the wall's own colour before a plain wall: the body matches the plate wherever the
    side photo's narrower body leaves the wall in view. That is no run into the background; the
    plate takes nothing out (more than MAX_REMOVED_SHARE of the outline would go)."""
    wall = np.full((H, W, 3), 200.0, np.float32)
    front_body, side_body = _box(120, 240), _box(165, 195)
    front = wall.copy()
    front[front_body] = 200.0  # the same tone as the wall
    front[front_body & _box(120, 240, 60, 120)] = (180, 150, 130)  # a face and neck above it
    side = wall.copy()
    side[side_body] = (180, 150, 130)
    run = background_run(_noisy(front, 1), front_body, _noisy(side, 2), side_body)
    assert (front_body & ~side_body).sum() > MAX_REMOVED_SHARE * front_body.sum()
    assert run is None or not run.any()


def test_one_plain_outfit_seen_from_two_sides_is_not_taken_for_background() -> None:
    """The side outline against the front photo: the side view's body lies inside the front view's,
    in the same plain top, so its pixels match the front photo's there; that is the person in both
    photos (no background texture seen again), and none of it goes."""
    facade = _facade()
    front_body, side_body = _box(140, 220), _box(160, 200)
    front, side = facade.copy(), facade.copy()
    front[front_body] = (60, 70, 110)
    side[side_body] = (60, 70, 110)
    run = background_run(_noisy(side, 2), side_body, _noisy(front, 1), front_body)
    assert run is not None
    assert not (run & side_body).any()


def test_a_plate_with_no_background_left_is_no_plate() -> None:
    """Masks that leave (nearly) no shared background: no fit to make, None, not an error."""
    front, outline, _, side, _, _ = _scene()
    assert background_run(front, outline, side, np.ones((H, W), bool)) is None
    assert background_run(front, np.zeros((H, W), bool), side, outline) is None
