"""BodyService over gRPC: protobuf <-> domain, validation at the boundary, nothing else."""

from __future__ import annotations

import logging
import math
import struct
import time
from collections.abc import Collection

import grpc
from prometheus_client import Counter, Histogram

from atelier.body import camera, photo, sizing
from atelier.body.charts import ChartStore
from atelier.body.pose import LANDMARK_NAMES, PoseModel
from atelier.body.statmodel import (
    GARMENT_MEASUREMENTS,
    HEIGHT_RANGE_CM,
    MEASUREMENTS,
    WEIGHT_RANGE_KG,
    BodyModel,
    Observation,
)
from atelier.body.v1 import body_pb2, body_pb2_grpc
from atelier.common.v1 import geometry_pb2, image_pb2
from atelier.runtime.context import current_tenant
from atelier.runtime.errors import InvalidArgumentError, Violations

log = logging.getLogger(__name__)

MAX_PHOTO_BYTES = photo.MAX_PHOTO_BYTES
MAX_KNOWN = 40

measure_seconds = Histogram(
    "atelier_body_measure_seconds", "MeasureBody latency", buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10)
)
measure_total = Counter("atelier_body_measure_total", "MeasureBody calls by outcome", ["outcome"])
photo_rejections_total = Counter(
    "atelier_body_photo_observations_rejected_total", "photo values rejected as implausible", ["measurement"]
)
# Where the front photo's focal length came from: how often EXIF is missing (a main camera assumed)
# says whether a lens other than the main one can go unnoticed.
focal_source_total = Counter(
    "atelier_body_measure_focal_length_total",
    "measured photo pairs by where the lens's focal length came from",
    ["source"],
)
recommend_total = Counter("atelier_body_recommendations_total", "RecommendSize answers", ["between_sizes"])
prediction_sd = Histogram(
    "atelier_body_prediction_stddev_centimetres",
    "sd of predicted chest girth",
    buckets=(0.5, 1, 1.5, 2, 3, 4, 6),
)

SEX_NAMES = {body_pb2.SEX_FEMALE: "female", body_pb2.SEX_MALE: "male"}
FIT_ENUM = {"tight": body_pb2.FIT_TIGHT, "good": body_pb2.FIT_GOOD, "loose": body_pb2.FIT_LOOSE}


def _check_body(
    v: Violations, height_cm: float, weight_kg: float, sex: int, height_required: bool = True
) -> None:
    if height_required or height_cm:
        v.check(
            math.isfinite(height_cm) and HEIGHT_RANGE_CM[0] <= height_cm <= HEIGHT_RANGE_CM[1],
            "height_cm",
            f"must be {HEIGHT_RANGE_CM[0]:.0f}..{HEIGHT_RANGE_CM[1]:.0f} cm, got {height_cm:g}",
        )
    if weight_kg:
        v.check(
            math.isfinite(weight_kg) and WEIGHT_RANGE_KG[0] <= weight_kg <= WEIGHT_RANGE_KG[1],
            "weight_kg",
            f"must be {WEIGHT_RANGE_KG[0]:.0f}..{WEIGHT_RANGE_KG[1]:.0f} kg (or 0 when unknown), got {weight_kg:g}",
        )
    v.check(
        sex in (body_pb2.SEX_UNSPECIFIED, body_pb2.SEX_FEMALE, body_pb2.SEX_MALE),
        "sex",
        f"unknown value {sex}",
    )


def _check_measurements(
    v: Violations,
    items: list[body_pb2.Measurement],
    path: str,
    names: Collection[str] = MEASUREMENTS,
) -> None:
    v.check(len(items) <= MAX_KNOWN, path, f"at most {MAX_KNOWN} measurements")
    seen: set[str] = set()
    for i, m in enumerate(items):
        if not v.check(m.name in names, f"{path}[{i}].name", f"unknown measurement {m.name!r}"):
            continue
        v.check(m.name not in seen, f"{path}[{i}].name", f"{m.name} given twice")
        seen.add(m.name)
        v.check(
            math.isfinite(m.value_cm) and 0 < m.value_cm <= 300,
            f"{path}[{i}].value_cm",
            "must be 0 < value <= 300",
        )
        v.check(
            math.isfinite(m.stddev_cm) and 0 <= m.stddev_cm <= 50, f"{path}[{i}].stddev_cm", "must be 0..50"
        )


