"""One generation, top to bottom: settings in, PNGs with their settings out (no gRPC here).

The modes are the diffusers Stable Diffusion pipelines built from one loaded pipeline's
components (no second copy of the weights): text-to-image, image-to-image, inpainting, and
sketch to illustration (ControlNet img2img when a ControlNet is given, plain img2img otherwise).
Tileable output switches every Conv2d of the UNet, VAE (and ControlNet) to circular padding for
the call, as the web UIs' "tiling" option does; the cached modules are restored afterwards.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from atelier.runtime.context import Cancellation

MODES = ("text_to_image", "image_to_image", "inpaint", "sketch")

# Scheduler names people know from the web UIs -> diffusers classes.
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "lms": "LMSDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
    "ddpm": "DDPMScheduler",
}

# A linear map from SD 1.x latents to RGB (the web UIs' cheap preview): no VAE decode needed.
LATENT_RGB = np.array(
    [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ],
    dtype=np.float32,
)

BUILTIN_DEFAULTS: dict[str, Any] = {
    "strength": 0.75,
    "guidance_scale": 7.5,
    "steps": 30,
    "width_px": 512,
    "height_px": 512,
    "controlnet_scale": 1.0,
}


@dataclass(frozen=True)
class Settings:
    """The settings of one generation; with the model, seed and input they determine the image."""

    prompt: str
    negative_prompt: str = ""
    strength: float = 0.75
    guidance_scale: float = 7.5
    steps: int = 30
    scheduler: str = ""
    seed: int = 0
    width_px: int = 512
    height_px: int = 512
    tileable: bool = False
    loras: tuple[str, ...] = ()
    lora_weights: tuple[float, ...] = ()  # one per LoRA; empty: 1.0 each
    controlnet: str = ""
    controlnet_scale: float = 1.0


@dataclass
class Job:
    model: str
    mode: str
    settings: Settings
    num_images: int = 1
    init_image: Image.Image | None = None  # RGB, already at settings' size
    mask: Image.Image | None = None  # "L", same size as init_image; non-zero = repaint
    preview_every: int = 0


@dataclass
class Progress:
    step: int
    total_steps: int
    preview: Image.Image | None = None


@dataclass
class Output:
    index: int
    seed: int
    png: bytes
    width_px: int
    height_px: int
    settings: Settings
    pixels: np.ndarray = field(repr=False)  # uint8 HxWx3


def fill_defaults(settings: Settings, model_defaults: dict[str, Any], explicit: set[str]) -> Settings:
    """Settings the caller left unset take the model manifest's defaults, then the built-in ones."""
    values = asdict(settings)
    for key, builtin in BUILTIN_DEFAULTS.items():
        if key not in explicit:
            values[key] = type(builtin)(model_defaults.get(key, builtin))
    if "scheduler" not in explicit and model_defaults.get("scheduler"):
        values["scheduler"] = str(model_defaults["scheduler"])
    values["loras"] = tuple(values["loras"])
    values["lora_weights"] = tuple(values["lora_weights"])
    return Settings(**values)


def token_count(tokenizer: Any, text: str) -> int:
    """Tokens of a prompt without the start and end tokens."""
    return len(tokenizer(text, truncation=False, add_special_tokens=False).input_ids)


def token_limit(tokenizer: Any) -> int:
    return int(tokenizer.model_max_length) - 2


# Long prompts are encoded in chunks of the tokenizer's window (75 tokens), as the web UIs do, by `compel`;
# three chunks at most, so a prompt's cost stays bounded.
PROMPT_CHUNKS = 3
_WEIGHTING = re.compile(r"[()\[\]]")
_GROUP = re.compile(r"\(([^()\[\]]*)\)|\[([^()\[\]]*)\]")


def prompt_token_limit(pipe: Any) -> int:
    """Tokens a prompt may have: chunked beyond one window, except on an SDXL refiner (compel needs both encoders)."""
    tokenizer = pipe.tokenizer if getattr(pipe, "tokenizer", None) is not None else pipe.tokenizer_2
    return token_limit(tokenizer) * (PROMPT_CHUNKS if getattr(pipe, "text_encoder", None) is not None else 1)


