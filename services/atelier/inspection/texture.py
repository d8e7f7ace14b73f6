"""The texture model: what a good fabric looks like, and how far a new image is from it.

Method (measured in bench/inspection.py on AITEX fabrics; see services/atelier/inspection/README.md):

1. What is not fabric (machine bed, padding at any grey level beside the edges: fabric.py) is
   found and excluded; the light's slow change across the width is divided out (a line camera's flat
   field, flatten_illumination) and intensities are normalised per image by median and MAD of the
   fabric, so a roll that is lighter, darker or lit unevenly unlike the training images is not a defect.
2. The image is reduced 2x (area average) and described on a regular grid by classic texture
   features: multi-scale local mean, local standard deviation, warp- and weft-direction line
   contrast at two lengths, a Gabor filter bank's energy (4 orientations x 2 wavelengths) and a
   spot contrast pooled over each grid cell (neps). All local statistics use normalised convolution
   so the off-fabric area does not leak into the fabric.
3. A PatchCore-style memory: a random subset of the good images' grid features (standardised);
   a grid cell's anomaly score is its distance to the nearest memory entry. kNN, unlike a
   single Gaussian, also remembers rare normal looks (selvage, the cut edge next to padding).
   A greedy k-center coreset measured no better here and cost minutes of training on 2 cores.
   v6: a second channel, the classic Gabor bank + Mahalanobis detector: one Gaussian of the good cells'
   Gabor energies, its distance scaled to the kNN's level (gaussian_ratio) and fused by the maximum.
   v7: a third channel for dots (neps, fuzzyballs) the reduced grid dilutes: a full-resolution spot
   contrast's robust z-scores against the good cells (spot_grid), scaled likewise and fused by the maximum.
4. The threshold comes from the good images themselves: k-fold (up to 5), each held-out image
   scored against a memory of the others; the threshold is THRESHOLD_FACTOR x the median of those
   out-of-fold image scores (see calibrate for why not the maximum); the selvage zone next to the
   bed or padding is calibrated as its own zone, so are the frame's first and last FRAME_ZONE_PX rows
   (frame_zone: the filters see a reflected image there), and a camera column that the good images
   score high in is scaled down to its neighbours (column_scale). A camera column that appears only
   later (not in the good images) is taken out of each frame before the features (camera_columns).

Pure numpy/OpenCV/torch; no gRPC. Torch runs the nearest-neighbour search (on a GPU when present).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.ndimage import median_filter

from atelier.inspection.fabric import off_fabric_mask, selvage_zone, shows_no_fabric

METHOD = "texture-knn-v7"
# Gabor bank: wavelengths in (reduced) pixels and orientations; energies pooled with GABOR_POOL_SIGMA.
GABOR_WAVELENGTHS_PX = (4.0, 8.0)
GABOR_ORIENTATIONS = 4
GABOR_POOL_SIGMA_PX = 4.0
MEAN_SIGMAS_PX = (2.0, 4.0, 8.0)
STD_SIGMAS_PX = (4.0, 8.0)
# Line-contrast lengths (reduced px): short lines for breaks and slubs, long ones lift faint broken
# picks/ends that are too weak over 31 px (fabric 03's misses in v1; 63 or 127 measured about the same).
LINE_LENGTHS_PX = (31, 95)
# Spots (neps, fuzzyballs: 8-30 image px): a fine mean against its surroundings (reduced px sigmas),
# its minimum and maximum over each grid cell, so a spot between grid points is not diluted by the
# sampling (a 4 px sigma mean sampled 4 px off a spot's centre keeps a third of its contrast).
SPOT_SIGMAS_PX = (1.5, 6.0)
MAX_FOLDS = 5
# Illumination across the width is flattened over this many image pixels (see flatten_illumination):
# wider than the widest warp-direction defect in the shared masks (a 66 px crease), twice over.
ILLUMINATION_WINDOW_PX = 257
# Grid columns (8 px each) a column's score level is compared with (see column_scale).
COLUMN_WINDOW = 17
# Banded feature extraction for large images (see grid_features).
BAND_PIXELS = 4 * 1024 * 1024
BAND_OVERLAP_PX = 256
THRESHOLD_FACTOR = 1.25
# The frame's first and last rows (image px) are their own calibration zone (see frame_zone); chosen
# with THRESHOLD_FACTOR by the benchmark on all four shared fabrics together.
FRAME_ZONE_PX = 32
# Camera columns (see remove_camera_columns): at most CAMERA_COLUMN_MAX_PX wide, standing out of their
# neighbours by CAMERA_BAND_DEVIATION robust spreads with the same sign in every band of CAMERA_BAND_ROWS
# rows, and by CAMERA_COLUMN_DEVIATION over the bands' median.
CAMERA_COLUMN_MAX_PX = 2
CAMERA_BAND_ROWS = 64
CAMERA_BAND_DEVIATION = 2.5
CAMERA_COLUMN_DEVIATION = 5.0
# The Gaussian channel (v6, see gaussian_ratio): Mahalanobis distance of a cell's Gabor energies to one
# Gaussian of the good images' cells, brought to the kNN scale by the ratio of the two channels' median
# out-of-fold image peaks times GAUSS_WEIGHT, and fused with the kNN score by the maximum. The weight was
# chosen on all four shared AITEX fabrics together (0.8, 0.9, 1.0 and no channel measured; see the README).
GAUSS_WEIGHT = 0.9
# The spot channel (v7, see spot_grid): a cell's darkest and brightest full-resolution spot contrast
# (Gaussian of SPOT_SIGMAS_FULL_PX[0] image px against one of [1]) as robust z-scores against the good
# cells (median and MAD per article), brought to the kNN scale like the Gaussian channel times SPOT_WEIGHT
# and fused by the maximum. Weight and sigmas chosen on all four shared AITEX fabrics together by the
# benchmark's objective (weights 0.8-3.0, then 1.9-2.3 in steps of 0.1; sigmas 1/4, 1.5/6, 2/8 px; see the
# README). 2.0-2.3 put the same defect strips' top regions on the mask; 2.1 has the best mean AUROC of them.
SPOT_SIGMAS_FULL_PX = (2.0, 8.0)
SPOT_WEIGHT = 2.1
SPOT_CELL_PX = 8


class MethodMismatch(ValueError):
    """A stored profile from another version of the method (its features differ)."""


@dataclass(frozen=True)
class ModelParams:
    """Settings fixed when a profile is trained (stored with it)."""

    downsample: int = 2  # image reduction before features
    stride_px: int = 4  # grid step, in reduced pixels (8 image pixels at downsample 2)
    margin_px: int = 32  # image pixels next to the off-fabric area (and the frame sides) not scored
    memory_size: int = 4096  # memory entries (random subset of the candidates)
    candidates_per_image: int = 4000  # grid features sampled per image before the coreset
    seed: int = 0


def _gabor_bank() -> list[np.ndarray]:
    kernels = []
    for wavelength in GABOR_WAVELENGTHS_PX:
        for i in range(GABOR_ORIENTATIONS):
            theta = i * math.pi / GABOR_ORIENTATIONS
            size = int(2 * wavelength) + 1
            k = cv2.getGaborKernel((size, size), 0.56 * wavelength, theta, wavelength, 0.5, 0)
            k -= k.mean()  # zero DC: flat brightness changes belong to the mean features
            k /= np.abs(k).sum()
            kernels.append(k.astype(np.float32))
    return kernels


_BANK = _gabor_bank()
FEATURE_COUNT = len(MEAN_SIGMAS_PX) + len(STD_SIGMAS_PX) + 2 * len(LINE_LENGTHS_PX) + len(_BANK) + 2
# The Gabor energies' place in the feature vector (see _band_features): the Gaussian channel's features.
GABOR_FEATURES = slice(FEATURE_COUNT - 2 - len(_BANK), FEATURE_COUNT - 2)


def padding_mask(grey: np.ndarray) -> np.ndarray:
    """True where the frame shows no fabric: machine bed, padding (see fabric.off_fabric_mask)."""
    return off_fabric_mask(grey)


def frame_zone(shape: tuple[int, int], rows_px: int) -> np.ndarray:
    """The frame's first and last `rows_px` rows (along the roll): there the filters (up to 95 px
    long along the warp, Gaussians up to 16 px sigma) see the frame's border reflected, not cloth. In
    the good AITEX strips most out-of-fold maxima lay in these rows (31 of 40 in the first or last grid row, 35 within 32 px),
    so before v5 they set the threshold; as a zone with its own statistics (calibrate) they no longer do."""
    zone = np.zeros(shape, bool)
    # Only where the body (the rows between) is at least half the frame: a short frame is all border,
    # with no body to calibrate the zone against (then it is one zone, as before v5).
    if rows_px > 0 and shape[0] >= 4 * rows_px:
        zone[:rows_px] = True
        zone[-rows_px:] = True
    return zone


def scored_mask(pad: np.ndarray, margin_px: int) -> np.ndarray:
    """Fabric pixels far enough from the off-fabric area, and from the frame's left and right borders
    (where filters see a reflected image), for their features to see only fabric."""
    if margin_px <= 0:
        return ~pad
    ok = ~pad
    if pad.any():
        kernel = np.ones((2 * margin_px + 1, 2 * margin_px + 1), np.uint8)
        ok = cv2.erode(ok.astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
    ok[:, :margin_px] = False
    ok[:, -margin_px:] = False
    return ok


def flatten_illumination(x: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """`x` with the slow brightness change across the width divided out (a line camera's flat field).

    A line camera's light and lens gain vary across the width and from roll to roll (AITEX 01's
    defect strips rise from 117 to 149 grey towards the right border, its good strips are flat at 109):
    without this the brighter side is the strip's most anomalous area. The gain per column is the
    fabric's column mean, smoothed by a running median ILLUMINATION_WINDOW_PX wide, so anything
    narrower than half the window (a warp line, a crease, a camera column) is not flattened; a defect
    across the whole width shifts every column alike and stays. Columns that are mostly off-fabric take
    the nearest fabric column's gain.
    """
    height, width = x.shape
    fabric = ~pad
    counts = fabric.sum(axis=0)
    ok = counts >= max(1, height // 2)
    if ok.sum() < 2 or width < 3:
        return x
    means = np.where(fabric, x, 0.0).sum(axis=0) / np.maximum(counts, 1)
    columns = np.arange(width)
    profile = np.interp(columns, columns[ok], means[ok])
    profile = median_filter(profile, size=min(ILLUMINATION_WINDOW_PX, width | 1), mode="nearest")
    level = float(np.median(profile[ok]))
    if level <= 0:
        return x
    gain = (level / np.maximum(profile, 1.0)).astype(np.float32)
    return x * gain[None, :]


def camera_columns(x: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """Per image column, the fixed offset of a camera column (0 elsewhere): a line camera's fixed-pattern noise.

    A line camera's pixel with its own gain or offset draws a column, 1-2 px wide, exactly vertical,
    with the same offset along the whole frame (AITEX 02's good strips 10-19: about +17 grey on image
    columns 2163-2164, absent from strips 0-9, so a profile learned on those could not know it and 8 of
    its 10 good test strips peaked there; AITEX 01: columns 2004-2005 in every strip). A yarn is wider
    (AITEX warp-line masks: 3-7 px per row) and wanders across columns along the roll (by 6-60 px over
    a 256-row strip). So a column is a camera column only when, in every band of CAMERA_BAND_ROWS rows,
    its mean stands out of the running median of CAMERA_COLUMN_MAX_PX neighbours each side by at least
    CAMERA_BAND_DEVIATION robust spreads (of all columns' offsets in that band) with the same sign, and
    the median over the bands by CAMERA_COLUMN_DEVIATION. A straight line at most 2 px wide along a
    whole frame is therefore taken for the camera (in one frame the two cannot be told apart).
    """
    height, width = x.shape
    bands = height // CAMERA_BAND_ROWS
    offset = np.zeros(width, np.float32)
    if bands < 2 or width < 8 * CAMERA_COLUMN_MAX_PX:
        return offset
    rows = bands * CAMERA_BAND_ROWS
    fabric = (~pad[:rows]).reshape(bands, CAMERA_BAND_ROWS, width)
    counts = fabric.sum(axis=1)
    seen = (counts == CAMERA_BAND_ROWS).all(axis=0)  # fabric in every row
    if seen.sum() < 8 * CAMERA_COLUMN_MAX_PX:
        return offset
    means = np.where(fabric, x[:rows].reshape(bands, CAMERA_BAND_ROWS, width), 0.0).sum(axis=1)
    means = means / np.maximum(counts, 1)
    residual = means - median_filter(means, size=(1, 2 * CAMERA_COLUMN_MAX_PX + 1), mode="nearest")
    spread = 1.4826 * np.median(np.abs(residual[:, seen]), axis=1, keepdims=True) + 1e-6
    z = residual / spread
    column = seen & (
        ((z > CAMERA_BAND_DEVIATION).all(axis=0) & (np.median(z, axis=0) > CAMERA_COLUMN_DEVIATION))
        | ((z < -CAMERA_BAND_DEVIATION).all(axis=0) & (np.median(z, axis=0) < -CAMERA_COLUMN_DEVIATION))
    )
    offset[column] = np.median(residual[:, column], axis=0)
    return offset


def _normalise(grey: np.ndarray, pad: np.ndarray) -> np.ndarray:
    x = flatten_illumination(grey.astype(np.float32), pad)
    x = x - camera_columns(x, pad)[None, :]
    values = x[~pad] if (~pad).any() else x.ravel()
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median))) + 1e-3
    x = (x - median) / spread
    x[pad] = 0.0
    return x


def _nblur(x: np.ndarray, w: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x * w, (0, 0), sigma) / np.maximum(cv2.GaussianBlur(w, (0, 0), sigma), 1e-3)


def _nbox(x: np.ndarray, w: np.ndarray, kx: int, ky: int) -> np.ndarray:
    num = cv2.boxFilter(x * w, -1, (kx, ky), normalize=True)
    return num / np.maximum(cv2.boxFilter(w, -1, (kx, ky), normalize=True), 1e-3)


def grid_features(grey: np.ndarray, params: ModelParams) -> tuple[np.ndarray, np.ndarray]:
    """(features H' x W' x F on the grid, padding mask at image resolution).

    Large images are described in bands of rows (along the roll) of about BAND_PIXELS each, with
    BAND_OVERLAP_PX of context above and below, so the float feature maps of one band bound the
    memory; the overlap is wider than any filter's reach, so banded and whole-image features match.
    """
    feats, _, pad = _grid_features_and_spots(grey, params, spots=False)
    return feats, pad


def _grid_features_and_spots(
    grey: np.ndarray, params: ModelParams, spots: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, spot features (see spot_grid; empty when not asked for), padding mask)."""
    pad = padding_mask(grey)
    x = _normalise(grey, pad)  # one median and MAD for the whole image, not per band
    feats = _banded_features(x, pad, params)
    spot = spot_grid(x, pad, feats.shape[:2]) if spots else np.zeros((0, 0, 2), np.float32)
    return feats, spot, pad


def spot_grid(x: np.ndarray, pad: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
    """Per grid cell, the darkest and the brightest full-resolution spot contrast in its 8 x 8 px block.

    Neps and fuzzyballs (AITEX 019/030: 3-9 px masks) are dots in a weave whose period is about as
    fine; after the 2x reduction the kNN's spot features see them diluted by the 18 other features. A
    Gaussian of 2 px against one of 8 px at full resolution damps a 6-8 px weave (to about a fifth) and
    keeps most of a 5 px dot; the cell's minimum and maximum keep a dot between grid points.
    """
    w = (~pad).astype(np.float32)
    spot = _nblur(x, w, SPOT_SIGMAS_FULL_PX[0]) - _nblur(x, w, SPOT_SIGMAS_FULL_PX[1])
    c = SPOT_CELL_PX
    rows, cols = max(grid_shape[0], -(-x.shape[0] // c)), max(grid_shape[1], -(-x.shape[1] // c))
    spot = np.pad(spot, ((0, rows * c - x.shape[0]), (0, cols * c - x.shape[1])), mode="edge")
    blocks = spot.reshape(rows, c, cols, c)
    out = np.stack([blocks.min(axis=(1, 3)), blocks.max(axis=(1, 3))], axis=-1)
    return np.ascontiguousarray(out[: grid_shape[0], : grid_shape[1]]).astype(np.float32)


def _banded_features(x: np.ndarray, pad: np.ndarray, params: ModelParams) -> np.ndarray:
    step = params.downsample * params.stride_px
    height, width = x.shape
    band = max(step, (BAND_PIXELS // max(width, 1)) // step * step)
    if height <= band + 2 * BAND_OVERLAP_PX:
        return _band_features(x, pad, params)
    parts = []
    for core_start in range(0, height, band):
        core_end = min(height, core_start + band)
        start, end = max(0, core_start - BAND_OVERLAP_PX), min(height, core_end + BAND_OVERLAP_PX)
        feats = _band_features(x[start:end], pad[start:end], params)
        first = (core_start - start) // step  # start and core_start are multiples of step
        parts.append(feats[first : first + (core_end - core_start + step - 1) // step])
    return np.concatenate(parts, axis=0)


def _band_features(x: np.ndarray, pad: np.ndarray, params: ModelParams) -> np.ndarray:
    d = params.downsample
    if d > 1:
        # Crop to whole d x d blocks so the area reduction is an exact block average.
        x = x[: x.shape[0] // d * d, : x.shape[1] // d * d]
        size = (max(1, x.shape[1] // d), max(1, x.shape[0] // d))
        x = cv2.resize(x, size, interpolation=cv2.INTER_AREA)
        small_pad = pad[: size[1] * d : d, : size[0] * d : d]  # as INTER_NEAREST picks
    else:
        small_pad = pad
    w = (~small_pad).astype(np.float32)
    maps: list[np.ndarray] = [_nblur(x, w, s) for s in MEAN_SIGMAS_PX]
    for s in STD_SIGMAS_PX:
        mean, sq = _nblur(x, w, s), _nblur(x * x, w, s)
        maps.append(np.sqrt(np.maximum(sq - mean * mean, 0.0)))
    # Line contrast: a short line's mean against its square neighbourhood. Broken ends and picks
    # are thin lines along one weave direction; averaging along them lifts them out of the noise.
    for length in LINE_LENGTHS_PX:
        square = _nbox(x, w, length, length)
        maps.append(_nbox(x, w, length, 3) - square)
        maps.append(_nbox(x, w, 3, length) - square)
    for kernel in _BANK:
        maps.append(_nblur(np.abs(cv2.filter2D(x, -1, kernel)), w, GABOR_POOL_SIGMA_PX))
    s = params.stride_px
    spot = _nblur(x, w, SPOT_SIGMAS_PX[0]) - _nblur(x, w, SPOT_SIGMAS_PX[1])
    cell = np.ones((s, s), np.uint8)
    # Pooled over the s x s cell each grid point (at s // 2) stands for.
    maps.append(cv2.erode(spot, cell, anchor=(s // 2, s // 2)))  # darkest
    maps.append(cv2.dilate(spot, cell, anchor=(s // 2, s // 2)))  # brightest
    return np.stack([m[s // 2 :: s, s // 2 :: s] for m in maps], axis=-1)


def _grid_fabric(pad: np.ndarray, params: ModelParams, grid_shape: tuple[int, int]) -> np.ndarray:
    """Grid cells on fabric (margin 0): the cells the kNN memory is sampled from and that are scored."""
    return _grid_scored(pad, params, grid_shape, margin_px=0)


def _grid_scored(
    pad: np.ndarray, params: ModelParams, grid_shape: tuple[int, int], margin_px: int | None = None
) -> np.ndarray:
    """Grid cells far enough from the off-fabric area (params.margin_px unless margin_px is given)."""
    ok = scored_mask(pad, params.margin_px if margin_px is None else margin_px)
    step = params.downsample * params.stride_px
    ok = ok[step // 2 :: step, step // 2 :: step]
    return ok[: grid_shape[0], : grid_shape[1]]


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class TextureModel:
    """A trained profile: feature scaling, memory bank, threshold."""

    params: ModelParams
    mean: np.ndarray
    scale: np.ndarray
    memory: np.ndarray  # (M, F) standardised features
    threshold: float
    image_count: int
    # Scores in the selvage zone are multiplied by this (<= 1): the zone's own statistics (see calibrate).
    selvage_scale: float = 1.0
    # Grid scores are multiplied by this per grid column (<= 1; empty: none), see column_scale.
    column_scale: np.ndarray = field(default_factory=lambda: np.ones(0, np.float32))
    # Scores in the frame zone (first and last frame_zone_px rows) are multiplied by this (<= 1).
    frame_scale: float = 1.0
    frame_zone_px: int = 0
    # The Gaussian channel (see gaussian_ratio): mean and precision of the good cells' Gabor energies,
    # and the factor its distances are multiplied by before the maximum with the kNN score (0: no channel).
    gauss_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gauss_precision: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    gauss_ratio: float = 0.0
    # The spot channel (see spot_grid, spot_scores): median and MAD of the good cells' darkest and
    # brightest spot contrast, and the factor before the maximum (0: no channel).
    spot_median: np.ndarray = field(default_factory=lambda: np.zeros(0))
    spot_spread: np.ndarray = field(default_factory=lambda: np.zeros(0))
    spot_ratio: float = 0.0
    _memory_t: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def _memory_tensor(self) -> torch.Tensor:
        if self._memory_t is None:
            self._memory_t = torch.from_numpy(self.memory).to(_device())
        return self._memory_t

    def grid_scores(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(anomaly score on the grid: kNN distance fused with the Gaussian channel, padding mask);
        unscored grid cells are 0."""
        knn, gauss, spot, pad = self.grid_channels(grey)
        return fuse(knn, gauss, self.gauss_ratio, spot, self.spot_ratio), pad

    def grid_channels(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(distance to memory, Mahalanobis distance of the Gabor energies, spot z-score (each 0 without
        its channel), padding mask) on the grid; off-fabric grid cells are 0.

        Every fabric cell is scored, also those within the margin: the margin is applied to the
        per-pixel map (full_map), after the blur and up-sampling, as the benchmark measured it (v7;
        before, cells in the margin were 0 on the grid and pulled the map next to them down)."""
        feats, spots, pad = _grid_features_and_spots(grey, self.params, spots=len(self.spot_median) > 0)
        h, w = feats.shape[:2]
        scored = _grid_fabric(pad, self.params, (h, w))
        scores = np.zeros((h, w), np.float32)
        gauss = np.zeros((h, w), np.float32)
        spot = np.zeros((h, w), np.float32)
        if not scored.any():
            return scores, gauss, spot, pad
        if len(self.spot_median):
            spot[scored] = spot_scores(spots[scored], self.spot_median, self.spot_spread)
        if len(self.gauss_mean):
            gauss[scored] = mahalanobis(
                feats[scored][:, GABOR_FEATURES], self.gauss_mean, self.gauss_precision
            )
        # Only scored cells are searched: the bed and padding (a quarter of some AITEX strips) cost nothing.
        q = torch.from_numpy(((feats[scored] - self.mean) / self.scale).astype(np.float32))
        memory = self._memory_tensor()
        q = q.to(memory.device)
        m_norm = (memory * memory).sum(1)
        out = []
        # |q - m|^2 = |q|^2 + (|m|^2 - 2 q.m): the bracket is one fused matmul-add whose minimum over m
        # is taken before |q|^2 is added. Chunks of 512 queries keep the distance block (512 x 4096
        # floats, 8 MB) near the cache: on a CPU memory bandwidth, not arithmetic, bounds this step.
        # 14,000 queries x 4,096 entries, 2 threads, idle machine: 0.26-0.31 CPU-s in 2048-query
        # chunks, 0.11-0.14 in 512 (and 1024); 2048 was itself 2-3x faster than 8192. Same distances.
        for chunk in torch.split(q, 512):
            partial = torch.addmm(m_norm, chunk, memory.T, beta=1.0, alpha=-2.0).min(dim=1).values
            out.append((partial + (chunk * chunk).sum(1)).clamp_min(0).sqrt())
        scores[scored] = torch.cat(out).cpu().numpy()
        return scores, gauss, spot, pad

    def score(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(anomaly score per image pixel, off-fabric mask): float32 map the image's size, 0 off-fabric."""
        if shows_no_fabric(grey):  # nothing to describe: skip the features and the kNN (all 0)
            return np.zeros(grey.shape, np.float32), np.ones(grey.shape, bool)
        scores, off = self.grid_scores(grey)
        if len(self.column_scale) == scores.shape[1]:  # a frame as wide as the good ones
            scores *= self.column_scale[None, :]
        full = full_map(scores, off, self.params.margin_px)
        if self.selvage_scale < 1.0:
            full[selvage_zone(off)] *= self.selvage_scale
        if self.frame_scale < 1.0:
            full[frame_zone(full.shape, self.frame_zone_px)] *= self.frame_scale
        return full, off

    def anomaly_map(self, grey: np.ndarray) -> np.ndarray:
        """Anomaly score per image pixel (float32, same size as the image; 0 off-fabric)."""
        return self.score(grey)[0]

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        p = self.params
        np.savez_compressed(
            buf,
            mean=self.mean,
            scale=self.scale,
            memory=self.memory,
            meta=np.array(
                [
                    self.threshold,
                    self.image_count,
                    p.downsample,
                    p.stride_px,
                    p.margin_px,
                    p.memory_size,
                    p.candidates_per_image,
                    p.seed,
                    self.selvage_scale,
                    self.frame_scale,
                    self.frame_zone_px,
                    self.gauss_ratio,
                    self.spot_ratio,
                ],
                dtype=np.float64,
            ),
            method=np.array(METHOD),
            column_scale=self.column_scale,
            gauss_mean=self.gauss_mean,
            gauss_precision=self.gauss_precision,
            spot_median=self.spot_median,
            spot_spread=self.spot_spread,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TextureModel:
        with np.load(io.BytesIO(data)) as z:
            if str(z["method"]) != METHOD:
                raise MethodMismatch(
                    f"the profile was trained with {z['method']}, this service runs {METHOD}: "
                    "train it again with CreateProfile"
                )
            meta = z["meta"]
            params = ModelParams(*(int(v) for v in meta[2:8]))
            return cls(
                params,
                z["mean"],
                z["scale"],
                z["memory"],
                float(meta[0]),
                int(meta[1]),
                float(meta[8]),
                z["column_scale"].astype(np.float32),
                float(meta[9]),
                int(meta[10]),
                z["gauss_mean"],
                z["gauss_precision"],
                float(meta[11]),
                z["spot_median"],
                z["spot_spread"],
                float(meta[12]),
            )

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)  # atomic: a reader sees the old file or the whole new one

    @classmethod
    def load(cls, path: Path) -> TextureModel:
        return cls.from_bytes(path.read_bytes())


def mahalanobis(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Mahalanobis distance of each row of `x` (N x D) to a Gaussian (mean, inverse covariance)."""
    d = x.astype(np.float64) - mean
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, precision, d), 0.0)).astype(np.float32)


def fit_gaussian(samples: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(mean, precision) of the good cells' Gabor energies: one Gaussian for every position (the cloth
    repeats), covariance shrunk by 0.1 % of its mean variance so a flat fabric stays invertible."""
    x = np.concatenate(samples)[:, GABOR_FEATURES].astype(np.float64)
    cov = np.cov(x, rowvar=False)
    cov += 1e-3 * float(np.trace(cov)) / len(cov) * np.eye(len(cov))
    return x.mean(0), np.linalg.inv(cov)


def fit_spots(samples: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(median, robust spread) of the good cells' darkest and brightest spot contrast (spot_grid)."""
    x = np.concatenate(samples).astype(np.float64)
    median = np.median(x, axis=0)
    return median, 1.4826 * np.median(np.abs(x - median), axis=0) + 1e-6


def spot_scores(spots: np.ndarray, median: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """How many robust spreads a cell's darkest spot is darker, or its brightest brighter, than the good
    cells' (the higher of the two)."""
    z = (spots - median) / spread
    return np.maximum(-z[:, 0], z[:, 1]).astype(np.float32)


def fuse(
    knn: np.ndarray, gauss: np.ndarray, ratio: float, spot: np.ndarray | None = None, spot_ratio: float = 0.0
) -> np.ndarray:
    """The anomaly score on the grid: the kNN distance or a scaled channel (Gaussian, spots), the highest."""
    out = knn if ratio <= 0 else np.maximum(knn, ratio * gauss).astype(np.float32)
    if spot is not None and spot_ratio > 0:
        out = np.maximum(out, spot_ratio * spot).astype(np.float32)
    return out


def gaussian_ratio(
    channels: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    params: ModelParams,
    weight: float = GAUSS_WEIGHT,
) -> float:
    """The factor that brings the Gaussian channel to the kNN scale (v6).

    The classic Gabor bank + Mahalanobis detector (the data README's reference) finds what a kNN over
    all features dilutes on some cloths (AITEX 02: 0.974 image AUROC against the kNN's 0.87), while the
    kNN remembers rare normal looks a single Gaussian cannot. Each channel's typical good level is the
    median over the good images of its out-of-fold peak (cells scored with `params`' margin); the Gaussian
    channel is multiplied by GAUSS_WEIGHT x kNN level / its level, so a good image peaks alike in both
    and the maximum keeps whichever channel sees a defect more clearly.
    channels: out-of-fold (kNN grid, Gaussian grid, off-fabric mask) of the good images.
    """
    knn_peaks, gauss_peaks = [], []
    for knn, gauss, off in channels:
        ok = _grid_scored(off, params, knn.shape) & (knn > 0)
        if ok.any():
            knn_peaks.append(float(knn[ok].max()))
            gauss_peaks.append(float(gauss[ok].max()))
    if not knn_peaks or float(np.median(gauss_peaks)) <= 0:
        return 0.0
    return weight * float(np.median(knn_peaks)) / float(np.median(gauss_peaks))


def full_map(grid: np.ndarray, off: np.ndarray, margin_px: int) -> np.ndarray:
    """Grid scores -> per-pixel map: light blur, bilinear up-sampling, 0 where not scored."""
    height, width = off.shape
    full = cv2.resize(cv2.GaussianBlur(grid, (0, 0), 1.0), (width, height), interpolation=cv2.INTER_LINEAR)
    full[~scored_mask(off, margin_px)] = 0.0
    return full


def column_scale(grids: list[np.ndarray]) -> np.ndarray:
    """Per grid column, a factor (<= 1) that brings a column the good images score high in (a camera
    column with its own gain or noise: AITEX 01 at x = 2004, 03 at x = 2164) down to its neighbours.

    grids: out-of-fold grid scores of the good images, 0 where not scored (all the same width).
    A column's level is the median over the images of its peak; its neighbours' level the running
    median of those over COLUMN_WINDOW columns, so only narrow outliers are scaled, never a broad area.
    A profile is learned per camera set-up; a frame of another width is scored without the scale.
    """
    if not grids:
        return np.ones(0, np.float32)
    peaks = np.stack([np.where(g > 0, g, -np.inf).max(axis=0) for g in grids])
    peaks[~np.isfinite(peaks)] = np.nan
    seen = ~np.isnan(peaks).all(axis=0)
    if not seen.any():
        return np.ones(peaks.shape[1], np.float32)
    level = np.full(peaks.shape[1], np.nan)
    level[seen] = np.nanmedian(peaks[:, seen], axis=0)
    level[~seen] = float(np.median(level[seen]))
    neighbours = median_filter(level, size=COLUMN_WINDOW, mode="nearest")
    return np.minimum(1.0, neighbours / np.maximum(level, 1e-6)).astype(np.float32)


def calibrate(
    good_maps: list[tuple[np.ndarray, np.ndarray]], factor: float, frame_px: int = 0
) -> tuple[float, float, float]:
    """(threshold, selvage scale, frame scale) from out-of-fold maps of good images and their
    off-fabric masks.

    Two zones have their own statistics: the selvage (next to the bed or padding) and the frame's
    first and last `frame_px` rows (frame_zone). Each zone's out-of-fold maxima are compared with the
    interior's, and when they run higher (a cloth whose edge varies more than its body, as AITEX 03
    and 04; the reflected frame border on every AITEX fabric) the zone's scores are scaled down by the
    ratio of the medians, so one threshold fits all and neither the edge nor the frame border can hide
    a defect in the body. The frame zone is measured after the selvage scale (their corners overlap).
    The threshold is `factor` x the median out-of-fold image maximum after that scaling (the median,
    not the maximum: one odd good image, a splice or fold, would otherwise set the limit for the
    article; a threshold from the peaks' spread, median + k x standard deviation or MAD, or from their
    maximum, measured no better on the four shared AITEX fabrics: see the inspection README).
    """
    interior, zone, frame = [], [], []
    for amap, off in good_maps:
        z = selvage_zone(off)
        f = frame_zone(off.shape, frame_px)
        inner = ~z & ~f
        interior.append(float(amap[inner].max()) if inner.any() else 0.0)
        zone.append(float(amap[z & ~f].max()) if (z & ~f).any() else 0.0)
    zoned = [v for v in zone if v > 0]
    scale = 1.0
    if zoned and float(np.median(interior)) > 0:
        scale = min(1.0, float(np.median(interior)) / max(float(np.median(zoned)), 1e-6))
    for amap, off in good_maps:
        f = frame_zone(off.shape, frame_px)
        if f.any():
            edge = np.where(selvage_zone(off), amap * scale, amap)
            frame.append(float(edge[f].max()))
        else:
            frame.append(0.0)
    framed = [v for v in frame if v > 0]
    frame_scale = 1.0
    if framed and float(np.median(interior)) > 0:
        frame_scale = min(1.0, float(np.median(interior)) / max(float(np.median(framed)), 1e-6))
    peaks = [max(i, z * scale, f * frame_scale) for i, z, f in zip(interior, zone, frame, strict=True)]
    return factor * float(np.median(peaks)), scale, frame_scale


def _sample_features(grey: np.ndarray, params: ModelParams, rng: np.random.Generator) -> np.ndarray:
    """Up to candidates_per_image grid features of the cells params.margin_px scores."""
    return _sample_rows(*grid_features(grey, params), params, rng)


def _sample_rows(
    feats: np.ndarray,
    pad: np.ndarray,
    params: ModelParams,
    rng: np.random.Generator,
    margin_px: int | None = None,
) -> np.ndarray:
    ok = _grid_scored(pad, params, feats.shape[:2], margin_px)
    rows = feats[ok]
    if len(rows) > params.candidates_per_image:
        rows = rows[rng.choice(len(rows), params.candidates_per_image, replace=False)]
    return rows


def _build(
    samples: list[np.ndarray],
    params: ModelParams,
    threshold: float,
    image_count: int,
    gauss_samples: list[np.ndarray] | None = None,
    spot_samples: list[np.ndarray] | None = None,
) -> TextureModel:
    """A model from sampled good features; the Gaussian channel from `gauss_samples` when given (train
    samples the memory from every fabric cell, as the benchmark does, but fits the Gaussian, whose mean
    and covariance the cells next to the bed would shift, on the cells the margin scores); the spot
    channel from `spot_samples` (spot_grid rows of the cells the margin scores) when given."""
    stacked = np.concatenate(samples).astype(np.float64)
    mean = stacked.mean(0)
    scale = stacked.std(0) + 1e-6
    standard = ((stacked - mean) / scale).astype(np.float32)
    if len(standard) > params.memory_size:
        rng = np.random.default_rng(params.seed)
        standard = standard[rng.choice(len(standard), params.memory_size, replace=False)]
    model = TextureModel(params, mean, scale, np.ascontiguousarray(standard), threshold, image_count)
    model.gauss_mean, model.gauss_precision = fit_gaussian(gauss_samples or samples)
    if spot_samples:
        model.spot_median, model.spot_spread = fit_spots(spot_samples)
    return model


def _spot_rows(spots: np.ndarray, pad: np.ndarray, params: ModelParams) -> np.ndarray:
    """The spot features of every cell the margin scores (a median needs no subsample: 2 floats a cell)."""
    return spots[_grid_scored(pad, params, spots.shape[:2])]


def fused_grids(
    channels: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], params: ModelParams
) -> tuple[list[tuple[np.ndarray, np.ndarray]], float, float]:
    """(fused grid and off-fabric mask per good image, Gaussian ratio, spot ratio) from out-of-fold channels."""
    gauss_ratio = gaussian_ratio([(k, g, off) for k, g, _, off in channels], params)
    spot_ratio = gaussian_ratio([(k, sp, off) for k, _, sp, off in channels], params, SPOT_WEIGHT)
    grids = [(fuse(k, g, gauss_ratio, sp, spot_ratio), off) for k, g, sp, off in channels]
    return grids, gauss_ratio, spot_ratio


def train(
    images: list[np.ndarray], params: ModelParams | None = None, check: Callable[[], None] | None = None
) -> TextureModel:
    """Learns a profile from defect-free greyscale images (at least 2).

    check: called between images and folds; what it raises (the caller's cancellation) stops training.
    """
    params = params or ModelParams()
    check = check or (lambda: None)
    if len(images) < 2:
        raise ValueError("at least 2 good images are needed (one half calibrates the other)")
    # The memory is sampled from every fabric cell (the cells next to the bed are scored too, see
    # grid_channels), the Gaussian from the cells the margin scores; two generators, as the benchmark.
    rng, gauss_rng = np.random.default_rng(params.seed), np.random.default_rng(params.seed)
    samples, gauss_samples, spot_samples = [], [], []
    for img in images:
        check()
        feats, spots, pad = _grid_features_and_spots(img, params)
        samples.append(_sample_rows(feats, pad, params, rng, margin_px=0))
        gauss_samples.append(_sample_rows(feats, pad, params, gauss_rng))
        spot_samples.append(_spot_rows(spots, pad, params))
    if sum(len(s) for s in samples) == 0 or sum(len(g) for g in gauss_samples) == 0:
        raise ValueError("the good images contain no fabric (all padding)")
    channels = out_of_fold_channels(images, samples, params, check, gauss_samples, spot_samples)
    grids, ratio, spot_ratio = fused_grids(channels, params)
    widths = {grid.shape[1] for grid, _ in grids}
    margin_grids = [np.where(_grid_scored(off, params, grid.shape), grid, 0.0) for grid, off in grids]
    columns = column_scale(margin_grids) if len(widths) == 1 else np.ones(0, np.float32)
    good_maps = [
        (full_map(grid * columns[None, :] if len(columns) else grid, off, params.margin_px), off)
        for grid, off in grids
    ]
    threshold, selvage_scale, frame_scale = calibrate(good_maps, THRESHOLD_FACTOR, FRAME_ZONE_PX)
    model = _build(
        [s for s in samples if len(s)],
        params,
        threshold,
        len(images),
        [g for g in gauss_samples if len(g)],
        [sp for sp in spot_samples if len(sp)],
    )
    model.selvage_scale = selvage_scale
    model.frame_scale = frame_scale
    model.frame_zone_px = FRAME_ZONE_PX
    model.column_scale = columns
    model.gauss_ratio = ratio
    model.spot_ratio = spot_ratio
    return model


def out_of_fold_channels(
    images: list[np.ndarray],
    samples: list[np.ndarray],
    params: ModelParams,
    check: Callable[[], None] | None = None,
    gauss_samples: list[np.ndarray] | None = None,
    spot_samples: list[np.ndarray] | None = None,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Each good image's (kNN grid, Gaussian grid, spot grid, off-fabric mask) against a memory, a
    Gaussian and spot statistics of the other folds' images (up to MAX_FOLDS folds), in the images'
    order. check: as in train; gauss_samples, spot_samples: as in _build (per image, like samples)."""
    check = check or (lambda: None)
    fold_count = min(len(images), MAX_FOLDS)
    maps: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for k in range(fold_count):
        held_out = set(range(k, len(images), fold_count))
        kept = [samples[i] for i in range(len(images)) if i not in held_out and len(samples[i])]
        if not kept:
            continue
        check()
        kept_gauss = kept_spots = None
        if gauss_samples is not None:
            kept_gauss = [g for i, g in enumerate(gauss_samples) if i not in held_out and len(g)]
        if spot_samples is not None:
            kept_spots = [sp for i, sp in enumerate(spot_samples) if i not in held_out and len(sp)]
        fold_model = _build(kept, params, 0.0, len(kept), kept_gauss, kept_spots)
        for i in sorted(held_out):
            check()
            maps[i] = fold_model.grid_channels(images[i])
    return [maps[i] for i in sorted(maps)]
