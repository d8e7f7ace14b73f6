"""The person's outline from the learned segmentation, and what the outline says about the body.

- :func:`choose_person`: which of the people the pose model found is the one to measure.
- :func:`learned_mask`: MediaPipe's per-person segmentation (the pose landmark model's output:
  one soft mask per person, so a dog, a suitcase or a second person is not part of it), refined
  only in a narrow band around its own edge by a guided filter on the photo, and completed at the
  feet (which the coarse mask sometimes drops) by GrabCut in a small box under the legs. It never
  grows further than that band or box: floor, shadows and objects next to the person stay out.
- :func:`arm_mask`: the arms and hands as capsules along the landmarks, so widths taken across
  the torso stop where an arm touches it.
- :func:`acromion_points`: the shoulder points where the outline turns from the shoulder line
  into the arm.

Tried and not kept: MediaPipe's selfie segmentation model (in the same wheel). On the whole
photo it is 256 px for the whole scene and takes in the dog of the dog photo; on square tiles
along the body it filled the gap between the legs of the man in black trousers and left seams
between tiles. The pose model's mask is per person and was closer on all five real photos.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from atelier.body.pose import Landmark, Pose, plausibility

# A second person at least this tall (relative to the tallest) makes the photo ambiguous.
SIMILAR_PERSON = 0.8
# The band (fraction of the person's height in px) either side of the model's edge inside which
# colour may move the outline: the model's 256 px mask is that far off at most on the renders.
BAND_SHARE = 0.012
# Heels further apart in height than this share of the person: one is off the floor.
RAISED_HEEL_SHARE = 0.04
# GrabCut runs on the person's box reduced to at most this many px on its long side.
GRABCUT_SIDE_PX = 640
# The feet box may add at most this share of the person's height below the model's mask.
MAX_FEET_EXTENSION = 0.06


def _extent(pose: Pose) -> tuple[float, float, float]:
    """(height px, centre x, top y) of a pose, from its mask where it has one, else its landmarks."""
    mask = pose.soft if pose.soft is not None else pose.mask.astype(np.float32)
    ys, xs = np.nonzero(mask > 0.5)
    if ys.size > 50:
        return float(ys.max() - ys.min()), float(np.median(xs)), float(ys.min())
    pts = np.array([(lm.x_px, lm.y_px) for lm in pose.landmarks.values()])
    return float(np.ptp(pts[:, 1])), float(np.median(pts[:, 0])), float(pts[:, 1].min())


def person_mask(pose: Pose) -> np.ndarray:
    """The pose's person pixels (bool): its soft mask over 0.5, else its hard mask."""
    return pose.soft > 0.5 if pose.soft is not None else pose.mask


def distinct_people(poses: Sequence[Pose]) -> list[Pose]:
    """The poses less the duplicates: the model sometimes reports one person twice (the woman in
    the dog photo: two skeletons, masks overlapping 95%); the more plausible of each pair stays."""
    order = sorted(range(len(poses)), key=lambda i: -plausibility(poses[i]))
    kept: list[Pose] = []
    for i in order:
        mask = person_mask(poses[i])
        duplicate = False
        for other in kept:
            o = other.soft > 0.5 if other.soft is not None else other.mask
            union = (mask | o).sum()
            if union and (mask & o).sum() / union > 0.5:
                duplicate = True
                break
        if not duplicate:
            kept.append(poses[i])
    return kept


def choose_person(poses: Sequence[Pose], width_px: int) -> tuple[int, int]:
    """(index of the person to measure, how many others are of similar size).

    The tallest person, favouring the one nearer the middle (a passer-by at the edge of the frame
    is ignored) and whose body the model sees clearly; people shorter than ``SIMILAR_PERSON`` of
    them are in the background.
    """
    extents = [_extent(p) for p in poses]
    plaus = [plausibility(p) for p in poses]
    score = [
        h * (1 - 0.5 * abs(cx - width_px / 2) / width_px) * q
        for (h, cx, _), q in zip(extents, plaus, strict=True)
    ]
    best = int(np.argmax(score))
    # A "person" the segmentation gives (almost) no pixels is not one (the dog jumping up at the
    # woman in the dog photo had a full skeleton and an empty mask).
    areas = [float((p.soft > 0.5).sum()) if p.soft is not None else float(p.mask.sum()) for p in poses]
    similar = [
        i
        for i, (h, _, _) in enumerate(extents)
        if i != best
        and h >= SIMILAR_PERSON * extents[best][0]
        and plaus[i] >= 0.5 * plaus[best]
        and areas[i] >= 0.3 * areas[best]
    ]
    if similar:
        # Among people of similar size the one the model sees most completely (every key landmark
        # visible) is the least hidden by the others: in the skiers photo the tallest outline was a
        # woman merged with the man behind her, the man standing apart was seen whole.
        best = max([best, *similar], key=lambda i: (round(plaus[i], 1), score[i]))
    return best, len(similar)


