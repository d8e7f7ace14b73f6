"""Drop-in single-file checkpoints: the architecture and every component's config read off the weights.

A ``.safetensors`` or ``.ckpt`` from a model site or a web UI's ``models/Stable-diffusion`` folder
holds the original (LDM / CompVis / SGM) state dict and nothing else: no component configs, no
tokenizer. ``from_single_file`` would fetch those from the Hub. Here they are derived offline:

1. ``inspect_checkpoint`` reads the key names and tensor shapes (the safetensors header only; a
   ``.ckpt`` through ``torch.load(weights_only=True, mmap=True)``, so no pickled code runs and
   nothing is read into memory) and tells the family from which text encoders are present:
   ``cond_stage_model.transformer`` (CLIP ViT-L: SD 1.x), ``cond_stage_model.model`` (OpenCLIP:
   SD 2.x), ``conditioner.embedders.0/1`` (CLIP-L + OpenCLIP bigG: SDXL base; OpenCLIP alone:
   SDXL refiner); a UNet with 9 input channels is an inpainting variant.
2. ``infer_configs`` derives the UNet (levels, channels, layers per block, transformer depth per
   level, cross-attention width, linear or convolutional projections, SDXL's size/crop embedding),
   the VAE and each CLIP text encoder from the shapes, so a tiny test checkpoint and a full-size one
   go through the same code.
3. ``write_config_folder`` writes them as a diffusers folder (model_index.json, */config.json, the
   scheduler, CLIP tokenizers) that ``from_single_file(config=..., local_files_only=True)`` reads.

What the weights cannot tell, and what is assumed (each the value of every public release):
GroupNorm groups 32 (fewer only when channels are not multiples of 32); attention heads: 8 per
level for SD 1.x, channels / 64 for SD 2.x and SDXL; CLIP heads hidden / 64; activation quick_gelu
for CLIP ViT-L, gelu for OpenCLIP; VAE scaling 0.18215 (SD 1.x/2.x) or 0.13025 (SDXL). SD 2.x's
prediction type (epsilon for the 512 "base" models, v-prediction for the 768 ones) is not in the
weights at all: ``prediction_type`` in the sidecar manifest says, default ``v_prediction`` for SD
2.x (the 768 models 2.0-v / 2.1 are the ones people fine-tune) and ``epsilon`` otherwise.

The tokenizers are CLIP's byte-level BPE, built from ``bpe_simple_vocab_16e6.txt.gz`` (installed by
``atelier.generation.setup_assets``). A text encoder with a smaller embedding than CLIP's 49,408
tokens (a test model) gets the first tokens of the same vocabulary: the 512 byte tokens, then
merges in their order, then the two specials at the end as in CLIP.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
CONFIG_CACHE = ".atelier-configs"  # inside the models directory; configs derived from checkpoints
CLIP_VOCAB_SIZE = 49408
# Bumped when the derivation changes, so cached config folders are rebuilt.
DERIVATION_VERSION = 1

UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD1_TEXT = "cond_stage_model.transformer."
SD2_TEXT = "cond_stage_model.model."
XL_TEXT_1 = "conditioner.embedders.0.transformer."
XL_TEXT_2 = "conditioner.embedders.1.model."
XL_REFINER_TEXT = "conditioner.embedders.0.model."

ARCHITECTURES = ("sd1", "sd2", "sdxl", "sdxl_refiner")


class CheckpointError(ValueError):
    """The file is not a checkpoint this service can load; the message is for people."""


@dataclass
class CheckpointInfo:
    """What a single-file checkpoint is, from its keys and shapes."""

    architecture: str  # one of ARCHITECTURES
    inpainting: bool
    shapes: dict[str, tuple[int, ...]] = field(repr=False)

    @property
    def base(self) -> str:
        """The name ListModels shows: sd15, sd2, sdxl, sdxl-refiner, with -inpainting."""
        name = {"sd1": "sd15", "sd2": "sd2", "sdxl": "sdxl", "sdxl_refiner": "sdxl-refiner"}[
            self.architecture
        ]
        return name + ("-inpainting" if self.inpainting else "")


# -- reading ---------------------------------------------------------------------------------------
def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor, without reading the weights (nor running pickled code)."""
    if path.suffix == ".safetensors":
        try:
            with path.open("rb") as fh:
                size = int.from_bytes(fh.read(8), "little")
                if size <= 0 or size > 100_000_000:
                    raise CheckpointError(f"{path.name}: not a safetensors file (header size {size})")
                header = json.loads(fh.read(size))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path.name}: unreadable safetensors header: {exc}") from exc
        return {
            k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
        }
    if path.suffix in (".ckpt", ".pth"):  # .pth: the web UIs' ControlNets
        import pickle

        import torch

        try:
            # weights_only: only tensors and plain containers unpickle; mmap: no weights read into memory.
            try:
                data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                # The pre-1.6 (non-zip) format cannot be memory-mapped: read it, still weights only.
                data = torch.load(str(path), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
            raise CheckpointError(
                f"{path.name}: not loadable with torch.load(weights_only=True) (only plain tensor checkpoints "
                f"are accepted, no pickled code): {exc}"
            ) from exc
        while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
            data = data["state_dict"]
        if not isinstance(data, dict):
            raise CheckpointError(f"{path.name}: holds no state dict")
        return {k: tuple(v.shape) for k, v in data.items() if isinstance(v, torch.Tensor)}
    raise CheckpointError(f"{path.name}: not a .safetensors or .ckpt file")


_INSPECTED: dict[tuple[str, int, int], CheckpointInfo] = {}


def inspect_checkpoint(path: Path) -> CheckpointInfo:
    """classify(read_shapes(path)), remembered per (path, size, mtime): every ListModels rescans the folder,
    and an old-format .ckpt cannot be memory-mapped (it is read whole)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _INSPECTED:
        _INSPECTED[key] = classify(read_shapes(path), path.name)
    return _INSPECTED[key]


def classify(shapes: dict[str, tuple[int, ...]], label: str = "checkpoint") -> CheckpointInfo:
    conv_in = shapes.get(UNET + "input_blocks.0.0.weight")
    if conv_in is None:
        raise CheckpointError(
            f"{label}: no Stable Diffusion UNet (model.diffusion_model.*) in it: a LoRA, VAE or embedding "
            "goes in its own folder with a manifest"
        )
    has = lambda prefix: any(k.startswith(prefix) for k in shapes)  # noqa: E731
    if has(XL_TEXT_1) and has(XL_TEXT_2):
        arch = "sdxl"
    elif has(XL_REFINER_TEXT):
        arch = "sdxl_refiner"
    elif has(SD2_TEXT):
        arch = "sd2"
    elif has(SD1_TEXT):
        arch = "sd1"
    else:
        raise CheckpointError(f"{label}: no text encoder of SD 1.x, SD 2.x or SDXL in it")
    if not has(VAE):
        raise CheckpointError(f"{label}: no VAE (first_stage_model.*) in it")
    return CheckpointInfo(architecture=arch, inpainting=conv_in[1] == 9, shapes=shapes)


# -- configs ---------------------------------------------------------------------------------------
def _groups(channels: list[int]) -> int:
    for groups in (32, 16, 8, 4, 2, 1):
        if all(c % groups == 0 for c in channels):
            return groups
    return 1


def _count(shapes: dict[str, tuple[int, ...]], pattern: str) -> int:
    """How many distinct integers fill the ``(\\d+)`` of ``pattern`` among the keys."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in shapes if (m := rx.match(k))})


def unet_config(info: CheckpointInfo, text_proj_dim: int = 0) -> dict[str, Any]:
    s = info.shapes
    u = UNET
    blocks_in = _count(s, re.escape(u) + r"input_blocks\.(\d+)\.")
    levels = 1 + _count(s, re.escape(u) + r"input_blocks\.(\d+)\.0\.op\.weight")
    layers = (blocks_in - 1 - (levels - 1)) // levels
    if layers < 1 or 1 + levels * layers + (levels - 1) != blocks_in:
        raise CheckpointError(f"UNet layout not understood ({blocks_in} input blocks, {levels} levels)")
    channels, down_types, depth = [], [], []
    for i in range(levels):
        first = f"{u}input_blocks.{1 + i * (layers + 1)}"
        channels.append(s[f"{first}.0.out_layers.3.weight"][0])
        n = _count(s, re.escape(f"{first}.1.transformer_blocks.") + r"(\d+)\.")
        down_types.append("CrossAttnDownBlock2D" if n else "DownBlock2D")
        depth.append(max(n, 1))
    up_types = []
    for i in range(levels):
        first = f"{u}output_blocks.{i * (layers + 1)}"
        up_types.append("CrossAttnUpBlock2D" if f"{first}.1.proj_in.weight" in s else "UpBlock2D")
    attn_keys = sorted(k for k in s if k.endswith("attn2.to_k.weight"))
    if not attn_keys:
        raise CheckpointError("UNet has no cross-attention")
    cross_dim = s[attn_keys[0]][1]
    proj_in = next(k for k in s if k.endswith(".1.proj_in.weight"))
    linear = len(s[proj_in]) == 2
    mid_depth = _count(s, re.escape(u) + r"middle_block\.1\.transformer_blocks\.(\d+)\.")
    if info.architecture == "sd1":
        heads: int | list[int] = 8
    else:
        heads = [max(1, c // 64) for c in channels]
    config: dict[str, Any] = {
        "_class_name": "UNet2DConditionModel",
        "sample_size": {"sd1": 64, "sd2": 96, "sdxl": 128, "sdxl_refiner": 128}[info.architecture],
        "in_channels": s[u + "input_blocks.0.0.weight"][1],
        "out_channels": s[u + "out.2.weight"][0],
        "block_out_channels": channels,
        "layers_per_block": layers,
        "down_block_types": down_types,
        "up_block_types": up_types,
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid_depth else None,
        "cross_attention_dim": cross_dim,
        "attention_head_dim": heads,
        "use_linear_projection": linear,
        "transformer_layers_per_block": depth if any(d > 1 for d in depth) or mid_depth > 1 else 1,
        "norm_num_groups": _groups(channels),
    }
    if info.architecture == "sd2" and config["sample_size"] == 96 and not linear:
        config["sample_size"] = 64
    label = s.get(u + "label_emb.0.0.weight")
    if label is not None:  # SDXL: pooled text embedding + sizes/crop (+ aesthetic score) as Fourier features
        n_ids = 5 if info.architecture == "sdxl_refiner" else 6
        extra = label[1] - text_proj_dim
        if text_proj_dim <= 0 or extra <= 0 or extra % n_ids:
            raise CheckpointError(
                f"SDXL addition embedding of width {label[1]} does not fit the text encoder"
            )
        config.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=extra // n_ids,
            projection_class_embeddings_input_dim=label[1],
        )
    return config


def vae_config(info: CheckpointInfo) -> dict[str, Any]:
    s = info.shapes
    e = VAE + "encoder."
    levels = _count(s, re.escape(e) + r"down\.(\d+)\.")
    channels = [s[f"{e}down.{i}.block.0.conv1.weight"][0] for i in range(levels)]
    layers = _count(s, re.escape(e) + r"down\.0\.block\.(\d+)\.")
    latent = s[VAE + "quant_conv.weight"][0] // 2
    xl = info.architecture.startswith("sdxl")
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": s[e + "conv_in.weight"][1],
        "out_channels": s[VAE + "decoder.conv_out.weight"][0],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": channels,
        "layers_per_block": layers,
        "latent_channels": latent,
        "norm_num_groups": _groups(channels),
        "sample_size": 1024 if xl else 512,
        "scaling_factor": 0.13025 if xl else 0.18215,
        "force_upcast": xl,
    }


def _clip_text_config(prefix: str, s: dict[str, tuple[int, ...]], open_clip: bool) -> dict[str, Any]:
    """A CLIPTextConfig's fields from either layout (transformers' names, or OpenCLIP's)."""
    if open_clip:
        vocab, hidden = s[prefix + "token_embedding.weight"]
        positions = s[prefix + "positional_embedding"][0]
        layers = _count(s, re.escape(prefix + "transformer.resblocks.") + r"(\d+)\.")
        intermediate = s[prefix + "transformer.resblocks.0.mlp.c_fc.weight"][0]
        proj = s.get(prefix + "text_projection")
        projection = proj[1] if proj else hidden
        act = "gelu"
    else:
        t = prefix + "text_model."
        vocab, hidden = s[t + "embeddings.token_embedding.weight"]
        positions = s[t + "embeddings.position_embedding.weight"][0]
        layers = _count(s, re.escape(t + "encoder.layers.") + r"(\d+)\.")
        intermediate = s[t + "encoder.layers.0.mlp.fc1.weight"][0]
        projection = hidden
        act = "quick_gelu"
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "projection_dim": projection,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, hidden // 64),
        "max_position_embeddings": positions,
        "hidden_act": act,
        "bos_token_id": vocab - 2,
        "eos_token_id": vocab - 1,
        # CLIP-L pads with the end token; OpenCLIP's tokenizers pad with "!" (id 0), as the released folders do.
        "pad_token_id": 0 if open_clip else vocab - 1,
    }


