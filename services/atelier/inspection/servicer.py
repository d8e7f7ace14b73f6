"""The InspectionService servicer: protobuf <-> domain, validation at the boundary, metrics."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
from google.protobuf import timestamp_pb2
from prometheus_client import Counter, Histogram

from atelier.common.v1 import geometry_pb2, image_pb2
from atelier.inspection import fabric, grading, imaging, texture
from atelier.inspection.profiles import ARTICLE_PATTERN, ProfileInfo, ProfileNotFound, ProfileStore
from atelier.inspection.regions import DefectKind, Region, find_regions
from atelier.inspection.v1 import inspection_pb2 as pb
from atelier.inspection.v1 import inspection_pb2_grpc
from atelier.runtime import images, limits
from atelier.runtime.context import Cancellation, current_tenant
from atelier.runtime.errors import AtelierError, FailedPreconditionError, NotFoundError, Violations
from atelier.runtime.status import cancellation_from

log = logging.getLogger("atelier.inspection")

MIN_PROFILE_IMAGES = 4
MAX_PROFILE_IMAGES = 100
# All of one CreateProfile's images together (training time grows with the pixels: 4 images of 16 MP
# took 39 s): 100 line-scan strips of 256 x 4096 px are 105 MP.
MAX_PROFILE_PIXELS = 128 * 1024 * 1024
MAX_MM_PER_PX = 100.0
MAX_ROLL_WIDTH_MM = 10_000.0
# Points per 100 square yards divide by the roll's area: a width of 1e-309 mm overflowed to infinity.
MIN_ROLL_MM = 1.0
MAX_ROLL_LENGTH_MM = 10_000_000.0
MAX_GRADE_DEFECTS = 100_000
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000
CROPPED_DEFECTS_PER_FRAME = 20
CROP_MIN_PX = 64

IMAGES = Counter("atelier_inspection_images_total", "Images inspected, by verdict", ["verdict"])
DEFECTS = Counter("atelier_inspection_defects_total", "Defect regions found, by type", ["type"])
INSPECT_SECONDS = Histogram(
    "atelier_inspection_image_seconds",
    "Time to inspect one image (decode to regions)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
FRAME_ERRORS = Counter(
    "atelier_inspection_stream_frame_errors_total", "Stream frames answered with an error", ["code"]
)
PROFILES = Counter("atelier_inspection_profiles_trained_total", "Profiles trained")
ROLL_POINTS = Histogram(
    "atelier_inspection_roll_points_per_100_sq_yd",
    "4-point rate of graded rolls",
    buckets=(5, 10, 20, 30, 40, 60, 80, 120, 200),
)

KIND_TO_PB = {
    DefectKind.HOLE: pb.DEFECT_TYPE_HOLE,
    DefectKind.STAIN: pb.DEFECT_TYPE_STAIN,
    DefectKind.WARP_LINE: pb.DEFECT_TYPE_WARP_LINE,
    DefectKind.WEFT_LINE: pb.DEFECT_TYPE_WEFT_LINE,
    DefectKind.KNOT: pb.DEFECT_TYPE_KNOT,
    DefectKind.CREASE: pb.DEFECT_TYPE_CREASE,
    DefectKind.EDGE: pb.DEFECT_TYPE_EDGE,
    DefectKind.OTHER: pb.DEFECT_TYPE_OTHER,
    DefectKind.CONTAMINATION: pb.DEFECT_TYPE_CONTAMINATION,
    DefectKind.SLUB: pb.DEFECT_TYPE_SLUB,
    DefectKind.NEP: pb.DEFECT_TYPE_NEP,
}


VERDICT_TO_PB = {
    grading.Verdict.PASS: pb.ROLL_VERDICT_PASS,
    grading.Verdict.FAIL: pb.ROLL_VERDICT_FAIL,
    grading.Verdict.INCOMPLETE: pb.ROLL_VERDICT_INCOMPLETE,
}


def _image(
    v: Violations, field: str, image: image_pb2.Image, budget: images.PixelBudget | None = None
) -> imaging.DecodedImage | None:
    if not image.data:
        v.add(f"{field}.data", "required: the encoded image bytes")
        return None
    try:
        return imaging.decode(image.data, budget)
    except imaging.ImageError as exc:
        v.add(f"{field}.data", str(exc))
        return None


def _article(v: Violations, field: str, article: str) -> None:
    if not article:
        v.add(field, "required: the fabric article, e.g. denim-12")
    elif not ARTICLE_PATTERN.match(article):
        v.add(field, "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit")


def _profile_pb(info: ProfileInfo) -> pb.Profile:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(info.create_time)
    return pb.Profile(
        article=info.article,
        version=info.version,
        image_count=info.image_count,
        threshold=info.threshold,
        method=info.method,
        create_time=ts,
    )


def _crops(region: Region, grey: np.ndarray, anomaly: np.ndarray, threshold: float) -> tuple[bytes, bytes]:
    """The frame around a defect (its box in the middle, at least CROP_MIN_PX a side) and its heat map."""
    cy, cx = region.y_px + region.height_px // 2, region.x_px + region.width_px // 2
    half_h = max(region.height_px, CROP_MIN_PX) // 2 + 8
    half_w = max(region.width_px, CROP_MIN_PX) // 2 + 8
    top, bottom = max(0, cy - half_h), min(grey.shape[0], cy + half_h)
    left, right = max(0, cx - half_w), min(grey.shape[1], cx + half_w)
    return (
        imaging.encode_png(np.ascontiguousarray(grey[top:bottom, left:right])),
        imaging.heat_map_png(np.ascontiguousarray(anomaly[top:bottom, left:right]), threshold),
    )


def defect_pb(region: Region, mm_per_px: float, position_mm: float) -> pb.Defect:
    d = pb.Defect(
        box=geometry_pb2.BoxPx(
            x_px=region.x_px, y_px=region.y_px, width_px=region.width_px, height_px=region.height_px
        ),
        polygon=geometry_pb2.PolygonPx(
            points=[geometry_pb2.PointPx(x_px=x, y_px=y) for x, y in region.polygon_px]
        ),
        score=region.score,
        type=KIND_TO_PB[region.kind],
        length_px=region.length_px,
    )
    if mm_per_px > 0:
        # Image y runs along the roll (roll x), image x across it (roll y).
        d.box_mm.CopyFrom(
            geometry_pb2.RectMm(
                x_mm=position_mm + region.y_px * mm_per_px,
                y_mm=region.x_px * mm_per_px,
                width_mm=region.height_px * mm_per_px,
                height_mm=region.width_px * mm_per_px,
            )
        )
        d.polygon_mm.CopyFrom(
            geometry_pb2.PolygonMm(
                points=[
                    geometry_pb2.PointMm(x_mm=position_mm + y * mm_per_px, y_mm=x * mm_per_px)
                    for x, y in region.polygon_px
                ]
            )
        )
        d.length_mm = region.length_px * mm_per_px
        d.points = grading.defect_points(d.length_mm, region.kind is DefectKind.HOLE)
    return d


class InspectionServicer(inspection_pb2_grpc.InspectionServiceServicer):
    def __init__(self, profiles: ProfileStore, concurrency: int = 2) -> None:
        self.profiles = profiles
        # Inspection is CPU-bound: more at once than cores only adds latency to each.
        self._slots = threading.BoundedSemaphore(max(1, concurrency))

    # --- profiles -------------------------------------------------------------------------
    def CreateProfile(self, request: pb.CreateProfileRequest, context: grpc.ServicerContext) -> pb.Profile:
        v = Violations()
        _article(v, "article", request.article)
        count = len(request.good_images)
        v.check(
            count >= MIN_PROFILE_IMAGES,
            "good_images",
            f"{count} image(s) given; a profile needs at least {MIN_PROFILE_IMAGES} defect-free images "
            "(10 or more recommended)",
        )
        v.check(
            count <= MAX_PROFILE_IMAGES, "good_images", f"{count} images given; at most {MAX_PROFILE_IMAGES}"
        )
        goods: list[np.ndarray] = []
        budget = images.PixelBudget(MAX_PROFILE_PIXELS, "good_images")
        if MIN_PROFILE_IMAGES <= count <= MAX_PROFILE_IMAGES:
            for i, image in enumerate(request.good_images):
                decoded = _image(v, f"good_images[{i}]", image, budget)
                if decoded is None:
                    continue
                if texture.padding_mask(decoded.grey).all():
                    v.add(
                        f"good_images[{i}].data",
                        "the image has no fabric: all flat white padding, or one grey level throughout",
                    )
                    continue
                goods.append(decoded.grey)
        v.raise_if_any("the profile request is invalid")
        # A caller that gives up (deadline, cancel) stops the training, and nothing is committed
        # unless the commit happened before it gave up (the answer is then lost, the profile kept).
        cancellation = cancellation_from(context)
        self._acquire(cancellation)
        try:
            model = texture.train(goods, check=cancellation.check)
        finally:
            self._slots.release()
        info = self.profiles.save(current_tenant(), request.article, model, before_commit=cancellation.check)
        PROFILES.inc()
        log.info(
            "profile %s v%d trained on %d images, threshold %.3f",
            info.article,
            info.version,
            info.image_count,
            info.threshold,
        )
        return _profile_pb(info)

    def _acquire(self, cancellation: Cancellation) -> None:
        """A CPU slot, waiting no longer than the caller does."""
        while not self._slots.acquire(timeout=0.1):
            cancellation.check()
        try:
            cancellation.check()
        except BaseException:
            self._slots.release()
            raise

    def GetProfile(self, request: pb.GetProfileRequest, context: grpc.ServicerContext) -> pb.Profile:
        v = Violations()
        _article(v, "article", request.article)
        v.check(request.version >= 0, "version", "must be >= 0 (0: the active version)")
        v.raise_if_any()
        return _profile_pb(self._info(request.article, request.version))

    def ListProfiles(
        self, request: pb.ListProfilesRequest, context: grpc.ServicerContext
    ) -> pb.ListProfilesResponse:
        v = Violations()
        v.check(0 <= request.page_size <= MAX_PAGE_SIZE, "page_size", f"must be 0..{MAX_PAGE_SIZE}")
        offset = limits.page_offset(v, request.page_token)
        v.raise_if_any()
        size = request.page_size or DEFAULT_PAGE_SIZE
        found = self.profiles.list(current_tenant(), offset, size + 1)
        token = str(offset + size) if len(found) > size else ""
        return pb.ListProfilesResponse(profiles=[_profile_pb(i) for i in found[:size]], next_page_token=token)

    def _info(self, article: str, version: int = 0) -> ProfileInfo:
        try:
            return self.profiles.info(current_tenant(), article, version)
        except ProfileNotFound as exc:
            raise NotFoundError(str(exc), "atelier.inspection.v1.Profile", article) from None

    def _active(self, article: str) -> tuple[ProfileInfo, texture.TextureModel]:
        try:
            return self.profiles.active(current_tenant(), article)
        except ProfileNotFound as exc:
            raise NotFoundError(str(exc), "atelier.inspection.v1.Profile", article) from None
        except texture.MethodMismatch as exc:
            raise FailedPreconditionError(f"article {article!r}: {exc}") from None

    # --- inspection -----------------------------------------------------------------------
    def _check_frame(
        self, v: Violations, image: image_pb2.Image, mm_per_px: float, position_mm: float
    ) -> imaging.DecodedImage | None:
        decoded = _image(v, "image", image)
        v.check(0.0 <= mm_per_px <= MAX_MM_PER_PX, "mm_per_px", f"must be 0 (unknown) .. {MAX_MM_PER_PX:g}")
        v.check(np.isfinite(position_mm) and position_mm >= 0.0, "position_mm", "must be a finite value >= 0")
        return decoded

    def _inspect(
        self,
        info: ProfileInfo,
        model: texture.TextureModel,
        decoded: imaging.DecodedImage,
        mm_per_px: float,
        position_mm: float,
        include_map: bool,
        include_crops: bool = False,
    ) -> pb.InspectImageResponse:
        started = time.perf_counter()
        if fabric.shows_no_fabric(decoded.grey):
            # Lights off, a lens cap, a gap between rolls: nothing was inspected, so the frame must not
            # pass as good. A stream answers it as a failed frame, and a roll counting it is INCOMPLETE.
            raise FailedPreconditionError(
                "the frame shows no fabric (one grey level throughout, or all flat white padding): "
                "check the camera, its lighting and that cloth is under it; this frame was not inspected"
            )
        with self._slots:
            anomaly, pad = model.score(decoded.grey)
        regions = find_regions(anomaly, model.threshold, decoded.grey, pad)
        image_score = float(anomaly.max())
        defects = [defect_pb(r, mm_per_px, position_mm) for r in regions]
        if include_crops:
            for region, d in zip(regions[:CROPPED_DEFECTS_PER_FRAME], defects, strict=False):
                crop, heat = _crops(region, decoded.grey, anomaly, model.threshold)
                d.crop.CopyFrom(image_pb2.Image(data=crop, mime_type="image/png"))
                d.heat_map.CopyFrom(image_pb2.Image(data=heat, mime_type="image/png"))
        response = pb.InspectImageResponse(
            defective=image_score > model.threshold,
            image_score=image_score,
            defects=defects,
            profile_version=info.version,
            threshold=model.threshold,
        )
        if include_map:
            response.anomaly_map.CopyFrom(
                image_pb2.Image(
                    data=imaging.heat_map_png(anomaly, model.threshold),
                    mime_type="image/png",
                    width_px=decoded.width_px,
                    height_px=decoded.height_px,
                )
            )
        INSPECT_SECONDS.observe(time.perf_counter() - started)
        IMAGES.labels("defective" if response.defective else "good").inc()
        for r in regions:
            DEFECTS.labels(r.kind.value).inc()
        return response

    def InspectImage(
        self, request: pb.InspectImageRequest, context: grpc.ServicerContext
    ) -> pb.InspectImageResponse:
        v = Violations()
        _article(v, "article", request.article)
        decoded = self._check_frame(v, request.image, request.mm_per_px, request.position_mm)
        v.raise_if_any("the image cannot be inspected")
        assert decoded is not None
        info, model = self._active(request.article)
        return self._inspect(
            info,
            model,
            decoded,
            request.mm_per_px,
            request.position_mm,
            request.include_anomaly_map,
            request.include_defect_crops,
        )

    def InspectStream(
        self, request_iterator: Iterator[pb.InspectStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.InspectStreamResponse]:
        # The stream keeps the profile version it started with (per article): one roll, one version.
        pinned: dict[str, tuple[ProfileInfo, texture.TextureModel]] = {}
        article = ""
        for frame in request_iterator:
            try:
                v = Violations()
                if frame.article:
                    _article(v, "article", frame.article)
                    if not v:
                        article = frame.article
                elif not article:
                    v.add("article", "required on the first frame of a stream")
                decoded = self._check_frame(v, frame.image, frame.mm_per_px, frame.position_mm)
                v.raise_if_any(f"frame {frame.frame_index} cannot be inspected")
                assert decoded is not None
                if article not in pinned:
                    pinned[article] = self._active(article)
                info, model = pinned[article]
                result = self._inspect(
                    info,
                    model,
                    decoded,
                    frame.mm_per_px,
                    frame.position_mm,
                    frame.include_anomaly_map,
                    frame.include_defect_crops,
                )
                yield pb.InspectStreamResponse(frame_index=frame.frame_index, result=result)
            except AtelierError as exc:
                FRAME_ERRORS.labels(exc.code_name).inc()
                yield pb.InspectStreamResponse(
                    frame_index=frame.frame_index,
                    error=pb.FrameError(code=exc.code_name, message=exc.message),
                )
            except Exception:  # one frame's unexpected failure must not end the line's stream
                log.exception("frame %d failed", frame.frame_index)
                FRAME_ERRORS.labels("INTERNAL").inc()
                yield pb.InspectStreamResponse(
                    frame_index=frame.frame_index,
                    error=pb.FrameError(
                        code="INTERNAL", message="internal error inspecting this frame (see log)"
                    ),
                )

    # --- grading --------------------------------------------------------------------------
    def GradeRoll(self, request: pb.GradeRollRequest, context: grpc.ServicerContext) -> pb.GradeRollResponse:
        v = Violations()
        v.check(0 < len(request.roll_id) <= 128, "roll_id", "required: 1-128 characters")
        v.check(
            MIN_ROLL_MM <= request.roll_width_mm <= MAX_ROLL_WIDTH_MM,
            "roll_width_mm",
            f"must be {MIN_ROLL_MM:g}..{MAX_ROLL_WIDTH_MM:g} mm",
        )
        unknown_only = bool(request.uninspected) and all(u.length_mm == 0 for u in request.uninspected)
        v.check(
            (request.roll_length_mm >= MIN_ROLL_MM or (request.roll_length_mm == 0 and unknown_only))
            and request.roll_length_mm <= MAX_ROLL_LENGTH_MM,
            "roll_length_mm",
            f"must be {MIN_ROLL_MM:g}..{MAX_ROLL_LENGTH_MM:g} mm (0 only when every uninspected stretch "
            "has an unknown length)",
        )
        uninspected: list[grading.Uninspected] = []
        for i, u in enumerate(request.uninspected):
            ok = v.check(
                np.isfinite(u.length_mm) and u.length_mm >= 0,
                f"uninspected[{i}].length_mm",
                "must be a finite value >= 0 (0: unknown)",
            )
            ok &= v.check(
                np.isfinite(u.position_mm) and u.position_mm >= 0,
                f"uninspected[{i}].position_mm",
                "must be a finite value >= 0",
            )
            if ok:
                uninspected.append(
                    grading.Uninspected(u.frame_index, u.name, u.position_mm, u.length_mm, u.reason)
                )
        v.check(
            sum(u.length_mm for u in uninspected) <= request.roll_length_mm + 1e-6,
            "uninspected",
            "the uninspected stretches are longer than the roll (roll_length_mm is the whole roll)",
        )
        v.check(
            request.max_points_per_100_sq_yd > 0,
            "max_points_per_100_sq_yd",
            "must be > 0 (a common limit is 40)",
        )
        v.check(len(request.defects) <= MAX_GRADE_DEFECTS, "defects", f"at most {MAX_GRADE_DEFECTS}")
        defects: list[grading.GradeDefect] = []
        for i, d in enumerate(request.defects[:MAX_GRADE_DEFECTS]):
            ok = v.check(
                d.length_mm > 0 and np.isfinite(d.length_mm),
                f"defects[{i}].length_mm",
                "must be > 0: the defect's longest extent in mm",
            )
            ok &= v.check(
                d.box_mm.x_mm >= 0
                and (request.roll_length_mm <= 0 or d.box_mm.x_mm <= request.roll_length_mm),
                f"defects[{i}].box_mm.x_mm",
                "must lie on the roll: 0 .. roll_length_mm",
            )
            ok &= v.check(
                d.type in pb.DefectType.values(), f"defects[{i}].type", f"unknown defect type {d.type}"
            )
            if ok:
                defects.append(
                    grading.GradeDefect(
                        position_mm=d.box_mm.x_mm,
                        across_mm=d.box_mm.y_mm,
                        length_mm=d.length_mm,
                        width_mm=d.box_mm.width_mm,
                        height_mm=d.box_mm.height_mm,
                        is_hole=d.type == pb.DEFECT_TYPE_HOLE,
                        kind=pb.DefectType.Name(d.type).removeprefix("DEFECT_TYPE_").lower(),
                        score=d.score,
                        crop_png=d.crop.data,
                        heat_png=d.heat_map.data,
                    )
                )
        v.raise_if_any("the roll cannot be graded")
        grade = grading.grade_roll(
            request.roll_id,
            request.roll_width_mm,
            request.roll_length_mm,
            defects,
            request.max_points_per_100_sq_yd,
            uninspected,
        )
        ROLL_POINTS.observe(grade.points_per_100_sq_yd)
        out_defects = []
        for d, g in zip(request.defects, grade.defects, strict=True):
            copy = pb.Defect()
            copy.CopyFrom(d)
            copy.points = g.points
            out_defects.append(copy)
        return pb.GradeRollResponse(
            total_points=grade.total_points,
            points_per_100_sq_yd=grade.points_per_100_sq_yd,
            points_per_100_m2=grade.points_per_100_m2,
            **{"pass": grade.passed},
            defects=out_defects,
            report_html=grading.report_html(grade) if request.include_report else b"",
            report_json=grading.report_json(grade),
            verdict=VERDICT_TO_PB[grade.verdict],
            inspected_length_mm=grade.inspected_length_mm,
            uninspected_length_mm=grade.uninspected_length_mm,
        )
