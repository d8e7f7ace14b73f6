"""The texture model, regions and image checks on synthetic fabric (fast, no data needed)."""

from __future__ import annotations

import dataclasses
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from atelier.inspection import imaging, texture
from atelier.inspection.regions import DefectKind, Measures, classify, find_regions
from atelier.inspection.servicer import defect_pb
from atelier.inspection.v1 import inspection_pb2 as pb


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


def test_cells_in_the_margin_are_scored_on_the_grid_and_zero_on_the_map(model: texture.TextureModel) -> None:
    # v7: the memory holds cells next to the bed and those cells are scored, the margin is applied to
    # the per-pixel map (as the benchmark measures it), not to the grid before its blur.
    img = weave(256, 1024, 12)
    img[:, :200] = 255
    knn, _, _, _ = model.grid_channels(img)
    step = model.params.downsample * model.params.stride_px
    in_margin = slice((200 + 8) // step + 1, (200 + model.params.margin_px) // step)
    assert (knn[:, in_margin] > 0).all()
    assert (knn[:, : 190 // step] == 0).all()
    assert (model.anomaly_map(img)[:, : 200 + model.params.margin_px] == 0).all()


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
    assert model.gauss_ratio > 0 and again.gauss_ratio == model.gauss_ratio
    np.testing.assert_array_equal(again.gauss_precision, model.gauss_precision)


def test_the_gaussian_channel_sees_a_texture_change_and_is_fused_by_the_maximum(
    model: texture.TextureModel,
) -> None:
    img = weave(256, 1024, 43)
    knn, gauss, spot, _ = model.grid_channels(img)
    fused, _ = model.grid_scores(img)
    expected = np.maximum(np.maximum(knn, model.gauss_ratio * gauss), model.spot_ratio * spot)
    np.testing.assert_allclose(fused, expected, rtol=1e-6)
    # A patch with the weave's period doubled: the Gabor energies of the 6 px weave fall, the 12 px rise.
    y, x = np.mgrid[0:64, 0:64].astype(np.float32)
    changed = img.copy()
    changed[96:160, 480:544] = np.clip(
        128 + 25 * np.sin(2 * np.pi * x / 12) * np.sin(2 * np.pi * y / 12), 0, 249
    ).astype(np.uint8)
    _, gauss_changed, _, _ = model.grid_channels(changed)
    assert gauss_changed[12:20, 60:68].max() > 3 * gauss[12:20, 60:68].max()


def test_the_spot_channel_sees_a_small_dot_the_weave_does_not_hide(model: texture.TextureModel) -> None:
    # A 5 px dark dot in a 6 px weave (a fuzzyball): the spot channel scores its cell far above the
    # good cells' level, and the profile keeps the channel's statistics and ratio.
    img = weave(256, 1024, 44)
    _, _, spot, _ = model.grid_channels(img)
    dotted = img.copy()
    cv2.circle(dotted, (603, 131), 2, 40, -1)
    _, _, spot_dotted, _ = model.grid_channels(dotted)
    assert model.spot_ratio > 0 and len(model.spot_median) == 2
    assert spot_dotted[16, 75] > 3 * max(spot[10:22, 69:81].max(), 1.0)
    again = texture.TextureModel.from_bytes(model.to_bytes())
    assert again.spot_ratio == model.spot_ratio
    np.testing.assert_array_equal(again.spot_spread, model.spot_spread)


def test_gaussian_ratio_matches_the_good_peaks_of_both_channels() -> None:
    off = np.zeros((64, 256), bool)
    params = texture.ModelParams(margin_px=0)
    channels = []
    for knn_peak, gauss_peak in ((4.0, 10.0), (5.0, 20.0), (6.0, 30.0)):
        knn, gauss = np.full((8, 32), 1.0, np.float32), np.full((8, 32), 2.0, np.float32)
        knn[3, 5], gauss[4, 9] = knn_peak, gauss_peak
        channels.append((knn, gauss, off))
    assert texture.gaussian_ratio(channels, params) == pytest.approx(texture.GAUSS_WEIGHT * 5.0 / 20.0)
    flat = [(knn, np.zeros_like(gauss), o) for knn, gauss, o in channels]
    assert texture.gaussian_ratio(flat, params) == 0.0
    assert texture.fuse(channels[0][0], channels[0][1], 0.0) is channels[0][0]


def measures(**changes: float | bool) -> Measures:
    base = Measures(
        long_px=20.0,
        short_px=15.0,
        angle_from_x_deg=0.0,
        core_long_px=0.0,
        core_short_px=0.0,
        core_px=0,
        core_angle_from_x_deg=0.0,
        contrast=1.0,
        texture_ratio=1.0,
        at_selvage=False,
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("shape", "kind"),
    [
        (dict(long_px=200, short_px=6, angle_from_x_deg=88), DefectKind.WARP_LINE),
        (dict(long_px=200, short_px=6, angle_from_x_deg=3), DefectKind.WEFT_LINE),
        (dict(long_px=200, short_px=6, angle_from_x_deg=45), DefectKind.CREASE),
        (dict(long_px=20, short_px=15, core_long_px=12, core_short_px=10, core_px=90), DefectKind.NEP),
        (dict(long_px=50, short_px=40, core_long_px=44, core_short_px=36, core_px=1200), DefectKind.KNOT),
        (dict(long_px=60, short_px=30, core_long_px=50, core_short_px=10, core_px=400), DefectKind.SLUB),
        (dict(long_px=120, short_px=100, area_contrast=-2.5, texture_ratio=0.9), DefectKind.STAIN),
        (
            dict(
                long_px=120,
                short_px=100,
                core_long_px=90,
                core_short_px=60,
                core_px=2000,
                contrast=3.0,
                texture_ratio=2.0,
            ),
            DefectKind.CONTAMINATION,
        ),
    ],
)
def test_classify_by_measures(shape: dict[str, float], kind: DefectKind) -> None:
    assert classify(measures(**shape)) is kind


def test_a_hole_is_never_typed_otherwise() -> None:
    # Flat and far from the cloth's brightness: a hole, bright (back-lit) or dark, whatever its shape or
    # place, so that 4-point grading gives it 2 or 4 points.
    for changes in (
        dict(contrast=9.0),
        dict(contrast=-7.0),
        dict(contrast=9.0, at_selvage=True),
        dict(contrast=9.0, long_px=200, short_px=8, angle_from_x_deg=88),
        dict(contrast=9.0, long_px=200, short_px=8, angle_from_x_deg=40),
    ):
        hole = measures(core_px=300, core_long_px=30, core_short_px=12, texture_ratio=0.05, **changes)
        assert classify(hole) is DefectKind.HOLE, changes
    # A flat bright thread seen against the light (a broken yarn) is a line, not an opening.
    yarn = measures(
        long_px=255, short_px=180, core_px=400, core_long_px=103, core_short_px=7, core_angle_from_x_deg=88
    )
    assert classify(dataclasses.replace(yarn, contrast=7.0, texture_ratio=0.05)) is DefectKind.WARP_LINE
    # Textured inside (weave visible): not a hole.
    assert classify(measures(core_px=300, contrast=9.0, texture_ratio=1.0)) is not DefectKind.HOLE
    assert (
        classify(measures(long_px=200, short_px=6, angle_from_x_deg=88, at_selvage=True)) is DefectKind.EDGE
    )


def test_white_patch_inside_the_fabric_is_scored(model: texture.TextureModel) -> None:
    """Flat white inside the cloth (a back-lit hole, lint) is a defect, not padding (main missed it)."""
    img = weave(256, 1024, 61)
    img[100:140, 500:540] = 255
    off = texture.padding_mask(img)
    assert not off[100:140, 500:540].any()
    amap, off = model.score(img)
    assert amap.max() > 2 * model.threshold
    y, x = np.unravel_index(int(amap.argmax()), amap.shape)
    assert 490 <= x <= 550 and 90 <= y <= 150
    regions = find_regions(amap, model.threshold, img, off)
    assert regions[0].kind is DefectKind.HOLE
    # A full-height white stripe inside the cloth touches the top and bottom but not a side: scored.
    stripe = weave(256, 1024, 62)
    stripe[:, 600:620] = 255
    assert not texture.padding_mask(stripe)[:, 600:620].any()
    assert model.anomaly_map(stripe)[:, 590:630].max() > model.threshold


def bed(h: int, w: int, seed: int) -> np.ndarray:
    """A machine bed as a line camera sees it beside the cloth: smooth, streaky along x, no weave."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), sigmaX=40, sigmaY=3)
    return np.clip(150 + 40 * noise / noise.std(), 0, 249).astype(np.uint8)


def with_edge(img: np.ndarray, beside: np.ndarray) -> np.ndarray:
    """`img` with `beside` (padding or bed) left of a bright fabric edge line, as AITEX strips show."""
    out = img.copy()
    width = beside.shape[1]
    out[:, :width] = beside
    out[:, width : width + 3] = 235
    return out


def test_the_machine_bed_is_not_scored() -> None:
    """Trained on strips whose off-fabric side is white padding, shown a strip with the machine bed
    there (AITEX 01 and 02): the bed is off-fabric, the strip stays good, and a defect in it is still
    found (main's maximum sat on the bed)."""
    model = texture.train(
        [with_edge(weave(256, 1024, s), np.full((256, 200), 255, np.uint8)) for s in range(4)]
    )
    img = with_edge(weave(256, 1024, 71), bed(256, 240, 72))
    off = texture.padding_mask(img)
    assert off[:, :230].all() and not off[:, 260:].any()
    amap, off = model.score(img)
    assert amap.max() <= model.threshold
    cv2.circle(img, (700, 128), 9, 30, -1)
    amap, off = model.score(img)
    y, x = np.unravel_index(int(amap.argmax()), amap.shape)
    assert amap.max() > model.threshold and abs(x - 700) < 24 and abs(y - 128) < 24


@pytest.mark.parametrize(("diameter_px", "points"), [(20, 2), (40, 4)])
def test_a_hole_grades_as_a_hole(model: texture.TextureModel, diameter_px: int, points: int) -> None:
    """ASTM D5430: a hole up to 1 inch is 2 points, a larger one 4 (at 1 mm per px: 25.4 px)."""
    img = weave(256, 1024, 81)
    cv2.circle(img, (500, 128), diameter_px // 2, 255, -1)
    amap, off = model.score(img)
    regions = find_regions(amap, model.threshold, img, off)
    assert regions[0].kind is DefectKind.HOLE
    assert abs(regions[0].length_px - diameter_px) <= 4  # measured on the hole, not its anomaly halo
    d = defect_pb(regions[0], mm_per_px=1.0, position_mm=0.0)
    assert d.type == pb.DEFECT_TYPE_HOLE and d.points == points


def test_stain_and_slub_on_a_twill_are_typed(model: texture.TextureModel) -> None:
    """A diffuse dark stain (weave still visible) and a slub (short thick place along a warp yarn)."""
    img = weave(256, 1024, 91)
    yy, xx = np.mgrid[0:256, 0:1024]
    blob = np.exp(-(((xx - 300) / 45.0) ** 2 + ((yy - 128) / 45.0) ** 2))
    img = np.clip(img.astype(np.float32) - 45 * blob, 0, 255).astype(np.uint8)
    # slub: 48 x 6 px along the roll, brighter, its yarn's texture still there (a flat one is a hole)
    img[100:148, 700:706] = np.clip(img[100:148, 700:706].astype(np.int16) + 80, 0, 255).astype(np.uint8)
    amap, off = model.score(img)
    regions = find_regions(amap, model.threshold, img, off)
    kinds: dict[int, DefectKind] = {}
    for r in regions:  # highest score first: each place keeps its strongest region's type
        kinds.setdefault((r.x_px + r.width_px // 2) // 200, r.kind)
    assert kinds.get(1) is DefectKind.STAIN, regions
    assert kinds.get(3) is DefectKind.SLUB, regions


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


def test_the_selvage_zone_is_calibrated_on_its_own() -> None:
    """A cloth whose edge varies more than its body: the zone's scores are scaled down by the ratio of
    the good images' medians, so the threshold follows the body and a defect there is not hidden."""
    maps = []
    for peak in (4.0, 4.5, 5.0):
        off = np.zeros((64, 1024), bool)
        off[:, :200] = True
        amap = np.zeros((64, 1024), np.float32)
        amap[:, 600] = peak  # the body
        amap[:, 250] = 2 * peak  # the selvage zone (within 96 px of the off-fabric area)
        maps.append((amap, off))
    threshold, scale, frame_scale = texture.calibrate(maps, 1.5)
    assert scale == pytest.approx(0.5) and threshold == pytest.approx(1.5 * 4.5) and frame_scale == 1.0
    # No off-fabric area in view: one zone, nothing scaled.
    assert texture.calibrate([(m, np.zeros_like(o)) for m, o in maps], 1.5)[1] == 1.0


def test_the_frame_border_rows_are_their_own_zone() -> None:
    """Good images that peak in their first or last rows (the filters see the frame's border
    reflected there) do not set the threshold: that zone is scaled to the body's level."""
    maps = []
    for peak in (4.0, 4.5, 5.0):
        off = np.zeros((256, 1024), bool)
        amap = np.zeros((256, 1024), np.float32)
        amap[128, 600] = peak  # the body
        amap[3, 400] = 1.6 * peak  # the first rows
        maps.append((amap, off))
    threshold, _, frame_scale = texture.calibrate(maps, 1.5, frame_px=32)
    assert frame_scale == pytest.approx(1 / 1.6) and threshold == pytest.approx(1.5 * 4.5)
    # Without the zone the border rows set the threshold.
    assert texture.calibrate(maps, 1.5)[0] == pytest.approx(1.5 * 1.6 * 4.5)
    # A model applies the scale to those rows only.
    assert texture.frame_zone((256, 8), 32)[:, 0].tolist() == [True] * 32 + [False] * 192 + [True] * 32
    # A frame shorter than 4 zones has no body to calibrate against: no zone (and no scale of 0).
    assert not texture.frame_zone((127, 8), 32).any()
    short = [(m[:100], o[:100]) for m, o in maps]
    assert texture.calibrate(short, 1.5, frame_px=32)[2] == 1.0


def test_a_camera_column_is_taken_out_but_a_wandering_yarn_stays() -> None:
    """A 2 px column with its own offset along the whole frame is the camera (fixed-pattern noise);
    a yarn line of the same brightness that wanders across columns along the roll is a defect."""
    rng = np.random.default_rng(3)
    x = rng.normal(100.0, 20.0, (256, 512)).astype(np.float32)
    pad = np.zeros(x.shape, bool)
    x[:, 200:202] += 20.0  # camera column
    for y in range(256):  # a 4 px line drifting 12 px over the frame
        c = 350 + y * 12 // 256
        x[y, c : c + 4] += 20.0
    offset = texture.camera_columns(x, pad)
    assert offset[200] == pytest.approx(20.0, abs=5.0) and offset[201] == pytest.approx(20.0, abs=5.0)
    assert not offset[340:370].any()
    assert np.count_nonzero(offset) <= 4


def test_a_frame_narrower_than_the_cloth_window_is_all_fabric() -> None:
    # 96 x 64 px (a valid image the fuzz sent to CreateProfile): answered INTERNAL before.
    from atelier.inspection import fabric

    grey = (np.random.default_rng(0).integers(60, 200, (64, 96))).astype(np.uint8)
    assert not fabric.off_fabric_mask(grey).any()


def test_light_rising_towards_one_border_is_not_a_defect(model: texture.TextureModel) -> None:
    """A roll lit brighter towards one side than the good strips (AITEX 01's defect strips: +30 grey
    over the right 500 px): the top region is the defect, not the bright side."""
    img = weave(256, 1024, 91).astype(np.float32)
    ramp = np.clip((np.arange(1024) - 600) / 400.0, 0.0, 1.0)
    lit = np.clip(img * (1.0 + 0.3 * ramp)[None, :], 0, 249).astype(np.uint8)
    assert model.anomaly_map(lit).max() <= model.threshold
    cv2.circle(lit, (300, 128), 9, 30, -1)
    amap, off = model.score(lit)
    regions = find_regions(amap, model.threshold, lit, off)
    assert regions and regions[0].x_px <= 300 <= regions[0].x_px + regions[0].width_px


def test_flattening_keeps_narrow_full_height_lines() -> None:
    """The illumination flat field divides out slow changes only: a full-height warp line (a broken
    end, 12 px) keeps its contrast, a ramp across the width is gone."""
    x = np.full((256, 1024), 100.0, np.float32) * np.linspace(1.0, 1.4, 1024)[None, :]
    x[:, 500:512] *= 0.6
    flat = texture.flatten_illumination(x, np.zeros(x.shape, bool))
    assert abs(flat[:, 100].mean() - flat[:, 900].mean()) < 2.0
    assert flat[:, 500:512].mean() < 0.65 * flat[:, 480:490].mean()


def test_column_scale_brings_a_hot_camera_column_down_to_its_neighbours() -> None:
    """A column the good images all score high in (AITEX 01 at x = 2004, 03 at 2164) is scaled to its
    neighbours' level; a broad raised area (wider than the window) and quiet columns are left alone."""
    rng = np.random.default_rng(5)
    grids = [rng.uniform(2.0, 3.0, (32, 128)).astype(np.float32) for _ in range(6)]
    for g in grids:
        g[:, 40] += 4.0  # a camera column
        g[:, 80:110] += 2.0  # a broad area (an uneven weave across 240 px)
        g[:, :3] = 0.0  # not scored (the bed)
    scale = texture.column_scale(grids)
    assert scale.shape == (128,)
    assert 0.3 < scale[40] < 0.6
    assert (scale[85:105] > 0.95).all() and (scale[10:30] > 0.9).all()
    assert (scale <= 1.0).all()


def test_a_profile_scales_a_hot_camera_column_it_learned(model: texture.TextureModel) -> None:
    """The learned column scale travels with the profile and applies only to frames as wide as the
    good ones (another camera set-up is scored without it)."""
    flat = dataclasses.replace(model, column_scale=np.ones(1024 // 8, np.float32))
    hot = dataclasses.replace(model, column_scale=np.ones(1024 // 8, np.float32))
    hot.column_scale[60] = 0.25
    img = weave(256, 1024, 101)
    img[:, 480:484] = 20  # a dark line at grid column 60 (image x 480-487)
    plain, _ = flat.score(img)
    scaled, _ = hot.score(img)
    # The map is the grid blurred and up-sampled: the scaled column still takes its neighbours' part.
    assert scaled[:, 484].mean() < 0.75 * plain[:, 484].mean()
    assert scaled[:, 470:500].max() < plain[:, 470:500].max()
    assert np.allclose(scaled[:, 700:900], plain[:, 700:900])
    wider = np.concatenate([img, weave(256, 64, 102)], axis=1)  # another width: no column scale
    assert np.allclose(hot.score(wider)[0][:, 470:500], flat.score(wider)[0][:, 470:500], atol=1e-4)
    again = texture.TextureModel.from_bytes(hot.to_bytes())
    assert np.array_equal(again.column_scale, hot.column_scale)


@pytest.mark.parametrize("level", [0, 37, 128, 255])
def test_a_frame_of_one_grey_level_shows_no_fabric_and_costs_no_features(
    model: texture.TextureModel, monkeypatch: pytest.MonkeyPatch, level: int
) -> None:
    """Issue 14: an all-black 8192 x 8192 PNG (65 KB, within the limits) cost ~15 CPU-s of features and
    kNN and came back as one frame-sized defect. No grey level has weave texture: no fabric, no work."""
    from atelier.inspection import fabric

    grey = np.full((8192, 8192), level, np.uint8)
    assert fabric.shows_no_fabric(grey) and fabric.off_fabric_mask(grey[:512]).all()

    def no_features(*args: object) -> None:
        raise AssertionError("a frame with no fabric must not be described")

    monkeypatch.setattr(texture, "grid_features", no_features)
    amap, off = model.score(grey)
    assert amap.shape == grey.shape and not amap.any() and off.all()
    assert find_regions(amap, model.threshold, grey, off) == []


def test_a_frame_with_any_texture_is_still_fabric() -> None:
    from atelier.inspection import fabric

    grey = np.full((256, 256), 30, np.uint8)
    grey[100, 100] = 31  # one pixel off the level: not flat, the texture pipeline decides
    assert not fabric.shows_no_fabric(grey)
    white = np.full((256, 256), 252, np.uint8)
    white[5, 5] = 249  # padding mostly: below the padding level somewhere
    assert not fabric.shows_no_fabric(white)
    assert fabric.shows_no_fabric(np.full((64, 64), 250, np.uint8))
    assert not fabric.shows_no_fabric(weave(64, 64, 0))