def _chart_from_pb(pb: body_pb2.SizeChart) -> sizing.SizeChart:
    return sizing.SizeChart(
        pb.display_name,
        pb.system,
        [
            sizing.Size(s.label, tuple(sizing.SizeRange(r.measurement, r.min_cm, r.max_cm) for r in s.ranges))
            for s in pb.sizes
        ],
        pb.name,
        pb.version,
    )


def _chart_to_pb(chart: sizing.SizeChart) -> body_pb2.SizeChart:
    return body_pb2.SizeChart(
        name=chart.name,
        display_name=chart.display_name,
        system=chart.system,
        version=chart.version,
        sizes=[
            body_pb2.Size(
                label=s.label,
                ranges=[
                    body_pb2.SizeRange(measurement=r.measurement, min_cm=r.min_cm, max_cm=r.max_cm)
                    for r in s.ranges
                ],
            )
            for s in chart.sizes
        ],
    )


def _validated_chart(pb: body_pb2.SizeChart, prefix: str = "chart") -> sizing.SizeChart:
    chart = _chart_from_pb(pb)
    v = Violations()
    for field_path, reason in sizing.chart_problems(chart, prefix):
        v.add(field_path, reason)
    v.raise_if_any("the size chart is invalid")
    return chart


def _choice_pb(choice: sizing.SizeChoice) -> body_pb2.SizeChoice:
    return body_pb2.SizeChoice(
        size=choice.size,
        score=choice.score,
        zones=[
            body_pb2.ZoneFit(
                measurement=z.measurement,
                fit=FIT_ENUM[z.fit],
                difference_cm=z.difference_cm,
                outside_cm=z.outside_cm,
            )
            for z in choice.zones
        ],
    )