def text_configs(info: CheckpointInfo) -> dict[str, dict[str, Any]]:
    """Component name -> (class, CLIPTextConfig fields)."""
    s = info.shapes
    if info.architecture == "sd1":
        return {"text_encoder": {"_class": "CLIPTextModel", **_clip_text_config(SD1_TEXT, s, False)}}
    if info.architecture == "sd2":
        config = _clip_text_config(SD2_TEXT, s, True)
        # SD 2.x conditions on OpenCLIP ViT-H's penultimate layer: diffusers ignores the 24th block's keys
        # (resblocks.23), so the encoder has 23 layers; a smaller (test) encoder keeps all of its blocks.
        config["num_hidden_layers"] = min(config["num_hidden_layers"], 23)
        return {"text_encoder": {"_class": "CLIPTextModel", **config}}
    if info.architecture == "sdxl":
        return {
            "text_encoder": {"_class": "CLIPTextModel", **_clip_text_config(XL_TEXT_1, s, False)},
            "text_encoder_2": {
                "_class": "CLIPTextModelWithProjection",
                **_clip_text_config(XL_TEXT_2, s, True),
            },
        }
    return {
        "text_encoder_2": {
            "_class": "CLIPTextModelWithProjection",
            **_clip_text_config(XL_REFINER_TEXT, s, True),
        }
    }


