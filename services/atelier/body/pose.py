"""MediaPipe PoseLandmarker (33 landmarks + person mask), loaded from a local ``.task`` bundle.

The bundle is assembled at setup time by ``python -m atelier.body.setup_models`` (``make`` runs it
when it builds the venv) from the Apache-2.0 model files inside the ``mediapipe==0.10.21`` wheel;
nothing is fetched at run time. It lives with the environment it was built for:
``<sys.prefix>/share/atelier/models/body/pose_landmarker.task`` (``.venv/share/...`` in a checkout),
so every data dir, test and benchmark of that environment finds it. When the bundle is absent the
service still runs and segments with OpenCV GrabCut instead.
"""

from __future__ import annotations

import itertools
import logging
import math
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from atelier.body import camera

if TYPE_CHECKING:
    from atelier.body.matte import Matte

log = logging.getLogger(__name__)

BUNDLE_NAME = "pose_landmarker.task"


def default_bundle_path() -> Path:
    """Where setup installs the bundle and where the service looks unless ATELIER_BODY_POSE_MODEL says."""
    return Path(sys.prefix) / "share" / "atelier" / "models" / "body" / BUNDLE_NAME


# MediaPipe's 33 pose landmark names, in order.
LANDMARK_NAMES = (
    "nose",
    "left_eye_inner",
    "left_eye",
    "left_eye_outer",
    "right_eye_inner",
    "right_eye",
    "right_eye_outer",
    "left_ear",
    "right_ear",
    "mouth_left",
    "mouth_right",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_pinky",
    "right_pinky",
    "left_index",
    "right_index",
    "left_thumb",
    "right_thumb",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "left_heel",
    "right_heel",
    "left_foot_index",
    "right_foot_index",
)


# A mirrored photo shows the person's left side as their right.
_MIRROR = {
    n: n.replace("left", "right") if "left" in n else n.replace("right", "left")
    for n in LANDMARK_NAMES
    if "left" in n or "right" in n
}


@dataclass(frozen=True)
class Landmark:
    name: str
    x_px: float
    y_px: float
    visibility: float


@dataclass
class Pose:
    landmarks: dict[str, Landmark]
    mask: np.ndarray  # bool, image size
    # The model's person probability per pixel (float32 0..1, image size): the learned segmentation.
    soft: np.ndarray | None = None
    # Found standing only as a level camera would see it (:func:`standing_pitched`): the photo was
    # taken steeply from above.
    from_above: bool = False


# Strips tried when the whole photo gives no pose: widths (share of the photo's width), then
# centres (share), in order; the first strip with a whole, plausible person wins.
STRIP_SHARES = (0.6, 0.45, 0.75)
STRIP_CENTRES = (0.5, 0.3, 0.7)
MIN_STRIP_VISIBILITY = 0.5
KEY_LANDMARKS = (
    "nose",
    "left_shoulder",
    "right_shoulder",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
)


def _spans_body(
    landmarks: dict[str, Landmark],
    mask: np.ndarray,
    image_h: int,
    nose_share: float = 0.2,
    ankle_share: float = 0.1,
) -> bool:
    """Whether a strip's find is a whole person the skeleton agrees with: at least 30% of the photo
    tall, the nose in the top fifth of the mask and the ankles in its bottom tenth (in a standing
    person the malleoli are 4% of the stature above the soles). Strips of a facade gave "people"
    with the feet on a window sill and the knees as ankles."""
    ys = np.nonzero(mask)[0]
    if ys.size == 0 or not all(n in landmarks for n in ("nose", "left_ankle", "right_ankle")):
        return False
    top, bottom = float(ys.min()), float(ys.max())
    tall = bottom - top
    if tall < 0.3 * image_h:
        return False
    ankle = (landmarks["left_ankle"].y_px + landmarks["right_ankle"].y_px) / 2
    return landmarks["nose"].y_px - top < nose_share * tall and 0 <= bottom - ankle < ankle_share * tall


