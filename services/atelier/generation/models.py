"""The model directory and the in-memory model cache (no gRPC here).

Layout of ``ATELIER_MODELS_DIR`` (default ``<data dir>/models/generation``)::

    dreamlike-photoreal-2/          a diffusers folder (model_index.json, unet/, vae/, ...)
        manifest.json               optional: {"name", "kind", "base", "licence", "defaults"}
    openjourney.safetensors         a single-file checkpoint (SD 1.x, 2.x, SDXL; .safetensors or .ckpt),
                                    alone: its architecture and component configs are derived from
                                    the tensor shapes (atelier.generation.checkpoints) into
    .atelier-configs/               ... this cache, so loading never goes to the network
    openjourney.json                optional manifest beside it: name, licence, defaults,
                                    "prediction_type" (SD 2.x), or "config": a local diffusers folder
    models--org--name/              a Hugging Face hub cache entry (snapshots/<rev>/, refs/main)
    brand-style/                    a LoRA adapter: manifest {"kind": "lora", "file": "....safetensors"}
    scribble-cn/                    a ControlNet: diffusers ControlNetModel folder + manifest
                                    {"kind": "controlnet", "conditioning": "scribble"}
    embeddings/                     textual-inversion embeddings (.pt, .bin, .safetensors), used when a
                                    prompt contains the file's name

The folders of the web UIs are recognised too, so their models directory can be pointed at as it is
(WEB_UI_FOLDERS): AUTOMATIC1111's ``models/Stable-diffusion``, ``models/Lora``, ``models/ControlNet``,
``embeddings``; ComfyUI's ``models/checkpoints``, ``models/loras``, ``models/controlnet``,
``models/embeddings`` (or their ``models`` folder itself). LoRA files and ControlNet folders there need
no manifest; the base architecture of LoRAs, embeddings and ControlNets is read off their tensor
shapes (atelier.generation.addons).

Models load on first use (or at start, ``ATELIER_GENERATION_PRELOAD``) and stay cached while
the sum of their sizes fits ``ATELIER_GENERATION_MEMORY_BUDGET_MB``; loading one more evicts the
least recently used, and eviction drops every reference and empties the CUDA cache so the
memory is really returned.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from atelier.generation import addons, checkpoints

log = logging.getLogger("atelier.generation.models")

MODEL_LOADS_TOTAL = Counter("atelier_generation_model_loads_total", "Model loads by result.", ("result",))
MODEL_EVICTIONS_TOTAL = Counter("atelier_generation_model_evictions_total", "Models evicted from memory.")

KINDS = ("diffusers", "single_file", "lora", "controlnet", "embedding")
CHECKPOINT_KINDS = ("diffusers", "single_file")


class ModelState(enum.Enum):
    INSTALLED = "installed"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


class ModelError(Exception):
    """A model could not be found or loaded; ``reason`` is for people."""


@dataclass
class ModelEntry:
    """One installed model, as its manifest and the folder describe it."""

    name: str
    kind: str
    path: Path  # the folder (diffusers, controlnet, lora) or the file (single_file, lora, embedding)
    base: str = ""  # "" until read: from the manifest, else from the weights (_static_problem)
    licence: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    config_dir: Path | None = None  # single_file: local diffusers config folder (derived when None)
    prediction_type: str = ""  # single_file: epsilon or v_prediction ("" = the architecture's default)
    cache_dir: Path | None = None  # single_file: where derived config folders go
    weight_file: Path | None = None  # lora: the adapter weights
    conditioning: str = ""  # controlnet
    state: ModelState = ModelState.INSTALLED
    error: str = ""
    memory_bytes: int = 0
    last_used_monotonic: float = 0.0

    @property
    def health_name(self) -> str:
        return f"atelier.generation.v1.GenerationService/models/{self.name}"

    def disk_bytes(self) -> int:
        root = self.path
        if root.is_file():
            return root.stat().st_size
        # resolve(): a Hugging Face cache snapshot holds symbolic links to its blobs.
        return sum(
            p.resolve().stat().st_size
            for p in root.rglob("*")
            if p.suffix in {".safetensors", ".bin", ".ckpt"}
        )


def _entry_from_manifest(manifest_path: Path, default_path: Path) -> ModelEntry:
    data = json.loads(manifest_path.read_text())
    if not isinstance(data, dict):
        raise ModelError(f"{manifest_path}: the manifest must be a JSON object")
    kind = str(data.get("kind", "diffusers"))
    if kind not in KINDS:
        raise ModelError(f"{manifest_path}: kind {kind!r} is not one of {', '.join(KINDS)}")
    folder = manifest_path.parent
    path = default_path
    if "file" in data:
        path = (folder / str(data["file"])).resolve()
    entry = ModelEntry(
        name=str(data.get("name") or default_path.stem),
        kind=kind,
        path=path,
        base=str(data.get("base", "")),
        licence=str(data.get("licence", data.get("license", ""))),
        defaults=dict(data.get("defaults") or {}),
        conditioning=str(data.get("conditioning", "")),
    )
    if kind == "single_file" and data.get("config"):
        entry.config_dir = (folder / str(data["config"])).resolve()
    if data.get("prediction_type"):
        entry.prediction_type = str(data["prediction_type"])
    if kind == "lora":
        entry.weight_file = path if path.is_file() else None
        if entry.weight_file is None:
            found = sorted(folder.glob("*.safetensors"))
            entry.weight_file = found[0] if found else None
    return entry


# Where the web UIs keep each kind of model, below their root (or below their ``models`` folder).
WEB_UI_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoint": ("models/Stable-diffusion", "models/checkpoints", "Stable-diffusion", "checkpoints"),
    "lora": ("models/Lora", "models/loras", "Lora", "loras"),
    "controlnet": ("models/ControlNet", "models/controlnet", "ControlNet", "controlnet"),
    "embedding": ("embeddings", "models/embeddings"),
}


def _is_model_folder(folder: Path) -> bool:
    return any((folder / marker).exists() for marker in ("manifest.json", "model_index.json", "config.json"))


def model_folders(models_dir: Path) -> dict[str, list[Path]]:
    """The folders to scan for each kind: the directory itself (checkpoints) plus the web-UI folders present."""
    found: dict[str, list[Path]] = {kind: [] for kind in WEB_UI_FOLDERS}
    found["checkpoint"].append(models_dir)
    for kind, names in WEB_UI_FOLDERS.items():
        for name in names:
            folder = models_dir / name
            # A model folder that happens to be called "controlnet" is a model, not a web-UI folder.
            if folder.is_dir() and not _is_model_folder(folder) and folder not in found[kind]:
                found[kind].append(folder)
    return found


def scan_models(models_dir: Path) -> list[ModelEntry]:
    """Every model in the directory; a broken manifest gives a FAILED entry, not an exception."""
    entries: list[ModelEntry] = []
    if not models_dir.is_dir():
        return entries
    cache_dir = models_dir / checkpoints.CONFIG_CACHE
    scanners = {
        "checkpoint": lambda item: _checkpoint_item(item, cache_dir),
        "lora": _lora_item,
        "controlnet": lambda item: _controlnet_item(item, cache_dir),
        "embedding": _embedding_item,
    }
    for kind, folders in model_folders(models_dir).items():
        for folder in folders:
            for item in sorted(folder.iterdir()):
                if item.name.startswith("."):
                    continue  # .atelier-configs (derived configs) and other hidden folders
                try:
                    entry = scanners[kind](item)
                except (ModelError, ValueError, OSError) as exc:
                    entry = ModelEntry(
                        name=item.stem,
                        kind="diffusers" if kind == "checkpoint" else kind,
                        path=item,
                        state=ModelState.FAILED,
                        error=f"unreadable manifest: {exc}",
                    )
                if entry is not None:
                    entries.append(entry)
    for entry in entries:
        if entry.state is ModelState.FAILED:
            continue
        problem = _static_problem(entry)
        if problem:
            entry.state, entry.error = ModelState.FAILED, problem
    return entries


def _checkpoint_item(item: Path, cache_dir: Path) -> ModelEntry | None:
    """A model in the directory itself or a web UI's checkpoint folder (any kind, by its manifest)."""
    if item.is_dir():
        manifest = item / "manifest.json"
        if manifest.exists():
            return _entry_from_manifest(manifest, item)
        if (item / "model_index.json").exists():
            return ModelEntry(name=item.name, kind="diffusers", path=item)
        if item.name.startswith("models--"):
            snapshot = hf_cache_snapshot(item)
            if snapshot is not None:
                name = item.name.removeprefix("models--").replace("--", "/")
                return ModelEntry(name=name, kind="diffusers", path=snapshot)
        return None
    if item.suffix in checkpoints.CHECKPOINT_SUFFIXES:
        sidecar = item.with_suffix(".json")
        if sidecar.exists():
            entry = _entry_from_manifest(sidecar, item)
            if entry.kind == "diffusers":  # a lone checkpoint file is a single-file checkpoint
                entry.kind = "single_file"
        else:
            entry = ModelEntry(name=item.stem, kind="single_file", path=item)
        entry.cache_dir = cache_dir
        return entry
    return None


