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
    refiner: str = ""  # an SDXL checkpoint run as the second stage ("" = none)
    refiner_switch: float = 0.0  # share of the schedule the base model runs (0 when there is no refiner)


# The refiner's default hand-over point: the value of diffusers' and SDXL's own base + refiner examples.
DEFAULT_REFINER_SWITCH = 0.8
# Text-to-image and image-to-image hand latents to the refiner mid-schedule (denoising_end / denoising_start).
REFINER_MODES = ("text_to_image", "image_to_image")


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
    if values["refiner"] and not values["refiner_switch"]:
        values["refiner_switch"] = float(model_defaults.get("refiner_switch", DEFAULT_REFINER_SWITCH))
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


def compel_embeddings(
    pipe: Any, prompts: list[str], negatives: list[str], textual_inversion: bool = False
) -> dict[str, Any]:
    """Prompt embeddings (chunked, weighted) for the pipeline call's ``prompt_embeds`` arguments.

    ``textual_inversion``: expand multi-vector embedding tokens (``name`` -> ``name name_1 ...``) as
    the pipeline's own encoding does.
    """
    import torch
    from compel import CompelForSD, CompelForSDXL, DiffusersTextualInversionManager

    manager = DiffusersTextualInversionManager(pipe) if textual_inversion else None
    with torch.no_grad():
        if is_xl(pipe):
            xl = CompelForSDXL(pipe, textual_inversion_manager=manager)(
                [to_compel_syntax(p) for p in prompts],
                negative_prompt=[to_compel_syntax(n) for n in negatives],
            )
            return dict(
                prompt_embeds=xl.embeds,
                negative_prompt_embeds=xl.negative_embeds,
                pooled_prompt_embeds=xl.pooled_embeds,
                negative_pooled_prompt_embeds=xl.negative_pooled_embeds,
            )
        sd = CompelForSD(pipe, textual_inversion_manager=manager)(
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


def a1111_parameters(model: str, mode: str, s: Settings, seed: int, embeddings: tuple[str, ...] = ()) -> str:
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
    if s.refiner:  # as the web UI writes its refiner
        fields.append(f"Refiner: {s.refiner}, Refiner switch at: {s.refiner_switch:g}")
    if embeddings:
        fields.append("Embeddings: " + ", ".join(embeddings))
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


def is_refiner(pipe: Any) -> bool:
    """An SDXL refiner: only the second (OpenCLIP) text encoder."""
    return is_xl(pipe) and getattr(pipe, "text_encoder", None) is None


def architecture_name(pipe: Any) -> str:
    """For messages: what kind of checkpoint a loaded pipeline is."""
    if is_refiner(pipe):
        return "an SDXL refiner"
    return "an SDXL checkpoint" if is_xl(pipe) else "an SD 1.x/2.x checkpoint"


def mode_problem(pipe: Any, mode: str, with_controlnet: bool) -> str:
    """Why this loaded model cannot run the mode (for FAILED_PRECONDITION), or ''."""
    if is_inpainting_model(pipe) and mode != "inpaint":
        return "an inpainting checkpoint (9-channel UNet) runs the inpaint mode only"
    if is_refiner(pipe) and with_controlnet:
        return "an SDXL refiner takes no ControlNet: sketch with the SDXL base model"
    if is_refiner(pipe) and mode == "text_to_image":
        return "an SDXL refiner refines an image: use image_to_image (or a session round) with it"
    return ""


def controlnet_problem(pipe: Any, controlnet: Any, name: str) -> str:
    """Why a loaded ControlNet does not fit the checkpoint (for FAILED_PRECONDITION), or ''.

    A ControlNet is a copy of its base model's encoder: its cross-attention width and SDXL's extra
    conditioning (text_time) must be the UNet's.
    """
    unet, cn = pipe.unet.config, controlnet.config
    if cn.cross_attention_dim != unet.cross_attention_dim or cn.get("addition_embed_type") != unet.get(
        "addition_embed_type"
    ):
        made_for = "SDXL" if cn.get("addition_embed_type") == "text_time" else "SD 1.x/2.x"
        return (
            f"ControlNet {name!r} is made for {made_for} (cross-attention width {cn.cross_attention_dim}) and "
            f"does not fit {architecture_name(pipe)} (width {unet.cross_attention_dim}): use a ControlNet "
            "trained for this base model"
        )
    if cn.get("addition_embed_type") == "text_time" and cn.get("addition_time_embed_dim") != unet.get(
        "addition_time_embed_dim"
    ):
        # A single-file SDXL ControlNet's id embedding width is assumed (256, as in every release).
        return (
            f"ControlNet {name!r} embeds SDXL's size/crop ids {cn.get('addition_time_embed_dim')} wide; this UNet "
            f"embeds them {unet.get('addition_time_embed_dim')} wide: use the ControlNet's diffusers folder"
        )
    return ""


def refiner_problem(pipe: Any, refiner: Any, name: str) -> str:
    """Why a loaded checkpoint cannot refine this base model's latents (for FAILED_PRECONDITION), or ''."""
    if not is_xl(pipe) or is_refiner(pipe) or is_inpainting_model(pipe):
        return f"a refiner stage needs an SDXL base model; this model is {architecture_name(pipe)}"
    if not is_xl(refiner) or is_inpainting_model(refiner):
        kind = "an inpainting checkpoint" if is_inpainting_model(refiner) else architecture_name(refiner)
        return f"refiner {name!r} is {kind}: the refiner must be an SDXL refiner or SDXL base checkpoint"
    if refiner.vae.config.latent_channels != pipe.vae.config.latent_channels:
        return f"refiner {name!r} works in another latent space than this model"
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
        if mode == "sketch" and controlnet is not None:
            cls = diffusers.StableDiffusionXLControlNetImg2ImgPipeline
            common["controlnet"] = controlnet
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


class EmbeddingMismatchError(ValueError):
    """A textual-inversion embedding's vectors do not fit the checkpoint's text encoders."""


# The text encoder (and its tokenizer) each part of an embedding goes to.
TEXT_ENCODERS = {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2"}


def embedding_names_in(text: str, names: list[str]) -> list[str]:
    """The embedding names a prompt uses, as whole words (the web UIs' rule)."""
    return [n for n in names if re.search(r"(?<![\w-])" + re.escape(n) + r"(?![\w-])", text)]


def embedding_problem(pipe: Any, name: str, vectors: dict[str, Any]) -> str:
    """Why an embedding (text encoder -> n x width vectors) does not fit the pipeline, or ''."""
    wanted = {
        enc: int(getattr(pipe, enc).get_input_embeddings().weight.shape[-1])
        for enc in TEXT_ENCODERS
        if getattr(pipe, enc, None) is not None
    }
    given = {enc: int(v.shape[-1]) for enc, v in vectors.items()}
    if any(given.get(enc) != width for enc, width in wanted.items()):
        have = " + ".join(str(w) for w in given.values())
        need = " + ".join(str(w) for w in wanted.values())
        return (
            f"embedding {name!r} holds {have}-wide vectors; {architecture_name(pipe)}'s text "
            f"encoder{'s take' if len(wanted) > 1 else ' takes'} {need}: it was trained for another base model"
        )
    return ""


def apply_embeddings(pipe: Any, embeddings: dict[str, dict[str, Any]]) -> None:
    """Load textual-inversion embeddings into the cached pipeline's tokenizers and text encoders, once each.

    A loaded embedding is a token named like it; prompts without that token are not affected.
    """
    loaded: set[str] = pipe.__dict__.setdefault("_atelier_embeddings", set())
    for name, vectors in embeddings.items():
        if name in loaded:
            continue
        problem = embedding_problem(pipe, name, vectors)
        if problem:
            raise EmbeddingMismatchError(problem)
        for encoder, tokenizer in TEXT_ENCODERS.items():
            if getattr(pipe, encoder, None) is not None:
                pipe.load_textual_inversion(
                    vectors[encoder],
                    token=name,
                    text_encoder=getattr(pipe, encoder),
                    tokenizer=getattr(pipe, tokenizer),
                )
        loaded.add(name)


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
        s.refiner,
        s.refiner_switch,
    )


def run(
    pipe: Any,
    job: Job,
    cancellation: Cancellation,
    on_progress: Callable[[Progress], None],
    controlnet: Any = None,
    loras: dict[str, Any] | None = None,
    refiner: Any = None,
    embeddings: dict[str, dict[str, Any]] | None = None,
) -> list[Output]:
    """Runs one job on a loaded pipeline; the caller owns the device (one job at a time)."""
    return run_batch(
        pipe,
        [job],
        [cancellation],
        [on_progress],
        controlnet=controlnet,
        loras=loras,
        refiner=refiner,
        embeddings=embeddings,
    )[0]


def run_batch(
    pipe: Any,
    jobs: list[Job],
    cancellations: list[Cancellation],
    on_progress: list[Callable[[Progress], None]],
    controlnet: Any = None,
    loras: dict[str, Any] | None = None,
    refiner: Any = None,
    embeddings: dict[str, dict[str, Any]] | None = None,
) -> list[list[Output]]:
    """Runs jobs in one pipeline call: one job of any mode, or several with the same batch_key.

    Each image keeps its own CPU generator (its job's seed + i) and each job its own prompts and
    previews. A batch stops early only when every job in it is cancelled or past its deadline; a
    stopped job gets no more progress events, and its images, computed with the others, go unread.
    A batched image equals the same request run alone up to float rounding: the UNet and VAE kernels
    of another batch size differ in the last bits (at most 1 level in 255 on a few pixels, measured).

    With ``refiner`` (a loaded SDXL pipeline) the base call stops at ``refiner_switch`` of the schedule
    and returns latents (``denoising_end``), which the refiner denoises from there (``denoising_start``),
    as diffusers' "ensemble of expert denoisers"; progress counts both stages' steps.
    ``embeddings`` (name -> text encoder component -> vectors) are loaded into the pipeline's
    tokenizers and text encoders once, as tokens named like the embedding.
    """
    import torch

    job = jobs[0]
    s = job.settings
    device = pipe.device
    apply_loras(pipe, loras or {}, s.lora_weights)
    apply_embeddings(pipe, embeddings or {})
    if refiner is not None:
        apply_embeddings(refiner, embeddings or {})
    worker = _pipeline_for(pipe, job.mode, make_scheduler(pipe, s.scheduler), controlnet)
    # One CPU generator per image: image i is reproducible alone with seed + i, on any device.
    seeds = [[j.settings.seed + i for i in range(j.num_images)] for j in jobs]

    def generators() -> list[Any]:
        return [torch.Generator(device="cpu").manual_seed(seed) for job_seeds in seeds for seed in job_seeds]

    offsets = np.cumsum([0] + [j.num_images for j in jobs])
    done_steps = [0]  # steps of the stages before this one (the base model's, for the refiner)

    def on_step_end(p: Any, step: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        live = [k for k, c in enumerate(cancellations) if not _stopped(c)]
        if not live:
            cancellations[0].check()  # stops the denoising loop: raises out of the pipeline call
        total = s.steps if refiner is not None else int(getattr(p, "num_timesteps", s.steps) or s.steps)
        for k in live:
            preview = None
            every = jobs[k].preview_every
            if every > 0 and ((step + 1) % every == 0):
                preview = latent_preview(kwargs["latents"][int(offsets[k]) :])
            on_progress[k](
                Progress(step=min(done_steps[0] + step + 1, total), total_steps=total, preview=preview)
            )
        return kwargs

    call: dict[str, Any] = dict(
        num_inference_steps=s.steps,
        guidance_scale=s.guidance_scale,
        generator=generators(),
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
    prompt_args = {k: call[k] for k in ("prompt", "negative_prompt", "num_images_per_prompt")}
    texts = [t for j in jobs for t in (j.settings.prompt, j.settings.negative_prompt)]
    encoding = "pipeline"
    if getattr(pipe, "text_encoder", None) is not None and any(needs_compel(pipe, t) for t in texts):
        encoding = "compel"
        prompts, negatives = call.pop("prompt"), call.pop("negative_prompt")
        prompts = [prompts] if isinstance(prompts, str) else prompts
        negatives = [negatives or ""] if not isinstance(negatives, list) else negatives
        call.update(compel_embeddings(worker, prompts, negatives, textual_inversion=bool(embeddings)))
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
    if refiner is not None:
        call.update(denoising_end=s.refiner_switch, output_type="latent")

    if all(_stopped(c) for c in cancellations):
        cancellations[0].check()
    padded = (pipe.unet, pipe.vae, controlnet) + ((refiner.unet, refiner.vae) if refiner is not None else ())
    with torch.inference_mode(), circular_padding(*(padded if s.tileable else ())):
        result = worker(**call)
        if refiner is not None:
            done_steps[0] = int(getattr(worker, "num_timesteps", 0) or 0)
            stage = _refiner_stage(refiner, make_scheduler(refiner, s.scheduler))
            second: dict[str, Any] = dict(
                image=result.images,
                denoising_start=s.refiner_switch,
                num_inference_steps=s.steps,
                guidance_scale=s.guidance_scale,
                generator=generators(),  # the same seeds again: the refined image depends on the seed alone
                output_type="np",
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=["latents"],
                **prompt_args,
            )
            if encoding == "compel":
                # The refiner has only the second text encoder: its own (chunked, weighted) embeddings.
                prompts, negatives = second.pop("prompt"), second.pop("negative_prompt")
                prompts = [prompts] if isinstance(prompts, str) else prompts
                negatives = [negatives or ""] if not isinstance(negatives, list) else negatives
                second.update(
                    refiner_compel_embeddings(stage, prompts, negatives, textual_inversion=bool(embeddings))
                )
            result = stage(**second)
    images = np.clip(np.round(result.images * 255.0), 0, 255).astype(np.uint8)
    if job.mode == "inpaint" and job.init_image is not None and job.mask is not None:
        # Only the mask region changes: the person and background stay pixel-exact (VAE round trips blur them).
        keep = (np.asarray(job.mask) == 0)[..., None]
        images = np.where(keep, np.asarray(job.init_image)[None], images)
    used = tuple(sorted(embeddings or {}))
    return [
        _outputs(
            pipe,
            j,
            images[int(offsets[k]) : int(offsets[k + 1])],
            seeds[k],
            str(device),
            len(images),
            encoding,
            used,
        )
        for k, j in enumerate(jobs)
    ]


def _refiner_stage(refiner: Any, scheduler: Any) -> Any:
    """The img2img pipeline over a loaded refiner's components, taking latents mid-schedule."""
    import diffusers

    components = {
        k: v
        for k, v in refiner.components.items()
        if k in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
    }
    stage = diffusers.StableDiffusionXLImg2ImgPipeline(
        **components,
        scheduler=scheduler,
        requires_aesthetics_score=bool(refiner.config.get("requires_aesthetics_score", False)),
    )
    stage.set_progress_bar_config(disable=True)
    return stage


def refiner_compel_embeddings(
    stage: Any, prompts: list[str], negatives: list[str], textual_inversion: bool = False
) -> dict[str, Any]:
    """Chunked, weighted prompt embeddings from the refiner's one (OpenCLIP) encoder, as compel documents it."""
    import torch
    from compel import Compel, DiffusersTextualInversionManager, ReturnedEmbeddingsType

    compel = Compel(
        tokenizer=stage.tokenizer_2,
        text_encoder=stage.text_encoder_2,
        returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
        requires_pooled=True,
        truncate_long_prompts=False,
        textual_inversion_manager=DiffusersTextualInversionManager(stage) if textual_inversion else None,
    )
    with torch.no_grad():
        embeds, pooled = compel([to_compel_syntax(t) for t in [*prompts, *negatives]])
    n = len(prompts)
    return dict(
        prompt_embeds=embeds[:n],
        negative_prompt_embeds=embeds[n:],
        pooled_prompt_embeds=pooled[:n],
        negative_pooled_prompt_embeds=pooled[n:],
    )


def _outputs(
    pipe: Any,
    job: Job,
    images: np.ndarray,
    seeds: list[int],
    device: str,
    batch_images: int,
    encoding: str = "pipeline",
    embeddings: tuple[str, ...] = (),
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
            "embeddings": list(embeddings),  # textual-inversion embeddings named in the prompts
        }
        text = {
            "parameters": a1111_parameters(job.model, job.mode, settings, seed, embeddings),
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
