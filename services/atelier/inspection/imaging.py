"""Decoding and checking the images callers send, and encoding the heat maps we send back."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from atelier.runtime import images

# Documented limits (proto comments and README): greyscale or colour, 8 or 16 bits, with or without
# an alpha channel (converted to 8-bit grey), each side 32..16384 px, at most 16 Mi pixels (a
# 256 x 4096 line-scan strip is 1 MP; a 16k-pixel line camera's 1024-line frame is 16 MP) and 64 MB
# encoded. Checked from the header, before decoding. The pixel limit was 64 Mi: a 64 MP frame of a
# woven pattern, a 935 KB PNG, cost 73 CPU-s and +4.8 GB of peak memory (bench/image_bomb.py
# --part frames; inspection costs ~1.2 CPU-s and ~75 bytes of peak memory per pixel).
MIN_SIDE_PX = 32
MAX_SIDE_PX = 16384
MAX_PIXELS = 16 * 1024 * 1024
MAX_ENCODED_BYTES = 64 * 1024 * 1024
LIMITS = images.ImageLimits(
    max_bytes=MAX_ENCODED_BYTES, max_side_px=MAX_SIDE_PX, max_pixels=MAX_PIXELS, min_side_px=MIN_SIDE_PX
)

ImageError = images.ImageError


@dataclass(frozen=True)
class DecodedImage:
    grey: np.ndarray  # uint8, H x W
    width_px: int
    height_px: int


def decode(data: bytes, budget: images.PixelBudget | None = None) -> DecodedImage:
    """8-bit grey from any accepted image; ``budget`` is the call's pixel budget (CreateProfile)."""
    grey = images.decode(data, LIMITS, "L", budget)
    return DecodedImage(grey, grey.shape[1], grey.shape[0])


def encode_png(pixels: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", pixels)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def heat_map_png(anomaly: np.ndarray, threshold: float) -> bytes:
    """The anomaly map as a colour PNG: 0 blue ... threshold mid ... 2x threshold red."""
    scaled = np.clip(anomaly / (2.0 * max(threshold, 1e-6)), 0.0, 1.0)
    colour = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return encode_png(colour)
