"""Synthetic front and side silhouettes of a body of known measurements (for tests and benchmarks).

No CC0 photos of whole people are available offline here, so the photo pipeline is checked on
renders: a person of ANSUR measurements drawn as a flat figure (head, neck, torso whose width
and depth follow the measured breadths/depths at their measured heights, legs split at the
crotch, arms hanging in an A-pose) on a plain background, at a known scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

BACKGROUND = (236, 236, 232)
SKIN = (176, 128, 104)
CLOTHES = (70, 80, 120)


@dataclass(frozen=True)
class Render:
    image_rgb: np.ndarray
    px_per_cm: float
    feet_row: int


def _profile(levels: list[tuple[float, float]], heights_cm: np.ndarray) -> np.ndarray:
    hs, ws = zip(*sorted(levels), strict=True)
    return np.interp(heights_cm, hs, ws)


def render(
    body: Mapping[str, float],
    view: str = "front",
    image_h_px: int = 1000,
    image_w_px: int = 640,
    person_fraction: float = 0.86,
    arm_angle_deg: float = 22.0,
    seed: int = 0,
    offset_x_px: int = 0,
) -> Render:
    """``body``: measurement name -> cm (names of atelier.body.statmodel.MEASUREMENTS)."""
    b = body
    stature = b["height"]
    px = person_fraction * image_h_px / stature
    feet = round(image_h_px * (1 - (1 - person_fraction) / 2))
    cx = image_w_px / 2 + offset_x_px
    img = np.zeros((image_h_px, image_w_px, 3), np.uint8)
    img[:] = BACKGROUND

    def row(h_cm: Any) -> Any:  # heights (cm, scalar or array) -> image rows (px)
        return feet - h_cm * px

    front = view == "front"
    key = "width" if front else "depth"
    chest, waist, hip = b[f"chest_{key}"], b[f"waist_{key}"], b[f"hip_{key}"]
    shoulder = b["shoulder_width"] if front else chest * 0.82
    neck = b["neck_girth"] / np.pi * (1.0 if front else 1.05)
    crotch = b["inseam"]
    # A leg at the crotch is at most about half the hip (front) or the hip depth (side).
    thigh = min(b["thigh_girth"] / np.pi * 1.05, 0.47 * hip if front else 0.85 * hip)
    # Torso from crotch to shoulder: one polygon, half-widths interpolated between the levels.
    torso_levels = [
        (crotch, hip * 0.92),
        (b["hip_height"], hip),
        (b["waist_height"], waist),
        (b["chest_height"], chest),
        (b["chest_height"] + 0.45 * (b["shoulder_height"] - b["chest_height"]), chest * 1.02),
        (b["shoulder_height"] - 3, shoulder * 0.96),
        (b["shoulder_height"], shoulder * 0.9),
    ]
    hs = np.linspace(crotch, b["shoulder_height"], 200)
    # cv2.fillPoly fills both end pixels of a span (x0..x1 covers x1 - x0 + 1 pixels): half a pixel
    # in on each side, so the drawn torso is as wide as the measurement says.
    half = _profile(torso_levels, hs) / 2 * px - 0.5
    # In the side view the body is not centred on one line: the seat sits behind, the chest in front.
    shift = (
        np.zeros_like(hs)
        if front
        else _profile(
            [
                (crotch, -0.15 * hip),
                (b["hip_height"], -0.1 * hip),
                (b["waist_height"], 0.0),
                (b["chest_height"], 0.08 * chest),
                (b["shoulder_height"], 0.0),
            ],
            hs,
        )
        * px
    )
    left = np.column_stack([cx + shift - half, row(hs)])
    right = np.column_stack([cx + shift + half, row(hs)])
    torso = np.vstack([left, right[::-1]])
    scale = 8  # cv2 sub-pixel: coordinates in 1/256 px
    cv2.fillPoly(img, [np.round(torso * 2**scale).astype(np.int32)], CLOTHES, cv2.LINE_AA, scale)
    # Neck and head.
    neck_top = b["shoulder_height"] + 0.12 * stature - 0.8 * 0.13 * stature
    cv2.rectangle(
        img,
        (int(cx - neck * px / 2), int(row(neck_top + 4))),
        (int(cx + neck * px / 2), int(row(b["shoulder_height"] - 2))),
        SKIN,
        -1,
    )
    head_h = stature - neck_top
    head_w = 15.5 if front else 19.5
    cv2.ellipse(
        img,
        (int(cx), int(row(stature - head_h / 2))),
        (int(head_w * px / 2), int(head_h * px / 2)),
        0,
        0,
        360,
        SKIN,
        -1,
        cv2.LINE_AA,
    )
    # Legs: from the crotch down, feet apart in the front view.
    knee = b["knee_height"]
    for side in (-1, 1) if front else (0,):
        spread = 3.0 * side
        gap = 1.2 * side
        leg_levels = [(0, 7.0), (8, 7.5), (knee, 11.0), (crotch, thigh)]
        lh = np.linspace(0, crotch, 80)
        lw = _profile(leg_levels, lh)
        centre = (
            cx + px * (gap + side * lw / 2 + spread * (1 - lh / crotch)) if front else cx + np.zeros_like(lh)
        )
        leg = np.vstack(
            [
                np.column_stack([centre - lw * px / 2, row(lh)]),
                np.column_stack([centre + lw * px / 2, row(lh)])[::-1],
            ]
        )
        cv2.fillPoly(img, [np.round(leg * 2**scale).astype(np.int32)], CLOTHES, cv2.LINE_AA, scale)
    # Arms: hanging at arm_angle_deg from vertical (front) or straight down (side).
    arm_len = b["sleeve_length"]
    for side in (-1, 1) if front else (0,):
        angle = np.deg2rad(arm_angle_deg if front else 0.0)
        x0 = cx + side * (b["shoulder_width"] / 2 - 2.5) * px
        y0 = row(b["shoulder_height"] - 2.5)
        x1 = x0 + side * np.sin(angle) * arm_len * px
        y1 = y0 + np.cos(angle) * arm_len * px
        upper = b["bicep_girth"] / np.pi * 0.95 * px
        wrist = b["wrist_girth"] / np.pi * px
        nx, ny = np.cos(angle), -side * np.sin(angle) if front else 0.0
        if not front:
            nx, ny = 1.0, 0.0
        arm = np.array(
            [
                [x0 - nx * upper / 2, y0 - ny * upper / 2],
                [x0 + nx * upper / 2, y0 + ny * upper / 2],
                [x1 + nx * wrist / 2, y1 + ny * wrist / 2],
                [x1 - nx * wrist / 2, y1 - ny * wrist / 2],
            ]
        )
        cv2.fillPoly(img, [np.round(arm * 2**scale).astype(np.int32)], SKIN, cv2.LINE_AA, scale)
        cv2.circle(img, (int(x1), int(y1 + 4 * px)), int(4.5 * px), SKIN, -1, cv2.LINE_AA)
    rng = np.random.default_rng(seed)
    noisy = img.astype(np.int16) + rng.normal(0, 3, img.shape).astype(np.int16)
    return Render(np.clip(noisy, 0, 255).astype(np.uint8), px, feet)
