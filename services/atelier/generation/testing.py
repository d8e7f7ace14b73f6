"""Tiny randomly initialised Stable Diffusion 1.x pipelines, built here instead of downloaded.

Tests, the benchmark and the `make run` demo use them: they have the real SD 1.x component
classes and layout (UNet2DConditionModel, AutoencoderKL with a scale factor of 8, CLIPTextModel
with a CLIP BPE tokenizer whose vocabulary is written here), so the real loading code and every
mode run on the CPU in well under a second per image. The pictures they make are noise-like:
the weights are random. Nothing here touches the network.

    write_tiny_model(models_dir / "tiny", seed=0)              # a diffusers folder + manifest
    write_tiny_single_file(models_dir, "tiny-single", seed=0)  # one .safetensors + config folder
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# Enough channels for GroupNorm(4) everywhere; small enough for milliseconds per step on a CPU.
UNET_CHANNELS = (16, 32)
VAE_CHANNELS = (8, 8, 8, 8)  # four levels: the VAE scale factor is 8, as in SD 1.x
TEXT_HIDDEN = 32


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's printable stand-ins for the 256 byte values (the byte-level BPE alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def tiny_vocab() -> dict[str, int]:
    """Every byte as a token, alone and word-final, plus CLIP's two specials: no merges needed."""
    chars = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for token in [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(token, len(vocab))
    return vocab


def build_tiny_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=tiny_vocab(), merges=[], model_max_length=77)


def build_tiny_components(seed: int = 0) -> dict[str, Any]:
    """The components of a tiny SD 1.x pipeline (random weights from ``seed``)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=UNET_CHANNELS,
        layers_per_block=2,  # as SD 1.x, so single-file key layouts line up
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(VAE_CHANNELS),
        up_block_types=("UpDecoderBlock2D",) * len(VAE_CHANNELS),
        block_out_channels=VAE_CHANNELS,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    vocab = tiny_vocab()
    text_config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    text_encoder = CLIPTextModel(text_config)
    return _components(unet, vae, text_encoder)


def _components(unet: Any, vae: Any, text_encoder: Any) -> dict[str, Any]:
    """The modules in eval mode plus SD 1.x's DDIM schedule: a pipeline's components."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    for module in (unet, vae, text_encoder):
        module.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "scheduler": scheduler}


