"""The gRPC servicer: validates requests once, converts protobuf <-> domain, calls the engine."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from google.longrunning import operations_pb2
from google.protobuf import timestamp_pb2
from prometheus_client import Counter, Histogram

from atelier.common.v1 import money_pb2
from atelier.recommendations import colours
from atelier.recommendations.engine import (
    EXCLUDE,
    EXCLUDE_UNLESS_REBOUGHT,
    INCLUDE,
    Engine,
    Filter,
    Scored,
)
from atelier.recommendations.store import CatalogItem, DominantColour, Event, EventType, RecsStore
from atelier.recommendations.training import TrainParams, train
from atelier.recommendations.v1 import recommendations_pb2 as pb
from atelier.recommendations.v1 import recommendations_pb2_grpc as pb_grpc
from atelier.runtime import images
from atelier.runtime.context import current_tenant
from atelier.runtime.errors import NotFoundError, Violations
from atelier.runtime.jobs import JobHandle, JobManager

MAX_ITEMS_PER_UPSERT = 1000
MAX_EVENTS_PER_MESSAGE = 10000
MAX_ID_CHARS = 128
MAX_IMAGE_BYTES = colours.PHOTO_LIMITS.max_bytes
MAX_IMAGE_SIDE_PX = colours.PHOTO_LIMITS.max_side_px
# All product photos of one UpsertItems call together: 1000 photos of 4096 x 4096 px would be
# 16.8 gigapixels of decoding in one call; 256 MP is 1000 photos of 512 x 512 or 15 of 16 MP.
MAX_UPSERT_PIXELS = 256 * 1024 * 1024
MAX_N = 100
DEFAULT_N = 10
MAX_LOOK_ITEMS = 50
MAX_FACTORS = 512
MAX_ITERATIONS = 200
EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)
MAX_QUANTITY = 1_000_000
MAX_TEST_DAYS = 365
MAX_EVAL_USERS = 100_000

POLICIES: dict[int, str] = {
    pb.PURCHASED_POLICY_INCLUDE: INCLUDE,
    pb.PURCHASED_POLICY_EXCLUDE: EXCLUDE,
    pb.PURCHASED_POLICY_EXCLUDE_UNLESS_REBOUGHT: EXCLUDE_UNLESS_REBOUGHT,
}
POLICY_ENUM: dict[str, int] = {v: k for k, v in POLICIES.items()}

QUERY_SECONDS = Histogram(
    "atelier_recommendations_query_seconds",
    "Scoring time per query (in the domain)",
    ["query"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
# Recommend's child, looked up once: it runs on every call.
RECOMMEND_SECONDS = QUERY_SECONDS.labels("recommend")
EVENTS = Counter("atelier_recommendations_events_total", "Events accepted", ["type"])
DUPLICATES = Counter("atelier_recommendations_duplicate_events_total", "Events ignored as already recorded")
UNKNOWN_ITEM_EVENTS = Counter(
    "atelier_recommendations_unknown_item_events_total", "Events accepted for items not in the catalogue"
)
COLOURS = Counter(
    "atelier_recommendations_colour_extractions_total", "Product photos whose colours were extracted"
)

ALGORITHMS = {pb.ALGORITHM_UNSPECIFIED: "als", pb.ALGORITHM_ALS: "als", pb.ALGORITHM_BPR: "bpr"}
ALGORITHM_ENUM: dict[str, int] = {"als": pb.ALGORITHM_ALS, "bpr": pb.ALGORITHM_BPR}


def _check_id(v: Violations, value: str, path: str, required: bool = True) -> None:
    if required and not value:
        v.add(path, "required")
    elif len(value) > MAX_ID_CHARS:
        v.add(path, f"at most {MAX_ID_CHARS} characters")


def _money(v: Violations, money: money_pb2.Money, path: str) -> float | None:
    if not money.ByteSize():
        return None
    ok = v.check(
        money.units >= 0 and 0 <= money.nanos < 1_000_000_000,
        path,
        "must not be negative; nanos 0..999999999",
    )
    return money.units + money.nanos / 1e9 if ok else None


def _n(v: Violations, n: int) -> int:
    v.check(0 <= n <= MAX_N, "n", f"must be 1..{MAX_N} (0 means {DEFAULT_N})")
    return n or DEFAULT_N


def _filter(v: Violations, f: pb.Filter) -> Filter:
    lo = _money(v, f.min_price, "filter.min_price")
    hi = _money(v, f.max_price, "filter.max_price")
    if lo is not None and hi is not None:
        v.check(lo <= hi, "filter.max_price", "must be >= filter.min_price")
    policy = ""
    if f.purchased:
        if v.check(f.purchased in POLICIES, "filter.purchased", "unknown PurchasedPolicy"):
            policy = POLICIES[f.purchased]
    elif f.exclude_purchased:  # the deprecated switch, as it meant before
        policy = EXCLUDE
    return Filter(
        categories=tuple(c.strip().lower() for c in f.categories),
        size=f.size.strip(),
        min_price=lo,
        max_price=hi,
        colours=tuple(c.strip().lower() for c in f.colours),
        purchased=policy,
    )


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def _recs(items: list[Scored]) -> list[pb.Recommendation]:
    return [
        pb.Recommendation(
            item_id=s.item_id, score=s.score, reason=s.reason, category=s.category, source=s.source
        )
        for s in items
    ]


class RecommendationsServicer(pb_grpc.RecommendationsServiceServicer):
    def __init__(
        self, store: RecsStore, engine: Engine, jobs: JobManager, store_url: str, models_dir: str
    ) -> None:
        self.store = store
        self.engine = engine
        self.jobs = jobs
        self.store_url = store_url
        self.models_dir = models_dir

    # -- catalogue ------------------------------------------------------------------------------

    def UpsertItems(self, request: pb.UpsertItemsRequest, context: Any) -> pb.UpsertItemsResponse:
        v = Violations()
        v.check(
            1 <= len(request.items) <= MAX_ITEMS_PER_UPSERT,
            "items",
            f"1..{MAX_ITEMS_PER_UPSERT} items a call",
        )
        items: list[CatalogItem] = []
        budget = images.PixelBudget(MAX_UPSERT_PIXELS, "items.image")
        seen: set[str] = set()
        extracted = 0
        for k, item in enumerate(request.items):
            path = f"items[{k}]"
            _check_id(v, item.item_id, f"{path}.item_id")
            if item.item_id in seen:
                v.add(f"{path}.item_id", "repeated in this request")
            seen.add(item.item_id)
            category = item.category.strip().lower()
            if not category:
                v.add(f"{path}.category", "required")
            elif len(category) > 64:
                v.add(f"{path}.category", "at most 64 characters")
            price = _money(v, item.price, f"{path}.price")
            found: list[DominantColour] = []
            if item.image.data:
                rgb = images.check(v, f"{path}.image.data", item.image.data, colours.PHOTO_LIMITS, budget=budget)
                if rgb is not None:
                    found = colours.dominant_colours(rgb)
                    extracted += 1
            items.append(
                CatalogItem(
                    item_id=item.item_id,
                    category=category,
                    colours=sorted({c.strip().lower() for c in item.colours if c.strip()}),
                    style=item.style,
                    silhouette=item.silhouette,
                    material=item.material,
                    price=price,
                    currency=item.price.currency_code,
                    sizes_in_stock=sorted({s.strip() for s in item.sizes_in_stock}),
                    attributes=dict(item.attributes),
                    image_colours=found,
                    had_image=bool(item.image.data),
                )
            )
        v.raise_if_any("the items are invalid")
        tenant = current_tenant()
        self.store.upsert_items(tenant, items)
        COLOURS.inc(extracted)
        self.engine.items_changed(tenant, items)
        return pb.UpsertItemsResponse(upserted=len(items), colours_extracted=extracted)

    def GetItem(self, request: pb.GetItemRequest, context: Any) -> pb.Item:
        v = Violations()
        _check_id(v, request.item_id, "item_id")
        v.raise_if_any()
        item = self.store.get_item(current_tenant(), request.item_id)
        if item is None:
            raise NotFoundError(f"item {request.item_id!r} is not in the catalogue", "Item", request.item_id)
        out = pb.Item(
            item_id=item.item_id,
            category=item.category,
            colours=item.colours,
            style=item.style,
            silhouette=item.silhouette,
            material=item.material,
            sizes_in_stock=item.sizes_in_stock,
            attributes=item.attributes,
            dominant_colours=[
                pb.DominantColour(name=c.name, hex_rgb=c.hex_rgb, fraction=c.fraction)
                for c in item.image_colours
            ],
        )
        if item.price is not None:
            units = int(item.price)
            out.price.CopyFrom(
                money_pb2.Money(
                    currency_code=item.currency, units=units, nanos=round((item.price - units) * 1e9)
                )
            )
        return out

    # -- events ---------------------------------------------------------------------------------

    def _events(self, request: pb.RecordEventsRequest | pb.StreamEventsRequest) -> list[Event]:
        v = Violations()
        v.check(
            1 <= len(request.events) <= MAX_EVENTS_PER_MESSAGE,
            "events",
            f"1..{MAX_EVENTS_PER_MESSAGE} events a message",
        )
        latest = datetime.now(UTC) + timedelta(days=1)
        events: list[Event] = []
        for k, e in enumerate(request.events):
            path = f"events[{k}]"
            _check_id(v, e.event_id, f"{path}.event_id")
            _check_id(v, e.user_id, f"{path}.user_id")
            _check_id(v, e.item_id, f"{path}.item_id")
            _check_id(v, e.basket_id, f"{path}.basket_id", required=False)
            _check_id(v, e.segment, f"{path}.segment", required=False)
            if e.type not in (
                pb.EVENT_TYPE_VIEW,
                pb.EVENT_TYPE_ADD_TO_CART,
                pb.EVENT_TYPE_PURCHASE,
                pb.EVENT_TYPE_RETURN,
            ):
                v.add(f"{path}.type", "must be VIEW, ADD_TO_CART, PURCHASE or RETURN")
            when: datetime | None = None
            if not e.HasField("time"):
                v.add(f"{path}.time", "required")
            else:
                try:
                    if not 0 <= e.time.nanos < 1_000_000_000:
                        raise ValueError("nanos out of range")
                    when = e.time.ToDatetime(tzinfo=UTC)
                except (ValueError, OverflowError, OSError):
                    v.add(f"{path}.time", "not a valid timestamp")
                if when is not None and not EARLIEST_EVENT <= when <= latest:
                    v.add(f"{path}.time", "must be between 2000-01-01 and one day from now")
                    when = None
            quantity = e.quantity or 1.0
            if not (0 <= e.quantity <= MAX_QUANTITY):  # also NaN
                v.add(
                    f"{path}.quantity",
                    f"must be 0..{MAX_QUANTITY} (0 means 1); a return is type RETURN with a positive quantity",
                )
            value = _money(v, e.value, f"{path}.value")
            if when is not None and e.type in (1, 2, 3, 4):
                events.append(
                    Event(
                        e.event_id,
                        e.user_id,
                        e.item_id,
                        EventType(e.type),
                        when,
                        e.basket_id,
                        e.segment,
                        quantity=quantity,
                        value=value,
                    )
                )
        v.raise_if_any("the events are invalid")
        return events

    def _record(
        self, events: list[Event], response: pb.RecordEventsResponse | pb.StreamEventsResponse
    ) -> None:
        tenant = current_tenant()
        result = self.store.record_events(tenant, events)  # committed: durable from here on
        response.accepted += len(result.accepted)
        response.duplicates += result.duplicates
        response.unknown_items.extend(result.unknown_item_event_ids)
        for e in result.accepted:
            EVENTS.labels(e.type.name.lower()).inc()
        DUPLICATES.inc(result.duplicates)
        UNKNOWN_ITEM_EVENTS.inc(len(result.unknown_item_event_ids))
        if result.accepted:
            response.users_folded_in += self.engine.record(tenant, result.accepted)

    def RecordEvents(self, request: pb.RecordEventsRequest, context: Any) -> pb.RecordEventsResponse:
        response = pb.RecordEventsResponse()
        self._record(self._events(request), response)
        return response

    def StreamEvents(
        self, request_iterator: Iterable[pb.StreamEventsRequest], context: Any
    ) -> pb.StreamEventsResponse:
        # Each message is validated and committed on its own; an invalid message ends the stream
        # with INVALID_ARGUMENT, the messages before it stay recorded (a retry is idempotent).
        response = pb.StreamEventsResponse()
        for request in request_iterator:
            self._record(self._events(request), response)
        return response

    # -- models ---------------------------------------------------------------------------------

    def TrainModel(self, request: pb.TrainModelRequest, context: Any) -> operations_pb2.Operation:
        v = Violations()
        v.check(request.algorithm in ALGORITHMS, "algorithm", "must be ALS or BPR")
        v.check(0 <= request.factors <= MAX_FACTORS, "factors", f"must be 0..{MAX_FACTORS} (0 means 64)")
        v.check(
            0 <= request.iterations <= MAX_ITERATIONS,
            "iterations",
            f"must be 0..{MAX_ITERATIONS} (0 means 15)",
        )
        v.check(request.regularization >= 0, "regularization", "must be >= 0")
        v.check(request.recency_half_life_days >= 0, "recency_half_life_days", "must be >= 0 (0 means 60)")
        v.raise_if_any("the training request is invalid")
        algorithm = ALGORITHMS[request.algorithm]
        params = TrainParams(algorithm=algorithm, models_dir=self.models_dir)
        params = replace(
            params,
            factors=request.factors or params.factors,
            iterations=request.iterations or params.iterations,
            regularization=request.regularization or (0.01 if algorithm == "bpr" else params.regularization),
            recency_half_life_days=request.recency_half_life_days or params.recency_half_life_days,
        )
        activate = request.activate if request.HasField("activate") else True
        tenant = current_tenant()

        def run(handle: JobHandle) -> pb.ModelVersion:
            path = train(
                self.store_url,
                tenant,
                params,
                progress=lambda f, m: handle.progress(f, m, steps_total=params.iterations),
                artefacts=self.engine.artefacts,
            )
            row = next(r for r in self.store.versions(tenant) if r["path"] == path)
            if activate:
                handle.progress(0.98, "activating")
                self.engine.rebuild(tenant, "new model", version=row)
                self.store.activate(tenant, int(row["version"]))
                row = {**row, "active": True}
            return self._version(row)

        name = self.jobs.submit("train", run, tenant=tenant)
        return self.jobs.get(name)

    def EvaluateModel(self, request: pb.EvaluateModelRequest, context: Any) -> operations_pb2.Operation:
        v = Violations()
        v.check(
            0 <= request.test_days <= MAX_TEST_DAYS, "test_days", f"must be 0..{MAX_TEST_DAYS} (0 means 14)"
        )
        v.check(0 <= request.k <= MAX_N, "k", f"must be 0..{MAX_N} (0 means 12)")
        v.check(
            0 <= request.max_users <= MAX_EVAL_USERS,
            "max_users",
            f"must be 0..{MAX_EVAL_USERS} (0 means 5000)",
        )
        v.raise_if_any("the evaluation request is invalid")
        tenant = current_tenant()
        test_days, k, max_users = request.test_days or 14.0, request.k or 12, request.max_users or 5000

        def run(handle: JobHandle) -> pb.EvaluationReport:
            from atelier.recommendations.evaluation import evaluate
            from atelier.runtime.errors import FailedPreconditionError

            handle.progress(0.0, "loading events")
            events = self.store.load_events(tenant)
            items = self.store.load_items(tenant)
            if len(events) == 0 or not items:
                raise FailedPreconditionError(f"tenant {tenant!r} has no catalogue or no events to evaluate")
            try:
                report = evaluate(
                    events,
                    items,
                    self.store.segments(tenant),
                    test_days=test_days,
                    k=k,
                    max_users=max_users,
                    progress=lambda f, m: handle.progress(f, m),
                )
            except ValueError as exc:  # nobody to evaluate on: the data, not the server
                raise FailedPreconditionError(str(exc)) from exc
            return evaluation_report(report)

        name = self.jobs.submit("evaluate", run, tenant=tenant)
        return self.jobs.get(name)

    def GetSettings(self, request: pb.GetSettingsRequest, context: Any) -> pb.TenantSettings:
        policy = self.engine.purchased_policy(current_tenant())
        return pb.TenantSettings(purchased=POLICY_ENUM[policy])  # type: ignore[arg-type]

    def UpdateSettings(self, request: pb.UpdateSettingsRequest, context: Any) -> pb.TenantSettings:
        v = Violations()
        purchased = request.settings.purchased
        v.check(
            purchased == pb.PURCHASED_POLICY_UNSPECIFIED or purchased in POLICIES,
            "settings.purchased",
            "unknown PurchasedPolicy",
        )
        v.raise_if_any("the settings are invalid")
        tenant = current_tenant()
        if purchased:
            self.engine.set_purchased_policy(tenant, POLICIES[purchased])
        return self.GetSettings(pb.GetSettingsRequest(), context)

    @staticmethod
    def _version(row: dict[str, Any]) -> pb.ModelVersion:
        import json

        params = json.loads(str(row.get("params") or "{}"))
        return pb.ModelVersion(
            version=int(row["version"]),
            algorithm=ALGORITHM_ENUM.get(row["algorithm"], 0),  # type: ignore[arg-type]
            users=int(row["users"]),
            items=int(row["items"]),
            create_time=_timestamp(row["create_time"]),
            active=bool(row["active"]),
            train_seconds=float(row["train_seconds"]),
            interactions=int(row["interactions"]),
            factors=int(row["factors"]),
            ranked_users=int(params.get("ranked_users", 0)),
        )

    def ListModelVersions(
        self, request: pb.ListModelVersionsRequest, context: Any
    ) -> pb.ListModelVersionsResponse:
        return pb.ListModelVersionsResponse(
            versions=[self._version(r) for r in self.store.versions(current_tenant())]
        )

    # -- queries --------------------------------------------------------------------------------

    def Recommend(self, request: pb.RecommendRequest, context: Any) -> pb.RecommendResponse:
        v = Violations()
        _check_id(v, request.user_id, "user_id")
        _check_id(v, request.segment, "segment", required=False)
        n = _n(v, request.n)
        flt = _filter(v, request.filter)
        v.raise_if_any("the recommendation request is invalid")
        started = time.perf_counter()
        result = self.engine.recommend(
            current_tenant(), request.user_id, n, flt, request.segment, request.diversify
        )
        RECOMMEND_SECONDS.observe(time.perf_counter() - started)
        return pb.RecommendResponse(
            recommendations=_recs(result.items),
            model_version=result.model_version,
            cold_start=result.cold_start,
        )

    def _known(self, item_ids: list[str], paths: list[str]) -> None:
        index = self.engine.state(current_tenant()).catalog.index
        for item_id, path in zip(item_ids, paths, strict=True):
            if item_id not in index:
                raise NotFoundError(f"{path}: item {item_id!r} is not in the catalogue", "Item", item_id)

    def SimilarItems(self, request: pb.SimilarItemsRequest, context: Any) -> pb.SimilarItemsResponse:
        v = Violations()
        _check_id(v, request.item_id, "item_id")
        n = _n(v, request.n)
        flt = _filter(v, request.filter)
        v.raise_if_any("the similar-items request is invalid")
        self._known([request.item_id], ["item_id"])
        started = time.perf_counter()
        items = self.engine.similar_items(current_tenant(), request.item_id, n, flt)
        QUERY_SECONDS.labels("similar_items").observe(time.perf_counter() - started)
        return pb.SimilarItemsResponse(items=_recs(items))

    def CompleteTheLook(self, request: pb.CompleteTheLookRequest, context: Any) -> pb.CompleteTheLookResponse:
        v = Violations()
        v.check(1 <= len(request.item_ids) <= MAX_LOOK_ITEMS, "item_ids", f"1..{MAX_LOOK_ITEMS} item ids")
        for k, item_id in enumerate(request.item_ids):
            _check_id(v, item_id, f"item_ids[{k}]")
        n = _n(v, request.n)
        flt = _filter(v, request.filter)
        v.raise_if_any("the complete-the-look request is invalid")
        ids = list(dict.fromkeys(request.item_ids))
        self._known(ids, [f"item_ids[{list(request.item_ids).index(i)}]" for i in ids])
        started = time.perf_counter()
        items = self.engine.complete_the_look(current_tenant(), ids, n, flt)
        QUERY_SECONDS.labels("complete_the_look").observe(time.perf_counter() - started)
        return pb.CompleteTheLookResponse(items=_recs(items))


def evaluation_report(report: Any) -> pb.EvaluationReport:
    """Domain EvaluationReport -> protobuf."""
    import json

    return pb.EvaluationReport(
        k=report.k,
        test_days=report.test_days,
        users_evaluated=report.users_evaluated,
        train_events=report.train_events,
        items=report.items,
        methods=[
            pb.MethodMetrics(
                name=m.name,
                map_at_k=m.map_at_k,
                recall_at_k=m.recall_at_k,
                ndcg_at_k=m.ndcg_at_k,
                coverage=m.coverage,
                novelty_bits=m.novelty,
                seconds=m.seconds,
            )
            for m in report.methods
        ],
        best_baseline=report.best_baseline,
        lift=report.lift,
        lift_ci_low=report.lift_low,
        lift_ci_high=report.lift_high,
        details_json=json.dumps(report.as_dict()),
    )
