"""An HTTP API in the shape of the AUTOMATIC1111 web UI's (``/sdapi/v1/...``), for the tools designers
already have (Krita and Photoshop plug-ins, scripts written for the web UI, the ``webuiapi`` client).

It is a second door to the same service, not a second service: a txt2img or img2img call becomes a
``GenerateRequest``, is validated by the gRPC servicer's own boundary code, and runs through
:meth:`GenerationService.generate` (the same device queue, model cache, sessions and metrics).
Keys, tenants and roles are the gRPC port's (``runtime.auth.Authoriser``): the key comes as
``Authorization: Bearer <key>``, ``X-Api-Key: <key>`` or HTTP basic auth with the key as the password
(what a client made for ``--api-auth user:pass`` sends); ``X-Atelier-Tenant`` picks a tenant of a
multi-tenant key. Generation calls take a slot of the same load shedder as gRPC calls.

What the web UI does that this does not (refused with 422, never silently dropped, when a request
asks for it): hires fix, face restoration, styles, scripts and always-on scripts, variation seeds,
hypernetworks, resize modes other than "just resize". Sampler internals (eta, s_churn, ...), saving to
disk and mask blur are accepted and ignored (README: "A1111-compatible HTTP API").
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import functools
import io
import json
import logging
import math
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
import numpy as np
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.datastructures import Headers, MutableHeaders

import atelier
from atelier.common.v1 import image_pb2
from atelier.generation import engine
from atelier.generation.models import CHECKPOINT_KINDS, ModelEntry, ModelState
from atelier.generation.service import Finished, GenerationService, Queued
from atelier.generation.servicer import GenerationServicer
from atelier.generation.v1 import generation_pb2 as pb
from atelier.runtime import images, limits
from atelier.runtime.auth import TENANT_HEADER, Authoriser
from atelier.runtime.config import ServiceConfig
from atelier.runtime.context import Cancellation, request_id_var, tenant_var
from atelier.runtime.errors import (
    AtelierError,
    CancelledError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    UnauthenticatedError,
)
from atelier.runtime.keys import Role
from atelier.runtime.readiness import outage_error
from atelier.runtime.shedding import Admission
from atelier.runtime.storage import Migration, Store, create_tables, tenant_column, utcnow

log = logging.getLogger("atelier.generation.webui")

GRPC_SERVICE = "atelier.generation.v1.GenerationService"
PREFIX = "/sdapi/v1"

HTTP_REQUESTS = Counter(
    "atelier_generation_http_requests_total",
    "Calls of the A1111-compatible HTTP API, by route and HTTP status.",
    ("route", "code"),
)
HTTP_SECONDS = Histogram(
    "atelier_generation_http_request_seconds",
    "Wall time of A1111-compatible HTTP calls.",
    ("route",),
    buckets=(0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160),
)

# The web UI's sampler names (and its k-diffusion aliases) -> engine.SCHEDULERS keys.
SAMPLERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Euler a": ("euler_a", ("k_euler_a", "k_euler_ancestral")),
    "Euler": ("euler", ("k_euler",)),
    "LMS": ("lms", ("k_lms",)),
    "Heun": ("heun", ("k_heun",)),
    "DPM++ 2M": ("dpmpp_2m", ("k_dpmpp_2m",)),
    "DDIM": ("ddim", ()),
    "PLMS": ("pndm", ()),
    "UniPC": ("unipc", ()),
}
_SAMPLER_LOOKUP = {
    alias.lower(): engine_name
    for name, (engine_name, aliases) in SAMPLERS.items()
    for alias in (name, *aliases)
}
# The web UI's "Automatic" noise schedule is each sampler's own: the only one the engine has.
SCHEDULES = ("automatic",)

# Per-tenant options a GET returns before the tenant set any (the web UI's defaults for these keys).
DEFAULT_OPTIONS: dict[str, Any] = {
    "samples_format": "png",
    "show_progress_every_n_steps": 10,
    "live_previews_enable": True,
    "CLIP_stop_at_last_layers": 1,
    "sd_vae": "Automatic",
    "eta_noise_seed_delta": 0,
}
MAX_OPTION_KEYS = 128
MAX_OPTIONS_JSON_BYTES = 64 * 1024

# Request fields the engine has no equivalent for: refused when they ask for something.
UNSUPPORTED_WHEN_SET: dict[str, str] = {
    "enable_hr": "hires fix is not available: generate at the size wanted, then img2img",
    "restore_faces": "face restoration is not available",
    "styles": "saved prompt styles are not available: put the style's words in the prompt",
    "script_name": "web UI scripts are not available",
    "alwayson_scripts": "web UI extensions (always-on scripts) are not available",
    "subseed_strength": "variation seeds are not available",
}
_LORA = re.compile(r"<(lora|lyco):([^:>]+)(?::([^:>]*))?(?::[^>]*)?>", re.IGNORECASE)
_OTHER_EXTRA_NETWORK = re.compile(r"<(hypernet|hypernetwork):[^>]*>", re.IGNORECASE)

# gRPC field paths of the servicer's violations -> the web UI's field names.
FIELD_NAMES = {
    "model": "override_settings.sd_model_checkpoint",
    "settings.prompt": "prompt",
    "settings.negative_prompt": "negative_prompt",
    "settings.strength": "denoising_strength",
    "settings.guidance_scale": "cfg_scale",
    "settings.steps": "steps",
    "settings.scheduler": "sampler_name",
    "settings.seed": "seed",
    "settings.width_px": "width",
    "settings.height_px": "height",
    "settings.loras": "prompt",
    "settings.lora_weights": "prompt",
    "settings.refiner": "refiner_checkpoint",
    "settings.refiner_switch": "refiner_switch_at",
    "num_images": "batch_size",
    "init_image": "init_images",
    "init_image.data": "init_images[0]",
    "mask.data": "mask",
    "session_image_index": "init_images",
}

ROUTES = frozenset(
    f"{PREFIX}/{name}"
    for name in (
        "txt2img",
        "img2img",
        "sd-models",
        "refresh-checkpoints",
        "options",
        "progress",
        "interrupt",
        "samplers",
        "schedulers",
        "loras",
        "scripts",
    )
)

HTTP_STATUS = {
    "INVALID_ARGUMENT": 422,
    "NOT_FOUND": 404,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "FAILED_PRECONDITION": 409,
    "CANCELLED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "UNIMPLEMENTED": 501,
    "ALREADY_EXISTS": 409,
}

T = TypeVar("T")


# -- requests ---------------------------------------------------------------------------------------


class Txt2ImgRequest(BaseModel):
    """The web UI's txt2img body: every field its API documents is accepted; unknown ones are ignored."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    restore_faces: bool | None = False
    tiling: bool | None = False
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    script_name: str | None = None
    script_args: list[Any] = []
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] | None = None
    infotext: str | None = None
    force_task_id: str | None = None
    # txt2img's hires-fix fields (only enable_hr matters: refused when true).
    enable_hr: bool = False
    denoising_strength: float | None = None
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""


