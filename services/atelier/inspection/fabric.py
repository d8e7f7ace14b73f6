"""Where the fabric is in a frame: everything else (machine bed, padding) is never scored.

A line camera wider than the cloth sees, beside the fabric edge, the machine bed (smooth, streaky,
no weave) or flat padding (white on AITEX strips, but any grey level elsewhere). Both lack the fine
weave texture of cloth. Image rows run along the roll, so the fabric's edges are (nearly) vertical
lines and the off-fabric areas are runs of columns that start at the frame's left or right border.

Per band of rows, a column profile of fine contrast (|pixel - 3x3 mean| / local mean: the weave's
contrast, independent of illumination fall-off) is compared with the fabric next to it: the
off-fabric side is the widest run from the border whose mean contrast is under OFF_RATIO of the
cloth beside it, cut at the sharpest step of the profile within that run (the fabric edge).
Only a run that touches the border is cut: a flat or white patch inside the cloth (a hole, lint,
a bright stain) stays fabric and is scored.

Flat white padding is also cut at pixel level where it touches the border (its outline is not
always a straight column), so padding notches inside a band are followed.

A frame with no fabric at all (every pixel one grey level: a dark or saturated camera, a lens cap,
lights off; or all flat white padding) is recognised from its extremes alone (shows_no_fabric), so it
costs one pass over the pixels instead of the whole texture pipeline (an all-black 8192 x 8192 PNG
of 65 KB cost about 15 CPU-s and was answered as one frame-sized defect).
"""

from __future__ import annotations

import bisect

import cv2
import numpy as np

BAND_ROWS = 64
# Columns are summarised in bins of this many pixels (the edge is found to about this precision).
BIN_PX = 4
SMOOTH_BINS = 4
# Fabric next to the candidate edge is measured over this many pixels.
INNER_PX = 128
# Off-fabric when the run's contrast is under this fraction of the cloth's beside it: measured
# bed at 0.35-0.62 of the cloth beside it (AITEX 01-04), padding 0; a fall-off of light or focus is gradual.
OFF_RATIO = 0.7
# ... by most of the run: its OUTER_QUANTILE must be under the limit.
OUTER_QUANTILE = 0.8
# The cut goes this far past the edge's step (bins): the step is found to a bin, and a few px of bed
# left inside the fabric are enough to lift the features next to them (measured on a synthetic bed).
EDGE_GUARD_BINS = 2
# The edge is searched in the outer part of the frame only: the fabric covers the centre.
MAX_OFF_FRACTION = 0.45
# The selvage zone: this far (px) into the fabric from the off-fabric area beside it.
SELVAGE_PX = 96
# Flat white padding touching the border, at pixel level.
PAD_LEVEL = 250
PAD_MIN_SIZE_PX = 15


def shows_no_fabric(grey: np.ndarray) -> bool:
    """True when nothing in the frame can be fabric: one grey level throughout (no weave texture, the
    off-fabric criterion above, at any level) or all flat white padding (>= PAD_LEVEL everywhere)."""
    low, high = int(grey.min()), int(grey.max())
    return low == high or low >= PAD_LEVEL


def fine_contrast(grey: np.ndarray) -> np.ndarray:
    g = grey.astype(np.float32)
    return np.abs(g - cv2.blur(g, (3, 3))) / (cv2.blur(g, (31, 31)) + 1.0)


def _cut(profile: np.ndarray) -> int:
    """Number of bins from the start of `profile` that are off-fabric (0: the fabric reaches the border)."""
    n = len(profile)
    inner = max(1, INNER_PX // BIN_PX)
    limit = int(n * MAX_OFF_FRACTION)
    if n <= inner:
        return 0  # a frame narrower than the cloth window has no border stretch to judge (the fuzz found it)
    # Cloth beside each candidate edge (median: a defect next to the edge must not move it).
    windows = np.lib.stride_tricks.sliding_window_view(profile, inner)
    cloth = np.median(windows, axis=1)
    widest = 0
    run: list[float] = []  # the run's values, sorted (a running quantile: np.quantile per b is slow)
    for b in range(1, min(limit, len(cloth))):
        bisect.insort(run, float(profile[b - 1]))
        # The run must be low throughout (its OUTER_QUANTILE), not just on average: illumination or
        # focus fall-off towards a border lowers contrast gradually, a bed or padding does it in a step.
        if run[int(OUTER_QUANTILE * (len(run) - 1))] < OFF_RATIO * cloth[b]:
            widest = b
    if widest == 0:
        return 0
    # The run overshoots the edge by up to (1 - OUTER_QUANTILE) of its width (the quantile tolerates
    # that much cloth); the edge is the sharpest rise of contrast in that stretch (edge line, selvage).
    window = SMOOTH_BINS
    lo, hi = max(window, int(widest * OUTER_QUANTILE) - window), min(n - window, widest + window)
    best_b, best_step = widest, -np.inf
    for b in range(lo, hi):
        step = float(profile[b : b + window].mean() - profile[b - window : b].mean())
        if step > best_step:
            best_b, best_step = b, step
    return best_b + EDGE_GUARD_BINS


def flat_padding(grey: np.ndarray) -> np.ndarray:
    """Flat white (>= PAD_LEVEL over PAD_MIN_SIZE_PX squares) connected to the frame's left or right border."""
    flat = (grey >= PAD_LEVEL).astype(np.uint8)
    flat = cv2.morphologyEx(flat, cv2.MORPH_OPEN, np.ones((PAD_MIN_SIZE_PX, PAD_MIN_SIZE_PX), np.uint8))
    if not flat.any():
        return flat.astype(bool)
    _, labels = cv2.connectedComponents(flat, connectivity=8)
    # The left or right border only: the fabric's edges run along the roll (image y), so a white
    # stripe from the top to the bottom of a frame inside the cloth is a defect, not padding.
    border = np.unique(np.concatenate([labels[:, 0], labels[:, -1]]))
    border = border[border > 0]
    return np.isin(labels, border)


def off_fabric_mask(grey: np.ndarray) -> np.ndarray:
    """True where the frame shows no fabric (machine bed, padding at any grey level, beyond the edges)."""
    height, width = grey.shape
    if shows_no_fabric(grey):
        return np.ones((height, width), bool)
    off = flat_padding(grey)
    contrast = fine_contrast(grey)
    contrast[off] = 0.0
    bins = width // BIN_PX
    if bins < 8:
        return off
    kernel = np.ones(SMOOTH_BINS) / SMOOTH_BINS
    for top in range(0, height, BAND_ROWS):
        band = contrast[top : top + BAND_ROWS, : bins * BIN_PX]
        if top + BAND_ROWS > height and top > 0:  # a short last band: measure it with the rows above
            band = contrast[max(0, height - BAND_ROWS) : height, : bins * BIN_PX]
        profile = band.mean(0).reshape(bins, BIN_PX).mean(1)
        profile = np.convolve(profile, kernel, mode="same")
        left = _cut(profile) * BIN_PX
        right = _cut(profile[::-1]) * BIN_PX
        if left:
            off[top : top + BAND_ROWS, :left] = True
        if right:
            off[top : top + BAND_ROWS, width - right :] = True
    return off


def selvage_zone(off: np.ndarray) -> np.ndarray:
    """Fabric within SELVAGE_PX (across the roll) of the off-fabric area: the selvage and the edge."""
    if not off.any():
        return np.zeros_like(off)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * SELVAGE_PX + 1, 1))
    return cv2.dilate(off.astype(np.uint8), kernel).astype(bool) & ~off
