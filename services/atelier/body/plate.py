"""The other photo as a clean plate: background the outline took in, told by the photo it is not in.

The app asks for the front and the side photo from one spot: the phone stays where it is (propped
up, or held by someone standing still) and the person turns 90 degrees. The background is then the
same in both photos wherever neither shows the person. Where a learned outline ran off the body
into background of the clothes' own tone (a grey knit against a grey facade: the pose model is
sure there, and no colour test inside one photo can tell them apart), the other photo shows that
very background at that very place, since the person there stands turned and narrower or wider:
the pixels match, and the outline's run onto them is background. Where the other photo's own
outline claims the same pixels (the pose model tends to run into the same facade at the same
place in both photos; or it is the person in both), only the background's texture seen again
counts, in a run that also reaches pixels the other outline does not claim.

The other photo is aligned to this one first (an affine ECC fit on the background of both: a
phone held by hand moves a little between the two shots), and its colours matched to this one's
(a gain and offset per channel: the phone's exposure follows the scene). Where the two do not
agree over their background after that (another place, another light, a phone that moved a lot),
nothing is taken out.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from scipy.stats import maxwell

log = logging.getLogger(__name__)

# Two pixels (each a 5 x 5 mean, in OpenCV's 8-bit CIELAB) show the same background when they
# differ by less than the 99th percentile of the noise the two photos' shared background shows
# (their own noise, compression and residual misalignment): taken as a Maxwell distribution (the
# length of a three-channel Gaussian difference) with the background's median difference, whose
# 99th percentile is 2.19 times its median (on renders with the renderer's sensor noise: median
# 1.4, 99th percentile 3.0-3.7 over the true background). From the median, not the percentile
# itself: the "background" about an outline also holds the body's pixels the outline missed.
# Never more than MATCH_DE.
MATCH_DE = 5.0
MAXWELL_P99_OVER_MEDIAN = float(maxwell.ppf(0.99) / maxwell.ppf(0.5))  # 2.19
# The two photos' backgrounds must agree this closely (median Delta E over the background near the
# person, after alignment and colour matching) for the other photo to serve as a plate.
MAX_BACKGROUND_DE = 6.0
# Background within this share of the outline's height around it is what the median is taken on.
NEAR_SHARE = 0.15
# The person in either photo, grown by this share of the outline's height, is kept out of the fit
# and of the plate (the body's own soft edge, and the outline's misses).
PERSON_MARGIN_SHARE = 0.01
# At most this share of the outline is taken out: more is the clothes matching the background
# behind them (a white top before a white wall), not a run into it.
MAX_REMOVED_SHARE = 0.1
# Texture that tells the background seen twice from one outfit seen from two sides: 7 x 7 grey
# patches with an sd over 8 (the renders' sensor noise is 3) correlating over 0.9.
TEXTURE_PX = 7
TEXTURE_SD = 8.0
TEXTURE_NCC = 0.9
# How far (px) a run may grow on towards the body by the 3 x 3 test: the 5 x 5 mean's reach.
RIM_PX = 3
# ECC works on the photos shrunk to this many px on the long side.
ALIGN_SIDE_PX = 512


def _grown(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` grown by ``px`` (Euclidean; a distance transform, as fast for 100 px as for 1)."""
    if px <= 1:
        return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3) <= px