class Img2ImgRequest(Txt2ImgRequest):
    init_images: list[str] | None = None
    resize_mode: int = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur: int | None = None
    mask_blur_x: int | None = None
    mask_blur_y: int | None = None
    inpainting_fill: int = 0
    inpaint_full_res: bool | int = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False


# -- per-tenant options, kept in the service's database (shared by every replica) ----------------------

_metadata = sa.MetaData()
_options = sa.Table(
    "generation_webui_options",
    _metadata,
    tenant_column(),
    sa.Column("options", sa.Text, nullable=False),  # JSON object
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id"),
)
MIGRATIONS = [Migration(1, "options set through the A1111-compatible HTTP API", create_tables(_options))]


class OptionsStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate("generation_webui", MIGRATIONS)

    def get(self, tenant: str) -> dict[str, Any]:
        with self.store.engine.connect() as conn:
            row = conn.execute(sa.select(_options.c.options).where(_options.c.tenant_id == tenant)).first()
        return dict(json.loads(row.options)) if row is not None else {}

    def update(self, tenant: str, changes: dict[str, Any]) -> dict[str, Any]:
        with self.store.engine.begin() as conn:
            row = conn.execute(sa.select(_options.c.options).where(_options.c.tenant_id == tenant)).first()
            merged = {**(json.loads(row.options) if row is not None else {}), **changes}
            text = json.dumps(merged, sort_keys=True)
            if len(merged) > MAX_OPTION_KEYS or len(text.encode()) > MAX_OPTIONS_JSON_BYTES:
                raise InvalidArgumentError(
                    f"the options would hold {len(merged)} keys / {len(text.encode())} bytes: at most "
                    f"{MAX_OPTION_KEYS} keys and {MAX_OPTIONS_JSON_BYTES} bytes are kept per tenant"
                )
            if row is None:
                conn.execute(_options.insert().values(tenant_id=tenant, options=text, updated_at=utcnow()))
            else:
                conn.execute(
                    _options.update()
                    .where(_options.c.tenant_id == tenant)
                    .values(options=text, updated_at=utcnow())
                )
        return merged


# -- progress of the jobs started over HTTP, per tenant ----------------------------------------------


@dataclass
class HttpJob:
    tenant: str
    kind: str  # "txt2img" or "img2img"
    cancellation: Cancellation
    started_monotonic: float = field(default_factory=time.monotonic)
    timestamp: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y%m%d%H%M%S"))
    queue_position: int = -1  # -1: not known yet; 0: on the device
    step: int = 0
    total_steps: int = 0
    preview: Image.Image | None = None
    interrupted: bool = False


class Jobs:
    """The tenant's HTTP jobs in the order they came, for /progress and /interrupt."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: list[HttpJob] = []

    def add(self, job: HttpJob) -> None:
        with self._lock:
            self._jobs.append(job)

    def remove(self, job: HttpJob) -> None:
        with self._lock:
            if job in self._jobs:
                self._jobs.remove(job)

    def of(self, tenant: str) -> list[HttpJob]:
        with self._lock:
            return [j for j in self._jobs if j.tenant == tenant]

    def interrupt(self, tenant: str) -> int:
        jobs = self.of(tenant)
        for job in jobs:
            job.interrupted = True
            job.cancellation.cancel("interrupted by /sdapi/v1/interrupt")
        return len(jobs)


# -- helpers ----------------------------------------------------------------------------------------


def _b64_png(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def _image_b64(img: Image.Image) -> str:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return _b64_png(buffer.getvalue())


def decode_b64(value: str, field_path: str) -> bytes:
    """The bytes of a base64 image as the web UI takes it (optionally a data: URL); never a URL to fetch."""
    text = "".join(value.split())  # line-wrapped base64 (some clients wrap at 76 characters)
    if text.startswith(("http://", "https://")):
        raise InvalidArgumentError.for_field(
            field_path, "is a URL: images are not fetched by the server, send them base64-encoded"
        )
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgumentError.for_field(field_path, "is not valid base64") from None
    if not data:
        raise InvalidArgumentError.for_field(field_path, "is empty")
    return data


def png_parameters(png: bytes) -> str:
    """The web UIs' 'parameters' text chunk the engine writes into every PNG."""
    with Image.open(io.BytesIO(png)) as img:
        return str(img.info.get("parameters", ""))


