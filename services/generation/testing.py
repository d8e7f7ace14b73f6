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
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
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
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )
    for module in (unet, vae, text_encoder):
        module.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "scheduler": scheduler}


def build_tiny_pipeline(seed: int = 0) -> Any:
    """A tiny StableDiffusionPipeline in memory."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        **build_tiny_components(seed), tokenizer=build_tiny_tokenizer(), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )


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


def write_tiny_controlnet(folder: Path, seed: int = 1, name: str | None = None, base_model_seed: int = 0) -> Path:
    """A tiny ControlNetModel matching the tiny UNet, saved with a manifest (kind controlnet)."""
    from diffusers import ControlNetModel

    unet = build_tiny_components(base_model_seed)["unet"]
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 8))
    controlnet.save_pretrained(str(folder), safe_serialization=True)
    write_manifest(folder, name=name or folder.name, kind="controlnet", base="sd15", licence="CC0-1.0",
                   conditioning="scribble")
    return folder
