"""The generation service's domain side: models, the device queue, sessions, one call's flow (no gRPC)."""

from __future__ import annotations

import io
import logging
import queue
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image
from prometheus_client import Counter, Gauge, Histogram

from atelier.generation import engine
from atelier.generation.models import (
    CHECKPOINT_KINDS,
    DeviceSettings,
    ModelCache,
    ModelEntry,
    ModelError,
    is_out_of_memory,
)
from atelier.generation.queue import DONE, DeviceQueue, Ticket
from atelier.generation.sessions import SessionRecord, SessionStore
from atelier.runtime.context import Cancellation
from atelier.runtime.errors import (
    CancelledError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    Violations,
)

log = logging.getLogger("atelier.generation")

IMAGES_TOTAL = Counter("atelier_generation_images_total", "Images generated.", ("mode",))
STEPS_TOTAL = Counter("atelier_generation_steps_total", "Denoising steps run.", ("mode",))
SECONDS = Histogram(
    "atelier_generation_seconds",
    "Wall time of one Generate job on the device.",
    ("mode",),
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160),
)
SECONDS_PER_IMAGE = Histogram(
    "atelier_generation_image_seconds",
    "Device seconds per generated image.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40),
)
BATCH_IMAGES = Histogram(
    "atelier_generation_batch_images",
    "Images per pipeline call (several callers' compatible requests batch together).",
    buckets=(1, 2, 4, 8, 16),
)
REJECTED_TOTAL = Counter("atelier_generation_rejected_total", "Jobs refused or stopped.", ("reason",))
QUEUE_DEPTH = Gauge("atelier_generation_queue_depth", "Jobs waiting for the device.", ("device",))
MODEL_MEMORY_BYTES = Gauge("atelier_generation_model_memory_bytes", "Memory held by loaded models.")
TILE_SEAM_ERROR = Histogram(
    "atelier_generation_tile_seam_error",
    "Seam error (0..255) of MakeTileable tiles.",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 50),
)


@dataclass(frozen=True)
class Limits:
    min_side_px: int = 64
    max_side_px: int = 2048
    max_pixels: int = 1024 * 1024
    max_images: int = 8
    max_steps: int = 150
    max_guidance: float = 30.0
    max_input_side_px: int = 4096
    max_controlnet_scale: float = 2.0


@dataclass
class GenerateCall:
    """One Generate request after boundary validation (decoded images, known enum values)."""

    model: str
    mode: str  # one of engine.MODES
    settings: engine.Settings
    explicit: set[str]  # settings fields the caller set (the rest take defaults)
    num_images: int = 1
    preview_every: int = 0
    init_image: Image.Image | None = None
    mask: Image.Image | None = None
    session_id: str = ""
    session_image_index: int = 0


@dataclass
class Queued:
    position: int


@dataclass
class Finished:
    session_id: str
    round: int
    outputs: list[engine.Output] = field(default_factory=list)


def decode_png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


