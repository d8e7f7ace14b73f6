"""Decoding and checking the images callers send, and encoding the heat maps we send back."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

# Documented limits (proto comments and README): 8-bit greyscale or RGB, each side 32..16384 px,
# at most 64 megapixels (a 256 x 4096 line-scan strip is 1 MP) and 64 MB encoded.
MIN_SIDE_PX = 32
MAX_SIDE_PX = 16384
MAX_PIXELS = 64 * 1024 * 1024
MAX_ENCODED_BYTES = 64 * 1024 * 1024
ACCEPTED_MODES = {"L": "8-bit greyscale", "RGB": "8-bit RGB (converted to grey)"}


class ImageError(ValueError):
    """The image cannot be used; the message says why and what is accepted."""


@dataclass(frozen=True)
class DecodedImage:
    grey: np.ndarray  # uint8, H x W
    width_px: int
    height_px: int


def decode(data: bytes) -> DecodedImage:
    if not data:
        raise ImageError("no image data")
    if len(data) > MAX_ENCODED_BYTES:
        raise ImageError(f"encoded image is {len(data)} bytes, more than the limit of {MAX_ENCODED_BYTES}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size  # read from the header, before any pixel is decoded
            if width > MAX_SIDE_PX or height > MAX_SIDE_PX or width * height > MAX_PIXELS:
                raise ImageError(
                    f"image is {width} x {height} px, larger than the limit "
                    f"({MAX_SIDE_PX} px a side, {MAX_PIXELS // (1024 * 1024)} megapixels)"
                )
            if width < MIN_SIDE_PX or height < MIN_SIDE_PX:
                raise ImageError(f"image is {width} x {height} px, smaller than {MIN_SIDE_PX} px a side")
            mode = img.mode
            if mode not in ACCEPTED_MODES:
                raise ImageError(
                    f"image mode {mode!r} ({_describe_mode(mode)}) is not accepted: send "
                    + " or ".join(ACCEPTED_MODES.values())
                )
            img.load()  # raises on truncated or corrupt pixel data
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # PIL's own bomb limit (89 MP) is above ours, so anything it refuses is over our limit too.
        raise ImageError(
            f"image is larger than the limit ({MAX_SIDE_PX} px a side, {MAX_PIXELS // (1024 * 1024)} megapixels)"
        ) from None
    except (
        OSError,
        SyntaxError,
        ValueError,
    ) as exc:
        raise ImageError(f"image cannot be decoded (corrupt, truncated or not an image): {exc}") from None
    pixels = np.asarray(img)
    if mode == "RGB":
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    return DecodedImage(np.ascontiguousarray(pixels, dtype=np.uint8), width, height)


def _describe_mode(mode: str) -> str:
    return {
        "1": "1-bit",
        "I;16": "16-bit greyscale",
        "I;16B": "16-bit greyscale",
        "I": "32-bit integer",
        "F": "32-bit float",
        "RGBA": "RGB with alpha",
        "LA": "greyscale with alpha",
        "P": "palette",
        "CMYK": "CMYK",
    }.get(mode, "unsupported bit depth or channels")


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