def entry_title(entry: ModelEntry) -> str:
    """The web UI's checkpoint title: the file name (the web UI appends " [hash]" once it hashed it)."""
    return entry.path.name if entry.path.is_file() else entry.name


def _rename(exc: InvalidArgumentError) -> InvalidArgumentError:
    """The servicer's field paths in the web UI's names, so a client sees the fields it sent."""

    def name(path: str) -> str:
        if path in FIELD_NAMES:
            return FIELD_NAMES[path]
        head = path.split("[", 1)[0]
        return FIELD_NAMES.get(head, path)

    violations = [FieldViolation(name(v.field), v.description) for v in exc.violations]
    if not violations:
        return exc
    shown = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
    return InvalidArgumentError(f"the request is invalid: {shown}", violations)


def error_response(exc: AtelierError) -> JSONResponse:
    status = HTTP_STATUS.get(exc.code_name, 500)
    violations = [{"field": v.field, "description": v.description} for v in getattr(exc, "violations", [])]
    body = {
        # The web UI's error shape (error, detail, body, errors), plus the field violations.
        "error": type(exc).__name__,
        "detail": exc.message,
        "body": "",
        "errors": "; ".join(f"{v['field']}: {v['description']}" for v in violations) or exc.message,
        "code": exc.code_name,
        "violations": violations,
    }
    headers = {"x-request-id": request_id_var.get()}
    retry = getattr(exc, "retry_after_s", None)
    if retry:
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="atelier", charset="UTF-8"'
    return JSONResponse(status_code=status, content=body, headers=headers)


def key_metadata(request: Request) -> dict[str, str]:
    """The HTTP request's credentials as the gRPC metadata the Authoriser reads."""
    metadata: dict[str, str] = {}
    authorization = request.headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        metadata["authorization"] = f"Bearer {value.strip()}"
    elif scheme.lower() == "basic":
        try:
            _user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise UnauthenticatedError(
                "the basic authorization header is not valid base64 of user:key"
            ) from None
        # The user name is free (clients made for --api-auth need one): the key is the password.
        metadata["authorization"] = f"Bearer {password.strip()}"
    if request.headers.get("x-api-key"):
        metadata["x-api-key"] = request.headers["x-api-key"]
    if request.headers.get(TENANT_HEADER):
        metadata[TENANT_HEADER] = request.headers[TENANT_HEADER]
    return metadata