class BodyServicer(body_pb2_grpc.BodyServiceServicer):
    def __init__(self, model: BodyModel, charts: ChartStore, pose_model: PoseModel | None = None) -> None:
        self.model = model
        self.charts = charts
        self.pose_model = pose_model

    # --- measuring --------------------------------------------------------------------------
    def MeasureBody(
        self, request: body_pb2.MeasureBodyRequest, context: grpc.ServicerContext
    ) -> body_pb2.MeasureBodyResponse:
        v = Violations()
        _check_body(v, request.height_cm, request.weight_kg, request.sex)
        v.check(len(request.front.data) > 0, "front.data", "the front photo is required")
        for name, img in (("front", request.front), ("side", request.side)):
            v.check(
                len(img.data) <= MAX_PHOTO_BYTES, f"{name}.data", f"at most {MAX_PHOTO_BYTES // 2**20} MB"
            )
        v.check(
            request.focal_length_35mm_equiv_mm == 0
            or camera.plausible_focal_35mm(request.focal_length_35mm_equiv_mm),
            "focal_length_35mm_equiv_mm",
            photo.FOCAL_FIX,
        )
        if request.HasField("phone_pitch_deg"):
            v.check(
                abs(request.phone_pitch_deg) <= photo.MAX_PHONE_PITCH_DEG,
                "phone_pitch_deg",
                photo.PHONE_PITCH_FIX,
            )
        v.raise_if_any("the measure request is invalid")
        start = time.monotonic()
        try:
            front = photo.decode(request.front.data, "front")
            # The request's focal length is both photos'; else each photo's EXIF (a side photo through
            # another lens is levelled with its own).
            focal = request.focal_length_35mm_equiv_mm or photo.exif_focal_35mm(request.front.data)
            side_focal = (
                photo.exif_focal_35mm(request.side.data)
                if request.side.data and not request.focal_length_35mm_equiv_mm
                else None
            )
            side = photo.decode(request.side.data, "side") if request.side.data else None
            result = photo.measure(
                front,
                side,
                request.height_cm,
                request.weight_kg,
                SEX_NAMES.get(request.sex),
                self.model,
                self.pose_model,
                overlay=request.include_overlay,
                focal_35mm=focal,
                side_focal_35mm=side_focal,
                phone_pitch_deg=request.phone_pitch_deg if request.HasField("phone_pitch_deg") else None,
            )
        except photo.PhotoError as exc:
            measure_total.labels("rejected").inc()
            raise InvalidArgumentError.for_field(exc.field, exc.reason) from None
        measure_total.labels("ok").inc()
        focal_source_total.labels(
            "request" if request.focal_length_35mm_equiv_mm else "exif" if focal else "assumed"
        ).inc()
        measure_seconds.observe(time.monotonic() - start)
        for name, reason in result.warnings:
            if "not used" in reason:
                photo_rejections_total.labels(name or "photo").inc()
        response = body_pb2.MeasureBodyResponse(
            measurements=[
                body_pb2.Measurement(
                    name=m.name,
                    value_cm=m.value_cm,
                    stddev_cm=m.stddev_cm,
                    confidence=m.confidence,
                    method=m.method,
                )
                for m in result.measurements
            ],
            front_landmarks=self._landmarks(result.front_landmarks),
            side_landmarks=self._landmarks(result.side_landmarks),
            warnings=[f"{n}: {r}" if n else r for n, r in result.warnings],
            measurement_warnings=[
                body_pb2.MeasurementWarning(measurement=n, reason=r) for n, r in result.warnings
            ],
            segmentation_method=result.segmentation_method,
            male_probability=result.male_probability,
            photo_values_used=result.photo_values_used,
            camera_pitch_deg=result.camera_pitch_deg,
            focal_length_35mm_equiv_mm=focal or 0.0,
        )
        for quality, target in (
            (result.front_quality, response.front_quality),
            (result.side_quality, response.side_quality),
        ):
            if quality is not None:
                target.score = quality.score
                target.retake_hints.extend(quality.issues)
        if result.front_overlay_png:
            response.overlay.CopyFrom(_png(result.front_overlay_png))
        if result.side_overlay_png and side is not None:
            response.side_overlay.CopyFrom(_png(result.side_overlay_png))
        return response

    @staticmethod
    def _landmarks(marks: dict[str, photo.Landmark]) -> list[body_pb2.Landmark]:
        return [
            body_pb2.Landmark(
                name=n,
                point=geometry_pb2.PointPx(x_px=marks[n].x_px, y_px=marks[n].y_px),
                visibility=marks[n].visibility,
            )
            for n in LANDMARK_NAMES
            if n in marks
        ]

    def PredictMeasurements(
        self, request: body_pb2.PredictMeasurementsRequest, context: grpc.ServicerContext
    ) -> body_pb2.PredictMeasurementsResponse:
        v = Violations()
        _check_body(v, request.height_cm, request.weight_kg, request.sex)
        _check_measurements(v, list(request.known), "known")
        v.check(
            all(k.name not in ("height", "weight_kg") for k in request.known),
            "known",
            "give height and weight in height_cm / weight_kg, not in known",
        )
        v.raise_if_any("the prediction request is invalid")
        known = {"height": Observation(request.height_cm, 0.5)}
        if request.weight_kg:
            known["weight_kg"] = Observation(request.weight_kg, 0.5)
        for k in request.known:
            known[k.name] = Observation(k.value_cm, k.stddev_cm or 0.5)
        prediction = self.model.predict(known, SEX_NAMES.get(request.sex), names=GARMENT_MEASUREMENTS)
        given = {k.name for k in request.known}
        inputs = (
            "height"
            + (",weight" if request.weight_kg else "")
            + ("," + ",".join(sorted(given)) if given else "")
        )
        prediction_sd.observe(prediction.estimates["chest_girth"].stddev_cm)
        return body_pb2.PredictMeasurementsResponse(
            measurements=[
                body_pb2.Measurement(
                    name=e.name,
                    value_cm=e.value_cm,
                    stddev_cm=e.stddev_cm,
                    confidence=photo._confidence(e.stddev_cm),
                    method="given+model" if e.name in given else f"model({inputs})",
                )
                for e in prediction.estimates.values()
            ],
            male_probability=prediction.sex_probability.get("male", 0.0),
        )

    # --- size charts ------------------------------------------------------------------------
    def CreateSizeChart(
        self, request: body_pb2.CreateSizeChartRequest, context: grpc.ServicerContext
    ) -> body_pb2.SizeChart:
        chart = _validated_chart(request.chart)
        return _chart_to_pb(self.charts.create(current_tenant(), chart))

    def GetSizeChart(
        self, request: body_pb2.GetSizeChartRequest, context: grpc.ServicerContext
    ) -> body_pb2.SizeChart:
        return _chart_to_pb(self.charts.get(current_tenant(), request.name))

    def ListSizeCharts(
        self, request: body_pb2.ListSizeChartsRequest, context: grpc.ServicerContext
    ) -> body_pb2.ListSizeChartsResponse:
        if request.page_size < 0:
            raise InvalidArgumentError.for_field("page_size", "must be >= 0")
        charts, token = self.charts.list(current_tenant(), request.page_size, request.page_token)
        return body_pb2.ListSizeChartsResponse(
            charts=[_chart_to_pb(c) for c in charts], next_page_token=token
        )

    def UpdateSizeChart(
        self, request: body_pb2.UpdateSizeChartRequest, context: grpc.ServicerContext
    ) -> body_pb2.SizeChart:
        if not request.chart.name:
            raise InvalidArgumentError.for_field("chart.name", "required: the chart to update")
        chart = _validated_chart(request.chart)
        return _chart_to_pb(self.charts.update(current_tenant(), chart))

    def DeleteSizeChart(
        self, request: body_pb2.DeleteSizeChartRequest, context: grpc.ServicerContext
    ) -> body_pb2.DeleteSizeChartResponse:
        self.charts.delete(current_tenant(), request.name)
        return body_pb2.DeleteSizeChartResponse()

    def RecommendSize(
        self, request: body_pb2.RecommendSizeRequest, context: grpc.ServicerContext
    ) -> body_pb2.RecommendSizeResponse:
        v = Violations()
        v.check(
            bool(request.chart_name) != bool(request.chart.sizes),
            "chart_name",
            "give exactly one of chart_name (a stored chart) or chart (inline)",
        )
        v.check(len(request.measurements) > 0, "measurements", "at least one body measurement is required")
        _check_measurements(v, list(request.measurements), "measurements")
        v.raise_if_any("the recommendation request is invalid")
        if request.chart_name:
            chart = self.charts.get(current_tenant(), request.chart_name)
        else:
            chart = _validated_chart(request.chart)
        body = [
            sizing.BodyMeasurement(m.name, m.value_cm, m.stddev_cm, m.method) for m in request.measurements
        ]
        try:
            rec = sizing.recommend(chart, body)
        except ValueError as exc:
            raise InvalidArgumentError.for_field("measurements", str(exc)) from None
        recommend_total.labels(str(rec.second is not None).lower()).inc()
        response = body_pb2.RecommendSizeResponse(best=_choice_pb(rec.best))
        if rec.second is not None:
            response.second.CopyFrom(_choice_pb(rec.second))
        return response

    # --- made to measure --------------------------------------------------------------------
    def CreateSizeGrid(
        self, request: body_pb2.CreateSizeGridRequest, context: grpc.ServicerContext
    ) -> body_pb2.CreateSizeGridResponse:
        v = Violations()
        v.check(len(request.measurements) > 0, "measurements", "at least one measurement is required")
        _check_measurements(v, list(request.measurements), "measurements")
        v.check(
            request.block in ("", "skirt"), "block", f"unknown block {request.block!r}: use 'skirt' or ''"
        )
        length = request.skirt_length_cm or 60.0
        v.check(20 <= length <= 120, "skirt_length_cm", "must be 20..120 cm")
        names = {m.name for m in request.measurements}
        if request.block == "skirt":
            for needed in ("waist_girth", "hip_girth"):
                v.check(needed in names, "measurements", f"a skirt block needs {needed}")
        v.raise_if_any("the size grid request is invalid")
        body = [
            sizing.BodyMeasurement(m.name, m.value_cm, m.stddev_cm, m.method or "given")
            for m in request.measurements
        ]
        grid_json, grid_csv = sizing.size_grid(body)
        response = body_pb2.CreateSizeGridResponse(grid_json=grid_json, grid_csv=grid_csv)
        if request.block == "skirt":
            values = {m.name: m.value_cm for m in request.measurements}
            pieces = sizing.skirt_block(values["waist_girth"], values["hip_girth"], length)
            response.block.CopyFrom(
                body_pb2.Block(
                    name="straight skirt block",
                    pieces=[
                        geometry_pb2.PolygonMm(
                            points=[geometry_pb2.PointMm(x_mm=x, y_mm=y) for x, y in p.points_mm]
                        )
                        for p in pieces
                    ],
                )
            )
        return response


def _png(data: bytes) -> image_pb2.Image:
    """An overlay PNG; its size from the PNG header (a levelled or reduced photo's overlay is not the
    size of the photo sent)."""
    width, height = struct.unpack(">II", data[16:24])
    return image_pb2.Image(data=data, mime_type="image/png", width_px=width, height_px=height)