def _lora_item(item: Path) -> ModelEntry | None:
    """A web UI's LoRA: a lone .safetensors, or a folder (with a manifest, or diffusers' weight file)."""
    if item.is_file() and item.suffix in addons.LORA_SUFFIXES:
        return ModelEntry(name=item.stem, kind="lora", path=item, weight_file=item)
    if item.is_dir():
        if (item / "manifest.json").exists():
            return _entry_from_manifest(item / "manifest.json", item)
        weights = item / "pytorch_lora_weights.safetensors"
        if weights.is_file():
            return ModelEntry(name=item.name, kind="lora", path=item, weight_file=weights)
    return None


def _controlnet_item(item: Path, cache_dir: Path) -> ModelEntry | None:
    """A web UI's ControlNet: a diffusers folder, or a single file (original or diffusers key layout)."""
    if item.is_dir():
        if (item / "manifest.json").exists():
            return _entry_from_manifest(item / "manifest.json", item)
        if (item / "config.json").exists():
            return ModelEntry(
                name=item.name, kind="controlnet", path=item, conditioning=_conditioning(item.name)
            )
        return None
    if item.suffix in addons.CONTROLNET_SUFFIXES:
        return ModelEntry(
            name=item.stem,
            kind="controlnet",
            path=item,
            conditioning=_conditioning(item.stem),
            cache_dir=cache_dir,
        )
    return None