# Hip-to-ankle over shoulder-to-hip height, standing: ANSUR II (trochanterion minus lateral
# malleolus over acromial minus trochanterion height) 1.18 at the least of 6,068 people (men's 1st
# percentile 1.29, women's 1.36); 1.24-1.78 on the shared real photos. Below this the skeleton is
# not a standing person: on busy facades the detector found "people" with legs half the torso's
# length (0.57) or upside down, and took them for the person to measure.
MIN_LEG_TO_TORSO = 0.9
# The torso's axis (mid-shoulders to mid-hips) at most this far from the photo's vertical. On the
# shared real photos standing people lean 0.6-22.7 degrees (the most: skiers in motion). Cropped
# through the knees before a roof with a dormer, a render gave a "whole" skeleton of the person's
# face and one arm, with the legs drawn up into the dormer window: torso at 56 degrees, legs at 31.
MAX_TORSO_LEAN_DEG = 35.0


def standing(pose: Pose) -> bool:
    """Whether the skeleton is a person standing upright: from top to bottom of the photo the nose,
    shoulders, hips, knees and ankles in that order, the torso within ``MAX_TORSO_LEAN_DEG`` of
    upright, and the legs (hip to ankle) at least ``MIN_LEG_TO_TORSO`` of the torso (shoulder to
    hip). Landmarks the model infers outside the photo count (a photo cut off at the knees still
    has its ankles below them)."""
    return _stands(pose.landmarks)


def _stands(lm: dict[str, Landmark]) -> bool:
    names = ("shoulder", "hip", "knee", "ankle")
    if "nose" not in lm or not all(f"{side}_{n}" in lm for side in ("left", "right") for n in names):
        return False
    ys = [lm["nose"].y_px] + [(lm[f"left_{n}"].y_px + lm[f"right_{n}"].y_px) / 2 for n in names]
    if any(b <= a for a, b in itertools.pairwise(ys)):
        return False
    shoulder_x, hip_x = ((lm[f"left_{n}"].x_px + lm[f"right_{n}"].x_px) / 2 for n in names[:2])
    if abs(math.degrees(math.atan2(hip_x - shoulder_x, ys[2] - ys[1]))) > MAX_TORSO_LEAN_DEG:
        return False
    return ys[4] - ys[2] >= MIN_LEG_TO_TORSO * (ys[2] - ys[1])


# A phone pointed steeply down from close by (an ultra-wide lens at arm's length) sees the legs
# foreshortened: 0.5x renders from 0.8-0.95 m, pitched 28-47 degrees down, had legs 0.61-0.80 of
# the torso on the photo (1.25-1.69 levelled at their true pitch) and were refused as "no person"
# (11 of 100 women, BENCHMARKS "issue 18t"). Where no find stands upright on the photo, one that
# stands as a level camera would see it, at some pitch down to this, is taken; a pitch the body's
# proportions then find and level away (photo.measure). The bound is the pitch search's where the
# lens is known, which is also the phone pitch a request may state (photo.MAX_PHONE_PITCH_DEG).
MAX_PITCH_TRIED_DEG = camera.MAX_PITCH_DEG
PITCH_STEP_DEG = 2.5
# Seen from above, the head is near the phone and large, and the feet reach forward below the
# ankles: on those 11 photos the nose lay 0.15-0.20 of the mask's height below its top and the
# ankles 0.07-0.11 above its bottom (:func:`_spans_body` asks under 0.2 and 0.1 of a strip's find).
# A skeleton with its knees taken for ankles (a facade's "person") has a shin's length, about a
# quarter of the stature, of mask below them.
PITCHED_NOSE_SHARE = 0.25
PITCHED_ANKLE_SHARE = 0.15