class _Observe:
    """Request id, metrics and a log line per call. A plain ASGI middleware: Starlette's
    BaseHTTPMiddleware would hide the client's disconnect from the endpoint (which cancels the job)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        path = str(scope.get("path", ""))
        route = path if path in ROUTES else "other"  # bounded label values, whatever paths are asked for
        status = 500

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)["x-request-id"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            HTTP_REQUESTS.labels(route, str(status)).inc()
            HTTP_SECONDS.labels(route).observe(elapsed)
            log.log(
                logging.WARNING if status >= 500 else logging.INFO,
                "http %s %s %d",
                scope.get("method", ""),
                path,
                status,
                extra={"http_status": status, "duration_ms": round(elapsed * 1000, 2)},
            )
            request_id_var.reset(token)


# -- the API ----------------------------------------------------------------------------------------


class WebUIApi:
    """The routes, over one GenerationService and its gRPC servicer's validation."""

    def __init__(
        self,
        service: GenerationService,
        servicer: GenerationServicer,
        authoriser: Authoriser,
        admission: Admission | None,
        options: OptionsStore,
        max_body_bytes: int,
    ) -> None:
        self.service = service
        self.servicer = servicer
        self.authoriser = authoriser
        self.admission = admission
        self.options = options
        self.max_body_bytes = max_body_bytes
        self.jobs = Jobs()
        # Blocking work of the routes: key checks, the models directory, the database, generation calls
        # (which wait on the device queue; the load shedder bounds how many).
        self.executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="generation-http")
        self.app = self._build_app()

    # -- plumbing -------------------------------------------------------------------------------
    def _build_app(self) -> FastAPI:
        app = FastAPI(
            title="Atelier generation: A1111-compatible API",
            version=atelier.__version__,
            docs_url="/docs",
            redoc_url=None,
        )

        app.add_middleware(_Observe)

        @app.exception_handler(AtelierError)
        async def on_error(request: Request, exc: AtelierError) -> JSONResponse:
            return error_response(exc)

        @app.exception_handler(Exception)
        async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
            outage = outage_error(exc)
            if outage is not None:
                return error_response(outage)
            log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
            return JSONResponse(
                status_code=500,
                content={
                    "error": "InternalError",
                    "detail": f"internal error (request id {request_id_var.get()}); the server log has the details",
                    "body": "",
                    "errors": "",
                },
            )

        app.add_api_route(f"{PREFIX}/txt2img", self.txt2img, methods=["POST"])
        app.add_api_route(f"{PREFIX}/img2img", self.img2img, methods=["POST"])
        app.add_api_route(f"{PREFIX}/sd-models", self._route(self._sd_models), methods=["GET"])
        app.add_api_route(
            f"{PREFIX}/refresh-checkpoints", self._route(self._refresh_checkpoints), methods=["POST"]
        )
        app.add_api_route(f"{PREFIX}/options", self._route(self._get_options), methods=["GET"])
        app.add_api_route(f"{PREFIX}/options", self.set_options, methods=["POST"])
        app.add_api_route(f"{PREFIX}/progress", self.progress, methods=["GET"])
        app.add_api_route(f"{PREFIX}/interrupt", self._route(self._interrupt), methods=["POST"])
        app.add_api_route(f"{PREFIX}/samplers", self._route(self._samplers), methods=["GET"])
        app.add_api_route(f"{PREFIX}/schedulers", self._route(self._schedulers), methods=["GET"])
        app.add_api_route(f"{PREFIX}/loras", self._route(self._loras), methods=["GET"])
        app.add_api_route(f"{PREFIX}/scripts", self._route(self._scripts), methods=["GET"])
        return app

    def _route(self, method: Callable[[Request], Any]) -> Callable[[Request], Any]:
        """A blocking route (the key store, the models directory, the database) run on the API's own threads."""

        async def route(request: Request) -> Any:
            return await self._off_loop(method, request)

        return route

    async def progress(self, request: Request, skip_current_image: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = await self._off_loop(self._progress, request, skip_current_image)
        return result

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on the API's own thread pool (shut down with the port), with the caller's context
        variables (request id, tenant), instead of anyio's worker threads, which outlive the port by 10 s."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, functools.partial(context.run, fn, *args)
        )

    def _admit(self, request: Request, role: Role) -> str:
        """The caller's tenant (key, tenant header and role as on the gRPC port)."""
        access = self.authoriser.admit(GRPC_SERVICE, "", key_metadata(request), role=role)
        tenant_var.set(access.tenant)
        return access.tenant

    async def _admit_async(self, request: Request, role: Role) -> str:
        """_admit off the event loop (a key store in a database may take a round trip)."""
        tenant = await self._off_loop(self._admit, request, role)
        tenant_var.set(tenant)
        return tenant

    async def _json(self, request: Request) -> Any:
        """The body as JSON, refusing bodies over the size limit before they are all read."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            raise InvalidArgumentError(
                f"the request body is {int(length)} bytes, over the limit of {self.max_body_bytes} bytes"
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise InvalidArgumentError(
                    f"the request body is over the limit of {self.max_body_bytes} bytes"
                )
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidArgumentError(f"the request body is not valid JSON: {exc}") from None

    @staticmethod
    def _parse(model: type[BaseModel], body: Any) -> Any:
        if not isinstance(body, dict):
            raise InvalidArgumentError("the request body must be a JSON object")
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            violations = [
                FieldViolation(".".join(str(p) for p in e["loc"]) or "body", e["msg"]) for e in exc.errors()
            ]
            shown = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
            raise InvalidArgumentError(f"the request is invalid: {shown}", violations) from None

    async def _in_thread(self, request: Request, cancellation: Cancellation, work: Callable[[], T]) -> T:
        """Runs blocking work in a worker thread; a client that hangs up cancels it (next denoising step)."""
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                while not cancellation.cancelled:
                    if await request.is_disconnected():
                        cancellation.cancel("the client went away")
                        return
                    await anyio.sleep(0.25)

            group.start_soon(watch)
            try:
                result = await self._off_loop(work)
            except BaseException as exc:  # raised after the group closed, not wrapped in an ExceptionGroup
                failure: BaseException | None = exc
            else:
                failure = None
            finally:
                group.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return result

    # -- models and options ----------------------------------------------------------------------
    def _checkpoints(self) -> list[ModelEntry]:
        return [
            e
            for e in self.service.list_models()
            if e.kind in CHECKPOINT_KINDS and e.state is not ModelState.FAILED
        ]

    def resolve_checkpoint(self, wanted: str) -> ModelEntry:
        """A checkpoint by the web UI's title ("name.safetensors [hash]"), file name or model name."""
        text = re.sub(r"\s*\[[0-9a-fA-F]{8,64}\]\s*$", "", wanted.strip()).lower()
        entries = self._checkpoints()
        for entry in entries:
            names = {entry.name, entry_title(entry), entry.path.name, entry.path.stem, str(entry.path)}
            if text in {n.lower() for n in names}:
                return entry
        installed = ", ".join(entry_title(e) for e in entries) or "none"
        raise NotFoundError(
            f"checkpoint {wanted!r} is not installed (installed: {installed})",
            resource_type="model",
            resource_name=wanted,
        )

    def _current_checkpoint(self, tenant: str, override: dict[str, Any]) -> ModelEntry:
        wanted = override.get("sd_model_checkpoint") or self.options.get(tenant).get("sd_model_checkpoint")
        if wanted:
            return self.resolve_checkpoint(str(wanted))
        entries = self._checkpoints()
        if not entries:
            raise NotFoundError(
                f"no checkpoint is installed in {self.service.cache.models_dir}", resource_type="model"
            )
        return sorted(entries, key=lambda e: e.name)[0]

    def _sd_models(self, request: Request) -> list[dict[str, Any]]:
        self._admit(request, Role.READ)
        return [
            {
                "title": entry_title(e),
                "model_name": e.name,
                "hash": None,  # the web UI's short hash needs the whole file read: not computed
                "sha256": None,
                "filename": str(e.path),
                "config": None,
            }
            for e in sorted(self._checkpoints(), key=lambda e: e.name)
        ]

    def _refresh_checkpoints(self, request: Request) -> dict[str, Any]:
        self._admit(request, Role.READ)
        self.service.list_models()  # rescans the models directory
        return {}

    def _loras(self, request: Request) -> list[dict[str, Any]]:
        self._admit(request, Role.READ)
        return [
            {"name": e.name, "alias": e.name, "path": str(e.path), "metadata": {}}
            for e in self.service.list_models()
            if e.kind == "lora"
        ]

    def _get_options(self, request: Request) -> dict[str, Any]:
        tenant = self._admit(request, Role.READ)
        stored = self.options.get(tenant)
        options = {**DEFAULT_OPTIONS, **stored}
        try:
            options["sd_model_checkpoint"] = entry_title(self._current_checkpoint(tenant, {}))
        except NotFoundError:
            options["sd_model_checkpoint"] = stored.get("sd_model_checkpoint")
        options["sd_checkpoint_hash"] = None
        return options

    async def set_options(self, request: Request) -> dict[str, Any]:
        tenant = await self._admit_async(request, Role.WRITE)
        body = await self._json(request)
        if not isinstance(body, dict):
            raise InvalidArgumentError("the options must be a JSON object")
        await self._off_loop(self._store_options, tenant, dict(body))
        return {}

    def _store_options(self, tenant: str, changes: dict[str, Any]) -> None:
        if "sd_model_checkpoint" in changes:
            # Stored as the title, so a later GET names it as /sd-models does.
            changes["sd_model_checkpoint"] = entry_title(
                self.resolve_checkpoint(str(changes["sd_model_checkpoint"]))
            )
        fmt = changes.get("samples_format")
        if fmt is not None and str(fmt).lower() != "png":
            raise InvalidArgumentError.for_field(
                "samples_format", "only png is produced (it carries the settings)"
            )
        self.options.update(tenant, changes)

    def _samplers(self, request: Request) -> list[dict[str, Any]]:
        self._admit(request, Role.READ)
        return [
            {"name": name, "aliases": list(aliases), "options": {}} for name, (_, aliases) in SAMPLERS.items()
        ]

    def _schedulers(self, request: Request) -> list[dict[str, Any]]:
        self._admit(request, Role.READ)
        return [
            {
                "name": "automatic",
                "label": "Automatic",
                "aliases": None,
                "default_rho": -1,
                "need_inner_model": False,
            }
        ]

    def _scripts(self, request: Request) -> dict[str, list[str]]:
        self._admit(request, Role.READ)
        return {"txt2img": [], "img2img": []}

    # -- progress ---------------------------------------------------------------------------------
    def _progress(self, request: Request, skip_current_image: bool = False) -> dict[str, Any]:
        tenant = self._admit(request, Role.READ)
        jobs = self.jobs.of(tenant)
        state = {
            "skipped": False,
            "interrupted": False,
            "stopping_generation": False,
            "job": "",
            "job_count": len(jobs),
            "job_timestamp": "0",
            "job_no": 0,
            "sampling_step": 0,
            "sampling_steps": 0,
        }
        if not jobs:
            return {
                "progress": 0.0,
                "eta_relative": 0.0,
                "state": state,
                "current_image": None,
                "textinfo": None,
            }
        job = jobs[0]
        state.update(
            job=job.kind,
            job_timestamp=job.timestamp,
            interrupted=job.interrupted,
            sampling_step=job.step,
            sampling_steps=job.total_steps,
        )
        # As the web UI: a small floor so the ETA is defined before the first step.
        done = 0.01 + (job.step / job.total_steps if job.total_steps else 0.0)
        elapsed = time.monotonic() - job.started_monotonic
        if job.queue_position > 0:
            textinfo = f"waiting for the device: {job.queue_position} job(s) ahead"
        elif job.total_steps:
            textinfo = f"step {job.step} of {job.total_steps}"
        else:
            textinfo = "starting"
        preview = job.preview
        return {
            "progress": min(done, 1.0),
            "eta_relative": max(0.0, elapsed / done - elapsed),
            "state": state,
            "current_image": _image_b64(preview) if preview is not None and not skip_current_image else None,
            "textinfo": textinfo,
        }

    def _interrupt(self, request: Request) -> dict[str, Any]:
        tenant = self._admit(request, Role.WRITE)
        self.jobs.interrupt(tenant)
        return {}

    # -- generation -------------------------------------------------------------------------------
    async def txt2img(self, request: Request) -> dict[str, Any]:
        tenant = await self._admit_async(request, Role.WRITE)
        req = self._parse(Txt2ImgRequest, await self._json(request))
        return await self._generate(request, tenant, req, "txt2img")

    async def img2img(self, request: Request) -> dict[str, Any]:
        tenant = await self._admit_async(request, Role.WRITE)
        req = self._parse(Img2ImgRequest, await self._json(request))
        return await self._generate(request, tenant, req, "img2img")

    async def _generate(
        self, request: Request, tenant: str, req: Txt2ImgRequest, kind: str
    ) -> dict[str, Any]:
        # Admitted as a gRPC Generate call: the same per-service and per-tenant slots.
        ticket = (
            self.admission.admit(GRPC_SERVICE, "Generate", tenant) if self.admission is not None else None
        )
        job = HttpJob(tenant, kind, Cancellation())
        self.jobs.add(job)
        try:
            call, entry = await self._off_loop(self._call, tenant, req, kind)
            outputs, finished = await self._in_thread(
                request, job.cancellation, lambda: self._run(call, tenant, job)
            )
        except InvalidArgumentError as exc:  # the service's own checks (model defaults, LoRAs, prompt length)
            raise _rename(exc) from None
        except CancelledError:
            if job.interrupted:
                raise CancelledError(
                    "interrupted by /sdapi/v1/interrupt before the images were finished"
                ) from None
            raise
        finally:
            self.jobs.remove(job)
            if ticket is not None:
                ticket.release()
        return self._response(req, call, entry, outputs, finished, kind)

    def _call(self, tenant: str, req: Txt2ImgRequest, kind: str) -> tuple[Any, ModelEntry]:
        """The request as the servicer's validated GenerateCall (the gRPC boundary's checks)."""
        v: list[FieldViolation] = []
        given = req.model_fields_set
        for name, reason in UNSUPPORTED_WHEN_SET.items():
            if name in given and getattr(req, name):
                if name == "alwayson_scripts" and not any(
                    (value or {}).get("args") for value in (req.alwayson_scripts or {}).values()
                ):
                    continue  # {"ControlNet": {"args": []}}: what clients send to say "off"
                v.append(FieldViolation(name, reason))
        if req.seed_resize_from_h > 0 or req.seed_resize_from_w > 0:
            v.append(FieldViolation("seed_resize_from_w", "seed resizing is not available"))
        options = {**DEFAULT_OPTIONS, **self.options.get(tenant)}
        override = dict(req.override_settings or {})
        fmt = override.get("samples_format")
        if fmt is not None and str(fmt).lower() != "png":
            v.append(FieldViolation("override_settings.samples_format", "only png is produced"))
        scheduler = ""
        sampler = req.sampler_name or req.sampler_index
        if sampler:
            scheduler = _SAMPLER_LOOKUP.get(sampler.strip().lower(), "")
            if not scheduler:
                v.append(
                    FieldViolation(
                        "sampler_name" if req.sampler_name else "sampler_index",
                        f"{sampler!r} is not available; one of {', '.join(SAMPLERS)}",
                    )
                )
        if req.scheduler and req.scheduler.strip().lower() not in SCHEDULES:
            v.append(FieldViolation("scheduler", f"{req.scheduler!r} is not available; only Automatic"))
        v.extend(self._batch_violations(req))
        prompt, loras, weights = self._extra_networks(req.prompt, v)
        negative, _, _ = self._extra_networks(req.negative_prompt, v, field_name="negative_prompt")
        init_data = mask_data = b""
        if isinstance(req, Img2ImgRequest):
            init_data, mask_data = self._img2img_inputs(req, v)
        if v:
            shown = "; ".join(f"{x.field}: {x.description}" for x in v[:5])
            raise InvalidArgumentError(f"the request is invalid: {shown}", v)

        entry = self._current_checkpoint(tenant, override)
        # The web UI's SDXL refiner (its "Refiner" accordion): a checkpoint title and the switch point.
        # "None" or empty is off, as the web UI sends it.
        refiner = ""
        if req.refiner_checkpoint and req.refiner_checkpoint.strip().lower() not in ("", "none"):
            refiner = self.resolve_checkpoint(req.refiner_checkpoint).name
        given_settings = pb.GenerationSettings(
            prompt=prompt,
            negative_prompt=negative,
            scheduler=scheduler,
            seed=max(req.seed, 0),
            width_px=req.width or 0,
            height_px=req.height or 0,
            tileable=bool(req.tiling),
            loras=loras,
            lora_weights=weights,
            refiner=refiner,
            refiner_switch=float(req.refiner_switch_at or 0.0) if refiner else 0.0,
        )
        if req.steps is not None:
            given_settings.steps = req.steps
        if req.cfg_scale is not None:
            given_settings.guidance_scale = req.cfg_scale
        if kind == "img2img" and req.denoising_strength is not None:
            given_settings.strength = req.denoising_strength
        every = int(options.get("show_progress_every_n_steps") or 0)
        grpc_request = pb.GenerateRequest(
            model=entry.name,
            mode=(pb.MODE_INPAINT if mask_data else pb.MODE_IMAGE_TO_IMAGE)
            if kind == "img2img"
            else pb.MODE_TEXT_TO_IMAGE,
            settings=given_settings,
            num_images=req.batch_size * req.n_iter,
            preview_every=every if every > 0 and options.get("live_previews_enable", True) else 0,
            init_image=image_pb2.Image(data=init_data) if init_data else None,
            mask=image_pb2.Mask(data=mask_data) if mask_data else None,
        )
        try:
            limits.check_request(grpc_request)
            call = self.servicer._validate(grpc_request)
        except InvalidArgumentError as exc:
            raise _rename(exc) from None
        # Proto3 zeros mean "default" to the servicer; here a field the client sent is meant as sent
        # (seed 0 is a seed in the web UI; -1 is "random").
        explicit = set(call.explicit)
        if req.seed >= 0:
            explicit.add("seed")
        if req.steps is not None:
            explicit.add("steps")
        if req.cfg_scale is not None:
            explicit.add("guidance_scale")
        if req.width is not None and req.height is not None:
            explicit.update(("width_px", "height_px"))
        return replace(call, explicit=explicit), entry

    def _batch_violations(self, req: Txt2ImgRequest) -> list[FieldViolation]:
        lim = self.service.limits
        v = []
        if not 1 <= req.batch_size <= lim.max_images:
            v.append(FieldViolation("batch_size", f"must be in 1..{lim.max_images}"))
        if not 1 <= req.n_iter <= lim.max_images:
            v.append(FieldViolation("n_iter", f"must be in 1..{lim.max_images}"))
        elif req.batch_size >= 1 and req.batch_size * req.n_iter > lim.max_images:
            v.append(
                FieldViolation(
                    "n_iter",
                    f"batch_size x n_iter is {req.batch_size * req.n_iter}; at most {lim.max_images}",
                )
            )
        if req.seed < -1 or req.seed >= 2**32:
            v.append(FieldViolation("seed", "must be -1 (random) or in 0..4294967295"))
        if (req.width is None) != (req.height is None):
            v.append(
                FieldViolation(
                    "height" if req.width is not None else "width", "set both width and height, or neither"
                )
            )
        for name in ("steps", "width", "height"):
            value = getattr(req, name)
            if value is not None and value <= 0:
                v.append(FieldViolation(name, "must be > 0"))
        if req.cfg_scale is not None and req.cfg_scale <= 0:
            v.append(FieldViolation("cfg_scale", "must be > 0"))
        if (
            isinstance(req, Img2ImgRequest)
            and req.denoising_strength is not None
            and req.denoising_strength <= 0
        ):
            v.append(FieldViolation("denoising_strength", "must be in (0, 1]"))
        return v

    @staticmethod
    def _extra_networks(
        text: str, v: list[FieldViolation], field_name: str = "prompt"
    ) -> tuple[str, list[str], list[float]]:
        """``<lora:name:weight>`` tags out of the prompt, as the web UI reads them."""
        if _OTHER_EXTRA_NETWORK.search(text):
            v.append(FieldViolation(field_name, "hypernetworks are not available"))
        loras: list[str] = []
        weights: list[float] = []
        for match in _LORA.finditer(text):
            if field_name != "prompt":
                v.append(FieldViolation(field_name, "LoRA tags belong in the prompt"))
                break
            name, weight = match.group(2).strip(), (match.group(3) or "1").strip()
            try:
                value = float(weight)
            except ValueError:
                v.append(FieldViolation(field_name, f"<lora:{name}:{weight}> has no number as its weight"))
                continue
            if name in loras:
                v.append(FieldViolation(field_name, f"LoRA {name!r} is named twice"))
                continue
            loras.append(name)
            weights.append(value)
        cleaned = re.sub(r"\s{2,}", " ", _LORA.sub("", text)).strip().strip(",").strip()
        return cleaned, loras, weights if any(w != 1.0 for w in weights) else []

    def _img2img_inputs(self, req: Img2ImgRequest, v: list[FieldViolation]) -> tuple[bytes, bytes]:
        if not req.init_images:
            v.append(FieldViolation("init_images", "is required: one base64 image"))
            return b"", b""
        if len(req.init_images) > 1:
            v.append(FieldViolation("init_images", "takes one image (use batch_size for variations)"))
        if req.resize_mode != 0:
            v.append(FieldViolation("resize_mode", "only 0 (just resize) is available"))
        try:
            init = decode_b64(req.init_images[0], "init_images[0]")
        except InvalidArgumentError as exc:
            v.extend(exc.violations)
            init = b""
        if not req.mask:
            return init, b""
        try:
            raw = decode_b64(req.mask, "mask")
        except InvalidArgumentError as exc:
            v.extend(exc.violations)
            return init, b""
        lim = self.service.limits
        try:
            mask = images.open_image(
                raw,
                images.ImageLimits(
                    max_bytes=32 * 1024 * 1024,
                    max_side_px=lim.max_input_side_px,
                    max_pixels=lim.max_input_side_px**2,
                ),
                "RGBA",
            )
        except images.ImageError as exc:
            v.append(FieldViolation("mask", str(exc)))
            return init, b""
        # The web UI's binary mask: white repaints; a mask with transparency is read from its alpha.
        rgba = np.asarray(mask)
        alpha = rgba[..., 3]
        grey = alpha if alpha.min() < 255 else np.asarray(mask.convert("L"))
        binary = grey >= 128
        if req.inpainting_mask_invert:
            binary = ~binary
        buffer = io.BytesIO()
        Image.fromarray(binary.astype(np.uint8) * 255).save(buffer, format="PNG")
        return init, buffer.getvalue()

    def _run(self, call: Any, tenant: str, job: HttpJob) -> tuple[list[engine.Output], Finished]:
        finished: Finished | None = None
        for event in self.service.generate(call, tenant, job.cancellation):
            if isinstance(event, Queued):
                job.queue_position = event.position
            elif isinstance(event, engine.Progress):
                job.queue_position = 0
                job.step, job.total_steps = event.step, event.total_steps
                if event.preview is not None:
                    job.preview = event.preview
            elif isinstance(event, Finished):
                finished = event
        assert finished is not None
        return finished.outputs, finished

    def _response(
        self,
        req: Txt2ImgRequest,
        call: Any,
        entry: ModelEntry,
        outputs: list[engine.Output],
        finished: Finished,
        kind: str,
    ) -> dict[str, Any]:
        first = outputs[0].settings if outputs else call.settings
        sampler = next(
            (name for name, (engine_name, _) in SAMPLERS.items() if engine_name == first.scheduler),
            first.scheduler or "Automatic",
        )
        info = {
            "prompt": req.prompt,
            "all_prompts": [req.prompt] * len(outputs),
            "negative_prompt": req.negative_prompt,
            "all_negative_prompts": [req.negative_prompt] * len(outputs),
            "seed": outputs[0].seed if outputs else first.seed,
            "all_seeds": [o.seed for o in outputs],
            "subseed": -1,
            "all_subseeds": [-1] * len(outputs),
            "subseed_strength": 0,
            "width": first.width_px,
            "height": first.height_px,
            "sampler_name": sampler,
            "cfg_scale": first.guidance_scale,
            "steps": first.steps,
            "batch_size": req.batch_size,
            "restore_faces": False,
            "face_restoration_model": None,
            "sd_model_name": entry.name,
            "sd_model_hash": None,
            "sd_vae_name": None,
            "sd_vae_hash": None,
            "seed_resize_from_w": -1,
            "seed_resize_from_h": -1,
            "denoising_strength": first.strength if kind == "img2img" else None,
            "extra_generation_params": _extra_params(first),
            "index_of_first_image": 0,
            "infotexts": [png_parameters(o.png) for o in outputs],
            "styles": [],
            "job_timestamp": datetime.now(UTC).strftime("%Y%m%d%H%M%S"),
            "clip_skip": 1,
            "is_using_inpainting_conditioning": False,
            "version": f"atelier {atelier.__version__}",
            # Atelier's own: the refinement session these images are a round of (gRPC GetSession).
            "session_id": finished.session_id,
            "round": finished.round,
        }
        parameters = req.model_dump()
        if isinstance(req, Img2ImgRequest) and not req.include_init_images:
            parameters["init_images"] = None
            parameters["mask"] = None
        return {
            "images": [_b64_png(o.png) for o in outputs] if req.send_images else [],
            "parameters": parameters,
            "info": json.dumps(info),
        }