def needs_compel(pipe: Any, text: str) -> bool:
    """Weighting syntax or more than one window of tokens: encoded by compel, else by the pipeline itself."""
    return bool(_WEIGHTING.search(text)) or token_count(pipe.tokenizer, text) > token_limit(pipe.tokenizer)


def to_compel_syntax(text: str) -> str:
    """The web UIs' emphasis, ``(silk:1.3)``, ``(silk)`` (x1.1) and ``[cotton]`` (/1.1), in compel's notation.

    Innermost groups first (nesting multiplies, as in both); a rewritten group is held in private-use
    characters so it is not matched again, then turned back into compel's ``(text)weight``.
    """
    opening, closing = "\ue000", "\ue001"

    def rewrite(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            inner = match.group(1)
            body, sep, weight = inner.rpartition(":")
            try:
                value = float(weight) if sep else 1.1
            except ValueError:
                body, value = inner, 1.1
            if not sep:
                body = inner
            return f"{opening}{body}{closing}{value:g}"
        return f"{opening}{match.group(2)}{closing}{1 / 1.1:.4g}"

    previous = None
    while previous != text:
        previous, text = text, _GROUP.sub(rewrite, text)
    return text.replace(opening, "(").replace(closing, ")")


def compel_embeddings(pipe: Any, prompts: list[str], negatives: list[str]) -> dict[str, Any]:
    """Prompt embeddings (chunked, weighted) for the pipeline call's ``prompt_embeds`` arguments."""
    import torch
    from compel import CompelForSD, CompelForSDXL

    with torch.no_grad():
        if is_xl(pipe):
            xl = CompelForSDXL(pipe)(
                [to_compel_syntax(p) for p in prompts],
                negative_prompt=[to_compel_syntax(n) for n in negatives],
            )
            return dict(
                prompt_embeds=xl.embeds,
                negative_prompt_embeds=xl.negative_embeds,
                pooled_prompt_embeds=xl.pooled_embeds,
                negative_pooled_prompt_embeds=xl.negative_pooled_embeds,
            )
        sd = CompelForSD(pipe)(
            [to_compel_syntax(p) for p in prompts], negative_prompt=[to_compel_syntax(n) for n in negatives]
        )
        return dict(prompt_embeds=sd.embeds, negative_prompt_embeds=sd.negative_embeds)


@contextmanager
def circular_padding(*modules: Any) -> Iterator[None]:
    """Every Conv2d pads circularly inside the block, so the output wraps around seamlessly."""
    import torch

    convs = [
        m
        for module in modules
        if module is not None
        for m in module.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    previous = [c.padding_mode for c in convs]
    for conv in convs:
        conv.padding_mode = "circular"
    try:
        yield
    finally:
        for conv, mode in zip(convs, previous, strict=True):
            conv.padding_mode = mode


def make_scheduler(pipe: Any, name: str) -> Any:
    if not name:
        return pipe.scheduler
    import diffusers

    return getattr(diffusers, SCHEDULERS[name]).from_config(pipe.scheduler.config)


def latent_preview(latents: Any) -> Image.Image:
    """The first latent of a batch as a small RGB image (1/8 of the output size)."""
    lat = latents[0].detach().float().cpu().numpy()  # 4 x h x w
    rgb = np.einsum("chw,cr->hwr", lat[:4], LATENT_RGB)
    return Image.fromarray(np.clip((rgb + 1.0) * 127.5, 0, 255).astype(np.uint8))


def a1111_parameters(model: str, mode: str, s: Settings, seed: int) -> str:
    """The "parameters" text chunk in the format the web UIs write and read back."""
    fields = [
        f"Steps: {s.steps}",
        f"Sampler: {s.scheduler or 'model default'}",
        f"CFG scale: {s.guidance_scale}",
        f"Seed: {seed}",
        f"Size: {s.width_px}x{s.height_px}",
        f"Model: {model}",
    ]
    if mode != "text_to_image":
        fields.append(f"Denoising strength: {s.strength}")
    if s.tileable:
        fields.append("Tiling: True")
    if s.loras:
        weights = s.lora_weights or (1.0,) * len(s.loras)
        fields.append("LoRA: " + ", ".join(f"{n}:{w:g}" for n, w in zip(s.loras, weights, strict=True)))
    if s.controlnet:
        fields.append(f"ControlNet: {s.controlnet} ({s.controlnet_scale})")
    return f"{s.prompt}\nNegative prompt: {s.negative_prompt}\n" + ", ".join(fields)


def encode_png(pixels: np.ndarray, text: dict[str, str]) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def image_digest(image: Image.Image | None) -> str:
    if image is None:
        return ""
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()[:16]


def scribble_control(sketch: Image.Image) -> Image.Image:
    """Scribble/lineart ControlNets expect light lines on black: invert a dark-on-light sketch."""
    grey = np.asarray(sketch.convert("L"))
    if grey.mean() > 127:
        grey = 255 - grey
    return Image.fromarray(grey).convert("RGB")


def is_xl(pipe: Any) -> bool:
    """SDXL pipelines have a second text encoder (base) or only OpenCLIP with a projection (refiner)."""
    return "text_encoder_2" in pipe.components


def is_inpainting_model(pipe: Any) -> bool:
    """A dedicated inpainting UNet takes latents + mask + masked-image latents: 9 input channels."""
    return int(pipe.unet.config.in_channels) == 9


def mode_problem(pipe: Any, mode: str, with_controlnet: bool) -> str:
    """Why this loaded model cannot run the mode (for FAILED_PRECONDITION), or ''."""
    if is_inpainting_model(pipe) and mode != "inpaint":
        return "an inpainting checkpoint (9-channel UNet) runs the inpaint mode only"
    if is_xl(pipe) and with_controlnet:
        return "ControlNet with an SDXL checkpoint is not supported yet: sketch without settings.controlnet"
    if is_xl(pipe) and getattr(pipe, "text_encoder", None) is None and mode == "text_to_image":
        return "an SDXL refiner refines an image: use image_to_image (or a session round) with it"
    return ""


def _pipeline_for(pipe: Any, mode: str, scheduler: Any, controlnet: Any) -> Any:
    """A pipeline object of the mode's class over the loaded components (no weights copied)."""
    import diffusers

    problem = mode_problem(pipe, mode, controlnet is not None)
    if problem:
        raise ValueError(problem)
    out: Any
    if is_xl(pipe):
        components = {
            k: v
            for k, v in pipe.components.items()
            if k in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
        }
        common: dict[str, Any] = dict(components, scheduler=scheduler)
        cls = {
            "text_to_image": diffusers.StableDiffusionXLPipeline,
            "inpaint": diffusers.StableDiffusionXLInpaintPipeline,
        }.get(mode, diffusers.StableDiffusionXLImg2ImgPipeline)
        if cls is not diffusers.StableDiffusionXLPipeline:
            # The refiner conditions on an aesthetic score; the base model does not.
            common["requires_aesthetics_score"] = bool(pipe.config.get("requires_aesthetics_score", False))
        out = cls(**common)
        out.set_progress_bar_config(disable=True)
        return out
    components = {
        k: v for k, v in pipe.components.items() if k in ("unet", "vae", "text_encoder", "tokenizer")
    }
    common = dict(
        components,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if mode == "text_to_image":
        out = diffusers.StableDiffusionPipeline(**common)
    elif mode == "inpaint":
        out = diffusers.StableDiffusionInpaintPipeline(**common)
    elif mode == "sketch" and controlnet is not None:
        out = diffusers.StableDiffusionControlNetImg2ImgPipeline(**common, controlnet=controlnet)
    else:
        out = diffusers.StableDiffusionImg2ImgPipeline(**common)
    out.set_progress_bar_config(disable=True)
    return out


class LoraMismatchError(ValueError):
    """A LoRA's weights do not fit the checkpoint (another base architecture or size)."""


def apply_loras(pipe: Any, loras: dict[str, Any], weights: tuple[float, ...] = ()) -> None:
    """Activate exactly the given LoRA adapters (name -> weights file) with their weights on the cached pipeline."""
    loaded: set[str] = pipe.__dict__.setdefault("_atelier_loras", set())
    for name, path in loras.items():
        if name not in loaded:
            try:
                pipe.load_lora_weights(str(path), adapter_name=name)
            except (ValueError, RuntimeError, KeyError) as exc:
                # A half-attached adapter would stay on the cached pipeline: take it off again.
                with suppress(Exception):
                    pipe.delete_adapters([name])
                # torch lists every mismatched tensor: the first lines say enough (and fit gRPC's metadata).
                detail = " ".join(str(exc).split())[:300]
                raise LoraMismatchError(f"LoRA {name!r} does not fit this checkpoint: {detail}") from exc
            loaded.add(name)
    if loras:
        pipe.set_adapters(list(loras), adapter_weights=list(weights) if weights else [1.0] * len(loras))
        pipe.enable_lora()
    elif loaded:
        pipe.disable_lora()


def _compel_version() -> str:
    from importlib.metadata import version

    return version("compel")


def _stopped(cancellation: Cancellation) -> bool:
    return cancellation.cancelled or cancellation.time_remaining_s() == 0.0


def batch_key(job: Job) -> tuple[Any, ...] | None:
    """Jobs with equal keys can share one pipeline call (text-to-image only: prompts and seeds may differ)."""
    if job.mode != "text_to_image" or job.settings.controlnet:
        return None
    s = job.settings
    return (
        job.model,
        s.steps,
        s.guidance_scale,
        s.scheduler,
        s.width_px,
        s.height_px,
        s.tileable,
        s.loras,
        s.lora_weights,
    )


def run(
    pipe: Any,
    job: Job,
    cancellation: Cancellation,
    on_progress: Callable[[Progress], None],
    controlnet: Any = None,
    loras: dict[str, Any] | None = None,
) -> list[Output]:
    """Runs one job on a loaded pipeline; the caller owns the device (one job at a time)."""
    return run_batch(pipe, [job], [cancellation], [on_progress], controlnet=controlnet, loras=loras)[0]


def run_batch(
    pipe: Any,
    jobs: list[Job],
    cancellations: list[Cancellation],
    on_progress: list[Callable[[Progress], None]],
    controlnet: Any = None,
    loras: dict[str, Any] | None = None,
) -> list[list[Output]]:
    """Runs jobs in one pipeline call: one job of any mode, or several with the same batch_key.

    Each image keeps its own CPU generator (its job's seed + i) and each job its own prompts and
    previews. A batch stops early only when every job in it is cancelled or past its deadline; a
    stopped job gets no more progress events, and its images, computed with the others, go unread.
    A batched image equals the same request run alone up to float rounding: the UNet and VAE kernels
    of another batch size differ in the last bits (at most 1 level in 255 on a few pixels, measured).
    """
    import torch

    job = jobs[0]
    s = job.settings
    device = pipe.device
    apply_loras(pipe, loras or {}, s.lora_weights)
    worker = _pipeline_for(pipe, job.mode, make_scheduler(pipe, s.scheduler), controlnet)
    # One CPU generator per image: image i is reproducible alone with seed + i, on any device.
    seeds = [[j.settings.seed + i for i in range(j.num_images)] for j in jobs]
    generators = [
        torch.Generator(device="cpu").manual_seed(seed) for job_seeds in seeds for seed in job_seeds
    ]
    offsets = np.cumsum([0] + [j.num_images for j in jobs])

    def on_step_end(p: Any, step: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        live = [k for k, c in enumerate(cancellations) if not _stopped(c)]
        if not live:
            cancellations[0].check()  # stops the denoising loop: raises out of the pipeline call
        total = int(getattr(p, "num_timesteps", s.steps) or s.steps)
        for k in live:
            preview = None
            every = jobs[k].preview_every
            if every > 0 and ((step + 1) % every == 0):
                preview = latent_preview(kwargs["latents"][int(offsets[k]) :])
            on_progress[k](Progress(step=step + 1, total_steps=total, preview=preview))
        return kwargs

    call: dict[str, Any] = dict(
        num_inference_steps=s.steps,
        guidance_scale=s.guidance_scale,
        generator=generators,
        output_type="np",
        callback_on_step_end=on_step_end,
        callback_on_step_end_tensor_inputs=["latents"],
    )
    if len(jobs) == 1:
        call.update(
            prompt=s.prompt, negative_prompt=s.negative_prompt or None, num_images_per_prompt=job.num_images
        )
    else:  # one prompt per image, so jobs with different prompts and image counts share the call
        call.update(
            prompt=[j.settings.prompt for j in jobs for _ in range(j.num_images)],
            negative_prompt=[j.settings.negative_prompt for j in jobs for _ in range(j.num_images)],
            num_images_per_prompt=1,
        )
    texts = [t for j in jobs for t in (j.settings.prompt, j.settings.negative_prompt)]
    encoding = "pipeline"
    if getattr(pipe, "text_encoder", None) is not None and any(needs_compel(pipe, t) for t in texts):
        encoding = "compel"
        prompts, negatives = call.pop("prompt"), call.pop("negative_prompt")
        prompts = [prompts] if isinstance(prompts, str) else prompts
        negatives = [negatives or ""] if not isinstance(negatives, list) else negatives
        call.update(compel_embeddings(worker, prompts, negatives))
    if job.mode == "text_to_image":
        call.update(width=s.width_px, height=s.height_px)
    elif job.mode == "inpaint":
        call.update(
            image=job.init_image,
            mask_image=job.mask,
            strength=s.strength,
            width=s.width_px,
            height=s.height_px,
        )
    elif job.mode == "sketch" and controlnet is not None:
        call.update(
            image=job.init_image,
            control_image=scribble_control(job.init_image),  # type: ignore[arg-type]
            strength=s.strength,
            controlnet_conditioning_scale=s.controlnet_scale,
        )  # type: ignore[arg-type]
    else:
        call.update(image=job.init_image, strength=s.strength)

    if all(_stopped(c) for c in cancellations):
        cancellations[0].check()
    with torch.inference_mode(), circular_padding(*((pipe.unet, pipe.vae, controlnet) if s.tileable else ())):
        result = worker(**call)
    images = np.clip(np.round(result.images * 255.0), 0, 255).astype(np.uint8)
    if job.mode == "inpaint" and job.init_image is not None and job.mask is not None:
        # Only the mask region changes: the person and background stay pixel-exact (VAE round trips blur them).
        keep = (np.asarray(job.mask) == 0)[..., None]
        images = np.where(keep, np.asarray(job.init_image)[None], images)
    return [
        _outputs(
            pipe,
            j,
            images[int(offsets[k]) : int(offsets[k + 1])],
            seeds[k],
            str(device),
            len(images),
            encoding,
        )
        for k, j in enumerate(jobs)
    ]


def _outputs(
    pipe: Any,
    job: Job,
    images: np.ndarray,
    seeds: list[int],
    device: str,
    batch_images: int,
    encoding: str = "pipeline",
) -> list[Output]:
    outputs = []
    for index, (pixels, seed) in enumerate(zip(images, seeds, strict=True)):
        settings = replace(job.settings, seed=seed)
        meta = {
            "model": job.model,
            "mode": job.mode,
            "index": index,
            "settings": asdict(settings),
            "init_image_sha256_16": image_digest(job.init_image),
            "mask_sha256_16": image_digest(job.mask),
            "device": device,
            "batch_images": batch_images,  # images in the pipeline call: bit-exact reruns need the same
            "dtype": str(pipe.unet.dtype).replace("torch.", ""),
            # "compel": weighted / chunked prompt embeddings (compel's version), else the pipeline's own encoding.
            "prompt_encoding": encoding if encoding == "pipeline" else f"compel {_compel_version()}",
        }
        text = {
            "parameters": a1111_parameters(job.model, job.mode, settings, seed),
            "atelier": json.dumps(meta, sort_keys=True),
        }
        outputs.append(
            Output(
                index=index,
                seed=seed,
                png=encode_png(pixels, text),
                width_px=pixels.shape[1],
                height_px=pixels.shape[0],
                settings=settings,
                pixels=pixels,
            )
        )
    return outputs