def touches_another(poses: Sequence[Pose], index: int) -> bool:
    """Whether person ``index``'s mask meets (within 1% of their height) another person's mask.

    People standing apart can be told apart by their per-person masks, so the one chosen can be
    measured; people in contact or one in front of the other cannot be (an arm or a leg of the
    other could be taken for theirs).
    """
    own = person_mask(poses[index])
    ys = np.nonzero(own)[0]
    if ys.size == 0:
        return True
    reach = max(1, round(0.01 * (ys.max() - ys.min())))
    grown = cv2.dilate(own.astype(np.uint8), np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)).astype(bool)
    for i, other in enumerate(poses):
        if i == index:
            continue
        theirs = person_mask(other)
        if (grown & theirs).any():
            return True
    return False


def _guided(image_rgb: np.ndarray, soft: np.ndarray, radius: int) -> np.ndarray:
    """OpenCV-contrib's guided filter of ``soft`` on the photo; a Gaussian blur where contrib's
    ``ximgproc`` is missing. The two give other outlines (on the bench, men's waist girth MAE 2.11
    against 2.31 cm; BENCHMARKS 18n), so ``make`` installs contrib's cv2 last (the Makefile) and a
    test checks that the venv has it."""
    guide = image_rgb.astype(np.float32) / 255
    if hasattr(cv2, "ximgproc"):
        return cv2.ximgproc.guidedFilter(guide, soft.astype(np.float32), radius, 1e-3)
    return cv2.GaussianBlur(soft.astype(np.float32), (0, 0), radius / 2)