def _conditioning(name: str) -> str:
    """The conditioning a ControlNet's file name says (control_v11p_sd15_scribble -> scribble)."""
    lowered = name.lower()
    for word in ("scribble", "lineart", "canny", "sketch", "softedge", "depth", "openpose", "seg", "normal"):
        if word in lowered:
            return word
    return ""


def _embedding_item(item: Path) -> ModelEntry | None:
    if item.is_file() and item.suffix in addons.EMBEDDING_SUFFIXES:
        return ModelEntry(name=item.stem, kind="embedding", path=item, weight_file=item)
    return None


_EMBEDDING_BASES: dict[tuple[str, int, int], str] = {}


def _embedding_base(path: Path) -> str:
    """read_embedding's base, remembered per (path, size, mtime): ListModels rescans on every call."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _EMBEDDING_BASES:
        _EMBEDDING_BASES[key] = addons.embedding_base(addons.read_embedding(path))
    return _EMBEDDING_BASES[key]


def _checkpoint_folder_base(folder: Path) -> str:
    """A diffusers folder's base from its UNet config (the class name when the widths are not a release's)."""
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, json.JSONDecodeError):
        return addons.UNKNOWN
    base = addons.CROSS_ATTENTION_BASES.get(unet.get("cross_attention_dim"), "")
    if not base:
        base = "sdxl" if "XL" in str(index.get("_class_name", "")) else "sd15"
    return base + ("-inpainting" if unet.get("in_channels") == 9 else "")


def _static_problem(entry: ModelEntry) -> str:
    """What is visibly wrong without loading (missing files), or ''."""
    if not entry.path.exists():
        return f"{entry.path} does not exist"
    if entry.kind == "diffusers" and not (entry.path / "model_index.json").exists():
        return f"{entry.path} has no model_index.json (not a diffusers folder)"
    if entry.kind == "diffusers" and not _has_unet_weights(entry.path):
        return (
            f"{entry.path} holds configs but no UNet weights (unet/*.safetensors or .bin): a config-only "
            'folder serves as a single-file checkpoint\'s "config", it is not a model'
        )
    if entry.kind == "single_file":
        if entry.config_dir is not None and not (entry.config_dir / "model_index.json").exists():
            return f"config folder {entry.config_dir} has no model_index.json"
        if entry.prediction_type and entry.prediction_type not in checkpoints.PREDICTION_TYPES:
            return f"prediction_type {entry.prediction_type!r} is not one of {', '.join(checkpoints.PREDICTION_TYPES)}"
        if entry.config_dir is None:
            try:  # reads the header (or the .ckpt's tensor index) only: cheap enough for every scan
                entry.base = checkpoints.inspect_checkpoint(entry.path).base
            except checkpoints.CheckpointError as exc:
                return str(exc)
        elif not entry.base:
            entry.base = _checkpoint_folder_base(entry.config_dir)
    if entry.kind == "diffusers" and not entry.base:
        entry.base = _checkpoint_folder_base(entry.path)
    if entry.kind == "lora" and entry.weight_file is None:
        return f"{entry.path} holds no .safetensors LoRA weights"
    if entry.kind == "lora" and entry.weight_file is not None and not entry.base:
        entry.base = addons.lora_base(entry.weight_file)
    if entry.kind == "controlnet" and entry.path.is_file():
        try:  # the header's shapes only, as for checkpoints
            addons.controlnet_config(checkpoints.read_shapes(entry.path), entry.path.name)
        except checkpoints.CheckpointError as exc:
            return str(exc)
        entry.base = entry.base or addons.controlnet_file_base(entry.path)
    elif entry.kind == "controlnet" and not (entry.path / "config.json").exists():
        return f"{entry.path} has no config.json (not a diffusers ControlNetModel folder)"
    if entry.kind == "controlnet" and not entry.base:
        entry.base = addons.controlnet_base(entry.path)
    if entry.kind == "embedding":
        try:
            detected = _embedding_base(entry.path)
        except addons.EmbeddingError as exc:
            return str(exc)
        entry.base = entry.base or detected
    return ""


def _has_unet_weights(folder: Path) -> bool:
    unet = folder / "unet"
    return unet.is_dir() and any(p.suffix in {".safetensors", ".bin"} for p in unet.iterdir())


def hf_cache_snapshot(repo_dir: Path) -> Path | None:
    """The snapshot of a hub cache entry (``models--org--name``) that ``refs/main`` names, else the newest."""
    snapshots = repo_dir / "snapshots"
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        chosen = snapshots / ref.read_text().strip()
        if (chosen / "model_index.json").exists():
            return chosen
    found = (
        [p for p in snapshots.glob("*") if (p / "model_index.json").exists()] if snapshots.is_dir() else []
    )
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


def module_bytes(obj: Any) -> int:
    """Bytes of the parameters and buffers of a torch module or of a pipeline's modules."""
    import torch

    modules: list[torch.nn.Module] = []
    if isinstance(obj, torch.nn.Module):
        modules = [obj]
    elif hasattr(obj, "components"):
        modules = [m for m in obj.components.values() if isinstance(m, torch.nn.Module)]
    elif isinstance(obj, dict):  # an embedding's vectors
        return sum(t.numel() * t.element_size() for t in obj.values() if isinstance(t, torch.Tensor))
    total = 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            total += tensor.numel() * tensor.element_size()
    return total


