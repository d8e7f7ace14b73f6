"""LoRAs, textual-inversion embeddings and ControlNets: their base architecture read off their tensor shapes.

What fits which checkpoint is the width of the text features the base model conditions on:

=========  ==============================  =====================================
base       text encoder width(s)           UNet cross-attention width
=========  ==============================  =====================================
sd15       768 (CLIP ViT-L)                768
sd2        1024 (OpenCLIP ViT-H)           1024
sdxl       768 + 1280 (CLIP-L + bigG)      2048
sdxl-ref.  1280 (bigG alone)               1280
=========  ==============================  =====================================

Other widths (a test model, an unusual fine-tune) give ``unknown``: listed, not refused, and a real
misfit is caught when the adapter is applied. Nothing here runs pickled code: ``.pt`` / ``.bin``
embeddings are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from atelier.generation.checkpoints import CheckpointError, read_shapes

UNKNOWN = "unknown"
CROSS_ATTENTION_BASES = {768: "sd15", 1024: "sd2", 2048: "sdxl", 1280: "sdxl-refiner"}
TEXT_WIDTH_BASES = {768: "sd15", 1024: "sd2"}
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
LORA_SUFFIXES = (".safetensors",)


def lora_base(path: Path) -> str:
    """sd15 / sd2 / sdxl / unknown from a LoRA's tensor shapes (kohya/web-UI or diffusers/PEFT key names)."""
    try:
        shapes = read_shapes(path)
    except CheckpointError:
        return UNKNOWN
    if any("lora_te2_" in k or "text_encoder_2." in k for k in shapes):
        return "sdxl"  # only SDXL has a second text encoder
    for key, shape in shapes.items():
        # The down (A) matrix of a cross-attention key projection: rank x the text feature width.
        down = "lora_down" in key or "lora_A" in key or "lora.down" in key
        if down and "attn2" in key and "to_k" in key and len(shape) >= 2:
            return CROSS_ATTENTION_BASES.get(shape[1], UNKNOWN)
    for key, shape in shapes.items():  # a text-encoder-only LoRA
        down = "lora_down" in key or "lora_A" in key or "lora.down" in key
        if down and ("lora_te" in key or "text_encoder" in key) and "q_proj" in key and len(shape) >= 2:
            return TEXT_WIDTH_BASES.get(shape[1], UNKNOWN)
    return UNKNOWN


def controlnet_base(folder: Path) -> str:
    """sd15 / sd2 / sdxl / unknown from a diffusers ControlNetModel folder's config."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return UNKNOWN
    width = config.get("cross_attention_dim")
    if config.get("addition_embed_type") == "text_time":
        return "sdxl" if width == 2048 else UNKNOWN
    return CROSS_ATTENTION_BASES.get(width, UNKNOWN) if isinstance(width, int) else UNKNOWN


class EmbeddingError(ValueError):
    """The file is not a textual-inversion embedding this service reads; the message is for people."""


def read_embedding(path: Path) -> dict[str, Any]:
    """The vectors of an embedding file per text encoder: {"text_encoder": n x width[, "text_encoder_2": ...]}.

    Layouts: the web UI's ``.pt`` (``string_to_param["*"]``) and ``.safetensors`` (``emb_params``), SDXL
    embeddings (``clip_l`` for the first encoder, ``clip_g`` for the second), and diffusers'
    ``learned_embeds`` (one token -> one vector).
    """
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path), device="cpu")
        elif path.suffix in (".pt", ".bin"):
            data = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            raise EmbeddingError(f"{path.name}: not a .safetensors, .pt or .bin file")
    except EmbeddingError:
        raise
    except Exception as exc:  # a corrupt file or pickled code: refused, never run
        raise EmbeddingError(
            f"{path.name}: not readable as an embedding (safetensors, or torch.load(weights_only=True)): "
            f"{' '.join(str(exc).split())[:200]}"
        ) from exc
    if not isinstance(data, dict):
        raise EmbeddingError(f"{path.name}: holds no dictionary of tensors")

    def matrix(value: Any, key: str) -> Any:
        if not isinstance(value, torch.Tensor) or value.ndim not in (1, 2) or value.numel() == 0:
            raise EmbeddingError(f"{path.name}: {key} is not a vector or a matrix of vectors")
        return value.detach().float().reshape(-1, value.shape[-1]).clone()

    if "clip_l" in data or "clip_g" in data:
        if "clip_l" not in data or "clip_g" not in data:
            raise EmbeddingError(f"{path.name}: an SDXL embedding needs both clip_l and clip_g")
        return {
            "text_encoder": matrix(data["clip_l"], "clip_l"),
            "text_encoder_2": matrix(data["clip_g"], "clip_g"),
        }
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            raise EmbeddingError(f"{path.name}: string_to_param must hold one entry")
        return {"text_encoder": matrix(next(iter(params.values())), "string_to_param")}
    if "emb_params" in data:
        return {"text_encoder": matrix(data["emb_params"], "emb_params")}
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) == 1:  # diffusers' learned_embeds: {"<token>": vector}
        key, value = next(iter(tensors.items()))
        return {"text_encoder": matrix(value, key)}
    raise EmbeddingError(
        f"{path.name}: no embedding in it (string_to_param, emb_params, clip_l + clip_g, or one tensor)"
    )


def embedding_base(vectors: dict[str, Any]) -> str:
    widths = tuple(int(v.shape[-1]) for v in vectors.values())
    if widths == (768, 1280):
        return "sdxl"
    if len(widths) == 1:
        return TEXT_WIDTH_BASES.get(widths[0], UNKNOWN)
    return UNKNOWN


def describe_vectors(vectors: dict[str, Any]) -> str:
    """e.g. '2 vectors of 768' or '1 vector of 32 + 64'."""
    count = int(next(iter(vectors.values())).shape[0])
    widths = " + ".join(str(int(v.shape[-1])) for v in vectors.values())
    return f"{count} vector{'s' if count != 1 else ''} of {widths}"
