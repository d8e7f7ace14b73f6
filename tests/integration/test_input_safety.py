"""Issue 14's cases, each over real gRPC on the real services: image bombs cost no memory, bad values
and page tokens are INVALID_ARGUMENT naming the field (never INTERNAL), and failed jobs say what
went wrong in words."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import numpy as np
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import timestamp_pb2
from PIL import Image

from atelier.body.server import build as build_body
from atelier.body.v1 import body_pb2, body_pb2_grpc
from atelier.common.v1 import geometry_pb2, image_pb2
from atelier.generation.server import build as build_generation
from atelier.generation.v1 import generation_pb2, generation_pb2_grpc
from atelier.inspection import servicer as inspection_servicer
from atelier.inspection.server import build as build_inspection
from atelier.inspection.v1 import inspection_pb2, inspection_pb2_grpc
from atelier.nesting.server import build as build_nesting
from atelier.nesting.v1 import nesting_pb2, nesting_pb2_grpc
from atelier.recommendations.server import build as build_recommendations
from atelier.recommendations.v1 import recommendations_pb2, recommendations_pb2_grpc
from atelier.runtime.jobs import JobManager
from atelier.runtime.server import Server
from atelier.runtime.status import field_violations
from atelier.runtime.storage import Store
from atelier.trends.server import build as build_trends
from atelier.trends.v1 import trends_pb2, trends_pb2_grpc
from tests.bombs import peak_rss_growth_mb, png_bomb

WEEK_S = 7 * 86_400
MONDAY_2015 = 1_420_416_000  # 2015-01-05 00:00 UTC


def png(pixels: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, format="PNG")
    return buf.getvalue()


def weave(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 128 + 25 * np.sin(2 * np.pi * x / 6) * np.sin(2 * np.pi * y / 6)
    return np.clip(base + rng.normal(0, 6, (h, w)), 0, 249).astype(np.uint8)


def refused(call: Callable[[], object]) -> list[tuple[str, str]]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, (info.value.code(), info.value.details())
    return field_violations(info.value)


@pytest.fixture
def channel_to(start_server: Callable[..., Server]) -> Iterator[Callable[..., grpc.Channel]]:
    channels: list[grpc.Channel] = []

    def open_(service: str, build: Callable[..., Any], **overrides: object) -> grpc.Channel:
        server = start_server(service, build, **overrides)
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        channels.append(channel)
        return channel

    yield open_
    for channel in channels:
        channel.close()


# -- images -----------------------------------------------------------------------------------------


def test_the_bomb_costs_no_memory_in_any_service(
    channel_to: Callable[..., grpc.Channel], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """48 KB of PNG claiming 20000 x 20000 px: refused from the header by every service, and the
    server's peak memory grows < 50 MB (decoding it took about 2.3 GB in three services)."""
    assert len(png_bomb()) < 64 * 1024
    monkeypatch.setenv("ATELIER_BODY_POSE_MODEL", str(tmp_path / "absent.task"))
    monkeypatch.setenv("ATELIER_GENERATION_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("ATELIER_GENERATION_DEVICE", "cpu")
    image = image_pb2.Image(data=png_bomb(), mime_type="image/png")
    recs = recommendations_pb2_grpc.RecommendationsServiceStub(
        channel_to("recommendations", build_recommendations)
    )
    body = body_pb2_grpc.BodyServiceStub(channel_to("body", build_body))
    gen = generation_pb2_grpc.GenerationServiceStub(channel_to("generation", build_generation))
    insp = inspection_pb2_grpc.InspectionServiceStub(channel_to("inspection", build_inspection))
    calls: dict[str, tuple[Callable[[], object], str]] = {
        "UpsertItems": (
            lambda: recs.UpsertItems(
                recommendations_pb2.UpsertItemsRequest(
                    items=[recommendations_pb2.Item(item_id="a", category="tops", image=image)]
                )
            ),
            "items[0].image.data",
        ),
        "MeasureBody": (
            lambda: body.MeasureBody(body_pb2.MeasureBodyRequest(front=image, height_cm=172)),
            "front.data",
        ),
        "MakeTileable": (
            lambda: gen.MakeTileable(generation_pb2.MakeTileableRequest(image=image)),
            "image.data",
        ),
        "InspectImage": (
            lambda: insp.InspectImage(inspection_pb2.InspectImageRequest(article="a", image=image)),
            "image.data",
        ),
    }
    for name, (call, field) in calls.items():
        found: list[tuple[str, str]] = []
        grown = peak_rss_growth_mb(lambda call=call, out=found: out.extend(refused(call)))  # type: ignore[misc]
        assert [f for f, _ in found] == [field], name
        assert "400 megapixels, larger than the limit" in found[0][1], name
        assert grown < 50, f"{name}: peak RSS grew {grown:.0f} MB"


def test_generate_init_image_bomb_is_refused(
    channel_to: Callable[..., grpc.Channel], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ATELIER_GENERATION_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("ATELIER_GENERATION_DEVICE", "cpu")
    gen = generation_pb2_grpc.GenerationServiceStub(channel_to("generation", build_generation))
    for mode in (generation_pb2.MODE_IMAGE_TO_IMAGE, generation_pb2.MODE_SKETCH):
        request = generation_pb2.GenerateRequest(
            model="tiny",
            mode=mode,
            init_image=image_pb2.Image(data=png_bomb()),
            settings={"prompt": "a print"},
        )
        found = refused(lambda request=request: list(gen.Generate(request)))  # type: ignore[misc]
        assert ("init_image.data" in [f for f, _ in found]) and any(
            "larger than the limit" in d for _, d in found
        )


def test_upsert_items_has_a_pixel_budget_per_call(
    channel_to: Callable[..., grpc.Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    from atelier.recommendations import servicer as recs_servicer

    monkeypatch.setattr(recs_servicer, "MAX_UPSERT_PIXELS", 3 * 64 * 64)
    recs = recommendations_pb2_grpc.RecommendationsServiceStub(
        channel_to("recommendations", build_recommendations)
    )
    photo = image_pb2.Image(data=png(np.full((64, 64, 3), 200, np.uint8)))
    items = [recommendations_pb2.Item(item_id=f"i{k}", category="tops", image=photo) for k in range(4)]
    found = refused(lambda: recs.UpsertItems(recommendations_pb2.UpsertItemsRequest(items=items)))
    assert [f for f, _ in found] == ["items[3].image.data"] and "megapixels in one call" in found[0][1]


def test_create_profile_has_a_pixel_budget_and_takes_grey_alpha(
    channel_to: Callable[..., grpc.Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inspection_servicer, "MAX_PROFILE_PIXELS", 5 * 128 * 256)
    insp = inspection_pb2_grpc.InspectionServiceStub(channel_to("inspection", build_inspection))
    # Greyscale + opaque alpha, as some line cameras and published data sets write them.
    goods = [
        image_pb2.Image(data=png(np.dstack([weave(128, 256, s), np.full((128, 256), 255, np.uint8)]), "LA"))
        for s in range(6)
    ]
    found = refused(
        lambda: insp.CreateProfile(inspection_pb2.CreateProfileRequest(article="a", good_images=goods))
    )
    assert [f for f, _ in found] == ["good_images[5].data"]
    profile = insp.CreateProfile(inspection_pb2.CreateProfileRequest(article="a", good_images=goods[:5]))
    assert profile.image_count == 5
    frame = image_pb2.Image(
        data=png(np.dstack([weave(128, 256, 9), np.full((128, 256), 255, np.uint8)]), "LA")
    )
    reply = insp.InspectImage(
        inspection_pb2.InspectImageRequest(article="a", image=frame, include_anomaly_map=True)
    )
    assert reply.anomaly_map.width_px == 256 and reply.anomaly_map.height_px == 128


def test_an_all_black_frame_costs_no_texture_work(
    channel_to: Callable[..., grpc.Channel],
) -> None:
    """The issue's 65 KB all-black 8192 x 8192 PNG (within the 64 Mi px limit then) cost 54 CPU-s and
    +2,984 MB of peak RSS and came back as one frame-sized defect. It is beyond the frame limit now
    (16 Mi px: a 64 MP woven frame cost 73 CPU-s and +4.8 GB); one grey level within it shows no
    fabric: FAILED_PRECONDITION without texture work (a stream lists it as a failed frame, so the roll
    is INCOMPLETE, never PASS)."""
    insp = inspection_pb2_grpc.InspectionServiceStub(channel_to("inspection", build_inspection))
    goods = [image_pb2.Image(data=png(weave(128, 256, s))) for s in range(4)]
    insp.CreateProfile(inspection_pb2.CreateProfileRequest(article="a", good_images=goods))
    black = png(np.zeros((8192, 8192), np.uint8))
    assert len(black) < 70 * 1024
    request = inspection_pb2.InspectImageRequest(article="a", image=image_pb2.Image(data=black))
    found: list[tuple[str, str]] = []
    grown = peak_rss_growth_mb(lambda: found.extend(refused(lambda: insp.InspectImage(request))))
    assert [f for f, _ in found] == ["image.data"] and "larger than the limit" in found[0][1]
    assert grown < 50, f"peak RSS grew {grown:.0f} MB"
    errors: list[grpc.RpcError] = []

    def inspect_black() -> None:
        try:
            insp.InspectImage(request)
        except grpc.RpcError as exc:
            errors.append(exc)

    request = inspection_pb2.InspectImageRequest(
        article="a", image=image_pb2.Image(data=png(np.zeros((4096, 4096), np.uint8)))
    )
    grown = peak_rss_growth_mb(inspect_black)
    # Not a silent pass: nothing was inspected (a roll counting this frame is INCOMPLETE).
    (error,) = errors
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "shows no fabric" in error.details()
    # The decoded frame (16 MB) and a float map (64 MB) remain; its features took ~750 MB.
    assert grown < 300, f"peak RSS grew {grown:.0f} MB"
    # A flat grey good image has no fabric either: CreateProfile names it.
    flat = image_pb2.Image(data=png(np.full((128, 256), 90, np.uint8)))
    found = refused(
        lambda: insp.CreateProfile(
            inspection_pb2.CreateProfileRequest(article="b", good_images=[*goods, flat])
        )
    )
    assert [f for f, _ in found] == ["good_images[4].data"] and "no fabric" in found[0][1]


# -- trends: time and values ------------------------------------------------------------------------


def _trends(
    channel_to: Callable[..., grpc.Channel], **overrides: object
) -> trends_pb2_grpc.TrendsServiceStub:
    return trends_pb2_grpc.TrendsServiceStub(channel_to("trends", build_trends, **overrides))


def _weekly(series: str, values: np.ndarray, start: int = MONDAY_2015) -> list[trends_pb2.Observation]:
    return [
        trends_pb2.Observation(
            series=series, time=timestamp_pb2.Timestamp(seconds=start + k * WEEK_S), value=float(v)
        )
        for k, v in enumerate(values)
    ]


OUT_OF_CALENDAR = [
    timestamp_pb2.Timestamp(seconds=2**62),
    timestamp_pb2.Timestamp(seconds=-(10**12)),
    timestamp_pb2.Timestamp(seconds=253402214400),  # 9999-12-31
    timestamp_pb2.Timestamp(seconds=4102444800),  # 2100-01-01: past the documented range
    timestamp_pb2.Timestamp(seconds=-2208988800 - 86400),  # 1899-12-31
    timestamp_pb2.Timestamp(seconds=MONDAY_2015, nanos=2_000_000_000),
]


def test_trends_refuses_timestamps_outside_the_calendar_and_values_beyond_the_magnitude(
    channel_to: Callable[..., grpc.Channel],
) -> None:
    stub = _trends(channel_to)
    for time in OUT_OF_CALENDAR:
        obs = trends_pb2.Observation(series="s", time=time, value=1.0)
        found = refused(
            lambda obs=obs: stub.IngestObservations(trends_pb2.IngestObservationsRequest(observations=[obs]))
        )
        assert [f for f, _ in found] == ["observations[0].time"], time
    for value in (1.8e308, -1e300, 1e13, float("inf"), float("nan")):
        obs = trends_pb2.Observation(
            series="s", time=timestamp_pb2.Timestamp(seconds=MONDAY_2015), value=value
        )
        found = refused(
            lambda obs=obs: stub.IngestObservations(trends_pb2.IngestObservationsRequest(observations=[obs]))
        )
        assert [f for f, _ in found] == ["observations[0].value"], value


def test_trends_bounds_gaps_per_frequency_and_kind(channel_to: Callable[..., grpc.Channel]) -> None:
    stub = _trends(channel_to)
    stub.IngestObservations(trends_pb2.IngestObservationsRequest(observations=_weekly("w", np.ones(120))))
    far = _weekly("w", [5.0], start=MONDAY_2015 + 1_000_000 * WEEK_S)  # a million weeks on (year ~21000)
    refused(lambda: stub.IngestObservations(trends_pb2.IngestObservationsRequest(observations=far)))
    # 3 years after the last point: too far for a weekly SHARE series, fine for a COUNT series
    # (intermittent sales); 2 years of daily gap is at the daily bound.
    later = MONDAY_2015 + (119 + 156) * WEEK_S
    found = refused(
        lambda: stub.IngestObservations(
            trends_pb2.IngestObservationsRequest(observations=_weekly("w", [1.0], later))
        )
    )
    assert found[0][0] == "observations[0].time" and "at most 104" in found[0][1]
    counts = trends_pb2.SeriesInfo(
        series="c", frequency=trends_pb2.FREQUENCY_WEEKLY, kind=trends_pb2.VALUE_KIND_COUNT
    )
    stub.IngestObservations(
        trends_pb2.IngestObservationsRequest(
            observations=_weekly("c", np.ones(120)) + _weekly("c", [1.0], later), series=[counts]
        )
    )
    # A correction inside a long stored series is never a gap, however far from its ends.
    stub.IngestObservations(
        trends_pb2.IngestObservationsRequest(observations=_weekly("w", [2.0], MONDAY_2015 + 110 * WEEK_S))
    )
    # The span bound: 30 years of weekly points in steps the gap bound allows.
    steps = [
        trends_pb2.Observation(
            series="w", time=timestamp_pb2.Timestamp(seconds=MONDAY_2015 + k * 100 * WEEK_S), value=1.0
        )
        for k in range(1, 17)
    ]
    found = refused(lambda: stub.IngestObservations(trends_pb2.IngestObservationsRequest(observations=steps)))
    assert "would span" in found[0][1]


def test_one_extreme_series_does_not_fail_a_multi_series_forecast(
    channel_to: Callable[..., grpc.Channel],
) -> None:
    stub = _trends(channel_to)
    rng = np.random.default_rng(3)
    t = np.arange(120)
    observations = []
    for k in range(5):
        observations += _weekly(f"ok{k}", 10 + 3 * np.sin(2 * np.pi * t / 52) + rng.normal(0, 0.5, 120))
    spiky = np.zeros(120)
    spiky[::7] = 1e12  # the largest value the bounds admit
    observations += _weekly("spiky", spiky)
    stub.IngestObservations(trends_pb2.IngestObservationsRequest(observations=observations))
    reply = stub.Forecast(trends_pb2.ForecastRequest(horizon=52))
    assert sorted(f.series for f in reply.forecasts) == ["ok0", "ok1", "ok2", "ok3", "ok4", "spiky"]
    last = max(f.times[-1].seconds for f in reply.forecasts)
    assert last < 4102444800 + 104 * WEEK_S  # inside the calendar (and the protobuf Timestamp range)
    for f in reply.forecasts:
        assert all(np.isfinite(f.mean)), f.series


# -- strings, NUL bytes, page tokens ----------------------------------------------------------------


def test_megabyte_strings_are_refused_in_ids_names_and_labels(
    channel_to: Callable[..., grpc.Channel],
) -> None:
    big = "x" * 2_000_000
    stub = _trends(channel_to, max_message_bytes=64 << 20)
    info = trends_pb2.SeriesInfo(series="s", labels={"colour": big})
    found = refused(lambda: stub.IngestObservations(trends_pb2.IngestObservationsRequest(series=[info])))
    assert [f for f, _ in found] == ["series[0].labels['colour']"]
    found = refused(lambda: stub.GetSeries(trends_pb2.GetSeriesRequest(series=big)))
    assert [f for f, _ in found] == ["series"]
    insp = inspection_pb2_grpc.InspectionServiceStub(channel_to("inspection", build_inspection))
    assert [
        f for f, _ in refused(lambda: insp.GetProfile(inspection_pb2.GetProfileRequest(article=big)))
    ] == ["article"]


def _nul_cases(
    channel_to: Callable[..., grpc.Channel], database_url: str | None
) -> list[tuple[Callable[[], object], str]]:
    extra = {"database_url": database_url} if database_url else {}
    trends = _trends(channel_to, **extra)
    recs = recommendations_pb2_grpc.RecommendationsServiceStub(
        channel_to("recommendations", build_recommendations, **extra)
    )
    obs = trends_pb2.Observation(series="a\x00b", time=timestamp_pb2.Timestamp(seconds=MONDAY_2015), value=1)
    item = recommendations_pb2.Item(item_id="shirt", category="tops", style="sl\x00im")
    return [
        (
            lambda: trends.IngestObservations(trends_pb2.IngestObservationsRequest(observations=[obs])),
            "observations[0].series",
        ),
        (lambda: recs.UpsertItems(recommendations_pb2.UpsertItemsRequest(items=[item])), "items[0].style"),
    ]


def _url(store: Store) -> str:
    """The store's database as a URL a server can open (on PostgreSQL: the test's own schema)."""
    url = store.engine.url.render_as_string(hide_password=False)
    if store.dialect != "postgresql":
        return url
    with store.engine.connect() as conn:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
    return url + f"?options={quote('-csearch_path=' + str(schema))}"


def test_nul_bytes_are_refused_on_sqlite_and_postgresql(
    channel_to: Callable[..., grpc.Channel], store: Store
) -> None:
    """SQLite stored them and PostgreSQL failed with INTERNAL: both refuse them at the boundary now."""
    for call, field in _nul_cases(channel_to, _url(store)):
        assert [f for f, _ in refused(call)] == [field]


BAD_TOKENS = ["-1", "99999999999999999999", "\u00b2", "abc"]


def test_page_tokens_are_validated_everywhere(channel_to: Callable[..., grpc.Channel]) -> None:
    ops = operations_pb2_grpc.OperationsStub(channel_to("nesting", build_nesting))
    insp = inspection_pb2_grpc.InspectionServiceStub(channel_to("inspection", build_inspection))
    trends = _trends(channel_to)
    for token in BAD_TOKENS:
        for call in (
            lambda: ops.ListOperations(operations_pb2.ListOperationsRequest(page_token=token)),  # noqa: B023
            lambda: insp.ListProfiles(inspection_pb2.ListProfilesRequest(page_token=token)),  # noqa: B023
            lambda: trends.ListSeries(trends_pb2.ListSeriesRequest(page_token=token)),  # noqa: B023
        ):
            assert [f for f, _ in refused(call)] == ["page_token"], token


def test_list_operations_page_tokens_on_sqlite_and_postgresql(
    channel_to: Callable[..., grpc.Channel], store: Store
) -> None:
    ops = operations_pb2_grpc.OperationsStub(channel_to("nesting", build_nesting, database_url=_url(store)))
    for token in BAD_TOKENS[:2]:
        found = refused(
            lambda token=token: ops.ListOperations(operations_pb2.ListOperationsRequest(page_token=token))
        )
        assert [f for f, _ in found] == ["page_token"]


# -- nesting: files and coordinates -----------------------------------------------------------------


MALFORMED_PIECES = [
    b'{"pieces":"abc"}',
    b'{"pieces":[1]}',
    b'{"items":[null],"strip_height":1}',
    b'{"pieces":[{"outline":[[0,0],[10,0],[10,10]],"quantity":1e400}]}',
    b'{"pieces":[{"outline":[[0,0],[10,0],[10,10]],"quantity":1e18}]}',
    b'{"pieces":[{"outline":[[0,0],[1e300,0],[10,10]]}]}',
    b'{"pieces":[{"outline":[[0,0],[10],[10,10]]}]}',
    b'{"items":[{"id":1,"shape":"abc"}],"strip_height":1}',
    b'{"items":[],"strip_height":"wide"}',
    b"[" * 100_000,
]


def test_import_pieces_json_malformed_is_invalid_argument(channel_to: Callable[..., grpc.Channel]) -> None:
    stub = nesting_pb2_grpc.NestingServiceStub(channel_to("nesting", build_nesting))
    for content in MALFORMED_PIECES:
        request = nesting_pb2.ImportPiecesRequest(format=nesting_pb2.FILE_FORMAT_JSON, content=content)
        assert [f for f, _ in refused(lambda request=request: stub.ImportPieces(request))] == ["content"], (
            content[:80]
        )


def test_create_marker_refuses_huge_coordinates_before_starting_a_job(
    channel_to: Callable[..., grpc.Channel],
) -> None:
    stub = nesting_pb2_grpc.NestingServiceStub(channel_to("nesting", build_nesting))
    for coordinate in (1e300, 1e9):
        points = [(0.0, 0.0), (coordinate, 0.0), (coordinate, 100.0), (0.0, 100.0)]
        piece = nesting_pb2.Piece(
            id="p",
            quantity=1,
            outline=geometry_pb2.PolygonMm(points=[geometry_pb2.PointMm(x_mm=x, y_mm=y) for x, y in points]),
        )
        request = nesting_pb2.CreateMarkerRequest(pieces=[piece], fabric=nesting_pb2.Fabric(width_mm=1500))
        found = refused(lambda request=request: stub.CreateMarker(request))
        assert found[0][0].startswith("pieces[0].outline"), coordinate


def test_a_failed_job_says_what_went_wrong_without_traceback_or_paths(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    jobs = JobManager(store, "nesting", workers=1)

    def crash(handle: object) -> None:  # what the nesting solver's worker dying looked like
        raise RuntimeError(
            "the solver stopped without an answer (exit 1): Traceback (most recent call last):\n"
            '  File "/srv/atelier/services/atelier/nesting/spyrrow_worker.py", line 3, in <module>\n'
            "OverflowError: cannot convert float infinity to integer"
        )

    name = jobs.submit("marker", crash)
    op = jobs.wait(name, 10)
    assert op.done and op.error.code == grpc.StatusCode.INTERNAL.value[0]
    message = op.error.message
    assert "Traceback" not in message and "/srv/" not in message and ".py" not in message, message
    assert "the solver stopped without an answer" in message and name in message
    jobs.shutdown(1)
    store.dispose()


def test_grade_roll_refuses_subnormal_roll_sizes(channel_to: Callable[..., grpc.Channel]) -> None:
    """Found by the fuzz: a roll 2e-309 mm wide made the points per 100 square yards infinite (INTERNAL)."""
    insp = inspection_pb2_grpc.InspectionServiceStub(channel_to("inspection", build_inspection))
    request = inspection_pb2.GradeRollRequest(
        roll_id="r",
        roll_width_mm=2.2250738585072034e-309,
        roll_length_mm=2.2250738585072034e-309,
        max_points_per_100_sq_yd=1,
    )
    assert sorted(f for f, _ in refused(lambda: insp.GradeRoll(request))) == [
        "roll_length_mm",
        "roll_width_mm",
    ]
    # Also found by the fuzz: an unknown defect type was looked up by name before the violations were raised.
    request = inspection_pb2.GradeRollRequest(
        roll_id="r",
        roll_width_mm=1500,
        roll_length_mm=50_000,
        max_points_per_100_sq_yd=40,
        defects=[inspection_pb2.Defect(type=-1, length_mm=1.0)],  # type: ignore[arg-type]
    )
    assert [f for f, _ in refused(lambda: insp.GradeRoll(request))] == ["defects[0].type"]


def test_stream_violations_name_the_message(channel_to: Callable[..., grpc.Channel]) -> None:
    """The interceptor's bounds on a client stream name the message ([k].field), as the servicers do."""
    stub = _trends(channel_to)
    good = trends_pb2.StreamObservationsRequest(observations=_weekly("s", np.ones(3)))
    bad = trends_pb2.StreamObservationsRequest(observations=_weekly("s\x00", np.ones(1)))
    found = refused(lambda: stub.StreamObservations(iter([good, bad])))
    assert [f for f, _ in found] == ["[1].observations[0].series"]