@dataclass(frozen=True)
class DeviceSettings:
    device: str = "cpu"
    dtype: str = "float32"  # "float16" or "bfloat16" on CUDA

    def torch_dtype(self) -> Any:
        import torch

        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[self.dtype]


def _pipeline_class(config_dir: Path) -> Any:
    """The pipeline class a diffusers folder's model_index.json names (SD 1.x/2.x or SDXL families)."""
    import diffusers

    name = str(json.loads((config_dir / "model_index.json").read_text()).get("_class_name", ""))
    if name not in SUPPORTED_PIPELINES:
        raise ModelError(f"{config_dir}: pipeline {name!r} is not one of {', '.join(SUPPORTED_PIPELINES)}")
    return getattr(diffusers, name)


SUPPORTED_PIPELINES = (
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionInpaintPipeline",
    "StableDiffusionXLPipeline",
    "StableDiffusionXLImg2ImgPipeline",
    "StableDiffusionXLInpaintPipeline",
)


def load_checkpoint(entry: ModelEntry, device: DeviceSettings) -> Any:
    """A Stable Diffusion (or SDXL) pipeline for a diffusers folder or a single-file checkpoint, offline."""
    common: dict[str, Any] = dict(dtype=device.torch_dtype())
    if entry.kind == "diffusers":
        cls = _pipeline_class(entry.path)
        if "XL" not in cls.__name__:
            common.update(safety_checker=None, requires_safety_checker=False)
        pipe = cls.from_pretrained(str(entry.path), local_files_only=True, **common)
    elif entry.kind == "single_file":
        config_dir = entry.config_dir
        if config_dir is None:
            # A lone checkpoint: its component configs and tokenizers are derived from the tensor shapes.
            try:
                config_dir, info = checkpoints.config_folder_for(
                    entry.path,
                    entry.cache_dir or entry.path.parent / checkpoints.CONFIG_CACHE,
                    entry.prediction_type,
                )
            except checkpoints.CheckpointError as exc:
                raise ModelError(str(exc)) from exc
            entry.base = info.base
        cls = _pipeline_class(config_dir)
        if "XL" not in cls.__name__:
            common.update(safety_checker=None, requires_safety_checker=False)
        # `config` as a local folder keeps from_single_file off the Hub: it reads component configs and the
        # tokenizer from there and converts the checkpoint's original (LDM) keys to diffusers names.
        # A .ckpt is read by diffusers with torch.load(weights_only=True): no pickled code runs.
        pipe = cls.from_single_file(str(entry.path), config=str(config_dir), local_files_only=True, **common)
    else:
        raise ModelError(f"{entry.name} is a {entry.kind}, not a checkpoint")
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device.device)
    if device.device.startswith("cuda"):
        # PyTorch's scaled_dot_product_attention (flash / memory-efficient kernels). Untested here: no GPU.
        from diffusers.models.attention_processor import AttnProcessor2_0

        pipe.unet.set_attn_processor(AttnProcessor2_0())
    return pipe