# -- the listener -----------------------------------------------------------------------------------


class WebUIServer:
    """uvicorn on its own port, in a thread of the generation process (TLS as the gRPC port's)."""

    def __init__(self, api: WebUIApi, config: ServiceConfig, port: int) -> None:
        import uvicorn

        self.api = api
        self.config = config
        self.socket = socket.create_server((config.host, port), reuse_port=False)
        self.port = int(self.socket.getsockname()[1])
        ssl_options: dict[str, Any] = {}
        if config.tls_cert_file:
            ssl_options = {"ssl_certfile": config.tls_cert_file, "ssl_keyfile": config.tls_key_file}
            if config.tls_client_ca_file:
                ssl_options.update(ssl_ca_certs=config.tls_client_ca_file, ssl_cert_reqs=ssl.CERT_REQUIRED)
        self.server = uvicorn.Server(
            uvicorn.Config(
                api.app,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=max(1, int(config.grace_s)),
                **ssl_options,
            )
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name="generation-http", daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        log.info(
            "generation: A1111-compatible HTTP API on %s:%d%s",
            self.config.host,
            self.port,
            " (TLS)" if self.config.tls_cert_file else "",
            extra={"http_port": self.port},
        )

    def drain(self) -> None:
        """Stop accepting; calls in flight go on (uvicorn waits for them up to the grace)."""
        self.server.should_exit = True

    def close(self) -> None:
        self.drain()
        self.thread.join(self.config.grace_s + 1)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(2)
        self.socket.close()
        self.api.executor.shutdown(wait=False, cancel_futures=True)


def _extra_params(settings: engine.Settings) -> dict[str, Any]:
    """The web UI's `extra_generation_params`: the LoRAs with their weights and the refiner."""
    extra: dict[str, Any] = {}
    if settings.loras:
        weights = settings.lora_weights or (1.0,) * len(settings.loras)
        extra["LoRA"] = dict(zip(settings.loras, weights, strict=True))
    if settings.refiner:
        extra["Refiner"] = settings.refiner
        extra["Refiner switch at"] = settings.refiner_switch
    return extra