def scheduler_config(info: CheckpointInfo, prediction_type: str) -> dict[str, Any]:
    common = {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "steps_offset": 1,
        "prediction_type": prediction_type,
    }
    if info.architecture.startswith("sdxl"):
        return {"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "leading", **common}
    return {
        "_class_name": "PNDMScheduler",
        "skip_prk_steps": True,
        "set_alpha_to_one": False,
        "clip_sample": False,
        **common,
    }


def default_prediction_type(info: CheckpointInfo) -> str:
    return "v_prediction" if info.architecture == "sd2" and not info.inpainting else "epsilon"


PREDICTION_TYPES = ("epsilon", "v_prediction")


def pipeline_class(info: CheckpointInfo) -> str:
    if info.architecture == "sdxl":
        return "StableDiffusionXLInpaintPipeline" if info.inpainting else "StableDiffusionXLPipeline"
    if info.architecture == "sdxl_refiner":
        return "StableDiffusionXLImg2ImgPipeline"
    return "StableDiffusionInpaintPipeline" if info.inpainting else "StableDiffusionPipeline"


# -- tokenizers ------------------------------------------------------------------------------------
def clip_bpe_path() -> Path:
    """Where setup installed CLIP's BPE merges (``ATELIER_GENERATION_CLIP_BPE`` overrides)."""
    configured = os.environ.get("ATELIER_GENERATION_CLIP_BPE", "")
    if configured:
        return Path(configured)
    return Path(sys.prefix) / "share" / "atelier" / "tokenizers" / "clip" / "bpe_simple_vocab_16e6.txt.gz"


def bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's printable stand-ins for the 256 byte values, in CLIP's vocabulary order."""
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


def clip_vocab(vocab_size: int, bpe_path: Path | None = None) -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary and merges, cut to ``vocab_size`` tokens (49,408 = all of CLIP's)."""
    chars = bytes_to_unicode()
    base = [*chars, *(c + "</w>" for c in chars)]
    n_merges = vocab_size - len(base) - 2
    if n_merges < 0:
        raise CheckpointError(f"a text encoder with {vocab_size} tokens is smaller than CLIP's byte alphabet")
    merges: list[str] = []
    if n_merges:
        path = bpe_path or clip_bpe_path()
        if not path.is_file():
            raise CheckpointError(
                f"CLIP's BPE vocabulary is not installed ({path}): run `python -m atelier.generation.setup_assets` "
                "(make venv does) or set ATELIER_GENERATION_CLIP_BPE"
            )
        lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
        merges = lines[1 : 1 + n_merges]  # the first line is a version header
        if len(merges) < n_merges:
            raise CheckpointError(f"{path} has {len(merges)} merges; the text encoder needs {n_merges}")
    tokens = base + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer(folder: Path, vocab_size: int, max_length: int, open_clip: bool) -> None:
    vocab, merges = clip_vocab(vocab_size)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + ("\n" if merges else ""))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": max_length,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "!" if open_clip else "<|endoftext|>",
                "do_lower_case": True,
            }
        )
    )