class GenerationService:
    def __init__(
        self,
        models_dir: Path,
        sessions: SessionStore,
        device: DeviceSettings,
        memory_budget_bytes: int,
        max_waiting: int = 4,
        max_batch_images: int = 1,
        limits: Limits | None = None,
        on_health: Any = None,
        loader: Any = None,
    ) -> None:
        self.limits = limits or Limits()
        self.sessions = sessions
        self.cache = ModelCache(models_dir, device, memory_budget_bytes, on_health=on_health, loader=loader)
        self.queue = DeviceQueue(
            device.device,
            max_waiting,
            max_batch_images=max_batch_images,
            on_depth=lambda d: QUEUE_DEPTH.labels(device.device).set(d),
        )

    # -- models -----------------------------------------------------------------------------
    def list_models(self) -> list[ModelEntry]:
        entries = self.cache.rescan()
        MODEL_MEMORY_BYTES.set(self.cache.used_bytes)
        return entries

    def checkpoint(self, name: str) -> ModelEntry:
        entry = self.cache.entry(name) or next((e for e in self.cache.rescan() if e.name == name), None)
        if entry is None or entry.kind not in CHECKPOINT_KINDS:
            installed = (
                ", ".join(e.name for e in self.cache.entries() if e.kind in CHECKPOINT_KINDS) or "none"
            )
            raise NotFoundError(
                f"model {name!r} is not installed (installed checkpoints: {installed})",
                resource_type="model",
                resource_name=name,
            )
        return entry

    def _load(self, name: str) -> Any:
        try:
            loaded = self.cache.get(name)
        except ModelError as exc:
            raise FailedPreconditionError(str(exc)) from exc
        MODEL_MEMORY_BYTES.set(self.cache.used_bytes)
        return loaded

    # -- sessions ---------------------------------------------------------------------------
    def session(self, tenant: str, session_id: str, with_images: bool = True) -> SessionRecord:
        record = self.sessions.get(tenant, session_id, with_images=with_images)
        if record is None:
            raise NotFoundError(
                f"session {session_id!r} does not exist", resource_type="session", resource_name=session_id
            )
        return record

    # -- generation -------------------------------------------------------------------------
    def prepare(self, call: GenerateCall, tenant: str) -> tuple[GenerateCall, ModelEntry]:
        """Resolves the session's init image, the defaults and the size; raises on what is invalid."""
        entry = self.checkpoint(call.model)
        if entry.state.value == "failed":
            raise FailedPreconditionError(f"model {call.model!r} failed to load: {entry.error}")
        v = Violations()
        if call.session_id:
            record = self.session(tenant, call.session_id)
            if not 0 <= call.session_image_index < max(1, len(record.images)):
                v.add("session_image_index", f"the session's last round has {len(record.images)} images")
            elif record.images:
                call = replace(call, init_image=decode_png(record.images[call.session_image_index]))
            if call.mode == "text_to_image":
                call = replace(call, mode="image_to_image")
        for i, lora in enumerate(call.settings.loras):
            found = self.cache.entry(lora)
            v.check(
                found is not None and found.kind == "lora",
                f"settings.loras[{i}]",
                f"{lora!r} is not an installed LoRA adapter",
            )
        if call.settings.refiner:
            found = self.cache.entry(call.settings.refiner)
            v.check(
                found is not None and found.kind in CHECKPOINT_KINDS,
                "settings.refiner",
                f"{call.settings.refiner!r} is not an installed checkpoint (ListModels)",
            )
            v.check(
                call.mode in engine.REFINER_MODES,
                "settings.refiner",
                f"a refiner stage runs after text-to-image or image-to-image, not {call.mode}",
            )
        if call.settings.controlnet:
            found = self.cache.entry(call.settings.controlnet)
            v.check(
                found is not None and found.kind == "controlnet",
                "settings.controlnet",
                f"{call.settings.controlnet!r} is not an installed ControlNet",
            )
        settings = engine.fill_defaults(call.settings, entry.defaults, call.explicit)
        if call.init_image is not None and "width_px" not in call.explicit:
            # Image modes keep the input's size (rounded down to a multiple of 8) unless asked otherwise.
            settings = replace(
                settings, width_px=call.init_image.width // 8 * 8, height_px=call.init_image.height // 8 * 8
            )
        if "seed" not in call.explicit:
            settings = replace(settings, seed=secrets.randbelow(2**31))
        lim = self.limits
        for name in ("width_px", "height_px"):
            size = getattr(settings, name)
            if size % 8 or not lim.min_side_px <= size <= lim.max_side_px:
                v.add(
                    f"settings.{name}",
                    f"{size} must be a multiple of 8 in {lim.min_side_px}..{lim.max_side_px}",
                )
        if settings.width_px * settings.height_px > lim.max_pixels:
            v.add(
                "settings.width_px",
                f"{settings.width_px} x {settings.height_px} px is over the limit of "
                f"{lim.max_pixels} px per image",
            )
        v.raise_if_any("the generation request is invalid")
        size = (settings.width_px, settings.height_px)
        init, mask = call.init_image, call.mask
        if init is not None and init.size != size:
            init = init.resize(size, Image.Resampling.LANCZOS)
        if mask is not None and mask.size != size:
            mask = mask.resize(size, Image.Resampling.NEAREST)
        return replace(call, settings=settings, init_image=init, mask=mask), entry

    def generate(self, call: GenerateCall, tenant: str, cancellation: Cancellation) -> Iterator[Any]:
        """Yields Queued, engine.Progress, then one Finished (images committed to the session first)."""
        call, _entry = self.prepare(call, tenant)
        results: list[engine.Output] = []

        def work(ticket: Ticket) -> None:
            results.extend(self._run_on_device([ticket])[0])

        key = engine.batch_key(self._job(call)) if self.queue.max_batch_images > 1 else None
        ticket = self.queue.submit(
            work,
            cancellation,
            batch_key=key,
            batch_images=call.num_images,
            batch_work=self._run_batch,
            payload=(call, results),
        )
        last_position = -1
        try:
            while True:
                try:
                    event = ticket.events.get(timeout=0.1)
                except queue.Empty:
                    if cancellation.cancelled:
                        self.queue.withdraw(ticket)
                        REJECTED_TOTAL.labels("cancelled").inc()
                        raise CancelledError(cancellation.reason or "cancelled") from None
                    if not ticket.started.is_set():
                        position = self.queue.position(ticket)
                        if position != last_position:
                            last_position = position
                            yield Queued(position)
                    continue
                if event is DONE:
                    break
                if isinstance(event, BaseException):
                    raise event
                yield event
        except BaseException:
            self.queue.withdraw(ticket)
            raise
        session_id = call.session_id or self.sessions.new_id()
        history = {"mode": call.mode, "num_images": call.num_images, **asdict(call.settings)}
        round_no = self.sessions.save_round(tenant, session_id, call.model, history, [o.png for o in results])
        yield Finished(session_id=session_id, round=round_no, outputs=results)

    @staticmethod
    def _job(call: GenerateCall) -> engine.Job:
        return engine.Job(
            model=call.model,
            mode=call.mode,
            settings=call.settings,
            num_images=call.num_images,
            init_image=call.init_image,
            mask=call.mask,
            preview_every=call.preview_every,
        )

    def _run_batch(self, tickets: list[Ticket]) -> None:
        """Compatible text-to-image jobs from several callers in one pipeline call (queue's batch_work)."""
        for ticket, outputs in zip(tickets, self._run_on_device(tickets), strict=True):
            ticket.payload[1].extend(outputs)

    def _run_on_device(self, tickets: list[Ticket]) -> list[list[engine.Output]]:
        """Runs in the device thread: load, check the prompt length, denoise, free memory on OOM.

        Several tickets only when they share engine.batch_key (same model and settings but prompts and seeds).
        """
        calls: list[GenerateCall] = [t.payload[0] for t in tickets]
        call = calls[0]
        # Textual-inversion embeddings are used where a prompt names them (any caller's, in a batch).
        texts = " ".join(f"{c.settings.prompt} {c.settings.negative_prompt}" for c in calls)
        embedding_names = engine.embedding_names_in(
            texts, [e.name for e in self.cache.entries() if e.kind == "embedding"]
        )
        names = [
            call.model,
            *call.settings.loras,
            *([call.settings.controlnet] if call.settings.controlnet else []),
            *([call.settings.refiner] if call.settings.refiner else []),
            *embedding_names,
        ]
        for name in names:
            self.cache.pin(name)
        began = time.monotonic()
        pipe: Any = None
        controlnet: Any = None
        refiner: Any = None
        results: list[list[engine.Output]] = [[] for _ in tickets]
        try:
            pipe = self._load(call.model)
            problem = engine.mode_problem(pipe, call.mode, bool(call.settings.controlnet))
            if problem:
                raise FailedPreconditionError(f"model {call.model!r}: {problem}")
            if len(tickets) == 1:
                self._check_prompts(pipe, call.settings)
                running = [0]
            else:  # a caller's too-long prompt fails that caller alone
                running = []
                for k, (ticket, c) in enumerate(zip(tickets, calls, strict=True)):
                    try:
                        self._check_prompts(pipe, c.settings)
                        running.append(k)
                    except InvalidArgumentError as exc:
                        ticket.emit(exc)
            controlnet = self._load(call.settings.controlnet) if call.settings.controlnet else None
            if controlnet is not None:
                problem = engine.controlnet_problem(pipe, controlnet, call.settings.controlnet)
                if problem:
                    raise FailedPreconditionError(problem)
            refiner = self._load(call.settings.refiner) if call.settings.refiner else None
            if refiner is not None:
                problem = engine.refiner_problem(pipe, refiner, call.settings.refiner)
                if problem:
                    raise FailedPreconditionError(f"model {call.model!r}: {problem}")
            loras = {name: self._load(name) for name in call.settings.loras}
            embeddings = {name: self._load(name) for name in embedding_names}
            if running:
                batch_outputs = engine.run_batch(
                    pipe,
                    [self._job(calls[k]) for k in running],
                    [tickets[k].cancellation for k in running],
                    [tickets[k].emit for k in running],
                    controlnet=controlnet,
                    loras=loras,
                    refiner=refiner,
                    embeddings=embeddings,
                )
                for k, outputs in zip(running, batch_outputs, strict=True):
                    results[k] = outputs
        except (CancelledError, InvalidArgumentError, FailedPreconditionError):
            self._unpin(names)
            raise
        except (engine.LoraMismatchError, engine.EmbeddingMismatchError) as exc:
            self._unpin(names)
            raise FailedPreconditionError(str(exc)) from exc
        except BaseException as exc:
            self._unpin(names)
            if not is_out_of_memory(exc):
                if type(exc).__name__ == "DeadlineExceededError":
                    REJECTED_TOTAL.labels("deadline").inc()
                raise
            # str(exc), not exc: a kept log record would otherwise keep the traceback and the tensors alive.
            log.warning(
                "out of memory on %s: evicting cached models (%s)", self.cache.device.device, str(exc)
            )
            out_of_memory = True
        else:
            out_of_memory = False
            self._unpin(names)
        if out_of_memory:
            # Outside the except block, so no traceback (whose frames hold the tensors) stays referenced.
            REJECTED_TOTAL.labels("out_of_memory").inc()
            pipe = controlnet = refiner = None  # the last references to the models outside the cache
            self.cache.evict_all()
            MODEL_MEMORY_BYTES.set(self.cache.used_bytes)
            raise ResourceExhaustedError(
                f"the {self.cache.device.device} device ran out of memory for this request; the cached models were "
                "freed: retry, or ask for fewer or smaller images",
                retry_after_s=5.0,
            )
        images = sum(len(r) for r in results)
        if images:  # not when every caller of a batch was refused for its prompt
            elapsed = time.monotonic() - began
            SECONDS.labels(call.mode).observe(elapsed)
            SECONDS_PER_IMAGE.observe(elapsed / images)
            BATCH_IMAGES.observe(images)
            IMAGES_TOTAL.labels(call.mode).inc(images)
            STEPS_TOTAL.labels(call.mode).inc(call.settings.steps)
        return results

    def _unpin(self, names: list[str]) -> None:
        for name in names:
            self.cache.unpin(name)

    @staticmethod
    def _check_prompts(pipe: Any, settings: engine.Settings) -> None:
        """Prompts beyond the tokenizer's limit are rejected, not truncated: what is cut would be ignored silently."""
        # An SDXL refiner has only the second (OpenCLIP) tokenizer.
        tokenizer = pipe.tokenizer if getattr(pipe, "tokenizer", None) is not None else pipe.tokenizer_2
        limit = engine.prompt_token_limit(pipe)
        v = Violations()
        for name in ("prompt", "negative_prompt"):
            count = engine.token_count(tokenizer, getattr(settings, name))
            v.check(
                count <= limit,
                f"settings.{name}",
                f"is {count} tokens; at most {limit} are taken (chunks of the tokenizer's window): shorten it",
            )
        v.raise_if_any("the prompt is too long")

    def close(self) -> None:
        self.queue.close()
