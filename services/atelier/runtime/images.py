"""The one image decoder every service uses: limits are checked from the header, before any pixel
is decoded, so a 48 KB PNG that claims 20000 x 20000 px costs nothing.

    limits = ImageLimits(max_bytes=10 << 20, max_side_px=4096, max_pixels=16_000_000)
    rgb = decode(data, limits, "RGB")               # H x W x 3 uint8, EXIF orientation applied
    budget = PixelBudget(256_000_000, "good_images")  # many images in one call share one budget
    grey = decode(data, limits, "L", budget=budget)

What is accepted: PNG, JPEG, WebP, TIFF, BMP and HEIF/HEIC (what iPhones and many Android phones
save by default; decoded by libheif through pi-heif, the decoder-only build whose wheels bundle no
encoder), and no format that runs an external program, such as EPS; 8- or 16-bit greyscale,
greyscale + alpha, palette, RGB, RGBA (and CMYK JPEG), converted to what the caller asks: ``L``
(H x W), ``RGB`` (H x W x 3) or ``RGBA`` (H x W x 4), all uint8.
16-bit samples keep their top 8 bits; transparent pixels are composited on white when the caller
asks for no alpha (an opaque alpha, as line cameras write, changes nothing). The EXIF orientation
of phone photos is applied, so width and height are those of the upright image (a HEIF file's own
rotation and mirroring, which iPhones write, are applied by libheif, which then clears the EXIF tag).

Pure: no gRPC. A servicer turns :class:`ImageError` into a field violation (:func:`check`).
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pi_heif
from PIL import Image, ImageOps

from atelier.runtime.errors import Violations

# HEIF: registered once for the process; Pillow then opens .heic/.heif files lazily like its own
# formats (the header's size is known before libheif decodes a pixel).
pi_heif.register_heif_opener()
FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "HEIF")
OUTPUT_MODES = ("L", "RGB", "RGBA")
# EXIF orientations 5-8 turn the image by 90 degrees: the upright image's width is the stored height.
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION_TAG = 0x0112

# Set once for the process (warnings.catch_warnings is not thread-safe, and servers decode on many
# threads): Pillow warns above 89 MP, but our limits, checked from the header, are the ones that
# count (it still refuses above 179 MP); its "corrupt EXIF" warnings on callers' files are noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


class ImageError(ValueError):
    """The image cannot be used; the message says why and what is accepted."""


@dataclass(frozen=True)
class ImageLimits:
    """One service's limits for one kind of image (documented in the README's limits table)."""

    max_bytes: int
    max_side_px: int
    max_pixels: int
    min_side_px: int = 1

    def describe(self) -> str:
        return (
            f"{self.min_side_px}..{self.max_side_px} px a side, at most "
            f"{self.max_pixels / 1e6:.1f} megapixels and {self.max_bytes / 2**20:g} MB encoded"
        )


@dataclass(frozen=True)
class ImageInfo:
    """What the header says, after the EXIF orientation (the upright image)."""

    format: str
    mode: str
    width_px: int
    height_px: int

    @property
    def pixels(self) -> int:
        return self.width_px * self.height_px


class PixelBudget:
    """The pixels one call may decode across all its images (a call with 1000 images of 16 MP
    each would otherwise be 16 gigapixels of work). Charged from the header, before decoding."""

    def __init__(self, max_pixels: int, field_path: str) -> None:
        self.max_pixels = max_pixels
        self.field_path = field_path
        self.used = 0

    def charge(self, pixels: int) -> None:
        if self.used + pixels > self.max_pixels:
            raise ImageError(
                f"the images of {self.field_path} add up to more than {self.max_pixels / 1e6:g} megapixels "
                "in one call; send fewer or smaller images per call"
            )
        self.used += pixels


def _open(data: bytes, limits: ImageLimits) -> tuple[Image.Image, ImageInfo]:
    """Opens the image reading only its header, and checks every limit before any pixel is decoded."""
    if not data:
        raise ImageError("no image data")
    if len(data) > limits.max_bytes:
        raise ImageError(
            f"encoded image is {len(data)} bytes; at most {limits.max_bytes} ({limits.describe()})"
        )
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
        orientation = _orientation(img)
    except Image.DecompressionBombError as exc:  # over 179 MP: Pillow refuses it from the header
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "too many pixels"
        raise ImageError(f"image has {size}, larger than the limit ({limits.describe()})") from None
    except Exception as exc:  # Pillow raises many kinds for a malformed header
        if data[4:8] == b"ftyp":  # an ISO media file (HEIF's container): libheif parses it whole
            raise ImageError(
                "image cannot be decoded: a HEIF/ISO media file that libheif cannot read (corrupt, "
                f"truncated, or not a still image: a video, say) ({type(exc).__name__}); send the "
                f"photo itself as {', '.join(FORMATS)}"
            ) from None
        raise ImageError(
            f"image cannot be decoded: not a {', '.join(FORMATS)} image ({type(exc).__name__})"
        ) from None
    width, height = img.size
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    info = ImageInfo(str(img.format), img.mode, width, height)
    if width > limits.max_side_px or height > limits.max_side_px or width * height > limits.max_pixels:
        raise ImageError(f"image is {width} x {height} px, larger than the limit ({limits.describe()})")
    if width < limits.min_side_px or height < limits.min_side_px:
        raise ImageError(
            f"image is {width} x {height} px, too small: at least {limits.min_side_px} px a side"
        )
    return img, info


_EXIF_IFD_TAG = 0x8769
_EXIF_FOCAL_35MM_TAG = 0xA405  # FocalLengthIn35mmFilm


def focal_length_35mm(data: bytes, limits: ImageLimits) -> float | None:
    """The camera's focal length as a 35 mm equivalent (mm) from the image's EXIF (FocalLengthIn35mmFilm,
    which phones write for each of their lenses), read from the header only; None where the tag is
    absent, 0 (the standard's "unknown"), the EXIF block is malformed, or the image is not one to open."""
    try:
        img, _ = _open(data, limits)
        raw = img.info.get("exif")
        if not raw:
            return None
        exif = Image.Exif()
        exif.load(raw)
        value = float(exif.get_ifd(_EXIF_IFD_TAG).get(_EXIF_FOCAL_35MM_TAG, 0))
    except Exception:  # a malformed header or EXIF block: the focal length is simply unknown
        return None
    return value if value > 0 else None


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation from what the header parse already read. (``img.getexif()`` would decode
    a whole PNG to look for a late eXIf chunk: exactly what a bomb needs.)"""
    try:
        if img.format == "TIFF":
            return int(getattr(img, "tag_v2", {}).get(_EXIF_ORIENTATION_TAG, 1))
        raw = img.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
        return int(exif.get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:  # a malformed EXIF block: keep the stored orientation
        return 1


def probe(data: bytes, limits: ImageLimits) -> ImageInfo:
    """The header's format, mode and (upright) size, with every limit checked; no pixel is decoded."""
    return _open(data, limits)[1]


def _to_8bit(img: Image.Image) -> Image.Image:
    """16- and 32-bit integer greyscale -> 8-bit greyscale, keeping the top 8 bits of 16."""
    if img.mode.startswith("I;16") or img.mode == "I":
        values = np.asarray(img)
        if values.dtype.kind == "i" and (values.min(initial=0) < 0 or values.max(initial=0) > 65535):
            raise ImageError("32-bit integer images are not accepted: send 8- or 16-bit samples")
        return Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8), "L")
    if img.mode == "F":
        raise ImageError("floating-point images are not accepted: send 8- or 16-bit samples")
    return img