# -- the folder ------------------------------------------------------------------------------------
def derivation_key(path: Path, prediction_type: str) -> str:
    """Changes when the file (size, mtime), the override or the derivation does."""
    stat = path.stat()
    raw = f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}|{prediction_type}|{DERIVATION_VERSION}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def write_config_folder(info: CheckpointInfo, folder: Path, prediction_type: str = "") -> Path:
    """A diffusers folder without weights for ``from_single_file(config=folder)``; returns it."""
    import diffusers
    from transformers import CLIPTextConfig

    prediction_type = prediction_type or default_prediction_type(info)
    if prediction_type not in PREDICTION_TYPES:
        raise CheckpointError(
            f"prediction_type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}"
        )
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    version = diffusers.__version__

    def dump(sub: str, data: dict[str, Any]) -> None:
        (tmp / sub).mkdir(parents=True, exist_ok=True)
        (tmp / sub / ("scheduler_config.json" if sub == "scheduler" else "config.json")).write_text(
            json.dumps({**data, "_diffusers_version": version}, indent=2)
        )

    texts = text_configs(info)
    projection = texts["text_encoder_2"]["projection_dim"] if "text_encoder_2" in texts else 0
    dump("unet", unet_config(info, projection))
    dump("vae", vae_config(info))
    dump("scheduler", scheduler_config(info, prediction_type))
    index: dict[str, Any] = {
        "_class_name": pipeline_class(info),
        "_diffusers_version": version,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", str(scheduler_config(info, prediction_type)["_class_name"])],
    }
    for name, fields in texts.items():
        fields = dict(fields)
        cls = fields.pop("_class")
        CLIPTextConfig(**fields, architectures=[cls]).save_pretrained(str(tmp / name))
        tokenizer = "tokenizer" + name[len("text_encoder") :]
        write_tokenizer(
            tmp / tokenizer,
            fields["vocab_size"],
            fields["max_position_embeddings"],
            fields["hidden_act"] == "gelu",
        )
        index[name] = ["transformers", cls]
        index[tokenizer] = ["transformers", "CLIPTokenizer"]
    if info.architecture.startswith("sdxl"):
        index.update(
            text_encoder=index.get("text_encoder", [None, None]),
            tokenizer=index.get("tokenizer", [None, None]),
            image_encoder=[None, None],
            feature_extractor=[None, None],
            force_zeros_for_empty_prompt=True,
        )
        if info.architecture == "sdxl_refiner" or info.inpainting:
            index["requires_aesthetics_score"] = info.architecture == "sdxl_refiner"
    else:
        index.update(
            safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False
        )
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def config_folder_for(path: Path, cache_dir: Path, prediction_type: str = "") -> tuple[Path, CheckpointInfo]:
    """The derived config folder of a checkpoint, cached in ``cache_dir`` (``<models dir>/.atelier-configs``)."""
    info = inspect_checkpoint(path)
    prediction_type = prediction_type or default_prediction_type(info)
    folder = cache_dir / f"{path.stem}-{derivation_key(path, prediction_type)}"
    if not (folder / "model_index.json").exists():
        write_config_folder(info, folder, prediction_type)
    return folder, info