def learned_mask(
    image_rgb: np.ndarray,
    soft: np.ndarray,
    others: Sequence[np.ndarray] = (),
    landmarks: Mapping[str, Landmark] | None = None,
) -> np.ndarray:
    """The person as a bool mask from the model's soft mask, refined only near its own edge."""
    h, w = soft.shape
    soft = soft.astype(np.float32).copy()
    for other in others:  # where another person is more likely, it is not this one
        soft[other > soft] = 0.0
    core = soft > 0.5
    ys = np.nonzero(core)[0]
    if ys.size == 0:
        return core
    person_h = ys.max() - ys.min()
    band_px = max(2, round(BAND_SHARE * person_h))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    m = core.astype(np.uint8)
    outer = cv2.dilate(m, kernel, iterations=band_px).astype(bool)
    inner = cv2.erode(m, kernel, iterations=band_px).astype(bool)
    cols = np.nonzero(outer.any(0))[0]
    x0, x1 = max(0, int(cols.min()) - band_px), min(w, int(cols.max()) + band_px + 1)
    y0, y1 = max(0, int(ys.min()) - 2 * band_px), min(h, int(ys.max()) + 2 * band_px + 1)
    crop = np.ascontiguousarray(image_rgb[y0:y1, x0:x1])
    sub_soft, sub_outer, sub_inner = soft[y0:y1, x0:x1], outer[y0:y1, x0:x1], inner[y0:y1, x0:x1]
    # In the band each pixel goes to the side whose local colour it is nearer: the mean colour of
    # the sure person pixels and of the sure background pixels within a few band widths (a gap
    # between arm and body that the 256 px model half fills opens here). Where the two colours are
    # alike the model's own decision stands. Only band pixels may change, so the outline cannot
    # grow into the floor, a shadow or an object. Then a guided filter smooths the decision along
    # the photo's edges. (GrabCut in the band was tried: on a black top against a dark background
    # it cut the torso in half.)
    band = sub_outer & ~sub_inner
    sub = core[y0:y1, x0:x1].copy()
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    win = (6 * band_px + 1, 6 * band_px + 1)
    means = []
    for sure in (sub_soft > 0.8, (sub_soft < 0.3) & sub_outer):
        weight = cv2.boxFilter(sure.astype(np.float32), -1, win, normalize=False)
        total = cv2.boxFilter(lab * sure[..., None], -1, win, normalize=False)
        means.append((total / np.maximum(weight, 1e-6)[..., None], weight > 3))
    (fg, fg_ok), (bg, bg_ok) = means
    contrast = np.linalg.norm(fg - bg, axis=2)
    d_fg = np.linalg.norm(lab - fg, axis=2)
    d_bg = np.linalg.norm(lab - bg, axis=2)
    decide = band & fg_ok & bg_ok & (contrast > 15.0)
    # Colour may only overrule a model that is unsure: a textured background (dark mortar between
    # light stones) has pixels nearer the person's mean colour than its own.
    person_like = d_fg < d_bg
    sub[decide & person_like & (sub_soft > 0.35)] = True
    sub[decide & ~person_like & (sub_soft < 0.85)] = False
    filt = _guided(crop, sub.astype(np.float32), max(2, band_px // 2))
    sub[band] = filt[band] > 0.5
    refined = np.zeros_like(core)
    refined[y0:y1, x0:x1] = sub
    refined = _complete_feet(image_rgb, refined, person_h)
    # Keep the largest piece (specks the filter lifted over 0.5 elsewhere in the band).
    count, labels, stats, _ = cv2.connectedComponentsWithStats(refined.astype(np.uint8), connectivity=8)
    if count > 2:
        biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        refined = labels == biggest
    return refined


# GrabCut starts its colour models from k-means seeded by OpenCV's random state (per thread), so one
# photo gave another outline depending on what the process had run before: on renders up to half of
# the photo's pixels for the colour-only fallback, a few dozen at the feet, and one man's girths (of
# 40 measured twice in a row) moved by up to 0.2 cm between two identical requests. Every call
# starts from this seed.
GRABCUT_SEED = 20261204


def grab_cut(
    image_rgb: np.ndarray, labels: np.ndarray, rect: tuple[int, int, int, int], iterations: int
) -> None:
    """cv2.grabCut on ``image_rgb`` from ``labels`` (cv2.GC_*, updated in place), initialised with
    ``rect`` when one is given, with the mask otherwise; the same answer for the same input."""
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    mode = cv2.GC_INIT_WITH_RECT if any(rect) else cv2.GC_INIT_WITH_MASK
    cv2.setRNGSeed(GRABCUT_SEED)
    cv2.grabCut(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), labels, rect, bgd, fgd, iterations, mode)


def _complete_feet(image_rgb: np.ndarray, mask: np.ndarray, person_h: int) -> np.ndarray:
    """GrabCut in a small box under the legs: the model's coarse mask sometimes stops at the ankles.

    The box spans the columns of the lowest part of the mask and reaches MAX_FEET_EXTENSION of
    the person's height below it; what GrabCut adds there must touch the mask. A shadow or floor
    of the shoes' colour can add at most the box's height (a few cm), never more.
    """
    h, w = mask.shape
    ys = np.nonzero(mask)[0]
    bottom = int(ys.max())
    reach = max(4, round(MAX_FEET_EXTENSION * person_h))
    low = mask[max(0, bottom - reach) : bottom + 1]
    cols = np.nonzero(low.any(axis=0))[0]
    if cols.size == 0 or bottom >= h - 2:
        return mask
    pad = reach
    x0, x1 = max(0, int(cols.min()) - pad), min(w, int(cols.max()) + pad + 1)
    y0, y1 = max(0, bottom - 2 * reach), min(h, bottom + reach + 1)
    box = image_rgb[y0:y1, x0:x1]
    if min(box.shape[:2]) < 8:
        return mask
    sub = mask[y0:y1, x0:x1]
    gc = np.full(sub.shape, cv2.GC_PR_BGD, np.uint8)
    gc[sub] = cv2.GC_PR_FGD
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    gc[cv2.erode(sub.astype(np.uint8), kernel, iterations=2) > 0] = cv2.GC_FGD
    gc[:, :2], gc[:, -2:], gc[-2:, :] = cv2.GC_BGD, cv2.GC_BGD, cv2.GC_BGD
    if not (gc == cv2.GC_FGD).any():
        return mask
    try:
        grab_cut(box, gc, (0, 0, 0, 0), 3)
    except cv2.error:
        return mask
    fg = np.isin(gc, (cv2.GC_FGD, cv2.GC_PR_FGD))
    # Only what hangs below the mask and touches it; the mask itself is kept as the model drew it.
    grown = sub | (fg & (np.arange(sub.shape[0])[:, None] >= bottom - y0 - reach // 2))
    _, labels = cv2.connectedComponents(grown.astype(np.uint8), connectivity=8)
    keep = np.unique(labels[sub])
    out = mask.copy()
    out[y0:y1, x0:x1] = np.isin(labels, keep[keep > 0])
    return out


ARM_CHAINS = {
    side: (f"{side}_shoulder", f"{side}_elbow", f"{side}_wrist", f"{side}_index")
    for side in ("left", "right")
}


def _run_across(mask: np.ndarray, point: np.ndarray, normal: np.ndarray, limit: float) -> float:
    """Length (px) of the mask run through ``point`` along ``normal``, up to ``limit`` each way."""
    h, w = mask.shape
    total = 0.0
    for sign in (1, -1):
        t = 0.0
        while t < limit:
            x, y = point + sign * (t + 1) * normal
            if not (0 <= round(x) < w and 0 <= round(y) < h) or not mask[round(y), round(x)]:
                break
            t += 1
        total += t
    return total + 1


def arm_radius_px(mask: np.ndarray, landmarks: Mapping[str, Landmark], default_px: float) -> float:
    """The upper arm's radius (px): from the forearm's width on the outline, where the arm is free of
    the body (the upper arm is about 1.3 times as thick), the least of the two arms."""
    found = []
    for side in ("left", "right"):
        el, wr = landmarks.get(f"{side}_elbow"), landmarks.get(f"{side}_wrist")
        if el is None or wr is None or min(el.visibility, wr.visibility) < 0.5:
            continue
        a, b = np.array([el.x_px, el.y_px]), np.array([wr.x_px, wr.y_px])
        length = float(np.linalg.norm(b - a))
        if length < 5:
            continue
        normal = np.array([-(b - a)[1], (b - a)[0]]) / length
        widths = [_run_across(mask, a + f * (b - a), normal, 2.5 * default_px) for f in (0.35, 0.5, 0.65)]
        found.append(float(np.median(widths)))
    if not found:
        return default_px
    return float(np.clip(1.3 * min(found) / 2, 0.6 * default_px, 1.6 * default_px))


# How far along the forearm from the pose model's wrist the outline's wrist is sought: up the forearm
# and towards the hand (cm). The notch is seen only where the window reaches into the hand, which
# widens over its first centimetres past the wrist (a palm 8-9 cm across, a wrist 5-6); with the
# landmark a few cm up the forearm, 4 cm towards the hand often ended before it, and the landmark was
# kept: 116 of 430 men's and 104 of 425 women's arms on the renders (1x, 200 per sex), whose
# sleeves read 1.2-2.4 cm short. 6 cm: 61 and 69 arms, the sleeve's bias -0.31 -> +0.23 (men) and
# -0.77 -> -0.55 (women), MAE 1.94 -> 1.85 and 1.65 -> 1.53 cm (8 cm: +0.40 / -0.56, 1.88 / 1.53).
# Further up the forearm is not searched: a short sleeve's cuff there is a notch too (6 cm both
# ways read the women's sleeves -0.82, MAE 1.77). BENCHMARKS "issue 18t".
WRIST_SEARCH_CM = 4.0
WRIST_SEARCH_HAND_CM = 6.0
# The wrist counts as found only where the outline is this much narrower than on both sides of it.
WRIST_NOTCH = 0.93


def wrist_point_px(
    mask: np.ndarray, elbow: Landmark, wrist: Landmark, px_per_cm: float
) -> tuple[float, float]:
    """The wrist on the outline: the narrowest point between forearm and hand, near the landmark.

    The wrist is where the forearm, tapering, meets the wider hand; the sleeve ends there. The pose
    model's wrist point is a guess inside the blob of forearm and hand: on the 3D renders it lay
    1.4-2.3 cm up the forearm (median), which made every sleeve that much short. Across the arm
    (normal to elbow -> wrist), the outline's width is taken every 0.25 cm from ``WRIST_SEARCH_CM``
    up the forearm to ``WRIST_SEARCH_HAND_CM`` towards the hand; its least is the wrist when both
    sides are wider by ``1 / WRIST_NOTCH``.
    Without such a notch (a hand seen edge-on, an arm against the body) the landmark is kept.
    """
    a, b = np.array([elbow.x_px, elbow.y_px]), np.array([wrist.x_px, wrist.y_px])
    length = float(np.linalg.norm(b - a))
    if length < 5 or px_per_cm <= 0:
        return float(b[0]), float(b[1])
    along = (b - a) / length
    normal = np.array([-along[1], along[0]])
    h, w = mask.shape
    steps = np.arange(-WRIST_SEARCH_CM, WRIST_SEARCH_HAND_CM + 1e-9, 0.25) * px_per_cm
    widths = []
    for t in steps:
        x, y = b + t * along
        inside = 0 <= round(x) < w and 0 <= round(y) < h and bool(mask[round(y), round(x)])
        widths.append(_run_across(mask, b + t * along, normal, 6 * px_per_cm) if inside else 0.0)
    width = np.asarray(widths)
    if np.any(width == 0):
        return float(b[0]), float(b[1])
    i = int(np.argmin(width))
    if 0 < i < width.size - 1 and width[i] <= WRIST_NOTCH * min(width[:i].max(), width[i + 1 :].max()):
        x, y = b + steps[i] * along
        return float(x), float(y)
    return float(b[0]), float(b[1])


def _free_limb_beyond(
    person: np.ndarray, point: np.ndarray, centre_x: float, side: float, gap_px: float
) -> bool:
    """Whether ``point`` lies in the run through the body's centre on its row while, further out on
    ``side`` (-1 left, +1 right), past a gap of background of at least ``gap_px``, more of the person
    lies on that row: a limb hanging free of the torso that ``point`` is not on."""
    h, w = person.shape
    r, x = round(float(point[1])), round(float(point[0]))
    c = round(centre_x)
    if not (0 <= r < h and 0 <= x < w and 0 <= c < w) or not person[r, c]:
        return False
    line = person[r]
    lo, hi = sorted((c, x))
    if not line[lo : hi + 1].all():
        return False  # the point is not on the central run
    step = 1 if side > 0 else -1
    end = x
    while 0 <= end + step < w and line[end + step]:
        end += step
    # From the first background pixel past the run outward; the limb starts after the gap.
    beyond = line[end + 1 :] if step > 0 else line[:end][::-1]
    if not beyond.any():
        return False
    return int(np.argmax(beyond)) >= gap_px


def misplaced_arms(
    person: np.ndarray, landmarks: Mapping[str, Landmark], centre_x: float, radius_px: float
) -> set[str]:
    """Sides whose elbow and wrist landmarks lie on the torso while a free limb hangs beside it.

    The pose model now and then puts one arm's elbow and wrist along the torso's edge although the
    arm hangs well away from the body (2 of the 14 worst hip widths of 200 men's renders); carved
    out there, the arm's capsule took 4-10 cm off every width on that side. A forearm that really
    lies against the body leaves no free limb on that side of it. The caller drops those landmarks.
    """
    out = set()
    for side, chain in ARM_CHAINS.items():
        el, wr = landmarks.get(chain[1]), landmarks.get(chain[2])
        if el is None or wr is None:
            continue
        a, b = np.array([el.x_px, el.y_px]), np.array([wr.x_px, wr.y_px])
        sign = 1.0 if (a[0] + b[0]) / 2 > centre_x else -1.0
        hits = sum(
            _free_limb_beyond(person, a + f * (b - a), centre_x, sign, radius_px) for f in (0.3, 0.5, 0.7)
        )
        if hits >= 2:
            out.add(side)
    return out


def arm_mask(
    shape: tuple[int, int], landmarks: Mapping[str, Landmark], radius_px: float, centre_x: float | None = None
) -> np.ndarray:
    """Capsules of ``radius_px`` along elbow -> wrist -> hand (and the upper arm from below the shoulder)."""
    out = np.zeros(shape, np.uint8)
    for chain in ARM_CHAINS.values():
        pts = [landmarks.get(n) for n in chain]
        if any(p is None or p.visibility < 0.3 for p in pts[:3]):
            continue
        sh, el, wr = (np.array([p.x_px, p.y_px]) for p in pts[:3])  # type: ignore[union-attr]
        hand = np.array([pts[3].x_px, pts[3].y_px]) if pts[3] is not None else wr + 0.3 * (wr - el)
        # The upper arm from a third of the way down: its top is the shoulder, which belongs to the torso.
        start = sh + 0.35 * (el - sh)
        arm = np.zeros(shape, np.uint8)
        for a, b, r in ((start, el, radius_px), (el, wr, 0.85 * radius_px), (wr, hand, 0.9 * radius_px)):
            cv2.line(arm, tuple(int(v) for v in a), tuple(int(v) for v in b), 1, max(1, int(2 * r)))
            cv2.circle(arm, tuple(int(v) for v in b), int(r), 1, -1)
        if centre_x is not None and 0 <= round(centre_x) < shape[1] and arm[:, round(centre_x)].any():
            # An arm across the body's middle (or landmarks that put it there) would cut the torso
            # in two: that arm is not carved out, and the widths there show it.
            continue
        out |= arm
    return out.astype(bool)


def acromion_points(
    mask: np.ndarray, landmarks: Mapping[str, Landmark], px_per_cm: float
) -> dict[str, tuple[float, float]]:
    """The shoulder points, one per side, where the outline turns from the shoulder line into the arm.

    Along the top of the outline from the neck outward, the shoulder line falls gently and the
    arm's outer edge steeply: the shoulder point is where the slope passes 45 degrees (the arm
    hangs below 45 degrees from horizontal in every measuring pose). Searched from the shoulder
    landmark (the joint centre, inside the acromion) outward, at most 12 cm.
    """
    out: dict[str, tuple[float, float]] = {}
    h, w = mask.shape
    for side in ("left", "right"):
        lm = landmarks.get(f"{side}_shoulder")
        other = landmarks.get(f"{'right' if side == 'left' else 'left'}_shoulder")
        if lm is None or other is None or lm.visibility < 0.5:
            continue
        step = 1 if lm.x_px > other.x_px else -1  # outward, away from the other shoulder
        mid = (lm.x_px + other.x_px) / 2
        x_start = round(mid + 0.5 * (lm.x_px - mid))
        y_lo = max(0, int(lm.y_px - 15 * px_per_cm))
        y_hi = min(h, int(lm.y_px + 25 * px_per_cm))
        col_top = []
        xs = []
        for x in range(x_start, x_start + step * int(22 * px_per_cm), step):
            if not 0 <= x < w:
                break
            col = mask[y_lo:y_hi, x]
            idx = np.nonzero(col)[0]
            if idx.size == 0:
                break
            col_top.append(y_lo + idx[0])
            xs.append(x)
        if len(xs) < 5:
            continue
        top = np.asarray(col_top, float)
        # Slope over a 1 cm baseline (xs[i] = x_start + step * i); the first crossing of 1
        # (45 degrees) outward of the joint, placed to a fraction of a column.
        base = max(1, round(1.0 * px_per_cm))
        slopes = (top[base:] - top[:-base]) / base
        first = math.ceil(abs(lm.x_px - x_start))
        for i in range(first, len(slopes)):
            if slopes[i] >= 1.0:
                frac = 1.0
                if i > first and slopes[i - 1] < 1.0:
                    frac = (1.0 - slopes[i - 1]) / (slopes[i] - slopes[i - 1])
                ci = i - 1 + frac + base / 2
                out[side] = (x_start + step * ci, float(np.interp(ci, np.arange(top.size), top)))
                break
    return out


def head_top_px(mask: np.ndarray, landmarks: Mapping[str, Landmark]) -> float:
    """Top of the head: the outline's highest row in the columns over the face landmarks."""
    ys = np.nonzero(mask)[0]
    face = [
        landmarks[n] for n in ("nose", "left_ear", "right_ear", "left_eye", "right_eye") if n in landmarks
    ]
    if not face:
        return float(ys.min())
    xs = [lm.x_px for lm in face]
    x0, x1 = int(min(xs)) - 5, int(max(xs)) + 6
    cols = mask[:, max(0, x0) : max(1, x1)]
    rows = np.nonzero(cols.any(axis=1))[0]
    return float(rows.min()) if rows.size else float(ys.min())


# Lateral malleolus height over stature, ANSUR II means (male 0.0415, female 0.0385; sd 0.003):
# where the ankle landmark (the malleoli) lies above the floor.
ANKLE_SHARE = {"male": 0.0415, "female": 0.0385}
ANKLE_SHARE_ANY = 0.040


def front_floor_px(
    mask: np.ndarray, top_px: float, landmarks: Mapping[str, Landmark], ankle_share: float
) -> float | None:
    """The floor row under the body in a front photo, from the ankle landmarks; None without them.

    In a front view the heels are hidden behind the feet and the pose model's heel points are a
    guess: on the renders they lay 4.5 cm (sd 1.5) above the floor under the body, which made
    every width 2-3% too large. The malleoli are seen, and stand ``ankle_share`` of the stature
    above the floor (ANSUR II), nearly in the body's plane: floor - ankle = share * (floor - top).
    A raised foot (one ankle much higher than the other) leaves the lower ankle.
    """
    ankles = [landmarks.get(f"{s}_ankle") for s in ("left", "right")]
    if any(a is None or a.visibility < 0.5 for a in ankles):
        return None
    ys = np.nonzero(mask)[0]
    bottom, top = float(ys.max()), float(ys.min())
    rows = [a.y_px for a in ankles]  # type: ignore[union-attr]
    ankle = float(np.mean(rows))
    if abs(rows[0] - rows[1]) > RAISED_HEEL_SHARE * (bottom - top):
        ankle = float(max(rows))
    floor = (ankle - ankle_share * top_px) / (1 - ankle_share)
    # The toes, nearer the camera, are the outline's bottom: the floor under the body is above them
    # (or level with them, from a camera at floor height), and below the ankles.
    if not ankle < floor <= bottom + 0.01 * (bottom - top):
        return None
    return floor


def heel_contact_px(mask: np.ndarray, landmarks: Mapping[str, Landmark]) -> tuple[float, str]:
    """(row of the heels' floor contact, how it was found).

    Not the outline's lowest point: that is the toe tips, and in a front view from above the
    floor the toes, nearer the camera, lie lower in the photo than the heels (a phone at chest
    height 2 m away sees the toes of 25 cm feet 8-13 cm "below" the heels on the renders, 5-7% of
    the height scale). The pose model's heel landmarks are the heels' floor contact; their mean
    is the floor under the body (one foot nearer the camera in a side view, one further). Used
    when both lie between the ankles and a little below the outline's bottom.
    """
    ys = np.nonzero(mask)[0]
    bottom, top = float(ys.max()), float(ys.min())
    heels = [landmarks.get(f"{s}_heel") for s in ("left", "right")]
    ankles = [landmarks.get(f"{s}_ankle") for s in ("left", "right")]
    if all(x is not None for x in heels + ankles):
        ys_heel = [lm.y_px for lm in heels]  # type: ignore[union-attr]
        heel = float(np.mean(ys_heel))
        if abs(ys_heel[0] - ys_heel[1]) > RAISED_HEEL_SHARE * (bottom - top):
            heel = float(max(ys_heel))  # one heel is raised (walking, running): the other is on the floor
        ankle = float(np.mean([lm.y_px for lm in ankles]))  # type: ignore[union-attr]
        if ankle < heel <= bottom + 0.02 * (bottom - top):
            return heel, "heel landmarks"
    return bottom, "outline bottom"


def touches(mask: np.ndarray, edge: str, margin: int) -> bool:
    if edge == "top":
        return bool(mask[: margin + 1].any())
    if edge == "bottom":
        return bool(mask[-margin - 1 :].any())
    if edge == "left":
        return bool(mask[:, : margin + 1].any())
    return bool(mask[:, -margin - 1 :].any())


def dist(a: Landmark, b: Landmark) -> float:
    return math.dist((a.x_px, a.y_px), (b.x_px, b.y_px))
