"""The GPU benchmark's code path runs (tiny, on the CPU), and its model has SD 1.5's shapes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from atelier.generation import testing

ROOT = Path(__file__).resolve().parents[2]


def test_sd15_size_components_have_sd15_parameter_counts() -> None:
    components = testing.build_sd15_size_components(device="meta")  # shapes only, no memory
    counts = {k: sum(p.numel() for p in components[k].parameters()) for k in ("unet", "vae", "text_encoder")}
    # The published sizes of runwayml/stable-diffusion-v1-5's UNet, VAE and CLIP ViT-L/14 text encoder.
    assert counts == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}


@pytest.mark.slow
def test_gpu_benchmark_dry_run_measures_both_batches_on_the_cpu() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "generation.py"), "--gpu-dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = re.findall(r"^\| ([14]) \| ([0-9.]+) \| ([0-9.]+) \|", result.stdout, re.M)
    assert [batch for batch, _d, _r in rows] == ["1", "4"], result.stdout
    assert all(float(d) > 0 and float(r) > 0 for _b, d, r in rows)
    assert "dry run" in result.stdout


def test_sdxl_size_components_have_sdxl_parameter_counts() -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    with torch.device("meta"):  # shapes only, no memory
        unet = UNet2DConditionModel(**testing.SDXL_UNET)
        vae = AutoencoderKL(**testing.SDXL_VAE)
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**testing.SDXL_TEXT_2))
    counts = [sum(p.numel() for p in m.parameters()) for m in (unet, vae, text_2)]
    # The published sizes of stabilityai/stable-diffusion-xl-base-1.0's UNet, VAE and OpenCLIP bigG encoder.
    assert counts == [2_567_463_684, 83_653_863, 694_659_840]


@pytest.mark.slow
def test_sdxl_benchmark_dry_run_measures_a_row_on_the_tiny_model() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "generation.py"), "--sdxl-dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = re.findall(
        r"^\| gRPC Generate against diffusers on a worker thread \| ([0-9.]+) \| ([0-9.]+) \|",
        result.stdout,
        re.M,
    )
    assert float(row[0]) > 0 and float(row[1]) > 0
    assert "dry run" in result.stdout