def load_embedding(entry: ModelEntry, device: DeviceSettings) -> dict[str, Any]:
    """An embedding's vectors per text encoder (they are copied into the pipeline's encoders on use)."""
    try:
        vectors = addons.read_embedding(entry.path)
    except addons.EmbeddingError as exc:
        raise ModelError(str(exc)) from exc
    return {k: v.to(device.torch_dtype()) for k, v in vectors.items()}


def load_controlnet(entry: ModelEntry, device: DeviceSettings) -> Any:
    from diffusers import ControlNetModel

    if entry.path.is_file():
        # A single file: its config derived from the shapes (addons.controlnet_config), the weights converted
        # from the original layout by diffusers; a .pth / .ckpt is read with torch.load(weights_only=True).
        try:
            config = addons.controlnet_config_folder(
                entry.path, entry.cache_dir or entry.path.parent / checkpoints.CONFIG_CACHE
            )
        except checkpoints.CheckpointError as exc:
            raise ModelError(str(exc)) from exc
        model = ControlNetModel.from_single_file(
            str(entry.path), config=str(config), local_files_only=True, dtype=device.torch_dtype()
        )
    else:
        model = ControlNetModel.from_pretrained(
            str(entry.path), local_files_only=True, dtype=device.torch_dtype()
        )
    return model.to(device.device).eval()


