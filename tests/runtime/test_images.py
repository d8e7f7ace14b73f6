"""The runtime's one image decoder: limits from the header before decoding, modes, orientation, budgets."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image

from atelier.runtime import images
from atelier.runtime.errors import Violations
from tests.bombs import peak_rss_growth_mb, png_bomb

LIMITS = images.ImageLimits(max_bytes=1 << 20, max_side_px=512, max_pixels=512 * 256, min_side_px=8)


def encode(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_bomb_is_refused_from_the_header_without_decoding() -> None:
    data = png_bomb()
    assert len(data) < 64 * 1024
    big = images.ImageLimits(max_bytes=1 << 30, max_side_px=16384, max_pixels=64 << 20)
    started = time.process_time()

    def refuse() -> None:
        with pytest.raises(images.ImageError):
            images.decode(data, big)

    grown = peak_rss_growth_mb(refuse)
    assert time.process_time() - started < 0.5
    assert grown < 50, f"peak RSS grew {grown:.0f} MB"
    with pytest.raises(images.ImageError, match="image has 400 megapixels, larger than the limit"):
        images.decode(data, big)


@pytest.mark.parametrize(
    ("pixels", "mode"),
    [
        (np.full((16, 24), 100, np.uint8), "L"),
        (np.full((16, 24), 100 * 257, np.uint16), None),
        (np.dstack([np.full((16, 24), 100, np.uint8), np.full((16, 24), 255, np.uint8)]), "LA"),
        (np.full((16, 24, 3), 100, np.uint8), "RGB"),
        (np.dstack([np.full((16, 24, 3), 100, np.uint8), np.full((16, 24), 255, np.uint8)]), "RGBA"),
    ],
)
@pytest.mark.parametrize("want", ["L", "RGB", "RGBA"])
def test_every_accepted_layout_converts_to_what_the_caller_asks(
    pixels: np.ndarray, mode: str | None, want: str
) -> None:
    data = encode(Image.fromarray(pixels, mode))
    out = images.decode(data, LIMITS, want)
    assert out.dtype == np.uint8 and out.shape[:2] == (16, 24)
    assert out.shape[2:] == {"L": (), "RGB": (3,), "RGBA": (4,)}[want]
    assert (out[..., :3] if want != "L" else out).min() == 100 == (out[..., :3] if want != "L" else out).max()


def test_sixteen_bit_keeps_the_top_eight_bits() -> None:
    ramp = (np.arange(16 * 24, dtype=np.uint16).reshape(16, 24) * 170).astype(np.uint16)
    grey = images.decode(encode(Image.fromarray(ramp)), LIMITS, "L")
    assert np.array_equal(grey, (ramp >> 8).astype(np.uint8))


def test_transparent_pixels_are_composited_on_white() -> None:
    rgba = np.zeros((16, 24, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :12, 3] = 255  # left half opaque red, right half fully transparent black
    rgb = images.decode(encode(Image.fromarray(rgba, "RGBA")), LIMITS, "RGB")
    assert tuple(rgb[0, 0]) == (200, 0, 0) and tuple(rgb[0, 20]) == (255, 255, 255)


def test_exif_orientation_is_applied_and_limits_use_the_upright_size() -> None:
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = 255  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the upright image is 20 wide, 40 tall
    data = encode(Image.fromarray(stored), "JPEG", exif=exif.tobytes(), quality=95)
    assert images.probe(data, LIMITS).width_px == 20
    upright = images.decode(data, LIMITS, "RGB")
    assert upright.shape == (40, 20, 3)
    assert upright[:15].mean() > 200 and upright[25:].mean() < 50  # the white half is now on top
    tall = images.ImageLimits(max_bytes=1 << 20, max_side_px=30, max_pixels=10_000)
    with pytest.raises(images.ImageError, match="20 x 40 px"):
        images.decode(data, tall)


def test_the_focal_length_is_read_from_the_exif_header() -> None:
    """FocalLengthIn35mmFilm (in the Exif sub-IFD, as phones write it) comes back; absent, 0 (the
    standard's "unknown"), a malformed block or an image over the limits give None."""

    def jpeg(focal: int | None, size: tuple[int, int] = (40, 60)) -> bytes:
        exif = Image.Exif()
        exif[0x0112] = 1
        if focal is not None:
            exif.get_ifd(0x8769)[0xA405] = focal
        return encode(Image.new("RGB", size, "grey"), "JPEG", exif=exif.tobytes())

    assert images.focal_length_35mm(jpeg(13), LIMITS) == 13.0
    assert images.focal_length_35mm(jpeg(77), LIMITS) == 77.0
    assert images.focal_length_35mm(jpeg(None), LIMITS) is None
    assert images.focal_length_35mm(jpeg(0), LIMITS) is None
    assert images.focal_length_35mm(encode(Image.new("RGB", (40, 60))), LIMITS) is None  # a PNG, no EXIF
    assert images.focal_length_35mm(b"garbage", LIMITS) is None
    assert images.focal_length_35mm(jpeg(26, (600, 60)), LIMITS) is None  # over the limits: not opened
    broken = jpeg(26).replace(b"Exif\x00\x00", b"Exif\x00\x00\xff\xff\xff\xff", 1)
    assert images.focal_length_35mm(broken, LIMITS) is None


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "no image data"),
        (b"garbage", "cannot be decoded"),
        (encode(Image.new("RGB", (64, 64), "red"))[:100], "cannot be decoded"),
        (encode(Image.new("L", (4, 64))), "too small: at least 8 px"),
        (encode(Image.new("L", (600, 8))), "larger than the limit"),
        (encode(Image.new("L", (500, 500))), "larger than the limit"),  # sides fit, pixels do not
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "cannot be decoded"),  # no Ghostscript
        (encode(Image.fromarray(np.zeros((16, 16), np.float32), "F"), "TIFF"), "floating-point"),
    ],
)
def test_refusals_say_why(data: bytes, needle: str) -> None:
    with pytest.raises(images.ImageError, match=needle):
        images.decode(data, LIMITS)
    v = Violations()
    assert images.check(v, "image.data", data, LIMITS) is None
    assert [i.field for i in v.items] == ["image.data"]


