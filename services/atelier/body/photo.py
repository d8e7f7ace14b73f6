"""Measurements from a front photo (and optionally a side photo) and the stated height.

The pipeline, top to bottom (:func:`measure`):
1. decode in memory, reject tiny or blurred images;
2. person mask and landmarks: MediaPipe PoseLandmarker when installed, else OpenCV GrabCut;
   reject no person / several people / a person cut off at the head or feet;
3. scale: the mask's top-to-bottom extent is the stated height;
4. levels: the heights of chest, waist, hip and shoulder come from the statistical model given
   height/weight (refined by the shoulder and hip landmarks when there are any);
5. widths at those levels from the front mask (the run through the body's centre line, so arms
   held away from the body are not counted), depths from the side mask, crotch height from where
   the legs part;
6. every photo value enters the statistical model as a noisy observation: implausible ones
   (arms touching the body, a loose coat) are rejected with a warning, and girths come from the
   model conditioned on widths, depths and their ellipse perimeter (the fitted correction).

Photos stay in memory: nothing here writes or logs image data.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.stats import chi2

from atelier.body import camera, matte, outline, plate
from atelier.body.pose import Landmark, Pose, PoseModel
from atelier.body.statmodel import GARMENT_MEASUREMENTS, BodyModel, Observation, Prediction
from atelier.runtime import images

log = logging.getLogger(__name__)

MIN_SHORT_SIDE_PX = 256
# Below this the person is refused (a pixel would be over 0.85 cm); below GOOD_PERSON_PX the photo
# is measured with a lower quality score and a hint to come closer. Chosen on renders of 24 held-out
# people per sex reduced to 150-300 px tall (bench/body_person_px.py, table in BENCHMARKS.md): the
# smallest size tried at which chest, waist and hip girth MAE stay within 0.75 cm of full
# resolution on both sexes (at 200 px the largest change is women's waist +0.73 cm; at 150 px men's
# waist is +1.06 cm, worse than height and weight alone). Shoulder width is biased -2 to -4 cm at
# every size under 300 px, the old 250 included (see the body README).
MIN_PERSON_PX = 200
GOOD_PERSON_PX = 700
# 50 MP admits the 12-48 MP photos of today's phones (8064 x 6048, 8160 x 6120) in either orientation.
MAX_PIXELS = 50_000_000
MAX_SIDE_PX = 12_000
MAX_PHOTO_BYTES = 40 * 1024 * 1024
PHOTO_LIMITS = images.ImageLimits(
    max_bytes=MAX_PHOTO_BYTES, max_side_px=MAX_SIDE_PX, max_pixels=MAX_PIXELS, min_side_px=MIN_SHORT_SIDE_PX
)
# Mean absolute Laplacian response at the person's outline; renders and sharp photos score > 10.
MIN_SHARPNESS = 4.0
# Noise (one sd, cm) given to photo observations in the model; measured on synthetic renders
# (bench/body.py) and widened for real photos (clothes, posture). Widths and depths get their own
# per photo (:func:`outline_sd_cm`): edge placement, level uncertainty and this clothing allowance,
# an assumption for close-fitting clothes (renders have none; no real photos to estimate it on).
PHOTO_SD_CM = {"inseam": 1.5, "sleeve_length": 2.0, "shoulder_width": 1.5}
CLOTHING_SD_CM = 0.5
# Where an outline edge lies, one sd in pixels (each of the two edges of a width).
EDGE_SD_PX = 0.5
# An observation further than this many sd from what height/weight predict is rejected.
MAX_Z = 4.0
# When a front torso width is rejected as far too wide (a loose top, or the outline in the
# background), the other torso widths more than this many sd above the prediction are dropped with
# it: on a real photo of a slim man in a boxy T-shirt, stated 178 cm and 70 kg, the hip width was
# 7.2 sd over (rejected) and the chest and waist widths 3.5 and 3.3 sd over, which stayed and added
# 8 cm to the waist girth. (2 sd: a body that is itself wider than its height and weight suggest at one
# level stays, unless another level of the same outline is implausible.)
GARMENT_Z = 2.0
TORSO_WIDTHS = ("chest_width", "waist_width", "hip_width")
# Levels found on the outline are searched for within this many sd of the predicted level: 2 sd
# missed the waist on ~1 in 8 renders (the landmark-refined prediction is off by more than its sd).
LEVEL_SEARCH_SD = 3.0
LEVELS = {"chest": "chest_height", "waist": "waist_height", "hip": "hip_height"}
# The side depths' joint test (:func:`side_outline_problem`): a side photo is discarded when its
# three depths together are this unlikely given height, weight and the front widths (chi-square,
# 3 dof). A significance level, not a threshold fitted to renders: with right sds it discards one
# good side photo in 200.
JOINT_DEPTH_ALPHA = 0.005
JOINT_DEPTH_MAX = float(chi2.isf(JOINT_DEPTH_ALPHA, 3))  # 12.84


class PhotoError(Exception):
    """The photos cannot be measured at all (the servicer maps it to INVALID_ARGUMENT on ``field``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass
class ViewResult:
    mask: np.ndarray
    # The height scale: top of the head and the heels' floor contact (rows, px).
    top_px: float
    bottom_px: float
    centre_x_px: float
    landmarks: dict[str, Landmark]
    method: str
    # The photo itself (a reference, not a copy), for sub-pixel edges; None: whole pixels only.
    image_rgb: np.ndarray | None = None
    # Arms and hands (capsules along the landmarks); widths across the torso stop at them.
    arms: np.ndarray | None = None
    # 0..1, and what to retake to raise it (each names the fix).
    quality: float = 1.0
    issues: list[str] = field(default_factory=list)
    # Shoulder points (acromion) on the outline, by side; what gave the floor row.
    shoulder_points: dict[str, tuple[float, float]] = field(default_factory=dict)
    floor_by: str = "outline bottom"
    # The matte model's map (atelier.body.matte) the outline was trimmed with; None: not used.
    matte: np.ndarray | None = None
    # The person was found only as a level camera would see them (pose.standing_pitched).
    from_above: bool = False

    @property
    def px_per_cm(self) -> float:
        return 0.0


@dataclass
class LevelLine:
    name: str
    row_px: float
    x0_px: float
    x1_px: float
    value_cm: float


@dataclass
class PhotoMeasurement:
    name: str
    value_cm: float
    stddev_cm: float
    method: str
    confidence: float


@dataclass
class PhotoQuality:
    score: float
    issues: list[str]


@dataclass
class MeasureResult:
    measurements: list[PhotoMeasurement]
    warnings: list[tuple[str, str]]
    front_landmarks: dict[str, Landmark]
    side_landmarks: dict[str, Landmark]
    observed_cm: dict[str, float]
    segmentation_method: str
    male_probability: float
    front_overlay_png: bytes = b""
    side_overlay_png: bytes = b""
    front_lines: list[LevelLine] = field(default_factory=list)
    front_quality: PhotoQuality | None = None
    side_quality: PhotoQuality | None = None
    photo_values_used: int = 0
    camera_pitch_deg: float = 0.0
    # Shoulder points found on the front outline (px), for the overlay and the benchmark.
    shoulder_points: dict[str, tuple[float, float]] = field(default_factory=dict)


def decode(data: bytes, field_name: str) -> np.ndarray:
    """Upright RGB (the EXIF orientation applied), with the limits checked from the header first."""
    try:
        return images.decode(data, PHOTO_LIMITS, "RGB")
    except images.ImageError as exc:
        raise PhotoError(f"{field_name}.data", str(exc)) from None


# A phone pitched further than this (its sensor's reading) is refused with the retake. A bound chosen,
# not measured: the pitch found from the body is searched as far (camera.MAX_PITCH_DEG), and 0.5x
# renders are pointed up to 47 degrees down from under a metre.
MAX_PHONE_PITCH_DEG = camera.MAX_PITCH_DEG
PHONE_PITCH_FIX = (
    f"must be within +-{MAX_PHONE_PITCH_DEG:.0f} degrees (positive: the phone pointing down); "
    "retake the photos with the phone held upright at about waist height"
)
FOCAL_FIX = (
    f"must be {camera.FOCAL_35MM_RANGE[0]:.0f}-{camera.FOCAL_35MM_RANGE[1]:.0f} mm (a 35 mm equivalent, e.g. 26 "
    "for a phone's main camera), or 0 to read it from the front photo's EXIF"
)
# Two photos whose focal lengths (35 mm equivalents) differ by more than this share went through two
# lenses (a phone's lenses are 2x or more apart; one lens's EXIF value is rounded to a millimetre).
OTHER_LENS_SHARE = 0.1


def side_through_other_lens(
    front_shape: tuple[int, ...], focal_35mm: float | None, side_focal_35mm: float | None
) -> bool:
    """Whether the side photo's focal length (its EXIF) names another lens than the one the front is
    measured with: ``focal_35mm``, or where that is None the main camera's assumed for the front."""
    if side_focal_35mm is None:
        return False
    front = focal_35mm if focal_35mm is not None else camera.assumed_focal_35mm(front_shape)
    return abs(side_focal_35mm / front - 1) > OTHER_LENS_SHARE


def exif_focal_35mm(data: bytes) -> float | None:
    """The focal length (35 mm equivalent, mm) the photo's EXIF gives, where it is one a phone or camera
    photo can have (camera.FOCAL_35MM_RANGE); None otherwise (most apps that re-encode photos drop EXIF)."""
    value = images.focal_length_35mm(data, PHOTO_LIMITS)
    return value if value is not None and camera.plausible_focal_35mm(value) else None


def _largest_components(mask: np.ndarray) -> list[np.ndarray]:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    order = sorted(range(1, count), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    return [labels == i for i in order[:3]]


def grabcut_mask(image_rgb: np.ndarray, seed: np.ndarray | None = None) -> np.ndarray:
    """Foreground by GrabCut, on a reduced copy.

    Without ``seed``: initialised with a frame of background around the image edge. With ``seed``
    (the pose model's person mask): its core is certain foreground, the rest of it and a margin
    around it probable foreground/background, everything further away background. The pose mask
    is coarse (computed at 256 px) and often drops the feet or a hand; GrabCut's colour models
    extend it to the parts that look like the rest of the person.
    """
    h, w = image_rgb.shape[:2]
    scale = min(1.0, 512 / max(h, w))  # GrabCut is slow; segment a small copy and scale the mask up
    small = (
        cv2.resize(image_rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if scale < 1
        else image_rgb
    )
    sh, sw = small.shape[:2]
    margin_x, margin_y = max(2, sw // 40), max(2, sh // 100)
    if seed is None:
        mask = np.zeros((sh, sw), np.uint8)
        outline.grab_cut(small, mask, (margin_x, margin_y, sw - 2 * margin_x, sh - 2 * margin_y), 4)
    else:
        s = cv2.resize(seed.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST)
        ys = np.nonzero(s)[0]
        reach = max(3, round(0.12 * (ys.max() - ys.min()))) if ys.size else 3
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        mask = np.full((sh, sw), cv2.GC_BGD, np.uint8)
        mask[cv2.dilate(s, kernel, iterations=reach) > 0] = cv2.GC_PR_BGD
        # Feet and head the coarse pose mask dropped lie straight below and above it: the columns
        # it spans stay undecided from the top to the bottom of the frame (a lost lower leg made
        # the person 20% short, so every value scaled by the height was 20% off).
        cols = np.nonzero(s.any(axis=0))[0]
        if cols.size:
            x0, x1 = max(0, cols.min() - reach), min(sw, cols.max() + reach + 1)
            strip = mask[:, x0:x1]
            strip[strip == cv2.GC_BGD] = cv2.GC_PR_BGD
        mask[s > 0] = cv2.GC_PR_FGD
        mask[cv2.erode(s, kernel, iterations=3) > 0] = cv2.GC_FGD
        mask[:margin_y], mask[-margin_y:], mask[:, :margin_x], mask[:, -margin_x:] = (cv2.GC_BGD,) * 4
        if (mask == cv2.GC_FGD).any():
            outline.grab_cut(small, mask, (0, 0, 0, 0), 4)
    fg: np.ndarray = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    if scale < 1:
        fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_NEAREST)
    return fg.astype(bool)


def refine_edges(image_rgb: np.ndarray, mask: np.ndarray, band_px: int = 3) -> np.ndarray:
    """Re-decide the pixels near the outline at full resolution, by colour against the local background.

    GrabCut runs on a reduced copy and MediaPipe's mask is soft, so either outline can be a few
    pixels off, which is a centimetre on a width. A pixel in the band counts as person when it is
    further from the background colour (the ring just outside) than half the person's own
    distance from it (the ring just inside): an edge pixel half-covered is split evenly.
    """
    m = mask.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    inner = cv2.erode(m, kernel, iterations=band_px).astype(bool)
    outer = ~cv2.dilate(m, kernel, iterations=band_px).astype(bool)
    band = ~inner & ~outer
    ring_out = cv2.dilate(m, kernel, iterations=band_px + 3).astype(bool) & outer
    ring_in = inner & ~cv2.erode(m, kernel, iterations=band_px + 3).astype(bool)
    if ring_out.sum() < 50 or ring_in.sum() < 50:
        return mask
    lab = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    bg = np.median(lab[ring_out], axis=0)
    fg_dist = float(np.median(np.linalg.norm(lab[ring_in] - bg, axis=1)))
    if fg_dist < 12.0:  # the person does not stand out from the background here: keep the mask
        return mask
    refined = inner.copy()
    refined[band] = np.linalg.norm(lab[band] - bg, axis=1) > 0.5 * fg_dist
    return refined


def sharpness(image_rgb: np.ndarray, mask: np.ndarray) -> float:
    """Mean |Laplacian| on the mask's outline: low when the photo is out of focus or shaken."""
    grey = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap = np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=3))
    outline = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    return float(lap[outline].mean()) if outline.any() else 0.0


NO_PERSON = "the pose model found no person in the photo"
# What to do when no person is found: every refusal names the fix. The phone's hold is in it because
# a phone pointed steeply down from close by is one cause: 0.5x-lens renders from 0.75-0.95 m, pitched
# 28-47 degrees, were refused this way (11 of 100 women, 1 of 100 men; BENCHMARKS "issue 18r").
RETAKE_FIX = (
    "retake it with the whole body in view, facing the camera (or side-on for the side photo), in good "
    "light in front of a plainer background, the phone held upright at about waist height"
)
# A person found only as a level camera would see them (pose.standing_pitched) is measured where the
# lens is known: levelled through a lens assumed to be the main camera's, 0.5x renders pointed
# 28-47 degrees down came out with the pitch at its bound and waist girths 4-19 cm off; through
# their own (EXIF) focal length, about as near as the rest of the 0.5x photos (BENCHMARKS "issue 18t").
FROM_ABOVE = (
    "the person is seen steeply from above (the phone pointed down from close by) and the photo does "
    "not give its lens's focal length"
)
FROM_ABOVE_FIX = (
    "retake it with the phone held upright at about waist height, 2-3 m away; or send the photo with "
    "its EXIF (or focal_length_35mm_equiv_mm), so that it can be levelled"
)

CUT_FIX = {
    "head": "include the top of the head (step back, or hold the phone a little higher)",
    "feet": "include both feet down to the floor (step back, or hold the phone lower)",
    "body": "the whole body must be in the photo (step back)",
}
# The outline along the bottom edge over this share of the body's height (about 1.7 cm; a foot or
# leg cut through is 5-15 cm wide there) is the feet cut off; less is a strand of background.
MIN_CUT_RUN_SHARE = 0.01
# Both feet's ankle, heel and toe landmarks seen (visibility over 0.5) and clear of the bottom edge
# by this share of the outline's height (about 3.5 cm): the feet are in the photo, and an outline
# reaching the bottom edge has run into what is below them (a low wall the person stands behind).
FEET_CLEAR_SHARE = 0.02
# ... unless the outline meets the bottom edge at least this share of its width at the ankles (both
# legs) wide: one leg's width running off the photo is the legs cut off, whatever the landmarks
# infer (the model places "whole" feet above the edge of a photo cut through the ankles or above
# the toes). What ran on below whole feet is narrower: 0.19-0.39 on the renders seen (woman #348's
# low wall 0.39, clutter under the feet of three tight frames), against 0.53-1.42 for 19 of the 20
# crops through the feet the exception let through (first 100 per sex; the 20th, at 0.37, it still
# lets through).
LEG_RUN_SHARE = 0.5
# The nose at least this share of the outline's height below the outline's top: a whole head puts
# 4.7-11.5% between them (160 renders, whose heads have no hair: 0.047 at the least; the shared
# real photos 9.5-10.6%). Less is a head cut through above the nose whose outline lost what is
# left of it: renders cropped 6% from the top (through the nose) were measured with the nose 1.2%
# below an outline that began at the mouth (bench/body_cutoff.py). Front photos only: a side view's
# nose landmark lay at or near the outline's top on 4 of 400 whole side renders (-1.6% to 2.9%).
NOSE_BELOW_TOP_SHARE = 0.03
# The matte (U^2-Net, the second opinion on the front outline) over the head's columns along the
# photo's top row, median at or over this: the head runs on past the top edge, wherever the pose
# model's mask stops. Through a 0.5x lens from under a metre, pitched down, the head is seen from
# above and the mask lost the crown (a cap of hair) 2-14% of the height below the edge of photos
# cut through the hair or forehead, so nothing touched it: those crops were measured (BENCHMARKS
# "issue 18s"). On the first 40 per sex at 0.5x the matte's row there was 0.75-1.0 on 8 of the 15
# crops measured, and 0.18 at the most on whole renders and frames tight to 4 and 12 px.
HEAD_MATTE_EDGE = 0.5
# The head's columns: those the outline holds in this share of its height below its top.
HEAD_TOP_BAND_SHARE = 0.02


def segment(
    image_rgb: np.ndarray,
    pose_model: PoseModel | None,
    field_name: str,
    view: str = "front",
    check_framing: bool = True,
    ankle_share: float = outline.ANKLE_SHARE_ANY,
    matte_map: np.ndarray | None = None,
    focal_35mm: float | None = None,
) -> ViewResult:
    """The person's outline, landmarks, height scale and framing checks for one photo.

    Refused (PhotoError) only when the photo cannot be measured: no person, several people of
    similar size, a person cut off at the head or feet, too small or too blurred. Everything
    else lowers the photo's quality score with a hint that names the fix. ``matte_map``: the
    matte model's map of this photo where it is known (the levelled photo: the original's, warped);
    else the pose model's matte computes it. ``focal_35mm``: the photo's lens where known (a person
    seen steeply from above is found by levelling the skeleton, :func:`pose.standing_pitched`).
    """
    poses: list[Pose] = pose_model.detect(image_rgb, focal_35mm) if pose_model is not None else []
    poses = outline.distinct_people(poses)
    if pose_model is not None and not poses and view == "front":
        # Where the pose model finds no standing person, the front photo is not measured by colour
        # alone: cropped through the face (the detector keys on it) or the knees before a city or a
        # roof, GrabCut's outline was a blob of background and legs, and it passed every check.
        raise PhotoError(f"{field_name}.data", f"{NO_PERSON}: {RETAKE_FIX}")
    try:
        return _segment(image_rgb, pose_model, poses, field_name, view, check_framing, ankle_share, matte_map)
    except PhotoError as exc:
        if pose_model is None or poses:
            raise
        # (A side photo: a front one is refused above.) The colour outline alone misreads busy
        # scenes (a building or the floor as the person): its verdict is not the reason to give,
        # nor its fix (on the Apollo 11 photo, boots in view, it said "feet outside the photo:
        # include both feet"). Logged for whoever debugs it.
        log.info("%s: no pose found; the colour outline was refused: %s", field_name, exc.reason)
        raise PhotoError(
            exc.field, f"{NO_PERSON}, nor did the outline by colour alone find one: {RETAKE_FIX}"
        ) from None


def _segment(
    image_rgb: np.ndarray,
    pose_model: PoseModel | None,
    poses: list[Pose],
    field_name: str,
    view: str,
    check_framing: bool,
    ankle_share: float = outline.ANKLE_SHARE_ANY,
    matte_map: np.ndarray | None = None,
) -> ViewResult:
    h, w = image_rgb.shape[:2]
    landmarks: dict[str, Landmark] = {}
    issues: list[str] = []
    learned = False
    trimmed_by: np.ndarray | None = None  # the matte's map, where it trimmed the outline
    quality_factor = 1.0
    from_above = False
    if poses:
        best, similar = outline.choose_person(poses, w)
        if similar and outline.touches_another(poses, best):
            raise PhotoError(
                f"{field_name}.data",
                f"{similar + 1} people of similar size found, in contact or one in front of another: "
                "the photo must show one person (ask the others to step out of the picture)",
            )
        if similar:
            # Standing apart, each has an outline of their own: the most central, tallest, clearest
            # one is measured (a group photo with head and feet in view is not refused).
            quality_factor = 0.7
            issues.append(
                f"{similar + 1} people of similar size in the photo: the one "
                f"{_where(poses[best], w)} was measured; if that is not you, retake with you alone"
            )
        elif len(poses) > 1:
            issues.append(
                f"{len(poses) - 1} other (smaller) people ignored: the largest person was measured; "
                "a photo of one person alone is safer"
            )
        pose = poses[best]
        landmarks = pose.landmarks
        from_above = pose.from_above
        soft = pose.soft if pose.soft is not None else pose.mask.astype(np.float32)
        if (soft > 0.5).sum() >= 0.005 * h * w:
            others = [p.soft for i, p in enumerate(poses) if i != best and p.soft is not None]
            parts = [outline.learned_mask(image_rgb, soft, others, landmarks)]
            method, learned = "mediapipe-segmentation", True
            second = getattr(pose_model, "matte", None)
            if second is not None and view in matte.VIEWS and parts[0].any():
                if matte_map is None:
                    matte_map = second.around(image_rgb, parts[0])
                parts[0] = matte.trim(parts[0], matte_map, landmarks)
                trimmed_by = matte_map
        else:
            parts = _clean_mask(image_rgb, grabcut_mask(image_rgb))
            method = "mediapipe-pose(no mask)+grabcut"
    else:
        parts = _clean_mask(image_rgb, grabcut_mask(image_rgb))
        method = "grabcut" if pose_model is None else "grabcut(no landmarks)"
    if not parts or parts[0].sum() < 0.005 * h * w:
        raise PhotoError(f"{field_name}.data", f"no person found: {RETAKE_FIX}")
    person = parts[0]
    ys = np.nonzero(person)[0]
    top, bottom = int(ys.min()), int(ys.max())
    if not learned:
        # GrabCut always returns some foreground; on an empty scene it has no contrast with the rest.
        lab = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
        contrast = float(np.linalg.norm(lab[person.ravel()].mean(0) - lab[~person.ravel()].mean(0)))
        if contrast < 12.0 or bottom - top < 0.25 * h:
            raise PhotoError(
                f"{field_name}.data",
                f"no person found (nothing stands out from the background): {RETAKE_FIX}",
            )
        if len(parts) > 1:
            ys2, _ = np.nonzero(parts[1])
            if parts[1].sum() > 0.3 * person.sum() and (ys2.max() - ys2.min()) > 0.5 * (bottom - top):
                raise PhotoError(
                    f"{field_name}.data",
                    "several people (or person-sized objects) found: "
                    "the photo must show one person on a plain background",
                )
    model_top = None
    if learned:
        rows = np.nonzero(outline.person_mask(pose).any(axis=1))[0]
        model_top = int(rows[0]) if rows.size else None
    cut = _cut_off(person, landmarks, h, w, learned, view, model_top, trimmed_by) if check_framing else []
    if cut:
        raise PhotoError(
            f"{field_name}.data",
            f"the person is cut off ({' and '.join(cut)} outside the photo): "
            + "; ".join(CUT_FIX[c] for c in cut)
            + ". The whole body from head to feet must be visible, so the stated height can scale the photo",
        )
    if bottom - top < MIN_PERSON_PX:
        raise PhotoError(
            f"{field_name}.data",
            f"the person is {bottom - top} px tall; at least {MIN_PERSON_PX} px "
            "are needed (stand closer or use a larger photo)",
        )
    sharp = sharpness(image_rgb, person)
    if sharp < MIN_SHARPNESS:
        raise PhotoError(
            f"{field_name}.data", "the photo is too blurred to find the body outline (hold the phone still)"
        )
    quality = min(1.0, sharp / (2 * MIN_SHARPNESS)) ** 0.5 * quality_factor
    if bottom - top < GOOD_PERSON_PX:
        quality *= ((bottom - top) / GOOD_PERSON_PX) ** 0.5
        issues.append(
            f"the person is {bottom - top} px tall: step closer or use the full camera resolution "
            f"(>= {GOOD_PERSON_PX} px measures to a few mm)"
        )
    margin = max(2, round(0.005 * h))
    if check_framing and (
        outline.touches(person, "left", margin) or outline.touches(person, "right", margin)
    ):
        quality *= 0.8
        issues.append("an arm or hand reaches the side of the photo: step back a little")
    top_px, bottom_px, floor_by = float(top), float(bottom), "outline bottom"
    if learned:
        top_px = outline.head_top_px(person, landmarks)
        bottom_px, floor_by = outline.heel_contact_px(person, landmarks)
        if view == "front":
            floor = outline.front_floor_px(person, top_px, landmarks, ankle_share)
            if floor is not None:
                bottom_px, floor_by = floor, "ankle landmarks"
    person_px = bottom_px - top_px
    hips = [landmarks[n] for n in ("left_hip", "right_hip") if n in landmarks]
    if hips:
        centre = float(np.mean([lm.x_px for lm in hips]))
    else:
        # The torso's centre: median column of the mask in its middle third (arms and legs excluded).
        band = person[top + (bottom - top) // 3 : top + (bottom - top) // 2]
        centre = float(np.median(np.nonzero(band)[1]))
    arms = None
    if landmarks:
        radius = outline.arm_radius_px(person, landmarks, 0.028 * person_px)
        misplaced = outline.misplaced_arms(person, landmarks, centre, radius)
        if misplaced:
            # That arm's elbow, wrist and hand points lie on the torso, not on the arm: neither
            # carved out of the widths nor used for the sleeve.
            landmarks = {
                name: lm
                for name, lm in landmarks.items()
                if not any(
                    name.startswith(f"{side}_") and name.split("_", 1)[1] in ARM_POINTS for side in misplaced
                )
            }
        arms = outline.arm_mask(person.shape, landmarks, radius, centre)
    result = ViewResult(
        person, top_px, bottom_px, centre, landmarks, method, image_rgb, arms, quality, issues
    )
    result.floor_by = floor_by
    result.matte = trimmed_by
    result.from_above = from_above
    spread = _shoulder_spread_cm(landmarks, person_px / 170.0)
    if view == "front" and spread is not None and spread >= FRONT_MIN_SPREAD_CM:
        # Only square to the camera: turned, the outline's top near the shoulder is the head or hair.
        result.shoulder_points = outline.acromion_points(person, landmarks, person_px / 170.0)
    return result


# The arm's points below the shoulder (MediaPipe names after "left_"/"right_").
ARM_POINTS = ("elbow", "wrist", "pinky", "index", "thumb")


def _where(pose: Pose, width_px: int) -> str:
    """Where a person stands across the photo, in words."""
    xs = [lm.x_px for lm in pose.landmarks.values()]
    share = float(np.median(xs)) / width_px if xs else 0.5
    return "on the left" if share < 0.4 else "on the right" if share > 0.6 else "in the middle"


def _cut_off(
    person: np.ndarray,
    landmarks: Mapping[str, Landmark],
    h: int,
    w: int,
    learned: bool,
    view: str = "front",
    model_top: int | None = None,
    matte_map: np.ndarray | None = None,
) -> list[str]:
    """Which ends of the body are outside the photo, from the outline and the landmarks together.

    - Head: the outline touches the top edge and the model's own mask reaches it too
      (``model_top``, its first row: the colour step alone grew outlines over a few px of
      background above the hair to the edge; with no model mask, the outline alone); or the nose
      landmark lies above the top (the model places inferred landmarks outside the frame); or,
      for the learned outline of a front photo, the nose lies within NOSE_BELOW_TOP_SHARE of the
      outline's top; or the matte (``matte_map``, where the front outline was trimmed by it) holds
      the head's columns along the top row (HEAD_MATTE_EDGE), however far below the edge the
      outline stops.
    - Feet: the outline touches the bottom edge over more than a strand of pixels
      (MIN_CUT_RUN_SHARE), unless the pose model sees both feet whole and clear of that edge
      (FEET_CLEAR_SHARE: the outline ran on into the ground, or a chair's leg behind the person)
      and the outline meets the edge narrower than one leg (LEG_RUN_SHARE). In a side view one
      foot whole and clear is enough, since the near foot hides the far one (its landmarks are
      seen at 0.3-0.45 where the near foot's are 0.7-0.8). Also cut: every ankle landmark at or
      below the bottom edge.
    - Body: a shoulder or hip landmark outside the photo's width.

    A low landmark visibility alone is no evidence (one ankle is hidden in a side view,
    plain-coloured feet score low).
    """
    cut = []
    # GrabCut's frame keeps ~1% of the height as background, so there "touching" means within that;
    # the learned mask has no such frame.
    edge = int(0.015 * h) + 2 if not learned else max(1, round(0.002 * h))
    ys = np.nonzero(person)[0]
    nose = landmarks.get("nose")
    # Where the model's own mask (model_top: its first row) stops short of the top edge, an outline
    # reaching it was grown there by the colour step (dark hair under a dark gutter) and is no cut.
    if (
        (ys.min() <= edge and (model_top is None or model_top <= edge))
        or (nose is not None and nose.y_px < 0)
        or (
            learned
            and view == "front"
            and nose is not None
            and nose.y_px - ys.min() < NOSE_BELOW_TOP_SHARE * (ys.max() - ys.min())
        )
        or (matte_map is not None and _matte_holds_top_row(person, matte_map))
    ):
        cut.append("head")
    # A foot or leg cut by the bottom edge spans many columns there; a strand of a few pixels is the
    # outline bleeding into the background below the feet (a busy city photo, on one render).
    bottom_run = int(person[max(0, h - 1 - edge) :].any(axis=0).sum())
    outline_px = ys.max() - ys.min()
    feet = [landmarks.get(f"{s}_{p}") for s in ("left", "right") for p in ("ankle", "heel", "foot_index")]
    clear = [
        lm is not None and lm.visibility > 0.5 and lm.y_px < h - 1 - FEET_CLEAR_SHARE * outline_px
        for lm in feet
    ]
    whole = [all(clear[:3]), all(clear[3:])]  # left foot, right foot
    feet_inside = any(whole) if view == "side" else all(whole)
    if feet_inside:
        # What ran on below whole feet (a wall, a chair's leg) meets the edge narrower than a leg;
        # the legs themselves running off the photo meet it at least one leg's width wide.
        ankle_row = min(h - 1, max(0, round(max(lm.y_px for lm in feet[0::3] if lm is not None))))
        feet_inside = bottom_run < LEG_RUN_SHARE * int(person[ankle_row].sum())
    if bottom_run >= MIN_CUT_RUN_SHARE * outline_px and not feet_inside:
        cut.append("feet")
    else:
        ankles = [landmarks[n] for n in ("left_ankle", "right_ankle") if n in landmarks]
        if ankles and all(lm.y_px > h - edge for lm in ankles):
            cut.append("feet")
    shoulders_hips = [
        landmarks[n] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip") if n in landmarks
    ]
    if any(not (0 <= lm.x_px < w) for lm in shoulders_hips):
        cut.append("body")
    return cut


def _matte_holds_top_row(person: np.ndarray, matte_map: np.ndarray) -> bool:
    """Whether the matte calls the photo's top row person over the columns of the outline's head
    (those it holds in HEAD_TOP_BAND_SHARE of its height below its top), and background beside
    them (a head's width each side): the head goes on past the edge (see HEAD_MATTE_EDGE). A matte
    that calls the whole row person cannot tell the head from what is around it, and is not heard
    (on the renders where the head's columns were held, the row beside them was 0.03 at the most)."""
    ys = np.nonzero(person)[0]
    top = int(ys.min())
    band = person[top : top + max(2, round(HEAD_TOP_BAND_SHARE * (ys.max() - top)))]
    cols = np.nonzero(band.any(axis=0))[0]
    if cols.size == 0:
        return False
    x0, x1 = int(cols.min()), int(cols.max()) + 1
    row = matte_map[0]
    beside = np.concatenate([row[max(0, 2 * x0 - x1) : x0], row[x1 : 2 * x1 - x0]])
    return float(np.median(row[x0:x1])) >= HEAD_MATTE_EDGE and (
        beside.size == 0 or float(np.median(beside)) < HEAD_MATTE_EDGE
    )


def _clean_mask(image_rgb: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """Open the mask, refine its outline by colour, and split it into its largest components."""
    h, w = image_rgb.shape[:2]
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)
    # The band is as wide as the coarse masks can be off: the pose mask is computed at 256 px and
    # smears a few of its pixels past the outline (14 px below the feet of one 1000 px render).
    mask = refine_edges(image_rgb, mask, band_px=max(3, max(h, w) // 64))
    return _largest_components(mask)


# Shoulder-to-hip landmark distance over stature: about 0.3 (ANSUR II: acromial minus trochanterion
# height over stature, 0.27-0.34 from the 1st to the 99th percentile, 0.24 the least); below this
# share of the outline's height the skeleton is not the outline's person, or only part of it.
MIN_TORSO_SHARE = 0.15


def _pose_fits_outline(landmarks: Mapping[str, Landmark], person: np.ndarray) -> bool:
    """Whether the pose's torso (mid-shoulder to mid-hip) is plausibly long for the outline's height."""
    names = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
    if not all(n in landmarks for n in names):
        return True  # nothing to compare; the outline checks that follow still apply
    ys = np.nonzero(person)[0]
    torso = abs(
        (landmarks["left_hip"].y_px + landmarks["right_hip"].y_px) / 2
        - (landmarks["left_shoulder"].y_px + landmarks["right_shoulder"].y_px) / 2
    )
    return torso >= MIN_TORSO_SHARE * (ys.max() - ys.min())


def _edge_fraction(line: np.ndarray, inside: int, outside: int, step: int, mask_line: np.ndarray) -> float:
    """How far (px, -1..1) the true edge lies outward of the mask edge between ``inside`` and ``outside``.

    Each of the two pixels either side of the mask edge is a blend of the person's colour just
    inside the edge and the background's just outside (anti-aliasing, the lens): its share of
    the person, projected on that colour pair, is its coverage. An edge ``e`` px outward of the
    mask edge covers the inner pixel ``min(1, 1 + e)`` and the outer one ``max(0, e)``, so
    ``e = cover_in + cover_out - 1``. Returns 0 (the mask's own edge) where the two colours are
    too alike to tell, the row ends, or the references are not plain person and background
    (an arm a few pixels from the torso would otherwise pass for the background's colour).
    """
    n = line.shape[0]
    fg_idx = [inside - step * k for k in (2, 3, 4)]
    bg_idx = [outside + step * k for k in (2, 3, 4)]
    if not all(0 <= i < n for i in fg_idx + bg_idx):
        return 0.0
    if not mask_line[fg_idx].all() or mask_line[[outside, *bg_idx]].any():
        return 0.0
    fg = line[fg_idx].mean(axis=0)
    bg = line[bg_idx].mean(axis=0)
    axis = fg - bg
    norm = float(axis @ axis)
    if norm < 30.0**2:
        return 0.0
    cover_in = float(np.clip((line[inside] - bg) @ axis / norm, 0.0, 1.0))
    cover_out = float(np.clip((line[outside] - bg) @ axis / norm, 0.0, 1.0))
    return cover_in + cover_out - 1.0


def run_width_px(
    mask: np.ndarray, row: int, centre_x: float, image_rgb: np.ndarray | None = None
) -> tuple[float, float]:
    """Left and right edge (px) of the mask run on ``row`` through ``centre_x``, or (nan, nan).

    With the photo, each edge is placed to a fraction of a pixel from the colours across it
    (:func:`_edge_fraction`); a pixel is 2 mm on a 1000 px photo of a whole person.
    """
    if not 0 <= row < mask.shape[0]:
        return math.nan, math.nan
    line = mask[row]
    c = round(centre_x)
    if not 0 <= c < line.size or not line[c]:
        return math.nan, math.nan
    gaps_left = np.flatnonzero(~line[:c])
    left = int(gaps_left[-1]) + 1 if gaps_left.size else 0
    gaps_right = np.flatnonzero(~line[c:])
    right = c + int(gaps_right[0]) - 1 if gaps_right.size else line.size - 1
    x0, x1 = float(left), float(right + 1)
    if image_rgb is not None and right - left > 10:
        colours = image_rgb[row].astype(np.float32)
        if left > 0:
            x0 = left - _edge_fraction(colours, left, left - 1, -1, line)
        if right < line.size - 1:
            x1 = right + 1 + _edge_fraction(colours, right, right + 1, 1, line)
    return x0, x1


def band_width(
    mask: np.ndarray,
    row_px: float,
    centre_x: float,
    half_band_px: int,
    mode: str = "median",
    image_rgb: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """Width (px) over a few rows around ``row_px``: median for a level, max for a widest girth."""
    found = []
    for r in range(round(row_px) - half_band_px, round(row_px) + half_band_px + 1):
        left, right = run_width_px(mask, r, centre_x, image_rgb)
        if not math.isnan(left):
            found.append((right - left, left, right))
    if not found:
        return math.nan, math.nan, math.nan
    found.sort()
    pick = found[-1] if mode == "max" else found[len(found) // 2]
    return pick


# How far below the chest row the armpits are looked for, and the steepest inward slope (cm of edge
# per cm of height) a torso's side has there: an edge moving inward faster, going down, is the
# armpit (above it the arm and the torso are one run, below it there is a gap) or the bottom of
# background the mask took in between arm and torso. The torso's side narrows by 0.1-0.25 cm per cm
# from chest to waist (ANSUR II breadths and heights); on the first 60 renders per sex (a
# diagnostic) the chest width's MAE was 0.80 / 0.89 cm (men) and 1.29 / 1.28 (women) with 0.3 /
# 0.5, 1.01 / 1.28 with 1.0, and 1.13 / 1.47 with the 1.5 cm jump used before.
ARMPIT_SEARCH_CM = 15.0
ARMPIT_STEEP = 0.5
# The edge just below the armpit is taken over this many cm; extra noise (cm) on every chest width.
ARMPIT_SPAN_CM = 4.0
# The edge's slope (px per row) carried up to the chest row is bounded: the gap's top rows bend.
ARMPIT_MAX_SLOPE = 0.2
ARMPIT_SD_CM = 1.0
# How far below the last steep move (cm) the torso's edge has settled (the learned mask closes the
# top of the gap between arm and torso over a few rows).
ARMPIT_SETTLE_CM = 1.0


def armpit_edges_px(
    mask: np.ndarray, row_px: float, centre_x: float, px_per_cm: float
) -> tuple[float, float] | None:
    """The torso's left and right edges (px) at ``row_px``, read below an armpit; None where neither
    edge moves inward steeply below the row (no arm joins the torso there, no background between).

    In the front photo the upper arm lies against the chest down to the armpit, so the run through
    the body's centre at chest level spans part of the arms (on the renders the chest width was
    2-3 cm too large, 6 cm on some). Going down from the chest row, the run's edge moves inward,
    faster than a torso's side can (ARMPIT_STEEP), where the gap between arm and torso opens, and
    again where background the mask took in between them ends (a wedge under the armpit, a strip
    of a wall of the clothes' colour: on the renders 2-5 cm of chest width). Below the last such
    move the edge is the torso's: its median over ARMPIT_SPAN_CM, carried up along its own slope,
    stands for the edge at the chest row.
    """
    rows = range(round(row_px), min(mask.shape[0], round(row_px + ARMPIT_SEARCH_CM * px_per_cm)))
    runs = [run_width_px(mask, r, centre_x) for r in rows]
    left = np.array([r[0] for r in runs])
    right = np.array([r[1] for r in runs])
    span = max(2, round(ARMPIT_SPAN_CM * px_per_cm))
    found = False
    out = [float(left[0]), float(right[0])]
    for k, edge, sign in ((0, left, 1.0), (1, right, -1.0)):
        if np.isnan(edge).any():
            continue
        # Inward moves of the edge going down, over 1 cm (the learned mask can close the top of
        # the gap over a few rows, so the edge slides rather than steps there).
        base = max(1, round(1.0 * px_per_cm))
        steps = sign * (edge[base:] - edge[:-base])
        at = np.nonzero(steps > ARMPIT_STEEP * base)[0]
        if at.size:
            last = at[-1] + base
            # The gap's top still bends for about a cm below the last steep move (the mask closes the
            # wedge between arm and torso over a few rows): the edge is read below that.
            start = last + max(1, round(ARMPIT_SETTLE_CM * px_per_cm))
            idx = np.arange(start, min(edge.size, start + span))
            if idx.size >= 3:
                # The torso's edge below the armpit, carried up to the chest row along its own slope
                # (a belly narrows upward, a V-shaped torso widens), the slope bounded; a robust line
                # (median of pairwise slopes), so the wedge's last bent rows do not tilt it.
                i, j = np.triu_indices(idx.size, 1)
                slope = float(np.median((edge[idx][j] - edge[idx][i]) / (idx[j] - idx[i])))
                slope = float(np.clip(slope, -ARMPIT_MAX_SLOPE, ARMPIT_MAX_SLOPE))
                out[k] = float(np.median(edge[idx] - slope * idx))
            else:
                out[k] = float(np.median(edge[last : last + span]))
            found = True
    return (out[0], out[1]) if found else None


def crotch_height_cm(view: ViewResult, px_per_cm: float, start_row: float) -> float:
    """Height of the crotch: where the inner edges of the legs meet.

    The first row below the hip where the centre column leaves the body is where the gap between
    the legs is wide enough to show; a narrow gap just below the crotch is half filled by the
    segmentation (8 cm low on renders). So the gap's two edges are followed down over 15 cm from
    that row, a straight line is fitted to the gap's width, and the crotch is where it closes (at
    most 6 cm above the first open row).
    """
    c = round(view.centre_x_px)
    first = None
    for r in range(int(start_row), int(view.bottom_px)):
        if not view.mask[r, c]:
            first = r
            break
    if first is None:
        return math.nan
    rows, lefts, rights = [], [], []
    for r in range(first, min(int(view.bottom_px), first + round(15 * px_per_cm))):
        line = view.mask[r]
        if line[c]:
            break
        left = c
        while left > 0 and not line[left - 1]:
            left -= 1
        right = c
        while right < line.size - 1 and not line[right + 1]:
            right += 1
        if left == 0 or right == line.size - 1:
            break
        rows.append(r)
        lefts.append(left - 0.5)
        rights.append(right + 0.5)
    apex = float(first)
    # Only the learned mask (256 px) half fills a narrow gap; a colour outline leaves it open.
    if len(rows) >= 5 and view.method.startswith("mediapipe-segmentation"):
        # gap width = rights - lefts, linear in the row; zero at the apex.
        gap = np.array(rights) - np.array(lefts)
        slope, intercept = np.polyfit(np.array(rows, float), gap, 1)
        if slope > 1e-3:
            apex = float(np.clip(-intercept / slope, first - 6 * px_per_cm, first))
    return (view.bottom_px - apex) / px_per_cm


def _profile_cm(view: ViewResult, heights_cm: np.ndarray, height_cm: float) -> np.ndarray:
    """Run width (cm) of ``view``'s outline through its centre at each height (nan where not found)."""
    px = (view.bottom_px - view.top_px) / height_cm
    return (
        np.array(
            [
                band_width(view.mask, view.bottom_px - h * px, view.centre_x_px, 0, image_rgb=view.image_rgb)[
                    0
                ]
                for h in heights_cm
            ]
        )
        / px
    )


# Profiles along the height are sampled every PROFILE_STEP_CM; an extremum is that of their running
# mean over +-PROFILE_SMOOTH_HALF_CM (the outline's rows are noisy).
PROFILE_STEP_CM = 0.5
PROFILE_SMOOTH_HALF_CM = 0.5
# Half the band of rows (cm) over which a width or depth is read at a level (the median row). The
# side's chest and seat levels are maxima of a noisy depth profile, so the one row there reads high:
# over +-1.5 cm the chest girth's MAE fell 0.01 (men) and 0.03 cm (women) on 40 renders per sex,
# waist and hip the same or 0.01 better (+-1 cm: no change; +-2 and +-3 cm: men's hip worse).
FRONT_BAND_CM = 0.6
SIDE_BAND_CM = 1.5


def _extremum(heights: np.ndarray, values: np.ndarray, mode: str) -> float | None:
    """Height of the least (``min``) or greatest (``max``) value, smoothed (a running mean over
    +-PROFILE_SMOOTH_HALF_CM); None when a value is missing or the extremum lies at the edge of the
    range (no turning point in it)."""
    half = max(1, round(PROFILE_SMOOTH_HALF_CM / PROFILE_STEP_CM))
    if len(values) < 2 * half + 3 or np.isnan(values).any():
        return None
    smooth = np.convolve(values, np.ones(2 * half + 1) / (2 * half + 1), mode="valid")
    best = int(np.argmin(smooth) if mode == "min" else np.argmax(smooth)) + half
    if best in (half, len(values) - 1 - half):
        return None
    return float(heights[best])


def outline_sd_cm(
    view: ViewResult,
    height_cm: float,
    level_cm: float,
    level_sd_cm: float,
    level_free: bool = False,
    profile: np.ndarray | None = None,
) -> float:
    """Noise (one sd, cm) of a width or depth taken from ``view`` at ``level_cm``.

    Three independent parts: the two edges (EDGE_SD_PX each), the level (the spread of the
    value over +-1 sd of the level: large where the body widens fast, small at a waist or seat
    turning point; none when ``level_free``, a maximum over a band) and clothing. ``profile`` is the
    value at each of :func:`level_heights`, taken as the value itself is (without it: the outline's
    run through the centre). Rows where that breaks off (an arm joins the run, the outline has a hole)
    are left out of the spread (:func:`_level_var_cm2`): it is the body's shape about the level,
    and a broken outline declared as an uncertain value would pass every test of it.
    """
    px = (view.bottom_px - view.top_px) / height_cm
    var = 2 * (EDGE_SD_PX / px) ** 2 + CLOTHING_SD_CM**2
    if not level_free:
        if profile is None:
            profile = _profile_cm(view, level_heights(level_cm, level_sd_cm), height_cm)
        var += _level_var_cm2(profile, 1.0 / px)
    return math.sqrt(var)


# Below this share of the rows about a level (+-1 sd) with a run through the body's centre, the
# outline there is broken, not the body: a side outline before a dark station hall had the run on 4
# of 12 rows about the hip level, 0.2 cm deep on two of them; its hip "depth" of 0.2 cm, declared
# +-8 cm, put the hip girth 18 cm low. Of the bench's 385 side photos checked (200 per sex), 383
# have the run on at least 90% of the rows about every level; the other two 56% (kept) and 33%.
MIN_RUN_SHARE = 0.5


def level_heights(level_cm: float, level_sd_cm: float) -> np.ndarray:
    """Heights (cm) every 0.5 cm over +-1 sd of a level."""
    return np.arange(level_cm - level_sd_cm, level_cm + level_sd_cm + 1e-9, 0.5)


# A row's value further than this many robust sds (at least a pixel's) from the median of a level's
# profile is not the body's shape but a break in the outline.
LEVEL_OUTLIER_SD = 3.0


def _level_var_cm2(profile: np.ndarray, pixel_cm: float) -> float:
    """Variance (cm^2) of a profile's finite values, without those far from its median."""
    found = profile[np.isfinite(profile)]
    if found.size < 3:
        return 0.0
    med = float(np.median(found))
    spread = max(1.4826 * float(np.median(np.abs(found - med))), pixel_cm)
    kept = found[np.abs(found - med) <= LEVEL_OUTLIER_SD * spread]
    return float(np.var(kept))


def hip_level_cm(
    side: ViewResult, height_cm: float, predicted_cm: float, sd_cm: float, search_sd: float = LEVEL_SEARCH_SD
) -> float:
    """The hip (seat) level: where the side depth is greatest within 3 sd of the predicted level.

    ANSUR's buttock circumference and depth are taken at the maximum protrusion of the buttocks,
    which a side outline shows directly; the predicted level alone is a few cm off, and any error
    there measures the depth too small. Without a maximum inside the range the prediction stands.
    """
    heights = np.arange(predicted_cm - search_sd * sd_cm, predicted_cm + search_sd * sd_cm + 1e-9, 0.5)
    found = _extremum(heights, _profile_cm(side, heights, height_cm), "max")
    return predicted_cm if found is None else found


FEET_BELOW = "the feet lie below it"


def side_outline_problem(
    side: ViewResult,
    depths: Mapping[str, Observation],
    reference: Prediction,
    given_widths: Prediction | None = None,
    run_shares: Mapping[str, float] | None = None,
) -> str:
    """What says the side photo's outline is not the whole person ('' when nothing does).

    Its depths share one outline and one scale, so one sign of a broken outline discards them all:
    the feet's landmarks below the outline's bottom (the outline lost the lower legs against the
    background, and the scale with them), a run through the body's centre on fewer than
    MIN_RUN_SHARE of the rows about a depth's level (``run_shares``, per level), or a depth the
    model finds implausible for the height and weight. On busy backgrounds such side outlines took
    in a sign or a lamp and lost the feet; each depth then was 3-7 cm off, and only the grossest
    one was caught on its own.

    Learned side outlines on plain backgrounds also break less grossly (a seat level found 15 cm
    low, depths 3.5-5 cm off) and pass each depth's own test. With all three depths and
    ``given_widths`` (the model's prediction given height, weight and the front widths) they are
    also tested together: the sum of their squared z (each against that prediction's sd combined
    with the depth's own) beyond chi-square's ``JOINT_DEPTH_ALPHA`` point for 3 dof discards them.
    """
    ys = np.nonzero(side.mask)[0]
    bottom, top = float(ys.max()), float(ys.min())
    feet = [
        side.landmarks[n]
        for n in ("left_ankle", "right_ankle", "left_heel", "right_heel")
        if n in side.landmarks and side.landmarks[n].visibility > 0.5
    ]
    if any(lm.y_px > bottom + 0.02 * (bottom - top) for lm in feet):
        return FEET_BELOW
    shares = run_shares or {}
    for level in depths:
        if shares.get(level, 1.0) < MIN_RUN_SHARE:
            return f"no outline through the body about the {level} level"
    for level, depth in depths.items():
        est = reference.estimates[f"{level}_depth"]
        if abs(depth.value - est.value_cm) > MAX_Z * math.hypot(est.stddev_cm, depth.stddev):
            return f"a {level} depth of {depth.value:.0f} cm"
    if given_widths is not None and set(depths) == set(LEVELS):
        z2 = 0.0
        for level, depth in depths.items():
            est = given_widths.estimates[f"{level}_depth"]
            z2 += ((depth.value - est.value_cm) / math.hypot(est.stddev_cm, depth.stddev)) ** 2
        if z2 > JOINT_DEPTH_MAX:
            return "depths unlikely together for the height, weight and front widths"
    return ""


def facing_sign(landmarks: Mapping[str, Landmark]) -> float | None:
    """+1 when the person in a side photo faces the photo's right (+x), -1 its left; None if unknown.

    From the nose ahead of the ears and the toes ahead of the heels (each a vote; they must agree).
    """
    votes = []
    ears = [landmarks[n] for n in ("left_ear", "right_ear") if n in landmarks]
    if "nose" in landmarks and ears:
        votes.append(landmarks["nose"].x_px - float(np.mean([e.x_px for e in ears])))
    for s in ("left", "right"):
        toe, heel = landmarks.get(f"{s}_foot_index"), landmarks.get(f"{s}_heel")
        if toe is not None and heel is not None:
            votes.append(toe.x_px - heel.x_px)
    signs = {float(np.sign(v)) for v in votes if v != 0}
    return signs.pop() if len(signs) == 1 else None


def scale_plane_share(front: ViewResult, horizon_px: float) -> float:
    """How much of the front photo's height scale the floor end carries: the camera's height over
    the stature (0..1), from the horizon's row (a level camera's principal row) between the head
    top and the floor.

    The scale (pixels per cm, head top to floor) is set at a depth between the head top's and the
    malleoli's (the floor row comes from the ankles): the rows above the horizon are the head's
    share of it, those below the feet's. To first order in depth / distance, the scale's plane lies
    at (1 - s) * head depth + s * ankle depth, with s this share.
    """
    span = front.bottom_px - front.top_px
    return float(np.clip((front.bottom_px - horizon_px) / span, 0.0, 1.0)) if span > 0 else 0.5


# Where the side photo shows the depth of the front scale's two ends (shares of the stature): the
# head's middle between the vertex and below the ear canal (on renders 0.3 cm sd against the head
# top's depth; the ear landmark was 2.7 cm ahead of it, sd 0.9), and the lower leg's middle above
# the foot and below the calf (0.2 cm sd against the malleoli for most; the ankle landmarks sd 2.4).
HEAD_ROWS_SHARE = (0.03, 0.09)  # below the head top
SHIN_ROWS_SHARE = (0.08, 0.14)  # above the floor


def _run_middle_px(mask: np.ndarray, rows: np.ndarray, hint_x: float) -> float:
    """The median middle (px) of the mask's run on each row that holds ``hint_x``, or is nearest it."""
    middles = []
    for row in rows:
        if not 0 <= row < mask.shape[0]:
            continue
        line = np.concatenate(([0], mask[row].astype(np.int8), [0]))
        edges = np.flatnonzero(np.diff(line))
        if edges.size == 0:
            continue
        starts, ends = edges[0::2], edges[1::2]  # run: [start, end)
        gap = np.maximum(starts - hint_x, 0) + np.maximum(hint_x - ends, 0)
        j = int(np.argmin(gap))
        middles.append((starts[j] + ends[j]) / 2)
    return float(np.median(middles)) if middles else math.nan


def forward_offsets_cm(
    side: ViewResult,
    edges_px: Mapping[str, tuple[float, float]],
    height_cm: float,
    share: float,
) -> dict[str, float]:
    """Each level's cross-section centre ahead of the front photo's scale plane (cm, + forward).

    A front photo's pixels per cm hold at one depth (:func:`scale_plane_share`): a cross-section
    whose centre lies ``d`` nearer the camera than that plane is seen ``D / (D - d)`` wide. On renders
    the seat's centre lies 3 cm behind the line of head top and malleoli (the front photo's hip
    width about 1% small at 2 m); on real bodies the chest and seat lie ahead of or behind it by a
    few cm, person by person. The side photo shows it: the middle of its run at each level against
    the head's middle (the vertex is above it) and the lower leg's (the malleoli), in the direction
    the person faces. Empty where the facing is not known or the outline has no head or legs there.
    """
    sign = facing_sign(side.landmarks)
    px = (side.bottom_px - side.top_px) / height_cm
    if sign is None or px <= 0:
        return {}
    ys, xs = np.nonzero(side.mask)
    top = int(ys.min())
    vertex_x = float(np.mean(xs[ys <= top + 1]))
    head_x = _run_middle_px(
        side.mask,
        np.arange(
            round(side.top_px + HEAD_ROWS_SHARE[0] * height_cm * px),
            round(side.top_px + HEAD_ROWS_SHARE[1] * height_cm * px),
        ),
        vertex_x,
    )
    shin_x = _run_middle_px(
        side.mask,
        np.arange(
            round(side.bottom_px - SHIN_ROWS_SHARE[1] * height_cm * px),
            round(side.bottom_px - SHIN_ROWS_SHARE[0] * height_cm * px),
        ),
        side.centre_x_px,
    )
    if math.isnan(head_x) or math.isnan(shin_x):
        return {}
    plane_x = (1 - share) * head_x + share * shin_x
    return {level: sign * ((x0 + x1) / 2 - plane_x) / px for level, (x0, x1) in edges_px.items()}


def perspective_width_cm(width_cm: float, forward_cm: float, depth_cm: float, distance_cm: float) -> float:
    """The breadth of an elliptical cross-section from its width as seen in the front photo.

    ``distance_cm``: from the camera to the scale's plane (focal length / pixels per cm); the section
    ``forward_cm`` nearer than that plane and ``depth_cm`` deep. A camera at distance L sees an
    ellipse of half-breadth a and half-depth b as ``a / sqrt(L^2 - b^2)`` (tangent rays), so the
    seen width is the breadth times ``distance / sqrt((distance - forward)^2 - (depth / 2)^2)``.
    """
    near = distance_cm - forward_cm
    if near <= depth_cm:
        return width_cm
    return width_cm * math.sqrt(near**2 - (depth_cm / 2) ** 2) / distance_cm


# Offsets of a cross-section's centre from the scale plane larger than this (cm) are not the body's
# (a side run that took in an arm or a bag ahead of the torso): no correction there.
MAX_FORWARD_CM = 12.0


def _correct_front_perspective(
    observed: dict[str, Observation],
    lines: list[LevelLine],
    forward_cm: Mapping[str, float],
    distance_cm: float,
) -> None:
    """Turn the front widths into breadths at their own depth (:func:`perspective_width_cm`)."""
    for level, forward in forward_cm.items():
        name, depth = f"{level}_width", observed.get(f"{level}_depth")
        if name not in observed or depth is None or abs(forward) > MAX_FORWARD_CM:
            continue
        width = observed[name]
        breadth = perspective_width_cm(width.value, forward, depth.value, distance_cm)
        observed[name] = Observation(breadth, width.stddev)
        lines[:] = [dataclasses.replace(ln, value_cm=breadth) if ln.name == name else ln for ln in lines]


def seat_level_cm(side: ViewResult, height_cm: float, predicted_cm: float, sd_cm: float) -> float:
    """The hip (seat) level: where the buttocks protrude furthest back, within 3 sd of the prediction.

    ANSUR's buttock circumference and depth are taken at the buttocks' greatest posterior
    protrusion, which the side outline's back edge shows. The greatest whole depth (used before,
    :func:`hip_level_cm`) is the same place on a flat belly but climbs to the belly on a round one
    (the hip level 4-11 cm high on heavy men's renders, the depth there too large). Falls back to
    the greatest depth where the facing is unknown.
    """
    sign = facing_sign(side.landmarks)
    if sign is None:
        return hip_level_cm(side, height_cm, predicted_cm, sd_cm)
    heights = np.arange(
        predicted_cm - LEVEL_SEARCH_SD * sd_cm, predicted_cm + LEVEL_SEARCH_SD * sd_cm + 1e-9, 0.5
    )
    px = (side.bottom_px - side.top_px) / height_cm
    back = []
    for h in heights:
        x0, x1 = run_width_px(side.mask, round(side.bottom_px - h * px), side.centre_x_px, side.image_rgb)
        back.append(-x0 if sign > 0 else x1)  # larger: further back
    found = _extremum(heights, np.array(back, float), "max")
    return predicted_cm if found is None else found


# One sd (cm) of the seat and chest levels as read off the side outline, when they place the waist.
# The seat's is its measured error: where the back lies furthest back was, against ANSUR's buttock
# height on the bench's renders (200 per sex, 18q), robust sd 3.1 cm (men) and 2.5 (women), no
# nearer on average than the level height, weight and acromion predict (MAE 2.55 / 2.07 against
# 2.42 / 1.98), its errors correlated 0.5 / 0.4 with the prediction's. Taken at 2.0 it pulled the
# navel after the seat's jitter (waist girth MAE 1.99 / 2.34 cm; at 2.8, 1.96 / 2.33). The chest's
# is not measured. The hip depth and width stay at the seat found: ANSUR takes them at the
# greatest protrusion, which the outline shows wherever it lies.
SIDE_LEVEL_SD_CM = 2.0
SEAT_LEVEL_SD_CM = 2.8


def anchored_waist_level_cm(
    model: BodyModel, known: Mapping[str, Observation], sex: str | None, seat_cm: float, chest_cm: float
) -> float:
    """The waist (navel, ANSUR's omphalion) level with a side photo: where ANSUR's proportions put it
    between the seat and chest levels found on the side outline.

    The navel leaves no mark on an outline. Its height is predicted by the body model from the
    stature, weight and acromion height (``known``) together with the buttock and chest heights
    as observed (the greatest protrusions of the seat and the chest; SEAT_LEVEL_SD_CM and
    SIDE_LEVEL_SD_CM), so the waist sits where people of this build have it relative to those two
    levels. The outline's sharpest bend of the side depth was used before: it is where a body drawn
    from straight segments between levels has its corner, and it was 2.2-2.7 cm off on renders
    (this: 1.6-2.1), and a real waist need not bend there.
    """
    observed = {
        **known,
        "hip_height": Observation(seat_cm, SEAT_LEVEL_SD_CM),
        "chest_height": Observation(chest_cm, SIDE_LEVEL_SD_CM),
    }
    return model.predict(observed, sex, names=("waist_height",)).estimates["waist_height"].value_cm


def waist_level_cm(
    front: ViewResult,
    height_cm: float,
    predicted_cm: float,
    sd_cm: float,
    floor_cm: float = -math.inf,
    ceiling_cm: float = math.inf,
) -> float:
    """The waist level without a side photo: the least front width within 3 sd of the predicted level.

    The predicted level is a few cm off, and the torso narrows towards the waist, so an error
    there makes the width too large. ``floor_cm`` (the hip level) and ``ceiling_cm`` (the chest
    level) bound the search, 3 cm inside them. Where nothing stands out the prediction stands.
    """
    lo = max(predicted_cm - LEVEL_SEARCH_SD * sd_cm, floor_cm + 3.0)
    hi = min(predicted_cm + LEVEL_SEARCH_SD * sd_cm, ceiling_cm - 3.0)
    heights = np.arange(lo, hi + 1e-9, 0.5)
    found = _extremum(heights, _profile_cm(front, heights, height_cm), "min")
    return predicted_cm if found is None else found


# Sd of the acromion's height share for the pitch: ANSUR's own spread (0.010) plus where the
# outline's shoulder point is read (about 1 cm).
PITCH_CUE_SD = {"acromion": 0.012}
# One sd (cm) of the acromion height read off the front outline (its row, the scale).
SHOULDER_LEVEL_SD_CM = 1.5
# Extra noise (cm) on a width whose run ends at an arm lying on the body.
ARM_TOUCH_SD_CM = 2.0
# Shoulder landmarks closer than this (cm) in the front photo: the person is turned away from the
# camera (square to it they are ~30-38 cm apart; in profile a few cm).
FRONT_MIN_SPREAD_CM = 20.0


# Relative sd of a photo's height scale (pixels per cm from the head top to the floor): on 60 renders
# per sex the floor row under the body, from the ankle landmarks, was off by 1.4-1.6% of the height
# (mean absolute; robust sd 1.5-1.8%), the head top by 0.2-0.4%.
SCALE_SD = 0.015


# A front width whose two halves (from the torso's axis) differ by more than this (cm) is lopsided:
# one edge ran into the background or was cut into; it gets this much extra noise when mirrored.
LOPSIDED_CM = 2.5
LOPSIDED_SD_CM = 1.0
AXIS_MAX_MAD_CM = 1.0


def torso_axis_px(
    mask: np.ndarray, front: ViewResult, rows: Sequence[float], px_per_cm: float
) -> float | None:
    """The torso's vertical axis (column, px): the median midpoint of the runs through the centre on
    every second row between ``rows`` (the hip and chest rows). A standing body is left-right
    symmetric about it; an edge that strays on a few rows hardly moves the median. None where the
    midpoints wander (median absolute deviation over AXIS_MAX_MAD_CM: a twisted or running body, an
    arm across the torso): no axis to mirror about."""
    lo, hi = sorted(round(r) for r in rows)
    mids = []
    for r in range(lo, hi + 1, 2):
        x0, x1 = run_width_px(mask, r, front.centre_x_px)
        if not math.isnan(x0):
            mids.append((x0 + x1) / 2)
    if len(mids) < 5:
        return None
    axis = float(np.median(mids))
    if float(np.median(np.abs(np.array(mids) - axis))) > AXIS_MAX_MAD_CM * px_per_cm:
        return None
    return axis


def _lopsided_edges_px(
    x0: float, x1: float, axis_px: float | None, px_per_cm: float, expected_px: float
) -> tuple[float, float] | None:
    """Edges with the stray one replaced by the mirror of the other, when the run's two halves from the
    torso's axis differ by more than LOPSIDED_CM; None when they do not. Which edge strayed is told by
    which mirrored width is nearer ``expected_px`` (the width expected for the height and weight): a
    bleed into a wall of the clothes' colour widens one side, a misplaced arm cuts one."""
    if axis_px is None:
        return None
    left, right = axis_px - x0, x1 - axis_px
    if abs(left - right) <= LOPSIDED_CM * px_per_cm or min(left, right) <= 0:
        return None
    if abs(2 * left - expected_px) <= abs(2 * right - expected_px):
        return x0, axis_px + left
    return axis_px - right, x1


def _arm_touches(view: ViewResult, row: float, x0: float, x1: float) -> bool:
    if view.arms is None:
        return False
    r = round(row)
    if not 0 <= r < view.mask.shape[0]:
        return False
    w = view.mask.shape[1]
    for x in (math.floor(x0) - 1, math.ceil(x1)):
        if 0 <= x < w and view.arms[r, x] and view.mask[r, x]:
            return True
    return False


# Nose offset from the ears' midpoint over the ears' spread: ~0-0.25 for a face seen from the front
# (the nose between the ears), 1.4-27 in profile (the ears on one spot, the nose ahead of them):
# renders of both views, 28 people each; the real front photos 0.05-0.23.
PROFILE_FACE_RATIO = 0.6
FRONT_FACE_RATIO = 0.3


def side_view_verdict(
    side_lms: Mapping[str, Landmark], px_per_cm: float, front_spread_cm: float | None
) -> bool | None:
    """True: the side photo is a side view; False: a front or back view; None: the landmarks do not tell.

    A side view shows the face in profile or the shoulders one behind the other (the head may be
    turned to the camera); a front or back view shows a frontal face and the shoulders side by side.
    The torso's own depth against the front width was the test before: a man with a belly measured
    at the belly was taken for a front view and lost his depths (4 of 27 men on renders).
    """
    ratio = None
    if all(n in side_lms for n in ("nose", "left_ear", "right_ear")):
        nose, le, re = side_lms["nose"], side_lms["left_ear"], side_lms["right_ear"]
        ears = max(abs(le.x_px - re.x_px), 1.0 * px_per_cm)
        ratio = abs(nose.x_px - (le.x_px + re.x_px) / 2) / ears
    spread = _shoulder_spread_cm(side_lms, px_per_cm)
    if ratio is not None and ratio >= PROFILE_FACE_RATIO:
        return True
    reference = front_spread_cm if front_spread_cm is not None else 30.0
    if spread is not None and spread <= 0.5 * reference:
        return True
    if (
        ratio is not None
        and ratio < FRONT_FACE_RATIO
        and spread is not None
        and spread > max(25.0, 0.8 * reference)
    ):
        return False
    return None


def _shoulder_spread_cm(lms: Mapping[str, Landmark], px_per_cm: float) -> float | None:
    if not all(n in lms and lms[n].visibility > 0.5 for n in ("left_shoulder", "right_shoulder")):
        return None
    return abs(lms["left_shoulder"].x_px - lms["right_shoulder"].x_px) / px_per_cm


# Phone photos (12-48 MP) are measured at this long side: a whole person is then ~1500 px tall,
# under 1.5 mm a pixel, and the outline, levelling and pose model run in seconds, not half a minute.
MAX_WORK_SIDE_PX = 2048


def _work_size(image_rgb: np.ndarray) -> np.ndarray:
    scale = MAX_WORK_SIDE_PX / max(image_rgb.shape[:2])
    if scale >= 1:
        return image_rgb
    return cv2.resize(image_rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def _camera_pitch_deg(
    front: ViewResult,
    shape: tuple[int, ...],
    height_cm: float,
    weight_kg: float,
    sex: str | None,
    model: BodyModel,
    focal_35mm: float | None = None,
) -> float:
    """The phone's pitch from where the front outline's acromions lie between head top and heels.

    The knees were tried as a second cue, to refuse levelling when the two disagree: the knee
    landmark and the heel landmarks (the floor) are each 2-5 cm off on renders, and the knee's
    share is the more sensitive to the floor, so they disagreed by 10-15 degrees at a level camera.
    """
    if len(front.shoulder_points) != 2:
        return 0.0
    est = model.predict(_known(height_cm, weight_kg), sex).estimates
    acromion = (front.shoulder_points["left"][1] + front.shoulder_points["right"][1]) / 2
    cues = [(acromion, est["shoulder_height"].value_cm / height_cm, PITCH_CUE_SD["acromion"])]
    pitch, _ = camera.estimate_pitch_deg(front.top_px, front.bottom_px, cues, shape, focal_35mm)
    return pitch


def _levelled(
    image_rgb: np.ndarray,
    view: ViewResult,
    pitch: float,
    pose_model: PoseModel | None,
    name: str,
    ankle_share: float = outline.ANKLE_SHARE_ANY,
    focal_35mm: float | None = None,
) -> tuple[np.ndarray, ViewResult]:
    """The photo levelled and segmented again; the original when that fails (with a note)."""
    level, hom = camera.level_photo(image_rgb, pitch, focal_35mm)
    # The matte of the levelled photo is the original's through the same homography (a second run
    # of the network would cost a second and see the same pixels).
    warped = (
        cv2.warpPerspective(view.matte, hom, (level.shape[1], level.shape[0]), flags=cv2.INTER_LINEAR)
        if view.matte is not None
        else None
    )
    try:
        again = segment(
            level, pose_model, name, name, check_framing=False, ankle_share=ankle_share, matte_map=warped
        )
    except PhotoError:
        again = None
    if again is None or again.method != view.method:
        # Levelled, the pose model lost the person: measure the photo as taken.
        view.issues.append(f"the phone was pitched {pitch:+.0f} degrees and the photo could not be levelled")
        return image_rgb, view
    again.issues = [*view.issues[: len(view.issues)]]
    again.quality = view.quality
    if abs(pitch) > 10:
        again.issues.append(
            f"the phone was pitched {pitch:.0f} degrees (levelled before measuring): hold it upright at waist height"
        )
        again.quality *= 0.9
    return level, again


def _side_view(
    side_rgb: np.ndarray | None, pose_model: PoseModel | None, focal_35mm: float | None = None
) -> tuple[ViewResult | None, PhotoQuality | None]:
    """The side photo's view; or, where neither the pose model nor the colour outline finds a
    person in it, none and why (quality 0).

    The side photo only adds depths: a side photo the pose model finds no one in (a slim profile
    before a busy facade, even in strips) and whose colour outline is not usable either is not a
    reason to refuse the front. Other refusals (cut off, too small, blurred, several people) stand:
    those name a fix for a photo that has a person in it. (A colour outline that passes its checks
    on a busy background can still be wrong: GrabCut took in ceiling lamps on one render, with
    kmeans seeding that differs from run to run.)
    """
    if side_rgb is None:
        return None, None
    try:
        side = segment(side_rgb, pose_model, "side", "side", focal_35mm=focal_35mm)
    except PhotoError as exc:
        if pose_model is None or not exc.reason.startswith(NO_PERSON):
            raise
        side = None
    if side is not None and side.from_above and focal_35mm is None:
        return None, PhotoQuality(0.0, [f"side photo not used: {FROM_ABOVE}: {FROM_ABOVE_FIX}"])
    if side is not None:
        # A colour outline that passed its checks is kept: on a plain background it is exact (the
        # flat renders), and the side outline check (any implausible depth drops all) still applies.
        return side, None
    return None, PhotoQuality(
        0.0,
        [
            "side photo not used: the pose model found no person in it (retake it side-on in front of "
            "a plainer background, whole body in view); depths unknown, girths rest on widths and the model"
        ],
    )


# A side "depth" more than this many times the front outline's run at its level is not the body
# seen from any side: a front view gives about 1, a side view at most its depth-to-breadth ratio,
# 0.54-1.18 in ANSUR II at chest, waist and hip over all 6,068 people (the largest: women's chests).
WIDER_THAN_FRONT = 1.3

# How far the side photo's own height scale may differ from the front's and still be taken as the
# same camera at the same spot: its heel landmarks lie 0-8 cm above the floor on renders (up to 5%).
SAME_CAMERA_SCALE_TOLERANCE = 0.06
# One camera at one spot sees the head top at the same row in both photos: within this share of the
# person's height (the head top's own jitter between a front and a side outline, 1-2 cm; on renders
# whose side scale agreed, |difference| was under 0.6% for most and up to 1.9%).
SAME_HEAD_ROW_TOLERANCE = 0.01


def share_front_scale(
    front: ViewResult,
    side: ViewResult,
    front_shape: tuple[int, ...],
    side_shape: tuple[int, ...],
    height_cm: float,
) -> bool:
    """Give the side photo the front photo's height scale when both come from one camera at one spot.

    The app asks for both photos from where the phone stands, the person turning 90 degrees, so
    the person is as far away in both and a cm spans as many pixels. The front's floor comes from
    the ankle landmarks (the malleoli are seen); in a side view one ankle is hidden and the heel
    landmarks lie above the floor (0-8 cm on renders), which made the side scale about 4% small
    and every depth 1 cm too large. So where the photos are the same size and the side's own
    scale agrees with the front's within the heel landmarks' error, the side keeps its head top
    and takes the front's pixels per cm; otherwise (another camera, another distance) its own.

    One exception: a side outline that stops short of the floor while its head top lies on the
    front's head row (within ``SAME_HEAD_ROW_TOLERANCE``). Against a busy background the learned
    mask can lose the legs (trousers as dark as the street behind), and MediaPipe's side landmarks
    then fit a whole, shorter person into what is left, heels at the mask's end: the side's own
    pixels per cm came out 11-45% small, every depth 12-80% too large (a 46 cm waist depth for a
    31 cm one), and the side photo was dropped (15 of the 52 men of 200 whose side depths the
    bench lost). A camera that moved would move the head top's row too, unless the phone is near
    head height and moved little; that case, which this rule would misread, is left to the depth
    checks.
    """
    if front_shape[:2] != side_shape[:2]:
        return False
    px_front = (front.bottom_px - front.top_px) / height_cm
    px_side = (side.bottom_px - side.top_px) / height_cm
    side.floor_by = "the front photo's scale (same camera)"
    if abs(px_side / px_front - 1) > SAME_CAMERA_SCALE_TOLERANCE:
        same_head_row = abs(side.top_px - front.top_px) <= SAME_HEAD_ROW_TOLERANCE * height_cm * px_front
        if not (px_side < px_front and same_head_row):
            return False
        side.floor_by = "the front photo's scale and head row (same camera; the side outline stops short)"
    side.bottom_px = side.top_px + height_cm * px_front
    return True


def _take_out_plate_runs(
    front_rgb: np.ndarray, front: ViewResult, side_rgb: np.ndarray, side: ViewResult
) -> None:
    """Each outline less the runs into the background that the other photo, from the same spot,
    shows as background (:mod:`atelier.body.plate`); both found before either is changed."""
    runs = [
        plate.background_run(front_rgb, front.mask, side_rgb, side.mask),
        plate.background_run(side_rgb, side.mask, front_rgb, front.mask),
    ]
    for view, run in zip((front, side), runs, strict=True):
        if run is not None and run.any():
            view.mask = view.mask & ~run


def _confidence(sd_cm: float) -> float:
    """1 when the sd is 0, 0.5 at the 2.5 cm garment-fit tolerance, towards 0 beyond."""
    return 1.0 / (1.0 + (sd_cm / 2.5) ** 2)


def _known(height_cm: float, weight_kg: float) -> dict[str, Observation]:
    known = {"height": Observation(height_cm, 1.0)}
    if weight_kg > 0:
        known["weight_kg"] = Observation(weight_kg, 1.0)
    return known


def measure(
    front_rgb: np.ndarray,
    side_rgb: np.ndarray | None,
    height_cm: float,
    weight_kg: float,
    sex: str | None,
    model: BodyModel,
    pose_model: PoseModel | None,
    overlay: bool = False,
    focal_35mm: float | None = None,
    side_focal_35mm: float | None = None,
    phone_pitch_deg: float | None = None,
) -> MeasureResult:
    """Measurements from a front photo (and a side photo) of a person of the stated height and weight.

    ``focal_35mm``: the camera's focal length as a 35 mm equivalent (the request's, or the front
    photo's EXIF, :func:`exif_focal_35mm`), for both photos unless ``side_focal_35mm``; None: a phone
    main camera's is assumed (camera.FOCAL_SHARE). It places the horizon for levelling a pitched
    photo and the camera's distance for the front widths' perspective: a 0.5x or 2x lens taken for
    the main one measured the waist and hip widths 1.2-1.7x worse (MAE) on renders (BENCHMARKS
    "issue 18r").

    ``side_focal_35mm``: the side photo's own, where it was taken through another lens (its EXIF
    says so); None: the front's. It levels the side photo, and the two photos' pixels per cm are not
    shared (the same spot through two lenses is two scales).

    ``phone_pitch_deg``: the phone's pitch when the photos were taken, as its motion sensor gives it
    (degrees below the horizon, positive: pointing down), used instead of the pitch found from the
    body (the acromions' share of the height, a few degrees off: BENCHMARKS "issue 18q").
    """
    if phone_pitch_deg is not None and not abs(phone_pitch_deg) <= MAX_PHONE_PITCH_DEG:
        raise PhotoError("phone_pitch_deg", PHONE_PITCH_FIX)
    for value in (focal_35mm, side_focal_35mm):
        if value is not None and not camera.plausible_focal_35mm(value):
            raise PhotoError("focal_length_35mm_equiv_mm", FOCAL_FIX)
    other_lens = side_rgb is not None and side_through_other_lens(
        front_rgb.shape, focal_35mm, side_focal_35mm
    )
    side_focal = side_focal_35mm if other_lens else focal_35mm  # the side photo's lens
    warnings: list[tuple[str, str]] = []
    front_rgb = _work_size(front_rgb)
    side_rgb = _work_size(side_rgb) if side_rgb is not None else None
    ankle_share = outline.ANKLE_SHARE.get(sex or "", outline.ANKLE_SHARE_ANY)
    front = segment(front_rgb, pose_model, "front", "front", ankle_share=ankle_share, focal_35mm=focal_35mm)
    if front.from_above and focal_35mm is None:
        raise PhotoError("front.data", f"{FROM_ABOVE}: {FROM_ABOVE_FIX}")
    side, side_dropped = _side_view(side_rgb, pose_model, side_focal)
    if side_dropped is not None:
        warnings.append(("", side_dropped.issues[0]))
    pitch = (
        phone_pitch_deg
        if phone_pitch_deg is not None
        else _camera_pitch_deg(front, front_rgb.shape, height_cm, weight_kg, sex, model, focal_35mm)
    )
    taken_shape = front_rgb.shape
    levelled = False
    if abs(pitch) >= camera.MIN_PITCH_DEG:
        # Measure on the photos a level camera would have taken (the same phone for both photos).
        taken = front_rgb
        front_rgb, front = _levelled(front_rgb, front, pitch, pose_model, "front", ankle_share, focal_35mm)
        levelled = front_rgb is not taken
        if side is not None and side_rgb is not None:
            side_rgb, side = _levelled(side_rgb, side, pitch, pose_model, "side", focal_35mm=side_focal)
    if side is not None and side_rgb is not None:
        _take_out_plate_runs(front_rgb, front, side_rgb, side)
    if pose_model is None:
        warnings.append(
            (
                "",
                "pose model not installed: no landmarks, so shoulder width and sleeve length "
                "are not measured from the photo (run python -m atelier.body.setup_models)",
            )
        )
    elif not front.landmarks:
        warnings.append(
            (
                "",
                "no pose landmarks found on the front photo: shoulder width and sleeve length "
                "are predicted, body levels come from proportions",
            )
        )
    photos = _Photos(
        front_rgb, front, side_rgb, side, side_dropped, pitch, taken_shape, levelled, focal_35mm, other_lens
    )
    args = (height_cm, weight_kg, sex, model, overlay)
    result, side_broken = _measure_photos(photos.fresh(), *args, list(warnings))
    # The trim changes only the torso's rows: feet lost below the outline stay lost.
    trimmed = _matte_trimmed_side(side, pose_model) if side_broken not in ("", FEET_BELOW) else None
    if trimmed is not None:
        # The side outline ran into the background: measured again on what the matte agrees with.
        again, still_broken = _measure_photos(
            dataclasses.replace(photos.fresh(), side=trimmed), *args, list(warnings)
        )
        if not still_broken and again.side_quality is not None:
            again.side_quality.score = round(again.side_quality.score * 0.8, 3)
            again.side_quality.issues.append(
                f"the side outline ran into the background ({side_broken}) and was measured where a second "
                "segmentation model agrees: a plainer background measures better"
            )
            return again
    return result


@dataclass
class _Photos:
    """The photos as measured (levelled where the phone was pitched) and their outlines."""

    front_rgb: np.ndarray
    front: ViewResult
    side_rgb: np.ndarray | None
    side: ViewResult | None
    side_dropped: PhotoQuality | None
    pitch: float
    taken_shape: tuple[int, ...]
    levelled: bool
    focal_35mm: float | None = None
    # The side photo was taken through another lens than the front one (their EXIF say so).
    side_other_lens: bool = False

    def fresh(self) -> _Photos:
        """A copy whose views' quality and issues a measurement may change (masks are not changed)."""
        return dataclasses.replace(
            self,
            front=dataclasses.replace(self.front, issues=list(self.front.issues)),
            side=dataclasses.replace(self.side, issues=list(self.side.issues)) if self.side else None,
        )


def _matte_trimmed_side(side: ViewResult | None, pose_model: PoseModel | None) -> ViewResult | None:
    """The side outline less the torso pieces the matte calls background (:func:`matte.trim`), or
    None where there is no matte, the outline was trimmed already, or the matte takes nothing away."""
    second = getattr(pose_model, "matte", None)
    if (
        second is None
        or side is None
        or side.image_rgb is None
        or side.matte is not None
        or not side.mask.any()
    ):
        return None
    soft = second.around(side.image_rgb, side.mask)
    mask = matte.trim(side.mask, soft, side.landmarks)
    if mask is side.mask or np.array_equal(mask, side.mask):
        return None
    return dataclasses.replace(side, mask=mask, issues=list(side.issues), matte=soft)


def _measure_photos(
    photos: _Photos,
    height_cm: float,
    weight_kg: float,
    sex: str | None,
    model: BodyModel,
    overlay: bool,
    warnings: list[tuple[str, str]],
) -> tuple[MeasureResult, str]:
    """The measurement from the photos' outlines, and what broke the side outline ('' if nothing)."""
    front_rgb, front, side_rgb, side = photos.front_rgb, photos.front, photos.side_rgb, photos.side
    side_dropped, pitch = photos.side_dropped, photos.pitch
    taken_shape, levelled, focal_35mm = photos.taken_shape, photos.levelled, photos.focal_35mm
    side_broken = ""
    base = _known(height_cm, weight_kg)
    px_front = (front.bottom_px - front.top_px) / height_cm
    shared_scale = False
    if side is not None and side_rgb is not None and not photos.side_other_lens:
        shared_scale = share_front_scale(front, side, front_rgb.shape, side_rgb.shape, height_cm)
    # Landmark heights refine where the chest/waist/hip levels are, but only without a side photo:
    # MediaPipe's shoulder and hip points are joint centres, not the acromion and trochanterion, so
    # they shift the levels (on renders they made the hip level error larger: women's MAE 1.3 cm
    # with them, 1.0 without). With a side photo the outline gives the hip and waist levels itself.
    level_obs = dict(base)
    lms = front.landmarks
    level_lms = lms if side is None else {}
    if len(front.shoulder_points) == 2:
        # The shoulder points on the outline are the acromions, whose height (ANSUR's acromial
        # height) places the chest level: predicted from height/weight alone it was 5 cm off on
        # some renders, where the torso widens towards the armpits.
        y = (front.shoulder_points["left"][1] + front.shoulder_points["right"][1]) / 2
        level_obs["shoulder_height"] = Observation((front.bottom_px - y) / px_front, SHOULDER_LEVEL_SD_CM)
    elif all(n in level_lms and level_lms[n].visibility > 0.5 for n in ("left_shoulder", "right_shoulder")):
        y = (lms["left_shoulder"].y_px + lms["right_shoulder"].y_px) / 2
        level_obs["shoulder_height"] = Observation((front.bottom_px - y) / px_front + 2.0, 3.0)
    if all(n in level_lms and level_lms[n].visibility > 0.5 for n in ("left_hip", "right_hip")):
        y = (lms["left_hip"].y_px + lms["right_hip"].y_px) / 2
        level_obs["trochanter_height"] = Observation((front.bottom_px - y) / px_front, 3.0)
    prior = model.predict(level_obs, sex)
    levels_cm = {k: prior.estimates[v].value_cm for k, v in LEVELS.items()}
    levels_cm["shoulder"] = prior.estimates["shoulder_height"].value_cm
    if side is not None:
        levels_cm["hip"] = seat_level_cm(
            side, height_cm, levels_cm["hip"], prior.estimates["hip_height"].stddev_cm
        )
        # The chest (bust) level is the upper torso's greatest depth, as the seat is the lower
        # torso's: searched within 2 sd only (further up, the shoulder blades can be deeper).
        levels_cm["chest"] = hip_level_cm(
            side, height_cm, levels_cm["chest"], prior.estimates["chest_height"].stddev_cm, search_sd=2.0
        )
    if side is not None:
        levels_cm["waist"] = anchored_waist_level_cm(
            model, level_obs, sex, levels_cm["hip"], levels_cm["chest"]
        )
    else:
        levels_cm["waist"] = waist_level_cm(
            front,
            height_cm,
            levels_cm["waist"],
            prior.estimates["waist_height"].stddev_cm,
            floor_cm=levels_cm["hip"],
            ceiling_cm=levels_cm["chest"],
        )

    level_sd = {k: prior.estimates[v].stddev_cm for k, v in LEVELS.items()}
    observed: dict[str, Observation] = {}
    lines: list[LevelLine] = []
    half_band = max(1, round(FRONT_BAND_CM * px_front))
    torso = front.mask if front.arms is None else front.mask & ~front.arms
    touching: list[str] = []
    lopsided_levels: list[str] = []
    # The torso's axis, about which a body square to the camera is symmetric (not a turned one).
    spread = _shoulder_spread_cm(lms, px_front)
    square = spread is not None and spread >= FRONT_MIN_SPREAD_CM
    axis_px = (
        torso_axis_px(
            torso, front, [front.bottom_px - levels_cm[k] * px_front for k in ("hip", "chest")], px_front
        )
        if square
        else None
    )
    # What height and weight alone predict: the width a lopsided run is mirrored towards, and the
    # reference the photo values are tested against below.
    reference = model.predict(base, sex)

    def front_width(level: str, row: float) -> tuple[float, float, float]:
        """The torso's width (px) and its edges at ``row``."""
        width_px, x0, x1 = band_width(
            torso,
            row,
            front.centre_x_px,
            round(4 * px_front) if level == "hip" else half_band,
            "max" if level == "hip" else "median",
            image_rgb=front.image_rgb,
        )
        if level != "chest" or math.isnan(width_px):
            return width_px, x0, x1
        edges = armpit_edges_px(torso, row, front.centre_x_px, px_front)
        if edges is None:
            return width_px, x0, x1
        # The arms join the torso at the chest row: its edges are those just below the armpits.
        x0, x1 = max(x0, edges[0]), min(x1, edges[1])
        return x1 - x0, x0, x1

    for level, h_level in levels_cm.items():
        if level == "shoulder":
            continue
        row = front.bottom_px - h_level * px_front
        width_px, x0, x1 = front_width(level, row)
        if math.isnan(width_px):
            warnings.append((f"{level}_girth", f"the front outline at {level} level was not found"))
            continue
        # The spread over the level's uncertainty of the width as it is taken (at the chest, the
        # torso's below the armpits, not the run that takes in the arms above them).
        profile = None
        if level != "hip":
            heights = level_heights(h_level, level_sd[level])
            profile = (
                np.array([front_width(level, front.bottom_px - h * px_front)[0] for h in heights]) / px_front
            )
        sd = outline_sd_cm(
            front, height_cm, h_level, level_sd[level], level_free=level == "hip", profile=profile
        )
        if level == "chest":
            # Just below the armpits, where the outline between arm and torso is least sure, whether
            # or not the edges were read lower down.
            sd = math.hypot(sd, ARMPIT_SD_CM)
        lopsided = _lopsided_edges_px(
            x0, x1, axis_px, px_front, reference.estimates[f"{level}_width"].value_cm * px_front
        )
        if lopsided is not None:
            # One edge ran into the background (or was cut into): the other side, mirrored.
            x0, x1 = lopsided
            width_px = x1 - x0
            sd = math.hypot(sd, LOPSIDED_SD_CM)
            lopsided_levels.append(level)
        if _arm_touches(front, row, x0, x1):
            # The run ends where an arm lies on the body: the edge is the arm capsule's, not the body's.
            sd = math.hypot(sd, ARM_TOUCH_SD_CM)
            touching.append(level)
        observed[f"{level}_width"] = Observation(width_px / px_front, sd)
        lines.append(LevelLine(f"{level}_width", row, x0, x1, width_px / px_front))
    inseam = crotch_height_cm(front, px_front, front.bottom_px - levels_cm["hip"] * px_front)
    if not math.isnan(inseam) and inseam < 0.6 * height_cm:
        # Where the legs part: a lower bound on the crotch (used as such with the final prediction).
        observed["inseam"] = Observation(inseam, PHOTO_SD_CM["inseam"])
        row = front.bottom_px - inseam * px_front
        lines.append(LevelLine("inseam", row, front.centre_x_px, front.centre_x_px, inseam))
    else:
        warnings.append(("inseam", "the legs do not part in the front photo (stand with feet apart)"))
    if lopsided_levels:
        front.quality *= 0.9
        front.issues.append(
            f"the outline at the {', '.join(lopsided_levels)} is much wider on one side of the body than on the "
            "other (it ran into the background, or an arm or object is in the way): that width was taken from "
            "the other side; a plainer background measures better"
        )
    if touching:
        front.quality *= 0.8
        front.issues.append(
            f"the arms touch the body at the {', '.join(touching)}: hold the arms a little away from the body"
        )
    if spread is not None and spread < FRONT_MIN_SPREAD_CM:
        front.quality *= 0.6
        front.issues.append("the front photo is not square to the camera: face the camera")
    points = front.shoulder_points
    if len(points) == 2:
        sw = math.dist(points["left"], points["right"]) / px_front
        observed["shoulder_width"] = Observation(sw, PHOTO_SD_CM["shoulder_width"])
        lines.append(
            LevelLine(
                "shoulder_width",
                (points["left"][1] + points["right"][1]) / 2,
                min(points["left"][0], points["right"][0]),
                max(points["left"][0], points["right"][0]),
                sw,
            )
        )
    lengths = []
    for s in ("left", "right"):
        chain = [lms.get(f"{s}_elbow"), lms.get(f"{s}_wrist")]
        if s in points and all(c is not None and c.visibility > 0.5 for c in chain):
            elbow, wrist = chain
            path = [
                points[s],
                (elbow.x_px, elbow.y_px),  # type: ignore[union-attr]
                outline.wrist_point_px(front.mask, elbow, wrist, px_front),  # type: ignore[arg-type]
            ]
            lengths.append(sum(math.dist(a, b) for a, b in itertools.pairwise(path)) / px_front)
    if lengths:
        # Both arms when both are seen: the mean halves each one's landmark noise.
        observed["sleeve_length"] = Observation(
            float(np.mean(lengths)), PHOTO_SD_CM["sleeve_length"] / math.sqrt(len(lengths))
        )
    side_lines: list[LevelLine] = []
    if side is not None:
        px_side = (side.bottom_px - side.top_px) / height_cm
        depths = {}
        run_shares = {}  # of the rows about each level, those with a run through the body's centre
        for level in LEVELS:
            row = side.bottom_px - levels_cm[level] * px_side
            depth_px, x0, x1 = band_width(
                side.mask,
                row,
                side.centre_x_px,
                max(1, round(SIDE_BAND_CM * px_side)),
                image_rgb=side.image_rgb,
            )
            if not math.isnan(depth_px):
                profile = _profile_cm(side, level_heights(levels_cm[level], level_sd[level]), height_cm)
                run_shares[level] = float(np.isfinite(profile).mean())
                sd = outline_sd_cm(side, height_cm, levels_cm[level], level_sd[level], profile=profile)
                depths[level] = Observation(depth_px / px_side, sd)
                side_lines.append(LevelLine(f"{level}_depth", row, x0, x1, depth_px / px_side))
        front_spread = _shoulder_spread_cm(lms, px_front)
        verdict = side_view_verdict(side.landmarks, px_side, front_spread)
        if verdict is None:
            # The landmarks do not tell: a side "depth" as large as the front width is a front or back view.
            verdict = not (
                "hip_width" in observed
                and "hip" in depths
                and depths["hip"].value > 0.92 * observed["hip_width"].value
            )
        # Depths far wider than the front outline are neither a side view nor a front view:
        # the side outline took in the background (on renders before stone facades and a night
        # city, "depths" of 48-107 cm for 17-29 cm ones, and the landmarks fitted to that outline
        # looked frontal). Its retake is a plainer background, which the outline check says;
        # "turn 90 degrees" would send a customer who stood side-on to turn away from the camera.
        # The front outline's whole run at each level, arms included where they touch (as they
        # would in a front view sent as the side photo), not the carved torso width.
        front_run_cm = {}
        for level in depths:
            run_px, _, _ = band_width(
                front.mask, front.bottom_px - levels_cm[level] * px_front, front.centre_x_px, half_band
            )
            if not math.isnan(run_px):
                front_run_cm[level] = run_px / px_front
        far_wider = [
            level
            for level in LEVELS
            if level in front_run_cm and depths[level].value > WIDER_THAN_FRONT * front_run_cm[level]
        ]
        wrong_view = not verdict and not far_wider
        if wrong_view:
            side.quality *= 0.3
            side.issues.append("the side photo shows the front or back: turn 90 degrees for the side photo")
            warnings.append(
                (
                    "",
                    "the side photo looks like a front or back view (the body is as wide as "
                    "in the front photo): depths not used, girths rest on widths and the model",
                )
            )
            side_lines = []
        else:
            # The front widths that pass their own test (the same test as below) inform the depths.
            widths = {
                name: obs
                for name, obs in observed.items()
                if name.endswith("_width")
                and name[: -len("_width")] in LEVELS
                and abs(obs.value - reference.estimates[name].value_cm)
                <= MAX_Z * math.hypot(reference.estimates[name].stddev_cm, obs.stddev)
            }
            given_widths = model.predict({**base, **widths}, sex) if widths else None
            broken = side_outline_problem(side, depths, reference, given_widths, run_shares)
            if far_wider and not broken:
                broken = f"a {far_wider[0]} depth wider than the front photo's outline"
            side_broken = broken
            if broken:
                side.quality *= 0.3
                side.issues.append(
                    f"the side outline is not the whole person ({broken}): retake the side photo in "
                    "front of a plainer background, feet on the floor in view"
                )
                warnings.append(("", f"side photo not used ({broken}): girths rest on widths and the model"))
                side_lines = []
            else:
                for level, depth in depths.items():
                    observed[f"{level}_depth"] = depth
                _correct_front_perspective(
                    observed,
                    lines,
                    forward_offsets_cm(
                        side,
                        {ln.name.removesuffix("_depth"): (ln.x0_px, ln.x1_px) for ln in side_lines},
                        height_cm,
                        scale_plane_share(
                            front, camera.horizon_row(taken_shape, pitch, levelled, focal_35mm)
                        ),
                    ),
                    camera.focal_px(taken_shape, focal_35mm) / px_front,
                )
    elif side_dropped is None:
        warnings.append(
            (
                "",
                "no side photo: body depths unknown, so chest, waist and hip girths rest on front "
                "widths and the model (less accurate)",
            )
        )
    # Reject photo values the model finds implausible for this height and weight.
    z_of = {
        name: (observed[name].value - reference.estimates[name].value_cm)
        / math.hypot(reference.estimates[name].stddev_cm, observed[name].stddev)
        for name in observed
    }
    rejected = [name for name, z in z_of.items() if abs(z) > MAX_Z]
    # A torso width far too large is the outline of a loose garment (or of the background) at that
    # level; the same front outline's other torso widths that are also well above the prediction
    # are then most likely the same garment, and go with it.
    too_wide = [n for n in rejected if n in TORSO_WIDTHS and z_of[n] > 0]
    companions = [n for n in TORSO_WIDTHS if n in z_of and n not in rejected and z_of[n] > GARMENT_Z]
    for name in rejected + (companions if too_wide else []):
        est = reference.estimates[name]
        why = (
            "is expected for this height/weight"
            if name in rejected
            else "is expected for this height/weight, and at the "
            + " and ".join(n.removesuffix("_width") for n in too_wide)
            + " the outline is far wider still (a loose garment's outline)"
        )
        warnings.append(
            (
                name,
                f"measured {observed[name].value:.1f} cm but {est.value_cm:.1f} +- {est.stddev_cm:.1f} {why}: "
                "not used (retake in close-fitting clothes, arms a little away from the body)",
            )
        )
        del observed[name]
        lines = [ln for ln in lines if ln.name != name]
        side_lines = [ln for ln in side_lines if ln.name != name]
    if not observed:
        warnings.append(
            (
                "",
                "no value could be taken from the photos: every measurement below is predicted "
                "from height and weight only (see the other warnings for what to retake)",
            )
        )
    # Every length read off one photo shares its pixels-per-cm, and so its scale error (the floor
    # row under the body is the least certain end of the height scale).
    depth_names = [f"{k}_depth" for k in LEVELS]
    front_names = [n for n in observed if n not in depth_names]
    scale_groups = (
        [(front_names + depth_names, SCALE_SD)]
        if shared_scale
        else [(front_names, SCALE_SD), (depth_names, SCALE_SD)]
    )
    # The legs part in a photo below the crotch wherever the thighs touch (most people, and trousers
    # hang lower still): on renders the gap's top was 3.6 cm (men) and 3.2 cm (women) below the crotch
    # on average, and taken as the crotch it made the inseam worse than height and weight alone
    # (MAE 4.0 vs 1.8 cm) and pulled the girths with it. So it only bounds the crotch from below: it
    # counts where it lies above what everything else predicts, and is left out otherwise.
    leg_gap = observed.pop("inseam", None)

    def conditioned() -> Prediction:
        return model.predict({**base, **observed}, sex, names=GARMENT_MEASUREMENTS, scale_groups=scale_groups)

    final = conditioned()
    if leg_gap is not None and leg_gap.value > final.estimates["inseam"].value_cm:
        observed["inseam"] = leg_gap
        final = conditioned()
    photo_inputs = {
        "chest_girth": ("chest_width", "chest_depth"),
        "waist_girth": ("waist_width", "waist_depth"),
        "hip_girth": ("hip_width", "hip_depth"),
        "inseam": ("inseam",),
        "shoulder_width": ("shoulder_width",),
        "sleeve_length": ("sleeve_length",),
    }
    measurements = []
    for name, est in final.estimates.items():
        used = [p for p in photo_inputs.get(name, ()) if p in observed]
        if used and len(used) == len(photo_inputs[name]):
            method = "photo+model"
        elif used:
            method = "photo(partial)+model"
        else:
            method = "model(height,weight" + (",photo" if observed else "") + ")"
            if name == "inseam" and leg_gap is not None:
                warnings.append(
                    (
                        name,
                        f"the legs part {leg_gap.value:.1f} cm above the floor, below the crotch (the thighs "
                        "touch higher up): predicted from the other values, that height its lower bound",
                    )
                )
            elif name in photo_inputs:
                missing = [p for p in photo_inputs[name] if p not in observed]
                warnings.append(
                    (name, f"not measured on the photo ({', '.join(missing)} missing): predicted")
                )
        measurements.append(
            PhotoMeasurement(name, est.value_cm, est.stddev_cm, method, _confidence(est.stddev_cm))
        )
    result = MeasureResult(
        measurements,
        warnings,
        front.landmarks,
        side.landmarks if side else {},
        {k: v.value for k, v in observed.items()},
        front.method,
        final.sex_probability.get("male", 0.0),
        front_lines=lines,
        front_quality=PhotoQuality(round(front.quality, 3), front.issues),
        side_quality=PhotoQuality(round(side.quality, 3), side.issues) if side is not None else side_dropped,
        photo_values_used=len(observed),
        camera_pitch_deg=round(pitch, 1),
        shoulder_points=dict(front.shoulder_points),
    )
    if overlay:
        result.front_overlay_png = draw_overlay(front_rgb, front, lines, {m.name: m for m in measurements})
        if side is not None and side_rgb is not None:
            result.side_overlay_png = draw_overlay(side_rgb, side, side_lines, {})
    return result, side_broken


SKELETON = (
    ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"),
    ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"),
    ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"),
    ("left_hip", "right_hip"),
    ("left_hip", "left_knee"),
    ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"),
    ("right_knee", "right_ankle"),
)


def draw_overlay(
    image_rgb: np.ndarray, view: ViewResult, lines: list[LevelLine], girths: Mapping[str, PhotoMeasurement]
) -> bytes:
    """The photo with the outline, landmarks and the measured lines labelled, as PNG bytes."""
    out = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR).copy()
    thick = max(1, out.shape[0] // 400)
    contours, _ = cv2.findContours(view.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (0, 200, 255), thick)
    # The height scale: head top to heel contact.
    top, bottom = round(view.top_px), round(view.bottom_px)
    cv2.line(out, (8, top), (8, bottom), (0, 0, 255), thick + 1)
    for y in (top, bottom):
        cv2.line(out, (0, y), (out.shape[1] - 1, y), (0, 0, 255), 1)
    for sx, sy in view.shoulder_points.values():
        cv2.drawMarker(out, (round(sx), round(sy)), (255, 0, 0), cv2.MARKER_CROSS, thick * 12, thick + 1)
    for a, b in SKELETON:
        la, lb = view.landmarks.get(a), view.landmarks.get(b)
        if la is not None and lb is not None and min(la.visibility, lb.visibility) > 0.5:
            cv2.line(out, (int(la.x_px), int(la.y_px)), (int(lb.x_px), int(lb.y_px)), (255, 255, 0), thick)
    for lm in view.landmarks.values():
        if lm.visibility > 0.5:
            cv2.circle(out, (int(lm.x_px), int(lm.y_px)), thick * 3, (0, 255, 0), -1)
    scale = max(0.4, out.shape[0] / 1600)
    for ln in lines:
        y = round(ln.row_px)
        if ln.x0_px == ln.x1_px:  # a vertical measurement (inseam): floor to the crotch
            cv2.line(out, (int(ln.x0_px), y), (int(ln.x0_px), bottom), (255, 0, 255), thick)
        else:
            cv2.line(out, (int(ln.x0_px), y), (int(ln.x1_px), y), (255, 0, 255), thick + 1)
        label = f"{ln.name} {ln.value_cm:.1f}"
        girth = girths.get(ln.name.replace("_width", "_girth"))
        if girth is not None and ln.name.endswith("_width"):
            label += f" -> girth {girth.value_cm:.1f} cm"
        (text_w, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, thick))
        x = int(ln.x1_px) + 6
        if x + text_w > out.shape[1]:  # no room right of the line: left of it, else as far right as fits
            x = int(ln.x0_px) - 6 - text_w if ln.x0_px - 6 - text_w >= 0 else max(0, out.shape[1] - text_w)
        cv2.putText(
            out, label, (x, y + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 200), max(1, thick), cv2.LINE_AA
        )
    ok, png = cv2.imencode(".png", out)
    return png.tobytes() if ok else b""