def build_tiny_pipeline(seed: int = 0) -> Any:
    """A tiny StableDiffusionPipeline in memory."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        **build_tiny_components(seed),
        tokenizer=build_tiny_tokenizer(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


# Stable Diffusion 1.5's component configurations (runwayml/stable-diffusion-v1-5), for the GPU benchmark.
SD15_UNET: dict[str, Any] = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768,
    attention_head_dim=8,
)
SD15_VAE: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    sample_size=512,
)
SD15_TEXT: dict[str, Any] = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
)


def build_sd15_size_components(seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Random-weight components with SD 1.5's exact shapes (UNet 859.5 M parameters, VAE 83.7 M, text 123.1 M).

    The tokenizer stays the tiny byte-level one (its ids fit the 49,408-token embedding): tokenizing
    costs microseconds either way. ``device="meta"`` builds the shapes without allocating memory.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    vocab = tiny_vocab()
    with torch.device(device):
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD15_VAE)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                **SD15_TEXT,
                bos_token_id=vocab["<|startoftext|>"],
                eos_token_id=vocab["<|endoftext|>"],
                pad_token_id=vocab["<|endoftext|>"],
            )
        )
    return _components(unet, vae, text_encoder)


def write_sd15_size_model(folder: Path, seed: int = 0, device: str = "cpu", dtype: str = "float16") -> Path:
    """An SD 1.5-size random-weight diffusers folder (about 2 GB in float16) with a manifest."""
    from diffusers import StableDiffusionPipeline

    components = build_sd15_size_components(seed, device)
    torch_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    pipe = StableDiffusionPipeline(
        **components,
        tokenizer=build_tiny_tokenizer(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).to(dtype=torch_dtype)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    write_manifest(
        folder,
        name=folder.name,
        kind="diffusers",
        base="sd15",
        licence="CC0-1.0 (random weights with SD 1.5's shapes, made by atelier.generation.testing)",
        defaults={"steps": 30, "guidance_scale": 7.5, "width_px": 512, "height_px": 512},
    )
    return folder


# Stable Diffusion XL base 1.0's component configurations (stabilityai/stable-diffusion-xl-base-1.0).
SDXL_UNET: dict[str, Any] = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
SDXL_VAE: dict[str, Any] = dict(SD15_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
SDXL_TEXT_2: dict[str, Any] = dict(
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=1280,
)


def build_sdxl_size_pipeline(seed: int = 0, dtype: str = "bfloat16") -> Any:
    """A random-weight StableDiffusionXLPipeline with SDXL base 1.0's exact shapes (UNet 2.57 G parameters).

    Built on the meta device and filled in ``dtype`` (normal, std 0.02; zero biases), so it costs its
    size in memory once (about 7 GB in bfloat16) and seconds, not minutes, of random initialisation.
    """
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    vocab = tiny_vocab()
    ids = dict(bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"])
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET)
        vae = AutoencoderKL(**SDXL_VAE)
        text = CLIPTextModel(CLIPTextConfig(**SD15_TEXT, **ids, pad_token_id=ids["eos_token_id"]))
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_2, **ids, pad_token_id=0))
    generator = torch.Generator().manual_seed(seed)
    modules = []
    for module in (unet, vae, text, text_2):
        module = module.to_empty(device="cpu").to(torch_dtype)
        with torch.no_grad():
            for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
                if tensor.is_floating_point():
                    if name.endswith("bias"):
                        tensor.zero_()
                    elif "norm" in name and name.endswith("weight"):
                        tensor.fill_(1.0)
                    else:
                        tensor.normal_(0.0, 0.02, generator=generator)
                elif "position_ids" in name:
                    tensor.copy_(torch.arange(tensor.shape[-1]).expand(tensor.shape))
        modules.append(module.eval())
    unet, vae, text, text_2 = modules
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text,
        text_encoder_2=text_2,
        unet=unet,
        tokenizer=CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77),
        tokenizer_2=CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77, pad_token="!"),
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        ),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_sdxl_size_model(folder: Path, seed: int = 0, dtype: str = "bfloat16") -> Path:
    """An SDXL-size random-weight diffusers folder (about 7 GB in bfloat16) with a manifest."""
    pipe = build_sdxl_size_pipeline(seed, dtype)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    del pipe
    write_manifest(
        folder,
        name=folder.name,
        kind="diffusers",
        base="sdxl",
        licence="CC0-1.0 (random weights with SDXL base 1.0's shapes, made by atelier.generation.testing)",
        defaults={"steps": 30, "guidance_scale": 7.5, "width_px": 1024, "height_px": 1024},
    )
    return folder


def write_manifest(folder: Path, **fields: Any) -> None:
    (folder / "manifest.json").write_text(json.dumps(fields, indent=2))


def write_tiny_model(
    folder: Path, seed: int = 0, name: str | None = None, defaults: dict[str, Any] | None = None
) -> Path:
    """Save a tiny pipeline as a diffusers folder with an Atelier manifest; returns the folder."""
    pipe = build_tiny_pipeline(seed)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    write_manifest(
        folder,
        name=name or folder.name,
        kind="diffusers",
        base="sd15",
        licence="CC0-1.0 (random weights, made by atelier.generation.testing)",
        defaults=defaults or {"steps": 4, "guidance_scale": 7.5, "width_px": 64, "height_px": 64},
    )
    return folder


def build_tiny_controlnet(seed: int = 1, base_model_seed: int = 0, architecture: str = "") -> Any:
    """A tiny ControlNetModel matching the tiny UNet (``architecture`` "": the demo SD 1.x UNet; "sd1",
    "sdxl": the drop-in models' UNets, SDXL's size/crop conditioning included as from_unet copies it)."""
    from diffusers import ControlNetModel

    if architecture:
        unet = build_tiny_drop_in_pipeline(architecture, base_model_seed).unet
    else:
        unet = build_tiny_components(base_model_seed)["unet"]
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 8))
    # A trained ControlNet's "zero convolutions" are no longer zero; fresh ones would change nothing.
    zero_convs = [
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
        controlnet.controlnet_cond_embedding.conv_out,
    ]
    with torch.no_grad():
        for conv in zero_convs:
            torch.nn.init.normal_(conv.weight, std=0.2)
    return controlnet.eval()


def write_tiny_controlnet(
    folder: Path, seed: int = 1, name: str | None = None, base_model_seed: int = 0, architecture: str = ""
) -> Path:
    """build_tiny_controlnet saved as a diffusers folder with a manifest (kind controlnet)."""
    controlnet = build_tiny_controlnet(seed, base_model_seed, architecture)
    controlnet.save_pretrained(str(folder), safe_serialization=True)
    write_manifest(
        folder,
        name=name or folder.name,
        kind="controlnet",
        base={"": "sd15", "sd1": "sd15"}.get(architecture, architecture),
        licence="CC0-1.0",
        conditioning="scribble",
    )
    return folder


def controlnet_to_original(controlnet: Any) -> dict[str, torch.Tensor]:
    """A ControlNetModel's weights under the original (lllyasviel / web UI) names: ``control_model.``
    + the UNet encoder's ``input_blocks`` / ``middle_block``, ``zero_convs``, ``middle_block_out``,
    ``input_hint_block``."""
    layers = int(controlnet.config.layers_per_block)
    n_blocks = len(controlnet.controlnet_cond_embedding.blocks)
    state: dict[str, torch.Tensor] = {}
    for key, value in controlnet.state_dict().items():
        parts = key.split(".")
        if parts[0] == "controlnet_down_blocks":
            new = ".".join(["zero_convs", parts[1], "0", *parts[2:]])
        elif parts[0] == "controlnet_mid_block":
            new = ".".join(["middle_block_out", "0", *parts[1:]])
        elif parts[0] == "controlnet_cond_embedding":
            index = {"conv_in": 0, "conv_out": 2 * (n_blocks + 1)}.get(parts[1])
            if index is None:  # blocks.i
                index, parts = 2 * (int(parts[2]) + 1), [*parts[:2], *parts[3:]]
            new = ".".join(["input_hint_block", str(index), *parts[2:]])
        else:
            new = _unet_key(key, layers, [])
        state["control_model." + new] = value.detach().clone().contiguous()
    return state


# -- single-file checkpoints -------------------------------------------------------------------
# The original (LDM / CompVis) key layout of SD 1.x checkpoints, written from diffusers names so a
# test can make a real single-file checkpoint and drive `from_single_file` on it. Written from the
# layouts' structure (block i, layer j -> index), for any number of levels and layers per block.

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def _unet_key(key: str, layers: int, up_has_attention: list[bool]) -> str:
    parts = key.split(".")
    simple = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    for diffusers_name, ldm_name in simple.items():
        if key.startswith(diffusers_name + "."):
            return ldm_name + key[len(diffusers_name) :]
    if parts[0] in ("down_blocks", "up_blocks"):
        i, kind = int(parts[1]), parts[2]
        rest = parts[4:]
        if kind == "resnets":
            j = int(parts[3])
            rest = [_RESNET.get(rest[0], rest[0]), *rest[1:]]
            index = 1 + i * (layers + 1) + j if parts[0] == "down_blocks" else i * (layers + 1) + j
            return ".".join(
                [("input_blocks" if parts[0] == "down_blocks" else "output_blocks"), str(index), "0", *rest]
            )
        if kind == "attentions":
            j = int(parts[3])
            index = 1 + i * (layers + 1) + j if parts[0] == "down_blocks" else i * (layers + 1) + j
            return ".".join(
                [("input_blocks" if parts[0] == "down_blocks" else "output_blocks"), str(index), "1", *rest]
            )
        if kind == "downsamplers":  # downsamplers.0.conv.* -> input_blocks.N.0.op.*
            return ".".join(["input_blocks", str((i + 1) * (layers + 1)), "0", "op", *parts[5:]])
        if kind == "upsamplers":  # upsamplers.0.conv.* -> output_blocks.N.(1|2).conv.*
            slot = "2" if up_has_attention[i] else "1"
            return ".".join(["output_blocks", str(i * (layers + 1) + layers), slot, *parts[4:]])
    if parts[0] == "add_embedding":  # SDXL's size/crop + pooled text embedding MLP
        return (
            {"linear_1": "label_emb.0.0", "linear_2": "label_emb.0.2"}[parts[1]] + "." + ".".join(parts[2:])
        )
    if parts[0] == "mid_block":
        if parts[1] == "resnets":
            return ".".join(
                ["middle_block", "0" if parts[2] == "0" else "2", _RESNET.get(parts[3], parts[3]), *parts[4:]]
            )
        if parts[1] == "attentions":
            return ".".join(["middle_block", "1", *parts[3:]])
    raise KeyError(f"no LDM name for UNet key {key}")


def _vae_key(key: str, levels: int) -> str:
    parts = key.split(".")
    side, rest = parts[0], parts[1:]
    resnet = {"conv_shortcut": "nin_shortcut"}
    if rest[0] == "conv_norm_out":
        return ".".join([side, "norm_out", *rest[1:]])
    if rest[0] in ("down_blocks", "up_blocks"):
        i = int(rest[1])
        level = i if rest[0] == "down_blocks" else levels - 1 - i
        group = "down" if rest[0] == "down_blocks" else "up"
        if rest[2] == "resnets":
            return ".".join(
                [side, group, str(level), "block", rest[3], resnet.get(rest[4], rest[4]), *rest[5:]]
            )
        sampler = "downsample" if rest[2] == "downsamplers" else "upsample"
        return ".".join([side, group, str(level), sampler, *rest[4:]])
    if rest[0] == "mid_block":
        if rest[1] == "resnets":
            return ".".join(
                [side, "mid", f"block_{int(rest[2]) + 1}", resnet.get(rest[3], rest[3]), *rest[4:]]
            )
        attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
        name = attn[rest[3]]
        tail = rest[5:] if rest[3] == "to_out" else rest[4:]
        return ".".join([side, "mid", "attn_1", name, *tail])
    return key  # conv_in, conv_out, norm layers keep their names


def _open_clip_state(text_encoder: Any) -> dict[str, torch.Tensor]:
    """A transformers CLIP text encoder's weights under OpenCLIP's names (SD 2.x, SDXL's second encoder)."""
    source = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}
    state: dict[str, torch.Tensor] = {
        "token_embedding.weight": source["embeddings.token_embedding.weight"],
        "positional_embedding": source["embeddings.position_embedding.weight"],
        "ln_final.weight": source["final_layer_norm.weight"],
        "ln_final.bias": source["final_layer_norm.bias"],
    }
    if "text_projection.weight" in source:  # a Linear (out x in); OpenCLIP keeps a matrix (in x out)
        state["text_projection"] = source["text_projection.weight"].T
    else:
        hidden = source["final_layer_norm.weight"].shape[0]
        state["text_projection"] = torch.eye(hidden)
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    layers = text_encoder.config.num_hidden_layers
    for i in range(layers):
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            state[dst + f"attn.in_proj_{kind}"] = torch.cat(
                [source[src + f"self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")]
            )
            state[dst + f"attn.out_proj.{kind}"] = source[src + f"self_attn.out_proj.{kind}"]
            for old, new in names.items():
                state[dst + f"{new}.{kind}"] = source[src + f"{old}.{kind}"]
    return state