def test_encoded_size_is_checked_before_opening() -> None:
    small = images.ImageLimits(max_bytes=100, max_side_px=512, max_pixels=512 * 512)
    with pytest.raises(images.ImageError, match="bytes; at most 100"):
        images.decode(encode(Image.new("RGB", (64, 64), "red")), small)


def test_pixel_budget_is_shared_by_the_images_of_one_call() -> None:
    data = encode(Image.new("RGB", (100, 100), "red"))
    budget = images.PixelBudget(25_000, "items")
    images.decode(data, LIMITS, budget=budget)
    images.decode(data, LIMITS, budget=budget)
    with pytest.raises(images.ImageError, match=r"items add up to more than 0\.025 megapixels"):
        images.decode(data, LIMITS, budget=budget)
    assert budget.used == 20_000


def jpeg_claiming(width: int, height: int, orientation: int = 1) -> bytes:
    """A small JPEG whose frame header (SOF0) claims width x height: probe() reads only the header."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = bytearray(encode(Image.new("RGB", (16, 16), (90, 120, 150)), "JPEG", exif=exif.tobytes()))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize(("width", "height"), [(4032, 3024), (8064, 6048), (8160, 6120), (6048, 8064)])
def test_body_limits_admit_12_to_48_mp_phone_photos(width: int, height: int) -> None:
    from atelier.body.photo import PHOTO_LIMITS

    # Phones store the sensor's landscape frame and an orientation tag (6: turn 90 degrees).
    info = images.probe(jpeg_claiming(width, height, orientation=6), PHOTO_LIMITS)
    assert (info.width_px, info.height_px) == (height, width)
    with pytest.raises(images.ImageError, match="larger than the limit"):
        images.probe(jpeg_claiming(9000, 6000), PHOTO_LIMITS)  # 54 MP


def test_a_phones_heic_is_decoded_upright_with_limits_from_its_header() -> None:
    """HEIC as iPhones save it (HEVC in HEIF, the sensor's frame with the file's own rotation and
    EXIF orientation 6): the header gives the upright size before libheif decodes a pixel, the
    rotation is applied once, and the pixels are the JPEG's it was made from (tests/body/photos)."""
    from pathlib import Path

    kept = Path(__file__).resolve().parent.parent / "body" / "photos"
    data = (kept / "yogait_t5.heic").read_bytes()
    phone = images.ImageLimits(max_bytes=10 << 20, max_side_px=4096, max_pixels=16_000_000)
    info = images.probe(data, phone)
    assert (info.format, info.width_px, info.height_px) == ("HEIF", 1080, 720)
    heic = images.decode(data, phone, "RGB")
    jpeg = images.decode((kept / "yogait_t5.jpg").read_bytes(), phone, "RGB")
    assert heic.shape == jpeg.shape == (720, 1080, 3)
    assert np.abs(heic.astype(int) - jpeg.astype(int)).mean() < 2  # 0.43: HEVC's loss, not a turn
    assert images.decode(data, phone, "L").shape == (720, 1080)
    narrow = images.ImageLimits(max_bytes=10 << 20, max_side_px=1000, max_pixels=16_000_000)
    with pytest.raises(images.ImageError, match="1080 x 720 px, larger than the limit"):
        images.decode(data, narrow)
    with pytest.raises(images.ImageError, match=r"libheif cannot read .* send the photo itself as PNG"):
        images.decode(data[: len(data) // 3], phone)


# A 64 x 48 HEIC with 10-bit samples, as recent iPhones save HDR photos: the left half red (1023, 0,
# 0), the right half (0, 512, 1023) of 1023. Made with pillow-heif 1.8.1 (x265, its lossless mode).
HDR10_HEIC = base64.b64decode(
    "AAAAHGZ0eXBoZWl4AAAAAG1pZjFoZWl4bWlhZgAAAXxtZXRhAAAAAAAAACFoZGxyAAAAAAAAAABwaWN0AAAAAAAAAAAAAAAA"
    "AAAAACJpbG9jAAAAAERAAAEAAQAAAAABoAABAAAAAAAAAP0AAAAjaWluZgAAAAAAAQAAABVpbmZlAgAAAAABAABodmMxAAAA"
    "AA5waXRtAAAAAAABAAAA/GlwcnAAAADcaXBjbwAAAHVodmNDAQQIAAAAnbgAAAAA//AA/P36+gAADwNgAAEAF0ABDAH//wQI"
    "AAADAJ24AAADAAD/ugJAYQABACpCAQEECAAAAwCduAAAAwAA/6AggQTZbq5Ka5uAhoMCAAADADIAAAMAAhBiAAEABkQBwXGJ"
    "EgAAABNjb2xybmNseAABAA0ABoAAAAAUaXNwZQAAAAAAAABAAAAAQAAAAChjbGFwAAAAQAAAAAEAAAAwAAAAAQAAAAAAAAAC"
    "////8AAAAAIAAAAQcGl4aQAAAAADCgoKAAAAGGlwbWEAAAAAAAAAAQABBYECAwWEAAABBW1kYXQAAAD5KAGvBbgfWkzf//7n"
    "43MscBfT3Ozzs87POzzzG8xvMbzG8xvMbzG8y3iv//kTtf//7A21+vXLatilcpXKVylcpdGXRl0ZdGXRl0ZdGWGn/7HugB/9"
    "9f++f+9f92/27/bv9u/27/b39vf29/b39vf29/b39vOitiWIWUOX6cU01rO2gwB/1X+p/pfzvxvxvxvxvx3x3x3x3x3x3x3x"
    "337L9qYgCz9LS+lS+j49CJzbnNuc25zbnN5s3mzebN5s3mzebN5s283+a/f//9R0PqMn6hP9Ot9K59K59K59K59LJNLJNLJN"
    "LJNLJNLJNLJNLAcD07gacYCTotf/"
)


def test_a_10_bit_heic_is_read_as_8_bit() -> None:
    info = images.probe(HDR10_HEIC, LIMITS)
    assert (info.format, info.width_px, info.height_px) == ("HEIF", 64, 48)
    rgb = images.decode(HDR10_HEIC, LIMITS, "RGB")
    assert rgb.dtype == np.uint8 and rgb.shape == (48, 64, 3)
    assert np.abs(rgb[10, 10].astype(int) - (255, 0, 0)).max() <= 3
    assert np.abs(rgb[10, 50].astype(int) - (0, 128, 255)).max() <= 3
