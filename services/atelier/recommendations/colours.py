"""Dominant colours of a product photo, named from a standard vocabulary (OpenCV + numpy).

1. Background removal: product photos are shot on a plain backdrop, so the backdrop colour is
   estimated from the image border; pixels close to it (CIELAB distance) seed GrabCut as
   probable background, the rest as probable foreground, and GrabCut refines the cut.
2. k-means (cv2.kmeans) in CIELAB on the garment's pixels, so clusters follow perceived colour.
3. Each cluster centre is named by the nearest vocabulary colour (CIEDE2000 would be finer;
   Euclidean Lab distance, CIE76, is enough to tell "navy" from "blue").

The vocabulary is the CSS Color Module Level 4 named colours that fashion retail uses (sRGB
values from the W3C specification; "light blue", "royal blue", "hot pink" and "lime" are CSS
lightblue, royalblue, hotpink and limegreen), plus three fashion names CSS lacks: charcoal
(#36454f), burgundy (#800020) and cream (#fffdd0).
"""

from __future__ import annotations

import cv2
import numpy as np

from atelier.recommendations.store import DominantColour
from atelier.runtime import images

# name -> sRGB, CSS Color Module Level 4 (https://www.w3.org/TR/css-color-4/#named-colors) + 3 fashion names.
VOCABULARY: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "grey": (128, 128, 128),
    "silver": (192, 192, 192),
    "charcoal": (54, 69, 79),
    "navy": (0, 0, 128),
    "blue": (0, 0, 255),
    "royal blue": (65, 105, 225),
    "light blue": (173, 216, 230),
    "teal": (0, 128, 128),
    "turquoise": (64, 224, 208),
    "green": (0, 128, 0),
    "olive": (128, 128, 0),
    "khaki": (240, 230, 140),
    "lime": (50, 205, 50),
    "yellow": (255, 255, 0),
    "gold": (255, 215, 0),
    "orange": (255, 165, 0),
    "coral": (255, 127, 80),
    "red": (255, 0, 0),
    "burgundy": (128, 0, 32),
    "maroon": (128, 0, 0),
    "pink": (255, 192, 203),
    "hot pink": (255, 105, 180),
    "purple": (128, 0, 128),
    "lavender": (230, 230, 250),
    "brown": (139, 69, 19),
    "tan": (210, 180, 140),
    "beige": (245, 245, 220),
    "cream": (255, 253, 208),
}
NAMES = list(VOCABULARY)

MAX_SIDE_PX = 256  # work size: colour statistics do not need more pixels
# What a product photo may be (checked from the header, before decoding; README limits table).
PHOTO_LIMITS = images.ImageLimits(max_bytes=10 * 1024 * 1024, max_side_px=4096, max_pixels=4096 * 4096)
MIN_FRACTION = 0.08  # clusters smaller than this are trim, prints or noise
BACKGROUND_LAB_DISTANCE = 18.0


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB (..., 3) -> CIELAB (L 0..100, a, b) with OpenCV's float conversion."""
    as_image = np.asarray(rgb, np.float32).reshape(-1, 1, 3) / 255.0
    return cv2.cvtColor(as_image, cv2.COLOR_RGB2LAB).reshape(-1, 3)


VOCABULARY_LAB = _srgb_to_lab(np.array(list(VOCABULARY.values()), np.uint8))


def name_colour(lab: np.ndarray) -> str:
    distances = np.linalg.norm(VOCABULARY_LAB - np.asarray(lab, np.float32)[None, :], axis=1)
    return NAMES[int(np.argmin(distances))]


def decode(data: bytes, budget: images.PixelBudget | None = None) -> np.ndarray:
    """Encoded bytes -> upright RGB uint8; ValueError (images.ImageError) when unusable or over the limits."""
    return images.decode(data, PHOTO_LIMITS, "RGB", budget)


def foreground_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean mask of the product (True) against a plain backdrop."""
    h, w = rgb.shape[:2]
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    border = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    backdrop = np.median(border, axis=0)
    distance = np.linalg.norm(lab - backdrop, axis=2)
    probable_fg = distance > BACKGROUND_LAB_DISTANCE
    if probable_fg.mean() < 0.01:  # nothing stands out: the whole frame is the product (a swatch)
        return np.ones((h, w), bool)
    mask = np.where(probable_fg, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    edge = max(1, min(h, w) // 50)
    mask[:edge, :] = mask[-edge:, :] = cv2.GC_BGD
    mask[:, :edge] = mask[:, -edge:] = cv2.GC_BGD
    try:
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.grabCut(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), mask, None, bgd, fgd, 3, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]
        result = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    except cv2.error:  # GrabCut needs both classes present; the threshold mask is good enough then
        result = probable_fg
    if result.mean() < 0.01:
        result = probable_fg
    return result


def dominant_colours(data: bytes | np.ndarray, k: int = 4, seed: int = 7) -> list[DominantColour]:
    """The product's dominant colours, largest share first, clusters with the same name merged.

    ``data``: encoded bytes, or the RGB array decode() returned."""
    rgb = decode(data) if isinstance(data, bytes) else data
    scale = MAX_SIDE_PX / max(rgb.shape[:2])
    if scale < 1:
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    mask = foreground_mask(rgb)
    pixels = rgb[mask]
    lab = _srgb_to_lab(pixels)
    k = max(1, min(k, len(np.unique(pixels, axis=0))))
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.5)
    _, labels, centres = cv2.kmeans(lab, k, None, criteria, 3, cv2.KMEANS_PP_CENTERS)
    counts = np.bincount(labels.ravel(), minlength=k) / len(labels)
    shares: dict[str, float] = {}
    centre_of: dict[str, np.ndarray] = {}
    for idx in np.argsort(-counts):
        name = name_colour(centres[idx])
        shares[name] = shares.get(name, 0.0) + float(counts[idx])
        centre_of.setdefault(name, centres[idx])  # the largest cluster of a name stands for it
    out = []
    for name, share in sorted(shares.items(), key=lambda kv: -kv[1]):
        centre = centre_of[name]
        if share < MIN_FRACTION:
            continue
        srgb = cv2.cvtColor(centre.reshape(1, 1, 3).astype(np.float32), cv2.COLOR_LAB2RGB).reshape(3)
        r, g, b = (round(float(np.clip(v, 0, 1)) * 255) for v in srgb)
        out.append(DominantColour(name=name, hex_rgb=f"#{r:02x}{g:02x}{b:02x}", fraction=round(share, 4)))
    return out
