"""Radial lens distortion: the focal length in pixels from a photo's 35 mm-equivalent focal length,
and undoing a known first-order radial distortion (Brown's model, as atelier.body.scene renders it:
a point at normalised radius r from the image centre is imaged at r * (1 + k1 * r^2)).

Phone main cameras have mild barrel distortion (k1 < 0) that the phone's own processing mostly
removes before the JPEG/HEIC is written; what is left is not in the photo's metadata. The photo
path therefore assumes none unless a caller passes ``k1``; bench/body_lens.py measures what an
uncorrected k1 does to the photo values and what undoing it with the right focal length recovers.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# 35 mm film's diagonal, mm: a 35 mm-equivalent focal length is relative to it.
FILM_DIAGONAL_MM = math.hypot(36.0, 24.0)
# A phone main camera when the photo says nothing: 26 mm equivalent (the common main lens).
DEFAULT_FOCAL_35MM = 26.0


def focal_px(width_px: int, height_px: int, focal_35mm: float | None = None) -> float:
    """The focal length in pixels of a photo ``width_px`` x ``height_px`` taken at ``focal_35mm``
    (EXIF FocalLengthIn35mmFilm; the default main lens when unknown), by the diagonal."""
    f = focal_35mm if focal_35mm and focal_35mm > 0 else DEFAULT_FOCAL_35MM
    return f / FILM_DIAGONAL_MM * math.hypot(width_px, height_px)


def undistort(image_rgb: np.ndarray, k1: float, focal: float) -> np.ndarray:
    """The photo with radial distortion ``k1`` undone (principal point at the centre)."""
    if not k1:
        return image_rgb
    h, w = image_rgb.shape[:2]
    # Pixel centres at integer coordinates: the image centre is at (w - 1) / 2, (h - 1) / 2.
    matrix = np.array([[focal, 0.0, (w - 1) / 2], [0.0, focal, (h - 1) / 2], [0.0, 0.0, 1.0]])
    out: np.ndarray = cv2.undistort(image_rgb, matrix, np.array([k1, 0.0, 0.0, 0.0]))
    return out