def standing_pitched(pose: Pose, shape: tuple[int, ...], focal_35mm: float | None = None) -> bool:
    """Whether the skeleton stands (:func:`standing`) as a level camera at the same place would
    have seen it, the phone pitched down ``PITCH_STEP_DEG`` to ``MAX_PITCH_TRIED_DEG`` (through its
    lens ``focal_35mm``, or a phone main camera's), and is a plausible whole person: its face,
    shoulders, hips and knees seen and its mask spanning the skeleton from the nose to the ankles
    (the checks that strips' finds pass)."""
    inside = pose.soft > 0.5 if pose.soft is not None else pose.mask
    if plausibility(pose) < MIN_STRIP_VISIBILITY or not _spans_body(
        pose.landmarks, inside, shape[0], PITCHED_NOSE_SHARE, PITCHED_ANKLE_SHARE
    ):
        return False
    names = list(pose.landmarks)
    xy = np.array([(pose.landmarks[n].x_px, pose.landmarks[n].y_px) for n in names])
    f = camera.focal_px(shape, focal_35mm)
    centre = (shape[1] / 2, shape[0] / 2)
    for pitch in np.arange(PITCH_STEP_DEG, MAX_PITCH_TRIED_DEG + 1e-9, PITCH_STEP_DEG):
        level = camera.level_points(xy, float(pitch), f, centre)
        if _stands({n: Landmark(n, x, y, 1.0) for n, (x, y) in zip(names, level, strict=True)}):
            return True
    return False


def _mask_rows(pose: Pose) -> tuple[int, int]:
    """First and last row of a find's mask ((0, -1) when empty)."""
    mask = pose.soft > 0.5 if pose.soft is not None else pose.mask
    rows = np.nonzero(mask.any(axis=1))[0]
    return (int(rows[0]), int(rows[-1])) if rows.size else (0, -1)


def _whole(pose: Pose) -> bool:
    """Whether a find lies inside the photo from head to feet: its mask off the top and bottom rows
    and its nose and ankles inside the photo (the model infers landmarks beyond the edge)."""
    h = pose.mask.shape[0]
    top, bottom = _mask_rows(pose)
    if bottom < top or top <= 1 or bottom >= h - 2:
        return False
    ends = [pose.landmarks[n].y_px for n in ("nose", "left_ankle", "right_ankle") if n in pose.landmarks]
    return len(ends) == 3 and all(0 <= y < h for y in ends)


# Framed tightly at the feet, the model can lose the shoes: a render framed 7 px below black shoes
# gave a mask ending at the ankles, with the ankle landmarks up the shins (the floor 13 cm high, the
# height scale 8% small), while the same render framed loosely kept them. When the mask ends within
# FEET_NEAR_SHARE of the photo's height above its bottom edge, the photo is detected again with its
# bottom rows repeated below it (FEET_PAD_SHARE of the height): with room below the feet the model
# sees them. That find is taken only where the first mask stops short of its toes (the foot index
# landmarks, by more than FEET_JITTER_SHARE of the person's height): the repeated rows draw
# vertical streaks, and a chair's legs in a terrace photo became "feet" running to the edge when
# every mask near the bottom was found again (one render refused as cut off).
FEET_NEAR_SHARE = 0.1
FEET_PAD_SHARE = 0.1
FEET_JITTER_SHARE = 0.01


def _largest(poses: list[Pose]) -> Pose:
    return max(poses, key=lambda p: int((p.soft > 0.5).sum() if p.soft is not None else p.mask.sum()))


def _near_bottom(pose: Pose) -> bool:
    h = pose.mask.shape[0]
    top, bottom = _mask_rows(pose)
    return bottom > top and bottom > (1 - FEET_NEAR_SHARE) * h


def _feet_lost(first: Pose, again: Pose) -> bool:
    """Whether the first find's mask stops short of the toes the second find sees."""
    toes = [again.landmarks.get(f"{side}_foot_index") for side in ("left", "right")]
    if any(t is None for t in toes):
        return False
    top, bottom = _mask_rows(first)
    toe = float(np.mean([t.y_px for t in toes]))  # type: ignore[union-attr]
    return bottom < toe - max(3.0, FEET_JITTER_SHARE * (bottom - top))


