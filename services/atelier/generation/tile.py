"""Seamless tiles from any fabric photo without a diffusion model: offset and blend (OpenCV, NumPy).

Rolling an image by half its size moves its wrap-around seams to the middle and makes its
edges continuous (they were interior pixels). Cross-fading the rolled image with the original
in a band around the middle (where the original is seamless) hides those seams. Done one axis
at a time, each pass keeps what the previous made seamless: the result wraps seamlessly in both
directions, whatever the photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_BLEND = 0.25


@dataclass(frozen=True)
class TileResult:
    tile: np.ndarray  # uint8, same shape as the input
    seam_error: float  # mean |difference| across the wrap-around edges, 0..255
    seam_error_before: float
    interior_error: (
        float  # mean |difference| of the photo's neighbouring pixels: what a seamless join looks like
    )


def seam_error(image: np.ndarray) -> float:
    """Mean absolute difference between the last and first columns and rows (wrap-around neighbours)."""
    img = image.astype(np.float32)
    horizontal = np.abs(img[:, -1] - img[:, 0]).mean()
    vertical = np.abs(img[-1, :] - img[0, :]).mean()
    return float((horizontal + vertical) / 2.0)


def interior_error(image: np.ndarray) -> float:
    img = image.astype(np.float32)
    horizontal = np.abs(img[:, 1:] - img[:, :-1]).mean()
    vertical = np.abs(img[1:, :] - img[:-1, :]).mean()
    return float((horizontal + vertical) / 2.0)


def _band_weight(length: int, blend: float) -> np.ndarray:
    """1 at the middle line, falling smoothly (smoothstep) to 0 at blend * length from it."""
    half_band = max(1.0, blend * length)
    distance = np.abs(np.arange(length, dtype=np.float32) + 0.5 - length / 2.0)
    t = np.clip(1.0 - distance / half_band, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _blend_axis(image: np.ndarray, axis: int, blend: float) -> np.ndarray:
    length = image.shape[axis]
    rolled = np.roll(image, length // 2, axis=axis)
    weight = _band_weight(length, blend)
    shape = [1] * image.ndim
    shape[axis] = length
    weight = weight.reshape(shape)
    return rolled * (1.0 - weight) + image * weight


def make_tileable(image: np.ndarray, blend: float = DEFAULT_BLEND) -> TileResult:
    """A seamless tile of the same size; ``image`` is HxW or HxWxC uint8, ``blend`` in (0, 0.5]."""
    work = image.astype(np.float32)
    work = _blend_axis(work, axis=1, blend=blend)
    work = _blend_axis(work, axis=0, blend=blend)
    tile = np.clip(np.round(work), 0, 255).astype(np.uint8)
    return TileResult(
        tile=tile,
        seam_error=seam_error(tile),
        seam_error_before=seam_error(image),
        interior_error=interior_error(image),
    )


def encode_png(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return bytes(data.tobytes())
