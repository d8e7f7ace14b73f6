"""The gRPC face of the generation service: protobuf <-> domain, validation at the boundary."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
from PIL import Image

from atelier.common.v1 import image_pb2
from atelier.generation import engine, tile
from atelier.generation.models import ModelEntry, ModelState
from atelier.generation.service import (
    TILE_SEAM_ERROR,
    Finished,
    GenerateCall,
    GenerationService,
    Queued,
    decode_png,
)
from atelier.generation.v1 import generation_pb2, generation_pb2_grpc
from atelier.runtime import images
from atelier.runtime.context import current_tenant
from atelier.runtime.errors import Violations
from atelier.runtime.status import cancellation_from

MODE_NAMES = {
    generation_pb2.MODE_TEXT_TO_IMAGE: "text_to_image",
    generation_pb2.MODE_IMAGE_TO_IMAGE: "image_to_image",
    generation_pb2.MODE_INPAINT: "inpaint",
    generation_pb2.MODE_SKETCH: "sketch",
}
STATES = {
    ModelState.INSTALLED: generation_pb2.MODEL_STATE_INSTALLED,
    ModelState.LOADING: generation_pb2.MODEL_STATE_LOADING,
    ModelState.LOADED: generation_pb2.MODEL_STATE_LOADED,
    ModelState.FAILED: generation_pb2.MODEL_STATE_FAILED,
}
# Proto3 scalars have no presence: zero means "take the default" for these settings.
DEFAULTABLE = ("strength", "guidance_scale", "steps", "seed", "width_px", "height_px", "controlnet_scale")


def settings_to_proto(s: engine.Settings) -> generation_pb2.GenerationSettings:
    return generation_pb2.GenerationSettings(
        prompt=s.prompt,
        negative_prompt=s.negative_prompt,
        strength=s.strength,
        guidance_scale=s.guidance_scale,
        steps=s.steps,
        scheduler=s.scheduler,
        seed=s.seed,
        width_px=s.width_px,
        height_px=s.height_px,
        tileable=s.tileable,
        loras=list(s.loras),
        lora_weights=list(s.lora_weights),
        controlnet=s.controlnet,
        controlnet_scale=s.controlnet_scale,
        refiner=s.refiner,
        refiner_switch=s.refiner_switch,
    )


def defaults_to_proto(values: dict[str, Any]) -> generation_pb2.GenerationSettings:
    known = {f.name for f in generation_pb2.GenerationSettings.DESCRIPTOR.fields}
    return generation_pb2.GenerationSettings(**{k: v for k, v in values.items() if k in known})


def png_image(data: bytes, width_px: int, height_px: int) -> image_pb2.Image:
    return image_pb2.Image(data=data, mime_type="image/png", width_px=width_px, height_px=height_px)


MAX_INPUT_BYTES = 32 * 1024 * 1024


def _input_limits(max_side_px: int, min_side_px: int = 1) -> images.ImageLimits:
    """Limits for a caller's image (init image, mask, sketch, texture to tile)."""
    return images.ImageLimits(
        max_bytes=MAX_INPUT_BYTES, max_side_px=max_side_px, max_pixels=max_side_px**2, min_side_px=min_side_px
    )


def _decode(data: bytes, path: str, v: Violations, max_side_px: int, mode: str = "RGB") -> Image.Image | None:
    if not data:
        v.add(path, "is required")
        return None
    try:
        return images.open_image(data, _input_limits(max_side_px), mode)
    except images.ImageError as exc:
        v.add(path, str(exc))
        return None