def _clip_l_state(text_encoder: Any) -> dict[str, torch.Tensor]:
    # transformers 5 dropped the "text_model." level from CLIPTextModel's own names; originals have it.
    return {
        (k if k.startswith("text_model.") else "text_model." + k): v
        for k, v in text_encoder.state_dict().items()
    }


def to_original_checkpoint(pipe: Any, architecture: str = "sd1") -> dict[str, torch.Tensor]:
    """A diffusers pipeline's weights under the original single-file key names of ``architecture``.

    sd1: CompVis (``cond_stage_model.transformer``, CLIP-L); sd2: Stability's v2 layout
    (``cond_stage_model.model``, OpenCLIP); sdxl: SGM (``conditioner.embedders.0`` CLIP-L and
    ``.1`` OpenCLIP bigG). The UNet and VAE names are the same in all three.
    """
    state: dict[str, torch.Tensor] = {}
    unet = pipe.unet
    layers = int(unet.config.layers_per_block)
    up_attention = [hasattr(block, "attentions") and bool(block.attentions) for block in unet.up_blocks]
    for key, value in unet.state_dict().items():
        state["model.diffusion_model." + _unet_key(key, layers, up_attention)] = value
    levels = len(pipe.vae.config.block_out_channels)
    for key, value in pipe.vae.state_dict().items():
        new = _vae_key(key, levels)
        if ".mid.attn_1." in new and new.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # the original attention uses 1x1 convolutions
        state["first_stage_model." + new] = value
    if architecture == "sd1":
        text = {"cond_stage_model.transformer." + k: v for k, v in _clip_l_state(pipe.text_encoder).items()}
    elif architecture == "sd2":
        text = {"cond_stage_model.model." + k: v for k, v in _open_clip_state(pipe.text_encoder).items()}
    elif architecture == "sdxl":
        text = {
            "conditioner.embedders.0.transformer." + k: v for k, v in _clip_l_state(pipe.text_encoder).items()
        }
        text.update(
            {
                "conditioner.embedders.1.model." + k: v
                for k, v in _open_clip_state(pipe.text_encoder_2).items()
            }
        )
    elif architecture == "sdxl_refiner":  # OpenCLIP bigG alone, as the first (and only) embedder
        text = {
            "conditioner.embedders.0.model." + k: v for k, v in _open_clip_state(pipe.text_encoder_2).items()
        }
    else:
        raise ValueError(f"unknown architecture {architecture}")
    state.update(text)
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