def align(image_rgb: np.ndarray, plate_rgb: np.ndarray, background: np.ndarray) -> np.ndarray | None:
    """The affine warp (2 x 3, this photo's px to the plate's) fitted by ECC on ``background``; None
    if ECC does not converge."""
    h, w = image_rgb.shape[:2]
    scale = min(1.0, ALIGN_SIDE_PX / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))

    def grey(img: np.ndarray) -> np.ndarray:
        small = cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)
        return small.astype(np.float32)

    small_mask = cv2.resize(background.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    warp = np.eye(2, 3, dtype=np.float32)
    try:
        _, warp = cv2.findTransformECC(
            grey(image_rgb),
            grey(plate_rgb),
            warp,
            cv2.MOTION_AFFINE,
            (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5),
            small_mask,
            5,
        )
    except cv2.error as exc:
        log.info("clean plate: the two photos could not be aligned (%s)", exc)
        return None
    warp[:, 2] /= scale
    return warp


def _warped(img: np.ndarray, warp: np.ndarray, interpolation: int) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.warpAffine(
        img, warp, (w, h), flags=interpolation | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )


def _lab(image_rgb: np.ndarray, k: int = 5) -> np.ndarray:
    return cv2.cvtColor(cv2.blur(image_rgb, (k, k)), cv2.COLOR_RGB2LAB).astype(np.float32)


def _matched(plate_rgb: np.ndarray, image_rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The plate's colours through a gain and offset per channel fitted to the image's on ``background``."""
    out = np.empty_like(plate_rgb)
    ys, xs = np.nonzero(background)
    pick = np.linspace(0, ys.size - 1, min(ys.size, 20000)).astype(int)
    for c in range(3):
        src = plate_rgb[ys[pick], xs[pick], c].astype(np.float64)
        dst = image_rgb[ys[pick], xs[pick], c].astype(np.float64)
        gain, offset = np.polyfit(src, dst, 1) if np.ptp(src) > 0 else (1.0, float(np.mean(dst - src)))
        out[..., c] = np.clip(plate_rgb[..., c] * gain + offset, 0, 255)
    return out


def _same_texture(image_rgb: np.ndarray, plate_rgb: np.ndarray) -> np.ndarray:
    """Pixels whose 7 x 7 grey patches in both photos are textured (sd over TEXTURE_SD) and alike
    (normalised cross-correlation over TEXTURE_NCC): the same structure at the same place."""
    a = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    b = cv2.cvtColor(plate_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    k = (TEXTURE_PX, TEXTURE_PX)
    ma, mb = cv2.blur(a, k), cv2.blur(b, k)
    va = np.maximum(cv2.blur(a * a, k) - ma * ma, 0)
    vb = np.maximum(cv2.blur(b * b, k) - mb * mb, 0)
    cov = cv2.blur(a * b, k) - ma * mb
    ncc = cov / np.sqrt(np.maximum(va * vb, 1e-6))
    return (va > TEXTURE_SD**2) & (vb > TEXTURE_SD**2) & (ncc > TEXTURE_NCC)


def background_run(
    image_rgb: np.ndarray,
    mask: np.ndarray,
    plate_rgb: np.ndarray,
    plate_mask: np.ndarray,
) -> np.ndarray | None:
    """The pixels of ``mask`` (this photo's outline) that the other photo shows as background.

    ``plate_rgb`` / ``plate_mask``: the other photo from the same spot and its person's outline.
    Only runs connected to the outline's outside count (a bleed is the outline running on, not a
    hole in the body); where the other photo's outline claims the person too, only a match of the
    background's texture, in a run that also reaches pixels it does not claim. None where the other photo
    cannot serve as a plate (not alignable, backgrounds that disagree, or a removal too large to be
    a run into the background); an empty mask where it serves and nothing is to be taken out.
    """
    if image_rgb.shape != plate_rgb.shape or not mask.any() or not plate_mask.any():
        return None
    ys = np.nonzero(mask.any(axis=1))[0]
    person_h = int(ys[-1] - ys[0]) + 1
    margin = max(2, round(PERSON_MARGIN_SHARE * person_h))
    background = ~_grown(mask, margin) & ~_grown(plate_mask, margin)
    if background.sum() < 0.1 * background.size:
        return None
    warp = align(image_rgb, plate_rgb, background)
    if warp is None:
        return None
    aligned = _warped(plate_rgb, warp, cv2.INTER_LINEAR)
    # The other photo's person where the alignment puts it.
    aligned_person = _warped(plate_mask.astype(np.uint8), warp, cv2.INTER_NEAREST).astype(bool)
    background &= ~_grown(aligned_person, margin)
    if background.sum() < 0.1 * background.size:
        return None  # (the alignment moved the other person over the background: no fit left)
    matched = _matched(aligned, image_rgb, background)
    de = np.linalg.norm(_lab(image_rgb) - _lab(matched), axis=2)
    de3 = np.linalg.norm(_lab(image_rgb, 3) - _lab(matched, 3), axis=2)
    near = background & _grown(mask, round(NEAR_SHARE * person_h))
    if near.sum() < 0.01 * near.size or float(np.median(de[near])) > MAX_BACKGROUND_DE:
        log.info(
            "clean plate: the two photos' backgrounds disagree (median Delta E %.1f)",
            float(np.median(de[near])) if near.any() else float("nan"),
        )
        return None
    threshold = min(MATCH_DE, MAXWELL_P99_OVER_MEDIAN * float(np.median(de[near])))
    # Where the other photo's outline has the person too, a match may be the person in both (one
    # outfit, seen from the front and the side; the head's top and the feet, which stay where they
    # were as the person turns) or the background both outlines ran into (the pose model runs into
    # the same facade at the same place in both photos). There only a match of texture counts,
    # the background's own structure seen again at the same pixels, and only as part of a run
    # that also holds pixels the other outline does not claim.
    claimed = mask & _grown(aligned_person, margin)
    unclaimed = mask & ~claimed
    free = unclaimed | (claimed & _same_texture(image_rgb, matched))
    same = free & (de < threshold)
    same = cv2.morphologyEx(same.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)
    # Keep the runs that reach the outline's outside.
    n, labels = cv2.connectedComponents(same.astype(np.uint8), connectivity=4)
    if n <= 1:
        return np.zeros_like(mask)
    touching = np.intersect1d(labels[_grown(~mask, 1) & same], labels[unclaimed & same])
    run = np.isin(labels, touching[touching > 0])
    # The test's 1% tail leaves specks inside a run: closed. Next to the body the 5 x 5 mean mixes
    # the body's colour into the background's for 2 px: there the run grows on by pixels that
    # match over a 3 x 3 mean (its own noise level), px by px, so the rim left beside the body is
    # not read as a narrower bulge (the hip's widest row, the lopsided-width rule).
    run = (
        cv2.morphologyEx(run.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)).astype(bool) & mask
    )
    threshold3 = min(MATCH_DE, MAXWELL_P99_OVER_MEDIAN * float(np.median(de3[near])))
    for _ in range(RIM_PX):
        rim = _grown(run, 1) & free & ~run & (de3 < threshold3)
        if not rim.any():
            break
        run |= rim
    if run.sum() > MAX_REMOVED_SHARE * mask.sum():
        log.info("clean plate: %d px would go, more than a run into the background", int(run.sum()))
        return None
    return run