class GenerationServicer(generation_pb2_grpc.GenerationServiceServicer):
    def __init__(self, service: GenerationService) -> None:
        self.service = service

    # -- ListModels --------------------------------------------------------------------------
    def ListModels(
        self, request: generation_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> generation_pb2.ListModelsResponse:
        entries = self.service.list_models()
        cache = self.service.cache
        return generation_pb2.ListModelsResponse(
            models=[self._model_info(e) for e in entries],
            memory_budget_bytes=cache.memory_budget_bytes,
            memory_used_bytes=cache.used_bytes,
            device=cache.device.device,
        )

    @staticmethod
    def _model_info(e: ModelEntry) -> generation_pb2.ModelInfo:
        return generation_pb2.ModelInfo(
            name=e.name,
            base=e.base,
            licence=e.licence,
            state=STATES[e.state],
            error=e.error,
            kind=e.kind,
            defaults=defaults_to_proto(e.defaults),
            memory_bytes=e.memory_bytes,
            health_name=e.health_name,
            conditioning=e.conditioning,
        )

    # -- Generate ----------------------------------------------------------------------------
    def Generate(
        self, request: generation_pb2.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[generation_pb2.GenerateResponse]:
        call = self._validate(request)
        cancellation = cancellation_from(context)
        round_no = 0
        for event in self.service.generate(call, current_tenant(), cancellation):
            if isinstance(event, Queued):
                yield generation_pb2.GenerateResponse(
                    progress=generation_pb2.ProgressEvent(queue_position=event.position),
                    session_id=call.session_id,
                )
            elif isinstance(event, engine.Progress):
                preview = None
                if event.preview is not None:
                    buffer = io.BytesIO()
                    event.preview.save(buffer, format="PNG")
                    preview = png_image(buffer.getvalue(), event.preview.width, event.preview.height)
                yield generation_pb2.GenerateResponse(
                    progress=generation_pb2.ProgressEvent(
                        step=event.step, total_steps=event.total_steps, preview=preview
                    ),
                    session_id=call.session_id,
                )
            elif isinstance(event, Finished):
                round_no = event.round
                for out in event.outputs:
                    yield generation_pb2.GenerateResponse(
                        image=generation_pb2.GeneratedImage(
                            image=png_image(out.png, out.width_px, out.height_px),
                            seed=out.seed,
                            index=out.index,
                            settings=settings_to_proto(out.settings),
                        ),
                        session_id=event.session_id,
                        round=round_no,
                    )

    def _validate(self, request: generation_pb2.GenerateRequest) -> GenerateCall:
        lim = self.service.limits
        v = Violations()
        s = request.settings
        v.check(bool(request.model), "model", "is required: an installed checkpoint (ListModels)")
        if request.mode not in (generation_pb2.MODE_UNSPECIFIED, *MODE_NAMES):
            v.add("mode", f"unknown mode {request.mode}")
        v.check(bool(s.prompt.strip()), "settings.prompt", "is required")
        v.check(0.0 <= s.strength <= 1.0, "settings.strength", "must be in (0, 1] (0 takes the default 0.75)")
        v.check(
            0.0 <= s.guidance_scale <= lim.max_guidance,
            "settings.guidance_scale",
            f"must be in 0..{lim.max_guidance:g}",
        )
        v.check(0 <= s.steps <= lim.max_steps, "settings.steps", f"must be in 1..{lim.max_steps}")
        v.check(
            not s.scheduler or s.scheduler in engine.SCHEDULERS,
            "settings.scheduler",
            f"must be one of {', '.join(engine.SCHEDULERS)}",
        )
        for name in ("width_px", "height_px"):
            size = getattr(s, name)
            if size and (size % 8 or not lim.min_side_px <= size <= lim.max_side_px):
                v.add(
                    f"settings.{name}",
                    f"{size} must be a multiple of 8 in {lim.min_side_px}..{lim.max_side_px}",
                )
        if bool(s.width_px) != bool(s.height_px):
            v.add(
                "settings.height_px" if s.width_px else "settings.width_px",
                "set both width and height, or neither",
            )
        if s.width_px and s.height_px and s.width_px * s.height_px > lim.max_pixels:
            v.add(
                "settings.width_px",
                f"{s.width_px} x {s.height_px} px is over the limit of {lim.max_pixels} px",
            )
        v.check(
            0.0 <= s.controlnet_scale <= lim.max_controlnet_scale,
            "settings.controlnet_scale",
            f"must be in 0..{lim.max_controlnet_scale:g}",
        )
        v.check(
            0.0 <= s.refiner_switch < 1.0,
            "settings.refiner_switch",
            f"must be in (0, 1): the share of the steps the base model runs (0 takes {engine.DEFAULT_REFINER_SWITCH})",
        )
        v.check(
            not s.refiner_switch or bool(s.refiner),
            "settings.refiner_switch",
            "is only used with settings.refiner",
        )
        v.check(
            len(set(s.loras)) == len(s.loras), "settings.loras", "names a LoRA twice: give each one weight"
        )
        v.check(
            not s.lora_weights or len(s.lora_weights) == len(s.loras),
            "settings.lora_weights",
            f"has {len(s.lora_weights)} weights for {len(s.loras)} LoRAs: one per LoRA, or none (1.0 each)",
        )
        for i, weight in enumerate(s.lora_weights):
            v.check(-2.0 <= weight <= 2.0, f"settings.lora_weights[{i}]", "must be in -2..2")
        v.check(0 <= request.num_images <= lim.max_images, "num_images", f"must be in 1..{lim.max_images}")
        v.check(request.preview_every >= 0, "preview_every", "must be >= 0")
        v.check(request.session_image_index >= 0, "session_image_index", "must be >= 0")

        has_init = bool(request.init_image.data)
        if request.session_id and has_init:
            v.add(
                "init_image", "a session continues from its last image: send either session_id or init_image"
            )
        mode = MODE_NAMES.get(request.mode, "")
        if not mode:
            mode = "image_to_image" if (has_init or request.session_id) else "text_to_image"
        if mode in ("image_to_image", "inpaint", "sketch") and not has_init and not request.session_id:
            v.add("init_image", f"is required for {mode}")
        if mode == "text_to_image" and has_init:
            v.add("init_image", "text-to-image takes no init image (use MODE_IMAGE_TO_IMAGE)")
        if mode == "inpaint":
            v.check(bool(request.mask.data), "mask", "is required for inpainting")
            v.check(
                not request.session_id, "session_id", "inpainting takes its image and mask in the request"
            )
        elif request.mask.data:
            v.add("mask", "is only used by MODE_INPAINT")

        init = (
            _decode(request.init_image.data, "init_image.data", v, lim.max_input_side_px)
            if has_init
            else None
        )
        mask = None
        if mode == "inpaint" and request.mask.data:
            mask = _decode(request.mask.data, "mask.data", v, lim.max_input_side_px, mode="L")
            if mask is not None and init is not None and mask.size != init.size:
                v.add(
                    "mask.data",
                    f"is {mask.width} x {mask.height} px; it must be the init image's size "
                    f"{init.width} x {init.height}",
                )
            if mask is not None and not np.asarray(mask).any():
                v.add("mask.data", "is empty: no non-zero pixel marks a region to repaint")
        v.raise_if_any("the generation request is invalid")

        explicit = {name for name in DEFAULTABLE if getattr(s, name)}
        if s.scheduler:
            explicit.add("scheduler")
        settings = engine.Settings(
            prompt=s.prompt,
            negative_prompt=s.negative_prompt,
            strength=s.strength,
            guidance_scale=s.guidance_scale,
            steps=s.steps,
            scheduler=s.scheduler,
            seed=s.seed,
            width_px=s.width_px,
            height_px=s.height_px,
            tileable=s.tileable,
            loras=tuple(s.loras),
            lora_weights=tuple(s.lora_weights),
            controlnet=s.controlnet,
            controlnet_scale=s.controlnet_scale,
            refiner=s.refiner,
            refiner_switch=s.refiner_switch,
        )
        if mask is not None:
            mask = mask.point(lambda p: 255 if p else 0)  # type: ignore[arg-type]  # non-zero is "in"
        return GenerateCall(
            model=request.model,
            mode=mode,
            settings=settings,
            explicit=explicit,
            num_images=request.num_images or 1,
            preview_every=request.preview_every,
            init_image=init,
            mask=mask,
            session_id=request.session_id,
            session_image_index=request.session_image_index,
        )

    # -- MakeTileable ------------------------------------------------------------------------
    def MakeTileable(
        self, request: generation_pb2.MakeTileableRequest, context: grpc.ServicerContext
    ) -> generation_pb2.MakeTileableResponse:
        lim = self.service.limits
        v = Violations()
        v.check(0.0 <= request.blend <= 0.5, "blend", "must be in (0, 0.5] (0 takes 0.25)")
        pixels = images.check(v, "image.data", request.image.data, _input_limits(lim.max_input_side_px, 8))
        v.raise_if_any("the tile request is invalid")
        assert pixels is not None
        result = tile.make_tileable(pixels, request.blend or tile.DEFAULT_BLEND)
        TILE_SEAM_ERROR.observe(result.seam_error)
        height, width = result.tile.shape[:2]
        return generation_pb2.MakeTileableResponse(
            tile=png_image(tile.encode_png(result.tile), width, height),
            seam_error=result.seam_error,
            seam_error_before=result.seam_error_before,
            interior_error=result.interior_error,
        )

    # -- GetSession --------------------------------------------------------------------------
    def GetSession(
        self, request: generation_pb2.GetSessionRequest, context: grpc.ServicerContext
    ) -> generation_pb2.Session:
        v = Violations()
        v.check(bool(request.session_id), "session_id", "is required")
        v.raise_if_any()
        record = self.service.session(current_tenant(), request.session_id)
        images = []
        for png in record.images:
            decoded = decode_png(png)
            images.append(png_image(png, decoded.width, decoded.height))
        history = []
        for item in record.history:
            known = {f.name for f in generation_pb2.GenerationSettings.DESCRIPTOR.fields}
            history.append(generation_pb2.GenerationSettings(**{k: v for k, v in item.items() if k in known}))
        return generation_pb2.Session(
            session_id=record.session_id,
            model=record.model,
            rounds=record.rounds,
            history=history,
            last_image=images[0] if images else None,
            last_images=images,
        )