# Tiny components that follow the conventions atelier.generation.checkpoints assumes for what weights
# cannot tell (32 GroupNorm groups, 8 heads for SD 1.x and channels/64 otherwise, CLIP heads hidden/64,
# quick_gelu for CLIP-L and gelu for OpenCLIP), so a drop-in checkpoint made from them must load back
# into exactly the same pipeline: same weights, same image.
DROP_IN_ARCHITECTURES = ("sd1", "sd2", "sdxl", "sdxl_refiner")


def _tiny_clip(hidden: int, layers: int, act: str, pad_open_clip: bool, projection: int = 0) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    vocab = tiny_vocab()
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection or hidden,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=0 if pad_open_clip else vocab["<|endoftext|>"],
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def build_tiny_drop_in_pipeline(architecture: str, seed: int = 0) -> Any:
    """A tiny pipeline of ``architecture`` (sd1, sd2, sdxl, sdxl_refiner) whose single file loads back exactly.

    The refiner, as SDXL's: only the second (OpenCLIP) text encoder, whose hidden states are the UNet's
    cross-attention input, and five Fourier-embedded ids (sizes, crop, aesthetic score) beside the pooled text.
    """
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTokenizer

    torch.manual_seed(seed)
    channels = (32, 64)
    betas = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=1024 if architecture.startswith("sdxl") else 512,
        scaling_factor=0.13025 if architecture.startswith("sdxl") else 0.18215,
        force_upcast=architecture.startswith("sdxl"),
    )
    vocab = tiny_vocab()
    if architecture == "sd1":
        text = _tiny_clip(32, 2, "quick_gelu", False)
        unet = UNet2DConditionModel(
            sample_size=64, block_out_channels=channels, layers_per_block=2, norm_num_groups=32,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, attention_head_dim=8,
        )  # fmt: skip
    elif architecture == "sd2":
        text = _tiny_clip(64, 2, "gelu", True)
        unet = UNet2DConditionModel(
            sample_size=96, block_out_channels=channels, layers_per_block=2, norm_num_groups=32,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=64, attention_head_dim=[max(1, c // 64) for c in channels], use_linear_projection=True,
        )  # fmt: skip
    elif architecture == "sdxl":
        text = _tiny_clip(32, 2, "quick_gelu", False)
        text_2 = _tiny_clip(64, 2, "gelu", True, projection=32)
        unet = UNet2DConditionModel(
            sample_size=128, block_out_channels=channels, layers_per_block=2, norm_num_groups=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32 + 64, attention_head_dim=[max(1, c // 64) for c in channels],
            use_linear_projection=True, transformer_layers_per_block=[1, 2],
            addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=32 + 6 * 8,
        )  # fmt: skip
        for module in (unet, vae, text, text_2):
            module.eval()
        pipe = StableDiffusionXLPipeline(
            vae=vae, text_encoder=text, text_encoder_2=text_2, unet=unet,
            tokenizer=CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77),
            tokenizer_2=CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77, pad_token="!"),
            scheduler=EulerDiscreteScheduler(**betas, timestep_spacing="leading"),
        )  # fmt: skip
        pipe.set_progress_bar_config(disable=True)
        return pipe
    elif architecture == "sdxl_refiner":
        text_2 = _tiny_clip(64, 2, "gelu", True, projection=32)
        unet = UNet2DConditionModel(
            sample_size=128, block_out_channels=channels, layers_per_block=2, norm_num_groups=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=64, attention_head_dim=[max(1, c // 64) for c in channels],
            use_linear_projection=True, transformer_layers_per_block=[1, 2],
            addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=32 + 5 * 8,
        )  # fmt: skip
        for module in (unet, vae, text_2):
            module.eval()
        refiner = StableDiffusionXLImg2ImgPipeline(
            vae=vae, text_encoder=None, text_encoder_2=text_2, unet=unet, tokenizer=None,
            tokenizer_2=CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77, pad_token="!"),
            scheduler=EulerDiscreteScheduler(**betas, timestep_spacing="leading"), requires_aesthetics_score=True,
        )  # fmt: skip
        refiner.set_progress_bar_config(disable=True)
        return refiner
    else:
        raise ValueError(f"unknown architecture {architecture}")
    for module in (unet, vae, text):
        module.eval()
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, unet=unet,
        tokenizer=CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77, pad_token="!" if architecture == "sd2" else "<|endoftext|>"),
        scheduler=PNDMScheduler(**betas, skip_prk_steps=True, set_alpha_to_one=False,
                                prediction_type="v_prediction" if architecture == "sd2" else "epsilon"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_tiny_drop_in(path: Path, architecture: str, seed: int = 0) -> Path:
    """A lone tiny checkpoint (``.safetensors``, or ``.ckpt`` as a pickled {"state_dict": ...}), nothing beside it."""
    state = to_original_checkpoint(build_tiny_drop_in_pipeline(architecture, seed), architecture)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    elif path.suffix == ".ckpt":
        torch.save({"state_dict": state, "global_step": 0}, str(path))
    else:
        raise ValueError(f"{path}: .safetensors or .ckpt")
    return path


def write_tiny_single_file(models_dir: Path, name: str, seed: int = 0) -> Path:
    """``<name>.safetensors`` (original key layout) + ``<name>.json`` manifest + ``<name>-config/``.

    The config folder is the diffusers folder of the same pipeline without weights: what
    ``from_single_file(config=...)`` needs to build the components offline.
    """
    from safetensors.torch import save_file

    pipe = build_tiny_pipeline(seed)
    models_dir.mkdir(parents=True, exist_ok=True)
    config_dir = models_dir / f"{name}-config"
    pipe.save_pretrained(str(config_dir), safe_serialization=True)
    for weights in config_dir.rglob("*.safetensors"):
        weights.unlink()  # configs and tokenizer only: the weights come from the single file
    checkpoint = models_dir / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in to_original_checkpoint(pipe).items()}, str(checkpoint))
    (models_dir / f"{name}.json").write_text(
        json.dumps(
            {
                "name": name,
                "kind": "single_file",
                "base": "sd15",
                "config": f"{name}-config",
                "licence": "CC0-1.0 (random weights, made by atelier.generation.testing)",
                "defaults": {"steps": 4, "width_px": 64, "height_px": 64},
            },
            indent=2,
        )
    )
    return checkpoint


def write_tiny_lora(folder: Path, seed: int = 2, name: str | None = None, base_model_seed: int = 0) -> Path:
    """A random LoRA adapter for the tiny UNet's attention (needs peft), saved as diffusers writes them."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = build_tiny_components(base_model_seed)["unet"]
    torch.manual_seed(seed)
    # init_lora_weights=False: random A and B, so the adapter visibly changes the output.
    unet.add_adapter(
        LoraConfig(
            r=4, lora_alpha=4, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"]
        )
    )
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        str(folder), unet_lora_layers=get_peft_model_state_dict(unet), safe_serialization=True
    )
    write_manifest(
        folder,
        name=name or folder.name,
        kind="lora",
        base="sd15",
        licence="CC0-1.0",
        file="pytorch_lora_weights.safetensors",
    )
    return folder


def main(argv: list[str] | None = None) -> int:
    """``python -m atelier.generation.testing [MODELS_DIR]``: install the tiny demo models for `make run`."""
    import argparse

    from atelier.generation.paths import models_dir

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "models_dir",
        nargs="?",
        type=Path,
        help="default: the server's (ATELIER_GENERATION_MODELS_DIR, else <ATELIER_DATA_DIR>/models/generation)",
    )
    args = parser.parse_args(argv)
    root: Path = args.models_dir or models_dir()
    write_tiny_model(root / "tiny-demo", seed=0)
    write_tiny_controlnet(root / "tiny-demo-scribble", seed=1)
    try:
        write_tiny_lora(root / "tiny-demo-style", seed=2)
    except ImportError:
        print("peft is not installed: no demo LoRA")
    print(f"tiny random-weight demo models written to {root} (they make noise-like images, quickly)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