class ModelCache:
    """Installed models, loaded on demand and kept within a memory budget (LRU eviction).

    Thread-safe; loads of one model are serialised. ``on_health(name, serving)`` is told when a
    model's health changes (the server maps it to grpc.health.v1).
    """

    def __init__(
        self,
        models_dir: Path,
        device: DeviceSettings,
        memory_budget_bytes: int,
        on_health: Callable[[str, bool], None] | None = None,
        loader: Callable[[ModelEntry, DeviceSettings], Any] | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.device = device
        self.memory_budget_bytes = memory_budget_bytes
        self._on_health = on_health or (lambda _n, _s: None)
        self._loader = loader
        self._lock = threading.RLock()
        self._entries: dict[str, ModelEntry] = {}
        self._loaded: OrderedDict[str, Any] = OrderedDict()  # LRU order: oldest first
        self._pinned: dict[str, int] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self.evictions = 0
        self.rescan()

    # -- the directory -------------------------------------------------------------------------
    def rescan(self) -> list[ModelEntry]:
        """Re-read the directory; loaded models and failure reasons are kept."""
        with self._lock:
            fresh = {e.name: e for e in scan_models(self.models_dir)}
            for name, entry in fresh.items():
                old = self._entries.get(name)
                if (
                    old is not None
                    and old.state in (ModelState.LOADED, ModelState.LOADING, ModelState.FAILED)
                    and old.path == entry.path
                    and entry.state is not ModelState.FAILED
                ):
                    fresh[name] = old
            for name in set(self._entries) - set(fresh):
                self._unload(name)
            self._entries = fresh
            for entry in fresh.values():
                self._on_health(entry.health_name, entry.state is not ModelState.FAILED)
            return list(fresh.values())

    def entries(self) -> list[ModelEntry]:
        with self._lock:
            return list(self._entries.values())

    def entry(self, name: str) -> ModelEntry | None:
        with self._lock:
            return self._entries.get(name)

    def health_names(self) -> list[str]:
        return [e.health_name for e in self.entries()]

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(self._entries[n].memory_bytes for n in self._loaded if n in self._entries)

    # -- loading -------------------------------------------------------------------------------
    def get(self, name: str) -> Any:
        """The loaded object for a model (pipeline, ControlNetModel, or LoRA weights path); loads it if needed.

        Raises ModelError when unknown or failed. The caller holds it only while using it. A load runs
        outside the cache lock (a real checkpoint takes seconds), so ListModels answers meanwhile.
        """
        with self._lock:
            entry = self._lookup(name)
            if name in self._loaded:
                return self._touch(name, entry)
            if entry.kind == "lora":
                # Adapters are applied to a pipeline on use; what is "loaded" is the file path.
                entry.state = ModelState.LOADED
                self._loaded[name] = entry.weight_file
                return entry.weight_file
            load_lock = self._load_locks.setdefault(name, threading.Lock())
        with load_lock:  # one load per model at a time; a second caller waits and reuses it
            with self._lock:
                entry = self._lookup(name)
                if name in self._loaded:
                    return self._touch(name, entry)
                entry.state = ModelState.LOADING
                self._make_room(entry.disk_bytes())
            try:
                loaded = (self._loader or _default_loader)(entry, self.device)
            except Exception as exc:  # any loader failure marks the model, the service stays up
                with self._lock:
                    if is_out_of_memory(exc):
                        # Not the model's fault: it may fit once other models are evicted. The caller answers
                        # RESOURCE_EXHAUSTED; the model stays installed.
                        MODEL_LOADS_TOTAL.labels("out_of_memory").inc()
                        entry.state = ModelState.INSTALLED
                        self._free_device_memory()
                        raise
                    MODEL_LOADS_TOTAL.labels("failed").inc()
                    entry.state, entry.error = ModelState.FAILED, f"{type(exc).__name__}: {exc}"
                    log.warning("model %s failed to load: %s", name, entry.error)
                    self._on_health(entry.health_name, False)
                    self._free_device_memory()
                raise ModelError(f"model {name!r} failed to load: {entry.error}") from exc
            with self._lock:
                MODEL_LOADS_TOTAL.labels("loaded").inc()
                entry.memory_bytes = module_bytes(loaded)
                entry.state = ModelState.LOADED
                self._loaded[name] = loaded
                self._touch(name, entry)
                self._make_room(0)
                self._on_health(entry.health_name, True)
                log.info("loaded model %s (%s, %.1f MB)", name, entry.kind, entry.memory_bytes / 1e6)
                return loaded

    def _lookup(self, name: str) -> ModelEntry:
        entry = self._entries.get(name)
        if entry is None:
            raise ModelError(f"model {name!r} is not installed")
        if entry.state is ModelState.FAILED:
            raise ModelError(f"model {name!r} failed to load: {entry.error}")
        return entry

    def _touch(self, name: str, entry: ModelEntry) -> Any:
        self._loaded.move_to_end(name)
        entry.last_used_monotonic = time.monotonic()
        return self._loaded[name]

    def preload(self, names: list[str] | None = None) -> None:
        """Load the named models (all checkpoints when None); failures are recorded, not raised."""
        for entry in self.entries():
            if names is not None and entry.name not in names:
                continue
            if names is None and entry.kind not in CHECKPOINT_KINDS:
                continue
            with contextlib.suppress(ModelError):
                self.get(entry.name)

    def pin(self, name: str) -> None:
        """Keep a model from eviction while a generation uses it."""
        with self._lock:
            self._pinned[name] = self._pinned.get(name, 0) + 1

    def unpin(self, name: str) -> None:
        with self._lock:
            self._pinned[name] = max(0, self._pinned.get(name, 0) - 1)

    def _make_room(self, incoming_bytes: int) -> None:
        """Evict least recently used models until used + incoming fits the budget."""
        for name in list(self._loaded):
            if self.used_bytes + incoming_bytes <= self.memory_budget_bytes:
                return
            if self._pinned.get(name, 0) > 0 or self._entries.get(name, None) is None:
                continue
            if len(self._loaded) == 1 and incoming_bytes == 0:
                return  # the only model: keep it even over budget, or nothing could run
            log.info("evicting model %s to stay within the memory budget", name)
            self._unload(name)
            self.evictions += 1
            MODEL_EVICTIONS_TOTAL.inc()

    def evict_all(self) -> None:
        """Drop every unpinned model and empty the CUDA cache (after an out-of-memory error)."""
        with self._lock:
            for name in list(self._loaded):
                if self._pinned.get(name, 0) == 0:
                    self._unload(name)
            self._free_device_memory()

    def _unload(self, name: str) -> None:
        obj = self._loaded.pop(name, None)
        entry = self._entries.get(name)
        if entry is not None and entry.state is ModelState.LOADED:
            entry.state, entry.memory_bytes = ModelState.INSTALLED, 0
        del obj
        self._free_device_memory()

    @staticmethod
    def _free_device_memory() -> None:
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def _default_loader(entry: ModelEntry, device: DeviceSettings) -> Any:
    if entry.kind in CHECKPOINT_KINDS:
        return load_checkpoint(entry, device)
    if entry.kind == "controlnet":
        return load_controlnet(entry, device)
    if entry.kind == "embedding":
        return load_embedding(entry, device)
    raise ModelError(f"no loader for kind {entry.kind}")
