"""Drop-in checkpoints: a lone .safetensors / .ckpt (SD 1.x, 2.x, SDXL) loads with no manifest, no config
folder and no network; a Hugging Face cache entry is found; a config-only folder is not a model."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from atelier.common.v1 import image_pb2
from atelier.generation import checkpoints, models, testing
from atelier.generation.v1 import generation_pb2 as pb
from tests.generation.conftest import GenServer, decode, photo, png_bytes

Start = Callable[..., GenServer]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """HF_HUB_OFFLINE=1, an empty hub cache, and any non-loopback connection from Python fails the test."""
    import huggingface_hub.constants as hub

    empty = tmp_path / "empty-hub-cache"
    empty.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(empty))
    monkeypatch.setenv("HF_HUB_CACHE", str(empty))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(empty))
    attempts: list[Any] = []
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            attempts.append(address)
            raise OSError(f"test is offline: connection to {address} refused")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield
    assert not attempts, f"network connections attempted: {attempts}"
    assert not any(empty.iterdir()), "something was written into the hub cache"


def _reference(architecture: str) -> Any:
    return testing.build_tiny_drop_in_pipeline(architecture, seed=0)


def _same_weights(a: Any, b: Any) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize(
    ("architecture", "suffix", "base", "pipeline"),
    [
        ("sd1", ".ckpt", "sd15", "StableDiffusionPipeline"),
        ("sd2", ".safetensors", "sd2", "StableDiffusionPipeline"),
        ("sdxl", ".safetensors", "sdxl", "StableDiffusionXLPipeline"),
    ],  # sd1 .safetensors and sdxl .ckpt go through the gRPC test below
)
def test_a_lone_checkpoint_loads_offline_into_exactly_its_pipeline(
    offline: None, tmp_path: Path, architecture: str, suffix: str, base: str, pipeline: str
) -> None:
    root = tmp_path / "models"
    testing.write_tiny_drop_in(root / f"mine{suffix}", architecture)
    assert sorted(p.name for p in root.iterdir()) == [f"mine{suffix}"]  # nothing beside it
    (entry,) = models.scan_models(root)
    assert (entry.name, entry.kind, entry.base, entry.state) == (
        "mine",
        "single_file",
        base,
        models.ModelState.INSTALLED,
    )
    pipe = models.load_checkpoint(entry, models.DeviceSettings())
    assert type(pipe).__name__ == pipeline
    ref = _reference(architecture)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if hasattr(ref, name):
            _same_weights(getattr(ref, name), getattr(pipe, name))
    assert pipe.scheduler.config.prediction_type == ("v_prediction" if architecture == "sd2" else "epsilon")
    call = dict(prompt="a linen shirt", num_inference_steps=2, width=64, height=64, output_type="np")
    a = ref(**call, generator=torch.Generator().manual_seed(3)).images
    b = pipe(**call, generator=torch.Generator().manual_seed(3)).images
    assert np.abs(a - b).max() < 1e-5
    # The derived configs are cached under the models directory, hidden from the listing.
    assert (root / checkpoints.CONFIG_CACHE).is_dir()
    assert [e.name for e in models.scan_models(root)] == ["mine"]


def test_sd2_prediction_type_comes_from_the_sidecar(offline: None, tmp_path: Path) -> None:
    root = tmp_path / "models"
    testing.write_tiny_drop_in(root / "sd2.safetensors", "sd2")
    (root / "sd2.json").write_text(json.dumps({"prediction_type": "epsilon", "licence": "CC0-1.0"}))
    (entry,) = models.scan_models(root)
    assert entry.kind == "single_file" and entry.prediction_type == "epsilon"
    assert (
        models.load_checkpoint(entry, models.DeviceSettings()).scheduler.config.prediction_type == "epsilon"
    )
    (root / "sd2.json").write_text(json.dumps({"prediction_type": "x0"}))
    (entry,) = models.scan_models(root)
    assert entry.state is models.ModelState.FAILED and "prediction_type" in entry.error


class _Payload:
    """Pickled code a .ckpt could carry: unpickling it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_unsafe_or_foreign_files_are_failed_with_a_reason_and_run_no_code(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    marker = tmp_path / "pwned"
    state = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3), "x": _Payload(marker)}
    torch.save(state, str(root / "evil.ckpt"))
    # The pre-1.6 format (a plain pickle stream) takes the other path (no memory map): refused the same way.
    torch.save(state, str(root / "evil-legacy.ckpt"), _use_new_zipfile_serialization=False)
    from safetensors.torch import save_file

    save_file({"lora_unet_down.weight": torch.zeros(2, 2)}, str(root / "a-lora.safetensors"))
    (root / "garbage.safetensors").write_bytes(b"\xff" * 64)
    by_name = {e.name: e for e in models.scan_models(root)}
    assert not marker.exists()
    for name in ("evil", "evil-legacy"):
        assert by_name[name].state is models.ModelState.FAILED
        assert "Unsupported global" in by_name[name].error or "GLOBAL" in by_name[name].error, by_name[
            name
        ].error
    assert pickle.loads(pickle.dumps(_Payload(marker))) is None and marker.exists()  # the payload is live
    assert (
        by_name["a-lora"].state is models.ModelState.FAILED
        and "no Stable Diffusion UNet" in by_name["a-lora"].error
    )
    assert by_name["garbage"].state is models.ModelState.FAILED


