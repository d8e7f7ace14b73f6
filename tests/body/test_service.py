"""BodyService over real gRPC sockets: predictions, photos, bad inputs, charts, grids."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import grpc
import matplotlib
import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from atelier.body.pose import default_bundle_path, load_pose_model
from atelier.body.scene import Camera, render_scene
from atelier.body.server import build
from atelier.body.setup_models import installed
from atelier.body.synthetic import render
from atelier.body.v1 import body_pb2, body_pb2_grpc
from atelier.common.v1 import image_pb2
from atelier.runtime.status import field_violations

# A mid-size man from the ANSUR ranges (cm), to render synthetic photos without the CSVs.
BODY = {
    "height": 176.0,
    "weight_kg": 82.0,
    "chest_width": 29.0,
    "chest_depth": 25.4,
    "waist_width": 32.0,
    "waist_depth": 23.0,
    "hip_width": 34.5,
    "hip_depth": 24.5,
    "shoulder_width": 41.5,
    "neck_girth": 39.0,
    "inseam": 84.5,
    "thigh_girth": 61.0,
    "chest_height": 127.0,
    "waist_height": 105.0,
    "hip_height": 88.0,
    "shoulder_height": 144.0,
    "knee_height": 49.0,
    "sleeve_length": 59.0,
    "bicep_girth": 34.0,
    "wrist_girth": 17.0,
}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stub(start_server, monkeypatch, tmp_path: Path) -> body_pb2_grpc.BodyServiceStub:  # type: ignore[no-untyped-def]
    # POSE_MODEL points nowhere: the GrabCut fallback (a deployment without the setup step).
    monkeypatch.setenv("ATELIER_BODY_POSE_MODEL", str(tmp_path / "absent.task"))
    server = start_server("body", build)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield body_pb2_grpc.BodyServiceStub(channel)
    channel.close()


@pytest.fixture
def pose_stub(start_server, monkeypatch) -> body_pb2_grpc.BodyServiceStub:  # type: ignore[no-untyped-def]
    """A server with the default pose model, which `make` installs (python -m atelier.body.setup_models)."""
    monkeypatch.delenv("ATELIER_BODY_POSE_MODEL", raising=False)
    monkeypatch.delenv("ATELIER_POSE_MODEL", raising=False)
    if not installed(default_bundle_path()):
        pytest.fail(
            f"pose model not installed at {default_bundle_path()}: `make venv` installs it "
            "(or run `python -m atelier.body.setup_models`, which fetches mediapipe 0.10.21 from PyPI)"
        )
    server = start_server("body", build)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield body_pb2_grpc.BodyServiceStub(channel)
    channel.close()


def png(image_rgb: np.ndarray) -> image_pb2.Image:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return image_pb2.Image(data=data.tobytes(), mime_type="image/png")


def violations(call, request) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return field_violations(err.value)


def test_predict_from_height_and_weight(stub: body_pb2_grpc.BodyServiceStub) -> None:
    reply = stub.PredictMeasurements(
        body_pb2.PredictMeasurementsRequest(height_cm=176, weight_kg=82, sex=body_pb2.SEX_MALE)
    )
    got = {m.name: m for m in reply.measurements}
    assert {
        "chest_girth",
        "waist_girth",
        "hip_girth",
        "inseam",
        "sleeve_length",
        "neck_girth",
        "shoulder_width",
        "thigh_girth",
        "back_length",
    } <= got.keys()
    assert 95 < got["chest_girth"].value_cm < 110 and 1 < got["chest_girth"].stddev_cm < 4
    assert 78 < got["inseam"].value_cm < 90
    assert got["chest_girth"].method == "model(height,weight)"
    assert reply.male_probability == 1.0


def test_predict_bad_inputs(stub: body_pb2_grpc.BodyServiceStub) -> None:
    assert ("height_cm", pytest.approx) and any(
        f == "height_cm"
        for f, _ in violations(stub.PredictMeasurements, body_pb2.PredictMeasurementsRequest(height_cm=300))
    )
    found = violations(
        stub.PredictMeasurements,
        body_pb2.PredictMeasurementsRequest(
            height_cm=170,
            weight_kg=500,
            known=[
                body_pb2.Measurement(name="chest", value_cm=90),
                body_pb2.Measurement(name="waist_girth", value_cm=-1),
            ],
        ),
    )
    assert {f for f, _ in found} == {"weight_kg", "known[0].name", "known[1].value_cm"}


@pytest.mark.slow
def test_measure_synthetic_photos(stub: body_pb2_grpc.BodyServiceStub, tmp_path: Path) -> None:
    front, side = render(BODY, "front").image_rgb, render(BODY, "side").image_rgb
    reply = stub.MeasureBody(
        body_pb2.MeasureBodyRequest(
            front=png(front),
            side=png(side),
            height_cm=176,
            weight_kg=82,
            sex=body_pb2.SEX_MALE,
            include_overlay=True,
        )
    )
    got = {m.name: m for m in reply.measurements}
    assert got["waist_girth"].method == "photo+model"
    truth_waist = 0.0
    from atelier.body.statmodel import ellipse_perimeter_cm

    truth_waist = float(ellipse_perimeter_cm(32.0, 23.0))  # the render's waist ellipse, before correction
    assert got["waist_girth"].value_cm > truth_waist  # the fitted correction adds to the raw ellipse
    assert abs(got["waist_girth"].value_cm - 89.0) < 6
    assert abs(got["inseam"].value_cm - 84.5) < 2.5
    assert reply.segmentation_method.startswith("grabcut")
    assert any(w.measurement == "shoulder_width" for w in reply.measurement_warnings)
    overlay = cv2.imdecode(np.frombuffer(reply.overlay.data, np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape[:2] == front.shape[:2]
    # Magenta measurement lines were drawn on it.
    assert (np.all(overlay == (255, 0, 255), axis=2)).sum() > 100


@pytest.mark.slow
def test_measure_bad_photos(stub: body_pb2_grpc.BodyServiceStub) -> None:
    front = render(BODY, "front").image_rgb
    ok = png(front)

    def fields(**kw) -> set[str]:  # type: ignore[no-untyped-def]
        req = body_pb2.MeasureBodyRequest(height_cm=176, front=ok)
        for k, v in kw.items():
            if isinstance(v, image_pb2.Image):
                getattr(req, k).CopyFrom(v)
            else:
                setattr(req, k, v)
        return {f for f, _ in violations(stub.MeasureBody, req)}

    assert fields(height_cm=60) == {"height_cm"}
    assert fields(front=image_pb2.Image(data=b"not an image")) == {"front.data"}
    assert fields(front=png(np.full((120, 80, 3), 200, np.uint8))) == {"front.data"}  # tiny
    blank = np.full((1000, 640, 3), 236, np.uint8)
    blank += np.random.default_rng(0).integers(0, 3, blank.shape, dtype=np.uint8)
    assert fields(front=png(blank)) == {"front.data"}  # no person
    cut = front[:700]  # feet outside the photo
    desc = violations(stub.MeasureBody, body_pb2.MeasureBodyRequest(height_cm=176, front=png(cut)))
    assert desc[0][0] == "front.data" and "cut off" in desc[0][1]
    blurred = cv2.GaussianBlur(front, (0, 0), 9)
    desc = violations(stub.MeasureBody, body_pb2.MeasureBodyRequest(height_cm=176, front=png(blurred)))
    assert "blurred" in desc[0][1]
    two = np.full((1000, 1280, 3), 236, np.uint8)
    two[:, :640] = front
    two[:, 640:] = render(BODY, "front", seed=3).image_rgb
    desc = violations(stub.MeasureBody, body_pb2.MeasureBodyRequest(height_cm=176, front=png(two)))
    assert "several people" in desc[0][1]


@pytest.mark.slow
def test_side_photo_of_the_wrong_view_is_not_used(stub: body_pb2_grpc.BodyServiceStub) -> None:
    front = png(render(BODY, "front").image_rgb)
    reply = stub.MeasureBody(
        body_pb2.MeasureBodyRequest(front=front, side=front, height_cm=176, weight_kg=82)
    )
    assert any("side photo looks like a front" in w for w in reply.warnings)
    got = {m.name: m for m in reply.measurements}
    assert got["waist_girth"].method == "photo(partial)+model"


def chart_pb(display_name: str = "shirts") -> body_pb2.SizeChart:
    sizes = [
        body_pb2.Size(
            label=label,
            ranges=[
                body_pb2.SizeRange(measurement="chest_girth", min_cm=88 + 8 * i, max_cm=96 + 8 * i),
                body_pb2.SizeRange(measurement="waist_girth", min_cm=76 + 8 * i, max_cm=84 + 8 * i),
            ],
        )
        for i, label in enumerate(("S", "M", "L", "XL"))
    ]
    return body_pb2.SizeChart(display_name=display_name, system="EN 13402", sizes=sizes)


def test_chart_crud_and_recommendation(stub: body_pb2_grpc.BodyServiceStub) -> None:
    created = stub.CreateSizeChart(body_pb2.CreateSizeChartRequest(chart=chart_pb()))
    assert created.name.startswith("size-charts/") and created.version == 1
    assert stub.GetSizeChart(body_pb2.GetSizeChartRequest(name=created.name)) == created
    for i in range(3):
        stub.CreateSizeChart(body_pb2.CreateSizeChartRequest(chart=chart_pb(f"extra {i}")))
    page1 = stub.ListSizeCharts(body_pb2.ListSizeChartsRequest(page_size=3))
    page2 = stub.ListSizeCharts(body_pb2.ListSizeChartsRequest(page_size=3, page_token=page1.next_page_token))
    assert len(page1.charts) == 3 and len(page2.charts) == 1 and not page2.next_page_token
    changed = body_pb2.SizeChart()
    changed.CopyFrom(created)
    changed.display_name = "shirts 2027"
    updated = stub.UpdateSizeChart(body_pb2.UpdateSizeChartRequest(chart=changed))
    assert updated.version == 2 and updated.display_name == "shirts 2027"
    with pytest.raises(grpc.RpcError) as stale:
        stub.UpdateSizeChart(body_pb2.UpdateSizeChartRequest(chart=changed))  # still version 1
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    rec = stub.RecommendSize(
        body_pb2.RecommendSizeRequest(
            chart_name=created.name,
            measurements=[
                body_pb2.Measurement(name="chest_girth", value_cm=104.5, stddev_cm=1.0),
                body_pb2.Measurement(name="waist_girth", value_cm=91.0, stddev_cm=1.0),
            ],
        )
    )
    assert {rec.best.size, rec.second.size} == {"M", "L"}
    zones = {z.measurement: z for z in rec.best.zones}
    assert zones["chest_girth"].fit in (body_pb2.FIT_TIGHT, body_pb2.FIT_LOOSE)

    stub.DeleteSizeChart(body_pb2.DeleteSizeChartRequest(name=created.name))
    with pytest.raises(grpc.RpcError) as gone:
        stub.GetSizeChart(body_pb2.GetSizeChartRequest(name=created.name))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_charts_are_per_tenant(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server("body", build)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = body_pb2_grpc.BodyServiceStub(channel)
        created = stub.CreateSizeChart(
            body_pb2.CreateSizeChartRequest(chart=chart_pb()), metadata=[("x-atelier-tenant", "brand-a")]
        )
        listed = stub.ListSizeCharts(
            body_pb2.ListSizeChartsRequest(), metadata=[("x-atelier-tenant", "brand-b")]
        )
        mine = stub.ListSizeCharts(
            body_pb2.ListSizeChartsRequest(), metadata=[("x-atelier-tenant", "brand-a")]
        )
    assert created.name in [c.name for c in mine.charts]
    assert created.name not in [c.name for c in listed.charts]


def test_chart_and_recommend_bad_inputs(stub: body_pb2_grpc.BodyServiceStub) -> None:
    bad = chart_pb()
    bad.display_name = ""
    bad.sizes[1].ranges[0].min_cm = 200
    bad.sizes[2].label = "S"
    found = {f for f, _ in violations(stub.CreateSizeChart, body_pb2.CreateSizeChartRequest(chart=bad))}
    assert found == {"chart.display_name", "chart.sizes[1].ranges[0]", "chart.sizes[2].label"}
    found = {f for f, _ in violations(stub.RecommendSize, body_pb2.RecommendSizeRequest(chart=chart_pb()))}
    assert found == {"measurements"}
    found = {
        f
        for f, _ in violations(
            stub.RecommendSize,
            body_pb2.RecommendSizeRequest(
                chart=chart_pb(),
                chart_name="size-charts/x",
                measurements=[body_pb2.Measurement(name="hip_girth", value_cm=100)],
            ),
        )
    }
    assert found == {"chart_name"}
    found = {
        f
        for f, _ in violations(
            stub.RecommendSize,
            body_pb2.RecommendSizeRequest(
                chart=chart_pb(), measurements=[body_pb2.Measurement(name="hip_girth", value_cm=100)]
            ),
        )
    }
    assert found == {"measurements"}  # no zone of the chart given


def test_size_grid_and_skirt_block(stub: body_pb2_grpc.BodyServiceStub) -> None:
    reply = stub.CreateSizeGrid(
        body_pb2.CreateSizeGridRequest(
            block="skirt",
            skirt_length_cm=55,
            measurements=[
                body_pb2.Measurement(name="waist_girth", value_cm=72, stddev_cm=1.2, method="photo+model"),
                body_pb2.Measurement(name="hip_girth", value_cm=98),
            ],
        )
    )
    doc = json.loads(reply.grid_json)
    assert [m["measurement"] for m in doc["measurements"]] == ["waist_girth", "hip_girth"]
    assert reply.grid_csv.decode().splitlines()[0].startswith("measurement,")
    assert len(reply.block.pieces) == 2
    ys = [p.y_mm for p in reply.block.pieces[0].points]
    assert max(ys) == pytest.approx(550.0)
    found = {
        f
        for f, _ in violations(
            stub.CreateSizeGrid,
            body_pb2.CreateSizeGridRequest(
                block="bodice",
                skirt_length_cm=500,
                measurements=[body_pb2.Measurement(name="inseam", value_cm=80)],
            ),
        )
    }
    assert found == {"block", "skirt_length_cm"}
    found = {
        f
        for f, _ in violations(
            stub.CreateSizeGrid,
            body_pb2.CreateSizeGridRequest(
                block="skirt", measurements=[body_pb2.Measurement(name="inseam", value_cm=80)]
            ),
        )
    }
    assert found == {"measurements"}


# A real photo of a person: matplotlib's sample portrait of Grace Hopper (US Navy photo, public
# domain), read from the installed matplotlib package (a declared dependency), not copied here.
# No whole-body public-domain photo is available offline, so whole-body measuring is tested on renders.
GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def _jpeg(image_rgb: np.ndarray) -> image_pb2.Image:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return image_pb2.Image(data=data.tobytes(), mime_type="image/jpeg")


def test_pose_model_finds_landmarks_on_a_real_photo() -> None:
    model = load_pose_model(default_bundle_path())
    assert model is not None, "pose model not installed (make venv)"
    try:
        image = cv2.cvtColor(cv2.imread(str(GRACE_HOPPER)), cv2.COLOR_BGR2RGB)  # 512x600, head and shoulders
        poses = model.detect(image)
        doubled = model.detect(np.concatenate([image, image[:, ::-1]], axis=1))
    finally:
        model.close()
    assert len(poses) == 1
    lm = poses[0].landmarks
    nose, left, right = lm["nose"], lm["left_shoulder"], lm["right_shoulder"]
    assert min(nose.visibility, left.visibility, right.visibility) > 0.9
    # Her shoulders are below the nose, one either side of it, about half the photo apart.
    assert nose.y_px + 100 < min(left.y_px, right.y_px)
    assert right.x_px < nose.x_px < left.x_px and 200 < left.x_px - right.x_px < 450
    assert lm["left_ankle"].visibility < 0.3 and lm["right_ankle"].visibility < 0.3  # outside the photo
    # The person mask covers her face and not the top corners (background).
    mask = poses[0].mask
    assert mask[round(nose.y_px), round(nose.x_px)] and not mask[:40, :40].any() and not mask[:40, -40:].any()
    assert len(doubled) == 2


@pytest.mark.slow
def test_real_photos_bad_inputs_over_grpc(pose_stub: body_pb2_grpc.BodyServiceStub) -> None:
    """Real photos with the pose model: a portrait is cut off, two people side by side in contact are
    refused, a thumbnail is tiny."""
    image = cv2.cvtColor(cv2.imread(str(GRACE_HOPPER)), cv2.COLOR_BGR2RGB)
    portrait = image_pb2.Image(data=GRACE_HOPPER.read_bytes(), mime_type="image/jpeg")
    desc = violations(pose_stub.MeasureBody, body_pb2.MeasureBodyRequest(height_cm=165, front=portrait))
    assert desc[0][0] == "front.data" and "cut off" in desc[0][1] and "feet" in desc[0][1]
    two = _jpeg(np.concatenate([image, image[:, ::-1]], axis=1))
    desc = violations(pose_stub.MeasureBody, body_pb2.MeasureBodyRequest(height_cm=165, front=two))
    assert desc == [
        (
            "front.data",
            "2 people of similar size found, in contact or one in front of another: the photo must "
            "show one person (ask the others to step out of the picture)",
        )
    ]
    thumb = _jpeg(cv2.resize(image, (200, 234), interpolation=cv2.INTER_AREA))
    desc = violations(pose_stub.MeasureBody, body_pb2.MeasureBodyRequest(height_cm=165, front=thumb))
    assert desc[0][0] == "front.data" and "too small" in desc[0][1]
    # A good front photo with the portrait as the side view: refused on the side field.
    front = png(render(BODY, "front").image_rgb)
    desc = violations(
        pose_stub.MeasureBody, body_pb2.MeasureBodyRequest(height_cm=176, front=front, side=portrait)
    )
    assert desc[0][0] == "side.data" and "cut off" in desc[0][1]


@pytest.mark.slow
def test_measure_with_pose_model(pose_stub: body_pb2_grpc.BodyServiceStub) -> None:
    """The MediaPipe path on 3D renders in a drawn room (a level phone at 1 m): the learned outline,
    shoulder points and arms give every photo value; quality and hints come back."""
    cam = Camera(
        height_cm=100.0, distance_cm=230.0, pitch_deg=0.0, focal_px=800.0, width_px=720, height_px=960
    )
    front = render_scene(BODY, "front", cam, "drawn", arm_angle_deg=30, seed=1).image_rgb
    side = render_scene(BODY, "side", cam, "drawn", seed=2).image_rgb
    reply = pose_stub.MeasureBody(
        body_pb2.MeasureBodyRequest(
            front=png(front),
            side=png(side),
            height_cm=176,
            weight_kg=82,
            sex=body_pb2.SEX_MALE,
            include_overlay=True,
        )
    )
    assert reply.segmentation_method == "mediapipe-segmentation"
    assert reply.photo_values_used >= 8 and 0 < reply.front_quality.score <= 1
    assert abs(reply.camera_pitch_deg) < 4
    got = {m.name: m for m in reply.measurements}
    for name in ("chest_girth", "waist_girth", "hip_girth", "shoulder_width", "sleeve_length"):
        assert got[name].method == "photo+model", (name, got[name].method)
    # Where the legs part is a lower bound on the crotch: used only above the prediction.
    assert got["inseam"].method in ("photo+model", "model(height,weight,photo)")
    assert abs(got["inseam"].value_cm - 84.5) < 3.0
    assert abs(got["sleeve_length"].value_cm - 59.0) < 2.0
    assert abs(got["shoulder_width"].value_cm - 41.5) < 2.0
    assert abs(got["waist_girth"].value_cm - 89.0) < 6
    overlay = cv2.imdecode(np.frombuffer(reply.overlay.data, np.uint8), cv2.IMREAD_COLOR)
    assert (np.all(overlay == (0, 255, 0), axis=2)).sum() > 200  # landmark dots
    assert (np.all(overlay == (255, 255, 0), axis=2)).sum() > 200  # skeleton lines


def test_the_lens_comes_from_the_request_or_the_photos_exif(pose_stub: body_pb2_grpc.BodyServiceStub) -> None:
    """A 0.5x lens photo pitched 20 degrees: its EXIF FocalLengthIn35mmFilm (13 mm) is what it is measured
    with, the request's focal length overrides it, neither gives 0 (a main camera assumed); a focal
    length no lens has is a field violation."""
    cam = Camera(
        height_cm=140, distance_cm=115, pitch_deg=20.0, focal_px=0.39 * 720, width_px=540, height_px=720
    )
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = round(cam.focal_35mm)
    buf = io.BytesIO()
    Image.fromarray(render_scene(BODY, "front", cam, "drawn", arm_angle_deg=30, seed=8).image_rgb).save(
        buf, "JPEG", quality=95, exif=exif.tobytes()
    )
    front = image_pb2.Image(data=buf.getvalue())

    def reply(**kw: float) -> body_pb2.MeasureBodyResponse:
        return pose_stub.MeasureBody(
            body_pb2.MeasureBodyRequest(front=front, height_cm=176, weight_kg=82, sex=body_pb2.SEX_MALE, **kw)
        )

    def counted(source: str) -> float:
        return REGISTRY.get_sample_value("atelier_body_measure_focal_length_total", {"source": source}) or 0.0

    before = {source: counted(source) for source in ("exif", "request", "assumed")}
    from_exif = reply()
    assert from_exif.focal_length_35mm_equiv_mm == 13.0
    assert abs(from_exif.camera_pitch_deg - 20.0) < 2.5
    stated = reply(focal_length_35mm_equiv_mm=26.0)
    assert stated.focal_length_35mm_equiv_mm == 26.0 and stated.camera_pitch_deg > 25
    plain = pose_stub.MeasureBody(
        body_pb2.MeasureBodyRequest(front=png(np.asarray(Image.open(buf))), height_cm=176)
    )
    assert plain.focal_length_35mm_equiv_mm == 0.0
    # Ops see where the lens came from (the server runs in this process).
    assert {source: counted(source) - before[source] for source in before} == {
        "exif": 1,
        "request": 1,
        "assumed": 1,
    }
    # The phone's own pitch (its motion sensor) is what the photos are levelled with; 0 is level.
    assert reply(phone_pitch_deg=19.0).camera_pitch_deg == 19.0
    assert reply(phone_pitch_deg=0.0).camera_pitch_deg == 0.0
    steep = body_pb2.MeasureBodyRequest(front=front, height_cm=176, phone_pitch_deg=-50)
    assert [f for f, _ in violations(pose_stub.MeasureBody, steep)] == ["phone_pitch_deg"]
    bad = body_pb2.MeasureBodyRequest(front=front, height_cm=176, focal_length_35mm_equiv_mm=2000)
    assert [f for f, _ in violations(pose_stub.MeasureBody, bad)] == ["focal_length_35mm_equiv_mm"]


def test_a_48_mp_phone_photo_is_measured_like_the_same_photo_small(
    pose_stub: body_pb2_grpc.BodyServiceStub,
) -> None:
    """A real photo as a 48 MP phone stores a portrait (the 8064 x 6048 sensor frame, EXIF
    orientation 6) is admitted, turned upright, measured at the working size (2048 px) and gives the
    girths and shoulder width of the same photo at 540 x 720 within 1 cm (0.02-0.39 cm here)."""
    import io

    from PIL import Image

    photo = cv2.imread(str(Path(__file__).parent / "photos" / "yogait_tada.jpg"), cv2.IMREAD_COLOR)
    upright = np.ascontiguousarray(photo[:, 270:810, ::-1])  # 540 x 720, the man in the middle
    big = cv2.resize(upright, (6048, 8064), interpolation=cv2.INTER_CUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.rot90(big))).save(buf, "JPEG", quality=90, exif=exif.tobytes())
    assert len(buf.getvalue()) > 1 << 20  # 1.9 MB: upscaled, it lacks a sensor's noise (10-25 MB)
    request = body_pb2.MeasureBodyRequest(height_cm=178, sex=body_pb2.SEX_MALE)
    request.front.CopyFrom(image_pb2.Image(data=buf.getvalue(), mime_type="image/jpeg"))
    large = pose_stub.MeasureBody(request)
    request.front.CopyFrom(png(upright))
    small = pose_stub.MeasureBody(request)
    got = {m.name: m.value_cm for m in large.measurements}
    want = {m.name: m.value_cm for m in small.measurements}
    assert large.photo_values_used == small.photo_values_used >= 4
    for name in ("shoulder_width", "chest_girth", "waist_girth", "hip_girth"):
        assert abs(got[name] - want[name]) < 1.0, (name, got[name], want[name])


def test_an_iphones_heic_is_measured_like_the_same_photo_as_jpeg(
    pose_stub: body_pb2_grpc.BodyServiceStub,
) -> None:
    """The HEIC an iPhone saves by default (HEVC in HEIF, stored turned with the rotation in the
    file) is decoded upright over gRPC and measured as its JPEG is: the same photo values, waist and
    hip girths within 0.5 cm (0.40 and 0.01 here: HEVC's loss moves the outline by a fraction of a
    pixel), shoulder width and sleeve within 1 cm (0.01 and 0.54: the wrist landmark moves with it).
    The chest girth within 1 cm (0.77): with no weight stated it follows the chest width, which
    is read below the armpits and carried up along the torso's side; on this 720 px photo (3.1 px
    per cm) HEVC's loss tilts that side by a pixel over the span read, 0.9 cm of chest width."""
    kept = Path(__file__).parent / "photos"
    request = body_pb2.MeasureBodyRequest(height_cm=178, sex=body_pb2.SEX_MALE)
    request.front.CopyFrom(
        image_pb2.Image(data=(kept / "yogait_t5.heic").read_bytes(), mime_type="image/heic")
    )
    heic = pose_stub.MeasureBody(request)
    request.front.CopyFrom(
        image_pb2.Image(data=(kept / "yogait_t5.jpg").read_bytes(), mime_type="image/jpeg")
    )
    jpeg = pose_stub.MeasureBody(request)
    got = {m.name: m.value_cm for m in heic.measurements}
    want = {m.name: m.value_cm for m in jpeg.measurements}
    assert heic.photo_values_used == jpeg.photo_values_used >= 3
    for name, within in (
        ("chest_girth", 1.0),
        ("waist_girth", 0.5),
        ("hip_girth", 0.5),
        ("shoulder_width", 1.0),
        ("sleeve_length", 1.0),
    ):
        assert abs(got[name] - want[name]) < within, (name, got[name], want[name])


