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
import re
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


# -- single-file ControlNets -------------------------------------------------------------------------
LDM_CONTROLNET = "control_model."
CONTROLNET_SUFFIXES = (".safetensors", ".pth", ".ckpt")
# What the weights cannot tell, as in every public SDXL ControlNet: the width of each Fourier-embedded
# size/crop id (SDXL's UNet config; the add-embedding's input is the pooled text width + 6 x this).
SDXL_ADDITION_TIME_EMBED_DIM = 256


def _count(shapes: dict[str, tuple[int, ...]], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in shapes if (m := rx.match(k))})


def controlnet_config(shapes: dict[str, tuple[int, ...]], label: str = "ControlNet") -> dict[str, Any]:
    """A ControlNetModel config from a single file's shapes, in the original (``control_model.*``,
    ``input_blocks`` / ``input_hint_block``) or the diffusers key layout.

    Assumed as in the released models (the weights cannot tell): 32 GroupNorm groups (fewer when the
    channels are not multiples of 32), 8 attention heads for an SD 1.x-style ControlNet (convolutional
    projections) and channels / 64 otherwise, and SDXL's 256-wide size/crop embedding.
    """
    from atelier.generation.checkpoints import _groups

    s = {k.removeprefix(LDM_CONTROLNET): v for k, v in shapes.items()}
    if "input_blocks.0.0.weight" in s and "input_hint_block.0.weight" in s:
        blocks_in = _count(s, r"input_blocks\.(\d+)\.")
        levels = 1 + _count(s, r"input_blocks\.(\d+)\.0\.op\.weight")
        layers = (blocks_in - levels) // levels
        if layers < 1 or 1 + levels * layers + (levels - 1) != blocks_in:
            raise CheckpointError(f"{label}: ControlNet layout not understood ({blocks_in} input blocks)")
        firsts = [f"input_blocks.{1 + i * (layers + 1)}" for i in range(levels)]
        channels = [s[f"{f}.0.out_layers.3.weight"][0] for f in firsts]
        depth = [_count(s, re.escape(f"{f}.1.transformer_blocks.") + r"(\d+)\.") for f in firsts]
        mid_depth = _count(s, r"middle_block\.1\.transformer_blocks\.(\d+)\.")
        hint = sorted(int(m.group(1)) for k in s if (m := re.match(r"input_hint_block\.(\d+)\.weight$", k)))
        conditioning = [s[f"input_hint_block.{hint[0]}.weight"]]
        conditioning += [s[f"input_hint_block.{i}.weight"] for i in hint[1:-1][1::2]]
        in_channels, add = s["input_blocks.0.0.weight"][1], s.get("label_emb.0.0.weight")
    elif "conv_in.weight" in s and "controlnet_cond_embedding.conv_in.weight" in s:
        levels = _count(s, r"down_blocks\.(\d+)\.")
        layers = _count(s, r"down_blocks\.0\.resnets\.(\d+)\.")
        channels = [s[f"down_blocks.{i}.resnets.0.conv1.weight"][0] for i in range(levels)]
        depth = [
            _count(s, re.escape(f"down_blocks.{i}.attentions.0.transformer_blocks.") + r"(\d+)\.")
            for i in range(levels)
        ]
        mid_depth = _count(s, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.")
        n_blocks = _count(s, r"controlnet_cond_embedding\.blocks\.(\d+)\.")
        conditioning = [s["controlnet_cond_embedding.conv_in.weight"]]
        conditioning += [s[f"controlnet_cond_embedding.blocks.{i}.weight"] for i in range(1, n_blocks, 2)]
        in_channels, add = s["conv_in.weight"][1], s.get("add_embedding.linear_1.weight")
    else:
        raise CheckpointError(
            f"{label}: not a ControlNet (no control_model.input_blocks / input_hint_block, nor diffusers' "
            "conv_in / controlnet_cond_embedding)"
        )
    attn = sorted(k for k in s if k.endswith("attn2.to_k.weight"))
    proj_in = sorted(k for k in s if k.endswith("proj_in.weight"))
    if not attn or not proj_in:
        raise CheckpointError(f"{label}: the ControlNet has no cross-attention")
    linear = len(s[proj_in[0]]) == 2
    config: dict[str, Any] = {
        "_class_name": "ControlNetModel",
        "in_channels": in_channels,
        "conditioning_channels": conditioning[0][1],
        "conditioning_embedding_out_channels": [shape[0] for shape in conditioning],
        "block_out_channels": channels,
        "layers_per_block": layers,
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depth],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid_depth else "UNetMidBlock2D",
        "cross_attention_dim": s[attn[0]][1],
        "attention_head_dim": [max(1, c // 64) for c in channels] if linear or add else 8,
        "use_linear_projection": linear,
        "transformer_layers_per_block": [max(d, 1) for d in depth]
        if any(d > 1 for d in depth) or mid_depth > 1
        else 1,
        "norm_num_groups": _groups(channels),
    }
    if add is not None:
        config.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=SDXL_ADDITION_TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=add[1],
        )
    return config


def controlnet_config_folder(path: Path, cache_dir: Path, overrides: dict[str, Any] | None = None) -> Path:
    """The derived config folder of a single-file ControlNet, cached like the checkpoints' configs."""
    import hashlib

    import diffusers

    config = {**controlnet_config(read_shapes(path), path.name), **(overrides or {})}
    stat = path.stat()
    raw = f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}|{json.dumps(config, sort_keys=True)}"
    folder = cache_dir / f"{path.stem}-{hashlib.sha256(raw.encode()).hexdigest()[:16]}"
    if not (folder / "config.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "config.json.tmp"
        tmp.write_text(json.dumps({**config, "_diffusers_version": diffusers.__version__}, indent=2))
        tmp.rename(folder / "config.json")
    return folder


def controlnet_file_base(path: Path) -> str:
    """sd15 / sd2 / sdxl / unknown from a single-file ControlNet's shapes."""
    try:
        config = controlnet_config(read_shapes(path), path.name)
    except CheckpointError:
        return UNKNOWN
    width = config["cross_attention_dim"]
    if config.get("addition_embed_type") == "text_time":
        return "sdxl" if width == 2048 else UNKNOWN
    return CROSS_ATTENTION_BASES.get(width, UNKNOWN)