def test_clip_tokenizer_from_the_installed_bpe_vocabulary() -> None:
    path = checkpoints.clip_bpe_path()
    assert path.is_file(), f"{path} missing: `make venv` runs python -m atelier.generation.setup_assets"
    from transformers import CLIPTokenizer

    vocab, merges = checkpoints.clip_vocab(checkpoints.CLIP_VOCAB_SIZE)
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    info = checkpoints.CheckpointInfo("sd1", False, {})
    folder = Path(pytest.importorskip("tempfile").mkdtemp())
    checkpoints.write_tokenizer(folder, 49408, 77, open_clip=False)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    # The ids CLIP (and every SD 1.x / SDXL tokenizer folder) gives this prompt.
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert info.base == "sd15"


def test_hf_cache_layout_is_found_and_a_config_only_folder_is_not_a_model(
    offline: None, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    repo = root / "models--atelier--tiny"
    snapshot = repo / "snapshots" / "0123abcd"
    testing.write_tiny_model(snapshot, seed=0)
    (snapshot / "manifest.json").unlink()  # a hub snapshot has none
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    config_only = root / "configs-only"
    shutil.copytree(snapshot, config_only)
    for weights in config_only.rglob("*.safetensors"):
        weights.unlink()
    by_name = {e.name: e for e in models.scan_models(root)}
    assert by_name["atelier/tiny"].state is models.ModelState.INSTALLED
    assert by_name["atelier/tiny"].path == snapshot
    assert by_name["configs-only"].state is models.ModelState.FAILED
    assert "no UNet weights" in by_name["configs-only"].error
    pipe = models.load_checkpoint(by_name["atelier/tiny"], models.DeviceSettings())
    assert type(pipe).__name__ == "StableDiffusionPipeline"


# -- over gRPC ------------------------------------------------------------------------------------


@pytest.fixture
def drop_in_server(
    offline: None, gen_server: Start, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> GenServer:
    for item in list(models_dir.iterdir()):
        shutil.rmtree(item) if item.is_dir() else item.unlink()
    testing.write_tiny_drop_in(models_dir / "sd1.safetensors", "sd1")
    testing.write_tiny_drop_in(models_dir / "xl.ckpt", "sdxl")
    return gen_server()


def _images(events: list[pb.GenerateResponse]) -> list[np.ndarray]:
    return [decode(e.image.image.data) for e in events if e.HasField("image")]


def test_drop_in_checkpoints_run_every_mode_over_grpc(drop_in_server: GenServer) -> None:
    server = drop_in_server
    listed = {m.name: m for m in server.stub.ListModels(pb.ListModelsRequest(), timeout=30).models}
    assert listed["sd1"].base == "sd15" and listed["xl"].base == "sdxl"
    assert listed["xl"].kind == "single_file"

    def settings(**kw: Any) -> pb.GenerationSettings:
        values: dict[str, Any] = {"prompt": "a paisley print on silk", "seed": 7, "steps": 3}
        values.update(kw, width_px=64, height_px=64)
        return pb.GenerationSettings(**values)

    for model in ("sd1", "xl"):
        (txt,) = _images(server.generate(pb.GenerateRequest(model=model, settings=settings())))
        assert txt.shape == (64, 64, 3) and txt.std() > 1
        (tile,) = _images(server.generate(pb.GenerateRequest(model=model, settings=settings(tileable=True))))
        assert not np.array_equal(tile, txt)
    init = photo(64, 64)
    (img2img,) = _images(
        server.generate(
            pb.GenerateRequest(
                model="xl",
                mode=pb.MODE_IMAGE_TO_IMAGE,
                settings=settings(strength=0.5),
                init_image=image_pb2.Image(data=png_bytes(init)),
            )
        )
    )
    assert img2img.shape == (64, 64, 3)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    (inpainted,) = _images(
        server.generate(
            pb.GenerateRequest(
                model="xl",
                mode=pb.MODE_INPAINT,
                settings=settings(strength=1.0),
                init_image=image_pb2.Image(data=png_bytes(init)),
                mask=image_pb2.Mask(data=png_bytes(mask)),
            )
        )
    )
    assert np.array_equal(inpainted[mask == 0], init[mask == 0])
    events = server.generate(
        pb.GenerateRequest(
            model="xl",
            mode=pb.MODE_SKETCH,
            settings=settings(),
            init_image=image_pb2.Image(data=png_bytes(init)),
        )
    )
    png = next(e.image.image.data for e in events if e.HasField("image"))
    assert "Model: xl" in Image.open(io.BytesIO(png)).text["parameters"]
    # A 200-token weighted prompt on SDXL: both encoders chunked by compel, the pooled embedding too.
    long_prompt = ("(embroidered silk:1.3) [cotton] linen dress, " * 5)[:200]
    events = server.generate(pb.GenerateRequest(model="xl", settings=settings(prompt=long_prompt)))
    png = next(e.image.image.data for e in events if e.HasField("image"))
    assert json.loads(Image.open(io.BytesIO(png)).text["atelier"])["prompt_encoding"].startswith("compel")


def test_an_sdxl_checkpoint_refuses_a_controlnet_as_failed_precondition(drop_in_server: GenServer) -> None:
    testing.write_tiny_controlnet(drop_in_server.service.cache.models_dir / "cn", seed=1)
    drop_in_server.service.cache.rescan()
    with pytest.raises(grpc.RpcError) as info:
        drop_in_server.generate(
            pb.GenerateRequest(
                model="xl",
                mode=pb.MODE_SKETCH,
                settings=pb.GenerationSettings(
                    prompt="x", steps=2, width_px=64, height_px=64, controlnet="cn"
                ),
                init_image=image_pb2.Image(data=png_bytes(photo(64, 64))),
            )
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, info.value.details()
    assert "SDXL" in (info.value.details() or "")


def test_a_lora_that_does_not_fit_the_checkpoint_is_failed_precondition(drop_in_server: GenServer) -> None:
    # The tiny LoRA is made for the 16/32-channel demo UNet; the drop-in SD 1.x UNet has 32/64 channels.
    testing.write_tiny_lora(drop_in_server.service.cache.models_dir / "other-style", seed=2)
    drop_in_server.service.cache.rescan()
    request = pb.GenerateRequest(
        model="sd1",
        settings=pb.GenerationSettings(prompt="x", steps=2, width_px=64, height_px=64, loras=["other-style"]),
    )
    with pytest.raises(grpc.RpcError) as info:
        drop_in_server.generate(request)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, info.value.details()
    assert "does not fit" in (info.value.details() or "")
    request.settings.ClearField("loras")
    assert _images(drop_in_server.generate(request))  # the checkpoint still works without it


def test_full_size_sd15_shapes_give_the_released_configs() -> None:
    """The same derivation on SD 1.5's real shapes (built on the meta device: no memory, no weights)."""
    from types import SimpleNamespace

    components = testing.build_sd15_size_components(device="meta")
    pipe = SimpleNamespace(**components)
    shapes = {k: tuple(v.shape) for k, v in testing.to_original_checkpoint(pipe, "sd1").items()}
    info = checkpoints.classify(shapes)
    assert (info.architecture, info.inpainting) == ("sd1", False)
    unet = checkpoints.unet_config(info)
    for key, value in testing.SD15_UNET.items():
        assert unet[key] == (list(value) if isinstance(value, tuple) else value), key
    assert unet["norm_num_groups"] == 32 and unet["use_linear_projection"] is False
    vae = checkpoints.vae_config(info)
    for key, value in testing.SD15_VAE.items():
        assert vae[key] == (list(value) if isinstance(value, tuple) else value), key
    text = checkpoints.text_configs(info)["text_encoder"]
    for key, value in testing.SD15_TEXT.items():
        assert text[key] == value, key
    assert (text["bos_token_id"], text["eos_token_id"]) == (49406, 49407)