def test_the_population_setting_chooses_whom_the_predictions_are_for(
    start_server, monkeypatch, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """ATELIER_BODY_POPULATION: soldiers (ANSUR II, the default) or civilians (NHANES's height,
    weight and hips). A heavy woman's hips from height and weight are larger for civilians; an
    unknown population stops the service at start with the values it takes."""
    monkeypatch.setenv("ATELIER_BODY_POSE_MODEL", str(tmp_path / "absent.task"))
    request = body_pb2.PredictMeasurementsRequest(height_cm=165, weight_kg=115, sex=body_pb2.SEX_FEMALE)
    hips = {}
    for population in ("", "soldier", "civilian"):
        if population:
            monkeypatch.setenv("ATELIER_BODY_POPULATION", population)
        server = start_server("body", build)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            reply = body_pb2_grpc.BodyServiceStub(channel).PredictMeasurements(request)
        hips[population] = {m.name: m.value_cm for m in reply.measurements}["hip_girth"]
    assert hips[""] == hips["soldier"]
    assert hips["civilian"] > hips["soldier"] + 3.0, hips
    monkeypatch.setenv("ATELIER_BODY_POPULATION", "retail")
    with pytest.raises(
        ValueError, match="ATELIER_BODY_POPULATION='retail': population must be one of civilian, soldier"
    ):
        start_server("body", build)


def test_a_model_file_for_other_variables_is_named_as_the_error(
    start_server, monkeypatch, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A MODEL_PARAMS file fitted for other variables stops the start with its own reason, not blamed
    on ATELIER_BODY_POPULATION (which is fine here)."""
    stale = tmp_path / "model_params.json"
    stale.write_text('{"variables": ["height"], "sexes": {}}\n')
    monkeypatch.setenv("ATELIER_BODY_MODEL_PARAMS", str(stale))
    monkeypatch.setenv("ATELIER_BODY_POSE_MODEL", str(tmp_path / "absent.task"))
    with pytest.raises(ValueError, match="fitted for other variables") as caught:
        start_server("body", build)
    assert "POPULATION" not in str(caught.value)