def _convert(img: Image.Image, mode: str) -> Image.Image:
    img = _to_8bit(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        img.mode == "P" and "transparency" in img.info
    )
    if mode == "RGBA":
        return img.convert("RGBA")
    if not has_alpha:
        return img.convert(mode)
    rgba = img.convert("LA" if img.mode in ("LA", "La") else "RGBA")
    alpha = rgba.getchannel("A")
    if alpha.getextrema() == (255, 255):  # opaque alpha (line cameras, many data sets): just drop it
        return rgba.convert(mode)
    # Transparent pixels (product cut-outs) are composited on white, the usual studio backdrop.
    base = Image.new(rgba.mode[:-1], rgba.size, "white")
    base.paste(rgba.convert(rgba.mode[:-1]), mask=alpha)
    return base.convert(mode)


def open_image(
    data: bytes, limits: ImageLimits, mode: str = "RGB", budget: PixelBudget | None = None
) -> Image.Image:
    """The decoded, upright image as a Pillow image of ``mode`` (``L``, ``RGB`` or ``RGBA``)."""
    if mode not in OUTPUT_MODES:
        raise ValueError(f"mode must be one of {OUTPUT_MODES}, not {mode!r}")
    img, info = _open(data, limits)
    if budget is not None:
        budget.charge(info.pixels)
    try:
        img.load()  # decodes the pixels: a truncated or corrupt file fails here
        upright = ImageOps.exif_transpose(img)
        return _convert(upright, mode)
    except ImageError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # Pillow's decoders raise OSError, SyntaxError, ValueError, struct.error, ...
        raise ImageError(f"image cannot be decoded (corrupt or truncated): {type(exc).__name__}") from None


def decode(
    data: bytes, limits: ImageLimits, mode: str = "RGB", budget: PixelBudget | None = None
) -> np.ndarray:
    """The decoded, upright image as a contiguous uint8 array: H x W (``L``), H x W x 3 or x 4."""
    return np.ascontiguousarray(np.asarray(open_image(data, limits, mode, budget), dtype=np.uint8))


def check(
    v: Violations,
    field_path: str,
    data: bytes,
    limits: ImageLimits,
    mode: str = "RGB",
    budget: PixelBudget | None = None,
    required: bool = True,
) -> np.ndarray | None:
    """decode(), recording a field violation instead of raising; None when the image is unusable."""
    if not data:
        if required:
            v.add(field_path, "is required")
        return None
    try:
        return decode(data, limits, mode, budget)
    except ImageError as exc:
        v.add(field_path, str(exc))
        return None
