"""The texture model, regions and image checks on synthetic fabric (fast, no data needed)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from atelier.inspection import imaging, texture
from atelier.inspection.regions import DefectKind, classify, find_regions


def weave(h: int, w: int, seed: int) -> np.ndarray:
    """A plain-weave-like texture: crossing sinusoids with noise and a slow light gradient."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 128 + 25 * np.sin(2 * np.pi * x / 6) * np.sin(2 * np.pi * y / 6) + 0.002 * x
    return np.clip(base + rng.normal(0, 6, (h, w)), 0, 249).astype(np.uint8)


@pytest.fixture(scope="module")
def model() -> texture.TextureModel:
    return texture.train([weave(256, 1024, s) for s in range(5)])


def test_padding_found_and_not_scored(model: texture.TextureModel) -> None:
    img = weave(256, 1024, 11)
    img[:, :200] = 255
    pad = texture.padding_mask(img)
    assert pad[:, :190].all() and not pad[:, 220:].any()
    amap = model.anomaly_map(img)
    assert (amap[:, : 200 + model.params.margin_px] == 0).all()


def test_good_passes_and_a_dark_spot_is_found(model: texture.TextureModel) -> None:
    good = weave(256, 1024, 21)
    assert model.anomaly_map(good).max() <= model.threshold
    bad = good.copy()
    cv2.circle(bad, (600, 120), 9, 30, -1)
    amap = model.anomaly_map(bad)
    assert amap.max() > model.threshold
    y, x = np.unravel_index(int(amap.argmax()), amap.shape)
    assert abs(x - 600) < 24 and abs(y - 120) < 24
    regions = find_regions(amap, model.threshold, bad, texture.padding_mask(bad))
    assert regions and regions[0].x_px <= 600 <= regions[0].x_px + regions[0].width_px


def test_a_weft_line_is_typed_by_direction(model: texture.TextureModel) -> None:
    bad = weave(256, 1024, 31)
    bad[128:131, 300:700] = 60  # a dark line across the roll (image x)
    amap = model.anomaly_map(bad)
    regions = find_regions(amap, model.threshold, bad, texture.padding_mask(bad))
    assert regions[0].kind is DefectKind.WEFT_LINE
    assert regions[0].length_px > 300


def test_model_round_trips(model: texture.TextureModel) -> None:
    again = texture.TextureModel.from_bytes(model.to_bytes())
    img = weave(256, 512, 41)
    assert again.threshold == model.threshold
    np.testing.assert_allclose(again.anomaly_map(img), model.anomaly_map(img), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "kind"),
    [
        (dict(long_px=200, short_px=6, angle_from_x_deg=88), DefectKind.WARP_LINE),
        (dict(long_px=200, short_px=6, angle_from_x_deg=3), DefectKind.WEFT_LINE),
        (dict(long_px=200, short_px=6, angle_from_x_deg=45), DefectKind.CREASE),
        (dict(long_px=20, short_px=15, angle_from_x_deg=0), DefectKind.KNOT),
    ],
)
def test_classify_by_shape(shape: dict[str, float], kind: DefectKind) -> None:
    assert classify(**shape, contrast=1.0, texture_ratio=1.0, at_edge=False) is kind


def test_classify_hole_and_edge() -> None:
    assert classify(40, 35, 0, contrast=8.0, texture_ratio=0.1, at_edge=False) is DefectKind.HOLE
    assert classify(40, 35, 0, contrast=2.0, texture_ratio=1.0, at_edge=False) is DefectKind.STAIN
    assert classify(200, 6, 88, contrast=1.0, texture_ratio=1.0, at_edge=True) is DefectKind.EDGE


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def tiff_float() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.float32), "F").save(buf, format="TIFF")
    return buf.getvalue()


def test_decode_accepts_grey_and_rgb() -> None:
    grey = weave(64, 64, 1)
    assert np.array_equal(imaging.decode(png(grey)).grey, grey)
    rgb = np.stack([grey] * 3, -1)
    assert imaging.decode(png(rgb)).grey.shape == (64, 64)


def test_decode_accepts_16_bit_and_grey_alpha_as_line_cameras_write_them() -> None:
    grey = weave(64, 64, 1)
    assert np.array_equal(imaging.decode(png(grey.astype(np.uint16) * 257)).grey, grey)
    opaque = np.dstack([grey, np.full_like(grey, 255)])
    assert np.array_equal(imaging.decode(png(opaque, "LA")).grey, grey)
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    assert np.array_equal(imaging.decode(png(rgba, "RGBA")).grey, grey)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"not an image at all", "cannot be decoded"),
        (png(weave(64, 64, 1))[:200], "cannot be decoded"),
        (tiff_float(), "floating-point"),
        (png(np.zeros((16, 64), np.uint8)), "too small"),
        (png(np.zeros((8, 20000), np.uint8)), "larger than the limit"),
    ],
)
def test_decode_rejects_with_the_cause(data: bytes, needle: str) -> None:
    with pytest.raises(imaging.ImageError, match=needle):
        imaging.decode(data)


def test_large_images_are_described_in_bands_that_match_the_whole(
    model: texture.TextureModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    img = weave(1000, 512, 51)  # 1000 rows: not a multiple of the 8 px grid step
    img[:, :60] = 255
    cv2.circle(img, (300, 700), 9, 30, -1)
    whole = model.anomaly_map(img)
    monkeypatch.setattr(texture, "BAND_PIXELS", 64 * 512)  # bands of 64 rows + 256 rows of context each side
    feats, _ = texture.grid_features(img, model.params)
    banded = model.anomaly_map(img)
    assert feats.shape[0] == 125
    np.testing.assert_allclose(banded, whole, rtol=1e-4, atol=1e-4)