def plausibility(pose: Pose) -> float:
    """Mean visibility of the face, shoulders, hips and knees: near 1 for a person facing the camera
    or in profile, low for a "person" the detector saw in a building or a pattern."""
    return float(
        np.mean([pose.landmarks[n].visibility if n in pose.landmarks else 0.0 for n in KEY_LANDMARKS])
    )


class PoseModel:
    """Thread-safe wrapper: MediaPipe's landmarker is not re-entrant, so calls are serialised."""

    def __init__(self, bundle_path: Path) -> None:
        from mediapipe.tasks.python.core.base_options import BaseOptions
        from mediapipe.tasks.python.vision import PoseLandmarker, PoseLandmarkerOptions, RunningMode

        options = PoseLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(bundle_path)),
            running_mode=RunningMode.IMAGE,
            output_segmentation_masks=True,
            num_poses=4,
            min_pose_detection_confidence=0.5,
        )
        self._landmarker = PoseLandmarker.create_from_options(options)
        self._lock = threading.Lock()
        self.path = bundle_path
        # A second opinion on the torso's outline (atelier.body.matte); set by load_pose_model.
        self.matte: Matte | None = None

    def detect(self, image_rgb: np.ndarray, focal_35mm: float | None = None) -> list[Pose]:
        """The people found standing in the photo (:func:`standing`); [] when none.

        A skeleton that is not a standing person (upside down, legs half the torso) is a find in
        the background's clutter, never the person to measure: dropped, and when nothing is left
        the mirrored photo and then strips of it are tried (a slim side view before a facade).
        Strips are tried too when every find is cut off by the photo's edge (:func:`_whole`): a
        whole person found there is the one to measure (in a 340 px side render the whole photo
        gave only a "person" in the floor's reflections, hips below the photo, and the photo was
        refused as cut off); when strips find no whole person the cut-off finds stand, and the
        framing check refuses the photo as before. A mask that ends just above the photo's bottom
        edge short of the toes is found again with room below the feet (see FEET_NEAR_SHARE).
        Where nothing stands upright on the photo, a find that would as a level camera saw it is
        taken (:func:`standing_pitched`; ``focal_35mm``: the photo's lens where known).
        """
        poses = self._detect_whole(image_rgb)
        if not poses:
            shape = image_rgb.shape
            poses = self._detect_either_way(image_rgb, lambda p: standing_pitched(p, shape, focal_35mm))
            for p in poses:
                p.from_above = True
        if poses and _near_bottom(_largest(poses)):
            again = self._detect_with_room_below(image_rgb)
            if again and _feet_lost(_largest(poses), _largest(again)):
                return again
        return poses

    def _detect_whole(self, image_rgb: np.ndarray) -> list[Pose]:
        poses = self._detect_either_way(image_rgb)
        if not any(_whole(p) for p in poses):
            whole = self._detect_in_strips(image_rgb)
            if whole or not poses:
                return whole
        return poses

    def _detect_with_room_below(self, image_rgb: np.ndarray) -> list[Pose]:
        """The poses found with the photo's bottom row repeated below it (FEET_PAD_SHARE of the
        height), in the photo's coordinates (masks cut back to the photo)."""
        h = image_rgb.shape[0]
        pad = max(1, round(FEET_PAD_SHARE * h))
        padded = np.pad(image_rgb, ((0, pad), (0, 0), (0, 0)), mode="edge")
        return [
            Pose(p.landmarks, np.ascontiguousarray(p.mask[:h]), p.soft[:h] if p.soft is not None else None)
            for p in self._detect_whole(padded)
        ]

    def _detect_either_way(
        self, image_rgb: np.ndarray, keep: Callable[[Pose], bool] = standing
    ) -> list[Pose]:
        poses = [p for p in self._detect(image_rgb) if keep(p)]
        if not poses:
            # The person detector keys on the face; a profile it misses is often found mirrored.
            # (Both checks read the same on a mirrored find.)
            poses = [p for p in self._detect(np.ascontiguousarray(image_rgb[:, ::-1])) if keep(p)]
            w = image_rgb.shape[1]
            for p in poses:
                p.landmarks = {
                    _MIRROR.get(n, n): Landmark(_MIRROR.get(n, n), w - 1 - lm.x_px, lm.y_px, lm.visibility)
                    for n, lm in p.landmarks.items()
                }
                p.mask = np.ascontiguousarray(p.mask[:, ::-1])
                if p.soft is not None:
                    p.soft = np.ascontiguousarray(p.soft[:, ::-1])
        return poses

    def _detect_in_strips(self, image_rgb: np.ndarray) -> list[Pose]:
        """Poses found in full-height strips of the photo, in photo coordinates; [] when none.

        The detector sees the whole photo at 224 px: a slim side view in front of a busy facade
        (windows, stone joints) is then missed in both orientations (20 of 200 men's and 12 of
        200 women's render pairs were refused so). In a narrower strip the person is larger and
        the clutter less. A strip's find counts only when the person lies inside it (the mask off
        the strip's cut edges), the face, shoulders, hips and knees are seen, and the mask spans
        the skeleton from the nose to the ankles (:func:`_spans_body`).
        """
        h, w = image_rgb.shape[:2]
        for share in STRIP_SHARES:
            cw = round(share * w)
            for centre in STRIP_CENTRES:
                x0 = int(np.clip(round(centre * w - cw / 2), 0, w - cw))
                strip = np.ascontiguousarray(image_rgb[:, x0 : x0 + cw])
                found = []
                for p in self._detect_either_way(strip):
                    soft = p.soft if p.soft is not None else p.mask.astype(np.float32)
                    inside = soft > 0.5
                    cut = (x0 > 0 and inside[:, :2].any()) or (x0 + cw < w and inside[:, -2:].any())
                    if (
                        cut
                        or plausibility(p) < MIN_STRIP_VISIBILITY
                        or not _spans_body(p.landmarks, inside, h)
                    ):
                        continue
                    full = np.zeros((h, w), np.float32)
                    full[:, x0 : x0 + cw] = soft
                    landmarks = {
                        n: Landmark(n, lm.x_px + x0, lm.y_px, lm.visibility) for n, lm in p.landmarks.items()
                    }
                    found.append(Pose(landmarks, full > 0.5, full))
                if found:
                    return found
        return []

    def _detect(self, image_rgb: np.ndarray) -> list[Pose]:
        import mediapipe as mp

        h, w = image_rgb.shape[:2]
        with self._lock:
            result = self._landmarker.detect(
                mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image_rgb))
            )
        poses = []
        masks = result.segmentation_masks or []
        for i, marks in enumerate(result.pose_landmarks):
            named = {
                name: Landmark(name, lm.x * w, lm.y * h, float(lm.visibility or 0.0))
                for name, lm in zip(LANDMARK_NAMES, marks, strict=False)
            }
            if i < len(masks):
                soft = np.array(masks[i].numpy_view()[..., 0], np.float32)
            else:
                soft = np.zeros((h, w), np.float32)
            poses.append(Pose(named, soft > 0.5, soft))
        return poses

    def close(self) -> None:
        self._landmarker.close()


def load_pose_model(bundle_path: Path, matte_path: Path | str | None = None) -> PoseModel | None:
    """The pose model, with the matte model (``matte_path``; None: ``u2net.onnx`` in the bundle's
    folder; "": none) where it is installed."""
    if not bundle_path.exists():
        log.warning(
            "pose model %s not found: photos are segmented with GrabCut and no landmarks are "
            "detected (run `python -m atelier.body.setup_models` to install it)",
            bundle_path,
        )
        return None
    from atelier.body.matte import MODEL_NAME, load_matte

    model = PoseModel(bundle_path)
    if matte_path is None:
        matte_path = bundle_path.parent / MODEL_NAME
    if matte_path != "":
        model.matte = load_matte(Path(matte_path))
    return model
