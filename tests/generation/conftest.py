"""Tiny model directories built once per test session (random weights, no downloads), and a server on them."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from atelier.generation import testing
from atelier.generation.server import build
from atelier.generation.service import GenerationService
from atelier.generation.v1 import generation_pb2 as pb
from atelier.generation.v1 import generation_pb2_grpc


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """'tiny' (diffusers folder), 'tiny-single' (the same weights as one original-layout .safetensors),
    'tiny-scribble' (ControlNet), 'tiny-style' (LoRA)."""
    root = tmp_path_factory.mktemp("models")
    testing.write_tiny_model(root / "tiny", seed=0)
    testing.write_tiny_single_file(root, "tiny-single", seed=0)
    testing.write_tiny_controlnet(root / "tiny-scribble", seed=1)
    testing.write_tiny_lora(root / "tiny-style", seed=2)
    return root


@pytest.fixture
def models_dir(tiny_models_dir: Path, tmp_path: Path) -> Path:
    """A per-test copy, so a test may add broken models without affecting the others."""
    target = tmp_path / "models"
    shutil.copytree(tiny_models_dir, target)
    return target


@dataclass
class GenServer:
    server: Any
    stub: generation_pb2_grpc.GenerationServiceStub
    channel: grpc.Channel

    @property
    def service(self) -> GenerationService:
        return self.server.spec.servicers[0][1].service  # type: ignore[no-any-return]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def generate(self, request: pb.GenerateRequest, **kwargs: Any) -> list[pb.GenerateResponse]:
        return list(self.stub.Generate(request, **kwargs))


@pytest.fixture
def gen_server(
    start_server: Callable[..., Any], models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., GenServer]:
    def start(**env: str) -> GenServer:
        monkeypatch.setenv("ATELIER_GENERATION_MODELS_DIR", str(models_dir))
        monkeypatch.setenv("ATELIER_GENERATION_DEVICE", "cpu")
        for key, value in env.items():
            monkeypatch.setenv(f"ATELIER_GENERATION_{key}", value)
        server = start_server("generation", build)
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        return GenServer(server, generation_pb2_grpc.GenerationServiceStub(channel), channel)

    return start


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def photo(width: int = 64, height: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth synthetic 'photo': gradients plus a disc, so img2img has structure to keep."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    r = (x / width * 255).astype(np.uint8)
    g = (y / height * 255).astype(np.uint8)
    b = (((x - width / 2) ** 2 + (y - height / 2) ** 2) < (min(width, height) / 3) ** 2).astype(
        np.uint8
    ) * 200
    noise = rng.integers(0, 10, size=(height, width), dtype=np.uint8)
    return np.stack([r, g, b + noise], axis=-1)
